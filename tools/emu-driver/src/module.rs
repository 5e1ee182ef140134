//! Modules of PTX text, their functions, and `cuLaunchKernel`.
//!
//! A launch is checked as an sm_90 device checks it (threads per block,
//! block and grid limits, shared memory with and without the opt-in), and
//! its parameters are decoded from the kernel's PTX signature: each `.param`
//! read at its size from `kernelParams`, or at its offset from an `extra`
//! buffer whose size must be the signature's.

use crate::codes::*;
use crate::device::{MAX_SHARED_DEFAULT, MAX_SHARED_OPTIN};
use crate::state::{Driver, Func, Module, call};
use crate::work::Work;
use dawin::device::emu::parse::{Kernel, Ty};
use dawin::device::{Arg, Dims};
use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::sync::Arc;

const CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK: c_int = 0;
const CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES: c_int = 1;
const CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: c_int = 8;
const CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT: c_int = 9;

const CU_LAUNCH_PARAM_END: usize = 0;
const CU_LAUNCH_PARAM_BUFFER_POINTER: usize = 1;
const CU_LAUNCH_PARAM_BUFFER_SIZE: usize = 2;

impl Driver {
    fn module(&mut self, entry: &str, m: u64) -> Res<&mut Module> {
        match self.modules.get(&m) {
            None => Err(quiet(CUDA_ERROR_INVALID_HANDLE)),
            Some(x) if !x.alive => self.dead(entry, "a module", x.ctx),
            Some(_) => Ok(self.modules.get_mut(&m).expect("found above")),
        }
    }

    /// A function whose module and context are alive.
    fn func(&mut self, entry: &str, f: u64) -> Res<&mut Func> {
        let Some(module) = self.funcs.get(&f).map(|x| x.module) else {
            return Err(quiet(CUDA_ERROR_INVALID_HANDLE));
        };
        self.module(entry, module)?;
        Ok(self.funcs.get_mut(&f).expect("checked above"))
    }

    fn kernel(&mut self, ctx: u64, name: &str) -> Arc<Kernel> {
        self.ctx(ctx)
            .emu
            .kernel(name)
            .expect("a function's kernel is loaded in its context")
            .clone()
    }
}

fn load(entry: &str, out: *mut u64, image: *const c_void) -> CuResult {
    call(entry, |d| {
        let ctx = d.current(entry)?;
        if image.is_null() {
            return Err(quiet(CUDA_ERROR_INVALID_VALUE));
        }
        // SAFETY: the driver API takes PTX as a NUL-terminated string.
        let bytes = unsafe { CStr::from_ptr(image.cast::<c_char>()) }.to_bytes();
        if bytes.starts_with(b"\x7fELF") {
            return Err(fail(
                CUDA_ERROR_NOT_SUPPORTED,
                "a cubin or fatbin image: the emulated driver runs PTX text only",
            ));
        }
        let src = std::str::from_utf8(bytes).map_err(|_| {
            fail(
                CUDA_ERROR_INVALID_IMAGE,
                "the image is neither PTX text nor ELF",
            )
        })?;
        let h = d.new_handle();
        let kernels = d
            .ctx(ctx)
            .emu
            .load(&format!("module {h:#x}"), src)
            .map_err(|e| fail(CUDA_ERROR_INVALID_PTX, e.to_string()))?;
        d.modules.insert(
            h,
            Module {
                ctx,
                alive: true,
                kernels,
            },
        );
        put(out, h)
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuModuleLoadData(out: *mut u64, image: *const c_void) -> CuResult {
    load("cuModuleLoadData", out, image)
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuModuleLoadDataEx(
    out: *mut u64,
    image: *const c_void,
    _n_options: c_uint,
    _options: *mut c_int,
    _values: *mut *mut c_void,
) -> CuResult {
    // JIT options (log buffers, optimisation level) mean nothing here.
    load("cuModuleLoadDataEx", out, image)
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuModuleUnload(m: u64) -> CuResult {
    let entry = "cuModuleUnload";
    call(entry, |d| {
        d.module(entry, m)?.alive = false;
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuModuleGetFunction(
    out: *mut u64,
    m: u64,
    name: *const c_char,
) -> CuResult {
    let entry = "cuModuleGetFunction";
    call(entry, |d| {
        if name.is_null() {
            return Err(quiet(CUDA_ERROR_INVALID_VALUE));
        }
        // SAFETY: a NUL-terminated kernel name, per the API.
        let name = unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .to_string();
        let module = d.module(entry, m)?;
        let ctx = module.ctx;
        if !module.kernels.contains(&name) {
            return Err(fail(
                CUDA_ERROR_NOT_FOUND,
                format!("no kernel `{name}` in the module"),
            ));
        }
        let k = d.kernel(ctx, &name);
        let static_shared = k.shared.iter().filter_map(|v| v.size).sum::<usize>() as u32;
        let h = d.new_handle();
        let f = Func {
            module: m,
            kernel: name,
            static_shared,
            max_dynamic_shared: MAX_SHARED_DEFAULT.saturating_sub(static_shared),
        };
        d.funcs.insert(h, f);
        put(out, h)
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuFuncSetAttribute(f: u64, attribute: c_int, value: c_int) -> CuResult {
    let entry = "cuFuncSetAttribute";
    call(entry, |d| {
        let func = d.func(entry, f)?;
        match attribute {
            CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES => {
                let room = MAX_SHARED_OPTIN - func.static_shared;
                if value < 0 || value as u32 > room {
                    return Err(fail(
                        CUDA_ERROR_INVALID_VALUE,
                        format!(
                            "kernel `{}`: {value} bytes of dynamic shared memory; with its {} static bytes at most {room}",
                            func.kernel, func.static_shared
                        ),
                    ));
                }
                func.max_dynamic_shared = value as u32;
                Ok(())
            }
            // A hint to the hardware's L1/shared split: nothing to emulate.
            CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT => Ok(()),
            _ => Err(fail(
                CUDA_ERROR_NOT_SUPPORTED,
                format!("function attribute {attribute} is not emulated"),
            )),
        }
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuFuncGetAttribute(out: *mut c_int, attribute: c_int, f: u64) -> CuResult {
    let entry = "cuFuncGetAttribute";
    call(entry, |d| {
        let func = d.func(entry, f)?;
        let v = match attribute {
            CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK => 1024,
            CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES => func.static_shared as c_int,
            CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES => func.max_dynamic_shared as c_int,
            _ => {
                return Err(fail(
                    CUDA_ERROR_NOT_SUPPORTED,
                    format!("function attribute {attribute} is not emulated"),
                ));
            }
        };
        put(out, v)
    })
}

/// An sm_90 device's launch limits; the driver's code on a breach.
fn check_shape(kernel: &str, dims: &Dims, f: &Func) -> Res {
    let [bx, by, bz] = dims.block;
    let [gx, gy, gz] = dims.grid;
    let threads = bx as u64 * by as u64 * bz as u64;
    let bad = |what: String| {
        fail(
            CUDA_ERROR_INVALID_VALUE,
            format!("kernel `{kernel}`: {what}"),
        )
    };
    if threads == 0 || bx > 1024 || by > 1024 || bz > 64 {
        return Err(bad(format!(
            "block {:?} (each side 1..=1024, z ≤ 64)",
            dims.block
        )));
    }
    if threads > 1024 {
        return Err(bad(format!("{threads} threads per block (at most 1024)")));
    }
    if gx == 0 || gy == 0 || gz == 0 || gx > i32::MAX as u32 || gy > 65535 || gz > 65535 {
        return Err(bad(format!(
            "grid {:?} (x < 2^31, y and z ≤ 65535, none 0)",
            dims.grid
        )));
    }
    if dims.shared_bytes > f.max_dynamic_shared {
        let why = if f.max_dynamic_shared < MAX_SHARED_OPTIN - f.static_shared {
            " (raise it with cuFuncSetAttribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES))"
        } else {
            ""
        };
        return Err(bad(format!(
            "{} bytes of dynamic shared memory, the limit is {}{why}",
            dims.shared_bytes, f.max_dynamic_shared
        )));
    }
    Ok(())
}

/// One parameter's value from its little-endian bytes.
fn arg_of(kernel: &str, name: &str, ty: Ty, bytes: &[u8]) -> Res<Arg> {
    let word4 = || u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
    Ok(match ty {
        Ty::U32 | Ty::S32 | Ty::B32 => Arg::U32(word4()),
        Ty::F32 => Arg::F32(f32::from_bits(word4())),
        Ty::U64 | Ty::S64 | Ty::B64 => {
            Arg::U64(u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")))
        }
        _ => {
            return Err(fail(
                CUDA_ERROR_NOT_SUPPORTED,
                format!(
                    "kernel `{kernel}`: parameter `{name}` is .{ty:?}, which the emulator does not pass"
                ),
            ));
        }
    })
}

/// The arguments, from `kernelParams` (one pointer per parameter) or from
/// an `extra` buffer laid out by the signature.
fn decode_args(k: &Kernel, params: *mut *mut c_void, extra: *mut *mut c_void) -> Res<Vec<Arg>> {
    if !params.is_null() && !extra.is_null() {
        return Err(fail(
            CUDA_ERROR_INVALID_VALUE,
            format!(
                "kernel `{}`: both kernelParams and extra were given",
                k.name
            ),
        ));
    }
    if !extra.is_null() {
        let (buf, size) = extra_buffer(&k.name, extra)?;
        if size != k.param_bytes {
            let sig: Vec<String> = k
                .params
                .iter()
                .map(|p| format!("{} .{:?} at {}", p.name, p.ty, p.offset))
                .collect();
            return Err(fail(
                CUDA_ERROR_INVALID_VALUE,
                format!(
                    "kernel `{}`: a {size}-byte parameter buffer, the signature takes {} ({})",
                    k.name,
                    k.param_bytes,
                    sig.join(", ")
                ),
            ));
        }
        return k
            .params
            .iter()
            .map(|p| {
                arg_of(
                    &k.name,
                    &p.name,
                    p.ty,
                    &buf[p.offset..p.offset + p.ty.bytes()],
                )
            })
            .collect();
    }
    if params.is_null() {
        if k.params.is_empty() {
            return Ok(Vec::new());
        }
        return Err(fail(
            CUDA_ERROR_INVALID_VALUE,
            format!(
                "kernel `{}` takes {} parameters and none were given",
                k.name,
                k.params.len()
            ),
        ));
    }
    let mut args = Vec::with_capacity(k.params.len());
    for (i, p) in k.params.iter().enumerate() {
        // SAFETY: the API reads one pointer per parameter of the kernel,
        // each to a value of that parameter's size.
        let ptr = unsafe { *params.add(i) } as *const u8;
        if ptr.is_null() {
            return Err(fail(
                CUDA_ERROR_INVALID_VALUE,
                format!(
                    "kernel `{}`: parameter {i} (`{}`) points nowhere",
                    k.name, p.name
                ),
            ));
        }
        // SAFETY: as above.
        let bytes = unsafe { std::slice::from_raw_parts(ptr, p.ty.bytes()) };
        args.push(arg_of(&k.name, &p.name, p.ty, bytes)?);
    }
    Ok(args)
}

/// The (buffer, size) pair of a CU_LAUNCH_PARAM list.
fn extra_buffer<'a>(kernel: &str, extra: *mut *mut c_void) -> Res<(&'a [u8], usize)> {
    let (mut buf, mut size) = (std::ptr::null::<u8>(), None);
    for i in (0..64).step_by(2) {
        // SAFETY: a CU_LAUNCH_PARAM_END-terminated list of (key, value).
        let key = unsafe { *extra.add(i) } as usize;
        if key == CU_LAUNCH_PARAM_END {
            break;
        }
        // SAFETY: every key but END is followed by its value.
        let value = unsafe { *extra.add(i + 1) };
        match key {
            CU_LAUNCH_PARAM_BUFFER_POINTER => buf = value as *const u8,
            // SAFETY: the size's value points to a size_t.
            CU_LAUNCH_PARAM_BUFFER_SIZE => size = Some(unsafe { *(value as *const usize) }),
            _ => {
                return Err(fail(
                    CUDA_ERROR_NOT_SUPPORTED,
                    format!("kernel `{kernel}`: launch option {key:#x} in extra"),
                ));
            }
        }
    }
    match (buf.is_null(), size) {
        // SAFETY: the buffer holds `size` bytes, per the API.
        (false, Some(n)) => Ok((unsafe { std::slice::from_raw_parts(buf, n) }, n)),
        _ => Err(fail(
            CUDA_ERROR_INVALID_VALUE,
            format!("kernel `{kernel}`: extra needs CU_LAUNCH_PARAM_BUFFER_POINTER and _SIZE"),
        )),
    }
}

#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)] // the driver API's signature
pub(crate) extern "C" fn cuLaunchKernel(
    f: u64,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shared: c_uint,
    stream: u64,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CuResult {
    let entry = "cuLaunchKernel";
    call(entry, |d| {
        let ctx = d.current(entry)?;
        let func = d.func(entry, f)?;
        let (module, name) = (func.module, func.kernel.clone());
        if d.modules[&module].ctx != ctx {
            return Err(fail(
                CUDA_ERROR_INVALID_HANDLE,
                format!("kernel `{name}` was loaded in another context"),
            ));
        }
        let dims = Dims {
            grid: [gx, gy, gz],
            block: [bx, by, bz],
            shared_bytes: shared,
        };
        check_shape(&name, &dims, &d.funcs[&f])?;
        let k = d.kernel(ctx, &name);
        let args = decode_args(&k, params, extra)?;
        let w = Work::Launch {
            kernel: name,
            dims,
            args,
        };
        d.enqueue(entry, stream, ctx, w)
    })
}
