//! The emulator as a [`Gpu`]: its global memory, launches and timestamps.

use super::Emu;
use crate::device::{Arg, Dims, Gpu};
use crate::error::{Error, Result};

impl Gpu for Emu {
    fn name(&self) -> String {
        "emu (PTX interpreter)".into()
    }

    fn alloc(&self, bytes: usize) -> Result<u64> {
        let mut m = self.mem.borrow_mut();
        if let Some(limit) = self.options.memory_limit
            && m.in_use() + bytes > limit
        {
            return Err(Error::OutOfMemory(format!(
                "emu: allocating {bytes} bytes with {} of {limit} in use",
                m.in_use()
            )));
        }
        Ok(m.alloc(bytes))
    }

    fn free(&self, addr: u64) {
        self.mem.borrow_mut().free(addr)
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<()> {
        let mut m = self.mem.borrow_mut();
        let (i, off) = m
            .find(addr, data.len())
            .ok_or_else(|| Error::Device(format!("emu: write outside memory at {addr:#x}")))?;
        m.allocs[i].1[off..off + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn read(&self, addr: u64, out: &mut [u8]) -> Result<()> {
        let m = self.mem.borrow();
        let (i, off) = m
            .find(addr, out.len())
            .ok_or_else(|| Error::Device(format!("emu: read outside memory at {addr:#x}")))?;
        out.copy_from_slice(&m.allocs[i].1[off..off + out.len()]);
        Ok(())
    }

    fn launch(&self, kernel: &str, dims: Dims, args: &[Arg]) -> Result<()> {
        Emu::launch(self, kernel, dims, args)
    }
}

impl crate::device::Timing for Emu {
    fn mark(&self) -> Result<usize> {
        Ok(self.marks.mark())
    }

    fn elapsed_ms(&self, start: usize, end: usize) -> Result<f64> {
        Ok(self.marks.elapsed_ms(start, end))
    }

    fn reset_marks(&self) {
        self.marks.reset()
    }

    fn bank_conflicts(&self) -> Option<u64> {
        self.options.bank_conflicts.then(|| self.shared_conflicts())
    }
}
