//! gemm_bf16: `C = epilogue(A·Bᵀ + bias)` with bf16 A and B on tensor cores
//! (`mma.sync` m16n8k16, f32 accumulation). The epilogue fuses the
//! activation, the output rounding (bf16 or f32) and a residual add.

use super::gemm::GemmShape;
use half::bf16;

/// Activation fused into the epilogue (flags bits 0–1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    None = 0,
    Gelu = 1,
    QuickGelu = 2,
}

/// What the epilogue does after `A·Bᵀ + bias`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Epilogue {
    pub activation: Activation,
    /// f32 output (logits, the residual stream); otherwise bf16.
    pub f32_out: bool,
    /// `C += result` (residual add) instead of `C = result`.
    pub accumulate: bool,
}

impl Epilogue {
    pub const PLAIN_BF16: Epilogue = Epilogue {
        activation: Activation::None,
        f32_out: false,
        accumulate: false,
    };

    /// The kernel's `flags` parameter.
    pub fn flags(self) -> u32 {
        self.activation as u32 | (self.f32_out as u32) << 2 | (self.accumulate as u32) << 3
    }

    /// Applies the activation to one value (CPU side).
    pub fn activate(self, v: f32) -> f32 {
        match self.activation {
            Activation::None => v,
            Activation::Gelu => super::gelu::scalar(v),
            Activation::QuickGelu => super::quick_gelu::scalar(v),
        }
    }

    /// Rounds a value to what the output can hold.
    pub fn store(self, v: f32) -> f32 {
        if self.f32_out {
            v
        } else {
            bf16::from_f32(v).to_f32()
        }
    }
}

/// CPU reference. `c` holds the output as f32 values; with a bf16 output
/// every value written (and read, when accumulating) is bf16-representable.
pub fn cpu(
    a: &[bf16],
    b: &[bf16],
    bias: Option<&[f32]>,
    c: &mut [f32],
    s: GemmShape,
    ep: Epilogue,
) {
    let widen = |v: &[bf16]| v.iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
    let mut acc = vec![0f32; s.m * s.n];
    super::gemm::cpu(&widen(a), &widen(b), bias, &mut acc, s);
    for (out, v) in c[..s.m * s.n].iter_mut().zip(acc) {
        let v = ep.activate(v);
        *out = ep.store(if ep.accumulate { *out + v } else { v });
    }
}

use crate::emu::Arg;
use crate::gpu::Gpu;

/// Block tile: 128×128 outputs, 8 warps.
pub const TILE: usize = 128;

/// Checks what the kernel needs beyond the shape: 16-byte cp.async rows.
pub fn check(a: u64, b: u64, c: u64, s: GemmShape, ep: Epilogue) -> crate::Result<()> {
    if !s.k.is_multiple_of(8) {
        return Err(crate::invalid!(
            "gemm_bf16 needs k a multiple of 8 (16-byte rows), got k = {}; pad k with zeros",
            s.k
        ));
    }
    if !a.is_multiple_of(16) || !b.is_multiple_of(16) {
        return Err(crate::invalid!(
            "gemm_bf16 needs 16-byte aligned operands (a = {a:#x}, b = {b:#x})"
        ));
    }
    let align = if ep.f32_out { 8 } else { 4 };
    if !c.is_multiple_of(align) {
        return Err(crate::invalid!(
            "gemm_bf16 needs a {align}-byte aligned output (c = {c:#x})"
        ));
    }
    Ok(())
}

/// Launches `ptx/gemm_bf16.ptx`; `bias` 0 means none.
pub fn launch(
    gpu: &dyn Gpu,
    a: u64,
    b: u64,
    bias: u64,
    c: u64,
    s: GemmShape,
    ep: Epilogue,
) -> crate::Result<()> {
    if s.m == 0 || s.n == 0 {
        return Ok(());
    }
    check(a, b, c, s, ep)?;
    let [a, b, bias, c, m, n, k] = super::gemm::args(a, b, bias, c, s)?;
    let args = [a, b, bias, c, m, n, k, Arg::U32(ep.flags())];
    let grid = [s.n.div_ceil(TILE) as u32, s.m.div_ceil(TILE) as u32, 1];
    gpu.launch("gemm_bf16", grid, [256, 1, 1], 0, &args)
}

/// Work of one call: 2·m·n·k FLOPs; reads bf16 A and B, writes C.
pub fn cost(s: GemmShape, ep: Epilogue) -> crate::profile::Cost {
    let (m, n, k) = (s.m as f64, s.n as f64, s.k as f64);
    let out = if ep.f32_out { 4.0 } else { 2.0 } * if ep.accumulate { 2.0 } else { 1.0 };
    crate::profile::Cost {
        flops: 2.0 * m * n * k + m * n,
        bytes: 2.0 * (m * k + n * k) + out * m * n + 4.0 * n,
    }
}
