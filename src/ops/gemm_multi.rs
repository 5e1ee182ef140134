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
use rayon::prelude::*;

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

/// The stacked operands of a CPU run: every set of the weight and bias
/// (see [`GemmMulti::b`]) and the per-row coefficients.
#[derive(Clone, Copy)]
pub struct StackedRef<'a> {
    pub b: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub mix: MultiRef<'a>,
}

/// cpu implementation. For samples of many rows (token rows), each sample's
/// merged weights `b0 + Σ_t k_t·(b_t − b0)` times its rows; otherwise all
/// T+1 products from one pass over the packed A panels, each finished row
/// segment mixed as `c0 + Σ_t k_t·(c_t − c0)`, biases added first.
pub fn cpu(a: &[f32], w: &StackedRef, c: &mut [f32], s: GemmShape) {
    cpu_at(crate::simd::active(), a, w, c, s)
}

/// [`cpu`] at a given SIMD level: per-sample merged weights when a sample
/// has many rows, else all products mixed per row.
pub fn cpu_at(level: Simd, a: &[f32], w: &StackedRef, c: &mut [f32], s: GemmShape) {
    // Merging a sample's weights costs T passes over them (memory-bound,
    // ~10 FMAs' time per element on a CPU even from cache) and saves T
    // products over the sample's rows: worth it from about that many rows
    // (a ViT's token rows), not for the one-row head and projection.
    const MERGE_FROM_ROWS: usize = 8;
    if w.mix.sets > 0 && w.mix.rows_per_sample >= MERGE_FROM_ROWS {
        return merged_per_sample(level, a, w, c, s);
    }
    all_products(level, a, w, c, s)
}

/// Weight panels of this many output columns are merged at once: the T+1
/// stacked panels (1.8 MiB for T = 8 at k = 768) stay in cache while every
/// sample's merge of them is built and applied. 64 ran ViT-B/32 with T = 8
/// fastest of 16 to 256 on a 2-core AMD EPYC (`dawin bench --suite mtl`).
const PANEL: usize = 64;

/// `c` from each sample's merged weights `b0 + Σ_t k_t·(b_t − b0)`, built
/// panel by panel (panels over threads) and multiplied with that sample's
/// rows.
fn merged_per_sample(level: Simd, a: &[f32], w: &StackedRef, c: &mut [f32], s: GemmShape) {
    let GemmShape { m, n, k } = s;
    let (mix, rps) = (&w.mix, w.mix.rows_per_sample);
    let starts: Vec<usize> = (0..n).step_by(PANEL).collect();
    let panels: Vec<Vec<f32>> = starts
        .par_iter()
        .map(|&j0| {
            let nb = PANEL.min(n - j0);
            let (mut wp, mut bp, mut out) = (Vec::new(), Vec::new(), vec![0f32; m * nb]);
            for r0 in (0..m).step_by(rps) {
                let rows = rps.min(m - r0);
                // The panel's rows j0.. of every set, merged for this sample.
                mix.merge(&w.b[j0 * k..], nb * k, r0, &mut wp);
                if let Some(bi) = w.bias {
                    mix.merge(&bi[j0..], nb, r0, &mut bp);
                }
                let sub = GemmShape { m: rows, n: nb, k };
                let (x, y) = (
                    &a[r0 * k..(r0 + rows) * k],
                    &mut out[r0 * nb..(r0 + rows) * nb],
                );
                gemm::cpu_at(level, x, &wp, w.bias.map(|_| &bp[..]), y, sub);
            }
            out
        })
        .collect();
    for (&j0, out) in starts.iter().zip(&panels) {
        let nb = PANEL.min(n - j0);
        for (r, row) in out.chunks_exact(nb).enumerate() {
            c[r * n + j0..r * n + j0 + nb].copy_from_slice(row);
        }
    }
}

/// `c` from all T+1 products of every row, mixed per row.
fn all_products(level: Simd, a: &[f32], w: &StackedRef, c: &mut [f32], s: GemmShape) {
    let GemmShape { m, n, k } = s;
    let (mix, sets) = (&w.mix, w.mix.sets);
    assert!(c.len() >= m * n);
    let weights: Vec<&[f32]> = (0..=sets).map(|t| mix.set(w.b, t, n * k)).collect();
    let biases: Vec<Option<&[f32]>> = (0..=sets)
        .map(|t| w.bias.map(|bi| mix.set(bi, t, n)))
        .collect();
    let bias_of = |t: usize, j: usize| biases[t].map_or(0.0, |b| b[j]);
    // Per element: c0 + Σ_t k_t·(c_t − c0), each c with its set's bias.
    let fold = |r: usize, j0: usize, segs: &mut [&mut [f32]]| {
        let (base, others) = segs.split_at_mut(1);
        let ks = mix.row(r);
        for (i, o) in base[0].iter_mut().enumerate() {
            let c0 = *o + bias_of(0, j0 + i);
            let mut acc = c0;
            for (t, (seg, &kt)) in others.iter().zip(ks).enumerate() {
                acc += kt * (seg[i] + bias_of(t + 1, j0 + i) - c0);
            }
            *o = acc;
        }
    };
    gemm::with_scratch(sets, m * n, |rest| {
        let mut outs = vec![OutPtr(c.as_mut_ptr())];
        outs.extend_from_slice(rest);
        // SAFETY: `c` (borrowed mutably) and each scratch buffer hold m·n
        // floats; none aliases an input or another.
        unsafe { multi(level, a, &weights, &outs, (m, n, k), &fold) }
    })
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
            let w = StackedRef {
                b: i.f32(1),
                bias: i.opt_f32(2),
                mix: MultiRef::new(i.f32(3), &self.mix),
            };
            cpu(i.f32(0), &w, c.f32(), self.shape)
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

#[cfg(feature = "op-examples")]
impl super::example::OpExample for GemmMulti {
    const TOLERANCE: f64 = 1e-5;
    fn example(i: &mut super::example::ExampleInputs) -> (Self, Buf) {
        let shape = super::gemm::EXAMPLE_SHAPE;
        // Three task sets 5 elements further apart than their length.
        let stride = 45 * 40 + 5;
        let a = i.f32(70 * 40, 1, 1.0);
        let (b, bias) = (
            i.f32(3 * stride + 45 * 40, 2, 0.2),
            i.f32(3 * stride + 45, 3, 0.5),
        );
        let (mix, c) = (i.multi(7, stride, 10), i.zeros(DType::F32, 70 * 45));
        (
            GemmMulti {
                a,
                b,
                bias: Some(bias),
                mix,
                c,
                shape,
            },
            c,
        )
    }
}
