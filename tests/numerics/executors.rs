//! Every op of the registry, on the example its own file gives
//! (`src/ops/<op>.rs`, `OpExample`), run on each executor of the build
//! (`DAWIN_TEST_DEVICES`: cpu and emu here; add cuda on a GPU) and compared
//! with the cpu executor, against the op's stated tolerance. Each executor
//! is a test of its own, and a disagreement names the op and the executor,
//! so a bug is located in one kernel on one executor. With
//! `DAWIN_DEVICE_TABLE=FILE` the rows are also added to that JSON file.

use crate::common::{data, rel_err};
use dawin::buf::{Buf, DType};
use dawin::exec::{self, Executor, ExecutorKind, OwnedBuf};
use dawin::ops::example::{ExampleDef, ExampleInputs, Uploader};
use dawin::ops::{Op, PTX_MODULES};
use half::bf16;

/// Buffers of examples on one executor, freed when it drops.
struct Held<'e> {
    ex: &'e dyn Executor,
    bufs: Vec<OwnedBuf<'e>>,
}

impl Uploader for Held<'_> {
    fn upload(&mut self, dtype: DType, bytes: &[u8]) -> Buf {
        let b = self.ex.alloc_as(dtype, bytes.len() / dtype.size()).unwrap();
        self.ex.write_bytes(*b, bytes).unwrap();
        self.keep(b)
    }
    fn zeros(&mut self, dtype: DType, len: usize) -> Buf {
        let b = self.ex.alloc_as(dtype, len).unwrap();
        self.keep(b)
    }
}

impl<'e> Held<'e> {
    fn keep(&mut self, b: OwnedBuf<'e>) -> Buf {
        let buf = *b;
        self.bufs.push(b);
        buf
    }
}

/// The example's output on one executor, as f32.
fn run_example(def: &ExampleDef, kind: ExecutorKind, ex: &dyn Executor) -> Vec<f32> {
    let mut held = Held { ex, bufs: vec![] };
    let (op, out) = (def.build)(&mut ExampleInputs::new(&mut held));
    ex.run_op(&op)
        .unwrap_or_else(|e| panic!("{} on {kind}: {e}", def.name));
    values(ex, out)
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

/// Every registered op has an example, and every kernel file an op.
#[test]
fn every_op_has_an_example() {
    let names: Vec<&str> = dawin::ops::examples().iter().map(|d| d.name).collect();
    let kernels: Vec<&str> = PTX_MODULES
        .iter()
        .map(|(f, _)| f.trim_end_matches(".ptx"))
        .collect();
    assert_eq!(names, kernels);
}

crate::per_executor! {
    /// Every op's example on this executor against the cpu executor.
    fn every_op_agrees_with_cpu(kind, ex) {
        let cpu = exec::open(ExecutorKind::Cpu).unwrap();
        let mut rows = Vec::new();
        let mut failures = Vec::new();
        for def in dawin::ops::examples() {
            let want = run_example(&def, ExecutorKind::Cpu, cpu.as_ref());
            let got = run_example(&def, kind, ex);
            let (name, tol, err) = (def.name, def.tolerance, rel_err(&got, &want));
            eprintln!("{name:<16} {kind} vs cpu: max difference {err:.2e} of the output's scale (tolerance {tol:.0e})");
            if err.is_nan() || err > tol {
                failures.push(format!("{name}: {kind} vs cpu differ by {err:.2e} > {tol:.0e}"));
            }
            rows.push(serde_json::json!({"op": name, "device": kind.to_string(), "against": "cpu", "max_rel_diff": err, "tolerance": tol}));
        }
        if kind != ExecutorKind::Cpu {
            add_to_table(rows);
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }
}

/// Adds rows to the `DAWIN_DEVICE_TABLE` JSON list, if one is asked for;
/// the executors' tests run in parallel, so one at a time.
fn add_to_table(rows: Vec<serde_json::Value>) {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let Some(path) = std::env::var_os("DAWIN_DEVICE_TABLE") else {
        return;
    };
    let _one = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut all: Vec<serde_json::Value> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    all.extend(rows);
    std::fs::write(path, serde_json::to_string_pretty(&all).unwrap()).unwrap();
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
    fn timing(&self) -> &dyn dawin::exec::Timing {
        self.inner.timing()
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

crate::per_executor! {
    /// Each next chunk's images are staged during the current chunk's forward
    /// (on cuda, a second stream's copy the compute stream waits for) and used
    /// instead of a second upload; a stage for another batch is not. Logits
    /// are the same as without staging, bit for bit.
    fn next_batches_are_staged_during_the_forward_and_used_once(kind, ex) {
        use dawin::method::engine::Engine;
        use dawin::model::batch::{BatchCap, Images};
        use dawin::model::{Act, Model, placed::Precision};
        let counting = Counting {
            inner: ex,
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

        fn images(pixels: &[f32], n: usize, serial: u64) -> Images<'_> {
            Images {
                pixels: pixels.into(),
                n,
                serial: Some(serial),
            }
        }
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

    /// u8 images, normalised by the forward's first op (patch_embed_u8),
    /// staged or not, give the logits of the same images normalised on the
    /// host, bit for bit.
    fn u8_images_give_the_logits_of_host_normalised_ones(kind, ex) {
        use dawin::data::preprocess::{CLIP_NORMALIZATION, normalize};
        use dawin::method::engine::Engine;
        use dawin::model::batch::{BatchCap, Images};
        use dawin::model::pixels::HostPixels;
        use dawin::model::{Act, Model, placed::Precision};
        let spec = crate::common::small_spec(5, Act::QuickGelu);
        let plane = spec.image_size * spec.image_size;
        let img = spec.channels * plane;
        let (pt, ft) = (Model::random(spec.clone(), 1), Model::random(spec, 2));
        let mut engine = Engine::new(ex, &pt, &ft, Precision::F32).unwrap();
        engine.cap = BatchCap::new(3);
        let bytes: Vec<u8> = (0..7 * img).map(|i| (i * 7919 % 251) as u8).collect();
        let mut host = vec![0f32; bytes.len()];
        normalize(&bytes, &mut host, plane);
        let lam = data(9, 7, 0.3);
        let want = engine.dual_logits(&host, 7, &lam).unwrap();
        let u8s = |serial| Images {
            pixels: HostPixels::U8(&bytes, CLIP_NORMALIZATION),
            n: 7,
            serial,
        };
        // Chunks of 3, 3 and 1: the later two staged during the forward.
        let got = engine.dual_logits_ahead(u8s(Some(1)), &lam, None).unwrap();
        assert_eq!(got, want, "{kind}: u8, staged");
        let got = engine.dual_logits_ahead(u8s(None), &lam, None).unwrap();
        assert_eq!(got, want, "{kind}: u8");
    }
}
