//! `cuInit` and the one device: an H100/H200-class sm_90 part whose name
//! says it is emulated, so no figure measured on it can pass for a GPU's.

use crate::codes::*;
use crate::state::{Options, call, lock};
use std::ffi::{c_char, c_int, c_uint};

pub const DEVICE_NAME: &str = "dawin emulated driver (sm_90)";
/// Default device memory: 8 GiB.
const DEFAULT_MEMORY: usize = 8 << 30;
/// CUDA 12.8's driver API version.
const DRIVER_VERSION: c_int = 12080;

/// Shared memory a block may use at most, opted in (227 KiB on sm_90).
pub const MAX_SHARED_OPTIN: u32 = 227 * 1024;
/// Shared memory a block gets without opting in.
pub const MAX_SHARED_DEFAULT: u32 = 48 * 1024;

/// (attribute, value) of an H100/H200-class device (CUdevice_attribute).
const ATTRIBUTES: &[(c_int, c_int)] = &[
    (1, 1024),                       // MAX_THREADS_PER_BLOCK
    (2, 1024),                       // MAX_BLOCK_DIM_X
    (3, 1024),                       // MAX_BLOCK_DIM_Y
    (4, 64),                         // MAX_BLOCK_DIM_Z
    (5, i32::MAX),                   // MAX_GRID_DIM_X
    (6, 65535),                      // MAX_GRID_DIM_Y
    (7, 65535),                      // MAX_GRID_DIM_Z
    (8, 49152),                      // MAX_SHARED_MEMORY_PER_BLOCK
    (9, 65536),                      // TOTAL_CONSTANT_MEMORY
    (10, 32),                        // WARP_SIZE
    (12, 65536),                     // MAX_REGISTERS_PER_BLOCK
    (13, 1_980_000),                 // CLOCK_RATE (kHz)
    (16, 132),                       // MULTIPROCESSOR_COUNT
    (19, 1),                         // CAN_MAP_HOST_MEMORY
    (31, 1),                         // CONCURRENT_KERNELS
    (36, 3_201_000),                 // MEMORY_CLOCK_RATE (kHz)
    (37, 6016),                      // GLOBAL_MEMORY_BUS_WIDTH (bits)
    (38, 62_914_560),                // L2_CACHE_SIZE
    (39, 2048),                      // MAX_THREADS_PER_MULTIPROCESSOR
    (40, 2),                         // ASYNC_ENGINE_COUNT
    (41, 1),                         // UNIFIED_ADDRESSING
    (75, 9),                         // COMPUTE_CAPABILITY_MAJOR
    (76, 0),                         // COMPUTE_CAPABILITY_MINOR
    (81, 233_472),                   // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
    (82, 65536),                     // MAX_REGISTERS_PER_MULTIPROCESSOR
    (97, MAX_SHARED_OPTIN as c_int), // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
];

fn env<T: std::str::FromStr>(k: &str) -> Option<T> {
    std::env::var(k).ok().and_then(|v| v.parse().ok())
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuInit(flags: c_uint) -> CuResult {
    if flags != 0 {
        return CUDA_ERROR_INVALID_VALUE;
    }
    let mut d = lock();
    if d.options.is_none() {
        d.options = Some(Options {
            memory: env("DAWIN_EMU_DRIVER_MEMORY").unwrap_or(DEFAULT_MEMORY),
            shuffle_blocks: env("DAWIN_EMU_SHUFFLE"),
        });
        d.trace = env::<u8>("DAWIN_EMU_DRIVER_TRACE").is_some_and(|v| v != 0);
    }
    CUDA_SUCCESS
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuDriverGetVersion(out: *mut c_int) -> CuResult {
    answer("cuDriverGetVersion", put(out, DRIVER_VERSION))
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuDeviceGetCount(out: *mut c_int) -> CuResult {
    call("cuDeviceGetCount", |_| put(out, 1))
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuDeviceGet(out: *mut c_int, ordinal: c_int) -> CuResult {
    call("cuDeviceGet", |_| {
        if ordinal != 0 {
            return Err(quiet(CUDA_ERROR_INVALID_DEVICE));
        }
        put(out, 0)
    })
}

pub fn check_device(dev: c_int) -> Res {
    if dev == 0 {
        Ok(())
    } else {
        Err(quiet(CUDA_ERROR_INVALID_DEVICE))
    }
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuDeviceGetName(out: *mut c_char, len: c_int, dev: c_int) -> CuResult {
    call("cuDeviceGetName", |_| {
        check_device(dev)?;
        if out.is_null() || len <= 0 {
            return Err(quiet(CUDA_ERROR_INVALID_VALUE));
        }
        let bytes = DEVICE_NAME.as_bytes();
        let n = bytes.len().min(len as usize - 1);
        // SAFETY: `out` has room for `len` bytes; we write n + 1 <= len.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.cast(), n);
            *out.add(n) = 0;
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuDeviceGetAttribute(
    out: *mut c_int,
    attribute: c_int,
    dev: c_int,
) -> CuResult {
    call("cuDeviceGetAttribute", |_| {
        check_device(dev)?;
        match ATTRIBUTES.iter().find(|a| a.0 == attribute) {
            Some(&(_, v)) => put(out, v),
            None => Err(fail(
                CUDA_ERROR_NOT_SUPPORTED,
                format!("device attribute {attribute} is not emulated"),
            )),
        }
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuDeviceTotalMem_v2(out: *mut usize, dev: c_int) -> CuResult {
    call("cuDeviceTotalMem_v2", |d| {
        check_device(dev)?;
        put(out, d.options().memory)
    })
}
