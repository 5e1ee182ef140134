//! Device memory, pinned host memory, copies and memsets.
//!
//! Device memory is the emulator's global memory, capped at
//! `DAWIN_EMU_DRIVER_MEMORY` bytes: an allocation past it answers
//! CUDA_ERROR_OUT_OF_MEMORY. New allocations are filled with 0xff bytes
//! (NaN as f32), since `cuMemAlloc` does not clear memory and code that
//! relies on zeros must fail here too.

use crate::codes::*;
use crate::state::{Driver, Pinned, call, use_after_free};
use crate::work::Work;
use dawin::device::Gpu;
use dawin::error::Error;
use std::alloc::Layout;
use std::ffi::c_void;

/// Pinned buffers are page-aligned, as the driver's are.
const PAGE: usize = 4096;

impl Driver {
    /// Whether `[addr, addr + len)` lies in a live pinned buffer.
    fn is_pinned(&self, entry: &str, addr: usize, len: usize) -> bool {
        let Some((&base, p)) = self.pinned.range(..=addr).next_back() else {
            return false;
        };
        if addr + len > base + p.len {
            return false;
        }
        if !self.contexts.get(&p.ctx).is_some_and(|c| c.alive) {
            use_after_free(entry, "a pinned host buffer of a destroyed context");
        }
        true
    }

    fn check_device_range(&self, ctx: u64, addr: u64, len: usize) -> Res {
        let allocs = &self.contexts[&ctx].allocs;
        let inside = allocs
            .range(..=addr)
            .next_back()
            .is_some_and(|(&base, &size)| addr + len as u64 <= base + size as u64);
        if inside {
            Ok(())
        } else {
            Err(fail(
                CUDA_ERROR_INVALID_VALUE,
                format!("{len} bytes at {addr:#x} are not inside one device allocation"),
            ))
        }
    }

    /// Queues (or, on stream 0, runs) a host-to-device copy.
    fn copy_to_device(&mut self, entry: &str, dst: u64, src: usize, len: usize, s: u64) -> Res {
        let ctx = self.current(entry)?;
        self.check_device_range(ctx, dst, len)?;
        let pinned = self.is_pinned(entry, src, len);
        // SAFETY: the caller promised `len` readable bytes at `src`.
        let snapshot = unsafe { std::slice::from_raw_parts(src as *const u8, len).to_vec() };
        let w = Work::ToDevice {
            dst,
            src,
            snapshot,
            pinned,
        };
        self.enqueue(entry, s, ctx, w)
    }

    fn copy_to_host(&mut self, entry: &str, dst: usize, src: u64, len: usize, s: u64) -> Res {
        let ctx = self.current(entry)?;
        self.check_device_range(ctx, src, len)?;
        self.enqueue(entry, s, ctx, Work::ToHost { dst, src, len })
    }
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuMemAlloc_v2(out: *mut u64, bytes: usize) -> CuResult {
    let entry = "cuMemAlloc_v2";
    call(entry, |d| {
        let ctx = d.current(entry)?;
        if bytes == 0 {
            return Err(quiet(CUDA_ERROR_INVALID_VALUE));
        }
        let c = d.ctx(ctx);
        let addr = match c.emu.alloc(bytes) {
            Ok(a) => a,
            Err(Error::OutOfMemory(_)) => return Err(quiet(CUDA_ERROR_OUT_OF_MEMORY)),
            Err(e) => return Err(fail(CUDA_ERROR_OUT_OF_MEMORY, e.to_string())),
        };
        c.emu
            .write(addr, &vec![0xff; bytes])
            .map_err(|e| fail(CUDA_ERROR_OUT_OF_MEMORY, e.to_string()))?;
        c.allocs.insert(addr, bytes);
        put(out, addr)
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuMemFree_v2(addr: u64) -> CuResult {
    let entry = "cuMemFree_v2";
    call(entry, |d| {
        let ctx = d.current(entry)?;
        // cuMemFree waits for the device, so queued work never sees the
        // allocation vanish.
        d.synchronize_context(ctx)?;
        let c = d.ctx(ctx);
        if c.allocs.remove(&addr).is_none() {
            return Err(fail(
                CUDA_ERROR_INVALID_VALUE,
                format!("{addr:#x} is not the start of a live allocation"),
            ));
        }
        c.emu.free(addr);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CuResult {
    let entry = "cuMemGetInfo_v2";
    call(entry, |d| {
        let ctx = d.current(entry)?;
        let limit = d.options().memory;
        let used: usize = d.ctx(ctx).allocs.values().sum();
        put(free, limit.saturating_sub(used))?;
        put(total, limit)
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuMemAllocHost_v2(out: *mut *mut c_void, bytes: usize) -> CuResult {
    let entry = "cuMemAllocHost_v2";
    call(entry, |d| {
        let ctx = d.current(entry)?;
        let layout = Layout::from_size_align(bytes.max(1), PAGE)
            .map_err(|_| quiet(CUDA_ERROR_INVALID_VALUE))?;
        // SAFETY: a non-zero size; the memory is freed by cuMemFreeHost with
        // the same layout (kept in the record).
        let p = unsafe { std::alloc::alloc(layout) };
        if p.is_null() {
            return Err(quiet(CUDA_ERROR_OUT_OF_MEMORY));
        }
        // Uninitialised on a GPU machine too: make that visible.
        // SAFETY: `p` is a fresh allocation of `bytes` bytes.
        unsafe { std::ptr::write_bytes(p, 0xcd, bytes) };
        let len = bytes.max(1);
        d.pinned.insert(p as usize, Pinned { ctx, len });
        put(out, p.cast())
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuMemFreeHost(p: *mut c_void) -> CuResult {
    let entry = "cuMemFreeHost";
    call(entry, |d| {
        let Some(rec) = d.pinned.get(&(p as usize)) else {
            return Err(fail(
                CUDA_ERROR_INVALID_VALUE,
                format!("{p:?} is not a pinned buffer of this driver"),
            ));
        };
        let ctx = rec.ctx;
        if !d.contexts.get(&ctx).is_some_and(|c| c.alive) {
            use_after_free(entry, "a pinned host buffer of a destroyed context");
        }
        // Queued copies may still read it.
        d.synchronize_context(ctx)?;
        let rec = d.pinned.remove(&(p as usize)).expect("found above");
        let layout = Layout::from_size_align(rec.len, PAGE).expect("checked at allocation");
        // SAFETY: allocated by cuMemAllocHost_v2 with this layout.
        unsafe { std::alloc::dealloc(p.cast(), layout) };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuMemcpyHtoD_v2(dst: u64, src: *const c_void, len: usize) -> CuResult {
    let entry = "cuMemcpyHtoD_v2";
    call(entry, |d| {
        d.copy_to_device(entry, dst, src as usize, len, 0)
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuMemcpyDtoH_v2(dst: *mut c_void, src: u64, len: usize) -> CuResult {
    let entry = "cuMemcpyDtoH_v2";
    call(entry, |d| d.copy_to_host(entry, dst as usize, src, len, 0))
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuMemcpyHtoDAsync_v2(
    dst: u64,
    src: *const c_void,
    len: usize,
    s: u64,
) -> CuResult {
    let entry = "cuMemcpyHtoDAsync_v2";
    call(entry, |d| {
        d.copy_to_device(entry, dst, src as usize, len, s)
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuMemcpyDtoHAsync_v2(
    dst: *mut c_void,
    src: u64,
    len: usize,
    s: u64,
) -> CuResult {
    let entry = "cuMemcpyDtoHAsync_v2";
    call(entry, |d| d.copy_to_host(entry, dst as usize, src, len, s))
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuMemcpyDtoD_v2(dst: u64, src: u64, len: usize) -> CuResult {
    memcpy_dtod("cuMemcpyDtoD_v2", dst, src, len, 0)
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuMemcpyDtoDAsync_v2(dst: u64, src: u64, len: usize, s: u64) -> CuResult {
    memcpy_dtod("cuMemcpyDtoDAsync_v2", dst, src, len, s)
}

fn memcpy_dtod(entry: &str, dst: u64, src: u64, len: usize, s: u64) -> CuResult {
    call(entry, |d| {
        let ctx = d.current(entry)?;
        d.check_device_range(ctx, dst, len)?;
        d.check_device_range(ctx, src, len)?;
        d.enqueue(entry, s, ctx, Work::DeviceToDevice { dst, src, len })
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuMemsetD8_v2(dst: u64, value: u8, len: usize) -> CuResult {
    memset("cuMemsetD8_v2", dst, value, len, 0)
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuMemsetD8Async(dst: u64, value: u8, len: usize, s: u64) -> CuResult {
    memset("cuMemsetD8Async", dst, value, len, s)
}

fn memset(entry: &str, dst: u64, value: u8, len: usize, s: u64) -> CuResult {
    call(entry, |d| {
        let ctx = d.current(entry)?;
        d.check_device_range(ctx, dst, len)?;
        d.enqueue(entry, s, ctx, Work::Memset { dst, value, len })
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuMemsetD32_v2(dst: u64, value: u32, count: usize) -> CuResult {
    let entry = "cuMemsetD32_v2";
    call(entry, |d| {
        let ctx = d.current(entry)?;
        let bytes: Vec<u8> = (0..count).flat_map(|_| value.to_le_bytes()).collect();
        d.check_device_range(ctx, dst, bytes.len())?;
        d.wait_blocking_streams(ctx)?;
        d.device_write(ctx, dst, &bytes)
    })
}
