//! gemm_bf16: `C = epilogue(A·Bᵀ + bias)` with bf16 A and B on tensor cores
//! (`mma.sync` m16n8k16, f32 accumulation). The epilogue fuses the
//! activation, the output rounding (bf16 or f32) and a residual add.

use super::gemm::{self, GemmShape, add_bias, check_operands, with_scratch};
use super::{Addr, Host, OpDef, on_host};
use crate::buf::{Buf, DType, SliceMut};
use crate::device::{Arg, Dims, Gpu};
use crate::error::Result;
use crate::simd::{self, Bf16, Simd, vmath};
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

/// The reference: the f32 gemm of the widened operands, then the epilogue
/// element by element. `c` holds the output as f32 values; with a bf16
/// output every value written (and read, when accumulating) is
/// bf16-representable. The executor runs [`cpu_at`].
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

/// cpu implementation: the packed bf16 gemm of `crate::simd::gemm_bf16`
/// (AMX, AVX512-BF16 or widened, as `level` says) with the bias,
/// activation, accumulation and output rounding fused per row segment,
/// straight into the f32 or bf16 output.
pub fn cpu_at(
    level: Bf16,
    a: &[bf16],
    b: &[bf16],
    bias: Option<&[f32]>,
    c: SliceMut,
    s: GemmShape,
    ep: Epilogue,
) {
    let GemmShape { m, n, k } = s;
    assert!(bias.is_none_or(|b| b.len() >= n));
    let out = OutRows::new(c, s, ep);
    let finish = |r: usize, j0: usize, segs: &mut [&mut [f32]]| {
        add_bias(crate::simd::active(), segs[0], bias, j0);
        out.finish(r, j0, segs[0]);
    };
    with_scratch(1, m * n, |scratch| {
        // SAFETY: the scratch outputs hold m·n floats each and alias nothing.
        unsafe { simd::gemm_bf16::multi(level, a, &[b], scratch, (m, n, k), &finish) }
    })
}

/// The op's output seen by the epilogue: each finished row segment is
/// activated, accumulated and rounded into it.
pub(super) struct OutRows {
    out: OutPtrs,
    n: usize,
    ep: Epilogue,
    level: Simd,
}

#[derive(Clone, Copy)]
enum OutPtrs {
    F32(*mut f32),
    Bf16(*mut bf16),
}

// SAFETY: the epilogue writes disjoint row segments from each thread.
unsafe impl Sync for OutRows {}

impl OutRows {
    /// The output of an m×n product; panics if `c` is shorter.
    pub(super) fn new(c: SliceMut, s: GemmShape, ep: Epilogue) -> Self {
        let len = s.m * s.n;
        let out = match c {
            SliceMut::F32(c) => OutPtrs::F32(c[..len].as_mut_ptr()),
            c => OutPtrs::Bf16(c.bf16()[..len].as_mut_ptr()),
        };
        OutRows {
            out,
            n: s.n,
            ep,
            level: simd::active(),
        }
    }

    /// Writes row `r`'s segment from column `j0`, given its f32 product
    /// (bias added); `v` is scratch and is overwritten.
    pub(super) fn finish(&self, r: usize, j0: usize, v: &mut [f32]) {
        match self.ep.activation {
            Activation::None => {}
            Activation::Gelu => vmath::gelu(self.level, v),
            Activation::QuickGelu => vmath::quick_gelu(self.level, v),
        }
        let at = r * self.n + j0;
        // SAFETY: (r, j0..j0 + len) lies inside the m×n output (the gemm
        // only finishes segments of its tiles) and is written by one thread.
        unsafe {
            match self.out {
                OutPtrs::F32(p) => {
                    let d = std::slice::from_raw_parts_mut(p.add(at), v.len());
                    if self.ep.accumulate {
                        d.iter_mut().zip(v.iter()).for_each(|(d, v)| *d += v);
                    } else {
                        d.copy_from_slice(v);
                    }
                }
                OutPtrs::Bf16(p) => {
                    let d = std::slice::from_raw_parts_mut(p.add(at), v.len());
                    if self.ep.accumulate {
                        v.iter_mut()
                            .zip(d.iter())
                            .for_each(|(v, d)| *v += d.to_f32());
                    }
                    vmath::to_bf16(self.level, v, d);
                }
            }
        }
    }
}

/// Block tile: 128×128 outputs, 8 warps.
pub const TILE: usize = 128;

/// `c = epilogue(a · bᵀ + bias)` with bf16 `a`, `b`; `c` is f32 when the
/// epilogue says so, else bf16.
#[derive(Clone, Copy, Debug)]
pub struct GemmBf16 {
    pub a: Buf,
    pub b: Buf,
    pub bias: Option<Buf>,
    pub c: Buf,
    pub shape: GemmShape,
    pub epilogue: Epilogue,
}

impl Epilogue {
    /// The output buffer's dtype.
    pub fn out_dtype(self) -> DType {
        if self.f32_out {
            DType::F32
        } else {
            DType::Bf16
        }
    }
}

/// The contract of both bf16 gemms beyond buffer sizes: 16-byte cp.async
/// rows need k a multiple of 8.
pub(super) fn check_k(op: &str, s: GemmShape) -> Result<()> {
    if !s.k.is_multiple_of(8) {
        return Err(crate::invalid!(
            "{op} needs k a multiple of 8 (16-byte rows), got k = {}; pad k with zeros",
            s.k
        ));
    }
    Ok(())
}

/// What the kernels need of the addresses: 16-byte aligned operands for
/// cp.async, an output aligned for its stores.
pub(super) fn check_alignment(op: &str, operands: &[u64], c: u64, ep: Epilogue) -> Result<()> {
    if operands.iter().any(|a| !a.is_multiple_of(16)) {
        return Err(crate::invalid!(
            "{op} needs 16-byte aligned operands (views starting at a multiple of 8 elements)"
        ));
    }
    let align = if ep.f32_out { 8 } else { 4 };
    if !c.is_multiple_of(align) {
        return Err(crate::invalid!("{op} needs a {align}-byte aligned output"));
    }
    Ok(())
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

impl OpDef for GemmBf16 {
    fn check(&self) -> Result<()> {
        let op = "gemm_bf16";
        check_k(op, self.shape)?;
        let ops = (self.a, self.b, self.bias, self.c);
        check_operands(op, ops, self.shape, DType::Bf16, self.epilogue.out_dtype())
    }

    fn cost(&self) -> crate::profile::Cost {
        cost(self.shape, self.epilogue)
    }

    fn tensor_core(&self) -> bool {
        true
    }

    fn run_cpu(&self, host: &dyn Host) -> Result<()> {
        on_host(
            host,
            self.c,
            &[Some(self.a), Some(self.b), self.bias],
            |i, c| {
                let (a, b, bias) = (i.bf16(0), i.bf16(1), i.opt_f32(2));
                let level = simd::active_bf16();
                cpu_at(level, a, b, bias, c, self.shape, self.epilogue)
            },
        )
    }

    fn launch(&self, gpu: &dyn Gpu, at: &Addr) -> Result<()> {
        let s = self.shape;
        if s.m == 0 || s.n == 0 {
            return Ok(());
        }
        check_alignment(
            "gemm_bf16",
            &[at(self.a)?, at(self.b)?],
            at(self.c)?,
            self.epilogue,
        )?;
        let [a, b, bias, c, m, n, k] = gemm::args(at, self.a, self.b, self.bias, self.c, s)?;
        let args = [a, b, bias, c, m, n, k, Arg::U32(self.epilogue.flags())];
        let grid = [s.n.div_ceil(TILE) as u32, s.m.div_ceil(TILE) as u32, 1];
        gpu.launch("gemm_bf16", Dims::new(grid, [256, 1, 1]), &args)
    }
}

/// The bf16 gemms' example epilogue: an activation, bf16 out.
#[cfg(feature = "op-examples")]
pub(super) const EXAMPLE_EPILOGUE: Epilogue = Epilogue {
    activation: Activation::QuickGelu,
    f32_out: false,
    accumulate: false,
};

#[cfg(feature = "op-examples")]
impl super::example::OpExample for GemmBf16 {
    const TOLERANCE: f64 = 1e-2;
    fn example(i: &mut super::example::ExampleInputs) -> (Self, Buf) {
        let shape = super::gemm::EXAMPLE_SHAPE;
        let a = i.bf16(70 * 40, 1, 1.0);
        let (b, bias) = (i.bf16(45 * 40, 2, 0.2), i.f32(45, 3, 0.5));
        let c = i.zeros(DType::Bf16, 70 * 45);
        let epilogue = EXAMPLE_EPILOGUE;
        (
            GemmBf16 {
                a,
                b,
                bias: Some(bias),
                c,
                shape,
                epilogue,
            },
            c,
        )
    }
}
