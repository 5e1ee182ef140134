//! The device layer under the PTX executor: memory, kernel launches and
//! timestamps on something that runs PTX. Two devices implement [`Gpu`]:
//! `emu` (the in-crate interpreter) and `cuda` (cust, feature `cuda`), so
//! launch geometry, buffer handling and kernel sequencing are one code path
//! for both.

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod emu;

use crate::error::Result;

/// A kernel argument, matched against the kernel's `.param` types.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg {
    U32(u32),
    U64(u64),
    F32(f32),
}

/// Waiting, timestamps, timeline ranges and the facts a profile needs: what
/// whatever runs the ops offers, a device under the PTX executor or an
/// executor of its own (`Executor::timing` hands it out, so the PTX
/// executor passes its device's on instead of forwarding each call).
pub trait Timing {
    /// Waits for queued work; asynchronous devices report late errors here.
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    /// Records a timestamp after all work queued so far; returns its handle.
    fn mark(&self) -> Result<usize>;
    /// Milliseconds between two marks (waits for the later one).
    fn elapsed_ms(&self, start: usize, end: usize) -> Result<f64>;
    /// Forgets every mark so their storage is reused. Marks belong to the
    /// profiling layer (`exec::profiled`), which resets them once it has
    /// read them; nothing else takes or resets marks.
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

/// Memory and kernel launches on something that runs PTX; its timing is
/// the [`Timing`] every executor also offers.
pub trait Gpu: Timing {
    fn name(&self) -> String;
    /// Device address of a new zero-filled allocation.
    fn alloc(&self, bytes: usize) -> Result<u64>;
    fn free(&self, addr: u64);
    fn write(&self, addr: u64, data: &[u8]) -> Result<()>;
    fn read(&self, addr: u64, out: &mut [u8]) -> Result<()>;
    /// A new allocation holding `data`, copied while the work queued so far
    /// runs (on `cuda`, on a second stream); work queued after it waits for
    /// the copy. Forwards stage batch i+1's images this way during batch i.
    fn upload_ahead(&self, data: &[u8]) -> Result<u64> {
        let addr = self.alloc(data.len())?;
        self.write(addr, data)?;
        Ok(addr)
    }
    /// Launches `kernel` (queued on asynchronous devices).
    fn launch(&self, kernel: &str, dims: Dims, args: &[Arg]) -> Result<()>;
}

/// A launch's geometry: blocks in the grid, threads per block, and bytes
/// of dynamic shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
}

impl Dims {
    /// `grid` blocks of `block` threads, no dynamic shared memory.
    pub fn new(grid: [u32; 3], block: [u32; 3]) -> Dims {
        Dims {
            grid,
            block,
            shared_bytes: 0,
        }
    }

    /// A 1-D grid-stride loop over `n` items, `block` threads per block.
    pub fn grid_stride(n: usize, block: u32) -> Dims {
        let blocks = n.div_ceil(block as usize).clamp(1, 4096) as u32;
        Dims::new([blocks, 1, 1], [block, 1, 1])
    }
}

/// A size as a kernel's `.u32` parameter, or a clear error.
pub fn u32_arg(what: &str, v: usize) -> Result<Arg> {
    u32::try_from(v)
        .map(Arg::U32)
        .map_err(|_| crate::invalid!("{what} = {v} exceeds the kernels' 32-bit sizes"))
}
