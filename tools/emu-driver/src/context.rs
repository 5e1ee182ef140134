//! Contexts: the device's primary context (reference-counted, what cust
//! uses) and plain ones, and each thread's current context.
//!
//! When the primary context's last reference is released, everything made
//! in it (streams, events, modules, allocations) dies with it; a later use
//! of one of those handles ends the process with a message.

use crate::codes::*;
use crate::device::check_device;
use crate::state::{CURRENT, call, current_ctx, set_current};
use std::ffi::{c_int, c_uint};

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuDevicePrimaryCtxRetain(out: *mut u64, dev: c_int) -> CuResult {
    call("cuDevicePrimaryCtxRetain", |d| {
        check_device(dev)?;
        let h = match d.primary {
            Some((h, refs)) => {
                d.primary = Some((h, refs + 1));
                h
            }
            None => {
                let h = d.new_context(true)?;
                d.primary = Some((h, 1));
                h
            }
        };
        put(out, h)
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuDevicePrimaryCtxRelease_v2(dev: c_int) -> CuResult {
    call("cuDevicePrimaryCtxRelease_v2", |d| {
        check_device(dev)?;
        match d.primary {
            None => Err(fail(
                CUDA_ERROR_INVALID_CONTEXT,
                "the primary context has no reference left to release",
            )),
            Some((h, 1)) => {
                d.primary = None;
                d.destroy_context(h)
            }
            Some((h, refs)) => {
                d.primary = Some((h, refs - 1));
                Ok(())
            }
        }
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuDevicePrimaryCtxSetFlags_v2(dev: c_int, _flags: c_uint) -> CuResult {
    // Scheduling flags change nothing an emulator can show.
    call("cuDevicePrimaryCtxSetFlags_v2", |_| check_device(dev))
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuDevicePrimaryCtxGetState(
    dev: c_int,
    flags: *mut c_uint,
    active: *mut c_int,
) -> CuResult {
    call("cuDevicePrimaryCtxGetState", |d| {
        check_device(dev)?;
        put(flags, 0)?;
        put(active, d.primary.is_some() as c_int)
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuCtxCreate_v2(out: *mut u64, _flags: c_uint, dev: c_int) -> CuResult {
    call("cuCtxCreate_v2", |d| {
        check_device(dev)?;
        let h = d.new_context(false)?;
        CURRENT.with(|c| c.borrow_mut().push(h));
        put(out, h)
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuCtxDestroy_v2(ctx: u64) -> CuResult {
    let entry = "cuCtxDestroy_v2";
    call(entry, |d| {
        if d.live_context(entry, ctx)?.primary {
            return Err(fail(
                CUDA_ERROR_INVALID_CONTEXT,
                "the primary context is released with cuDevicePrimaryCtxRelease, not destroyed",
            ));
        }
        CURRENT.with(|c| c.borrow_mut().retain(|&x| x != ctx));
        d.destroy_context(ctx)
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuCtxSetCurrent(ctx: u64) -> CuResult {
    let entry = "cuCtxSetCurrent";
    call(entry, |d| {
        if ctx != 0 {
            d.live_context(entry, ctx)?;
        }
        set_current(ctx);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuCtxGetCurrent(out: *mut u64) -> CuResult {
    call("cuCtxGetCurrent", |_| put(out, current_ctx()))
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuCtxPushCurrent_v2(ctx: u64) -> CuResult {
    let entry = "cuCtxPushCurrent_v2";
    call(entry, |d| {
        d.live_context(entry, ctx)?;
        CURRENT.with(|c| c.borrow_mut().push(ctx));
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuCtxPopCurrent_v2(out: *mut u64) -> CuResult {
    call("cuCtxPopCurrent_v2", |_| {
        let popped = CURRENT.with(|c| c.borrow_mut().pop());
        match popped {
            Some(h) if h != 0 => {
                if !out.is_null() {
                    put(out, h)?;
                }
                Ok(())
            }
            _ => Err(quiet(CUDA_ERROR_INVALID_CONTEXT)),
        }
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuCtxGetDevice(out: *mut c_int) -> CuResult {
    let entry = "cuCtxGetDevice";
    call(entry, |d| {
        d.current(entry)?;
        put(out, 0)
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuCtxGetApiVersion(ctx: u64, out: *mut c_uint) -> CuResult {
    call("cuCtxGetApiVersion", |d| {
        if !d.contexts.contains_key(&ctx) {
            return Err(quiet(CUDA_ERROR_INVALID_CONTEXT));
        }
        put(out, 3020)
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuCtxSynchronize() -> CuResult {
    let entry = "cuCtxSynchronize";
    call(entry, |d| {
        let ctx = d.current(entry)?;
        d.synchronize_context(ctx)
    })
}
