//! The CPU's f32 peak and memory bandwidth for `%roof`, measured once per
//! process (about 0.5 s, on first use by a profile or a bench):
//!
//! - clock: a chain of dependent register-to-register integer adds, one
//!   per cycle on every x86 core since the Pentium Pro, timed on one thread
//!   (adds of an immediate would not do: Golden Cove and later fold chains
//!   of them at rename, several per cycle);
//! - FMA throughput: 12 independent FMA chains per thread at the widest
//!   level the CPU has, on every worker thread at once (so SMT siblings,
//!   shared FPUs and all-core clocks count as they do for a real gemm);
//!   FMAs per cycle per thread = that rate / clock;
//! - peak = threads × lanes × FMAs/cycle × 2 × clock;
//! - bf16: the same for the bf16 route (`super::active_bf16`): AMX's
//!   `tdpbf16ps` on four independent tiles, or 12 `vdpbf16ps` chains;
//! - bandwidth: the best of `a ← a + s·b` over 2 × 256 MiB on all threads
//!   and an in-place lerp over the same (3 × 256 MiB moved), on huge
//!   pages as the executor's buffers are.

use super::Simd;
use crate::profile::Peak;
use rayon::prelude::*;
use std::sync::OnceLock;
use std::time::Instant;

/// The measured peak of this CPU with the current thread pool, or `None`
/// where there is no vector FMA probe (not x86_64, or no AVX2+FMA).
pub fn cpu_peak() -> Option<Peak> {
    static PEAK: OnceLock<Option<Peak>> = OnceLock::new();
    PEAK.get_or_init(measure).clone()
}

fn measure() -> Option<Peak> {
    let level = super::active();
    let ghz = clock_ghz()?;
    let threads = rayon::current_num_threads();
    // Every worker at once; best of three per worker (the first run also
    // wakes up the wide vector units, which start at reduced throughput).
    let fma_per_ns = on_every_thread(|| fma_rate(level))?;
    let lanes = level.lanes() as f64;
    let per_cycle = fma_per_ns / threads as f64 / ghz;
    let flops = fma_per_ns * 1e9 * lanes * 2.0;
    let bytes = bandwidth();
    let bf16 = super::active_bf16();
    let tensor_flops = on_every_thread(|| bf16_rate(bf16)).map(|per_ns| per_ns * 1e9);
    let tensor = match tensor_flops {
        Some(f) => format!("; bf16 {:.2} TFLOP/s ({})", f / 1e12, bf16.name()),
        None => String::new(),
    };
    Some(Peak {
        flops,
        tensor_flops,
        bytes,
        source: format!(
            "measured: {threads} threads × {lanes:.0} lanes ({}) × {per_cycle:.2} FMA/cycle × 2 × {ghz:.2} GHz{tensor}; \
             best of a + s·b and lerp over 2 × 256 MiB",
            level.name()
        ),
    })
}

/// Σ over the worker threads, all running at once, of each one's best of
/// three `rate()` (the first run also wakes up the wide vector units,
/// which start at reduced throughput); None where there is no probe.
fn on_every_thread(rate: impl Fn() -> Option<f64> + Sync) -> Option<f64> {
    let per_thread = rayon::broadcast(|_| (0..3).filter_map(|_| rate()).fold(0.0, f64::max));
    let total: f64 = per_thread.iter().sum();
    (total > 0.0).then_some(total)
}

/// The core clock in GHz: 4·10⁷ dependent adds, best of three.
fn clock_ghz() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        let adds = 10_000_000u64;
        let one = std::hint::black_box(1u64);
        let best = (0..3)
            .map(|_| {
                let t = Instant::now();
                let mut x = 0u64;
                for _ in 0..adds {
                    // SAFETY: register arithmetic only.
                    unsafe {
                        std::arch::asm!("add {0}, {1}", "add {0}, {1}", "add {0}, {1}", "add {0}, {1}", inout(reg) x, in(reg) one, options(nomem, nostack));
                    }
                }
                std::hint::black_box(x);
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        Some(4.0 * adds as f64 / best / 1e9)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// Vector FMAs per nanosecond on this thread at `level`.
fn fma_rate(level: Simd) -> Option<f64> {
    let iters = 4_000_000u64;
    let t = Instant::now();
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level is one the CPU has.
        Simd::Avx512 => std::hint::black_box(unsafe { x86::fma512(iters) }),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Simd::Avx2 => std::hint::black_box(unsafe { x86::fma256(iters) }),
        _ => return None,
    };
    Some(12.0 * iters as f64 / t.elapsed().as_secs_f64() / 1e9)
}

/// bf16 FLOPs per nanosecond on this thread on `route` (f32 accumulation).
fn bf16_rate(route: super::Bf16) -> Option<f64> {
    let iters = 1_000_000u64;
    let t = Instant::now();
    let flops = match route {
        #[cfg(target_arch = "x86_64")]
        super::Bf16::Amx => super::amx::probe(iters),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the route is one the CPU has.
        super::Bf16::Avx512Bf16 => unsafe { x86::dpbf16(iters) },
        _ => return None,
    };
    Some(flops / t.elapsed().as_secs_f64() / 1e9)
}

/// Floats per probe array: 256 MiB, far beyond any last-level cache, and
/// long enough that a sweep's start-up does not count.
const PROBE_FLOATS: usize = 64 << 20;

/// The memory bandwidth in bytes/s: the best of an in-place triad
/// `a ← a + s·b` and an in-place lerp `a ← a + λ(b − a)` (the vector maths
/// the cpu kernels use, in the lerp op's chunks) over the same two 256 MiB
/// arrays on huge pages, as the cpu executor's buffers are; 3 × 256 MiB
/// moved per sweep. On a shared machine whose bandwidth moves between
/// moments an op can still beat it; `pipelines::bench::table` then raises
/// the roof to that op's rate and says so.
fn bandwidth() -> f64 {
    let level = super::active();
    let n = PROBE_FLOATS;
    let b = huge_filled(n, 1.0);
    let mut a = huge_filled(n, 2.0);
    let per_thread = n.div_ceil(rayon::current_num_threads().max(1));
    let triad = best_sweep(&mut a, &b, per_thread, |a, b| {
        a.iter_mut().zip(b).for_each(|(x, y)| *x += 0.5 * y)
    });
    let lerp = best_sweep(&mut a, &b, 1 << 15, |a, b| {
        super::vmath::lerp_in_place(level, a, b, 0.5)
    });
    3.0 * (n * 4) as f64 / triad.min(lerp)
}

/// Seconds of the fastest of six sweeps of `f` over `a` and `b` in
/// `chunk`-sized pieces on all threads.
fn best_sweep(
    a: &mut [f32],
    b: &[f32],
    chunk: usize,
    f: impl Fn(&mut [f32], &[f32]) + Sync,
) -> f64 {
    (0..6)
        .map(|_| {
            let t = Instant::now();
            a.par_chunks_mut(chunk)
                .zip(b.par_chunks(chunk))
                .for_each(|(a, b)| f(a, b));
            std::hint::black_box(&*a);
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// `n` copies of `v` on transparent huge pages where the kernel grants
/// them, as the cpu executor's buffers are (`crate::hostmem`).
fn huge_filled(n: usize, v: f32) -> Vec<f32> {
    let mut a = crate::hostmem::advise_huge(vec![0f32; n]);
    a.fill(v);
    a
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma512(iters: u64) -> f32 {
        let mut acc = [_mm512_set1_ps(0.0); 12];
        let (a, b) = (_mm512_set1_ps(0.999), _mm512_set1_ps(0.001));
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        acc.iter().map(|&x| _mm512_reduce_add_ps(x)).sum()
    }

    /// 12 independent `vdpbf16ps` chains; returns the FLOPs done.
    ///
    /// # Safety
    /// The CPU has AVX512-BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn dpbf16(iters: u64) -> f64 {
        let mut acc = [_mm512_set1_ps(0.0); 12];
        // SAFETY: 64 bytes of bf16 pairs as the instruction's operand type.
        let ones: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi32(0x3f80_3f80)) };
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_dpbf16_ps(*x, ones, ones);
            }
        }
        std::hint::black_box(acc);
        // 16 lanes × 2 products × (multiply + add) per instruction.
        (iters * 12 * 16 * 2 * 2) as f64
    }

    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma256(iters: u64) -> f32 {
        let mut acc = [_mm256_set1_ps(0.0); 12];
        let (a, b) = (_mm256_set1_ps(0.999), _mm256_set1_ps(0.001));
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let mut out = [0f32; 8];
        acc.iter().fold(0.0, |s, &x| {
            // SAFETY: 8 floats into an 8-float array.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), x) };
            s + out.iter().sum::<f32>()
        })
    }
}
