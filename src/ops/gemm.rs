//! gemm: `C[m,n] = A[m,k] · B[n,k]ᵀ (+ bias[n])`, the layout of every linear
//! layer (PyTorch stores weights as [out, in]).

use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// CPU reference: tiles of C computed by `matrixmultiply` on rayon threads.
pub fn cpu(a: &[f32], b: &[f32], bias: Option<&[f32]>, c: &mut [f32], s: GemmShape) {
    let GemmShape { m, n, k } = s;
    assert!(a.len() >= m * k && b.len() >= n * k && c.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    // Split C into tiles so that both tall (many tokens) and wide (batch 1,
    // big N) products use every core.
    let threads = rayon::current_num_threads().max(1);
    let tm = if m >= 64 * threads {
        m.div_ceil(threads * 2)
    } else {
        m.min(64)
    };
    let tn = if n > 256 && m.div_ceil(tm) < 2 * threads {
        256
    } else {
        n
    };
    let tiles: Vec<(usize, usize)> = (0..m)
        .step_by(tm)
        .flat_map(|i| (0..n).step_by(tn).map(move |j| (i, j)))
        .collect();
    let cp = SendPtr(c.as_mut_ptr());
    tiles.par_iter().for_each(|&(i, j)| {
        let rows = tm.min(m - i);
        let cols = tn.min(n - j);
        let cp = &cp;
        // SAFETY: tiles are disjoint rectangles of C, all in bounds (asserted
        // above); A and B are only read.
        unsafe {
            let cptr = cp.0.add(i * n + j);
            if let Some(bias) = bias {
                for r in 0..rows {
                    std::ptr::copy_nonoverlapping(bias.as_ptr().add(j), cptr.add(r * n), cols);
                }
            }
            matrixmultiply::sgemm(
                rows,
                k,
                cols,
                1.0,
                a.as_ptr().add(i * k),
                k as isize,
                1,
                b.as_ptr().add(j * k),
                1,
                k as isize,
                if bias.is_some() { 1.0 } else { 0.0 },
                cptr,
                n as isize,
                1,
            );
        }
    });
}

/// The plain triple loop, kept as the oracle for the tiled version above.
pub fn naive(a: &[f32], b: &[f32], bias: Option<&[f32]>, c: &mut [f32], s: GemmShape) {
    for i in 0..s.m {
        for j in 0..s.n {
            let mut acc = 0f64;
            for p in 0..s.k {
                acc += a[i * s.k + p] as f64 * b[j * s.k + p] as f64;
            }
            c[i * s.n + j] = (acc + bias.map_or(0.0, |b| b[j] as f64)) as f32;
        }
    }
}

use crate::emu::Arg;
use crate::gpu::Gpu;

/// Block tile: 64×64 outputs, 16-deep k slices, 256 threads of 4×4.
pub const TILE: usize = 64;

/// Launches `ptx/gemm.ptx`; `bias` 0 means none.
pub fn launch(gpu: &dyn Gpu, a: u64, b: u64, bias: u64, c: u64, s: GemmShape) -> crate::Result<()> {
    if s.m == 0 || s.n == 0 {
        return Ok(());
    }
    let grid = [s.n.div_ceil(TILE) as u32, s.m.div_ceil(TILE) as u32, 1];
    gpu.launch("gemm", grid, [256, 1, 1], 0, &args(a, b, bias, c, s)?)
}

/// The parameters gemm and gemm_bf16 share: operands, bias, output, shape.
pub(super) fn args(a: u64, b: u64, bias: u64, c: u64, s: GemmShape) -> crate::Result<[Arg; 7]> {
    Ok([
        Arg::U64(a),
        Arg::U64(b),
        Arg::U64(bias),
        Arg::U64(c),
        super::u32_arg("m", s.m)?,
        super::u32_arg("n", s.n)?,
        super::u32_arg("k", s.k)?,
    ])
}

/// Work of one call: 2·m·n·k FLOPs; reads A, B and the bias, writes C.
pub fn cost(s: GemmShape) -> crate::profile::Cost {
    let (m, n, k) = (s.m as f64, s.n as f64, s.k as f64);
    crate::profile::Cost {
        flops: 2.0 * m * n * k + m * n,
        bytes: 4.0 * (m * k + n * k + m * n + n),
    }
}
