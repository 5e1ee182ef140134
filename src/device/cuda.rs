//! `cuda`: the project's PTX on an NVIDIA GPU through cust (feature `cuda`).
//! Same `Gpu` interface as the emulator, so every launcher and the whole
//! model code are shared.

use crate::device::{Arg, Dims, Gpu, Timing};
use crate::error::{Error, Result};
use cust::device::DeviceAttribute;
use cust::event::{Event, EventFlags};
use cust::function::Function;
use cust::memory::{DeviceBuffer, LockedBuffer};
use cust::module::Module;
use cust::prelude::{Context, Stream, StreamFlags};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::c_void;

/// Host writes at least this large go through pinned staging buffers and an
/// asynchronous copy, so the host returns without waiting for the GPU.
const STAGED_WRITE_BYTES: usize = 1 << 16;

/// A pinned host buffer and the event of the last copy out of it.
type Staging = (LockedBuffer<u8>, RawEvent);

/// A freed allocation kept for reuse, with the synchronisation count at the
/// time it was freed: once the compute stream has synchronised after that,
/// no queued work can still use it.
struct Pooled {
    buf: DeviceBuffer<u8>,
    freed_at: u64,
}

/// An event of our own. cust 0.3's `Event` hides its handle and
/// `Stream::wait_event` consumes the event, so the staging events (recorded
/// on either stream, waited for by the compute stream) are raw.
struct RawEvent(cust::sys::CUevent);

impl RawEvent {
    fn new() -> Result<Self> {
        let mut e = std::ptr::null_mut();
        let flags = cust::sys::CUevent_flags_enum::CU_EVENT_DISABLE_TIMING as u32;
        // SAFETY: an out-pointer to a local.
        check(
            unsafe { cust::sys::cuEventCreate(&mut e, flags) },
            "create event",
        )?;
        Ok(RawEvent(e))
    }

    fn record(&self, stream: cust::sys::CUstream) -> Result<()> {
        // SAFETY: both handles are live (owned by the executor).
        check(
            unsafe { cust::sys::cuEventRecord(self.0, stream) },
            "record an event",
        )
    }

    fn synchronize(&self) -> Result<()> {
        // SAFETY: a live event.
        check(
            unsafe { cust::sys::cuEventSynchronize(self.0) },
            "wait for a staged copy",
        )
    }
}

impl Drop for RawEvent {
    fn drop(&mut self) {
        // SAFETY: a live event, destroyed once.
        unsafe { cust::sys::cuEventDestroy_v2(self.0) };
    }
}

/// The stream that copies the next batch's images while the compute stream
/// runs the current one. Created raw because cust 0.3 drops NON_BLOCKING:
/// a non-blocking stream does not make the compute stream's synchronous
/// reads wait for its copies.
struct CopyStream(cust::sys::CUstream);

impl CopyStream {
    fn new() -> Result<Self> {
        let mut s = std::ptr::null_mut();
        let flags = cust::sys::CUstream_flags_enum::CU_STREAM_NON_BLOCKING as u32;
        // SAFETY: an out-pointer to a local.
        check(
            unsafe { cust::sys::cuStreamCreate(&mut s, flags) },
            "create the copy stream",
        )?;
        Ok(CopyStream(s))
    }
}

impl Drop for CopyStream {
    fn drop(&mut self) {
        // SAFETY: a live stream, drained (the copies may read pinned memory
        // that is released after it), then destroyed once.
        unsafe {
            cust::sys::cuStreamSynchronize(self.0);
            cust::sys::cuStreamDestroy_v2(self.0);
        }
    }
}

pub struct CudaGpu {
    stream: Stream,
    copy_stream: CopyStream,
    device_name: String,
    /// Looked up once; modules are leaked so functions can be `'static`
    /// (one executor lives for the whole process).
    functions: HashMap<String, Function<'static>>,
    allocs: RefCell<HashMap<u64, DeviceBuffer<u8>>>,
    /// Freed allocations by size, reused before asking the driver again
    /// (cuMemFree/cuMemAlloc synchronise the device; forwards allocate
    /// the same scratch sizes batch after batch).
    pool: RefCell<HashMap<usize, Vec<Pooled>>>,
    /// Completed synchronisations of the compute stream (see [`Pooled`]).
    syncs: Cell<u64>,
    /// Two pinned staging buffers, each with the event of its last copy:
    /// batch i+1 is staged while batch i's copy may still be in flight.
    staging: RefCell<[Option<Staging>; 2]>,
    next_staging: Cell<usize>,
    /// Profiling timestamps; `marks_used` of them are live.
    marks: RefCell<Vec<Event>>,
    marks_used: Cell<usize>,
    /// Scratch overwritten to evict L2 between benchmark repeats.
    flush: RefCell<Option<DeviceBuffer<u8>>>,
    l2_bytes: usize,
    peak: Option<crate::profile::Peak>,
    /// Last, because fields drop in declaration order: the streams, events,
    /// device and pinned buffers above must be released while the context
    /// still exists. Destroying it first left their handles dangling, and
    /// freeing them then crashed the process at exit (seen on an H200).
    _ctx: Context,
}

fn driver(what: &str, e: cust::error::CudaError) -> Error {
    let hint = match e {
        cust::error::CudaError::UnknownError => {
            " (if this is CUDA error 222, the driver is too old for the PTX version; update the driver)"
        }
        _ => "",
    };
    if e == cust::error::CudaError::OutOfMemory {
        return Error::OutOfMemory(format!("cuda: {what}"));
    }
    Error::Device(format!("cuda: {what}: {e:?}{hint}"))
}

/// f32 lanes per SM by compute capability (SIMT FMA units).
fn fp32_lanes_per_sm(major: i32, minor: i32) -> f64 {
    match (major, minor) {
        (8, 0) | (6, 0) | (7, _) => 64.0,
        _ => 128.0,
    }
}

/// Dense bf16 mma FLOPs per SM per clock (f32 accumulation): 1024 FMA on
/// A100-class sm_80, 2048 on Hopper; 512 on the sm_86/89 parts.
fn tensor_flops_per_sm_clock(major: i32, minor: i32) -> Option<f64> {
    match (major, minor) {
        (8, 0) => Some(2048.0),
        (8, _) => Some(1024.0),
        (9, _) => Some(4096.0),
        _ => None,
    }
}

fn device_peak(d: &cust::device::Device) -> Option<crate::profile::Peak> {
    let a = |x| d.get_attribute(x).ok().map(|v| v as f64);
    let sms = a(DeviceAttribute::MultiprocessorCount)?;
    let clock_khz = a(DeviceAttribute::ClockRate)?;
    let mem_khz = a(DeviceAttribute::MemoryClockRate)?;
    let bus_bits = a(DeviceAttribute::GlobalMemoryBusWidth)?;
    let major = d
        .get_attribute(DeviceAttribute::ComputeCapabilityMajor)
        .ok()?;
    let minor = d
        .get_attribute(DeviceAttribute::ComputeCapabilityMinor)
        .ok()?;
    let lanes = fp32_lanes_per_sm(major, minor);
    Some(crate::profile::Peak {
        flops: sms * lanes * 2.0 * clock_khz * 1e3,
        tensor_flops: tensor_flops_per_sm_clock(major, minor).map(|f| sms * f * clock_khz * 1e3),
        bytes: 2.0 * mem_khz * 1e3 * bus_bits / 8.0,
        source: format!(
            "sm_{major}{minor}: {sms} SMs × {lanes} lanes × 2 × {:.0} MHz; {bus_bits}-bit bus × 2 × {:.0} MHz",
            clock_khz / 1e3,
            mem_khz / 1e3
        ),
    })
}

impl CudaGpu {
    /// Opens device 0 and loads the kernel modules `(file name, PTX)`; each
    /// module's kernel is the function named like its file.
    pub fn new(modules: &[(&str, &str)]) -> Result<Self> {
        let ctx = cust::quick_init().map_err(|e| {
            Error::Device(format!(
                "cuda: no usable NVIDIA GPU or driver ({e:?}); use --device cpu or --device emu"
            ))
        })?;
        let device = cust::device::Device::get_device(0).map_err(|e| driver("get device", e))?;
        let device_name = device.name().unwrap_or_else(|_| "unknown GPU".into());
        let peak = device_peak(&device);
        let l2_bytes = device
            .get_attribute(DeviceAttribute::L2CacheSize)
            .map_or(64 << 20, |v| v.max(0) as usize);
        // cust 0.3 drops NON_BLOCKING (Stream::new removes it), so this is a
        // blocking stream: the synchronous copies and memsets of the legacy
        // default stream (`write`, `read`, a new `DeviceBuffer::zeroed`) wait
        // for the work queued on it. The emulated driver models that.
        let stream =
            Stream::new(StreamFlags::NON_BLOCKING, None).map_err(|e| driver("create stream", e))?;
        let copy_stream = CopyStream::new()?;
        let mut functions = HashMap::new();
        for (file, src) in modules {
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
            stream,
            copy_stream,
            device_name,
            functions,
            allocs: RefCell::new(HashMap::new()),
            pool: RefCell::new(HashMap::new()),
            syncs: Cell::new(0),
            staging: RefCell::new([None, None]),
            next_staging: Cell::new(0),
            marks: RefCell::new(Vec::new()),
            marks_used: Cell::new(0),
            flush: RefCell::new(None),
            l2_bytes,
            peak,
            _ctx: ctx,
        })
    }

    /// Queues a host-to-device copy from a pinned staging buffer on
    /// `stream` and records its event there; with `then` the compute stream
    /// waits for that event before the work queued on it afterwards. The
    /// host only waits for the copy that last used the same buffer (two back).
    fn write_staged(
        &self,
        addr: u64,
        data: &[u8],
        stream: cust::sys::CUstream,
        compute_waits: bool,
    ) -> Result<()> {
        let slot = self.next_staging.get();
        self.next_staging.set(1 - slot);
        let mut staging = self.staging.borrow_mut();
        if let Some((_, done)) = &staging[slot] {
            done.synchronize()?;
        }
        if staging[slot]
            .as_ref()
            .is_none_or(|(b, _)| b.len() < data.len())
        {
            // SAFETY: the buffer is fully overwritten up to `data.len()`
            // before any copy reads it.
            let buf = unsafe { LockedBuffer::<u8>::uninitialized(data.len().max(1)) }
                .map_err(|e| driver(&format!("pin {} host bytes", data.len()), e))?;
            staging[slot] = Some((buf, RawEvent::new()?));
        }
        let (buf, done) = staging[slot].as_mut().expect("set above");
        buf.as_mut_slice()[..data.len()].copy_from_slice(data);
        // SAFETY: the pinned buffer stays alive and untouched until `done`
        // has fired (checked before its next use above, and both streams
        // are drained before buffers are released).
        let r = unsafe {
            cust::sys::cuMemcpyHtoDAsync_v2(
                addr,
                buf.as_slice().as_ptr() as *const c_void,
                data.len(),
                stream,
            )
        };
        check(
            r,
            &format!("queue a copy of {} bytes to the device", data.len()),
        )?;
        done.record(stream)?;
        if compute_waits {
            // SAFETY: live stream and event.
            let r = unsafe { cust::sys::cuStreamWaitEvent(self.stream.as_inner(), done.0, 0) };
            check(r, "order the compute stream after a copy")?;
        }
        Ok(())
    }

    /// A pooled allocation of `bytes` that no queued work can still use.
    fn take_idle(&self, bytes: usize) -> Option<DeviceBuffer<u8>> {
        let mut pool = self.pool.borrow_mut();
        let list = pool.get_mut(&bytes)?;
        let i = list.iter().position(|p| p.freed_at < self.syncs.get())?;
        Some(list.swap_remove(i).buf)
    }
}

impl Drop for CudaGpu {
    fn drop(&mut self) {
        // Staged copies may still read pinned memory.
        let _ = self.stream.synchronize();
    }
}

impl Gpu for CudaGpu {
    fn name(&self) -> String {
        format!("cuda ({})", self.device_name)
    }

    fn alloc(&self, bytes: usize) -> Result<u64> {
        let bytes = bytes.max(1);
        let reused = self.pool.borrow_mut().get_mut(&bytes).and_then(Vec::pop);
        let b = match reused.map(|p| p.buf) {
            Some(b) => {
                // Zero-filled like a fresh allocation, in stream order.
                // SAFETY: `b` is a live allocation of `bytes` bytes.
                let r = unsafe {
                    cust::sys::cuMemsetD8Async(
                        b.as_device_ptr().as_raw(),
                        0,
                        bytes,
                        self.stream.as_inner(),
                    )
                };
                check(r, "clear a reused allocation")?;
                b
            }
            None => match DeviceBuffer::<u8>::zeroed(bytes) {
                Ok(b) => b,
                Err(cust::error::CudaError::OutOfMemory) => {
                    // Give cached blocks back to the driver and try once more.
                    self.synchronize()?;
                    self.pool.borrow_mut().clear();
                    DeviceBuffer::<u8>::zeroed(bytes)
                        .map_err(|e| driver(&format!("allocate {bytes} bytes"), e))?
                }
                Err(e) => return Err(driver(&format!("allocate {bytes} bytes"), e)),
            },
        };
        let addr = b.as_device_ptr().as_raw();
        self.allocs.borrow_mut().insert(addr, b);
        Ok(addr)
    }

    fn free(&self, addr: u64) {
        // Kept for reuse: work queued on the stream may still use it, and a
        // later allocation of it is ordered after that work on the same stream.
        if let Some(buf) = self.allocs.borrow_mut().remove(&addr) {
            let freed_at = self.syncs.get();
            let entry = Pooled { buf, freed_at };
            self.pool
                .borrow_mut()
                .entry(entry.buf.len())
                .or_default()
                .push(entry);
        }
    }

    fn upload_ahead(&self, data: &[u8]) -> Result<u64> {
        let bytes = data.len().max(1);
        // Not a buffer the queued work may still read or write, and no
        // zero-fill on the compute stream: the copy, on the other stream,
        // would not be ordered after it.
        let buf = match self.take_idle(bytes) {
            Some(b) => b,
            // SAFETY: fully written by the copy below before any kernel
            // (ordered after it) reads it.
            None => unsafe { DeviceBuffer::<u8>::uninitialized(bytes) }
                .map_err(|e| driver(&format!("allocate {bytes} bytes"), e))?,
        };
        let addr = buf.as_device_ptr().as_raw();
        self.allocs.borrow_mut().insert(addr, buf);
        let copy = self.write_staged(addr, data, self.copy_stream.0, true);
        if copy.is_err() {
            self.free(addr);
        }
        copy.map(|()| addr)
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<()> {
        if data.len() >= STAGED_WRITE_BYTES {
            return self.write_staged(addr, data, self.stream.as_inner(), false);
        }
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

    fn launch(&self, kernel: &str, dims: Dims, args: &[Arg]) -> Result<()> {
        let Dims {
            grid,
            block,
            shared_bytes,
        } = dims;
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
}

impl Timing for CudaGpu {
    fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| driver("synchronize (an earlier kernel failed)", e))?;
        self.syncs.set(self.syncs.get() + 1);
        Ok(())
    }

    fn mark(&self) -> Result<usize> {
        let i = self.marks_used.get();
        let mut marks = self.marks.borrow_mut();
        if i == marks.len() {
            marks.push(Event::new(EventFlags::DEFAULT).map_err(|e| driver("create event", e))?);
        }
        marks[i]
            .record(&self.stream)
            .map_err(|e| driver("record event", e))?;
        self.marks_used.set(i + 1);
        Ok(i)
    }

    fn elapsed_ms(&self, start: usize, end: usize) -> Result<f64> {
        let marks = self.marks.borrow();
        marks[end]
            .synchronize()
            .map_err(|e| driver("wait for a timed kernel", e))?;
        marks[end]
            .elapsed_time_f32(&marks[start])
            .map(f64::from)
            .map_err(|e| driver("read event times", e))
    }

    fn reset_marks(&self) {
        self.marks_used.set(0);
    }

    fn range_push(&self, name: &str) {
        nvtx::range_push!("{name}");
    }

    fn range_pop(&self) {
        nvtx::range_pop!();
    }

    fn flush_caches(&self) -> Result<()> {
        let bytes = (2 * self.l2_bytes).max(64 << 20);
        let mut flush = self.flush.borrow_mut();
        if flush.is_none() {
            *flush = Some(
                DeviceBuffer::<u8>::zeroed(bytes)
                    .map_err(|e| driver("allocate the L2 flush buffer", e))?,
            );
        }
        let b = flush.as_ref().expect("set above");
        // SAFETY: writes within our own allocation, in stream order.
        let r = unsafe {
            cust::sys::cuMemsetD8Async(
                b.as_device_ptr().as_raw(),
                self.marks_used.get() as u8,
                bytes,
                self.stream.as_inner(),
            )
        };
        check(r, "flush L2")
    }

    fn peak(&self) -> Option<crate::profile::Peak> {
        self.peak.clone()
    }
}

fn check(r: cust::sys::CUresult, what: &str) -> Result<()> {
    if r == cust::sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(Error::Device(format!("cuda: {what}: driver error {r:?}")))
    }
}
