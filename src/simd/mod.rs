//! The CPU executor's fast paths: a packed, register-blocked gemm with
//! run-time dispatch (AVX-512, AVX2+FMA, a portable fallback), vectorised
//! transcendental functions, and the machine's measured f32 peak and memory
//! bandwidth for `%roof`. Every op's cpu implementation in `crate::ops` calls
//! into here; the property tests check each SIMD level the machine has
//! against the f64 references.

#[cfg(target_arch = "x86_64")]
mod amx;
pub mod attention;
pub mod gemm;
pub mod gemm_bf16;
pub mod peak;
pub mod vmath;

use std::sync::OnceLock;

/// An instruction-set level a kernel is compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Simd {
    /// Plain Rust (what the compiler vectorises for the build target).
    Portable,
    /// 256-bit vectors with fused multiply-add.
    Avx2,
    /// 512-bit vectors (AVX-512F).
    Avx512,
}

impl Simd {
    pub fn name(self) -> &'static str {
        match self {
            Simd::Portable => "portable",
            Simd::Avx2 => "avx2+fma",
            Simd::Avx512 => "avx512",
        }
    }

    /// f32 lanes of one vector.
    pub fn lanes(self) -> usize {
        match self {
            Simd::Portable => 4,
            Simd::Avx2 => 8,
            Simd::Avx512 => 16,
        }
    }
}

/// Every level this CPU can run, lowest first.
pub fn available() -> Vec<Simd> {
    let mut v = vec![Simd::Portable];
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            v.push(Simd::Avx2);
        }
        if is_x86_feature_detected!("avx512f") {
            v.push(Simd::Avx512);
        }
    }
    v
}

/// The level the kernels use: the highest available, or `DAWIN_CPU_SIMD`
/// (`portable`, `avx2`, `avx512`) when set, capped at what the CPU has.
pub fn active() -> Simd {
    static ACTIVE: OnceLock<Simd> = OnceLock::new();
    *ACTIVE.get_or_init(|| {
        let have = available();
        let best = *have.last().expect("portable is always there");
        match std::env::var("DAWIN_CPU_SIMD").ok().as_deref() {
            Some("portable") => Simd::Portable,
            Some("avx2") => best.min(Simd::Avx2),
            Some("avx512") => best,
            _ => best,
        }
    })
}

/// How the CPU multiplies bf16 operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bf16 {
    /// Widened to f32 and run through the f32 kernels (any CPU).
    Widen,
    /// `vdpbf16ps`: two bf16 products per f32 lane and instruction
    /// (AVX512-BF16), twice the f32 FMA rate.
    Avx512Bf16,
    /// AMX tiles: `tdpbf16ps` multiplies 16×32 by 32×16 bf16 at once.
    Amx,
}

impl Bf16 {
    pub fn name(self) -> &'static str {
        match self {
            Bf16::Widen => "widen-to-f32",
            Bf16::Avx512Bf16 => "avx512-bf16",
            Bf16::Amx => "amx-bf16",
        }
    }
}

/// Every bf16 route this CPU (and its OS, for AMX) can run, lowest first.
pub fn available_bf16() -> Vec<Bf16> {
    let mut v = vec![Bf16::Widen];
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512bf16") && is_x86_feature_detected!("avx512f") {
            v.push(Bf16::Avx512Bf16);
            if amx::usable() {
                v.push(Bf16::Amx);
            }
        }
    }
    v
}

/// The bf16 route the kernels use: the fastest available, or the one
/// `DAWIN_CPU_BF16` names (`widen`, `avx512bf16`, `amx`), capped at what
/// the CPU has; `DAWIN_CPU_SIMD` below avx512 also means widening.
pub fn active_bf16() -> Bf16 {
    static ACTIVE: OnceLock<Bf16> = OnceLock::new();
    *ACTIVE.get_or_init(|| {
        let best = *available_bf16().last().expect("widen is always there");
        if active() < Simd::Avx512 {
            return Bf16::Widen;
        }
        match std::env::var("DAWIN_CPU_BF16").ok().as_deref() {
            Some("widen") => Bf16::Widen,
            Some("avx512bf16") => best.min(Bf16::Avx512Bf16),
            _ => best,
        }
    })
}

/// A hint to bring the cache line at `p` into the caches (no effect
/// where the target has no prefetch instruction).
#[inline(always)]
pub fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
