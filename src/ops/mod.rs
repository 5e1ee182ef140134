//! Every op of the engine, one file each. `src/ops/<op>.rs` holds the op's
//! argument type, its shape check, its cost, its cpu implementation (the
//! numerical ground truth for every executor) and its PTX launcher; the
//! kernel is `ptx/<op>.ptx`; the property test is `<op>` in `tests/numerics/ops.rs`
//! (`tests/numerics/ops_bf16.rs` for the bf16 ones).
//!
//! The registry at the bottom of this file is the one list of ops: the
//! [`Op`] enum every executor runs, the dispatch of checks, costs, CPU runs
//! and launches, and the PTX modules the devices load all come from it.

pub mod add;
pub mod add_scaled_diff;
pub mod attention;
pub mod attention_bf16;
pub mod cast_bf16;
pub mod embed_add;
pub mod embed_add_multi;
pub mod gather_rows;
pub mod gelu;
pub mod gemm;
pub mod gemm_bf16;
pub mod gemm_dual;
pub mod gemm_dual_bf16;
pub mod gemm_multi;
pub mod l2_normalize;
pub mod layernorm;
pub mod layernorm_multi;
pub mod lerp;
pub mod lerp_bf16;
pub mod patch_embed;
pub mod patch_embed_u8;
pub mod quick_gelu;
pub mod softmax_entropy;

#[cfg(feature = "op-examples")]
pub mod example;

use crate::buf::{Buf, DType, Slice, SliceMut};
use crate::device::Gpu;
use crate::error::Result;
use crate::profile::Cost;

/// What an op is, beyond its arguments: the checks every executor runs
/// before anything else, its work, and how each kind of executor runs it.
pub trait OpDef {
    /// The buffers' dtypes and sizes against the shape, and whatever else
    /// the op's contract demands; an `Err` names the op and the sizes.
    fn check(&self) -> Result<()>;
    /// FLOPs and bytes of one call (the profile's throughput columns).
    fn cost(&self) -> Cost;
    /// Runs on tensor cores: its roofline is the bf16 tensor peak.
    fn tensor_core(&self) -> bool {
        false
    }
    /// Runs the cpu implementation on host memory.
    fn run_cpu(&self, host: &dyn Host) -> Result<()>;
    /// Launches `ptx/<op>.ptx`; `at` gives a view's device address.
    fn launch(&self, gpu: &dyn Gpu, at: &Addr) -> Result<()>;
}

/// A view's device address on a PTX executor.
pub type Addr<'a> = dyn Fn(Buf) -> Result<u64> + 'a;

/// Address of an optional view; 0 (a null pointer the kernels test for)
/// when absent.
pub fn opt_addr(at: &Addr, b: Option<Buf>) -> Result<u64> {
    b.map_or(Ok(0), at)
}

/// Host memory that cpu implementations run on (the `cpu` executor's).
pub trait Host {
    /// Calls `f` with the host slices of `inputs` and of `out`. An input
    /// that shares `out`'s allocation is copied first, so aliasing is safe.
    fn with(
        &self,
        out: Buf,
        inputs: &[Option<Buf>],
        f: &mut dyn FnMut(&[Option<Slice>], SliceMut),
    ) -> Result<()>;
}

/// The inputs of a CPU run, by position.
#[derive(Clone, Copy)]
pub struct Inputs<'a, 's>(&'a [Option<Slice<'s>>]);

impl<'s> Inputs<'_, 's> {
    pub fn f32(&self, i: usize) -> &'s [f32] {
        self.get(i).f32()
    }
    pub fn bf16(&self, i: usize) -> &'s [half::bf16] {
        self.get(i).bf16()
    }
    pub fn i32(&self, i: usize) -> &'s [i32] {
        self.get(i).i32()
    }
    pub fn u8(&self, i: usize) -> &'s [u8] {
        self.get(i).u8()
    }
    pub fn opt_f32(&self, i: usize) -> Option<&'s [f32]> {
        self.0[i].map(Slice::f32)
    }
    fn get(&self, i: usize) -> Slice<'s> {
        self.0[i].expect("a present input (the op passed Some)")
    }
}

/// Runs `f(inputs, out)` once on host memory.
pub fn on_host(
    host: &dyn Host,
    out: Buf,
    inputs: &[Option<Buf>],
    f: impl FnOnce(Inputs, SliceMut),
) -> Result<()> {
    let mut f = Some(f);
    host.with(out, inputs, &mut |ins, o| {
        if let Some(f) = f.take() {
            f(Inputs(ins), o)
        }
    })
}

/// Per-row interpolation weights: row `r` uses `lambda[r / rows_per_lambda]`,
/// so all the token rows of one sample share that sample's λ.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    pub lambda: Buf,
    pub rows_per_lambda: usize,
}

impl Mix {
    /// λ covers `rows` rows in groups of `rows_per_lambda`.
    pub fn check(&self, op: &str, rows: usize) -> Result<()> {
        if self.rows_per_lambda == 0 {
            return Err(crate::invalid!("{op}: rows_per_lambda must be at least 1"));
        }
        need(
            op,
            "lambda",
            self.lambda,
            DType::F32,
            rows.div_ceil(self.rows_per_lambda),
        )
    }
}

/// λ of row `r` under a per-sample mix.
#[inline]
pub fn row_lambda(lambda: &[f32], rows_per_lambda: usize, r: usize) -> f32 {
    lambda[r / rows_per_lambda]
}

/// Per-sample coefficients over weight sets stacked after a base set, for
/// multi-task merging `θ0 + Σ_t k_t·(θ_t − θ0)` without building θ: set `t`
/// (1..=`sets`) of a tensor starts `t·stride` elements after the base's (the
/// layout of models uploaded one after another into one allocation), and
/// row `r` weighs set `t` by `coef[(r / rows_per_sample)·sets + t − 1]`.
#[derive(Clone, Copy, Debug)]
pub struct MultiMix {
    pub coef: Buf,
    pub sets: usize,
    pub stride: usize,
    pub rows_per_sample: usize,
}

impl MultiMix {
    /// The coefficients cover `rows` rows in groups of `rows_per_sample`.
    pub fn check(&self, op: &str, rows: usize) -> Result<()> {
        if self.rows_per_sample == 0 {
            return Err(crate::invalid!("{op}: rows_per_sample must be at least 1"));
        }
        let samples = rows.div_ceil(self.rows_per_sample);
        need(
            op,
            "coef",
            self.coef,
            DType::F32,
            elems(op, &[samples, self.sets])?,
        )
    }

    /// `b` holds a tensor of `len` elements in every set: the base's at its
    /// start, set `t`'s `t·stride` further on, the sets apart.
    pub fn check_stacked(&self, op: &str, what: &str, b: Buf, len: usize) -> Result<()> {
        if self.sets > 0 && self.stride < len {
            return Err(crate::invalid!(
                "{op}: `{what}` sets {} elements apart overlap a tensor of {len}",
                self.stride
            ));
        }
        let span = elems(op, &[self.sets, self.stride])?
            .checked_add(len)
            .ok_or_else(|| crate::invalid!("{op}: the stacked `{what}` overflows"))?;
        need(op, what, b, DType::F32, span)
    }

    /// The view of every set of the tensor whose base is `base`.
    pub fn widen(&self, base: Buf) -> Buf {
        Buf {
            len: base.len + self.sets * self.stride,
            ..base
        }
    }
}

/// The coefficients and stacking of a [`MultiMix`] as host slices, for the
/// cpu implementations.
#[derive(Clone, Copy)]
pub struct MultiRef<'a> {
    pub coef: &'a [f32],
    pub sets: usize,
    pub stride: usize,
    pub rows_per_sample: usize,
}

impl<'a> MultiRef<'a> {
    pub fn new(coef: &'a [f32], m: &MultiMix) -> Self {
        MultiRef {
            coef,
            sets: m.sets,
            stride: m.stride,
            rows_per_sample: m.rows_per_sample,
        }
    }

    /// Row `r`'s coefficients k_1..k_sets.
    pub fn row(&self, r: usize) -> &'a [f32] {
        let i = r / self.rows_per_sample;
        &self.coef[i * self.sets..(i + 1) * self.sets]
    }

    /// Set `t` (0 = the base) of a stacked tensor of `len` elements.
    pub fn set<'s>(&self, stacked: &'s [f32], t: usize, len: usize) -> &'s [f32] {
        &stacked[t * self.stride..t * self.stride + len]
    }

    /// Per element: `base + Σ_t k_t·(set_t − base)` over the sets of a
    /// stacked tensor, for row `r` (the merged parameter θ0 + Σ k_t τ_t).
    pub fn merge(&self, stacked: &[f32], len: usize, r: usize, out: &mut Vec<f32>) {
        let base = self.set(stacked, 0, len);
        out.clear();
        out.extend_from_slice(base);
        for (t, &k) in self.row(r).iter().enumerate() {
            let s = self.set(stacked, t + 1, len);
            for ((o, &v), &b) in out.iter_mut().zip(s).zip(base) {
                *o += k * (v - b);
            }
        }
    }
}

/// `dims` multiplied, or an error naming the op when the product overflows.
pub fn elems(op: &str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| crate::invalid!("{op}: the shape {dims:?} overflows"))
}

/// `b` is a `dtype` buffer of at least `len` elements.
pub fn need(op: &str, what: &str, b: Buf, dtype: DType, len: usize) -> Result<()> {
    if b.dtype != dtype {
        return Err(crate::invalid!(
            "{op}: `{what}` is a {} buffer, expected {dtype}",
            b.dtype
        ));
    }
    if b.len < len {
        return Err(crate::invalid!(
            "{op}: `{what}` holds {} values, the shape needs {len}",
            b.len
        ));
    }
    Ok(())
}

/// [`need`] for an optional buffer.
pub fn need_opt(op: &str, what: &str, b: Option<Buf>, dtype: DType, len: usize) -> Result<()> {
    b.map_or(Ok(()), |b| need(op, what, b, dtype, len))
}

/// The output shares no element with any input (the kernel would race).
pub fn disjoint(op: &str, out: (&str, Buf), inputs: &[(&str, Option<Buf>)]) -> Result<()> {
    for (name, b) in inputs {
        if let Some(b) = b
            && b.overlaps(&out.1)
        {
            return Err(crate::invalid!(
                "{op}: `{}` overlaps the input `{name}`; use a separate output buffer",
                out.0
            ));
        }
    }
    Ok(())
}

/// Elementwise ops: `a` and `b` are the same view (in place) or disjoint.
pub fn same_or_disjoint(op: &str, a: (&str, Buf), b: (&str, Buf)) -> Result<()> {
    if a.1 == b.1 {
        return Ok(());
    }
    disjoint(op, a, &[(b.0, Some(b.1))])
}

/// Elementwise ops: every view has `len` elements.
pub fn same_len(op: &str, len: usize, bufs: &[(&str, Buf)]) -> Result<()> {
    match bufs.iter().find(|(_, b)| b.len != len) {
        Some((name, b)) => Err(crate::invalid!(
            "{op}: `{name}` holds {} values, the others {len}",
            b.len
        )),
        None => Ok(()),
    }
}

/// Defines [`Op`] (one variant per op, holding its argument type), its
/// dispatch, the `From` conversions, the PTX module list and the list of
/// test examples, from one line
/// per op: `module::ArgumentType`. The module's name is the op's name and
/// the name of its kernel file in `ptx/`.
macro_rules! registry {
    ($($module:ident :: $ty:ident),* $(,)?) => {
        /// One call of an op, with its buffers and shape.
        #[derive(Clone, Copy, Debug)]
        pub enum Op {
            $($ty($module::$ty)),*
        }

        $(impl From<$module::$ty> for Op {
            fn from(op: $module::$ty) -> Op {
                Op::$ty(op)
            }
        })*

        impl Op {
            /// The op's name, also its kernel's name and file stem.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Op::$ty(_) => stringify!($module)),*
                }
            }

            fn def(&self) -> &dyn OpDef {
                match self {
                    $(Op::$ty(op) => op),*
                }
            }
        }

        /// Every op's test example, in registry order.
        #[cfg(feature = "op-examples")]
        pub fn examples() -> Vec<example::ExampleDef> {
            vec![$(example::def::<$module::$ty>(stringify!($module))),*]
        }

        /// Every kernel module as (file name, PTX source), embedded once.
        pub const PTX_MODULES: &[(&str, &str)] = &[
            $((
                concat!(stringify!($module), ".ptx"),
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/ptx/", stringify!($module), ".ptx")),
            )),*
        ];
    };
}

impl Op {
    pub fn check(&self) -> Result<()> {
        self.def().check()
    }
    pub fn cost(&self) -> Cost {
        self.def().cost()
    }
    pub fn tensor_core(&self) -> bool {
        self.def().tensor_core()
    }
    pub fn run_cpu(&self, host: &dyn Host) -> Result<()> {
        self.def().run_cpu(host)
    }
    pub fn launch(&self, gpu: &dyn Gpu, at: &Addr) -> Result<()> {
        self.def().launch(gpu, at)
    }
}

registry! {
    add::Add,
    add_scaled_diff::AddScaledDiff,
    attention::Attention,
    attention_bf16::AttentionBf16,
    cast_bf16::CastBf16,
    embed_add::EmbedAdd,
    embed_add_multi::EmbedAddMulti,
    gather_rows::GatherRows,
    gelu::Gelu,
    gemm::Gemm,
    gemm_bf16::GemmBf16,
    gemm_dual::GemmDual,
    gemm_dual_bf16::GemmDualBf16,
    gemm_multi::GemmMulti,
    l2_normalize::L2Normalize,
    layernorm::LayerNorm,
    layernorm_multi::LayerNormMulti,
    lerp::Lerp,
    lerp_bf16::LerpBf16,
    patch_embed::PatchEmbed,
    patch_embed_u8::PatchEmbedU8,
    quick_gelu::QuickGelu,
    softmax_entropy::SoftmaxEntropy,
}
