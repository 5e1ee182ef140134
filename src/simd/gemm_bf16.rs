//! The packed gemm of [`super::gemm`] on bf16 operands with f32
//! accumulation. A bf16 matrix with an even `k` is read as a matrix of
//! u32, each holding the pair of reduction steps (2p, 2p+1): row-major A
//! then gives a pair per broadcast, and B packed into NR-wide panels of
//! pairs is exactly the layout `vdpbf16ps` and AMX's `tdpbf16ps` take
//! (VNNI order), so the f32 blocking, threading and epilogues are reused
//! unchanged with a bf16 micro-kernel.

use super::Bf16;
use super::gemm::{Epilogue, Kernel, OutPtr, multi_with};
use half::bf16;
use std::borrow::Cow;

#[cfg(target_arch = "x86_64")]
use super::gemm::pack_transposed;

/// `outs[t] = a · bs[t]ᵀ` in f32 from bf16 `a` `[m,k]` and `bs[t]` `[n,k]`,
/// then `epilogue` on each finished row segment, as
/// [`super::gemm::multi`]. An odd `k` (no pairs) runs widened to f32.
///
/// # Safety
/// As [`super::gemm::multi`]: each `outs[t]` valid for m·n writes, aliasing
/// nothing else; `level` one this CPU has.
pub unsafe fn multi(
    level: Bf16,
    a: &[bf16],
    bs: &[&[bf16]],
    outs: &[OutPtr],
    (m, n, k): (usize, usize, usize),
    epilogue: &Epilogue,
) {
    assert!(a.len() >= m * k && bs.iter().all(|b| b.len() >= n * k));
    let Some(kern) = kernel(level, k) else {
        let wide = |v: &[bf16]| v.iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
        let bw: Vec<Vec<f32>> = bs.iter().map(|b| wide(&b[..n * k])).collect();
        let bw: Vec<&[f32]> = bw.iter().map(|b| &b[..]).collect();
        let f32_level = super::active();
        // SAFETY: forwarded to the caller.
        return unsafe {
            super::gemm::multi(
                f32_level,
                &wide(&a[..m * k]),
                &bw,
                outs,
                (m, n, k),
                epilogue,
            )
        };
    };
    let a = pairs(&a[..m * k]);
    let bp: Vec<Cow<[u32]>> = bs.iter().map(|b| pairs(&b[..n * k])).collect();
    let bp: Vec<&[u32]> = bp.iter().map(|b| &b[..]).collect();
    // SAFETY: forwarded to the caller; the pair views hold m·k/2 and n·k/2.
    unsafe { multi_with(kern, &a, &bp, outs, (m, n, k / 2), epilogue) }
}

/// The micro-kernel for `level` at reduction depth `k`, or None where the
/// product runs widened (no bf16 instructions, or an odd `k`). AMX takes
/// 32 steps per tile, so other depths use `vdpbf16ps`.
pub(super) fn kernel(level: Bf16, k: usize) -> Option<Kernel<u32>> {
    if !k.is_multiple_of(2) {
        return None;
    }
    match level {
        Bf16::Widen => None,
        #[cfg(target_arch = "x86_64")]
        Bf16::Amx if k.is_multiple_of(32) => Some(
            Kernel::new(32, 32, super::amx::kernel)
                .with_tiles(16, super::amx::configure, super::amx::release)
                .with_pack_b(pack_transposed),
        ),
        #[cfg(target_arch = "x86_64")]
        Bf16::Avx512Bf16 | Bf16::Amx => {
            Some(Kernel::new(8, 32, x86::avx512bf16).with_pack_b(pack_transposed))
        }
        #[cfg(not(target_arch = "x86_64"))]
        _ => None,
    }
}

/// A bf16 slice (even length) as u32 pairs: a view where it is 4-byte
/// aligned, else a copy.
fn pairs(v: &[bf16]) -> Cow<'_, [u32]> {
    match bytemuck::try_cast_slice(v) {
        Ok(p) => Cow::Borrowed(p),
        Err(_) => Cow::Owned(
            v.chunks_exact(2)
                .map(|p| p[0].to_bits() as u32 | (p[1].to_bits() as u32) << 16)
                .collect(),
        ),
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::gemm::ARef;
    use std::arch::x86_64::*;

    /// The 8×32 AVX512-BF16 micro-kernel: the f32 AVX-512 kernel's 16 zmm
    /// accumulators, each `vdpbf16ps` adding two reduction steps.
    ///
    /// # Safety
    /// The CPU has AVX512-BF16; `a` addresses 8×kc pairs, `b` kc·32 pairs,
    /// `c` an 8×32 tile with row stride `ldc`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn avx512bf16(
        kc: usize,
        a: ARef<u32>,
        b: *const u32,
        c: *mut f32,
        ldc: usize,
        acc: bool,
    ) {
        const MR: usize = 8;
        let bh = |v: __m512i| -> __m512bh {
            // SAFETY: both are 64 bytes of plain lanes.
            unsafe { std::mem::transmute(v) }
        };
        // SAFETY: every pointer offset stays inside the documented sizes.
        unsafe {
            let mut r = [[_mm512_setzero_ps(); 2]; MR];
            for p in 0..kc {
                let b0 = bh(_mm512_loadu_si512(b.add(p * 32) as *const _));
                let b1 = bh(_mm512_loadu_si512(b.add(p * 32 + 16) as *const _));
                for (i, ri) in r.iter_mut().enumerate() {
                    let ai = bh(_mm512_set1_epi32(
                        a.ptr.add(i * a.rs + p * a.cs).read_unaligned() as i32,
                    ));
                    ri[0] = _mm512_dpbf16_ps(ri[0], ai, b0);
                    ri[1] = _mm512_dpbf16_ps(ri[1], ai, b1);
                }
            }
            super::super::gemm::x86::store_x16v(&mut r, c, ldc, acc);
        }
    }
}
