//! The driver's own semantics, called as a program would call the driver:
//! asynchrony, pinned buffers, launch limits, parameter decoding, memory,
//! events, unsupported calls and use after free. dawin's `cuda` executor on
//! this driver is tested in the main crate (tests/emu_driver.rs).

use crate::codes::*;
use crate::context::*;
use crate::device::*;
use crate::memory::*;
use crate::module::*;
use crate::state::{Options, lock};
use crate::stream::*;
use std::ffi::{c_char, c_void};
use std::sync::{Mutex, MutexGuard};

/// One test at a time: they share the driver and its options.
static SERIAL: Mutex<()> = Mutex::new(());

struct Ctx {
    h: u64,
    _serial: MutexGuard<'static, ()>,
}

impl Drop for Ctx {
    fn drop(&mut self) {
        assert_eq!(cuCtxDestroy_v2(self.h), CUDA_SUCCESS);
    }
}

/// A fresh context (not the primary one) with `memory` bytes of device
/// memory, current on this thread.
fn context(memory: usize) -> Ctx {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    assert_eq!(cuInit(0), CUDA_SUCCESS);
    lock().options = Some(Options {
        memory,
        shuffle_blocks: None,
    });
    let mut h = 0;
    assert_eq!(cuCtxCreate_v2(&mut h, 0, 0), CUDA_SUCCESS);
    Ctx { h, _serial: serial }
}

fn alloc(bytes: usize) -> u64 {
    let mut p = 0;
    assert_eq!(cuMemAlloc_v2(&mut p, bytes), CUDA_SUCCESS);
    p
}

fn stream(flags: u32) -> u64 {
    let mut s = 0;
    assert_eq!(cuStreamCreate(&mut s, flags), CUDA_SUCCESS);
    s
}

fn read(src: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    assert_eq!(cuMemcpyDtoH_v2(v.as_mut_ptr().cast(), src, n), CUDA_SUCCESS);
    v
}

fn lerp_function() -> u64 {
    let (_, src) = dawin::ops::PTX_MODULES
        .iter()
        .find(|(f, _)| *f == "lerp.ptx")
        .expect("lerp.ptx");
    let text = format!("{src}\0");
    let (mut m, mut f) = (0, 0);
    assert_eq!(cuModuleLoadData(&mut m, text.as_ptr().cast()), CUDA_SUCCESS);
    assert_eq!(
        cuModuleGetFunction(&mut f, m, c"lerp".as_ptr()),
        CUDA_SUCCESS
    );
    f
}

fn floats(p: u64, v: &[f32]) {
    let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    assert_eq!(cuMemcpyHtoD_v2(p, b.as_ptr().cast(), b.len()), CUDA_SUCCESS);
}

fn as_floats(b: &[u8]) -> Vec<f32> {
    b.chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// lerp's five parameters: out, w0, w1 (u64), n (u32), lambda (f32).
struct LerpArgs(u64, u64, u64, u32, f32);

impl LerpArgs {
    fn launch(&self, f: u64, block: [u32; 3], shared: u32, s: u64) -> CuResult {
        let mut p: [*mut c_void; 5] = [
            (&self.0 as *const u64).cast_mut().cast(),
            (&self.1 as *const u64).cast_mut().cast(),
            (&self.2 as *const u64).cast_mut().cast(),
            (&self.3 as *const u32).cast_mut().cast(),
            (&self.4 as *const f32).cast_mut().cast(),
        ];
        let [x, y, z] = block;
        cuLaunchKernel(
            f,
            1,
            1,
            1,
            x,
            y,
            z,
            shared,
            s,
            p.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    }

    /// Through an `extra` buffer of `size` bytes (the signature's is 32).
    fn launch_packed(&self, f: u64, size: usize) -> CuResult {
        let mut buf = [0u8; 40];
        buf[0..8].copy_from_slice(&self.0.to_le_bytes());
        buf[8..16].copy_from_slice(&self.1.to_le_bytes());
        buf[16..24].copy_from_slice(&self.2.to_le_bytes());
        buf[24..28].copy_from_slice(&self.3.to_le_bytes());
        buf[28..32].copy_from_slice(&self.4.to_le_bytes());
        let mut extra: [*mut c_void; 5] = [
            std::ptr::without_provenance_mut::<c_void>(1),
            buf.as_mut_ptr().cast(),
            std::ptr::without_provenance_mut::<c_void>(2),
            (&size as *const usize).cast_mut().cast(),
            std::ptr::null_mut(),
        ];
        cuLaunchKernel(
            f,
            1,
            1,
            1,
            32,
            1,
            1,
            0,
            0,
            std::ptr::null_mut(),
            extra.as_mut_ptr(),
        )
    }
}

#[test]
fn queued_work_runs_only_when_the_host_waits() {
    let _c = context(1 << 20);
    let x = alloc(16);
    floats(x, &[1.0; 4]);
    for (flags, stale) in [(1, true), (0, false)] {
        let s = stream(flags);
        assert_eq!(cuMemsetD8Async(x, 0, 16, s), CUDA_SUCCESS);
        // A synchronous copy waits for a blocking stream, not for a
        // non-blocking one: without a wait the host reads stale data.
        let before = read(x, 16);
        assert_eq!(before == vec![0u8; 16], !stale, "flags {flags}");
        assert_eq!(cuStreamSynchronize(s), CUDA_SUCCESS);
        assert_eq!(read(x, 16), vec![0u8; 16]);
        floats(x, &[1.0; 4]);
        assert_eq!(cuStreamDestroy_v2(s), CUDA_SUCCESS);
    }
}

#[test]
fn a_pinned_buffer_rewritten_before_its_copy_is_reported() {
    let _c = context(1 << 20);
    let (x, s) = (alloc(16), stream(1));
    let mut pinned: *mut c_void = std::ptr::null_mut();
    assert_eq!(cuMemAllocHost_v2(&mut pinned, 16), CUDA_SUCCESS);
    let host = pinned.cast::<u8>();
    // SAFETY: 16 pinned bytes.
    unsafe { std::ptr::write_bytes(host, 7, 16) };
    assert_eq!(cuMemcpyHtoDAsync_v2(x, pinned, 16, s), CUDA_SUCCESS);
    // SAFETY: as above; rewritten while the copy is still queued.
    unsafe { std::ptr::write_bytes(host, 9, 16) };
    assert_eq!(cuStreamSynchronize(s), CUDA_ERROR_ILLEGAL_STATE);
    // The context stays poisoned, as after a fault on a GPU.
    assert_eq!(cuCtxSynchronize(), CUDA_ERROR_ILLEGAL_STATE);
    assert_eq!(cuMemFreeHost(pinned), CUDA_ERROR_ILLEGAL_STATE);
}

#[test]
fn pageable_sources_are_copied_as_they_were_when_queued() {
    let _c = context(1 << 20);
    let (x, s) = (alloc(4), stream(1));
    let mut host = [1u8; 4];
    assert_eq!(
        cuMemcpyHtoDAsync_v2(x, host.as_ptr().cast(), 4, s),
        CUDA_SUCCESS
    );
    host = [2u8; 4];
    assert_eq!(cuStreamSynchronize(s), CUDA_SUCCESS);
    assert_eq!(read(x, 4), vec![1u8; 4]);
    assert_eq!(host, [2u8; 4]);
}

#[test]
fn launches_decode_parameters_from_the_signature() {
    let _c = context(1 << 20);
    let f = lerp_function();
    let (out, w0, w1) = (alloc(16), alloc(16), alloc(16));
    floats(w0, &[0.0, 1.0, 2.0, 3.0]);
    floats(w1, &[4.0, 5.0, 6.0, 7.0]);
    let args = LerpArgs(out, w0, w1, 4, 0.25);
    assert_eq!(args.launch(f, [32, 1, 1], 0, 0), CUDA_SUCCESS);
    assert_eq!(as_floats(&read(out, 16)), [1.0, 2.0, 3.0, 4.0]);
    floats(out, &[0.0; 4]);
    assert_eq!(args.launch_packed(f, 32), CUDA_SUCCESS);
    assert_eq!(as_floats(&read(out, 16)), [1.0, 2.0, 3.0, 4.0]);
    // A buffer of the wrong size names the kernel's signature.
    assert_eq!(args.launch_packed(f, 28), CUDA_ERROR_INVALID_VALUE);
}

#[test]
fn launches_obey_an_sm90_devices_limits() {
    let _c = context(1 << 20);
    let f = lerp_function();
    let (out, w0, w1) = (alloc(16), alloc(16), alloc(16));
    let args = LerpArgs(out, w0, w1, 4, 0.5);
    assert_eq!(args.launch(f, [2048, 1, 1], 0, 0), CUDA_ERROR_INVALID_VALUE);
    assert_eq!(args.launch(f, [32, 32, 2], 0, 0), CUDA_ERROR_INVALID_VALUE);
    assert_eq!(args.launch(f, [1, 1, 65], 0, 0), CUDA_ERROR_INVALID_VALUE);
    // Dynamic shared memory over 48 KB only after the opt-in, never past
    // 227 KB.
    assert_eq!(
        args.launch(f, [32, 1, 1], 64 << 10, 0),
        CUDA_ERROR_INVALID_VALUE
    );
    assert_eq!(
        cuFuncSetAttribute(f, 8, 228 << 10),
        CUDA_ERROR_INVALID_VALUE
    );
    assert_eq!(cuFuncSetAttribute(f, 8, 64 << 10), CUDA_SUCCESS);
    let mut limit = 0;
    assert_eq!(cuFuncGetAttribute(&mut limit, 8, f), CUDA_SUCCESS);
    assert_eq!(limit, 64 << 10);
    // Now the driver queues it; the emulator then refuses it when it runs,
    // since lerp declares no `.extern .shared` to put those bytes in.
    let s = stream(1);
    assert_eq!(args.launch(f, [32, 1, 1], 64 << 10, s), CUDA_SUCCESS);
    assert_eq!(cuStreamSynchronize(s), CUDA_ERROR_LAUNCH_FAILED);
    let mut grid_y_too_big = [std::ptr::null_mut(); 5];
    let r = cuLaunchKernel(
        f,
        1,
        65536,
        1,
        32,
        1,
        1,
        0,
        0,
        grid_y_too_big.as_mut_ptr(),
        std::ptr::null_mut(),
    );
    assert_eq!(r, CUDA_ERROR_INVALID_VALUE);
}

#[test]
fn device_memory_runs_out_at_its_configured_size() {
    let _c = context(1 << 20);
    let mut p = 0;
    assert_eq!(cuMemAlloc_v2(&mut p, 2 << 20), CUDA_ERROR_OUT_OF_MEMORY);
    let a = alloc(600 << 10);
    assert_eq!(cuMemAlloc_v2(&mut p, 600 << 10), CUDA_ERROR_OUT_OF_MEMORY);
    assert_eq!(cuMemFree_v2(a), CUDA_SUCCESS);
    alloc(600 << 10);
    // New memory is not cleared (0xff: NaN as f32), as on a GPU.
    assert_eq!(read(alloc(8), 8), vec![0xff; 8]);
}

#[test]
fn events_time_the_work_between_them() {
    let _c = context(1 << 20);
    let s = stream(1);
    let (mut a, mut b, mut plain) = (0, 0, 0);
    assert_eq!(cuEventCreate(&mut a, 0), CUDA_SUCCESS);
    assert_eq!(cuEventCreate(&mut b, 0), CUDA_SUCCESS);
    assert_eq!(cuEventCreate(&mut plain, 2), CUDA_SUCCESS);
    let x = alloc(1 << 16);
    assert_eq!(cuEventRecord(a, s), CUDA_SUCCESS);
    assert_eq!(cuMemsetD8Async(x, 1, 1 << 16, s), CUDA_SUCCESS);
    assert_eq!(cuEventRecord(b, s), CUDA_SUCCESS);
    assert_eq!(cuEventRecord(plain, s), CUDA_SUCCESS);
    let mut ms = -1.0f32;
    assert_eq!(cuEventElapsedTime(&mut ms, a, b), CUDA_ERROR_NOT_READY);
    assert_eq!(cuEventSynchronize(b), CUDA_SUCCESS);
    assert_eq!(cuEventElapsedTime(&mut ms, a, b), CUDA_SUCCESS);
    assert!(ms >= 0.0, "{ms}");
    // Recorded after b: still queued.
    assert_eq!(cuEventQuery(plain), CUDA_ERROR_NOT_READY);
    assert_eq!(cuEventSynchronize(plain), CUDA_SUCCESS);
    assert_eq!(
        cuEventElapsedTime(&mut ms, a, plain),
        CUDA_ERROR_INVALID_HANDLE
    );
}

#[test]
fn the_device_says_it_is_emulated_and_refuses_what_it_lacks() {
    let _c = context(1 << 20);
    let mut name = [0 as c_char; 64];
    assert_eq!(cuDeviceGetName(name.as_mut_ptr(), 64, 0), CUDA_SUCCESS);
    // SAFETY: NUL-terminated by the call.
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    assert_eq!(name.to_str().unwrap(), DEVICE_NAME);
    let mut v = 0;
    assert_eq!(cuDeviceGetAttribute(&mut v, 75, 0), CUDA_SUCCESS);
    assert_eq!(v, 9);
    assert_eq!(
        cuDeviceGetAttribute(&mut v, 200, 0),
        CUDA_ERROR_NOT_SUPPORTED
    );
    assert_eq!(
        crate::unsupported::cuGraphCreate(),
        CUDA_ERROR_NOT_SUPPORTED
    );
    let mut module = 0;
    let cubin = b"\x7fELF\0";
    assert_eq!(
        cuModuleLoadData(&mut module, cubin.as_ptr().cast()),
        CUDA_ERROR_NOT_SUPPORTED
    );
}

/// A stream used after its primary context's last release ends the process
/// (run in a child process: the parent checks how it ended).
#[test]
fn a_handle_of_a_destroyed_context_ends_the_process() {
    if std::env::var_os("DAWIN_EMU_DRIVER_CHILD").is_some() {
        assert_eq!(cuInit(0), CUDA_SUCCESS);
        let mut ctx = 0;
        assert_eq!(cuDevicePrimaryCtxRetain(&mut ctx, 0), CUDA_SUCCESS);
        assert_eq!(cuCtxSetCurrent(ctx), CUDA_SUCCESS);
        let s = stream(1);
        assert_eq!(cuDevicePrimaryCtxRelease_v2(0), CUDA_SUCCESS);
        cuStreamDestroy_v2(s);
        unreachable!("the driver should have ended the process");
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::a_handle_of_a_destroyed_context_ends_the_process",
        ])
        .env("DAWIN_EMU_DRIVER_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "cuStreamDestroy_v2: a stream of a destroyed context was used after it was destroyed"
        ),
        "{:?}: {stderr}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}
