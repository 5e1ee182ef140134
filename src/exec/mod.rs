//! The executors: one trait that runs every op of [`crate::ops`] over typed
//! buffer handles, implemented by `cpu` (the Rust references) and by the
//! PTX executor (the kernels of `ptx/` on `emu` or `cuda`).
//!
//! Buffers are plain handles ([`Buf`]) into memory the executor owns, so the
//! trait is object-safe and model code is written once for every executor.
//! [`OwnedBuf`] frees its allocation when dropped; a handle may be a slice
//! of a larger allocation (weights live in one flat buffer so that a whole
//! model can be lerped by one launch).

pub mod cpu;
pub mod profiled;
pub mod ptx;

pub use ptx::PtxExec;

use crate::buf::{Buf, DType, Element};
use crate::choice::{Choice, Named};
pub use crate::device::Timing;
use crate::error::{Error, Result};
use crate::ops::Op;
use std::ops::Deref;

/// Which executor a user asked for (`--device`, a name kept for scripts:
/// `cpu` is an executor, not a device).
/// Each value's meaning is its help in [`ExecutorKind::ALL`](crate::choice::Choice::ALL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorKind {
    Cpu,
    Emu,
    Cuda,
}

impl Choice for ExecutorKind {
    const ALL: &'static [Named<Self>] = &[
        Named::new(
            ExecutorKind::Cpu,
            "cpu",
            "Native Rust reference implementation (multi-threaded)",
        ),
        Named::new(
            ExecutorKind::Emu,
            "emu",
            "The project's PTX kernels run by the in-crate PTX interpreter",
        ),
        Named::new(
            ExecutorKind::Cuda,
            "cuda",
            "The same PTX on an NVIDIA GPU (needs a build with `--features cuda`)",
        ),
    ];
}

crate::display_choice!(ExecutorKind);

/// The executors this build can run, for tests that check every one. The
/// `DAWIN_TEST_DEVICES` variable (comma list, e.g. `cpu,cuda`) narrows or
/// extends it on a machine that has more.
pub fn available() -> Vec<ExecutorKind> {
    if let Ok(v) = std::env::var("DAWIN_TEST_DEVICES") {
        return v
            .split(',')
            .filter_map(|s| ExecutorKind::from_name(&s.trim().to_ascii_lowercase()))
            .collect();
    }
    vec![ExecutorKind::Cpu, ExecutorKind::Emu]
}

/// Opens the executor a user asked for, or says clearly why it can't. Its
/// ops can be timed ([`Executor::set_profiling`]) and show as NVTX ranges.
pub fn open(kind: ExecutorKind) -> Result<Box<dyn Executor>> {
    Ok(Box::new(profiled::Profiled::new(open_plain(kind)?)))
}

/// The executor without the profiling layer.
fn open_plain(kind: ExecutorKind) -> Result<Box<dyn Executor>> {
    let kernels = crate::ops::PTX_MODULES;
    match kind {
        ExecutorKind::Cpu => Ok(Box::new(cpu::Cpu::new())),
        ExecutorKind::Emu => {
            let emu = crate::device::emu::Emu::new(kernels, emu_options())?;
            Ok(Box::new(PtxExec::new(emu)))
        }
        #[cfg(feature = "cuda")]
        ExecutorKind::Cuda => {
            let gpu = crate::device::cuda::CudaGpu::new(kernels)?;
            Ok(Box::new(PtxExec::new(gpu)))
        }
        #[cfg(not(feature = "cuda"))]
        ExecutorKind::Cuda => Err(crate::invalid!(
            "device `cuda` is not available: this binary was built without the `cuda` feature \
             (build with tools/build-cuda.sh or `cargo build --release --features cuda`)"
        )),
    }
}

/// Emulator options from the environment: `DAWIN_EMU_SHUFFLE=SEED` runs
/// blocks in a shuffled order; `DAWIN_EMU_MEMORY=BYTES` caps device memory;
/// `DAWIN_EMU_BANK_CONFLICTS=1` counts the bank conflicts of every shared
/// access (a column of `--profile`).
fn emu_options() -> crate::device::emu::EmuOptions {
    fn var<T: std::str::FromStr>(k: &str) -> Option<T> {
        std::env::var(k).ok().and_then(|v| v.parse().ok())
    }
    crate::device::emu::EmuOptions {
        shuffle_blocks: var("DAWIN_EMU_SHUFFLE"),
        memory_limit: var("DAWIN_EMU_MEMORY"),
        bank_conflicts: var::<u8>("DAWIN_EMU_BANK_CONFLICTS").is_some_and(|v| v != 0),
    }
}

/// A named range around a phase of work, closed when dropped.
pub struct Range<'a>(&'a dyn Executor);

pub fn range<'a>(ex: &'a dyn Executor, name: &str) -> Range<'a> {
    ex.timing().range_push(name);
    Range(ex)
}

impl Drop for Range<'_> {
    fn drop(&mut self) {
        self.0.timing().range_pop();
    }
}

/// Memory, op execution and timing: what every executor provides. The
/// typed conveniences (`alloc`, `upload`, `download`, `run`) are inherent
/// methods of `dyn Executor`, below.
pub trait Executor {
    /// Short name for reports: `"cpu"`, `"emu"`, `"cuda:<device name>"`.
    fn name(&self) -> String;

    /// A zero-filled allocation of `len` elements of `dtype`; the caller
    /// frees it (or wraps it in an [`OwnedBuf`]).
    fn alloc_raw(&self, dtype: DType, len: usize) -> Result<Buf>;
    /// Frees a whole allocation (`buf` must be one returned by `alloc_raw`).
    fn free(&self, buf: Buf);
    /// Copies `bytes` (exactly `dst.bytes()` of them) into the view.
    fn write_bytes(&self, dst: Buf, bytes: &[u8]) -> Result<()>;
    /// Copies the view into `out` (exactly `src.bytes()` long).
    fn read_bytes(&self, src: Buf, out: &mut [u8]) -> Result<()>;
    /// A new allocation of `len` `dtype` values holding `bytes`, copied while
    /// the work queued so far runs ([`crate::device::Gpu::upload_ahead`]).
    fn upload_ahead_bytes(&self, dtype: DType, len: usize, bytes: &[u8]) -> Result<Buf> {
        let b = self.alloc_raw(dtype, len)?;
        if let Err(e) = self.write_bytes(b, bytes) {
            self.free(b);
            return Err(e);
        }
        Ok(b)
    }
    /// Runs one op: checks it ([`Op::check`]), then runs or queues it.
    fn run_op(&self, op: &Op) -> Result<()>;
    /// Waiting, timestamps and profile facts ([`Timing`]): the device's own
    /// on the PTX executor.
    fn timing(&self) -> &dyn Timing;
    /// Starts or stops timing every op (see [`profiled::Profiled`]).
    fn set_profiling(&self, _on: bool) {}
    /// The timed op calls since the last take.
    fn take_profile(&self) -> Result<Vec<crate::profile::Record>> {
        Ok(Vec::new())
    }
}

impl dyn Executor + '_ {
    /// Runs an op given by its argument type, e.g. `ex.run(Gemm { .. })`.
    pub fn run(&self, op: impl Into<Op>) -> Result<()> {
        self.run_op(&op.into())
    }

    /// A zero-filled f32 buffer of `len`, freed when dropped.
    pub fn alloc(&self, len: usize) -> Result<OwnedBuf<'_>> {
        self.alloc_as(DType::F32, len)
    }

    /// A zero-filled buffer of `len` elements of `dtype`, freed when dropped.
    pub fn alloc_as(&self, dtype: DType, len: usize) -> Result<OwnedBuf<'_>> {
        let buf = self.alloc_raw(dtype, len)?;
        Ok(OwnedBuf { ex: self, buf })
    }

    /// A new buffer holding `data`, freed when dropped.
    pub fn upload<T: Element>(&self, data: &[T]) -> Result<OwnedBuf<'_>> {
        let b = self.alloc_as(T::DTYPE, data.len())?;
        self.write(*b, data)?;
        Ok(b)
    }

    /// A new buffer holding `data`, copied to the device while the work
    /// queued so far runs; freed when dropped.
    pub fn upload_ahead<T: Element>(&self, data: &[T]) -> Result<OwnedBuf<'_>> {
        let bytes = bytemuck::cast_slice(data);
        let buf = self.upload_ahead_bytes(T::DTYPE, data.len(), bytes)?;
        Ok(OwnedBuf { ex: self, buf })
    }

    /// Overwrites the view with `data` (same dtype and length).
    pub fn write<T: Element>(&self, dst: Buf, data: &[T]) -> Result<()> {
        if dst.dtype != T::DTYPE || dst.len != data.len() {
            return Err(crate::invalid!(
                "write of {} {} values into a {} view of {}",
                data.len(),
                T::DTYPE,
                dst.dtype,
                dst.len
            ));
        }
        self.write_bytes(dst, bytemuck::cast_slice(data))
    }

    /// The values of an f32 view.
    pub fn download(&self, src: Buf) -> Result<Vec<f32>> {
        self.download_as(src)
    }

    /// The values of a view of any element type.
    pub fn download_as<T: Element>(&self, src: Buf) -> Result<Vec<T>> {
        if src.dtype != T::DTYPE {
            return Err(crate::invalid!(
                "download of a {} view as {}",
                src.dtype,
                T::DTYPE
            ));
        }
        let mut out = vec![T::zeroed(); src.len];
        self.read_bytes(src, bytemuck::cast_slice_mut(&mut out))?;
        Ok(out)
    }
}

/// An allocation that is freed when dropped; derefs to its [`Buf`].
pub struct OwnedBuf<'a> {
    ex: &'a dyn Executor,
    buf: Buf,
}

impl<'a> OwnedBuf<'a> {
    /// The executor that holds the memory.
    pub fn executor(&self) -> &'a dyn Executor {
        self.ex
    }
}

impl Deref for OwnedBuf<'_> {
    type Target = Buf;
    fn deref(&self) -> &Buf {
        &self.buf
    }
}

impl Drop for OwnedBuf<'_> {
    fn drop(&mut self) {
        self.ex.free(self.buf);
    }
}

impl std::fmt::Debug for OwnedBuf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.buf.fmt(f)
    }
}

/// A host copy of `host` bytes for a view of `view` bytes: they must match.
pub(crate) fn check_copy(dir: &str, view: usize, host: usize) -> Result<()> {
    if view == host {
        return Ok(());
    }
    Err(crate::invalid!(
        "{dir} of {host} host bytes for a view of {view} bytes"
    ))
}

/// The error for a handle whose allocation is gone (a bug in the caller).
pub(crate) fn freed(b: Buf) -> Error {
    Error::Invalid(format!(
        "use of a freed or foreign buffer (allocation {})",
        b.id
    ))
}
