//! The executor abstraction: one trait holding every op at kernel granularity.
//!
//! Buffers are plain handles ([`Buf`]) into memory the executor owns, so the
//! trait is object-safe and model code is written once for `cpu`, `emu` and
//! `cuda`. A handle may be a slice of a larger allocation (weights live in one
//! flat buffer so that a whole model can be lerped by one launch).

pub mod cpu;
pub mod profiled;
pub mod ptx;

use crate::error::Result;
use crate::ops::attention::AttentionShape;
use crate::ops::embed_add::EmbedShape;
use crate::ops::gemm::GemmShape;
use crate::ops::layernorm::LayerNormShape;
use crate::ops::patch_embed::PatchShape;

/// A view of `len` f32 elements at `offset` inside allocation `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buf {
    pub id: u32,
    pub offset: usize,
    pub len: usize,
}

impl Buf {
    /// A sub-view; panics on an out-of-range request because that is a bug in
    /// the caller, never a property of user input.
    pub fn slice(&self, offset: usize, len: usize) -> Buf {
        assert!(
            offset + len <= self.len,
            "slice {offset}+{len} out of buffer of {}",
            self.len
        );
        Buf {
            id: self.id,
            offset: self.offset + offset,
            len,
        }
    }
}

/// Per-row interpolation weights: row `r` uses `lambda[r / rows_per_lambda]`,
/// so all the token rows of one sample share that sample's λ.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    pub lambda: Buf,
    pub rows_per_lambda: usize,
}

/// Second weight set and the per-row λ for the dual-weight gemm:
/// `C_r = (1−λ_r)(A·B0ᵀ+b0) + λ_r(A·B1ᵀ+b1)`.
#[derive(Clone, Copy, Debug)]
pub struct DualGemm {
    pub b1: Buf,
    pub bias1: Option<Buf>,
    pub mix: Mix,
}

/// Second γ/β for a per-row lerped layernorm.
#[derive(Clone, Copy, Debug)]
pub struct DualNorm {
    pub gamma1: Buf,
    pub beta1: Buf,
    pub mix: Mix,
}

/// Second class/position embedding for a per-sample lerped embed_add.
#[derive(Clone, Copy, Debug)]
pub struct DualEmbed {
    pub class1: Buf,
    pub pos1: Buf,
    pub mix: Mix,
}

/// Which executor a user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceKind {
    /// Native Rust reference implementation (multi-threaded).
    Cpu,
    /// The project's PTX kernels run by the in-crate PTX interpreter.
    Emu,
    /// The same PTX on an NVIDIA GPU (needs a build with `--features cuda`).
    Cuda,
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Emu => "emu",
            DeviceKind::Cuda => "cuda",
        })
    }
}

/// The executors this build can run, for tests that check every one. The
/// `DAWIN_TEST_DEVICES` variable (comma list, e.g. `cpu,cuda`) narrows or
/// extends it on a machine that has more.
pub fn available() -> Vec<DeviceKind> {
    if let Ok(v) = std::env::var("DAWIN_TEST_DEVICES") {
        use clap::ValueEnum;
        return v
            .split(',')
            .filter_map(|s| DeviceKind::from_str(s.trim(), true).ok())
            .collect();
    }
    vec![DeviceKind::Cpu, DeviceKind::Emu]
}

/// Opens the executor a user asked for, or says clearly why it can't. Its
/// ops can be timed ([`Executor::set_profiling`]) and show as NVTX ranges.
pub fn open(kind: DeviceKind) -> Result<Box<dyn Executor>> {
    Ok(Box::new(profiled::Profiled::new(open_plain(kind)?)))
}

/// A named range around a phase of work, closed when dropped.
pub struct Range<'a>(&'a dyn Executor);

pub fn range<'a>(ex: &'a dyn Executor, name: &str) -> Range<'a> {
    ex.range_push(name);
    Range(ex)
}

impl Drop for Range<'_> {
    fn drop(&mut self) {
        self.0.range_pop();
    }
}

/// The executor without the profiling layer.
fn open_plain(kind: DeviceKind) -> Result<Box<dyn Executor>> {
    match kind {
        DeviceKind::Cpu => Ok(Box::new(cpu::Cpu::new())),
        DeviceKind::Emu => Ok(Box::new(ptx::PtxExec::new(crate::emu::Emu::new(
            crate::ptx::MODULES,
            emu_options(),
        )?))),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => Ok(Box::new(ptx::PtxExec::new(crate::cuda::CudaGpu::new()?))),
        #[cfg(not(feature = "cuda"))]
        DeviceKind::Cuda => Err(crate::invalid!(
            "device `cuda` is not available: this binary was built without the `cuda` feature \
             (build with tools/build-cuda.sh or `cargo build --release --features cuda`)"
        )),
    }
}

/// Emulator options from the environment: `DAWIN_EMU_SHUFFLE=SEED` runs
/// blocks in a shuffled order; `DAWIN_EMU_MEMORY=BYTES` caps device memory;
/// `DAWIN_EMU_BANK_CONFLICTS=1` counts the bank conflicts of every shared
/// access (a column of `--profile`).
fn emu_options() -> crate::emu::EmuOptions {
    fn var<T: std::str::FromStr>(k: &str) -> Option<T> {
        std::env::var(k).ok().and_then(|v| v.parse().ok())
    }
    crate::emu::EmuOptions {
        shuffle_blocks: var("DAWIN_EMU_SHUFFLE"),
        memory_limit: var("DAWIN_EMU_MEMORY"),
        bank_conflicts: var::<u8>("DAWIN_EMU_BANK_CONFLICTS").is_some_and(|v| v != 0),
    }
}

/// Every op the model needs, at kernel granularity. Shapes are checked by the
/// callers in `crate::ops`; an executor may assume consistent arguments.
pub trait Executor {
    /// Short name for reports: "cpu", "emu", "cuda:<device name>".
    fn name(&self) -> String;

    /// A zero-filled buffer of `len` f32.
    fn alloc(&self, len: usize) -> Result<Buf>;
    /// A new buffer holding `data`; nothing stays allocated on failure.
    fn upload(&self, data: &[f32]) -> Result<Buf> {
        let buf = self.alloc(data.len())?;
        self.write(buf, data).inspect_err(|_| self.free(buf))?;
        Ok(buf)
    }
    fn write(&self, dst: Buf, data: &[f32]) -> Result<()>;
    fn download(&self, src: Buf) -> Result<Vec<f32>>;
    /// Frees a whole allocation (`buf` must be one returned by alloc/upload).
    fn free(&self, buf: Buf);
    /// Waits for queued work; asynchronous executors report late errors here.
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
    /// Evicts caches so that a benchmark repeat starts cold.
    fn flush_caches(&self) -> Result<()> {
        Ok(())
    }
    /// Peak f32 throughput and bandwidth of the device, if known.
    fn peak(&self) -> Option<crate::profile::Peak> {
        None
    }
    /// The device under a PTX executor (`emu`, `cuda`), for kernels that
    /// have no op here yet (the bf16 tensor-core kernels); `None` on `cpu`.
    fn device(&self) -> Option<&dyn crate::gpu::Gpu> {
        None
    }
    /// Device address of a view, on a PTX executor.
    fn address(&self, _b: Buf) -> Option<u64> {
        None
    }
    /// Runs launches on [`Executor::device`] as one op named `name` (timed
    /// and shown as an NVTX range like every other op).
    fn device_op(
        &self,
        name: &'static str,
        _cost: crate::profile::Cost,
        f: &dyn Fn(&dyn crate::gpu::Gpu) -> Result<()>,
    ) -> Result<()> {
        match self.device() {
            Some(g) => f(g),
            None => Err(crate::invalid!(
                "{name} runs only on a PTX device (--device emu or cuda), not on {}",
                self.name()
            )),
        }
    }
    /// Starts or stops timing every op (see [`profiled::Profiled`]).
    fn set_profiling(&self, _on: bool) {}
    /// The timed op calls since the last take.
    fn take_profile(&self) -> Result<Vec<crate::profile::Record>> {
        Ok(Vec::new())
    }

    /// `c[m,n] = a[m,k] · b[n,k]ᵀ (+ bias[n])`.
    fn gemm(&self, a: Buf, b: Buf, bias: Option<Buf>, c: Buf, shape: GemmShape) -> Result<()>;
    /// Dual-weight gemm: `c_r = (1−λ_r)(a·bᵀ+bias) + λ_r(a·b1ᵀ+bias1)`.
    fn gemm_dual(
        &self,
        a: Buf,
        b: Buf,
        bias: Option<Buf>,
        dual: DualGemm,
        c: Buf,
        shape: GemmShape,
    ) -> Result<()>;
    /// Fused multi-head attention over a packed `qkv[batch·tokens, 3·heads·dim]`.
    fn attention(&self, qkv: Buf, out: Buf, shape: AttentionShape) -> Result<()>;
    /// Row layernorm; `y` may alias `x` when the strides are equal.
    fn layernorm(
        &self,
        x: Buf,
        y: Buf,
        gamma: Buf,
        beta: Buf,
        dual: Option<DualNorm>,
        shape: LayerNormShape,
    ) -> Result<()>;
    /// In place, exact erf form.
    fn gelu(&self, x: Buf) -> Result<()>;
    /// In place, `x·σ(1.702x)`.
    fn quick_gelu(&self, x: Buf) -> Result<()>;
    /// Residual add in place: `y += x`.
    fn add(&self, x: Buf, y: Buf) -> Result<()>;
    /// im2col of non-overlapping patches: `pixels[n,c,h,w] → out[n·g², c·p·p]`.
    fn patch_embed(&self, pixels: Buf, out: Buf, shape: PatchShape) -> Result<()>;
    /// `out[n,t,w]`: token 0 = class + pos[0], token t = patches[t−1] + pos[t].
    fn embed_add(
        &self,
        patches: Buf,
        class: Buf,
        pos: Buf,
        dual: Option<DualEmbed>,
        out: Buf,
        shape: EmbedShape,
    ) -> Result<()>;
    /// Per row of `logits[rows, cols]/temperature`: `out[rows,4]` =
    /// (entropy in nats, argmax, max probability, logsumexp).
    fn softmax_entropy(
        &self,
        logits: Buf,
        out: Buf,
        rows: usize,
        cols: usize,
        temperature: f32,
    ) -> Result<()>;
    /// `out = w0 + λ·(w1 − w0)`; `out` may be `w0` itself (in place).
    fn lerp(&self, out: Buf, w0: Buf, w1: Buf, lambda: f32) -> Result<()>;
    /// `out += k·(w1 − w0)` (a scaled task vector); `out` overlaps neither.
    fn add_scaled_diff(&self, out: Buf, w0: Buf, w1: Buf, k: f32) -> Result<()>;
    /// `y[r] = x[r] / ‖x[r]‖₂` for `rows` rows of `width`.
    fn l2_normalize(&self, x: Buf, y: Buf, rows: usize, width: usize) -> Result<()>;
}
