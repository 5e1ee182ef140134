//! Speed of the PTX interpreter in thread-instructions per second, on the
//! project's own kernels (gemm, attention, layernorm) and on a whole fixture
//! forward.
//!
//!     cargo bench --bench emu

use dawin::emu::{Emu, EmuOptions};
use dawin::exec::{Executor, ptx::PtxExec};
use dawin::ops::{attention::AttentionShape, gemm::GemmShape, layernorm::LayerNormShape};
use std::time::Instant;

fn data(n: usize) -> Vec<f32> {
    let mut r = dawin::model::SplitMix(5);
    (0..n).map(|_| r.normal()).collect()
}

fn main() {
    let ex = PtxExec::new(Emu::new(dawin::ptx::MODULES, EmuOptions::default()).unwrap());
    let report = |what: &str, f: &dyn Fn()| {
        let before = ex.gpu.instructions();
        let t = Instant::now();
        f();
        let secs = t.elapsed().as_secs_f64();
        let n = ex.gpu.instructions() - before;
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
    report("gemm 128x128x128", &|| {
        ex.gemm(a, b, None, c, GemmShape { m, n, k }).unwrap()
    });
    let s = AttentionShape {
        batch: 2,
        tokens: 50,
        heads: 4,
        head_dim: 64,
    };
    let qkv = ex.upload(&data(2 * 50 * 3 * 256)).unwrap();
    let o = ex.alloc(2 * 50 * 256).unwrap();
    report("attention 2x50 tokens, 4x64", &|| {
        ex.attention(qkv, o, s).unwrap()
    });
    let x = ex.upload(&data(256 * 768)).unwrap();
    let g = ex.upload(&data(768)).unwrap();
    report("layernorm 256x768", &|| {
        ex.layernorm(x, x, g, g, None, LayerNormShape::dense(256, 768, 1e-5))
            .unwrap()
    });
}
