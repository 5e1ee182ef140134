//! The device interface under the PTX executor: memory and kernel launches.
//! `emu` (the interpreter) and `cuda` (cust) implement it, so launch geometry,
//! buffer handling and kernel sequencing are one code path for both.

use crate::emu::Arg;
use crate::error::Result;

pub trait Gpu {
    fn name(&self) -> String;
    /// Device address of a new zero-filled allocation.
    fn alloc(&self, bytes: usize) -> Result<u64>;
    fn free(&self, addr: u64);
    fn write(&self, addr: u64, data: &[u8]) -> Result<()>;
    fn read(&self, addr: u64, out: &mut [u8]) -> Result<()>;
    fn launch(
        &self,
        kernel: &str,
        grid: [u32; 3],
        block: [u32; 3],
        shared_bytes: u32,
        args: &[Arg],
    ) -> Result<()>;
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    /// Records a timestamp after all work queued so far; returns its handle.
    fn mark(&self) -> Result<usize>;
    /// Milliseconds between two marks (waits for the later one).
    fn elapsed_ms(&self, start: usize, end: usize) -> Result<f64>;
    /// Forgets every mark so their storage is reused.
    fn reset_marks(&self);
    /// Opens a named range in profiler timelines (NVTX on `cuda`).
    fn range_push(&self, _name: &str) {}
    fn range_pop(&self) {}
    /// Evicts the device's caches, so a benchmark repeat starts cold.
    fn flush_caches(&self) -> Result<()> {
        Ok(())
    }
    /// The device's peak f32 throughput and bandwidth, if known.
    fn peak(&self) -> Option<crate::profile::Peak> {
        None
    }
    /// Extra shared-memory wavefronts from bank conflicts so far, where the
    /// device counts them (`emu` with `DAWIN_EMU_BANK_CONFLICTS=1`).
    fn bank_conflicts(&self) -> Option<u64> {
        None
    }
}

/// Grid size for a 1-D grid-stride loop over `n` items.
pub fn grid_1d(n: usize, block: u32) -> [u32; 3] {
    [(n.div_ceil(block as usize)).clamp(1, 4096) as u32, 1, 1]
}

impl Gpu for crate::emu::Emu {
    fn name(&self) -> String {
        "emu (PTX interpreter)".into()
    }
    fn alloc(&self, bytes: usize) -> Result<u64> {
        let mut m = self.mem.borrow_mut();
        if let Some(limit) = self.options.memory_limit
            && m.in_use() + bytes > limit
        {
            return Err(crate::error::Error::OutOfMemory(format!(
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
        let (i, off) = m.find(addr, data.len()).ok_or_else(|| {
            crate::error::Error::Device(format!("emu: write outside memory at {addr:#x}"))
        })?;
        m.allocs[i].1[off..off + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn read(&self, addr: u64, out: &mut [u8]) -> Result<()> {
        let m = self.mem.borrow();
        let (i, off) = m.find(addr, out.len()).ok_or_else(|| {
            crate::error::Error::Device(format!("emu: read outside memory at {addr:#x}"))
        })?;
        out.copy_from_slice(&m.allocs[i].1[off..off + out.len()]);
        Ok(())
    }
    fn launch(
        &self,
        kernel: &str,
        grid: [u32; 3],
        block: [u32; 3],
        shared_bytes: u32,
        args: &[Arg],
    ) -> Result<()> {
        crate::emu::Emu::launch(self, kernel, grid, block, shared_bytes, args)
    }
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
