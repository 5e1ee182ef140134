//! Streams and events. Work queued on a stream runs in order, and only when
//! the host waits for it: `cuStreamSynchronize`, `cuEventSynchronize` (up to
//! the event's record), `cuCtxSynchronize`, a `cuStreamWaitEvent` that needs
//! another stream's record, and the calls that synchronise the device
//! (`cuMemFree`, `cuMemFreeHost`, destroying a context). A synchronous copy
//! waits only for blocking streams, as the legacy default stream does.

use crate::codes::*;
use crate::state::{Driver, Event, Stream, call};
use crate::work::Work;
use dawin::device::Gpu;
use std::ffi::{c_float, c_uint};
use std::time::Instant;

const CU_STREAM_NON_BLOCKING: c_uint = 0x1;
const CU_EVENT_DISABLE_TIMING: c_uint = 0x2;

impl Driver {
    /// Queues `w` on stream `s` (0: the legacy default stream, which runs
    /// it at once after the blocking streams).
    pub fn enqueue(&mut self, entry: &str, s: u64, ctx: u64, w: Work) -> Res {
        if s == 0 {
            self.wait_blocking_streams(ctx)?;
            return self.execute(ctx, w);
        }
        let st = self.stream(entry, s)?;
        if st.ctx != ctx {
            return Err(fail(
                CUDA_ERROR_INVALID_HANDLE,
                "the stream belongs to another context",
            ));
        }
        st.queue.push_back(w);
        Ok(())
    }

    pub fn stream(&mut self, entry: &str, s: u64) -> Res<&mut Stream> {
        match self.streams.get(&s) {
            None => Err(quiet(CUDA_ERROR_INVALID_HANDLE)),
            Some(st) if !st.alive => self.dead(entry, "a stream", st.ctx),
            Some(_) => Ok(self.streams.get_mut(&s).expect("found above")),
        }
    }

    fn event(&mut self, entry: &str, e: u64) -> Res<&mut Event> {
        match self.events.get(&e) {
            None => Err(quiet(CUDA_ERROR_INVALID_HANDLE)),
            Some(ev) if !ev.alive => self.dead(entry, "an event", ev.ctx),
            Some(_) => Ok(self.events.get_mut(&e).expect("found above")),
        }
    }

    /// What synchronous copies and memsets wait for first.
    pub fn wait_blocking_streams(&mut self, ctx: u64) -> Res {
        let blocking: Vec<u64> = self
            .streams
            .iter()
            .filter(|(_, s)| s.ctx == ctx && s.alive && s.blocking)
            .map(|(&k, _)| k)
            .collect();
        for s in blocking {
            self.run_stream(s, None)?;
        }
        Ok(())
    }

    /// Runs stream `s`'s queue, all of it or up to and including the record
    /// `until`. The first failure poisons the context and empties its queues.
    pub fn run_stream(&mut self, s: u64, until: Option<(u64, u64)>) -> Res {
        loop {
            let Some(st) = self.streams.get_mut(&s) else {
                return Ok(());
            };
            let ctx = st.ctx;
            let Some(w) = st.queue.pop_front() else {
                return Ok(());
            };
            let reached =
                matches!(&w, Work::Record { event, nth } if Some((*event, *nth)) == until);
            if let Err(f) = self.execute(ctx, w) {
                let code = f.code;
                self.ctx(ctx).sticky.get_or_insert(code);
                for st in self.streams.values_mut().filter(|x| x.ctx == ctx) {
                    st.queue.clear();
                }
                return Err(f);
            }
            if reached {
                return Ok(());
            }
        }
    }

    fn execute(&mut self, ctx: u64, w: Work) -> Res {
        if let Some(code) = self.ctx(ctx).sticky {
            return Err(quiet(code));
        }
        match w {
            Work::Launch { kernel, dims, args } => {
                let emu = &self.ctx(ctx).emu;
                emu.launch(&kernel, dims, &args).map_err(|e| {
                    let msg = e.to_string();
                    let code = if msg.contains("out of bounds") || msg.contains("outside") {
                        CUDA_ERROR_ILLEGAL_ADDRESS
                    } else {
                        CUDA_ERROR_LAUNCH_FAILED
                    };
                    fail(code, msg)
                })
            }
            Work::ToDevice {
                dst,
                src,
                snapshot,
                pinned,
            } => {
                if pinned && self.pinned_bytes(src, snapshot.len()) != snapshot {
                    return Err(fail(
                        CUDA_ERROR_ILLEGAL_STATE,
                        format!(
                            "a pinned buffer ({} bytes at {src:#x}) was rewritten before its queued copy to the device ran; wait for the copy (an event or a stream synchronisation) before reusing the buffer",
                            snapshot.len()
                        ),
                    ));
                }
                self.device_write(ctx, dst, &snapshot)
            }
            Work::ToHost { dst, src, len } => {
                let mut buf = vec![0u8; len];
                self.device_read(ctx, src, &mut buf)?;
                // SAFETY: the caller of the async copy promised `len`
                // writable bytes at `dst` until the stream reaches this copy.
                unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), dst as *mut u8, len) };
                Ok(())
            }
            Work::DeviceToDevice { dst, src, len } => {
                let mut buf = vec![0u8; len];
                self.device_read(ctx, src, &mut buf)?;
                self.device_write(ctx, dst, &buf)
            }
            Work::Memset { dst, value, len } => self.device_write(ctx, dst, &vec![value; len]),
            Work::Record { event, nth } => {
                if let Some(ev) = self.events.get_mut(&event)
                    && ev.records == nth
                {
                    ev.done_at = Some(Instant::now());
                    ev.pending_on = None;
                }
                Ok(())
            }
            Work::Wait { event, nth } => {
                let on = self.events.get(&event).and_then(|e| e.pending_on);
                match on {
                    Some(other) => self.run_stream(other, Some((event, nth))),
                    None => Ok(()),
                }
            }
        }
    }

    pub fn device_write(&mut self, ctx: u64, dst: u64, data: &[u8]) -> Res {
        self.ctx(ctx)
            .emu
            .write(dst, data)
            .map_err(|e| fail(CUDA_ERROR_INVALID_VALUE, e.to_string()))
    }

    pub fn device_read(&mut self, ctx: u64, src: u64, out: &mut [u8]) -> Res {
        self.ctx(ctx)
            .emu
            .read(src, out)
            .map_err(|e| fail(CUDA_ERROR_INVALID_VALUE, e.to_string()))
    }

    /// The current bytes of a pinned host range.
    fn pinned_bytes(&self, addr: usize, len: usize) -> Vec<u8> {
        // SAFETY: the range was checked to lie in a live pinned buffer when
        // the copy was queued, and pinned buffers are freed only after every
        // stream of their context has run.
        unsafe { std::slice::from_raw_parts(addr as *const u8, len).to_vec() }
    }
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuStreamCreate(out: *mut u64, flags: c_uint) -> CuResult {
    create_stream("cuStreamCreate", out, flags)
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuStreamCreateWithPriority(
    out: *mut u64,
    flags: c_uint,
    _prio: i32,
) -> CuResult {
    create_stream("cuStreamCreateWithPriority", out, flags)
}

fn create_stream(entry: &str, out: *mut u64, flags: c_uint) -> CuResult {
    call(entry, |d| {
        let ctx = d.current(entry)?;
        let h = d.new_handle();
        let st = Stream {
            ctx,
            alive: true,
            blocking: flags & CU_STREAM_NON_BLOCKING == 0,
            queue: Default::default(),
        };
        d.streams.insert(h, st);
        put(out, h)
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuStreamDestroy_v2(s: u64) -> CuResult {
    let entry = "cuStreamDestroy_v2";
    call(entry, |d| {
        d.stream(entry, s)?;
        // The driver lets queued work finish before releasing the stream.
        let r = d.run_stream(s, None);
        d.stream(entry, s)?.alive = false;
        r
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuStreamSynchronize(s: u64) -> CuResult {
    let entry = "cuStreamSynchronize";
    call(entry, |d| {
        let ctx = if s == 0 {
            d.current(entry)?
        } else {
            d.stream(entry, s)?.ctx
        };
        if s == 0 {
            return d.synchronize_context(ctx);
        }
        d.run_stream(s, None)?;
        match d.ctx(ctx).sticky {
            Some(code) => Err(quiet(code)),
            None => Ok(()),
        }
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuStreamQuery(s: u64) -> CuResult {
    let entry = "cuStreamQuery";
    call(entry, |d| {
        // A polling loop is a wait: the work runs, and the first query of a
        // non-empty stream still says it was not ready.
        let busy = !d.stream(entry, s)?.queue.is_empty();
        d.run_stream(s, None)?;
        if busy {
            Err(quiet(CUDA_ERROR_NOT_READY))
        } else {
            Ok(())
        }
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuStreamWaitEvent(s: u64, e: u64, _flags: c_uint) -> CuResult {
    let entry = "cuStreamWaitEvent";
    call(entry, |d| {
        let ev = d.event(entry, e)?;
        let (ctx, nth) = (ev.ctx, ev.records);
        d.enqueue(entry, s, ctx, Work::Wait { event: e, nth })
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuEventCreate(out: *mut u64, flags: c_uint) -> CuResult {
    let entry = "cuEventCreate";
    call(entry, |d| {
        let ctx = d.current(entry)?;
        let h = d.new_handle();
        let ev = Event {
            ctx,
            alive: true,
            timing: flags & CU_EVENT_DISABLE_TIMING == 0,
            records: 0,
            pending_on: None,
            done_at: None,
        };
        d.events.insert(h, ev);
        put(out, h)
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuEventDestroy_v2(e: u64) -> CuResult {
    let entry = "cuEventDestroy_v2";
    call(entry, |d| {
        d.event(entry, e)?.alive = false;
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuEventRecord(e: u64, s: u64) -> CuResult {
    let entry = "cuEventRecord";
    call(entry, |d| {
        let ev = d.event(entry, e)?;
        ev.records += 1;
        ev.done_at = None;
        ev.pending_on = (s != 0).then_some(s);
        let (ctx, nth) = (ev.ctx, ev.records);
        d.enqueue(entry, s, ctx, Work::Record { event: e, nth })
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuEventSynchronize(e: u64) -> CuResult {
    let entry = "cuEventSynchronize";
    call(entry, |d| {
        let ev = d.event(entry, e)?;
        let (on, nth, ctx) = (ev.pending_on, ev.records, ev.ctx);
        if let Some(s) = on {
            d.run_stream(s, Some((e, nth)))?;
        }
        match d.ctx(ctx).sticky {
            Some(code) => Err(quiet(code)),
            None => Ok(()),
        }
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuEventQuery(e: u64) -> CuResult {
    let entry = "cuEventQuery";
    call(entry, |d| {
        let ev = d.event(entry, e)?;
        match (ev.records, ev.done_at) {
            (0, _) | (_, Some(_)) => Ok(()),
            _ => {
                // As cuStreamQuery: a poll is a wait.
                let (on, nth) = (ev.pending_on, ev.records);
                if let Some(s) = on {
                    d.run_stream(s, Some((e, nth)))?;
                }
                Err(quiet(CUDA_ERROR_NOT_READY))
            }
        }
    })
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuEventElapsedTime(ms: *mut c_float, start: u64, end: u64) -> CuResult {
    let entry = "cuEventElapsedTime";
    call(entry, |d| {
        let mut time = |e: u64| -> Res<Instant> {
            let ev = d.event(entry, e)?;
            if !ev.timing {
                return Err(fail(
                    CUDA_ERROR_INVALID_HANDLE,
                    "an event created with CU_EVENT_DISABLE_TIMING has no time",
                ));
            }
            ev.done_at.ok_or(quiet(CUDA_ERROR_NOT_READY))
        };
        let (t0, t1) = (time(start)?, time(end)?);
        let v = if t1 >= t0 {
            (t1 - t0).as_secs_f64()
        } else {
            -(t0 - t1).as_secs_f64()
        };
        put(ms, (v * 1e3) as c_float)
    })
}
