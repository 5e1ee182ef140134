//! The profiling layer every executor from [`super::open`] wears: each op is
//! an NVTX range (on `cuda`) and, while profiling is on, is bracketed by two
//! device timestamps (CUDA events on the GPU, so queued launches keep
//! overlapping with the host). Timestamps are turned into milliseconds in
//! batches, when many are pending or when the profile is taken.

use super::Executor;
use crate::buf::{Buf, DType};
use crate::error::Result;
use crate::ops::Op;
use crate::profile::{Cost, Record};
use std::cell::{Cell, RefCell};

/// Timestamps resolved at once: bounds the events held on the device.
const RESOLVE_EVERY: usize = 2048;

/// An op timed but not yet resolved.
struct Pending {
    op: &'static str,
    start: usize,
    end: usize,
    cost: Cost,
    tensor_core: bool,
    /// Bank conflicts it caused, where the device counts them.
    bank_conflicts: Option<u64>,
}

pub struct Profiled {
    inner: Box<dyn Executor>,
    on: Cell<bool>,
    pending: RefCell<Vec<Pending>>,
    records: RefCell<Vec<Record>>,
}

impl Profiled {
    pub fn new(inner: Box<dyn Executor>) -> Self {
        Profiled {
            inner,
            on: Cell::new(false),
            pending: RefCell::new(Vec::new()),
            records: RefCell::new(Vec::new()),
        }
    }

    fn timed(&self, op: &Op) -> Result<()> {
        let before = self.inner.timing().bank_conflicts();
        let start = self.inner.timing().mark()?;
        let r = self.inner.run_op(op);
        let end = self.inner.timing().mark()?;
        // Counting devices run synchronously: the op is done here.
        let bank_conflicts = self
            .inner
            .timing()
            .bank_conflicts()
            .zip(before)
            .map(|(a, b)| a - b);
        let full = {
            let mut p = self.pending.borrow_mut();
            p.push(Pending {
                op: op.name(),
                start,
                end,
                cost: op.cost(),
                tensor_core: op.tensor_core(),
                bank_conflicts,
            });
            p.len() >= RESOLVE_EVERY
        };
        if full {
            self.resolve()?;
        }
        r
    }

    fn resolve(&self) -> Result<()> {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        let mut records = self.records.borrow_mut();
        for p in pending {
            records.push(Record {
                op: p.op,
                ms: self.inner.timing().elapsed_ms(p.start, p.end)?,
                cost: p.cost,
                tensor_core: p.tensor_core,
                bank_conflicts: p.bank_conflicts,
            });
        }
        self.inner.timing().reset_marks();
        Ok(())
    }
}

impl Executor for Profiled {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn alloc_raw(&self, dtype: DType, len: usize) -> Result<Buf> {
        self.inner.alloc_raw(dtype, len)
    }
    fn free(&self, buf: Buf) {
        self.inner.free(buf)
    }
    fn write_bytes(&self, dst: Buf, bytes: &[u8]) -> Result<()> {
        self.inner.write_bytes(dst, bytes)
    }
    fn read_bytes(&self, src: Buf, out: &mut [u8]) -> Result<()> {
        self.inner.read_bytes(src, out)
    }
    fn upload_ahead_bytes(&self, dtype: DType, len: usize, bytes: &[u8]) -> Result<Buf> {
        self.inner.upload_ahead_bytes(dtype, len, bytes)
    }

    fn run_op(&self, op: &Op) -> Result<()> {
        self.inner.timing().range_push(op.name());
        let r = if self.on.get() {
            self.timed(op)
        } else {
            self.inner.run_op(op)
        };
        self.inner.timing().range_pop();
        r
    }
    /// The executor's own: marks are taken and reset only here, in
    /// `timed` and `resolve`, so handing the timing through loses nothing.
    fn timing(&self) -> &dyn crate::device::Timing {
        self.inner.timing()
    }
    fn set_profiling(&self, on: bool) {
        self.on.set(on);
    }
    fn take_profile(&self) -> Result<Vec<Record>> {
        self.resolve()?;
        Ok(std::mem::take(&mut *self.records.borrow_mut()))
    }
}
