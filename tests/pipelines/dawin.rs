//! DaWin end to end: per-sample λ and predictions equal the official route
//! (each sample through its own merged HF model, tools/make_fixtures.py),
//! `exact` and `materialize` agree, the Beta mixture recovers known
//! mixtures, and bad inputs are explained.

use crate::common::{assert_close, fixtures_dir};
use dawin::data::projection::Projection;
use dawin::method::bmm::BetaMixture;
use dawin::method::interp::{Interp, PerSample};
use dawin::method::lambda::LambdaRule;
use dawin::method::methods::Method;
use dawin::model::Overrides;
use dawin::pipelines::eval::{self, EvalOptions};
use dawin::rng::SplitMix;
use dawin::tensorfile::{Tensor, TensorFile, write_f32_with_labels};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fx(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

fn options(out: &Path, interp: Interp) -> EvalOptions {
    EvalOptions {
        pretrained: fx("dawin_pt.safetensors"),
        finetuned: fx("dawin_ft.safetensors"),
        data: fx("dawin_data.safetensors"),
        out_dir: out.to_path_buf(),
        batch_size: 5,
        interp,
        methods: Method::parse_list(
            "zeroshot,finetuned,wise-ft:0.5,ensemble,ensemble-dynamic,dawin",
        )
        .unwrap(),
        progress: false,
        ..EvalOptions::default()
    }
}

fn expected(name: &str) -> Vec<f32> {
    TensorFile::open(&fx("dawin_expected.safetensors"))
        .unwrap()
        .read_f32(name)
        .unwrap()
        .data
}

fn argmax(v: &[f32], c: usize) -> Vec<usize> {
    v.chunks(c)
        .map(|r| (0..c).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap())
        .collect()
}

crate::per_executor! {
    fn exact_and_materialize_are_each_samples_own_merged_model(kind, ex) {
        let want_lambda = expected("lambda");
        let want_logits = expected("dawin_logits");
        let mut all = Vec::new();
        for strategy in [
            Interp::PerSample(PerSample::Exact),
            Interp::PerSample(PerSample::Materialize),
        ] {
            let d = tempfile::tempdir().unwrap();
            let r = eval::run(&options(d.path(), strategy), ex).unwrap();
            assert_close(
                &format!("λ on {kind} ({strategy})"),
                &r.lambdas,
                &want_lambda,
                1e-5,
            );
            let got = r.dawin_logits.clone().unwrap();
            assert_close(
                &format!("DaWin logits on {kind} ({strategy})"),
                &got,
                &want_logits,
                1e-4,
            );
            assert_eq!(
                r.predictions["dawin"],
                argmax(&want_logits, 6),
                "{kind} {strategy}"
            );
            all.push(got);
        }
        // The two strategies agree with each other to 1e-4 as well.
        assert_close(
            &format!("exact vs materialize on {kind}"),
            &all[0],
            &all[1],
            1e-4,
        );
    }
}

crate::per_executor! {
    /// `--interp batchwise:B` (T³_B's batch-wise merging): each run of B
    /// consecutive samples through one model merged at the mean of their
    /// official λs, built here by an f64 lerp of the weights.
    fn batchwise_runs_each_batch_through_its_mean_lambda(kind, ex) {
        let d = tempfile::tempdir().unwrap();
        let r = eval::run(&options(d.path(), Interp::Batchwise(6)), ex).unwrap();
        let lam = expected("lambda");
        let pt = dawin::model::Model::load(&fx("dawin_pt.safetensors"), Overrides::default()).unwrap();
        let ft = dawin::model::Model::load(&fx("dawin_ft.safetensors"), Overrides::default()).unwrap();
        let px = TensorFile::open(&fx("dawin_data.safetensors")).unwrap().read_f32("pixel_values").unwrap();
        let per = px.data.len() / 16;
        let cpu = dawin::exec::cpu::Cpu::new();
        let mut want = Vec::new();
        for (g, group) in lam.chunks(6).enumerate() {
            let mean = group.iter().map(|&v| v as f64).sum::<f64>() / group.len() as f64;
            let mut m = pt.clone();
            for (v, (a, b)) in m.flat.iter_mut().zip(pt.flat.iter().zip(&ft.flat)) {
                *v = ((1.0 - mean) * *a as f64 + mean * *b as f64) as f32;
            }
            let dm = dawin::model::placed::PlacedModel::upload(&cpu, &m).unwrap();
            let images = &px.data[g * 6 * per..(g * 6 + group.len()) * per];
            let z = dawin::model::vit::forward(&cpu, &dm, images, group.len(), None).unwrap();
            want.extend(z.logits.unwrap());
        }
        assert_close(&format!("batchwise:6 on {kind}"), &r.dawin_logits.unwrap(), &want, 1e-4);
        assert_eq!(r.summary["interp"], "batchwise:6");
        // One merged model per batch of 6 of the 16 samples, and wise-ft:0.5's.
        assert_eq!(r.summary["lerps"], 3 + 1);
    }
}

crate::per_executor! {
    /// The whole DaWin evaluation in bf16 (tensor-core kernels) against the
    /// f32 expected values: λ within 2e-2, logits within 2.5e-2 of their scale,
    /// predictions ≥ 90% equal (the fixture has few samples), for exact and
    /// materialize (the bf16 linear weights lerped in bf16 by `lerp_bf16`).
    fn bf16_eval_follows_the_f32_results(kind, ex) {
        let want_lambda = expected("lambda");
        let want_logits = expected("dawin_logits");
        let want_pred = argmax(&want_logits, 6);
        let pt = dawin::model::Model::load(&fx("dawin_pt.safetensors"), Overrides::default()).unwrap();
        let linears: Vec<usize> = pt
            .params
            .blocks
            .iter()
            .flat_map(|b| [&b.qkv_w, &b.out_w, &b.fc1_w, &b.fc2_w])
            .map(|r| r.len())
            .collect();
        let bf16_values: usize = linears.iter().map(|l| l.next_multiple_of(8)).sum();
        let per_model_bytes = 4 * (pt.param_count() - linears.iter().sum::<usize>()) + 2 * bf16_values;
        for strategy in [
            Interp::PerSample(PerSample::Exact),
            Interp::PerSample(PerSample::Materialize),
        ] {
            let d = tempfile::tempdir().unwrap();
            let mut o = options(d.path(), strategy);
            o.precision = dawin::model::placed::Precision::Bf16;
            let r = eval::run(&o, ex).unwrap();
            let what = format!("bf16 on {kind} ({strategy})");
            assert_close(&format!("λ {what}"), &r.lambdas, &want_lambda, 2e-2);
            let got = r.dawin_logits.clone().unwrap();
            assert_close(&format!("logits {what}"), &got, &want_logits, 2.5e-2);
            let same = r.predictions["dawin"]
                .iter()
                .zip(&want_pred)
                .filter(|(a, b)| a == b)
                .count();
            eprintln!(
                "{what}: λ error {:.2e}, logit error {:.2e}, {same} of {} predictions equal",
                crate::common::rel_err(&r.lambdas, &want_lambda),
                crate::common::rel_err(&got, &want_logits),
                want_pred.len()
            );
            assert!(
                same as f64 >= 0.9 * want_pred.len() as f64,
                "{what}: {same} of {} predictions equal",
                want_pred.len()
            );
            assert_eq!(r.summary["precision"], "bf16");
            // Both models and the merged one (wise-ft, and materialize's
            // DaWin) hold their linear weights once, in bf16 (each padded
            // to 8 values).
            let models = 3;
            let bytes = r.summary["device_param_bytes"].as_u64().unwrap() as usize;
            eprintln!(
                "{what}: {bytes} parameter bytes on the device, {} in f32",
                models * 4 * pt.param_count()
            );
            assert_eq!(bytes, models * per_model_bytes, "{what}");
        }
    }
}

#[test]
fn cli_eval_writes_the_reports_and_reuses_its_cache() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let run = |interp: &str, methods: &str| {
        let o = Command::new(crate::common::dawin_bin())
            .args(["eval", "--pretrained"])
            .arg(fx("dawin_pt.safetensors"))
            .arg("--finetuned")
            .arg(fx("dawin_ft.safetensors"))
            .arg("--data")
            .arg(fx("dawin_data.safetensors"))
            .arg("--out-dir")
            .arg(&out)
            .args(["--interp", interp, "--methods", methods, "--quiet"])
            .output()
            .unwrap();
        let text =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{text}");
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap())
                .unwrap();
        (s, text)
    };
    let (s, text) = run("exact", "all");
    assert!(
        text.contains("dawin") && text.contains("wise-ft:0.5"),
        "{text}"
    );
    let labels = TensorFile::open(&fx("dawin_data.safetensors"))
        .unwrap()
        .read_i64("labels")
        .unwrap()
        .1;
    let want: Vec<usize> = argmax(&expected("dawin_logits"), 6);
    let correct = want
        .iter()
        .zip(&labels)
        .filter(|(p, y)| **p as i64 == **y)
        .count();
    assert_eq!(s["methods"]["dawin"]["correct"], correct);
    assert_eq!(s["methods"]["dawin"]["count"], 16);
    for name in [
        "zeroshot",
        "finetuned",
        "wise-ft:0.1",
        "wise-ft:0.9",
        "ensemble",
        "ensemble-dynamic",
    ] {
        assert!(s["methods"][name]["accuracy"].is_number(), "{name} missing");
    }
    assert_eq!(s["cache"], "computed");
    for k in ["mean", "std", "min", "max"] {
        assert!(s["lambda"][k].is_number());
    }
    let csv = std::fs::read_to_string(out.join("samples.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    assert!(header.starts_with("index,label,entropy_pt,entropy_ft,lambda,component,pred_zeroshot,pred_finetuned,pred_wise-ft:0.1"), "{header}");
    assert_eq!(csv.lines().count(), 17);
    // Samples.csv λ column equals the official λ.
    let lam: Vec<f32> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(4).unwrap().parse().unwrap())
        .collect();
    assert_close("samples.csv λ", &lam, &expected("lambda"), 1e-5);
    assert!(
        std::fs::read_to_string(out.join("lambdas.svg"))
            .unwrap()
            .starts_with("<svg")
    );
    // Second run with another strategy: the expertise pass comes from the cache.
    let (s, _) = run("bmm:2", "zeroshot,finetuned,dawin");
    assert_eq!(s["cache"], "hit");
    assert_eq!(s["bmm"]["alpha"].as_array().unwrap().len(), 2);
    let svg = std::fs::read_to_string(out.join("lambdas.svg")).unwrap();
    assert!(
        svg.contains("polyline") && svg.contains("component 1: mean λ"),
        "mixture drawn over the histogram"
    );
    let csv = std::fs::read_to_string(out.join("samples.csv")).unwrap();
    assert!(
        csv.lines()
            .skip(1)
            .all(|l| matches!(l.split(',').nth(5), Some("0") | Some("1")))
    );
}

/// Marsaglia–Tsang gamma sampler, for Beta draws.
fn gamma(r: &mut SplitMix, a: f64) -> f64 {
    if a < 1.0 {
        return gamma(r, a + 1.0) * (r.uniform() as f64).max(1e-12).powf(1.0 / a);
    }
    let d = a - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = r.normal() as f64;
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = (r.uniform() as f64).max(1e-12);
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

#[test]
fn bmm_recovers_known_mixtures() {
    let truth = [(0.3, 2.0, 12.0), (0.5, 30.0, 30.0), (0.2, 14.0, 2.0)];
    let mut r = SplitMix(11);
    let mut x = Vec::new();
    for &(w, a, b) in &truth {
        for _ in 0..(w * 6000.0) as usize {
            let (ga, gb) = (gamma(&mut r, a), gamma(&mut r, b));
            x.push((ga / (ga + gb)) as f32);
        }
    }
    let m = BetaMixture::fit(&x, 3, 1).unwrap();
    let mut got: Vec<(f64, f64)> = m
        .means()
        .into_iter()
        .zip(m.weights.iter().copied())
        .collect();
    got.sort_by(|a, b| a.0.total_cmp(&b.0));
    for ((mean, w), &(tw, a, b)) in got.iter().zip(&truth) {
        let tm = a / (a + b);
        assert!((mean - tm).abs() < 0.02, "mean {mean} vs {tm} ({got:?})");
        assert!((w - tw).abs() < 0.05, "weight {w} vs {tw} ({got:?})");
    }
    // The most probable component of a clear-cut value is the right one.
    let comp = m.predict(&[0.05, 0.5, 0.97]);
    let means = m.means();
    assert!(means[comp[0]] < 0.3 && (means[comp[1]] - 0.5).abs() < 0.1 && means[comp[2]] > 0.7);
    // Degenerate inputs still fit: one value, values at 0 and 1 exactly.
    assert!(BetaMixture::fit(&[0.7; 10], 3, 1).is_some());
    let ends = BetaMixture::fit(&[0.0, 0.0, 1.0, 1.0, 1.0], 2, 1).unwrap();
    assert!(ends.means().iter().all(|m| m.is_finite()));
}

#[test]
fn label_projection_subset_and_map() {
    let p = Projection::Subset(vec![4, 1]);
    assert_eq!(p.apply(&[0., 1., 2., 3., 4., 5.], 6), vec![4., 1.]);
    let m = Projection::Map(vec![vec![0, 5], vec![2, 3, 1]]);
    assert_eq!(m.apply(&[0., 1., 2., 3., 4., 5.], 6), vec![5., 3.]);
    assert!(Projection::Subset(vec![6]).check(6).is_err());
    // Through eval: a 2-class subset; the labels must index into it.
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("sub.safetensors");
    let io = TensorFile::open(&fx("dawin_data.safetensors")).unwrap();
    let px = io.read_f32("pixel_values").unwrap();
    let labels: Vec<i64> = (0..16).map(|i| i % 2).collect();
    write_f32_with_labels(&data, &px, &labels).unwrap();
    let mut o = options(&d.path().join("out"), Interp::PerSample(PerSample::Exact));
    o.data = data;
    o.projection = Projection::Subset(vec![3, 5]);
    let ex = dawin::exec::open(dawin::exec::ExecutorKind::Cpu).unwrap();
    let r = eval::run(&o, ex.as_ref()).unwrap();
    assert!(r.predictions["dawin"].iter().all(|&p| p < 2));
    // Entropy over 2 classes is at most ln 2.
    assert!(r.entropies.pt.iter().all(|&h| h <= 2f64.ln() + 1e-6));
}

fn eval_err(o: &EvalOptions) -> String {
    let ex = dawin::exec::open(dawin::exec::ExecutorKind::Cpu).unwrap();
    match eval::run(o, ex.as_ref()) {
        Ok(_) => panic!("must fail"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_inputs_are_explained() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    // Architectures differ: the shapes that differ are listed.
    let mut o = options(&out, Interp::PerSample(PerSample::Exact));
    o.finetuned = fx("hf_quickgelu.safetensors");
    let e = eval_err(&o);
    assert!(
        e.contains("different architectures") && e.contains("conv1.weight"),
        "{e}"
    );
    // Head sizes differ.
    let mut t: Vec<(String, Tensor)> = Vec::new();
    let f = TensorFile::open(&fx("dawin_ft.safetensors")).unwrap();
    for n in f.names() {
        let mut x = f.read_f32(&n).unwrap();
        if n.starts_with("classification_head") {
            let cols = x.shape.get(1).copied().unwrap_or(1);
            x.shape[0] = 5;
            x.data.truncate(5 * cols);
        }
        t.push((n, x));
    }
    let refs: Vec<(&str, &Tensor)> = t.iter().map(|(n, x)| (n.as_str(), x)).collect();
    let ft5 = d.path().join("ft5.safetensors");
    dawin::tensorfile::write_f32(
        &ft5,
        &refs,
        Some([("heads".to_string(), "3".to_string())].into()),
    )
    .unwrap();
    let mut o = options(&out, Interp::PerSample(PerSample::Exact));
    o.finetuned = ft5;
    let e = eval_err(&o);
    assert!(
        e.contains("classification_head.weight: 96 vs 80 elements") || e.contains("class counts"),
        "{e}"
    );
    // Same shapes, but both files say their heads and disagree: refused,
    // naming both values and where each came from.
    let f = TensorFile::open(&fx("dawin_ft.safetensors")).unwrap();
    let all: Vec<(String, Tensor)> = f
        .names()
        .into_iter()
        .map(|n| (n.clone(), f.read_f32(&n).unwrap()))
        .collect();
    let refs: Vec<(&str, &Tensor)> = all.iter().map(|(n, x)| (n.as_str(), x)).collect();
    let ft1 = d.path().join("ft-1-head.safetensors");
    let meta = [("heads", "1"), ("act", "quick_gelu")].map(|(k, v)| (k.to_string(), v.to_string()));
    dawin::tensorfile::write_f32(&ft1, &refs, Some(meta.into())).unwrap();
    let mut o = options(&out, Interp::PerSample(PerSample::Exact));
    o.finetuned = ft1;
    let e = eval_err(&o);
    assert!(
        e.contains("disagree on heads")
            && e.contains("heads = 3 (from the file's metadata)")
            && e.contains("says 1"),
        "{e}"
    );
    // Label out of range, empty data, wrong input size.
    let io = TensorFile::open(&fx("dawin_data.safetensors")).unwrap();
    let px = io.read_f32("pixel_values").unwrap();
    let bad = d.path().join("bad.safetensors");
    let mut labels = vec![0i64; 16];
    labels[7] = 6;
    write_f32_with_labels(&bad, &px, &labels).unwrap();
    let mut o = options(&out, Interp::PerSample(PerSample::Exact));
    o.data = bad.clone();
    let e = eval_err(&o);
    assert!(
        e.contains("label 6") && e.contains("sample 7") && e.contains("6 classes"),
        "{e}"
    );
    write_f32_with_labels(
        &bad,
        &Tensor {
            shape: vec![0, 3, 24, 24],
            data: vec![],
        },
        &[],
    )
    .unwrap();
    assert!(eval_err(&o).contains("empty"), "{}", eval_err(&o));
    write_f32_with_labels(
        &bad,
        &Tensor {
            shape: vec![1, 3, 32, 32],
            data: vec![0.0; 3 * 32 * 32],
        },
        &[0],
    )
    .unwrap();
    let e = eval_err(&o);
    assert!(e.contains("32×32") && e.contains("24×24"), "{e}");
}

#[test]
fn nan_logits_count_as_maximal_entropy() {
    let d = tempfile::tempdir().unwrap();
    let io = TensorFile::open(&fx("dawin_data.safetensors")).unwrap();
    let mut px = io.read_f32("pixel_values").unwrap();
    px.data[3 * 24 * 24 * 2 + 5] = f32::NAN; // sample 2
    let labels = io.read_i64("labels").unwrap().1;
    let data = d.path().join("nan.safetensors");
    write_f32_with_labels(&data, &px, &labels).unwrap();
    let mut o = options(&d.path().join("out"), Interp::PerSample(PerSample::Exact));
    o.data = data;
    let ex = dawin::exec::open(dawin::exec::ExecutorKind::Cpu).unwrap();
    let r = eval::run(&o, ex.as_ref()).unwrap();
    assert!(
        (r.entropies.pt[2] - 6f64.ln()).abs() < 1e-9
            && (r.entropies.ft[2] - 6f64.ln()).abs() < 1e-9
    );
    assert!((r.lambdas[2] - 0.5).abs() < 1e-6);
    assert!(
        r.lambdas
            .iter()
            .enumerate()
            .all(|(i, l)| i == 2 || (*l - expected("lambda")[i]).abs() < 1e-5)
    );
}

#[test]
fn expertise_rules() {
    use dawin::method::lambda::{Entropies, Inputs, lambdas};
    let lp = [2.0f32, 0.0, 0.0, 0.0, 1.0, 0.0];
    let lf = [0.0f32, 3.0, 0.0, 0.0, 0.0, 0.0];
    let ent = Entropies {
        pt: vec![0.8, 1.0],
        ft: vec![0.5, 1.09],
    };
    let x = Inputs {
        logits_pt: &lp,
        logits_ft: &lf,
        classes: 3,
        labels: &[1, 1],
        entropies: &ent,
        offset: (0.2, 2.0),
        ..Inputs::default()
    };
    let e = lambdas(LambdaRule::Entropy, &x);
    approx::assert_relative_eq!(
        e[0],
        ((-0.5f64).exp() / ((-0.8f64).exp() + (-0.5f64).exp())) as f32,
        max_relative = 1e-6
    );
    let o = lambdas(LambdaRule::EntropyOffset, &x);
    let want = ((-0.5f64).exp() + 0.1) / ((-0.8f64).exp() + (-0.5f64).exp() + 0.2);
    approx::assert_relative_eq!(o[0], want as f32, max_relative = 1e-6);
    assert_eq!(lambdas(LambdaRule::Selective, &x), vec![1.0, 0.0]);
    let m = lambdas(LambdaRule::MaxLogit, &x);
    approx::assert_relative_eq!(m[0], 3.0 / 5.0, max_relative = 1e-6);
    let or = lambdas(LambdaRule::Oracle, &x);
    let p = |z: [f64; 3], y: usize| z[y].exp() / z.iter().map(|v| v.exp()).sum::<f64>();
    let (pp, pf) = (p([2.0, 0.0, 0.0], 1), p([0.0, 3.0, 0.0], 1));
    approx::assert_relative_eq!(or[0], (pf / (pp + pf)) as f32, max_relative = 1e-6);
    // Offset constants use Bessel-corrected std like torch.
    let (b, w) = dawin::method::lambda::offset_constants(&Entropies {
        pt: vec![1.0, 3.0],
        ft: vec![2.0, 2.0],
    });
    approx::assert_relative_eq!(b, (2f64.sqrt() / 2.0 + 0.0) / 2.0, max_relative = 1e-12);
    approx::assert_relative_eq!(w, 2.0, max_relative = 1e-12);
}

#[test]
fn methods_parse() {
    let m = Method::parse_list("zeroshot,wise-ft,wise-ft:0.25,dawin").unwrap();
    let names: Vec<String> = m.iter().map(Method::name).collect();
    assert_eq!(names[0], "zeroshot");
    assert_eq!(names[1], "wise-ft:0.1");
    assert_eq!(names[9], "wise-ft:0.9");
    assert_eq!(names[10], "wise-ft:0.25");
    assert!(Method::parse_list("wise-ft:1.5").is_err());
    assert!(
        Method::parse_list("magic")
            .unwrap_err()
            .contains("unknown method")
    );
    assert_eq!("bmm:5".parse::<Interp>().unwrap(), Interp::Bmm(5));
    assert_eq!("bmm".parse::<Interp>().unwrap(), Interp::Bmm(3));
    assert!("bmm:0".parse::<Interp>().is_err());
}

fn dawin_cli(args: &[&str]) -> String {
    let o = Command::new(crate::common::dawin_bin())
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "dawin {args:?}:\n{text}");
    text
}

/// Sharded expertise → merge → sharded eval → merge equals one whole run,
/// also for the statistics that need the whole set (entropy-offset, bmm).
#[test]
fn scale_out_equals_a_single_run() {
    let d = tempfile::tempdir().unwrap();
    let p = |s: &str| d.path().join(s).display().to_string();
    let (pt, ft, data) = (
        fx("dawin_pt.safetensors"),
        fx("dawin_ft.safetensors"),
        fx("dawin_data.safetensors"),
    );
    let (pt, ft, data) = (
        pt.to_str().unwrap(),
        ft.to_str().unwrap(),
        data.to_str().unwrap(),
    );
    let common = |out: &str| {
        vec![
            "--pretrained",
            pt,
            "--finetuned",
            ft,
            "--data",
            data,
            "--out-dir",
            out,
            "--quiet",
            "--batch-size",
            "3",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    // eval's default methods: the expertise step caches what they need.
    let eval_flags = ["--expertise", "entropy-offset", "--interp", "bmm:2"];
    let mut whole = vec!["eval".to_string()];
    whole.extend(common(&p("whole")));
    whole.extend(eval_flags.iter().map(|s| s.to_string()));
    dawin_cli(&whole.iter().map(String::as_str).collect::<Vec<_>>());
    for i in 0..3 {
        let mut a = vec!["expertise".to_string()];
        a.extend(common(&p(&format!("s{i}"))));
        a.extend(["--shard".to_string(), format!("{i}/3")]);
        dawin_cli(&a.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let shards: Vec<String> = (0..3)
        .map(|i| p(&format!("s{i}/expertise.safetensors")))
        .collect();
    let mut m = vec!["merge"];
    m.extend(shards.iter().map(String::as_str));
    let merged = p("merged.safetensors");
    m.extend(["--out", &merged]);
    dawin_cli(&m);
    for i in 0..3 {
        let mut a = vec!["eval".to_string()];
        a.extend(common(&p(&format!("s{i}"))));
        a.extend(eval_flags.iter().map(|s| s.to_string()));
        a.extend([
            "--shard".to_string(),
            format!("{i}/3"),
            "--expertise-from".to_string(),
            merged.clone(),
        ]);
        dawin_cli(&a.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let sums: Vec<String> = (0..3).map(|i| p(&format!("s{i}/summary.json"))).collect();
    let total = p("total.json");
    let mut m = vec!["merge"];
    m.extend(sums.iter().map(String::as_str));
    m.extend(["--out", &total]);
    dawin_cli(&m);
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap()
    };
    let (w, t) = (read(&p("whole/summary.json")), read(&total));
    assert_eq!(t["methods"]["dawin"]["count"], 16);
    // Every statistic is recomputed on the concatenated samples.csv: equal
    // to the whole run's (the bootstrap is seeded, the rows in one order).
    for key in ["methods", "paired", "statistics", "skipped", "bmm"] {
        assert_eq!(w[key], t[key], "{key}");
    }
    for (k, v) in w["lambda"].as_object().unwrap() {
        let (a, b) = (v.as_f64().unwrap(), t["lambda"][k].as_f64().unwrap());
        approx::assert_relative_eq!(a, b, max_relative = 1e-9);
    }
    let csv = |f: &str| std::fs::read_to_string(f).unwrap();
    assert_eq!(csv(&p("whole/samples.csv")), csv(&p("samples.csv")));
    for plot in ["lambdas.svg", "lambda_oracle.svg"] {
        assert!(csv(&p(plot)).starts_with("<svg"), "{plot}");
    }
    // Each shard's eval reused every logit its expertise step cached,
    // the WiSE-FT models' included.
    for i in 0..3 {
        assert_eq!(read(&p(&format!("s{i}/summary.json")))["cache"], "hit");
    }
    assert_eq!(t["cache"], "hit");
}

#[test]
fn wise_curve_plot_from_summaries() {
    let d = tempfile::tempdir().unwrap();
    let ex = dawin::exec::open(dawin::exec::ExecutorKind::Cpu).unwrap();
    let mut o = options(&d.path().join("a"), Interp::PerSample(PerSample::Exact));
    o.methods = Method::parse_list("all").unwrap();
    let r = eval::run(&o, ex.as_ref()).unwrap();
    let svg =
        dawin::report::summary::wise_curve_svg(&r.summary, std::slice::from_ref(&r.summary), "t")
            .unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("polyline") && svg.contains("DaWin"),
        "{svg}"
    );
    // Summaries without the curve's methods are refused, not drawn empty.
    let mut bare = r.summary.clone();
    bare["methods"] = serde_json::json!({"dawin": r.summary["methods"]["dawin"]});
    let e = dawin::report::summary::wise_curve_svg(&bare, std::slice::from_ref(&bare), "t");
    assert!(e.unwrap_err().to_string().contains("too few"));
}

/// A shard whose expertise file holds a NaN entropy for an evaluated
/// sample merges with that sample counted, and eval takes its entropy as
/// maximal (ln C), as a whole run takes a NaN one, instead of dropping it.
#[test]
fn a_nan_entropy_in_a_shard_is_taken_as_maximal() {
    let d = tempfile::tempdir().unwrap();
    let p = |s: &str| d.path().join(s).display().to_string();
    let fxs = |n: &str| fx(n).display().to_string();
    for i in 0..2 {
        let shard = format!("{i}/2");
        dawin_cli(&[
            "expertise",
            "--pretrained",
            &fxs("dawin_pt.safetensors"),
            "--finetuned",
            &fxs("dawin_ft.safetensors"),
            "--data",
            &fxs("dawin_data.safetensors"),
            "--out-dir",
            &p(&format!("s{i}")),
            "--quiet",
            "--shard",
            &shard,
        ]);
    }
    // Poison the first listed sample's pretrained entropy in shard 0.
    let s0 = d.path().join("s0/expertise.safetensors");
    let bytes = std::fs::read(&s0).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    let first = owned.iter_mut().find(|t| t.0 == "entropy_pt").unwrap();
    first.3[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, dt, sh, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*dt, sh.clone(), b).unwrap(),
            )
        })
        .collect();
    let out = safetensors::serialize(views, meta.metadata().clone()).unwrap();
    std::fs::write(&s0, out).unwrap();
    let merged = p("merged.safetensors");
    let text = dawin_cli(&[
        "merge",
        &p("s0/expertise.safetensors"),
        &p("s1/expertise.safetensors"),
        "--out",
        &merged,
    ]);
    assert!(text.contains("NaN or infinite entropy"), "{text}");
    let (e, _) = dawin::pipelines::shard::read_expertise(Path::new(&merged), 16, 10).unwrap();
    assert_eq!(e.pt.len(), 16, "the poisoned sample is still counted");
    assert!(e.pt.contains(&(10f64).ln()), "{:?}", e.pt);
}
