//! Flash-style attention on the CPU: for each (sample, head), query blocks
//! of [`QB`] rows sweep key blocks of [`KB`] (all keys at once up to
//! [`WHOLE_ROW`]); `Q·Kᵀ` and `P·V` run on the
//! gemm micro-kernel (K and V packed once per head into B panels; Q read
//! in place from `qkv` and P from the score block, as strided A operands),
//! with the online softmax in between: a running max and sum per row, the
//! partial output rescaled when the max grows. Nothing of size [T,T] is
//! stored: a block needs QB·KB floats (QB·T up to WHOLE_ROW).

use super::gemm::{ARef, Kernel, Panels, kernel};
use super::{Simd, vmath};
use rayon::prelude::*;

/// The layout of an attention (op `attention` and its kernels): `batch`
/// samples of `tokens` rows, `heads` heads of `head_dim` each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Row `i` sees keys `0..=i` only.
    pub causal: bool,
}

impl AttentionShape {
    pub fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// How many keys query row `i` sees.
    pub fn keys_for(&self, i: usize) -> usize {
        if self.causal {
            (i + 1).min(self.tokens)
        } else {
            self.tokens
        }
    }
}

/// Most query rows per block (blocks are equalised and rounded up to
/// the micro-kernel's MR).
const QB: usize = 48;
/// Keys per block (a multiple of every micro-kernel's NR) of sequences
/// longer than [`WHOLE_ROW`].
const KB: usize = 64;
/// Sequences up to this long take all their keys as one block: a query
/// block's scores (48 rows of at most 512 keys, 96 KiB) stay in L2, the
/// softmax runs once per row with nothing to rescale, and P·V runs the
/// micro-kernel over the whole key depth instead of 64-deep slices.
const WHOLE_ROW: usize = 512;

struct OutPtr<T>(*mut T);
unsafe impl<T> Send for OutPtr<T> {}
unsafe impl<T> Sync for OutPtr<T> {}

/// What `qkv` and the output may hold: f32, or bf16 (widened as K and V
/// are packed and Q is copied, rounded as the output is written; all
/// arithmetic is f32).
pub trait FloatStorage: Copy + Send + Sync + 'static {
    /// The slice itself where it already is f32 (Q is then read in place).
    fn as_f32(s: &[Self]) -> Option<&[f32]>;
    /// `dst = src` in f32 (exact).
    fn widen(level: Simd, src: &[Self], dst: &mut [f32]);
    /// `dst = src` rounded to this type (to nearest even).
    fn narrow(level: Simd, src: &[f32], dst: &mut [Self]);
}

impl FloatStorage for f32 {
    fn as_f32(s: &[Self]) -> Option<&[f32]> {
        Some(s)
    }
    fn widen(_: Simd, src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src)
    }
    fn narrow(_: Simd, src: &[f32], dst: &mut [Self]) {
        dst.copy_from_slice(src)
    }
}

/// Through vmath's loops, which vectorise: `half`'s scalar conversions
/// were about a third of the bf16 attention at 50 tokens.
impl FloatStorage for half::bf16 {
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    fn widen(level: Simd, src: &[Self], dst: &mut [f32]) {
        vmath::from_bf16(level, src, dst)
    }
    fn narrow(level: Simd, src: &[f32], dst: &mut [Self]) {
        vmath::to_bf16(level, src, dst)
    }
}

/// `out = softmax(Q·Kᵀ/√d)·V` per (sample, head) of the fused `qkv`
/// (layout as `crate::ops::attention`).
pub fn attention<T: FloatStorage>(level: Simd, qkv: &[T], out: &mut [T], s: AttentionShape) {
    let (t, w) = (s.tokens, s.width());
    assert!(qkv.len() >= s.batch * t * 3 * w && out.len() >= s.batch * t * w);
    if t == 0 || s.head_dim == 0 {
        return;
    }
    let op = OutPtr(out.as_mut_ptr());
    // Equal query blocks of at most QB rows (no short last block).
    let mr = kernel(level).mr;
    let qb = t.div_ceil(t.div_ceil(QB)).div_ceil(mr) * mr;
    // Tasks are a sample's heads in groups (whole samples when there are
    // enough of them): a group's slices of every row are fetched first,
    // row by row, as contiguous runs the memory system streams well;
    // head by head they are head_dim-long pieces 3W apart, which after a
    // cache flush (or a long layer) cost a DRAM latency and a page walk
    // each.
    let per_task = heads_per_task(s, rayon::current_num_threads());
    let groups = s.heads.div_ceil(per_task);
    let work = (0..s.batch * groups).into_par_iter();
    work.for_each_init(Scratch::default, |scratch, task| {
        let op = &op;
        let (b, h0) = (task / groups, task % groups * per_task);
        let hs = h0..(h0 + per_task).min(s.heads);
        prefetch_heads(qkv, s, b, hs.clone());
        for h in hs {
            let head = Head::pack(qkv, s, b * s.heads + h, level, scratch);
            for i0 in (0..t).step_by(qb) {
                // SAFETY: rows i0.. of head (b, h) are this task's alone.
                unsafe { head.query_block(i0, qb.min(t - i0), scratch, op.0) };
            }
            head.give_back(scratch);
        }
    });
}

/// Heads per task: whole samples when the batch alone gives every thread
/// four tasks, else as many heads as still give every thread four.
fn heads_per_task(s: AttentionShape, threads: usize) -> usize {
    let want = 4 * threads.max(1);
    let groups = want.div_ceil(s.batch.max(1)).clamp(1, s.heads.max(1));
    s.heads.div_ceil(groups).max(1)
}

/// Asks for the cache lines of heads `hs` of sample `b`: in every row, one
/// contiguous run per query, key and value.
fn prefetch_heads<T>(qkv: &[T], s: AttentionShape, b: usize, hs: std::ops::Range<usize>) {
    let (t, d, w) = (s.tokens, s.head_dim, s.width());
    for j in 0..t {
        for which in 0..3 {
            let at = (b * t + j) * 3 * w + which * w;
            let run = &qkv[at + hs.start * d..at + hs.end * d];
            for line in run.chunks(64 / std::mem::size_of::<T>().max(1)) {
                super::prefetch(line.as_ptr() as *const f32);
            }
        }
    }
}

/// One (sample, head): where its queries are, and its packed K and V.
struct Head<'a, T> {
    s: AttentionShape,
    level: Simd,
    kern: Kernel,
    qkv: &'a [T],
    /// Sample and head.
    b: usize,
    h: usize,
    /// Head dim padded to the kernel's NR.
    dp: usize,
    /// Keys padded to NR.
    tp: usize,
    /// Keys per block (the row stride of the score block).
    kb: usize,
    /// Q·Kᵀ's B operand: NR keys per panel, head_dim deep.
    k_panels: Panels<f32>,
    /// P·V's B operand: NR output dims per panel, `tp` keys deep (P·V
    /// reads the live keys only, so the padding keys are never read).
    v_panels: Panels<f32>,
}

/// A query block's working memory, reused across blocks.
#[derive(Default)]
struct Scratch {
    o: Vec<f32>,
    row_max: Vec<f32>,
    row_sum: Vec<f32>,
    scores: Vec<f32>,
    /// A packed copy of a partial panel of rows.
    tail: Panels<f32>,
    /// The query block widened to f32 (when `qkv` is not f32).
    q: Vec<f32>,
    /// A head's keys widened to f32 (when `qkv` is not f32), to be packed.
    keys: Vec<f32>,
    /// The last head's panels, kept for their memory.
    k_panels: Panels<f32>,
    v_panels: Panels<f32>,
}

impl<'a, T: FloatStorage> Head<'a, T> {
    fn pack(
        qkv: &'a [T],
        s: AttentionShape,
        bh: usize,
        level: Simd,
        sc: &mut Scratch,
    ) -> Head<'a, T> {
        let kern = kernel(level);
        let (t, d, w) = (s.tokens, s.head_dim, s.width());
        let (b, h) = (bh / s.heads, bh % s.heads);
        let nr = kern.nr;
        let (dp, tp) = (d.div_ceil(nr) * nr, t.div_ceil(nr) * nr);
        let row = |which: usize, j: usize| &qkv[(b * t + j) * 3 * w + which * w + h * d..][..d];
        let mut k_panels = std::mem::take(&mut sc.k_panels);
        if let Some(f) = T::as_f32(qkv) {
            // K's rows are 3W apart in `qkv`: the gemm's B packing reads
            // them in place.
            let first = b * t * 3 * w + w + h * d;
            kern.pack_b(&f[first..], 3 * w, 0..t, 0..d, &mut k_panels);
        } else {
            // Widened row by row, then packed as f32 keys are.
            sc.keys.resize(t * d, 0.0);
            for (j, dst) in sc.keys.chunks_exact_mut(d).enumerate() {
                T::widen(level, row(1, j), dst);
            }
            kern.pack_b(&sc.keys, d, 0..t, 0..d, &mut k_panels);
        }
        let mut v_panels = std::mem::take(&mut sc.v_panels);
        // Every live key's row is overwritten. Padding keys are never read
        // (P·V runs over the live keys only) and padding columns give
        // output dims past d, which are dropped: neither needs zeros.
        let panels = v_panels.prepare(dp * tp, false);
        for (c, panel) in panels.chunks_exact_mut(tp * nr).enumerate() {
            let cols = nr.min(d - c * nr);
            for j in 0..t {
                T::widen(
                    level,
                    &row(2, j)[c * nr..][..cols],
                    &mut panel[j * nr..][..cols],
                );
            }
        }
        Head {
            s,
            level,
            kern,
            qkv,
            b,
            h,
            dp,
            tp,
            kb: if t <= WHOLE_ROW { tp } else { KB },
            k_panels,
            v_panels,
        }
    }

    /// Returns the panels' memory to the scratch for the next head.
    fn give_back(self, sc: &mut Scratch) {
        sc.k_panels = self.k_panels;
        sc.v_panels = self.v_panels;
    }

    /// Query rows `i0..i0+qn` over every key block they see.
    ///
    /// # Safety
    /// `out` is the op's output; rows i0.. of this head are written by
    /// this call only.
    unsafe fn query_block(&self, i0: usize, qn: usize, sc: &mut Scratch, out: *mut T) {
        let (t, d, w) = (self.s.tokens, self.s.head_dim, self.s.width());
        let Kernel { mr, nr, .. } = self.kern;
        let key_end = if self.s.causal { i0 + qn } else { t };
        let scale = 1.0 / (d as f32).sqrt();
        // The first key block writes every element of `o` (P·V without
        // accumulation), so it is not cleared.
        let o_len = qn.div_ceil(mr) * mr * self.dp;
        if sc.o.len() < o_len {
            sc.o.resize(o_len, 0.0);
        }
        sc.row_max.clear();
        sc.row_max.resize(qn, f32::NEG_INFINITY);
        sc.row_sum.clear();
        sc.row_sum.resize(qn, 0.0);
        let kb = self.kb;
        sc.scores.resize(qn.div_ceil(mr) * mr * kb, 0.0);
        let q_row = |i: usize| (self.b * t + i0 + i) * 3 * w + self.h * d;
        // Q in place where qkv is f32, else this block's rows widened.
        let (q_src, q_first, q_stride) = match T::as_f32(self.qkv) {
            Some(q) => (q, q_row(0), 3 * w),
            None => {
                sc.q.resize(qn * d, 0.0);
                for (i, dst) in sc.q.chunks_exact_mut(d).enumerate() {
                    T::widen(self.level, &self.qkv[q_row(i)..][..d], dst);
                }
                (&sc.q[..qn * d], 0, d)
            }
        };
        for j0 in (0..key_end).step_by(kb) {
            // Keys of this block: `live` real ones, padded to `kbp` for
            // Q·Kᵀ's panels. P·V reduces over the live ones only.
            let live = kb.min(key_end - j0);
            let kbp = live.div_ceil(nr) * nr;
            let first = j0 == 0;
            for ip in (0..qn).step_by(mr) {
                let a = rows_of(
                    self.kern,
                    q_src,
                    q_first + ip * q_stride,
                    qn - ip,
                    q_stride,
                    d,
                    &mut sc.tail,
                );
                for jp in 0..kbp / nr {
                    let b = &self.k_panels.as_slice()[(j0 / nr + jp) * d * nr..][..d * nr];
                    // A last panel of few keys takes a half tile (the
                    // scores past `live` are masked by the softmax).
                    let kern = self.kern.for_cols(live - jp * nr);
                    // SAFETY: full mr×nr tiles inside `scores` (row stride
                    // kb); `a` reads rows of this head's queries.
                    unsafe {
                        let c = sc.scores.as_mut_ptr().add(ip * kb + jp * nr);
                        kern.call(d, a, b.as_ptr(), c, kb, false);
                    }
                }
            }
            for r in 0..qn {
                let seen = self.s.keys_for(i0 + r).saturating_sub(j0).min(kbp);
                let row = &mut sc.scores[r * kb..][..kbp];
                let (mx, sm) = (&mut sc.row_max[r], &mut sc.row_sum[r]);
                let alpha = online_softmax(self.level, row, seen, scale, mx, sm);
                if alpha != 1.0 && !first {
                    sc.o[r * self.dp..][..self.dp]
                        .iter_mut()
                        .for_each(|x| *x *= alpha);
                }
            }
            for ip in (0..qn).step_by(mr) {
                let a = rows_of(
                    self.kern,
                    &sc.scores,
                    ip * kb,
                    qn - ip,
                    kb,
                    live,
                    &mut sc.tail,
                );
                let v = self.v_panels.as_slice();
                for c in 0..self.dp / nr {
                    let b = &v[c * self.tp * nr + j0 * nr..][..live * nr];
                    // SAFETY: full mr×nr tiles inside `o` (row stride dp);
                    // the first key block writes it, later ones add.
                    unsafe {
                        let dst = sc.o.as_mut_ptr().add(ip * self.dp + c * nr);
                        self.kern.call(live, a, b.as_ptr(), dst, self.dp, !first);
                    }
                }
            }
        }
        for r in 0..qn {
            let inv = 1.0 / sc.row_sum[r];
            let at = (self.b * t + i0 + r) * w + self.h * d;
            // SAFETY: row (b, i0+r), head h: this task's part of `out`.
            let dst = unsafe { std::slice::from_raw_parts_mut(out.add(at), d) };
            let row = &mut sc.o[r * self.dp..][..d];
            row.iter_mut().for_each(|y| *y *= inv);
            T::narrow(self.level, row, dst);
        }
    }
}

/// The A operand of `left` rows of `src` from index `first`, `stride`
/// apart, `kc` deep: read in place when there are MR of them, else copied
/// into `tail` as a packed panel with zero rows after the real ones.
fn rows_of(
    kern: Kernel,
    src: &[f32],
    first: usize,
    left: usize,
    stride: usize,
    kc: usize,
    tail: &mut Panels<f32>,
) -> ARef {
    let mr = kern.mr;
    if left >= mr {
        return ARef {
            ptr: src[first..].as_ptr(),
            rs: stride,
            cs: 1,
        };
    }
    let packed = tail.prepare(kc * mr, true);
    for i in 0..left {
        for (p, &x) in src[first + i * stride..][..kc].iter().enumerate() {
            packed[p * mr + i] = x;
        }
    }
    kern.packed(tail)
}

/// One key block of a row's online softmax: the first `seen` raw scores
/// are real (the rest masked or padding). Replaces them by their
/// unnormalised probabilities e^(scale·x − max), updates the running max
/// and sum, and returns the factor the row's partial output must be
/// rescaled by.
fn online_softmax(
    level: Simd,
    row: &mut [f32],
    seen: usize,
    scale: f32,
    max: &mut f32,
    sum: &mut f32,
) -> f32 {
    let (live, masked) = row.split_at_mut(seen);
    masked.fill(0.0);
    // scale > 0, so the max of the scaled scores is the scaled max.
    let block_max = vmath::max(level, live) * scale;
    if block_max == f32::NEG_INFINITY {
        return 1.0;
    }
    let new_max = max.max(block_max);
    let alpha = vmath::exp(*max - new_max);
    let block_sum = vmath::exp_scaled_sum(level, live, scale, new_max);
    *sum = *sum * alpha + block_sum;
    *max = new_max;
    alpha
}
