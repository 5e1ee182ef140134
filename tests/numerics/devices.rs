//! Every op of the registry on the same inputs on every executor of the
//! build (`DAWIN_TEST_DEVICES`: cpu and emu here; add cuda on a GPU), the
//! largest difference between every pair of them, against the op's
//! stated tolerance. A disagreement names the op and the pair of devices,
//! so a bug is located in one kernel on one executor. With
//! `DAWIN_DEVICE_TABLE=FILE` the table is also written there as JSON.

use crate::common::{data, executors, rel_err};
use dawin::buf::{Buf, DType};
use dawin::exec::{Executor, ExecutorKind, OwnedBuf};
use dawin::ops::attention::{Attention, AttentionShape};
use dawin::ops::attention_bf16::AttentionBf16;
use dawin::ops::cast_bf16::CastBf16;
use dawin::ops::embed_add::{DualEmbed, EmbedAdd, EmbedShape};
use dawin::ops::embed_add_multi::EmbedAddMulti;
use dawin::ops::gather_rows::{GatherRows, GatherShape};
use dawin::ops::gemm::{Gemm, GemmShape};
use dawin::ops::gemm_bf16::{Activation, Epilogue, GemmBf16};
use dawin::ops::gemm_dual::{DualGemm, GemmDual};
use dawin::ops::gemm_dual_bf16::GemmDualBf16;
use dawin::ops::gemm_multi::GemmMulti;
use dawin::ops::layernorm::{DualNorm, LayerNorm, LayerNormShape};
use dawin::ops::layernorm_multi::LayerNormMulti;
use dawin::ops::patch_embed::{PatchEmbed, PatchShape};
use dawin::ops::softmax_entropy::SoftmaxEntropy;
use dawin::ops::{
    Mix, MultiMix, Op, PTX_MODULES, add::Add, add_scaled_diff::AddScaledDiff, gelu::Gelu,
};
use dawin::ops::{
    l2_normalize::L2Normalize, lerp::Lerp, lerp_bf16::LerpBf16, quick_gelu::QuickGelu,
};
use half::bf16;

/// Buffers of one example on one executor: every input and the output.
struct Example<'e> {
    op: Op,
    out: Buf,
    _held: Vec<OwnedBuf<'e>>,
}

/// Uploads inputs and keeps them alive with the example.
struct Builder<'e> {
    ex: &'e dyn Executor,
    held: Vec<OwnedBuf<'e>>,
}

impl<'e> Builder<'e> {
    fn f32(&mut self, n: usize, seed: u64, scale: f32) -> Buf {
        self.keep(self.ex.upload(&data(seed, n, scale)).unwrap())
    }
    fn bf16(&mut self, n: usize, seed: u64, scale: f32) -> Buf {
        let v: Vec<bf16> = data(seed, n, scale)
            .into_iter()
            .map(bf16::from_f32)
            .collect();
        self.keep(self.ex.upload(&v).unwrap())
    }
    fn zeros(&mut self, dtype: DType, n: usize) -> Buf {
        self.keep(self.ex.alloc_as(dtype, n).unwrap())
    }
    fn lambdas(&mut self, n: usize) -> Buf {
        let v: Vec<f32> = (0..n).map(|i| (0.13 + 0.37 * i as f32).fract()).collect();
        self.keep(self.ex.upload(&v).unwrap())
    }
    /// Three task coefficients per sample, one negative and one above 1
    /// (the paper's s·T·c_t can exceed 1).
    fn multi(&mut self, samples: usize, stride: usize, rows_per_sample: usize) -> MultiMix {
        let v: Vec<f32> = (0..samples * 3)
            .map(|i| (0.13 + 0.37 * i as f32).fract() * 2.0 - 0.5)
            .collect();
        let coef = self.keep(self.ex.upload(&v).unwrap());
        MultiMix {
            coef,
            sets: 3,
            stride,
            rows_per_sample,
        }
    }
    fn keep(&mut self, b: OwnedBuf<'e>) -> Buf {
        let buf = *b;
        self.held.push(b);
        buf
    }
    fn done(self, op: impl Into<Op>, out: Buf) -> Example<'e> {
        Example {
            op: op.into(),
            out,
            _held: self.held,
        }
    }
}

/// The example of op `name` and its tolerance (relative to the output's
/// scale, as in the property tests).
fn example<'e>(name: &str, ex: &'e dyn Executor) -> (Example<'e>, f64) {
    let mut b = Builder { ex, held: vec![] };
    let f = DType::F32;
    let (m, n, k) = (70, 45, 40);
    let gemm = GemmShape { m, n, k };
    let att = AttentionShape {
        batch: 2,
        tokens: 37,
        heads: 2,
        head_dim: 64,
        causal: false,
    };
    let qkv_len = 2 * 37 * 3 * 128;
    let ep = Epilogue {
        activation: Activation::QuickGelu,
        f32_out: false,
        accumulate: false,
    };
    match name {
        "add" => {
            let (x, y) = (b.f32(1000, 1, 1.0), b.f32(1000, 2, 1.0));
            (b.done(Add { x, y }, y), 0.0)
        }
        "add_scaled_diff" => {
            let (out, w0, w1) = (
                b.f32(1000, 1, 1.0),
                b.f32(1000, 2, 1.0),
                b.f32(1000, 3, 1.0),
            );
            (
                b.done(
                    AddScaledDiff {
                        out,
                        w0,
                        w1,
                        k: 0.7,
                    },
                    out,
                ),
                0.0,
            )
        }
        "attention" => {
            let (qkv, out) = (b.f32(qkv_len, 1, 2.0), b.zeros(f, qkv_len / 3));
            (
                b.done(
                    Attention {
                        qkv,
                        out,
                        shape: att,
                    },
                    out,
                ),
                1e-5,
            )
        }
        "attention_bf16" => {
            let (qkv, out) = (b.bf16(qkv_len, 1, 2.0), b.zeros(DType::Bf16, qkv_len / 3));
            (
                b.done(
                    AttentionBf16 {
                        qkv,
                        out,
                        shape: att,
                    },
                    out,
                ),
                1e-2,
            )
        }
        "cast_bf16" => {
            let (x, y) = (b.f32(1000, 1, 3.0), b.zeros(DType::Bf16, 1000));
            (b.done(CastBf16 { x, y }, y), 0.0)
        }
        "embed_add" => {
            let shape = EmbedShape {
                batch: 3,
                tokens: 10,
                width: 24,
            };
            let patches = b.f32(3 * 9 * 24, 1, 1.0);
            let (class, pos) = (b.f32(24, 2, 1.0), b.f32(240, 3, 1.0));
            let mix = Mix {
                lambda: b.lambdas(3),
                rows_per_lambda: 10,
            };
            let dual = Some(DualEmbed {
                class1: b.f32(24, 4, 1.0),
                pos1: b.f32(240, 5, 1.0),
                mix,
            });
            let out = b.zeros(f, 720);
            (
                b.done(
                    EmbedAdd {
                        patches,
                        class,
                        pos,
                        dual,
                        out,
                        shape,
                    },
                    out,
                ),
                1e-6,
            )
        }
        "gather_rows" => {
            let shape = GatherShape {
                rows: 3 * 77,
                width: 96,
                table_rows: 500,
                add_rows: 77,
            };
            let ids: Vec<i32> = (0..shape.rows as i32).map(|i| (i * 37) % 500).collect();
            let ids = b.keep(ex.upload(&ids).unwrap());
            let (table, add) = (b.f32(500 * 96, 1, 1.0), b.f32(77 * 96, 2, 1.0));
            let out = b.zeros(f, shape.rows * 96);
            let op = GatherRows {
                table,
                ids,
                add: Some(add),
                out,
                shape,
            };
            (b.done(op, out), 1e-6)
        }
        "gelu" | "quick_gelu" => {
            let x = b.f32(3000, 1, 4.0);
            let op: Op = if name == "gelu" {
                Gelu { x }.into()
            } else {
                QuickGelu { x }.into()
            };
            (b.done(op, x), 1e-6)
        }
        "gemm" => {
            let (a, w, bias) = (b.f32(m * k, 1, 1.0), b.f32(n * k, 2, 0.5), b.f32(n, 3, 1.0));
            let c = b.zeros(f, m * n);
            (
                b.done(
                    Gemm {
                        a,
                        b: w,
                        bias: Some(bias),
                        c,
                        shape: gemm,
                    },
                    c,
                ),
                1e-5,
            )
        }
        "gemm_bf16" => {
            let (a, w, bias) = (
                b.bf16(m * k, 1, 1.0),
                b.bf16(n * k, 2, 0.2),
                b.f32(n, 3, 0.5),
            );
            let c = b.zeros(DType::Bf16, m * n);
            let op = GemmBf16 {
                a,
                b: w,
                bias: Some(bias),
                c,
                shape: gemm,
                epilogue: ep,
            };
            (b.done(op, c), 1e-2)
        }
        "gemm_dual" | "gemm_dual_bf16" => {
            let bf = name == "gemm_dual_bf16";
            let mut w = |n, seed, scale| {
                if bf {
                    b.bf16(n, seed, scale)
                } else {
                    b.f32(n, seed, scale)
                }
            };
            let (a, w0, w1) = (w(m * k, 1, 1.0), w(n * k, 2, 0.2), w(n * k, 3, 0.2));
            let (b0, b1) = (b.f32(n, 4, 0.5), b.f32(n, 5, 0.5));
            let mix = Mix {
                lambda: b.lambdas(7),
                rows_per_lambda: 10,
            };
            let dual = DualGemm {
                b1: w1,
                bias1: Some(b1),
                mix,
            };
            let c = b.zeros(if bf { DType::Bf16 } else { f }, m * n);
            let (b0w, bias0, shape) = (w0, Some(b0), gemm);
            let op: Op = if bf {
                GemmDualBf16 {
                    a,
                    b0: b0w,
                    bias0,
                    dual,
                    c,
                    shape,
                    epilogue: ep,
                }
                .into()
            } else {
                GemmDual {
                    a,
                    b0: b0w,
                    bias0,
                    dual,
                    c,
                    shape,
                }
                .into()
            };
            (b.done(op, c), if bf { 1e-2 } else { 1e-5 })
        }
        "l2_normalize" => {
            let (x, y) = (b.f32(7 * 300, 1, 5.0), b.zeros(f, 7 * 300));
            (
                b.done(
                    L2Normalize {
                        x,
                        y,
                        rows: 7,
                        width: 300,
                    },
                    y,
                ),
                1e-6,
            )
        }
        "layernorm" => {
            let shape = LayerNormShape::dense(9, 200, 1e-5);
            let x = b.f32(1800, 1, 3.0);
            let (gamma, beta) = (b.f32(200, 2, 1.0), b.f32(200, 3, 1.0));
            let mix = Mix {
                lambda: b.lambdas(3),
                rows_per_lambda: 3,
            };
            let dual = Some(DualNorm {
                gamma1: b.f32(200, 4, 1.0),
                beta1: b.f32(200, 5, 1.0),
                mix,
            });
            let y = b.zeros(f, 1800);
            (
                b.done(
                    LayerNorm {
                        x,
                        y,
                        gamma,
                        beta,
                        dual,
                        shape,
                    },
                    y,
                ),
                1e-5,
            )
        }
        "lerp" => {
            let (w0, w1) = (b.f32(5000, 1, 1.0), b.f32(5000, 2, 1.0));
            (
                b.done(
                    Lerp {
                        out: w0,
                        w0,
                        w1,
                        lambda: 0.3,
                    },
                    w0,
                ),
                0.0,
            )
        }
        "lerp_bf16" => {
            let (w0, w1) = (b.bf16(5000, 1, 1.0), b.bf16(5000, 2, 1.0));
            (
                b.done(
                    LerpBf16 {
                        out: w0,
                        w0,
                        w1,
                        lambda: 0.3,
                    },
                    w0,
                ),
                0.0,
            )
        }
        "patch_embed" => {
            let shape = PatchShape {
                batch: 2,
                channels: 3,
                image: 12,
                patch: 4,
            };
            let (pixels, out) = (b.f32(2 * 3 * 144, 1, 1.0), b.zeros(f, 18 * 48));
            (b.done(PatchEmbed { pixels, out, shape }, out), 0.0)
        }
        "softmax_entropy" => {
            let (logits, out) = (b.f32(11 * 1000, 1, 30.0), b.zeros(f, 44));
            let op = SoftmaxEntropy {
                logits,
                out,
                rows: 11,
                cols: 1000,
                temperature: 0.9,
            };
            (b.done(op, out), 1e-5)
        }
        "gemm_multi" => {
            let stride = n * k + 5;
            let a = b.f32(m * k, 1, 1.0);
            let (w, bias) = (
                b.f32(3 * stride + n * k, 2, 0.2),
                b.f32(3 * stride + n, 3, 0.5),
            );
            let (mix, c) = (b.multi(7, stride, 10), b.zeros(f, m * n));
            let op = GemmMulti {
                a,
                b: w,
                bias: Some(bias),
                mix,
                c,
                shape: gemm,
            };
            (b.done(op, c), 1e-5)
        }
        "layernorm_multi" => {
            let shape = LayerNormShape::dense(9, 200, 1e-5);
            let x = b.f32(1800, 1, 3.0);
            let (gamma, beta) = (b.f32(3 * 211 + 200, 2, 1.0), b.f32(3 * 211 + 200, 3, 1.0));
            let (mix, y) = (b.multi(3, 211, 3), b.zeros(f, 1800));
            let op = LayerNormMulti {
                x,
                y,
                gamma,
                beta,
                mix,
                shape,
            };
            (b.done(op, y), 1e-5)
        }
        "embed_add_multi" => {
            let shape = EmbedShape {
                batch: 3,
                tokens: 10,
                width: 24,
            };
            let patches = b.f32(3 * 9 * 24, 1, 1.0);
            let (class, pos) = (b.f32(3 * 250 + 24, 2, 1.0), b.f32(3 * 250 + 240, 3, 1.0));
            let (mix, out) = (b.multi(3, 250, 10), b.zeros(f, 720));
            let op = EmbedAddMulti {
                patches,
                class,
                pos,
                mix,
                out,
                shape,
            };
            (b.done(op, out), 1e-6)
        }
        other => panic!("no example for op `{other}`: add one here"),
    }
}

/// The values of an f32 or bf16 view, as f32.
fn values(ex: &dyn Executor, b: Buf) -> Vec<f32> {
    match b.dtype {
        DType::Bf16 => ex
            .download_as::<bf16>(b)
            .unwrap()
            .iter()
            .map(|v| v.to_f32())
            .collect(),
        _ => ex.download(b).unwrap(),
    }
}

#[test]
fn every_op_agrees_across_executors() {
    let exs = executors();
    let names: Vec<&str> = PTX_MODULES
        .iter()
        .map(|(f, _)| f.trim_end_matches(".ptx"))
        .collect();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for name in &names {
        let mut outs: Vec<(ExecutorKind, Vec<f32>)> = Vec::new();
        let mut tol = 0.0;
        for (kind, ex) in &exs {
            let (e, t) = example(name, ex.as_ref());
            tol = t;
            ex.run_op(&e.op)
                .unwrap_or_else(|err| panic!("{name} on {kind}: {err}"));
            outs.push((*kind, values(ex.as_ref(), e.out)));
        }
        for (i, (base, want)) in outs.iter().enumerate() {
            for (kind, got) in &outs[i + 1..] {
                let err = rel_err(got, want);
                eprintln!(
                    "{name:<16} {kind} vs {base}: max difference {err:.2e} of the output's scale (tolerance {tol:.0e})"
                );
                if err.is_nan() || err > tol {
                    failures.push(format!(
                        "{name}: {kind} vs {base} differ by {err:.2e} > {tol:.0e}"
                    ));
                }
                let row = serde_json::json!({"op": name, "device": kind.to_string(), "against": base.to_string(), "max_rel_diff": err, "tolerance": tol});
                rows.push(row);
            }
        }
    }
    if let Some(path) = std::env::var_os("DAWIN_DEVICE_TABLE") {
        std::fs::write(path, serde_json::to_string_pretty(&rows).unwrap()).unwrap();
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// An executor that counts what crosses to the device: staged uploads and
/// plain writes, by element count.
struct Counting<'e> {
    inner: &'e dyn Executor,
    staged: std::cell::RefCell<Vec<usize>>,
    written: std::cell::RefCell<Vec<usize>>,
}

impl Executor for Counting<'_> {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn alloc_raw(&self, dtype: DType, len: usize) -> dawin::error::Result<Buf> {
        self.inner.alloc_raw(dtype, len)
    }
    fn free(&self, buf: Buf) {
        self.inner.free(buf)
    }
    fn write_bytes(&self, dst: Buf, bytes: &[u8]) -> dawin::error::Result<()> {
        self.written.borrow_mut().push(dst.len);
        self.inner.write_bytes(dst, bytes)
    }
    fn read_bytes(&self, src: Buf, out: &mut [u8]) -> dawin::error::Result<()> {
        self.inner.read_bytes(src, out)
    }
    fn upload_ahead_bytes(&self, dtype: DType, len: usize, b: &[u8]) -> dawin::error::Result<Buf> {
        self.staged.borrow_mut().push(len);
        self.inner.upload_ahead_bytes(dtype, len, b)
    }
    fn run_op(&self, op: &Op) -> dawin::error::Result<()> {
        self.inner.run_op(op)
    }
    fn synchronize(&self) -> dawin::error::Result<()> {
        self.inner.synchronize()
    }
    fn mark(&self) -> dawin::error::Result<usize> {
        self.inner.mark()
    }
    fn elapsed_ms(&self, start: usize, end: usize) -> dawin::error::Result<f64> {
        self.inner.elapsed_ms(start, end)
    }
    fn reset_marks(&self) {
        self.inner.reset_marks()
    }
}

impl Counting<'_> {
    /// Staged uploads and plain writes of whole images since the last take,
    /// as image counts.
    fn take_images(&self, img: usize) -> (Vec<usize>, Vec<usize>) {
        let images = |v: &mut Vec<usize>| -> Vec<usize> {
            let all = std::mem::take(v);
            all.into_iter()
                .filter(|l| l % img == 0)
                .map(|l| l / img)
                .collect()
        };
        (
            images(&mut self.staged.borrow_mut()),
            images(&mut self.written.borrow_mut()),
        )
    }
}

/// The batch a loader would hand over next.
struct Next<'p>(dawin::model::batch::Images<'p>);

impl dawin::model::batch::Lookahead for Next<'_> {
    fn peek(&mut self) -> Option<dawin::model::batch::Images<'_>> {
        Some(self.0)
    }
}

/// Each next chunk's images are staged during the current chunk's forward
/// (on cuda, a second stream's copy the compute stream waits for) and used
/// instead of a second upload; a stage for another batch is not. Logits
/// are the same as without staging, bit for bit.
#[test]
fn next_batches_are_staged_during_the_forward_and_used_once() {
    use dawin::method::engine::Engine;
    use dawin::model::batch::{BatchCap, Images};
    use dawin::model::{Act, Model, device::Precision};
    for (kind, ex) in executors() {
        let counting = Counting {
            inner: ex.as_ref(),
            staged: Default::default(),
            written: Default::default(),
        };
        let spec = crate::common::small_spec(5, Act::QuickGelu);
        let img = spec.channels * spec.image_size * spec.image_size;
        let (pt, ft) = (Model::random(spec.clone(), 1), Model::random(spec, 2));
        let mut engine = Engine::new(&counting, &pt, &ft, Precision::F32).unwrap();
        engine.cap = BatchCap::new(3);
        let (a, b) = (data(5, 7 * img, 1.0), data(6, 4 * img, 1.0));
        let (la, lb) = (data(7, 7, 0.3), data(8, 4, 0.3));
        let want_a = engine.dual_logits(&a, 7, &la).unwrap();
        let want_b = engine.dual_logits(&b, 4, &lb).unwrap();
        counting.take_images(img);

        let images = |pixels, n, serial| Images {
            pixels,
            n,
            serial: Some(serial),
        };
        let mut next = Next(images(&b, 4, 2));
        let got_a = engine
            .dual_logits_ahead(images(&a, 7, 1), &la, Some(&mut next))
            .unwrap();
        // Chunks of 3, 3 and 1: the first uploaded, the other two staged,
        // then the next batch's first chunk of 3.
        assert_eq!(
            counting.take_images(img),
            (vec![3, 1, 3], vec![3]),
            "{kind}"
        );
        let got_b = engine
            .dual_logits_ahead(images(&b, 4, 2), &lb, None)
            .unwrap();
        assert_eq!(
            counting.take_images(img),
            (vec![1], vec![]),
            "{kind}: stage unused"
        );
        assert_eq!((got_a, got_b), (want_a, want_b.clone()), "{kind}");

        // A stage made for batch 3 is not used by batch 4's call.
        let mut next = Next(images(&a, 7, 3));
        engine
            .dual_logits_ahead(images(&b, 4, 2), &lb, Some(&mut next))
            .unwrap();
        counting.take_images(img);
        let got = engine
            .dual_logits_ahead(images(&b, 4, 4), &lb, None)
            .unwrap();
        assert_eq!(counting.take_images(img), (vec![1], vec![3]), "{kind}");
        assert_eq!(got, want_b, "{kind}");
    }
}
