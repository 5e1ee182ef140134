//! `cpu`: the reference executor. Every op runs the cpu implementation of its
//! file in `crate::ops` on host memory; this file only holds that memory
//! and resolves buffer handles to slices.

use super::{Executor, check_copy, freed};
use crate::buf::{Buf, DType, Slice, SliceMut};
use crate::error::Result;
use crate::ops::{Host, Op};
use half::bf16;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// One allocation's elements.
enum Storage {
    F32(Vec<f32>),
    Bf16(Vec<bf16>),
    I32(Vec<i32>),
    U8(Vec<u8>),
}

impl Storage {
    fn zeros(dtype: DType, len: usize) -> Storage {
        match dtype {
            DType::F32 => Storage::F32(crate::hostmem::advise_huge(vec![0.0; len])),
            DType::Bf16 => Storage::Bf16(vec![bf16::ZERO; len]),
            DType::I32 => Storage::I32(vec![0; len]),
            DType::U8 => Storage::U8(vec![0; len]),
        }
    }

    fn dtype(&self) -> DType {
        match self {
            Storage::F32(_) => DType::F32,
            Storage::Bf16(_) => DType::Bf16,
            Storage::I32(_) => DType::I32,
            Storage::U8(_) => DType::U8,
        }
    }

    fn len(&self) -> usize {
        match self {
            Storage::F32(v) => v.len(),
            Storage::Bf16(v) => v.len(),
            Storage::I32(v) => v.len(),
            Storage::U8(v) => v.len(),
        }
    }

    /// The element range of `b`, if `b` is a view of this storage.
    fn range(&self, b: Buf) -> Result<std::ops::Range<usize>> {
        if b.dtype != self.dtype() || b.offset + b.len > self.len() {
            return Err(crate::invalid!(
                "a {} view of {} at {} does not fit its {} allocation of {}",
                b.dtype,
                b.len,
                b.offset,
                self.dtype(),
                self.len()
            ));
        }
        Ok(b.offset..b.offset + b.len)
    }

    fn view(&self, b: Buf) -> Result<Slice<'_>> {
        let r = self.range(b)?;
        Ok(match self {
            Storage::F32(v) => Slice::F32(&v[r]),
            Storage::Bf16(v) => Slice::Bf16(&v[r]),
            Storage::I32(v) => Slice::I32(&v[r]),
            Storage::U8(v) => Slice::U8(&v[r]),
        })
    }

    fn view_mut(&mut self, b: Buf) -> Result<SliceMut<'_>> {
        let r = self.range(b)?;
        Ok(match self {
            Storage::F32(v) => SliceMut::F32(&mut v[r]),
            Storage::Bf16(v) => SliceMut::Bf16(&mut v[r]),
            Storage::I32(v) => SliceMut::I32(&mut v[r]),
            Storage::U8(v) => SliceMut::U8(&mut v[r]),
        })
    }

    /// A copy of the view `b`, for an input that aliases an output.
    fn copy_of(&self, b: Buf) -> Result<Storage> {
        Ok(match self.view(b)? {
            Slice::F32(s) => Storage::F32(s.to_vec()),
            Slice::Bf16(s) => Storage::Bf16(s.to_vec()),
            Slice::I32(s) => Storage::I32(s.to_vec()),
            Slice::U8(s) => Storage::U8(s.to_vec()),
        })
    }

    fn all(&self) -> Slice<'_> {
        match self {
            Storage::F32(v) => Slice::F32(v),
            Storage::Bf16(v) => Slice::Bf16(v),
            Storage::I32(v) => Slice::I32(v),
            Storage::U8(v) => Slice::U8(v),
        }
    }

    fn bytes(&self, b: Buf) -> Result<&[u8]> {
        Ok(match self.view(b)? {
            Slice::F32(s) => bytemuck::cast_slice(s),
            Slice::Bf16(s) => bytemuck::cast_slice(s),
            Slice::I32(s) => bytemuck::cast_slice(s),
            Slice::U8(s) => s,
        })
    }

    fn bytes_mut(&mut self, b: Buf) -> Result<&mut [u8]> {
        Ok(match self.view_mut(b)? {
            SliceMut::F32(s) => bytemuck::cast_slice_mut(s),
            SliceMut::Bf16(s) => bytemuck::cast_slice_mut(s),
            SliceMut::I32(s) => bytemuck::cast_slice_mut(s),
            SliceMut::U8(s) => s,
        })
    }
}

#[derive(Default)]
pub struct Cpu {
    /// Allocations by id; ids are never reused, so a stale handle fails
    /// instead of reading a newer allocation.
    slots: RefCell<HashMap<u32, Storage>>,
    next_id: Cell<u32>,
    marks: crate::profile::WallClock,
    flush: RefCell<Vec<u8>>,
}

impl Cpu {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Host for Cpu {
    fn with(
        &self,
        out: Buf,
        inputs: &[Option<Buf>],
        f: &mut dyn FnMut(&[Option<Slice>], SliceMut),
    ) -> Result<()> {
        let mut slots = self.slots.borrow_mut();
        // The output's storage is taken out of the table, so inputs can be
        // borrowed beside it; it goes back however the call ends.
        let mut storage = slots.remove(&out.id).ok_or_else(|| freed(out))?;
        let result = (|| {
            let copies = inputs
                .iter()
                .map(|b| match b {
                    Some(b) if b.id == out.id => storage.copy_of(*b).map(Some),
                    _ => Ok(None),
                })
                .collect::<Result<Vec<Option<Storage>>>>()?;
            let views = inputs
                .iter()
                .zip(&copies)
                .map(|(b, copy)| match (b, copy) {
                    (None, _) => Ok(None),
                    (Some(_), Some(c)) => Ok(Some(c.all())),
                    (Some(b), None) => slots
                        .get(&b.id)
                        .ok_or_else(|| freed(*b))?
                        .view(*b)
                        .map(Some),
                })
                .collect::<Result<Vec<_>>>()?;
            f(&views, storage.view_mut(out)?);
            Ok(())
        })();
        slots.insert(out.id, storage);
        result
    }
}

impl Executor for Cpu {
    fn name(&self) -> String {
        let n = rayon::current_num_threads();
        format!("cpu ({n} thread{})", if n == 1 { "" } else { "s" })
    }

    fn alloc_raw(&self, dtype: DType, len: usize) -> Result<Buf> {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        self.slots
            .borrow_mut()
            .insert(id, Storage::zeros(dtype, len));
        Ok(Buf::whole(id, len, dtype))
    }

    fn free(&self, buf: Buf) {
        self.slots.borrow_mut().remove(&buf.id);
    }

    fn write_bytes(&self, dst: Buf, bytes: &[u8]) -> Result<()> {
        let mut slots = self.slots.borrow_mut();
        let to = slots
            .get_mut(&dst.id)
            .ok_or_else(|| freed(dst))?
            .bytes_mut(dst)?;
        check_copy("write", to.len(), bytes.len())?;
        to.copy_from_slice(bytes);
        Ok(())
    }

    fn read_bytes(&self, src: Buf, out: &mut [u8]) -> Result<()> {
        let slots = self.slots.borrow();
        let from = slots.get(&src.id).ok_or_else(|| freed(src))?.bytes(src)?;
        check_copy("read", from.len(), out.len())?;
        out.copy_from_slice(from);
        Ok(())
    }

    fn run_op(&self, op: &Op) -> Result<()> {
        op.check()?;
        op.run_cpu(self)
    }

    fn timing(&self) -> &dyn crate::device::Timing {
        self
    }
}

impl crate::device::Timing for Cpu {
    fn mark(&self) -> Result<usize> {
        Ok(self.marks.mark())
    }

    fn elapsed_ms(&self, start: usize, end: usize) -> Result<f64> {
        Ok(self.marks.elapsed_ms(start, end))
    }

    fn reset_marks(&self) {
        self.marks.reset()
    }

    /// Measured once: see `crate::simd::peak`.
    fn peak(&self) -> Option<crate::profile::Peak> {
        crate::simd::peak::cpu_peak()
    }

    /// Streams through 256 MB, more than any CPU's last-level cache, on
    /// every worker thread: so the op timed next starts with its workers
    /// awake, as an op in a pipeline does (and as PyTorch's threaded flush
    /// leaves its OpenMP threads), and a short op's time is not the pool's
    /// wake-up.
    fn flush_caches(&self) -> Result<()> {
        use rayon::prelude::*;
        let mut v = self.flush.borrow_mut();
        v.resize(256 << 20, 0);
        v.par_chunks_mut(1 << 20).for_each(|c| {
            for x in c.iter_mut().step_by(64) {
                *x = x.wrapping_add(1);
            }
        });
        std::hint::black_box(&*v);
        Ok(())
    }
}
