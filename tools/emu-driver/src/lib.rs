//! An emulated CUDA driver: `libcuda.so.1` with the driver API entry points
//! that cust and dawin call, backed by dawin's PTX emulator.
//!
//! With `LD_LIBRARY_PATH` pointing at it, the `cuda` build of dawin runs
//! `--device cuda` on a machine without a GPU, through cust and the real
//! driver ABI: argument packing for `cuLaunchKernel`, pinned staging buffers,
//! stream ordering, events, the memory pool and the out-of-memory path are
//! then exercised on every CI run, and only the silicon stays unverified.
//!
//! It is faithful where faithfulness catches bugs (docs/design.md, "The
//! emulated driver"):
//! - streams are asynchronous: queued work runs in order, and only when the
//!   host waits (a stream, event or context synchronisation). A synchronous
//!   copy does not wait for a non-blocking stream, so a read without a wait
//!   sees stale data, and a pinned buffer rewritten before its queued copy
//!   ran is reported;
//! - kernel parameters are decoded from the PTX signature;
//! - launches obey an sm_90 device's limits, with the driver's error codes;
//! - a handle used after its context was destroyed ends the process with a
//!   message (a real driver may crash there, or not);
//! - everything not implemented answers CUDA_ERROR_NOT_SUPPORTED and names
//!   itself on stderr.

mod codes;
mod context;
mod device;
mod memory;
mod module;
mod state;
mod stream;
mod unsupported;
mod work;

#[cfg(test)]
mod tests;
