//! gemm_multi: `C_r = C0 + Σ_t k_rt·(C_t − C0)` with `C_t = A·B_tᵀ + b_t`,
//! multi-task DaWin's exact per-sample merge `θ0 + Σ_t k_t·(θ_t − θ0)` of a
//! linear layer for a whole batch, without building a merged model per
//! sample. It generalises gemm_dual (one set, `k = λ`) to T stacked sets.

use super::gemm::{self, GemmShape, check_operands};
use super::{Addr, Host, MultiMix, MultiRef, OpDef, disjoint, elems, on_host, opt_addr};
use crate::buf::{Buf, DType};
use crate::device::{Arg, Dims, Gpu, u32_arg};
use crate::error::Result;
use crate::simd::Simd;
use crate::simd::gemm::{OutPtr, multi};
use std::sync::Mutex;

/// `c_r = Σ` over the stacked weight sets of `b` (and `bias`), mixed per
/// row by `mix`: the base set plus each task's difference times its k.
#[derive(Clone, Copy, Debug)]
pub struct GemmMulti {
    pub a: Buf,
    /// Every set of the weight: the base's `[n, k]` first, set t at
    /// `t·mix.stride` (see [`MultiMix::widen`]).
    pub b: Buf,
    /// Every set of the bias, stacked like `b`.
    pub bias: Option<Buf>,
    pub mix: MultiMix,
    pub c: Buf,
    pub shape: GemmShape,
}

/// CPU reference: all T+1 products from one pass over the packed A panels,
/// each finished row segment mixed as `c0 + Σ_t k_t·(c_t − c0)`, biases
/// added first.
pub fn cpu(
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    mix: &MultiRef,
    c: &mut [f32],
    s: GemmShape,
) {
    cpu_at(crate::simd::active(), a, b, bias, mix, c, s)
}

/// [`cpu`] at a given SIMD level.
pub fn cpu_at(
    level: Simd,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    mix: &MultiRef,
    c: &mut [f32],
    s: GemmShape,
) {
    let GemmShape { m, n, k } = s;
    let sets = mix.sets;
    assert!(c.len() >= m * n);
    // The other products' buffers are kept between calls (page faults on
    // a fresh one cost as much as the mix).
    static SCRATCH: Mutex<Vec<f32>> = Mutex::new(Vec::new());
    let mut rest = std::mem::take(&mut *SCRATCH.lock().unwrap_or_else(|e| e.into_inner()));
    rest.clear();
    rest.resize(sets * m * n, 0.0);
    let weights: Vec<&[f32]> = (0..=sets).map(|t| mix.set(b, t, n * k)).collect();
    let biases: Vec<Option<&[f32]>> = (0..=sets)
        .map(|t| bias.map(|bi| mix.set(bi, t, n)))
        .collect();
    let fold = |r: usize, j0: usize, segs: &mut [&mut [f32]]| {
        let (base, others) = segs.split_at_mut(1);
        let base = &mut *base[0];
        if let Some(b0) = biases[0] {
            base.iter_mut().zip(&b0[j0..]).for_each(|(x, b)| *x += b);
        }
        let c0 = base.to_vec();
        for ((seg, bias), &kt) in others.iter_mut().zip(&biases[1..]).zip(mix.row(r)) {
            if let Some(bt) = bias {
                seg.iter_mut().zip(&bt[j0..]).for_each(|(x, b)| *x += b);
            }
            for ((o, &x), &x0) in base.iter_mut().zip(seg.iter()).zip(&c0) {
                *o += kt * (x - x0);
            }
        }
    };
    let mut outs = vec![OutPtr(c.as_mut_ptr())];
    outs.extend((0..sets).map(|t| OutPtr(rest[t * m * n..].as_mut_ptr())));
    // SAFETY: `c` (borrowed mutably) holds m·n floats and `rest` (local)
    // `sets` disjoint runs of m·n; none aliases an input.
    unsafe { multi(level, a, &weights, &outs, (m, n, k), &fold) };
    *SCRATCH.lock().unwrap_or_else(|e| e.into_inner()) = rest;
}

/// Work of one call: T+1 products and the per-row mix; reads A, every
/// weight set and the coefficients, writes C.
pub fn cost(s: GemmShape, mix: &MultiMix) -> crate::profile::Cost {
    let (m, n, k) = (s.m as f64, s.n as f64, s.k as f64);
    let sets = mix.sets as f64 + 1.0;
    let samples = m / mix.rows_per_sample.max(1) as f64;
    crate::profile::Cost {
        flops: 2.0 * sets * m * n * k + 3.0 * sets * m * n,
        bytes: 4.0 * (m * k + sets * (n * k + n) + m * n + samples * (sets - 1.0)),
    }
}

impl OpDef for GemmMulti {
    fn check(&self) -> Result<()> {
        let (op, s, x) = ("gemm_multi", self.shape, self.mix);
        let ops = (self.a, self.b, self.bias, self.c);
        check_operands(op, ops, s, DType::F32, DType::F32)?;
        x.check_stacked(op, "b", self.b, elems(op, &[s.n, s.k])?)?;
        if let Some(bias) = self.bias {
            x.check_stacked(op, "bias", bias, s.n)?;
        }
        x.check(op, s.m)?;
        disjoint(op, ("c", self.c), &[("coef", Some(x.coef))])
    }

    fn cost(&self) -> crate::profile::Cost {
        cost(self.shape, &self.mix)
    }

    fn run_cpu(&self, host: &dyn Host) -> Result<()> {
        let ins = [Some(self.a), Some(self.b), self.bias, Some(self.mix.coef)];
        on_host(host, self.c, &ins, |i, c| {
            let mix = MultiRef::new(i.f32(3), &self.mix);
            cpu(i.f32(0), i.f32(1), i.opt_f32(2), &mix, c.f32(), self.shape)
        })
    }

    /// gemm's tiling; the sets are a loop inside each block.
    fn launch(&self, gpu: &dyn Gpu, at: &Addr) -> Result<()> {
        let (s, x) = (self.shape, self.mix);
        if s.m == 0 || s.n == 0 {
            return Ok(());
        }
        let args = [
            Arg::U64(at(self.a)?),
            Arg::U64(at(self.b)?),
            Arg::U64(opt_addr(at, self.bias)?),
            Arg::U64(at(x.coef)?),
            Arg::U64(at(self.c)?),
            u32_arg("m", s.m)?,
            u32_arg("n", s.n)?,
            u32_arg("k", s.k)?,
            u32_arg("sets", x.sets)?,
            u32_arg("set stride", x.stride)?,
            u32_arg("rows per sample", x.rows_per_sample)?,
        ];
        let t = gemm::TILE;
        let grid = [s.n.div_ceil(t) as u32, s.m.div_ceil(t) as u32, 1];
        gpu.launch("gemm_multi", Dims::new(grid, [256, 1, 1]), &args)
    }
}
