//! Packed gemm for `C[m,n] = A[m,k] · B[n,k]ᵀ`, the layout of every linear
//! layer, with one A and several B (the dual-weight and multi-weight gemms):
//! each packed A panel is loaded once for all of them, and an epilogue
//! (bias, the per-row λ mix) runs on each finished tile while it is hot.
//!
//! Blocking follows the GotoBLAS/BLIS scheme, sized for a 32 KiB L1 and a
//! ≥ 512 KiB L2 per core: B is packed into NR-column panels, KC deep, an
//! NC-wide block at a time (≤ 512 KiB, stays in L2); A is read in place,
//! MR rows k apart (MR sequential streams, ≤ 8 KiB per KC slice, stay in
//! L1 while they sweep the B panels), so only a last partial panel of
//! rows is copied. Packing A as well measured slower on the ViT shapes
//! (it was a quarter of the gemm's time at m = 400). The micro-kernel
//! keeps an MR×NR tile of C in registers: 12×32 in 24 zmm registers on
//! AVX-512, 6×16 in 12 ymm on AVX2+FMA, 4×8 in plain Rust. Threads split C
//! into as many column (or row) bands as there are threads, so each B
//! panel is packed once. Packed panels start on 64 bytes ([`Panels`]), and
//! the epilogue runs on whole rows of a finished block.

use super::Simd;
use rayon::prelude::*;

/// Depth of one packed slice of the reduction dimension.
const KC: usize = 256;
/// Rows of A swept over one NC block of B before the next rows.
const MC: usize = 96;
/// Columns of B packed at once.
const NC: usize = 512;
/// Below this many multiply-adds one thread does the whole product.
const PARALLEL_WORK: usize = 1 << 18;

/// `c[i*ldc..][..nr] (+)= Σ_p a[i*rs + p*cs] · b[p*nr..][..nr]` over `kc`
/// steps, for the `mr` rows of a tile; accumulates when `acc`. A packed A
/// panel has strides (1, mr); a row-major one (lda, 1) needs no packing.
/// One step is one `T`: an f32, or for the bf16 kernels a pair of bf16
/// (two reduction steps in one u32, the layout `vdpbf16ps` and AMX read).
pub type MicroKernel<T> = unsafe fn(usize, ARef<T>, *const T, *mut f32, usize, bool);

/// An A operand of the micro-kernel: its first element and its strides
/// between rows and between reduction steps.
pub struct ARef<T = f32> {
    pub ptr: *const T,
    pub rs: usize,
    pub cs: usize,
}

impl<T> Clone for ARef<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for ARef<T> {}

/// A micro-kernel and its register tile.
pub struct Kernel<T = f32> {
    pub mr: usize,
    pub nr: usize,
    run: MicroKernel<T>,
    /// `Some(w)`: the kernel reads A as tiles of `w` steps of its `mr`
    /// rows (AMX tile loads), so every A panel is packed that way,
    /// `[kc/w][mr][w]`; None: A is read in place, step-major packing only
    /// for a last partial panel.
    a_tiles: Option<usize>,
    /// Per-thread set-up before a band and clean-up after it (the AMX
    /// tile configuration, which is thread state).
    enter: Option<fn()>,
    leave: Option<fn()>,
    /// Cache blocking: (KC, MC, NC).
    blocks: (usize, usize, usize),
    /// Packs B panels as [`pack`] does, faster (a vector transpose).
    pack_b: PackFn<T>,
    /// The same product over the first `nr/2` columns of a panel only
    /// (for a last panel of few live columns: the attention's keys).
    half: Option<MicroKernel<T>>,
}

/// [`pack`]'s signature.
pub type PackFn<T> =
    fn(&[T], usize, std::ops::Range<usize>, std::ops::Range<usize>, usize, &mut Panels<T>);

/// Scratch for packed panels that starts on a 64-byte boundary: AMX reads
/// a tile as 16 rows of 64 bytes, and rows that straddle two cache lines
/// made its loads 6.5× slower (a 2-core Xeon: 4 tile loads took 59 ns
/// from L1 misaligned, 9 ns aligned), which left the bf16 gemm at a tenth
/// of the tile unit's peak. Grows, never shrinks.
#[derive(Clone, Debug, Default)]
pub struct Panels<T> {
    buf: Vec<T>,
    at: usize,
    len: usize,
}

impl<T: Copy + Default> Panels<T> {
    /// `len` elements on a 64-byte boundary. They are zero when `zero`;
    /// else they hold whatever was there (for users that write every
    /// element they read): zeroing on every change of length was a
    /// twentieth of the bf16 attention, whose query blocks alternate
    /// between two lengths.
    pub fn prepare(&mut self, len: usize, zero: bool) -> &mut [T] {
        let slack = 64 / size_of::<T>().max(1);
        if self.buf.len() < len + slack {
            self.buf.resize(len + slack, T::default());
        }
        let at = self.buf.as_ptr().align_offset(64);
        assert!(
            at < slack,
            "cannot align panels of {}",
            std::any::type_name::<T>()
        );
        (self.at, self.len) = (at, len);
        let out = &mut self.buf[at..at + len];
        if zero {
            out.fill(T::default());
        }
        out
    }

    /// The panels as last prepared.
    pub fn as_slice(&self) -> &[T] {
        &self.buf[self.at..self.at + self.len]
    }

    /// The panels as last prepared, writable.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.buf[self.at..self.at + self.len]
    }
}

impl<T> Clone for Kernel<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Kernel<T> {}

/// The largest register tile `Block::tile` stages in its scratch.
const MAX_TILE: usize = 32 * 32;

impl<T: Copy + Default> Kernel<T> {
    /// A kernel with an `mr`×`nr` tile (at most 32×32) and no set-up.
    pub fn new(mr: usize, nr: usize, run: MicroKernel<T>) -> Self {
        assert!(mr * nr <= MAX_TILE, "register tile {mr}x{nr} too large");
        Kernel {
            mr,
            nr,
            run,
            a_tiles: None,
            enter: None,
            leave: None,
            blocks: (KC, MC, NC),
            pack_b: pack::<T>,
            half: None,
        }
    }

    /// The same kernel, with `half` for panels of at most `nr/2` live
    /// columns ([`Kernel::for_cols`]).
    pub fn with_half(self, half: MicroKernel<T>) -> Self {
        Kernel {
            half: Some(half),
            ..self
        }
    }

    /// The same kernel, packing B with `pack_b` (same layout as [`pack`]).
    pub fn with_pack_b(self, pack_b: PackFn<T>) -> Self {
        Kernel { pack_b, ..self }
    }

    /// The same kernel, reading A packed in tiles `w` steps wide and
    /// running `enter`/`leave` around each thread's band.
    pub fn with_tiles(self, w: usize, enter: fn(), leave: fn()) -> Self {
        Kernel {
            a_tiles: Some(w),
            enter: Some(enter),
            leave: Some(leave),
            // The tiles keep C across the whole depth of ViT-B's k = 768
            // (384 pairs): one slice, no C reloads. Measured on a 2-core
            // Xeon with AMX at 400x3072x768: 0.83 TFLOP/s against 0.68 with
            // the f32 blocks and 0.63 with 128-pair slices.
            blocks: (512, 2 * MC, 512),
            ..self
        }
    }

    /// `c` (+)= the product of an `mr`-row A operand and an `nr`-column
    /// packed B panel, both `kc` deep.
    ///
    /// # Safety
    /// `a` addresses mr×kc floats by its strides, `b` holds kc·nr, `c` an
    /// mr×nr tile with row stride `ldc`; the kernel's level is one the CPU
    /// has.
    pub unsafe fn call(
        &self,
        kc: usize,
        a: ARef<T>,
        b: *const T,
        c: *mut f32,
        ldc: usize,
        acc: bool,
    ) {
        // SAFETY: forwarded to the caller.
        unsafe { (self.run)(kc, a, b, c, ldc, acc) }
    }

    /// This kernel where only the first `cols` columns of each tile are
    /// wanted: its half-width form when `cols ≤ nr/2` and it has one
    /// (which leaves the tile's other columns unwritten), else itself.
    pub fn for_cols(&self, cols: usize) -> Self {
        match self.half {
            Some(half) if cols <= self.nr / 2 => Kernel { run: half, ..*self },
            _ => *self,
        }
    }

    /// Packs rows `rows` (`ld` apart) of `src`, steps `ks`, into B panels
    /// of NR rows, as [`pack`] lays them out.
    pub fn pack_b(
        &self,
        src: &[T],
        ld: usize,
        rows: std::ops::Range<usize>,
        ks: std::ops::Range<usize>,
        out: &mut Panels<T>,
    ) {
        (self.pack_b)(src, ld, rows, ks, self.nr, out)
    }

    /// Runs the kernel's per-thread set-up (the AMX tile configuration),
    /// if it has one: before the first [`Kernel::call`] on a thread.
    pub fn set_up(&self) {
        if let Some(enter) = self.enter {
            enter();
        }
    }

    /// Undoes [`Kernel::set_up`] after a thread's last call.
    pub fn clean_up(&self) {
        if let Some(leave) = self.leave {
            leave();
        }
    }

    /// Rows `rows` (a last partial panel zero-padded to a whole one),
    /// steps `ks` of a row-major [.., k] `a`, packed in the layout this
    /// kernel reads: tiles for the tile kernels, else step-major.
    pub fn pack_a(
        &self,
        a: &[T],
        k: usize,
        rows: std::ops::Range<usize>,
        ks: std::ops::Range<usize>,
        pa: &mut Panels<T>,
    ) -> ARef<T> {
        let mr = self.mr;
        let Some(w) = self.a_tiles else {
            pack(a, k, rows, ks, mr, pa);
            return self.packed(pa);
        };
        let kc = ks.len();
        debug_assert!(kc.is_multiple_of(w));
        // Rows past the live ones must read as zeros.
        let pa = pa.prepare(mr * kc, rows.len() < mr);
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            unsafe { x86::copy_tiles(a, k, rows, ks, (mr, w), pa) };
            return self.tiled(pa, w);
        }
        copy_tiles(a, k, rows, ks, (mr, w), pa);
        self.tiled(pa, w)
    }

    /// An A panel packed in tiles of `w` steps ([`Kernel::with_tiles`]):
    /// row i, step p at (p / w)·mr·w + i·w + p % w, so a tile's rows are
    /// w apart and a tile starts every w steps at p·mr.
    fn tiled(&self, pa: &[T], w: usize) -> ARef<T> {
        ARef {
            ptr: pa.as_ptr(),
            rs: w,
            cs: self.mr,
        }
    }

    /// A packed A panel (as [`pack`] lays it out).
    pub fn packed(&self, panel: &Panels<T>) -> ARef<T> {
        ARef {
            ptr: panel.as_slice().as_ptr(),
            rs: 1,
            cs: self.mr,
        }
    }
}

/// Rows of the AVX-512 f32 register tile.
const AVX512_MR: usize = 12;

/// The micro-kernel of `level`.
pub fn kernel(level: Simd) -> Kernel {
    match level {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => Kernel::new(AVX512_MR, 32, x86::avx512::<AVX512_MR, 2>)
            .with_pack_b(pack_transposed)
            .with_half(x86::avx512::<AVX512_MR, 1>),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => Kernel::new(6, 16, x86::avx2),
        _ => Kernel::new(4, 8, portable),
    }
}

/// A shared raw pointer to an output; tasks write disjoint tiles of it.
#[derive(Clone, Copy)]
pub struct OutPtr(pub *mut f32);
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Called once per finished row segment: (row, first column, the row
/// segment of every output). Output 0 is the result the op returns.
pub type Epilogue<'a> = dyn Fn(usize, usize, &mut [&mut [f32]]) + Sync + 'a;

/// `outs[t] = a · bs[t]ᵀ` for every t, then `epilogue` on each finished
/// row segment. `a` is `[m,k]`, each `bs[t]` `[n,k]`, each `outs[t]` points to
/// m·n writable floats that nothing else touches during the call.
///
/// # Safety
/// Each `outs[t]` must be valid for m·n writes and not alias `a`, any `bs`
/// or another output.
pub unsafe fn multi(
    level: Simd,
    a: &[f32],
    bs: &[&[f32]],
    outs: &[OutPtr],
    shape: (usize, usize, usize),
    epilogue: &Epilogue,
) {
    // SAFETY: forwarded to the caller.
    unsafe { multi_with(kernel(level), a, bs, outs, shape, epilogue) }
}

/// [`multi`] with a given micro-kernel and element type; `k` counts
/// elements of `T` (bf16 pairs for the bf16 kernels).
///
/// # Safety
/// As [`multi`]; the kernel's instructions are ones the CPU has.
pub unsafe fn multi_with<T: Copy + Default + Sync>(
    kern: Kernel<T>,
    a: &[T],
    bs: &[&[T]],
    outs: &[OutPtr],
    (m, n, k): (usize, usize, usize),
    epilogue: &Epilogue,
) {
    assert!(a.len() >= m * k && bs.iter().all(|b| b.len() >= n * k));
    assert_eq!(bs.len(), outs.len());
    if m == 0 || n == 0 {
        return;
    }
    let threads = if m * n * k < PARALLEL_WORK {
        1
    } else {
        rayon::current_num_threads().max(1)
    };
    let bands = split(m, n, threads, kern);
    let job = |(rows, cols): &(std::ops::Range<usize>, std::ops::Range<usize>)| {
        let block = Block {
            a,
            bs,
            outs,
            n,
            k,
            kern,
            epilogue,
        };
        block.run(rows.clone(), cols.clone())
    };
    if bands.len() == 1 {
        job(&bands[0]);
    } else {
        bands.par_iter().for_each(job);
    }
}

/// C split into `threads` bands: by columns when there are enough of them
/// (each thread then packs only its own B), else by rows.
fn split<T>(
    m: usize,
    n: usize,
    threads: usize,
    kern: Kernel<T>,
) -> Vec<(std::ops::Range<usize>, std::ops::Range<usize>)> {
    if threads == 1 {
        return vec![(0..m, 0..n)];
    }
    let by_cols = n >= threads * kern.nr * 4 || m < threads * kern.mr * 2;
    let (len, unit) = if by_cols { (n, kern.nr) } else { (m, kern.mr) };
    let per = len.div_ceil(threads).div_ceil(unit) * unit;
    (0..len)
        .step_by(per.max(1))
        .map(|s| s..(s + per).min(len))
        .map(|r| if by_cols { (0..m, r) } else { (r, 0..n) })
        .collect()
}

/// One thread's band of C and what it needs.
struct Block<'a, T> {
    a: &'a [T],
    bs: &'a [&'a [T]],
    outs: &'a [OutPtr],
    n: usize,
    k: usize,
    kern: Kernel<T>,
    epilogue: &'a Epilogue<'a>,
}

impl<T: Copy + Default> Block<'_, T> {
    fn run(&self, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) {
        self.kern.set_up();
        self.sweep(rows, cols);
        self.kern.clean_up();
    }

    fn sweep(&self, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) {
        let Kernel { mr, nr, .. } = self.kern;
        let (kcb, mcb, ncb) = self.kern.blocks;
        let mut pa = Panels::default();
        let mut pb: Vec<Panels<T>> = vec![Panels::default(); self.bs.len()];
        for j0 in cols.clone().step_by(ncb) {
            let jn = ncb.min(cols.end - j0);
            for p0 in (0..self.k).step_by(kcb) {
                let kc = kcb.min(self.k - p0);
                let last = p0 + kc == self.k;
                for (b, out) in self.bs.iter().zip(pb.iter_mut()) {
                    (self.kern.pack_b)(b, self.k, j0..j0 + jn, p0..p0 + kc, nr, out);
                }
                for i0 in rows.clone().step_by(mcb) {
                    let im = mcb.min(rows.end - i0);
                    for ip in 0..im.div_ceil(mr) {
                        let (r0, live) = (i0 + ip * mr, mr.min(im - ip * mr));
                        // A is read in place (MR rows, k apart: MR streams the
                        // prefetchers follow); only a last partial panel is
                        // packed, so no row past m is touched. Tile kernels
                        // get every panel packed, contiguous per tile.
                        let a = if live == mr && self.kern.a_tiles.is_none() {
                            ARef {
                                ptr: self.a[r0 * self.k + p0..].as_ptr(),
                                rs: self.k,
                                cs: 1,
                            }
                        } else {
                            self.kern
                                .pack_a(self.a, self.k, r0..r0 + live, p0..p0 + kc, &mut pa)
                        };
                        for jp in 0..jn.div_ceil(nr) {
                            let tile = Tile {
                                i: r0,
                                j: j0 + jp * nr,
                                rows: live,
                                cols: nr.min(jn - jp * nr),
                            };
                            self.tile(tile, kc, p0 > 0, a, &pb, jp);
                        }
                        if last {
                            // The panel's rows across the whole block, still
                            // in cache: epilogues on NR-wide pieces ran their
                            // vector loops' scalar remainders (quick_gelu
                            // and the bf16 rounding were a fifth of a bf16
                            // forward).
                            self.finish(Tile {
                                i: r0,
                                j: j0,
                                rows: live,
                                cols: jn,
                            });
                        }
                    }
                }
            }
        }
    }

    /// One register tile of every output for one KC slice.
    fn tile(&self, t: Tile, kc: usize, acc: bool, a: ARef<T>, pb: &[Panels<T>], jp: usize) {
        let Kernel { mr, nr, run, .. } = self.kern;
        for (out, b) in self.outs.iter().zip(pb) {
            let b_panel = &b.as_slice()[jp * kc * nr..][..kc * nr];
            // SAFETY: the tile lies inside this band of the output (rows and
            // columns checked by the loops above); panels hold kc·mr and
            // kc·nr floats.
            unsafe {
                let c = out.0.add(t.i * self.n + t.j);
                if t.rows == mr && t.cols == nr {
                    run(kc, a, b_panel.as_ptr(), c, self.n, acc);
                    continue;
                }
                // Only edge tiles: zeroing 4 KB for every tile was 5 % of
                // the AMX gemm at 1576x3072x768.
                let mut scratch = [0f32; MAX_TILE];
                run(kc, a, b_panel.as_ptr(), scratch.as_mut_ptr(), nr, false);
                for r in 0..t.rows {
                    let dst = std::slice::from_raw_parts_mut(c.add(r * self.n), t.cols);
                    let src = &scratch[r * nr..][..t.cols];
                    if acc {
                        dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                    } else {
                        dst.copy_from_slice(src);
                    }
                }
            }
        }
    }

    /// Runs the epilogue on each row of a finished block of tiles.
    fn finish(&self, t: Tile) {
        let mut segs: Vec<&mut [f32]> = Vec::with_capacity(self.outs.len());
        for r in t.i..t.i + t.rows {
            segs.clear();
            for out in self.outs {
                // SAFETY: as in `tile`; the segments of different outputs
                // are different allocations.
                segs.push(unsafe {
                    std::slice::from_raw_parts_mut(out.0.add(r * self.n + t.j), t.cols)
                });
            }
            (self.epilogue)(r, t.j, &mut segs);
        }
    }
}

#[derive(Clone, Copy)]
struct Tile {
    i: usize,
    j: usize,
    rows: usize,
    cols: usize,
}

/// Rows `rows` × columns `ks` of a row-major [.., k] matrix, packed as
/// panels of `w` rows, each stored k-major (`w` values per step), the last
/// panel padded with zeros.
pub fn pack<T: Copy + Default>(
    src: &[T],
    k: usize,
    rows: std::ops::Range<usize>,
    ks: std::ops::Range<usize>,
    w: usize,
    out: &mut Panels<T>,
) {
    let (rn, kc) = (rows.len(), ks.len());
    let panels = rn.div_ceil(w);
    let out = out.prepare(panels * kc * w, true);
    for (q, panel) in out.chunks_exact_mut(kc * w).enumerate() {
        let live = w.min(rn - q * w);
        let first = (rows.start + q * w) * k + ks.start;
        // Eight steps of every row at a time: each row is read 32 bytes at
        // once and the writes stay within 8·w floats (measured ~25 % faster
        // than one row at a time for w = 32).
        let blocked = kc / 8 * 8;
        for p0 in (0..blocked).step_by(8) {
            for jj in 0..live {
                let src8 = &src[first + jj * k + p0..][..8];
                for (t, &x) in src8.iter().enumerate() {
                    panel[(p0 + t) * w + jj] = x;
                }
            }
        }
        for jj in 0..live {
            for p in blocked..kc {
                panel[p * w + jj] = src[first + jj * k + p];
            }
        }
    }
}

/// [`pack`] for 4-byte elements (f32, or bf16 pairs as u32), transposing
/// 16×16 blocks in zmm registers where the CPU has AVX-512F: the scalar
/// scatter was a seventh of an f32 forward and an eighth of the AMX gemm.
/// Elsewhere, and for panels narrower than 16, it is [`pack`].
pub fn pack_transposed<T: Copy + Default>(
    src: &[T],
    k: usize,
    rows: std::ops::Range<usize>,
    ks: std::ops::Range<usize>,
    w: usize,
    out: &mut Panels<T>,
) {
    const { assert!(size_of::<T>() == 4) };
    #[cfg(target_arch = "x86_64")]
    if w.is_multiple_of(16)
        && !rows.is_empty()
        && !ks.is_empty()
        && std::arch::is_x86_feature_detected!("avx512f")
    {
        // SAFETY: AVX-512F was just detected.
        return unsafe { x86::pack_transposed(src, k, rows, ks, w, out) };
    }
    pack(src, k, rows, ks, w, out)
}

/// The portable 4×8 micro-kernel (auto-vectorised by the compiler).
///
/// # Safety
/// `a` addresses 4×kc floats, `b` holds kc·8, `c` a 4×8 tile with row
/// stride `ldc`.
unsafe fn portable(kc: usize, a: ARef, b: *const f32, c: *mut f32, ldc: usize, acc: bool) {
    let mut t = [[0f32; 8]; 4];
    // SAFETY: sizes as documented.
    let b = unsafe { std::slice::from_raw_parts(b, kc * 8) };
    for (p, bp) in b.chunks_exact(8).enumerate() {
        // SAFETY: row i, step p of the A operand.
        let ap = std::array::from_fn::<f32, 4, _>(|i| unsafe { *a.ptr.add(i * a.rs + p * a.cs) });
        for (row, &x) in t.iter_mut().zip(&ap) {
            for (v, &y) in row.iter_mut().zip(bp) {
                // Not `mul_add`: without FMA in the build target that is a
                // call to a software fma.
                *v += x * y;
            }
        }
    }
    for (i, row) in t.iter().enumerate() {
        // SAFETY: row i of the tile.
        let dst = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), 8) };
        for (d, v) in dst.iter_mut().zip(row) {
            *d = if acc { *d + v } else { *v };
        }
    }
}

/// Rows `rows`, steps `ks` of `a` (row-major, `k` steps a row) into an A
/// panel of `mr` rows in tiles of `w` steps: row i's steps qw..qw+w at
/// (q·mr + i)·w. The portable form: the compiler may still make a
/// memmove call of each piece, so AVX-512 CPUs (all that have AMX) take
/// [`x86::copy_tiles`], one move per 64-byte piece.
#[inline(always)]
fn copy_tiles<T: Copy>(
    a: &[T],
    k: usize,
    rows: std::ops::Range<usize>,
    ks: std::ops::Range<usize>,
    (mr, w): (usize, usize),
    pa: &mut [T],
) {
    for (i, r) in rows.enumerate() {
        let src = &a[r * k + ks.start..][..ks.len()];
        for (q, piece) in src.chunks_exact(w).enumerate() {
            let dst = &mut pa[(q * mr + i) * w..][..w];
            dst.iter_mut().zip(piece).for_each(|(d, s)| *d = *s);
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use super::{ARef, Panels};
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// [`super::copy_tiles`] on AVX-512F, a tile row of 64 bytes (AMX's)
    /// in one zmm move: the compiler turns the generic element loop into
    /// a memmove call per row (7 % of the AMX gemm at 1576x3072x768), or,
    /// inlined elsewhere, into 16-byte moves.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn copy_tiles<T: Copy>(
        a: &[T],
        k: usize,
        rows: Range<usize>,
        ks: Range<usize>,
        (mr, w): (usize, usize),
        pa: &mut [T],
    ) {
        if size_of::<T>() * w != 64 {
            return super::copy_tiles(a, k, rows, ks, (mr, w), pa);
        }
        for (i, r) in rows.enumerate() {
            let src = &a[r * k + ks.start..][..ks.len()];
            for (q, piece) in src.chunks_exact(w).enumerate() {
                let dst = &mut pa[(q * mr + i) * w..][..w];
                // SAFETY: both slices are w elements, 64 bytes.
                unsafe {
                    let v = _mm512_loadu_si512(piece.as_ptr().cast());
                    _mm512_storeu_si512(dst.as_mut_ptr().cast(), v);
                }
            }
        }
    }

    /// [`super::pack_transposed`] on AVX-512F: whole 16×16 blocks through
    /// [`transpose16`], the edges (fewer than 16 rows or steps) one by one.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `T` is 4 bytes; `w` is a multiple of 16.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pack_transposed<T: Copy + Default>(
        src: &[T],
        k: usize,
        rows: Range<usize>,
        ks: Range<usize>,
        w: usize,
        out: &mut Panels<T>,
    ) {
        let (rn, kc) = (rows.len(), ks.len());
        assert!(src.len() >= (rows.end - 1) * k + ks.end);
        let need = rn.div_ceil(w) * kc * w;
        // Padding rows must read as zeros; whole panels are overwritten.
        let out = out.prepare(need, !rn.is_multiple_of(w));
        let whole = kc / 16 * 16;
        for (q, panel) in out.chunks_exact_mut(kc * w).enumerate() {
            let live = w.min(rn - q * w);
            for h in (0..live).step_by(16) {
                let first = (rows.start + q * w + h) * k + ks.start;
                let n16 = 16.min(live - h);
                let scalar_from = if n16 == 16 { whole } else { 0 };
                if n16 == 16 {
                    for p0 in (0..whole).step_by(16) {
                        // SAFETY: rows first.. (16 of them, k apart) have
                        // 16 steps from p0 (asserted above); the panel has
                        // 16 steps of w from p0·w + h.
                        unsafe {
                            transpose16(
                                src.as_ptr().add(first + p0).cast(),
                                k,
                                panel.as_mut_ptr().add(p0 * w + h).cast(),
                                w,
                            )
                        };
                    }
                }
                for jj in 0..n16 {
                    for p in scalar_from..kc {
                        panel[p * w + h + jj] = src[first + jj * k + p];
                    }
                }
            }
        }
    }

    /// `d[c·ds + r] = s[r·ss + c]` for a 16×16 block of 4-byte values.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `s` addresses 16 rows of 16 values `ss` apart,
    /// `d` 16 rows of 16 values `ds` apart.
    #[target_feature(enable = "avx512f")]
    unsafe fn transpose16(s: *const u32, ss: usize, d: *mut u32, ds: usize) {
        // SAFETY: loads and stores inside the documented blocks.
        unsafe {
            let r: [__m512i; 16] =
                std::array::from_fn(|i| _mm512_loadu_si512(s.add(i * ss) as *const _));
            // Per 128-bit lane: pairs of rows interleaved by 32, then by 64
            // bits, so u[4g + j] lane L holds column 4L + j of rows 4g..4g+4.
            let t: [__m512i; 16] = std::array::from_fn(|i| {
                let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
                if i % 2 == 0 {
                    _mm512_unpacklo_epi32(a, b)
                } else {
                    _mm512_unpackhi_epi32(a, b)
                }
            });
            let u: [__m512i; 16] = std::array::from_fn(|i| {
                let (g, j) = (i / 4, i % 4);
                let (a, b) = (t[4 * g + j / 2], t[4 * g + 2 + j / 2]);
                if j % 2 == 0 {
                    _mm512_unpacklo_epi64(a, b)
                } else {
                    _mm512_unpackhi_epi64(a, b)
                }
            });
            // Then the lanes: column 4L + j gathers lane L of u[j],
            // u[4 + j], u[8 + j], u[12 + j].
            for j in 0..4 {
                let v0 = _mm512_shuffle_i32x4::<0x88>(u[j], u[4 + j]);
                let v1 = _mm512_shuffle_i32x4::<0xdd>(u[j], u[4 + j]);
                let w0 = _mm512_shuffle_i32x4::<0x88>(u[8 + j], u[12 + j]);
                let w1 = _mm512_shuffle_i32x4::<0xdd>(u[8 + j], u[12 + j]);
                let col = |c: usize| d.add(c * ds) as *mut _;
                _mm512_storeu_si512(col(j), _mm512_shuffle_i32x4::<0x88>(v0, w0));
                _mm512_storeu_si512(col(4 + j), _mm512_shuffle_i32x4::<0x88>(v1, w1));
                _mm512_storeu_si512(col(8 + j), _mm512_shuffle_i32x4::<0xdd>(v0, w0));
                _mm512_storeu_si512(col(12 + j), _mm512_shuffle_i32x4::<0xdd>(v1, w1));
            }
        }
    }

    /// The AVX-512 micro-kernel, `MR`×16V (`V·MR` zmm accumulators, `V`
    /// B loads and `MR` broadcasts of A per step) from a 32-wide B panel:
    /// V = 2 the whole panel, V = 1 its first 16 columns (a half tile).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `a` addresses MR×kc floats, `b` kc·32, `c` an
    /// MR×16V tile with row stride `ldc`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512<const MR: usize, const V: usize>(
        kc: usize,
        a: ARef,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        acc: bool,
    ) {
        // SAFETY: every pointer offset stays inside the documented sizes.
        unsafe {
            let mut r = [[_mm512_setzero_ps(); V]; MR];
            each_step(kc, a, |p, rows: &[*const f32; MR], u| {
                fma_step(&mut r, b.add(p * 32), rows, u)
            });
            store_x16v(&mut r, c, ldc, acc);
        }
    }

    /// Calls `step(p, rows, u)` for each reduction step `p` of an A
    /// operand of MR rows: row i's value at step p is at `rows[i] + u`.
    /// A read in place (cs = 1) goes four steps a pass: the row addresses
    /// (rs apart, known only at run time) are worked out once a pass and
    /// each step reads at a constant offset from them. Worked out every
    /// step they were about a dozen integer ops beside the AVX-512
    /// kernel's 24 FMAs; four steps a pass measured 5–11 % faster on the
    /// whole gemm (warm, 2 threads; two or eight steps a pass were slower
    /// than one).
    ///
    /// # Safety
    /// `a` addresses MR rows of `kc` steps by its strides.
    #[inline(always)]
    unsafe fn each_step<const MR: usize>(
        kc: usize,
        a: ARef,
        mut step: impl FnMut(usize, &[*const f32; MR], usize),
    ) {
        // SAFETY: every row and step lies inside `a` (caller).
        unsafe {
            let passes = if a.cs == 1 { kc / 4 * 4 } else { 0 };
            for p0 in (0..passes).step_by(4) {
                let rows = std::array::from_fn(|i| a.ptr.add(i * a.rs + p0));
                for u in 0..4 {
                    step(p0 + u, &rows, u);
                }
            }
            for p in passes..kc {
                let rows = std::array::from_fn(|i| a.ptr.add(i * a.rs + p * a.cs));
                step(p, &rows, 0);
            }
        }
    }

    /// One reduction step of [`avx512`]: `r[i] += a[i] · b` for the MR
    /// rows, row i's value at `rows[i] + u`, b the step's 16V floats.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `b` holds 16V floats and each `rows[i] + u`
    /// one.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn fma_step<const MR: usize, const V: usize>(
        r: &mut [[__m512; V]; MR],
        b: *const f32,
        rows: &[*const f32; MR],
        u: usize,
    ) {
        // SAFETY: as documented.
        unsafe {
            let bv: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(b.add(16 * v)));
            for (ri, row) in r.iter_mut().zip(rows) {
                let ai = _mm512_set1_ps(*row.add(u));
                for (rv, &bv) in ri.iter_mut().zip(&bv) {
                    *rv = _mm512_fmadd_ps(ai, bv, *rv);
                }
            }
        }
    }

    /// Writes (or, with `acc`, adds) an MR×16V register tile into `c`: the
    /// end of the AVX-512 micro-kernels (f32 and bf16 pairs).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `c` is an MR×16V tile with row stride `ldc`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(in crate::simd) unsafe fn store_x16v<const MR: usize, const V: usize>(
        r: &mut [[__m512; V]; MR],
        c: *mut f32,
        ldc: usize,
        acc: bool,
    ) {
        // SAFETY: the MR rows of 16V floats are inside the documented tile.
        unsafe {
            for (i, ri) in r.iter_mut().enumerate() {
                for (v, rv) in ri.iter_mut().enumerate() {
                    let cv = c.add(i * ldc + 16 * v);
                    if acc {
                        *rv = _mm512_add_ps(*rv, _mm512_loadu_ps(cv));
                    }
                    _mm512_storeu_ps(cv, *rv);
                }
            }
        }
    }

    /// The 6×16 AVX2+FMA micro-kernel: 12 ymm accumulators.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `a` addresses 6×kc floats, `b` kc·16, `c` a
    /// 6×16 tile with row stride `ldc`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2(kc: usize, a: ARef, b: *const f32, c: *mut f32, ldc: usize, acc: bool) {
        const MR: usize = 6;
        // SAFETY: every pointer offset stays inside the documented sizes.
        unsafe {
            let mut r = [[_mm256_setzero_ps(); 2]; MR];
            each_step(kc, a, |p, rows: &[*const f32; MR], u| {
                let b0 = _mm256_loadu_ps(b.add(p * 16));
                let b1 = _mm256_loadu_ps(b.add(p * 16 + 8));
                for (ri, row) in r.iter_mut().zip(rows) {
                    let ai = _mm256_set1_ps(*row.add(u));
                    ri[0] = _mm256_fmadd_ps(ai, b0, ri[0]);
                    ri[1] = _mm256_fmadd_ps(ai, b1, ri[1]);
                }
            });
            for (i, ri) in r.iter_mut().enumerate() {
                let ci = c.add(i * ldc);
                if acc {
                    ri[0] = _mm256_add_ps(ri[0], _mm256_loadu_ps(ci));
                    ri[1] = _mm256_add_ps(ri[1], _mm256_loadu_ps(ci.add(8)));
                }
                _mm256_storeu_ps(ci, ri[0]);
                _mm256_storeu_ps(ci.add(8), ri[1]);
            }
        }
    }
}
