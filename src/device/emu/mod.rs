//! `emu`: a PTX interpreter that runs the project's `.ptx` kernels on the CPU
//! the way a GPU would, checking what a GPU would not: out-of-bounds and
//! misaligned accesses, reads of unwritten registers or shared bytes,
//! shared-memory races, partial barriers, bad shuffles and deadlocks.
//!
//! Each thread is its own interpreter; threads meet only at `bar.sync` and
//! `shfl.sync`, so no reconvergence analysis is needed. Blocks run one after
//! another, optionally in a shuffled order.

mod gpu;
pub mod machine;
pub mod parse;

pub use crate::device::Arg;
use crate::error::{Error, Result};
use parse::{Kernel, Module};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

/// Where a fault happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kernel: String,
    pub block: [u32; 3],
    pub thread: [u32; 3],
    pub line: u32,
    pub msg: String,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "kernel `{}` block ({},{},{}) thread ({},{},{}) ptx line {}: {}",
            self.kernel,
            self.block[0],
            self.block[1],
            self.block[2],
            self.thread[0],
            self.thread[1],
            self.thread[2],
            self.line,
            self.msg
        )
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct EmuOptions {
    /// Run blocks in an order shuffled by this seed (catches kernels that
    /// assume blocks run in order).
    pub shuffle_blocks: Option<u64>,
    /// Device memory size in bytes; an allocation past it fails as out of
    /// memory, like a real GPU (exercises the batch-halving path).
    pub memory_limit: Option<usize>,
    /// Count bank conflicts of every shared access, not only `ldmatrix`
    /// (logs each access: slower, for the conflict tests and `--profile`).
    pub bank_conflicts: bool,
}

/// Global memory: allocations at 256-byte aligned addresses, never reused,
/// so a stale pointer cannot silently hit a newer allocation.
#[derive(Default)]
pub struct GlobalMem {
    /// Sorted by base address.
    pub allocs: Vec<(u64, Vec<u8>)>,
    next: u64,
}

impl GlobalMem {
    /// Bytes allocated now.
    pub fn in_use(&self) -> usize {
        self.allocs.iter().map(|a| a.1.len()).sum()
    }

    pub fn alloc(&mut self, bytes: usize) -> u64 {
        if self.next == 0 {
            self.next = 0x1000_0000;
        }
        let base = self.next;
        self.next = (base + bytes.max(1) as u64 + 256).next_multiple_of(256);
        self.allocs.push((base, vec![0u8; bytes]));
        base
    }

    pub fn free(&mut self, base: u64) {
        if let Ok(i) = self.allocs.binary_search_by_key(&base, |a| a.0) {
            self.allocs.remove(i);
        }
    }

    /// The allocation holding `[addr, addr+len)`, as (index, offset).
    #[inline]
    pub fn find(&self, addr: u64, len: usize) -> Option<(usize, usize)> {
        let i = match self.allocs.binary_search_by_key(&addr, |a| a.0) {
            Ok(i) => i,
            Err(0) => return None,
            Err(i) => i - 1,
        };
        let (base, data) = &self.allocs[i];
        let off = (addr - base) as usize;
        (off + len <= data.len()).then_some((i, off))
    }
}

/// The emulated device: loaded kernels and global memory.
pub struct Emu {
    kernels: HashMap<String, Arc<Kernel>>,
    mem: RefCell<GlobalMem>,
    pub options: EmuOptions,
    instructions: Cell<u64>,
    ldmatrix_conflicts: Cell<u64>,
    shared_conflicts: Cell<u64>,
    /// Timestamps for profiling (see `Gpu::mark`).
    marks: crate::profile::WallClock,
}

impl Emu {
    /// Parses and loads every kernel of the given modules.
    pub fn new(modules: &[(&str, &str)], options: EmuOptions) -> Result<Self> {
        let mut emu = Emu {
            kernels: HashMap::new(),
            mem: RefCell::new(GlobalMem::default()),
            options,
            instructions: Cell::new(0),
            ldmatrix_conflicts: Cell::new(0),
            shared_conflicts: Cell::new(0),
            marks: Default::default(),
        };
        for (file, src) in modules {
            emu.load(file, src)?;
        }
        Ok(emu)
    }

    /// Parses and loads one more module (a driver's `cuModuleLoadData`);
    /// returns the names of its kernels. A kernel of the same name as one
    /// loaded before replaces it.
    pub fn load(&mut self, file: &str, src: &str) -> Result<Vec<String>> {
        let m = load_module(file, src)?;
        let names = m.kernels.iter().map(|k| k.name.clone()).collect();
        for k in m.kernels {
            self.kernels.insert(k.name.clone(), Arc::new(k));
        }
        Ok(names)
    }

    /// Thread-instructions executed so far (for speed figures).
    pub fn instructions(&self) -> u64 {
        self.instructions.get()
    }

    /// Extra `ldmatrix` wavefronts from bank conflicts so far.
    pub fn ldmatrix_conflicts(&self) -> u64 {
        self.ldmatrix_conflicts.get()
    }

    /// Extra wavefronts of the other shared accesses (ld/st.shared,
    /// cp.async) so far; counted only with `EmuOptions::bank_conflicts`.
    pub fn shared_conflicts(&self) -> u64 {
        self.shared_conflicts.get()
    }

    pub fn kernel(&self, name: &str) -> Option<&Arc<Kernel>> {
        self.kernels.get(name)
    }

    pub fn launch(&self, kernel: &str, d: crate::device::Dims, args: &[Arg]) -> Result<()> {
        let k = self
            .kernels
            .get(kernel)
            .ok_or_else(|| Error::Device(format!("emu: no kernel named `{kernel}` is loaded")))?
            .clone();
        let mut mem = self.mem.borrow_mut();
        let st = machine::launch(
            &k,
            d.grid,
            d.block,
            d.shared_bytes,
            args,
            &mut mem,
            self.options,
        )
        .map_err(|f| Error::Device(format!("emu: {f}")))?;
        self.instructions
            .set(self.instructions.get() + st.instructions);
        let c = self.ldmatrix_conflicts.get();
        self.ldmatrix_conflicts.set(c + st.ldmatrix_conflicts);
        let c = self.shared_conflicts.get();
        self.shared_conflicts.set(c + st.shared_conflicts);
        Ok(())
    }
}

pub fn load_module(file: &str, src: &str) -> Result<Module> {
    parse::parse(src).map_err(|e| Error::Device(format!("ptx/{file}: {e}")))
}
