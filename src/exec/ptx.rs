//! The PTX executor: every op is a launch of `ptx/<op>.ptx` through the
//! op's launcher in `crate::ops`, on any [`Gpu`] (`emu` or `cuda`). Device
//! addresses exist only here and in the launchers.

use super::{Executor, check_copy, freed};
use crate::buf::{Buf, DType};
use crate::device::Gpu;
use crate::error::Result;
use crate::ops::Op;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// One device allocation.
#[derive(Clone, Copy)]
struct Allocation {
    addr: u64,
    len: usize,
    dtype: DType,
}

pub struct PtxExec<G: Gpu> {
    pub gpu: G,
    /// Allocations by id; ids are never reused.
    allocs: RefCell<HashMap<u32, Allocation>>,
    next_id: Cell<u32>,
}

impl<G: Gpu> PtxExec<G> {
    pub fn new(gpu: G) -> Self {
        PtxExec {
            gpu,
            allocs: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
        }
    }

    /// A handle for a new allocation (ids are never reused).
    fn register(&self, a: Allocation) -> Buf {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        self.allocs.borrow_mut().insert(id, a);
        Buf::whole(id, a.len, a.dtype)
    }

    /// Device address of a view, checked against its allocation.
    fn addr(&self, b: Buf) -> Result<u64> {
        let a = *self.allocs.borrow().get(&b.id).ok_or_else(|| freed(b))?;
        if a.dtype != b.dtype || b.offset + b.len > a.len {
            return Err(crate::invalid!(
                "a {} view of {} at {} does not fit its {} allocation of {}",
                b.dtype,
                b.len,
                b.offset,
                a.dtype,
                a.len
            ));
        }
        Ok(a.addr + (b.offset * b.dtype.size()) as u64)
    }
}

/// Bytes of `len` values of `dtype`, or an error if that overflows.
fn byte_size(dtype: DType, len: usize) -> Result<usize> {
    len.checked_mul(dtype.size())
        .ok_or_else(|| crate::invalid!("an allocation of {len} {dtype} values overflows"))
}

impl<G: Gpu> Executor for PtxExec<G> {
    fn name(&self) -> String {
        self.gpu.name()
    }

    fn alloc_raw(&self, dtype: DType, len: usize) -> Result<Buf> {
        let addr = self.gpu.alloc(byte_size(dtype, len)?)?;
        Ok(self.register(Allocation { addr, len, dtype }))
    }

    fn upload_ahead_bytes(&self, dtype: DType, len: usize, bytes: &[u8]) -> Result<Buf> {
        check_copy("write", byte_size(dtype, len)?, bytes.len())?;
        let addr = self.gpu.upload_ahead(bytes)?;
        Ok(self.register(Allocation { addr, len, dtype }))
    }

    fn free(&self, buf: Buf) {
        if let Some(a) = self.allocs.borrow_mut().remove(&buf.id) {
            self.gpu.free(a.addr);
        }
    }

    fn write_bytes(&self, dst: Buf, bytes: &[u8]) -> Result<()> {
        check_copy("write", dst.bytes(), bytes.len())?;
        self.gpu.write(self.addr(dst)?, bytes)
    }

    fn read_bytes(&self, src: Buf, out: &mut [u8]) -> Result<()> {
        check_copy("read", src.bytes(), out.len())?;
        self.gpu.read(self.addr(src)?, out)
    }

    fn run_op(&self, op: &Op) -> Result<()> {
        op.check()?;
        op.launch(&self.gpu, &|b| self.addr(b))
    }

    fn timing(&self) -> &dyn crate::device::Timing {
        &self.gpu
    }
}
