//! `cuda`: the project's PTX on an NVIDIA GPU through cust (feature `cuda`).
//! Same `Gpu` interface as the emulator, so every launcher and the whole
//! model code are shared.

use crate::emu::Arg;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use cust::function::Function;
use cust::memory::DeviceBuffer;
use cust::module::Module;
use cust::prelude::{Context, Stream, StreamFlags};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;

pub struct CudaGpu {
    _ctx: Context,
    stream: Stream,
    device_name: String,
    /// Looked up once; modules are leaked so functions can be `'static`
    /// (one executor lives for the whole process).
    functions: HashMap<String, Function<'static>>,
    allocs: RefCell<HashMap<u64, DeviceBuffer<u8>>>,
}

fn driver(what: &str, e: cust::error::CudaError) -> Error {
    let hint = match e {
        cust::error::CudaError::UnknownError => {
            " (if this is CUDA error 222, the driver is too old for the PTX version; update the driver)"
        }
        cust::error::CudaError::OutOfMemory => " (out of GPU memory: try a smaller --batch-size)",
        _ => "",
    };
    Error::Device(format!("cuda: {what}: {e:?}{hint}"))
}

impl CudaGpu {
    pub fn new() -> Result<Self> {
        let ctx = cust::quick_init().map_err(|e| {
            Error::Device(format!(
                "cuda: no usable NVIDIA GPU or driver ({e:?}); use --device cpu or --device emu"
            ))
        })?;
        let device = cust::device::Device::get_device(0).map_err(|e| driver("get device", e))?;
        let device_name = device.name().unwrap_or_else(|_| "unknown GPU".into());
        let stream =
            Stream::new(StreamFlags::NON_BLOCKING, None).map_err(|e| driver("create stream", e))?;
        let mut functions = HashMap::new();
        for (file, src) in crate::ptx::MODULES {
            let module: &'static Module = Box::leak(Box::new(
                Module::from_ptx(src, &[]).map_err(|e| driver(&format!("load ptx/{file}"), e))?,
            ));
            let name = file.trim_end_matches(".ptx");
            let f = module
                .get_function(name)
                .map_err(|e| driver(&format!("find kernel `{name}`"), e))?;
            functions.insert(name.to_string(), f);
        }
        Ok(CudaGpu {
            _ctx: ctx,
            stream,
            device_name,
            functions,
            allocs: RefCell::new(HashMap::new()),
        })
    }
}

impl Gpu for CudaGpu {
    fn name(&self) -> String {
        format!("cuda ({})", self.device_name)
    }

    fn alloc(&self, bytes: usize) -> Result<u64> {
        let b = DeviceBuffer::<u8>::zeroed(bytes.max(1))
            .map_err(|e| driver(&format!("allocate {bytes} bytes"), e))?;
        let addr = b.as_device_ptr().as_raw();
        self.allocs.borrow_mut().insert(addr, b);
        Ok(addr)
    }

    fn free(&self, addr: u64) {
        self.allocs.borrow_mut().remove(&addr);
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<()> {
        self.synchronize()?;
        // SAFETY: `addr` lies inside an allocation of ours (checked by the
        // PTX executor's views); the host slice outlives the synchronous copy.
        let r =
            unsafe { cust::sys::cuMemcpyHtoD_v2(addr, data.as_ptr() as *const c_void, data.len()) };
        check(r, "copy to device")
    }

    fn read(&self, addr: u64, out: &mut [u8]) -> Result<()> {
        self.synchronize()?;
        // SAFETY: as in `write`.
        let r =
            unsafe { cust::sys::cuMemcpyDtoH_v2(out.as_mut_ptr() as *mut c_void, addr, out.len()) };
        check(r, "copy to host")
    }

    fn launch(
        &self,
        kernel: &str,
        grid: [u32; 3],
        block: [u32; 3],
        shared_bytes: u32,
        args: &[Arg],
    ) -> Result<()> {
        let f = self
            .functions
            .get(kernel)
            .ok_or_else(|| Error::Device(format!("cuda: no kernel named `{kernel}`")))?;
        // Argument storage must outlive the launch call; the driver copies it.
        let mut words: Vec<u64> = args
            .iter()
            .map(|a| match *a {
                Arg::U64(v) => v,
                Arg::U32(v) => v as u64,
                Arg::F32(v) => v.to_bits() as u64,
            })
            .collect();
        let ptrs: Vec<*mut c_void> = words
            .iter_mut()
            .map(|w| w as *mut u64 as *mut c_void)
            .collect();
        // SAFETY: arguments follow the kernel's .param list (the launchers in
        // crate::ops are shared with the emulator, which checks the types);
        // u32/f32 parameters read the low 4 bytes of their little-endian word.
        unsafe {
            self.stream
                .launch(
                    f,
                    (grid[0], grid[1], grid[2]),
                    (block[0], block[1], block[2]),
                    shared_bytes,
                    &ptrs,
                )
                .map_err(|e| {
                    driver(
                        &format!(
                            "launch `{kernel}` grid {grid:?} block {block:?} smem {shared_bytes}"
                        ),
                        e,
                    )
                })
        }
    }

    fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| driver("synchronize (an earlier kernel failed)", e))
    }
}

fn check(r: cust::sys::CUresult, what: &str) -> Result<()> {
    if r == cust::sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(Error::Device(format!("cuda: {what}: driver error {r:?}")))
    }
}
