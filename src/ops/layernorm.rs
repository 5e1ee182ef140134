//! layernorm over rows, optionally with per-row lerped γ/β.
//!
//! Strides let `ln_post` read only the class token of each sample
//! (`x_stride = tokens·width`) and write a dense `[batch, width]`.

use super::{Addr, Host, Mix, OpDef, disjoint, elems, need, on_host};
use crate::buf::{Buf, DType};
use crate::device::{Arg, Dims, Gpu, u32_arg};
use crate::error::Result;
use crate::simd::vmath;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerNormShape {
    pub rows: usize,
    pub width: usize,
    pub x_stride: usize,
    pub y_stride: usize,
    pub eps: f32,
}

impl LayerNormShape {
    pub fn dense(rows: usize, width: usize, eps: f32) -> Self {
        LayerNormShape {
            rows,
            width,
            x_stride: width,
            y_stride: width,
            eps,
        }
    }
}

/// Second γ/β for a per-row lerped layernorm.
#[derive(Clone, Copy, Debug)]
pub struct DualNorm {
    pub gamma1: Buf,
    pub beta1: Buf,
    pub mix: Mix,
}

/// Row layernorm of `x` into `y`; `y` may be `x` when the strides are equal.
#[derive(Clone, Copy, Debug)]
pub struct LayerNorm {
    pub x: Buf,
    pub y: Buf,
    pub gamma: Buf,
    pub beta: Buf,
    pub dual: Option<DualNorm>,
    pub shape: LayerNormShape,
}

/// [`DualNorm`] on the host: the second γ/β and λ per row as slices, for
/// the cpu implementation.
pub struct DualNormRef<'a> {
    pub gamma1: &'a [f32],
    pub beta1: &'a [f32],
    pub lambda: &'a [f32],
    pub rows_per_lambda: usize,
}

/// cpu implementation: per row, mean and variance accumulated in f64 (two
/// passes), then the affine map in f32; vectorised per SIMD level, blocks
/// of rows over threads.
pub fn cpu(
    x: &[f32],
    y: &mut [f32],
    gamma: &[f32],
    beta: &[f32],
    dual: Option<&DualNormRef>,
    s: LayerNormShape,
) {
    let w = s.width;
    if s.rows == 0 {
        return;
    }
    assert!(x.len() >= (s.rows - 1) * s.x_stride + w && y.len() >= (s.rows - 1) * s.y_stride + w);
    let level = crate::simd::active();
    const ROWS_PER_TASK: usize = 16;
    let span = (s.rows - 1) * s.y_stride + w;
    y[..span]
        .par_chunks_mut(s.y_stride * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(task, ys)| {
            let (mut g, mut b) = (Vec::new(), Vec::new());
            for (i, yr) in ys.chunks_mut(s.y_stride).enumerate() {
                let r = task * ROWS_PER_TASK + i;
                let xr = &x[r * s.x_stride..][..w];
                let (mean, inv) = vmath::row_stats(level, xr, s.eps);
                let (gr, br) = match dual {
                    None => (gamma, beta),
                    Some(d) => {
                        let l = super::row_lambda(d.lambda, d.rows_per_lambda, r);
                        g.clear();
                        g.extend_from_slice(&gamma[..w]);
                        vmath::lerp_in_place(level, &mut g, &d.gamma1[..w], l);
                        b.clear();
                        b.extend_from_slice(&beta[..w]);
                        vmath::lerp_in_place(level, &mut b, &d.beta1[..w], l);
                        (&g[..], &b[..])
                    }
                };
                vmath::normalize(level, xr, &mut yr[..w], mean, inv, &gr[..w], &br[..w]);
            }
        });
}

/// Work of one call: statistics and the affine map per value; reads x and
/// γ/β (both sets when dual), writes y.
pub fn cost(s: LayerNormShape, dual: bool) -> crate::profile::Cost {
    let (r, w) = (s.rows as f64, s.width as f64);
    let sets = if dual { 2.0 } else { 1.0 };
    crate::profile::Cost {
        flops: r * w * if dual { 12.0 } else { 8.0 },
        bytes: 4.0 * (2.0 * r * w + 2.0 * sets * w),
    }
}

/// Elements a strided view of `rows` rows of `width` spans.
fn span(op: &str, rows: usize, stride: usize, width: usize) -> Result<usize> {
    if rows == 0 {
        return Ok(0);
    }
    if stride < width {
        return Err(crate::invalid!(
            "{op}: a row stride of {stride} is below the width {width}"
        ));
    }
    elems(op, &[rows - 1, stride])?
        .checked_add(width)
        .ok_or_else(|| crate::invalid!("{op}: the shape overflows"))
}

/// The row views of a layernorm: `x` and `y` span their strided rows, `y`
/// overlaps none of `params`, and `x` only when in place row for row.
pub(super) fn check_rows(
    op: &str,
    x: Buf,
    y: Buf,
    s: LayerNormShape,
    params: &[(&str, Option<Buf>)],
) -> Result<()> {
    need(
        op,
        "x",
        x,
        DType::F32,
        span(op, s.rows, s.x_stride, s.width)?,
    )?;
    need(
        op,
        "y",
        y,
        DType::F32,
        span(op, s.rows, s.y_stride, s.width)?,
    )?;
    disjoint(op, ("y", y), params)?;
    // In place only row for row: each warp reads its row before writing it.
    let in_place = x.id == y.id && x.offset == y.offset && s.x_stride == s.y_stride;
    if in_place {
        return Ok(());
    }
    disjoint(op, ("y", y), &[("x", Some(x))])
}

impl OpDef for LayerNorm {
    fn check(&self) -> Result<()> {
        let (op, s) = ("layernorm", self.shape);
        need(op, "gamma", self.gamma, DType::F32, s.width)?;
        need(op, "beta", self.beta, DType::F32, s.width)?;
        let mut params = vec![("gamma", Some(self.gamma)), ("beta", Some(self.beta))];
        if let Some(d) = self.dual {
            need(op, "gamma1", d.gamma1, DType::F32, s.width)?;
            need(op, "beta1", d.beta1, DType::F32, s.width)?;
            d.mix.check(op, s.rows)?;
            params.extend([("gamma1", Some(d.gamma1)), ("beta1", Some(d.beta1))]);
            params.push(("lambda", Some(d.mix.lambda)));
        }
        check_rows(op, self.x, self.y, s, &params)
    }

    fn cost(&self) -> crate::profile::Cost {
        cost(self.shape, self.dual.is_some())
    }

    fn run_cpu(&self, host: &dyn Host) -> Result<()> {
        let mut ins = vec![Some(self.x), Some(self.gamma), Some(self.beta)];
        if let Some(d) = self.dual {
            ins.extend([Some(d.gamma1), Some(d.beta1), Some(d.mix.lambda)]);
        }
        on_host(host, self.y, &ins, |i, y| {
            let d = self.dual.map(|d| DualNormRef {
                gamma1: i.f32(3),
                beta1: i.f32(4),
                lambda: i.f32(5),
                rows_per_lambda: d.mix.rows_per_lambda,
            });
            cpu(
                i.f32(0),
                y.f32(),
                i.f32(1),
                i.f32(2),
                d.as_ref(),
                self.shape,
            )
        })
    }

    /// One warp per row, 8 rows per block; null dual pointers mean none.
    fn launch(&self, gpu: &dyn Gpu, at: &Addr) -> Result<()> {
        let s = self.shape;
        if s.rows == 0 {
            return Ok(());
        }
        let (g1, b1, lam, rpl) = match self.dual {
            Some(d) => (
                at(d.gamma1)?,
                at(d.beta1)?,
                at(d.mix.lambda)?,
                d.mix.rows_per_lambda,
            ),
            None => (0, 0, 0, 1),
        };
        let args = [
            Arg::U64(at(self.x)?),
            Arg::U64(at(self.y)?),
            Arg::U64(at(self.gamma)?),
            Arg::U64(at(self.beta)?),
            Arg::U64(g1),
            Arg::U64(b1),
            Arg::U64(lam),
            u32_arg("rows", s.rows)?,
            u32_arg("width", s.width)?,
            u32_arg("x stride", s.x_stride)?,
            u32_arg("y stride", s.y_stride)?,
            u32_arg("rows per λ", rpl)?,
            Arg::F32(s.eps),
        ];
        let grid = [s.rows.div_ceil(8) as u32, 1, 1];
        gpu.launch("layernorm", Dims::new(grid, [256, 1, 1]), &args)
    }
}

#[cfg(feature = "op-examples")]
impl super::example::OpExample for LayerNorm {
    const TOLERANCE: f64 = 1e-5;
    fn example(i: &mut super::example::ExampleInputs) -> (Self, Buf) {
        let shape = LayerNormShape::dense(9, 200, 1e-5);
        let x = i.f32(1800, 1, 3.0);
        let (gamma, beta) = (i.f32(200, 2, 1.0), i.f32(200, 3, 1.0));
        let mix = i.mix(3, 3);
        let dual = Some(DualNorm {
            gamma1: i.f32(200, 4, 1.0),
            beta1: i.f32(200, 5, 1.0),
            mix,
        });
        let y = i.zeros(DType::F32, 1800);
        (
            LayerNorm {
                x,
                y,
                gamma,
                beta,
                dual,
                shape,
            },
            y,
        )
    }
}
