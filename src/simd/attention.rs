//! Flash-style attention on the CPU: for each (sample, head), query blocks
//! of `QB` rows sweep key blocks of `KB` (all keys at once up to
//! `WHOLE_ROW`); `Q·Kᵀ` and `P·V` run on the
//! gemm micro-kernel (K and V packed once per head into B panels; Q read
//! in place from `qkv` and P from the score block, as strided A operands),
//! with the online softmax in between: a running max and sum per row, the
//! partial output rescaled when the max grows. Nothing of size `[T,T]` is
//! stored: a block needs QB·KB floats (QB·T up to WHOLE_ROW).
//!
//! A bf16 `qkv` may run both products on AMX tiles instead (exact bf16
//! products, f32 sums; query blocks of two 32-row tiles): Q·Kᵀ from `qkv`
//! read in place as bf16 pairs (K packed once per head, Q into tiles per
//! panel); P·V with each probability split into bf16 hi + lo (within
//! 2⁻¹⁷ of it), a pair the tiles multiply by its value paired with itself
//! (hi·v + lo·v). One bf16 rounding of the probabilities instead errs by
//! up to 2⁻⁹ of Σ p·|v| / Σ p, which for an output that cancels towards
//! zero fails the bf16 attention's tolerance (2⁻⁸ of the value plus 1e-5
//! of the largest; measured: `attention_bf16_every_route` fails without
//! the lo part). The softmax stays f32 on every route.

use super::gemm::{ARef, Kernel, Panels, kernel};
use super::{Bf16, Simd, gemm_bf16, vmath};
use half::bf16;
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
    /// The slice itself where it is bf16 (the products can then run on
    /// AMX tiles).
    fn as_bf16(s: &[Self]) -> Option<&[bf16]>;
    /// `dst = src` in f32 (exact).
    fn widen(level: Simd, src: &[Self], dst: &mut [f32]);
    /// `dst = src · k` rounded to this type (to nearest even); `src` may
    /// be overwritten.
    fn narrow_scaled(level: Simd, src: &mut [f32], k: f32, dst: &mut [Self]);
}

impl FloatStorage for f32 {
    fn as_f32(s: &[Self]) -> Option<&[f32]> {
        Some(s)
    }
    fn as_bf16(_: &[Self]) -> Option<&[bf16]> {
        None
    }
    fn widen(_: Simd, src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src)
    }
    fn narrow_scaled(_: Simd, src: &mut [f32], k: f32, dst: &mut [Self]) {
        // One pass: the scaled row goes straight to the output.
        dst.iter_mut()
            .zip(src.iter())
            .for_each(|(y, &x)| *y = x * k);
    }
}

/// Through vmath's loops, which vectorise: `half`'s scalar conversions
/// were about a third of the bf16 attention at 50 tokens.
impl FloatStorage for bf16 {
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    fn as_bf16(s: &[Self]) -> Option<&[bf16]> {
        Some(s)
    }
    fn widen(level: Simd, src: &[Self], dst: &mut [f32]) {
        vmath::from_bf16(level, src, dst)
    }
    fn narrow_scaled(level: Simd, src: &mut [f32], k: f32, dst: &mut [Self]) {
        src.iter_mut().for_each(|x| *x *= k);
        vmath::to_bf16(level, src, dst)
    }
}

/// `out = softmax(Q·Kᵀ/√d)·V` per (sample, head) of the fused `qkv`
/// (layout as `crate::ops::attention`). A bf16 `qkv` at the AVX-512 level
/// runs its products on AMX tiles where the bf16 gemm does
/// ([`attention_on`]).
pub fn attention<T: FloatStorage>(level: Simd, qkv: &[T], out: &mut [T], s: AttentionShape) {
    let amx = level == Simd::Avx512 && super::active_bf16() == Bf16::Amx;
    let route = if amx { Bf16::Amx } else { Bf16::Widen };
    attention_on(level, route, qkv, out, s)
}

/// [`attention`] with Q·Kᵀ and P·V on the bf16 route `route`: AMX tiles
/// (bf16 products, f32 sums, P split into hi + lo; the softmax stays f32)
/// when `route` is AMX and the CPU has it, `qkv` is bf16 on 4 bytes and
/// the head dim a multiple of 32; otherwise the f32 kernels of `level` on
/// the widened values.
pub fn attention_on<T: FloatStorage>(
    level: Simd,
    route: Bf16,
    qkv: &[T],
    out: &mut [T],
    s: AttentionShape,
) {
    let (t, w) = (s.tokens, s.width());
    assert!(qkv.len() >= s.batch * t * 3 * w && out.len() >= s.batch * t * w);
    if t == 0 || s.head_dim == 0 {
        return;
    }
    let op = OutPtr(out.as_mut_ptr());
    // A bf16 qkv read as pairs of reduction steps, in place (where it is
    // 4-byte aligned, as every allocation is; else it runs widened).
    let pairs: &[u32] = T::as_bf16(qkv)
        .and_then(|x| bytemuck::try_cast_slice(x).ok())
        .unwrap_or(&[]);
    let tiles = amx_tiles(route, level, !pairs.is_empty(), s.head_dim);
    // Equal query blocks of at most QB rows (no short last block), whole
    // panels of the kernel's rows; on the tiles, whole pairs of tiles.
    let (most, mr) = match tiles {
        Some(amx) => (2 * amx.mr, amx.mr),
        None => (QB, kernel(level).mr),
    };
    let qb = t.div_ceil(t.div_ceil(most)).div_ceil(mr) * mr;
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
        // The tile configuration is thread state: set for this task.
        tiles.inspect(Kernel::set_up);
        for h in hs {
            let head = Head::pack((qkv, pairs), s, b * s.heads + h, (level, tiles), scratch);
            for i0 in (0..t).step_by(qb) {
                // SAFETY: rows i0.. of head (b, h) are this task's alone.
                unsafe { head.query_block(i0, qb.min(t - i0), scratch, op.0) };
            }
            head.give_back(scratch);
        }
        tiles.inspect(Kernel::clean_up);
    });
}

/// The AMX kernel for Q·Kᵀ and P·V, where `route` is AMX, the CPU has
/// it, `qkv` reads as bf16 pairs and the head dim fills whole tiles (32
/// steps). Its tile is as wide as the f32 kernel's, so both share the
/// score block's layout.
fn amx_tiles(route: Bf16, level: Simd, pairs: bool, d: usize) -> Option<Kernel<u32>> {
    let usable = route == Bf16::Amx && super::available_bf16().contains(&Bf16::Amx);
    if !usable || !pairs || !d.is_multiple_of(32) {
        return None;
    }
    gemm_bf16::kernel(Bf16::Amx, d).filter(|k| k.nr == kernel(level).nr)
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
    /// Q·Kᵀ's B operand: NR keys per panel, head_dim deep (f32 route).
    k_panels: Panels<f32>,
    /// Both products on AMX tiles, when they run there.
    tiles: Option<Kernel<u32>>,
    /// `qkv` as bf16 pairs (for the tiles; else empty).
    pairs: &'a [u32],
    /// Q·Kᵀ's B operand on AMX: NR keys per panel, head_dim/2 bf16 pairs
    /// deep.
    k_pairs: Panels<u32>,
    /// P·V's B operand: NR output dims per panel, `tp` keys deep (P·V
    /// reads the live keys only, so the padding keys are never read).
    v_panels: Panels<f32>,
    /// P·V's B operand on AMX: NR output dims per panel, `tp` keys deep,
    /// each value paired with itself (padding keys and dims zero).
    v_pairs: Panels<u32>,
}

/// A query block's working memory, reused across blocks.
#[derive(Default)]
struct Scratch {
    /// The block's output rows (64-byte aligned for the AMX tiles).
    o: Panels<f32>,
    row_max: Vec<f32>,
    row_sum: Vec<f32>,
    /// On 64 bytes, where AMX stores its C tiles.
    scores: Panels<f32>,
    /// A packed copy of a partial panel of rows.
    tail: Panels<f32>,
    /// The query block widened to f32 (when `qkv` is not f32).
    q: Vec<f32>,
    /// A head's keys widened to f32 (when `qkv` is not f32), to be packed.
    keys: Vec<f32>,
    /// The last head's panels, kept for their memory.
    k_panels: Panels<f32>,
    v_panels: Panels<f32>,
    k_pairs: Panels<u32>,
    /// A query panel packed in AMX tiles.
    q_tiles: Panels<u32>,
    v_pairs: Panels<u32>,
    /// A panel of probabilities split into bf16 (hi, lo) pairs, in AMX
    /// tiles.
    p_split: Panels<u32>,
}

impl<'a, T: FloatStorage> Head<'a, T> {
    fn pack(
        (qkv, pairs): (&'a [T], &'a [u32]),
        s: AttentionShape,
        bh: usize,
        (level, tiles): (Simd, Option<Kernel<u32>>),
        sc: &mut Scratch,
    ) -> Head<'a, T> {
        let kern = kernel(level);
        let (t, d, w) = (s.tokens, s.head_dim, s.width());
        let (b, h) = (bh / s.heads, bh % s.heads);
        let nr = kern.nr;
        let (dp, tp) = (d.div_ceil(nr) * nr, t.div_ceil(nr) * nr);
        let row = |which: usize, j: usize| &qkv[(b * t + j) * 3 * w + which * w + h * d..][..d];
        let mut k_panels = std::mem::take(&mut sc.k_panels);
        let mut k_pairs = std::mem::take(&mut sc.k_pairs);
        if let Some(amx) = tiles {
            // K's rows, 3W apart in `qkv`, read in place as rows of pairs
            // (W and d are even on the tiles).
            let first = (b * t * 3 * w + w + h * d) / 2;
            amx.pack_b(&pairs[first..], 3 * w / 2, 0..t, 0..d / 2, &mut k_pairs);
        } else if let Some(f) = T::as_f32(qkv) {
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
        let mut v_pairs = std::mem::take(&mut sc.v_pairs);
        match (tiles, T::as_bf16(qkv)) {
            (Some(_), Some(x)) => {
                let v = |j: usize| &x[(b * t + j) * 3 * w + 2 * w + h * d..][..d];
                pack_value_pairs(v, (t, d, tp, nr), &mut v_pairs);
            }
            _ => pack_values(level, |j| row(2, j), (t, d, tp, nr), &mut v_panels),
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
            tiles,
            pairs,
            k_pairs,
            v_panels,
            v_pairs,
        }
    }

    /// Returns the panels' memory to the scratch for the next head.
    fn give_back(self, sc: &mut Scratch) {
        sc.k_panels = self.k_panels;
        sc.k_pairs = self.k_pairs;
        sc.v_panels = self.v_panels;
        sc.v_pairs = self.v_pairs;
    }

    /// Asks for the output lines of query rows `i0..i0+qn`: they are
    /// written last, and each line missed then (a read for ownership from
    /// memory) stalled the copy, a tenth of the f32 attention at 197
    /// tokens.
    fn prefetch_output(&self, i0: usize, qn: usize, out: *mut T) {
        let (t, d, w) = (self.s.tokens, self.s.head_dim, self.s.width());
        for r in 0..qn {
            let at = (self.b * t + i0 + r) * w + self.h * d;
            for line in (0..d).step_by(64 / std::mem::size_of::<T>()) {
                // `wrapping_add`: a prefetch may name any address.
                super::prefetch(out.wrapping_add(at + line) as *const f32);
            }
        }
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
        sc.row_max.clear();
        sc.row_max.resize(qn, f32::NEG_INFINITY);
        sc.row_sum.clear();
        sc.row_sum.resize(qn, 0.0);
        let kb = self.kb;
        self.prefetch_output(i0, qn, out);
        // Score rows for whole panels of the f32 kernel and of the tiles.
        let tile_rows = self.tiles.map_or(mr, |k| k.mr);
        let rows = (qn.div_ceil(mr) * mr).max(qn.div_ceil(tile_rows) * tile_rows);
        sc.scores.prepare(rows * kb, false);
        // The first key block writes every element of `o` (P·V without
        // accumulation), so it is not cleared.
        sc.o.prepare(rows * self.dp, false);
        let q_row = |i: usize| (self.b * t + i0 + i) * 3 * w + self.h * d;
        let q = match (self.tiles, T::as_f32(self.qkv)) {
            // Pairs in place for the tiles (q_row(0) is even there).
            (Some(amx), _) => Queries::Pairs {
                first: q_row(0) / 2,
                stride: 3 * w / 2,
                amx,
            },
            // In place where qkv is f32, else this block's rows widened.
            (None, Some(q)) => Queries::F32 {
                src: q,
                first: q_row(0),
                stride: 3 * w,
            },
            (None, None) => {
                sc.q.resize(qn * d, 0.0);
                for (i, dst) in sc.q.chunks_exact_mut(d).enumerate() {
                    T::widen(self.level, &self.qkv[q_row(i)..][..d], dst);
                }
                Queries::F32 {
                    src: &sc.q[..qn * d],
                    first: 0,
                    stride: d,
                }
            }
        };
        for j0 in (0..key_end).step_by(kb) {
            // Keys of this block: `live` real ones, padded to `kbp` for
            // Q·Kᵀ's panels. P·V reduces over the live ones only.
            let live = kb.min(key_end - j0);
            let kbp = live.div_ceil(nr) * nr;
            let first = j0 == 0;
            let work = (&mut sc.tail, &mut sc.q_tiles, &mut sc.scores);
            // SAFETY: `scores` holds `rows` rows of kb.
            unsafe { self.scores(&q, qn, j0..j0 + live, work) };
            for r in 0..qn {
                let seen = self.s.keys_for(i0 + r).saturating_sub(j0).min(kbp);
                let row = &mut sc.scores.as_mut_slice()[r * kb..][..kbp];
                let (mx, sm) = (&mut sc.row_max[r], &mut sc.row_sum[r]);
                let alpha = online_softmax(self.level, row, seen, scale, mx, sm);
                if alpha != 1.0 && !first {
                    sc.o.as_mut_slice()[r * self.dp..][..self.dp]
                        .iter_mut()
                        .for_each(|x| *x *= alpha);
                }
            }
            if let Some(amx) = self.tiles {
                let work = (&sc.scores, &mut sc.p_split, &mut sc.o);
                // SAFETY: `o` and `scores` hold `rows` rows.
                unsafe { self.values_on_tiles(amx, qn, (j0, kbp), first, work) };
                continue;
            }
            for ip in (0..qn).step_by(mr) {
                let a = rows_of(
                    self.kern,
                    sc.scores.as_slice(),
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
                        let dst = sc.o.as_mut_slice().as_mut_ptr().add(ip * self.dp + c * nr);
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
            let row = &mut sc.o.as_mut_slice()[r * self.dp..][..d];
            T::narrow_scaled(self.level, row, inv, dst);
        }
    }
}

/// A head's values `v(j)` (t rows of d) widened into P·V's B panels for
/// the f32 kernel: `nr` dims per panel, `tp` keys deep. Every live key's
/// row is overwritten. Padding keys are never read (P·V runs over the live
/// keys only) and padding columns give output dims past d, which are
/// dropped: neither needs zeros.
fn pack_values<'v, T: FloatStorage>(
    level: Simd,
    v: impl Fn(usize) -> &'v [T],
    (t, d, tp, nr): (usize, usize, usize, usize),
    out: &mut Panels<f32>,
) {
    let panels = out.prepare(d.div_ceil(nr) * nr * tp, false);
    for (c, panel) in panels.chunks_exact_mut(tp * nr).enumerate() {
        let cols = nr.min(d - c * nr);
        for j in 0..t {
            T::widen(level, &v(j)[c * nr..][..cols], &mut panel[j * nr..][..cols]);
        }
    }
}

/// A head's values `v(j)` (t rows of d) as P·V's B panels on the AMX
/// tiles: `nr` dims per panel, `tp` keys deep, each value paired with
/// itself in a u32 (it multiplies a probability's hi and lo parts).
fn pack_value_pairs<'v>(
    v: impl Fn(usize) -> &'v [bf16],
    (t, d, tp, nr): (usize, usize, usize, usize),
    out: &mut Panels<u32>,
) {
    let panels = d.div_ceil(nr);
    // Padding dims and keys must be zeros: every value when a panel has
    // padding dims, else only the keys past t of each panel.
    let out = out.prepare(panels * nr * tp, !d.is_multiple_of(nr));
    for panel in out.chunks_exact_mut(tp * nr) {
        panel[t * nr..].fill(0);
    }
    for j in 0..t {
        for (c, piece) in v(j).chunks(nr).enumerate() {
            let dst = &mut out[(c * tp + j) * nr..][..piece.len()];
            for (o, x) in dst.iter_mut().zip(piece) {
                *o = x.to_bits() as u32 * 0x1_0001;
            }
        }
    }
}

/// Where a query block's rows are read from for Q·Kᵀ.
enum Queries<'q> {
    /// f32 rows from `first`, `stride` apart.
    F32 {
        src: &'q [f32],
        first: usize,
        stride: usize,
    },
    /// Rows of bf16 pairs of `qkv` from pair `first`, `stride` apart, for
    /// the AMX tile kernel `amx`.
    Pairs {
        first: usize,
        stride: usize,
        amx: Kernel<u32>,
    },
}

impl<T: FloatStorage> Head<'_, T> {
    /// `o` (+)= P·V for the `qn` rows of probabilities in `scores` and keys
    /// `j0..j0 + kbp` on the AMX tiles: each probability split into bf16
    /// hi + lo (within 2⁻¹⁷ of it) and paired with its value twice
    /// (hi·v + lo·v, f32 sums), so the result keeps f32's accuracy where
    /// one bf16 rounding would not.
    ///
    /// # Safety
    /// `scores` and `o` hold every row of the tiles of `qn` rows; `kbp` is
    /// a multiple of the tiles' depth (16 pairs).
    unsafe fn values_on_tiles(
        &self,
        amx: Kernel<u32>,
        qn: usize,
        (j0, kbp): (usize, usize),
        first: bool,
        (scores, p_split, o): (&Panels<f32>, &mut Panels<u32>, &mut Panels<f32>),
    ) {
        let (kb, dp, nr, mr) = (self.kb, self.dp, self.kern.nr, amx.mr);
        // A tile row holds 16 pairs; tiles of mr rows follow each other.
        const PAIRS: usize = 16;
        for ip in (0..qn).step_by(mr) {
            let rows = mr.min(qn - ip);
            let split = p_split.prepare(mr * kbp, false);
            // Rows past the live ones must read as zeros.
            for tile in (0..kbp / PAIRS).map(|q| q * mr * PAIRS) {
                split[tile + rows * PAIRS..tile + mr * PAIRS].fill(0);
            }
            for i in 0..rows {
                let p = &scores.as_slice()[(ip + i) * kb..][..kbp];
                vmath::split_bf16_hi_lo(self.level, p, &mut split[i * PAIRS..], mr * PAIRS);
            }
            let a = ARef {
                ptr: split.as_ptr(),
                rs: PAIRS,
                cs: mr,
            };
            for c in 0..dp / nr {
                let b = &self.v_pairs.as_slice()[(c * self.tp + j0) * nr..][..kbp * nr];
                // SAFETY: whole mr×nr tiles inside `o` (row stride dp);
                // the first key block writes them, later ones add.
                unsafe {
                    let dst = o.as_mut_slice().as_mut_ptr().add(ip * dp + c * nr);
                    amx.call(kbp, a, b.as_ptr(), dst, dp, !first);
                }
            }
        }
    }

    /// The raw scores of `qn` query rows against keys `keys` (a key
    /// block) into `scores` (row stride kb), whole panels of NR keys: on
    /// the f32 kernel (a last panel of few keys as a half tile) or on the
    /// AMX tiles.
    ///
    /// # Safety
    /// `scores` holds every row of the panels of `qn` rows, kb floats each.
    unsafe fn scores(
        &self,
        q: &Queries,
        qn: usize,
        keys: std::ops::Range<usize>,
        (tail, q_tiles, scores): (&mut Panels<f32>, &mut Panels<u32>, &mut Panels<f32>),
    ) {
        let (d, kb, nr) = (self.s.head_dim, self.kb, self.kern.nr);
        let (j0, live) = (keys.start, keys.len());
        let panels = live.div_ceil(nr);
        let c = scores.as_mut_slice().as_mut_ptr();
        match *q {
            Queries::Pairs { first, stride, amx } => {
                let kc = d / 2;
                for ip in (0..qn).step_by(amx.mr) {
                    let rows = ip..(ip + amx.mr).min(qn);
                    let a = amx.pack_a(&self.pairs[first..], stride, rows, 0..kc, q_tiles);
                    for jp in 0..panels {
                        let b = &self.k_pairs.as_slice()[(j0 / nr + jp) * kc * nr..][..kc * nr];
                        // SAFETY: whole mr×nr tiles inside `scores` (the
                        // caller's rows, kb ≥ the key panels).
                        unsafe { amx.call(kc, a, b.as_ptr(), c.add(ip * kb + jp * nr), kb, false) };
                    }
                }
            }
            Queries::F32 { src, first, stride } => {
                for ip in (0..qn).step_by(self.kern.mr) {
                    let left = qn - ip;
                    let a = rows_of(self.kern, src, first + ip * stride, left, stride, d, tail);
                    for jp in 0..panels {
                        let b = &self.k_panels.as_slice()[(j0 / nr + jp) * d * nr..][..d * nr];
                        // A last panel of few keys takes a half tile (the
                        // scores past `live` are masked by the softmax).
                        let kern = self.kern.for_cols(live - jp * nr);
                        // SAFETY: full mr×nr tiles inside `scores` (row
                        // stride kb); `a` reads rows of this head's queries.
                        unsafe { kern.call(d, a, b.as_ptr(), c.add(ip * kb + jp * nr), kb, false) };
                    }
                }
            }
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
