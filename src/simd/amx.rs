//! AMX (Advanced Matrix Extensions) for the bf16 gemm: eight tile
//! registers of up to 16 rows × 64 bytes and `tdpbf16ps`, which adds a
//! 16×32 by 32×16 bf16 product into a 16×16 f32 tile in one instruction.
//!
//! Rust has no stable AMX intrinsics, so the few instructions used are
//! inline assembly. Tiles are thread state that Linux only saves for a
//! process that asked for it (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), and
//! their shape comes from a configuration each thread loads before use.

use super::gemm::ARef;
use std::arch::asm;
use std::sync::OnceLock;

/// Whether the CPU has AMX-BF16 and the OS lets this process use tiles.
pub fn usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| cpu_has_amx() && os_permits_tiles())
}

/// CPUID leaf 7: AMX-BF16 (EDX bit 22) and AMX-TILE (EDX bit 24).
fn cpu_has_amx() -> bool {
    let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
    leaf7.edx >> 22 & 1 == 1 && leaf7.edx >> 24 & 1 == 1
}

#[cfg(target_os = "linux")]
fn os_permits_tiles() -> bool {
    const ARCH_GET_XCOMP_PERM: libc::c_long = 0x1022;
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these codes only reads or sets the process's
    // permission mask; `mask` outlives the call.
    unsafe {
        if libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) != 0
        {
            return false;
        }
        let mut mask: u64 = 0;
        let got = libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_GET_XCOMP_PERM,
            &mut mask as *mut u64,
        );
        got == 0 && mask >> XFEATURE_XTILEDATA & 1 == 1
    }
}

#[cfg(not(target_os = "linux"))]
fn os_permits_tiles() -> bool {
    false
}

/// Palette 1 with all eight tiles at 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

const CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64;
        c[48 + t] = 16;
        t += 1;
    }
    TileConfig(c)
};

/// Loads the tile configuration on this thread (before a band of tiles).
pub fn configure() {
    debug_assert!(usable());
    // SAFETY: only called where `usable()` holds; CONFIG is a valid
    // 64-byte palette-1 configuration.
    unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly)) };
}

/// Releases this thread's tiles, so the OS stops saving them.
pub fn release() {
    // SAFETY: as `configure`.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}

/// `iters` rounds of `tdpbf16ps` into four independent accumulator
/// tiles (operands in registers, no memory): the tile unit's peak.
/// Returns the FLOPs done.
pub fn probe(iters: u64) -> f64 {
    configure();
    // SAFETY: tiles configured above; register-only tile instructions.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "tilezero tmm4",
            "tilezero tmm5",
            "tilezero tmm6",
            "tilezero tmm7",
            options(nostack, nomem),
        );
        for _ in 0..iters {
            asm!(
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                options(nostack, nomem),
            );
        }
    }
    release();
    // 4 tiles × 16×16 outputs × 32 products × (multiply + add).
    (iters * 4 * 16 * 16 * 32 * 2) as f64
}

/// The 32×32 micro-kernel: C in tiles 0–3 (2×2 of 16×16 f32), A rows in
/// tiles 4–5 and the B panel in tiles 6–7, 16 pairs (32 reduction steps)
/// per round. `a`'s rows are `a.rs` pairs apart and a round starting at
/// pair p begins at `p·a.cs` (row-major: rs = row length, cs = 1; packed
/// tiles: rs = 16, cs = 32); `b` is a packed panel of `kc` × 32 pairs,
/// `kc` a multiple of 16.
///
/// # Safety
/// [`configure`] ran on this thread; `a` addresses 32 rows of `kc` pairs
/// as its strides say, `b` holds kc·32 pairs, `c` a 32×32 tile with row stride
/// `ldc` floats.
pub unsafe fn kernel(kc: usize, a: ARef<u32>, b: *const u32, c: *mut f32, ldc: usize, acc: bool) {
    debug_assert!(kc.is_multiple_of(16));
    let (c_stride, a_stride, b_stride) = (ldc * 4, a.rs * 4, 32usize * 4);
    // SAFETY: every tile load and store stays inside the documented sizes:
    // 16 rows of 64 bytes each at the given strides.
    unsafe {
        let c_lo = c.add(16 * ldc);
        if acc {
            asm!(
                "tileloadd tmm0, [{c} + {s}*1]",
                "tileloadd tmm1, [{c1} + {s}*1]",
                "tileloadd tmm2, [{c2} + {s}*1]",
                "tileloadd tmm3, [{c3} + {s}*1]",
                c = in(reg) c, c1 = in(reg) c.add(16), c2 = in(reg) c_lo, c3 = in(reg) c_lo.add(16),
                s = in(reg) c_stride, options(nostack, readonly),
            );
        } else {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
        }
        for p in (0..kc).step_by(16) {
            let a_hi = a.ptr.add(p * a.cs);
            let b_p = b.add(p * 32);
            asm!(
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm5, [{a1} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {sb}*1]",
                "tileloadd tmm7, [{b1} + {sb}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a_hi, a1 = in(reg) a_hi.add(16 * a.rs),
                b0 = in(reg) b_p, b1 = in(reg) b_p.add(16),
                sa = in(reg) a_stride, sb = in(reg) b_stride,
                options(nostack, readonly),
            );
        }
        asm!(
            "tilestored [{c} + {s}*1], tmm0",
            "tilestored [{c1} + {s}*1], tmm1",
            "tilestored [{c2} + {s}*1], tmm2",
            "tilestored [{c3} + {s}*1], tmm3",
            c = in(reg) c, c1 = in(reg) c.add(16), c2 = in(reg) c_lo, c3 = in(reg) c_lo.add(16),
            s = in(reg) c_stride, options(nostack),
        );
    }
}
