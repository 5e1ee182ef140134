//! layernorm_multi: layernorm whose γ/β are each row's multi-task merge
//! `γ0 + Σ_t k_t·(γ_t − γ0)` over T stacked sets (and β likewise), the
//! layernorm of multi-task DaWin's batched per-sample merging.

use super::layernorm::{LayerNormShape, check_rows};
use super::{Addr, Host, MultiMix, MultiRef, OpDef, on_host};
use crate::buf::Buf;
use crate::device::{Arg, Dims, Gpu, u32_arg};
use crate::error::Result;
use crate::simd::vmath;
use rayon::prelude::*;

/// Row layernorm of `x` into `y` with per-row merged γ/β; `y` may be `x`
/// when the strides are equal.
#[derive(Clone, Copy, Debug)]
pub struct LayerNormMulti {
    pub x: Buf,
    pub y: Buf,
    /// Every set of γ, stacked (see [`MultiMix::widen`]).
    pub gamma: Buf,
    /// Every set of β, stacked like `gamma`.
    pub beta: Buf,
    pub mix: MultiMix,
    pub shape: LayerNormShape,
}

/// cpu implementation: layernorm's statistics per row (f64, two passes), γ/β
/// merged per row group, the affine map in f32.
pub fn cpu(
    x: &[f32],
    y: &mut [f32],
    (gamma, beta): (&[f32], &[f32]),
    mix: &MultiRef,
    s: LayerNormShape,
) {
    let w = s.width;
    if s.rows == 0 {
        return;
    }
    assert!(x.len() >= (s.rows - 1) * s.x_stride + w && y.len() >= (s.rows - 1) * s.y_stride + w);
    let level = crate::simd::active();
    let span = (s.rows - 1) * s.y_stride + w;
    y[..span]
        .par_chunks_mut(s.y_stride)
        .enumerate()
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(g, b), (r, yr)| {
                let xr = &x[r * s.x_stride..][..w];
                let (mean, inv) = vmath::row_stats(level, xr, s.eps);
                mix.merge(gamma, w, r, g);
                mix.merge(beta, w, r, b);
                vmath::normalize(level, xr, &mut yr[..w], mean, inv, g, b);
            },
        );
}

/// Work of one call: the statistics, the merge of γ/β per value and the
/// affine map; reads x and every set of γ/β, writes y.
pub fn cost(s: LayerNormShape, sets: usize) -> crate::profile::Cost {
    let (r, w, t) = (s.rows as f64, s.width as f64, sets as f64);
    crate::profile::Cost {
        flops: r * w * (8.0 + 4.0 * t),
        bytes: 4.0 * (2.0 * r * w + 2.0 * (t + 1.0) * w),
    }
}

impl OpDef for LayerNormMulti {
    fn check(&self) -> Result<()> {
        let (op, s, x) = ("layernorm_multi", self.shape, self.mix);
        x.check_stacked(op, "gamma", self.gamma, s.width)?;
        x.check_stacked(op, "beta", self.beta, s.width)?;
        x.check(op, s.rows)?;
        let params = [
            ("gamma", Some(self.gamma)),
            ("beta", Some(self.beta)),
            ("coef", Some(x.coef)),
        ];
        check_rows(op, self.x, self.y, s, &params)
    }

    fn cost(&self) -> crate::profile::Cost {
        cost(self.shape, self.mix.sets)
    }

    fn run_cpu(&self, host: &dyn Host) -> Result<()> {
        let ins = [
            Some(self.x),
            Some(self.gamma),
            Some(self.beta),
            Some(self.mix.coef),
        ];
        on_host(host, self.y, &ins, |i, y| {
            let mix = MultiRef::new(i.f32(3), &self.mix);
            cpu(i.f32(0), y.f32(), (i.f32(1), i.f32(2)), &mix, self.shape)
        })
    }

    /// layernorm's launch: one warp per row, 8 rows per block.
    fn launch(&self, gpu: &dyn Gpu, at: &Addr) -> Result<()> {
        let (s, x) = (self.shape, self.mix);
        if s.rows == 0 {
            return Ok(());
        }
        let args = [
            Arg::U64(at(self.x)?),
            Arg::U64(at(self.y)?),
            Arg::U64(at(self.gamma)?),
            Arg::U64(at(self.beta)?),
            Arg::U64(at(x.coef)?),
            u32_arg("rows", s.rows)?,
            u32_arg("width", s.width)?,
            u32_arg("x stride", s.x_stride)?,
            u32_arg("y stride", s.y_stride)?,
            u32_arg("sets", x.sets)?,
            u32_arg("set stride", x.stride)?,
            u32_arg("rows per sample", x.rows_per_sample)?,
            Arg::F32(s.eps),
        ];
        let grid = [s.rows.div_ceil(8) as u32, 1, 1];
        gpu.launch("layernorm_multi", Dims::new(grid, [256, 1, 1]), &args)
    }
}

#[cfg(feature = "op-examples")]
impl super::example::OpExample for LayerNormMulti {
    const TOLERANCE: f64 = 1e-5;
    fn example(i: &mut super::example::ExampleInputs) -> (Self, Buf) {
        let shape = LayerNormShape::dense(9, 200, 1e-5);
        let x = i.f32(1800, 1, 3.0);
        // Three task sets 211 elements apart behind the base.
        let (gamma, beta) = (i.f32(3 * 211 + 200, 2, 1.0), i.f32(3 * 211 + 200, 3, 1.0));
        let (mix, y) = (i.multi(3, 211, 3), i.zeros(crate::buf::DType::F32, 1800));
        (
            LayerNormMulti {
                x,
                y,
                gamma,
                beta,
                mix,
                shape,
            },
            y,
        )
    }
}
