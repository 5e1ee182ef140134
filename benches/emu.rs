//! Speed of the PTX interpreter in thread-instructions per second, on the
//! project's own kernels (gemm, attention, layernorm).
//!
//!     cargo bench --bench emu

use dawin::device::emu::{Emu, EmuOptions};
use dawin::exec::{Executor, PtxExec};
use dawin::ops::attention::{Attention, AttentionShape};
use dawin::ops::gemm::{Gemm, GemmShape};
use dawin::ops::layernorm::{LayerNorm, LayerNormShape};
use std::time::Instant;

fn data(n: usize) -> Vec<f32> {
    let mut r = dawin::rng::SplitMix(5);
    (0..n).map(|_| r.normal()).collect()
}

fn main() {
    let emu = PtxExec::new(Emu::new(dawin::ops::PTX_MODULES, EmuOptions::default()).unwrap());
    let ex: &dyn Executor = &emu;
    let report = |what: &str, f: &dyn Fn()| {
        let before = emu.gpu.instructions();
        let t = Instant::now();
        f();
        let secs = t.elapsed().as_secs_f64();
        let n = emu.gpu.instructions() - before;
        println!(
            "emu {what:<34} {:>12} thread-instructions in {secs:7.3} s: {:6.1} M/s",
            n,
            n as f64 / secs / 1e6
        );
    };
    let (m, n, k) = (128, 128, 128);
    let (a, b) = (
        ex.upload(&data(m * k)).unwrap(),
        ex.upload(&data(n * k)).unwrap(),
    );
    let c = ex.alloc(m * n).unwrap();
    let shape = GemmShape { m, n, k };
    report("gemm 128x128x128", &|| {
        ex.run(Gemm {
            a: *a,
            b: *b,
            bias: None,
            c: *c,
            shape,
        })
        .unwrap()
    });
    let s = AttentionShape {
        batch: 2,
        tokens: 50,
        heads: 4,
        head_dim: 64,
        causal: false,
    };
    let qkv = ex.upload(&data(2 * 50 * 3 * 256)).unwrap();
    let o = ex.alloc(2 * 50 * 256).unwrap();
    report("attention 2x50 tokens, 4x64", &|| {
        ex.run(Attention {
            qkv: *qkv,
            out: *o,
            shape: s,
        })
        .unwrap()
    });
    let x = ex.upload(&data(256 * 768)).unwrap();
    let g = ex.upload(&data(768)).unwrap();
    let shape = LayerNormShape::dense(256, 768, 1e-5);
    report("layernorm 256x768", &|| {
        let op = LayerNorm {
            x: *x,
            y: *x,
            gamma: *g,
            beta: *g,
            dual: None,
            shape,
        };
        ex.run(op).unwrap()
    });
}
