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
        Ok(self.mem.borrow_mut().alloc(bytes))
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
}
