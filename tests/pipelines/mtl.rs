//! Multi-task DaWin against a host-side reference: coefficients from each
//! task model's entropy under the evaluated task's head, and each sample's
//! merged weights built on the host in f64, then run through the CPU forward.

use crate::common::{assert_close, executors};
use dawin::exec::cpu::Cpu;
use dawin::method::interp::PerSample;
use dawin::method::merging::{self, TiesMerge};
use dawin::model::placed::PlacedModel;
use dawin::model::stack::ModelStack;
use dawin::model::vit::{forward, forward_stacked};
use dawin::model::{Act, Model, ModelSpec, Overrides};
use dawin::pipelines::mtl::{self, MtlOptions};
use dawin::pipelines::mtl_tasks;
use dawin::rng::SplitMix;
use dawin::tensorfile::{Tensor, write_f32, write_f32_with_labels};
use std::path::{Path, PathBuf};

fn spec(classes: usize) -> ModelSpec {
    crate::common::small_spec(classes, Act::QuickGelu)
}

fn task(base: &Model, classes: usize, seed: u64) -> Model {
    let head = Model::random(spec(classes), seed);
    let mut m = base.with_head_of(&head);
    let mut r = SplitMix(seed + 100);
    let head_start = m.params.head_w.as_ref().unwrap().start;
    for v in &mut m.flat[..head_start] {
        *v += 0.2 * r.normal() * (0.05 + v.abs());
    }
    m
}

fn entropy(z: &[f32]) -> f64 {
    let s = dawin::ops::softmax_entropy::row(z, 1.0);
    s.entropy as f64
}

/// A base and three task models (heads of 5, 7 and 4 classes) saved in
/// `dir`: the base, the tasks and their paths.
fn three_tasks(dir: &Path) -> (Model, [Model; 3], Vec<PathBuf>) {
    let base = Model::random(spec(3), 1);
    let tasks = [task(&base, 5, 2), task(&base, 7, 3), task(&base, 4, 4)];
    let mut paths = Vec::new();
    base.save(&dir.join("base.safetensors")).unwrap();
    for (t, m) in tasks.iter().enumerate() {
        let p = dir.join(format!("task{t}.safetensors"));
        m.save(&p).unwrap();
        paths.push(p);
    }
    (base, tasks, paths)
}

/// n random 12×12 images with labels i mod `classes`, as `path`.
fn write_data(path: &Path, n: usize, classes: i64, seed: u64) -> Vec<f32> {
    let mut r = SplitMix(seed);
    let px: Vec<f32> = (0..n * 3 * 144).map(|_| r.normal()).collect();
    let labels: Vec<i64> = (0..n as i64).map(|i| i % classes).collect();
    write_f32_with_labels(
        path,
        &Tensor {
            shape: vec![n, 3, 12, 12],
            data: px.clone(),
        },
        &labels,
    )
    .unwrap();
    px
}

fn options(
    dir: &Path,
    tasks: &[PathBuf],
    task_index: usize,
    data: PathBuf,
    out: &str,
) -> MtlOptions {
    MtlOptions {
        base: dir.join("base.safetensors"),
        tasks: tasks.to_vec(),
        task_index,
        data,
        out_dir: dir.join(out),
        scale: 0.3,
        batch_size: 4,
        overrides: Overrides::default(),
        progress: false,
        ties: (0.2, TiesMerge::Mean, 1.0),
        heads: Vec::new(),
        per_sample: PerSample::Exact,
        domain_fits: Vec::new(),
        pixel_cache: None,
    }
}

#[test]
fn each_sample_runs_through_its_own_multi_task_merge() {
    let d = tempfile::tempdir().unwrap();
    let (base, tasks, paths) = three_tasks(d.path());
    let n = 6;
    let data = d.path().join("data.safetensors");
    let px = write_data(&data, n, 7, 9);

    // Host reference for task 1.
    let cpu = Cpu::new();
    let eval_head = &tasks[1];
    let with_head: Vec<Model> = tasks.iter().map(|m| m.with_head_of(eval_head)).collect();
    let base_h = base.with_head_of(eval_head);
    let mut want_logits = Vec::new();
    let mut want_coef = Vec::new();
    for i in 0..n {
        let x = &px[i * 432..(i + 1) * 432];
        let h: Vec<f64> = with_head
            .iter()
            .map(|m| {
                let dm = PlacedModel::upload(&cpu, m).unwrap();
                entropy(&forward(&cpu, &dm, x, 1, None).unwrap().logits.unwrap())
            })
            .collect();
        let e: Vec<f64> = h.iter().map(|v| (-v).exp()).collect();
        let z: f64 = e.iter().sum();
        let c: Vec<f64> = e.iter().map(|v| v / z).collect();
        let mut merged = base_h.clone();
        for (k, v) in merged.flat.iter_mut().enumerate() {
            let mut acc = base_h.flat[k] as f64;
            for (t, m) in with_head.iter().enumerate() {
                acc += 0.3 * 3.0 * c[t] * (m.flat[k] as f64 - base_h.flat[k] as f64);
            }
            *v = acc as f32;
        }
        let dm = PlacedModel::upload(&cpu, &merged).unwrap();
        want_logits.extend(forward(&cpu, &dm, x, 1, None).unwrap().logits.unwrap());
        want_coef.extend(c.iter().map(|&v| v as f32));
    }
    // The one-model merges on the host: the domain-wise model from the mean
    // coefficients, the plain average of the task models, TIES.
    let t_count = with_head.len();
    let mean_c: Vec<f64> = (0..t_count)
        .map(|t| {
            (0..n)
                .map(|i| want_coef[i * t_count + t] as f64)
                .sum::<f64>()
                / n as f64
        })
        .collect();
    let merged_with = |k: &dyn Fn(usize) -> f64| {
        let mut m = base_h.clone();
        for (j, v) in m.flat.iter_mut().enumerate() {
            let b = base_h.flat[j] as f64;
            let acc: f64 = (0..t_count)
                .map(|t| k(t) * (with_head[t].flat[j] as f64 - b))
                .sum();
            *v = (b + acc) as f32;
        }
        m
    };
    let ties_model = official_ties(&base_h, &with_head, 0.2);
    let logits_of = |m: &Model| {
        let dm = PlacedModel::upload(&cpu, m).unwrap();
        forward(&cpu, &dm, &px, n, None).unwrap().logits.unwrap()
    };
    let one_model_refs: Vec<(&str, Vec<f32>)> = vec![
        (
            "dawin-domain",
            logits_of(&merged_with(&|t| 0.3 * 3.0 * mean_c[t])),
        ),
        ("weight-average", logits_of(&merged_with(&|_| 1.0 / 3.0))),
        ("ties", logits_of(&ties_model)),
    ];
    // Both ways of running each sample's own merge: batched through the
    // stacked ops, and built per sample at batch 1.
    for (kind, ex, mode) in executors().into_iter().flat_map(|(k, e)| {
        let e: std::rc::Rc<dyn dawin::exec::Executor> = e.into();
        [PerSample::Exact, PerSample::Materialize].map(move |m| (k, e.clone(), m))
    }) {
        let mut o = options(
            d.path(),
            &paths,
            1,
            data.clone(),
            &format!("out-{kind}-{mode:?}"),
        );
        o.per_sample = mode;
        let kind = format!("{kind} {mode:?}");
        let res = mtl::run(&o, ex.as_ref()).unwrap();
        let statics: std::collections::HashMap<_, _> = res.static_logits.iter().cloned().collect();
        for (name, model) in &one_model_refs {
            assert_close(&format!("{name} on {kind}"), &statics[*name], model, 1e-4);
        }
        let coef: Vec<f32> = res.coefficients.concat();
        assert_close(&format!("coefficients on {kind}"), &coef, &want_coef, 1e-5);
        assert_close(
            &format!("merged logits on {kind}"),
            &res.dawin_logits,
            &want_logits,
            1e-4,
        );
        for name in [
            "dawin",
            "dawin-domain",
            "task-arithmetic",
            "weight-average",
            "ties",
            "task:0",
            "task:1",
            "task:2",
        ] {
            assert_eq!(res.summary["methods"][name]["count"], n, "{name}");
        }
    }
    // Errors: task index out of range, mismatched architectures.
    let mut o = options(d.path(), &paths, 3, data.clone(), "x");
    let ex = Cpu::new();
    assert!(
        mtl::run(&o, &ex)
            .err()
            .unwrap()
            .to_string()
            .contains("--task-index 3")
    );
    o.task_index = 0;
    o.tasks
        .push(crate::common::fixtures_dir().join("dawin_pt.safetensors"));
    assert!(
        mtl::run(&o, &ex)
            .err()
            .unwrap()
            .to_string()
            .contains("different architectures")
    );
}

#[test]
fn every_task_on_its_own_data_in_one_run() {
    let d = tempfile::tempdir().unwrap();
    let (_, _, paths) = three_tasks(d.path());
    let data: Vec<PathBuf> = [5, 7, 4]
        .iter()
        .enumerate()
        .map(|(t, &c)| {
            let p = d.path().join(format!("data{t}.safetensors"));
            write_data(&p, 5 + t, c, 20 + t as u64);
            p
        })
        .collect();
    let ex = Cpu::new();
    let all = options(d.path(), &paths, 0, PathBuf::new(), "all");
    let r = mtl_tasks::run(&all, &data, &ex).unwrap();
    let acc = |v: &serde_json::Value| v.as_f64().unwrap();
    let alone: Vec<mtl::MtlResult> = data
        .iter()
        .enumerate()
        .map(|(t, p)| {
            mtl::run(
                &options(d.path(), &paths, t, p.clone(), &format!("one{t}")),
                &ex,
            )
            .unwrap()
        })
        .collect();
    for row in [
        "dawin",
        "dawin-domain",
        "task-arithmetic",
        "weight-average",
        "ties",
        "individual",
    ] {
        let mut sum = 0.0;
        for (t, one) in alone.iter().enumerate() {
            let name = if row == "individual" {
                format!("task:{t}")
            } else {
                row.to_string()
            };
            let want = acc(&one.summary["methods"][&name]["accuracy"]);
            assert_eq!(
                acc(&r.summary["methods"][row]["accuracy"][t]),
                want,
                "{row} task {t}"
            );
            sum += want;
        }
        let mean = acc(&r.summary["methods"][row]["mean"]);
        assert!((mean - sum / 3.0).abs() < 1e-12, "{row}: {mean}");
    }
    assert_eq!(r.runs[2].summary["methods"]["dawin"]["count"], 7);
    assert!(d.path().join("all/task-2/summary.json").is_file());
    assert!(d.path().join("all/tasks.json").is_file() && r.table.contains("mean"));
    let e = mtl_tasks::run(&all, &data[..2], &ex).err().unwrap();
    assert!(e.to_string().contains("one data set per task"), "{e}");
}

/// Writes `m`'s head alone as `path` (tensors `name`weight / `name`bias).
fn save_head(m: &Model, path: &Path, name: &str, bias: bool) {
    let (c, d) = (m.spec.classes.unwrap(), m.spec.embed_dim);
    let w = m.flat[m.params.head_w.clone().unwrap()].to_vec();
    let b = m.flat[m.params.head_b.clone().unwrap()].to_vec();
    let wt = Tensor {
        shape: vec![c, d],
        data: w,
    };
    let bt = Tensor {
        shape: vec![c],
        data: b,
    };
    let (wn, bn) = (format!("{name}weight"), format!("{name}bias"));
    let mut list = vec![(wn.as_str(), &wt)];
    if bias {
        list.push((bn.as_str(), &bt));
    }
    write_f32(path, &list, None).unwrap();
}

#[test]
fn heads_from_their_own_files_equal_heads_in_the_models() {
    let d = tempfile::tempdir().unwrap();
    let (_, tasks, paths) = three_tasks(d.path());
    let mut bare = Vec::new();
    let mut heads = Vec::new();
    for (t, m) in tasks.iter().enumerate() {
        let p = d.path().join(format!("bare{t}.safetensors"));
        m.with_head(None, None).save(&p).unwrap();
        bare.push(p);
        let h = d.path().join(format!("head_{t}.safetensors"));
        save_head(
            m,
            &h,
            if t == 1 { "" } else { "classification_head." },
            true,
        );
        heads.push(h);
    }
    let data = d.path().join("data.safetensors");
    write_data(&data, 5, 7, 31);
    let ex = Cpu::new();
    let with_models = mtl::run(&options(d.path(), &paths, 1, data.clone(), "a"), &ex).unwrap();
    let from_files = MtlOptions {
        tasks: bare.clone(),
        heads: heads.clone(),
        ..options(d.path(), &[], 1, data.clone(), "b")
    };
    let r = mtl::run(&from_files, &ex).unwrap();
    assert_eq!(r.dawin_logits, with_models.dawin_logits);
    assert_eq!(r.coefficients, with_models.coefficients);
    // A whole model file serves as a head file: its classification head.
    let mut whole = heads.clone();
    whole[1] = paths[1].clone();
    let w = mtl::run(
        &MtlOptions {
            heads: whole,
            ..options(d.path(), &bare, 1, data.clone(), "c")
        },
        &ex,
    )
    .unwrap();
    assert_eq!(w.dawin_logits, with_models.dawin_logits);
    // What a run with these head files refuses, as its message.
    let refused = |heads: Vec<PathBuf>| {
        let o = MtlOptions {
            heads,
            ..from_files.clone()
        };
        mtl::run(&o, &ex).err().unwrap().to_string()
    };
    // Without the files the bare models have no head to evaluate.
    let e = refused(vec![]);
    assert!(e.contains("--head-files"), "{e}");
    // One file per task; the head must fit the embedding; one linear layer.
    let e = refused(heads[..2].to_vec());
    assert!(e.contains("one per task"), "{e}");
    let dim = tasks[0].spec.embed_dim;
    let h = d.path().join("wide.safetensors");
    let mut bad = heads.clone();
    bad[1] = h.clone();
    let wt = Tensor {
        shape: vec![4, dim + 1],
        data: vec![0.1; 4 * (dim + 1)],
    };
    write_f32(&h, &[("weight", &wt)], None).unwrap();
    let e = refused(bad.clone());
    assert!(e.contains("embedding has"), "{e}");
    write_f32(&h, &[("a.weight", &wt), ("b.weight", &wt)], None).unwrap();
    let e = refused(bad.clone());
    assert!(e.contains("2 2-D weights"), "{e}");
    let nan = Tensor {
        shape: vec![4, dim],
        data: vec![f32::NAN; 4 * dim],
    };
    write_f32(&h, &[("weight", &nan)], None).unwrap();
    let e = refused(bad);
    assert!(e.contains("NaN"), "{e}");
}

/// A head without a bias gets zeros, as the model loader does.
#[test]
fn a_head_file_without_bias_has_zero_bias() {
    let d = tempfile::tempdir().unwrap();
    let m = Model::random(spec(5), 3);
    let p = d.path().join("head.safetensors");
    save_head(&m, &p, "", false);
    let h = dawin::model::head_file::read(&p, m.spec.embed_dim).unwrap();
    assert_eq!((h.classes, h.b.clone()), (5, vec![0.0; 5]));
    assert_eq!(h.w, m.flat[m.params.head_w.clone().unwrap()].to_vec());
}

/// TIES on a hand-worked example of three task vectors of four entries,
/// keeping the top half of each (threshold: the 2nd smallest magnitude).
#[test]
fn ties_merging_by_hand() {
    let taus = vec![
        vec![1.0f32, -0.2, 0.5, -3.0],
        vec![-2.0, 0.1, 0.4, 1.0],
        vec![0.5, 0.3, -0.6, 2.5],
    ];
    // Trimmed: [1, 0, .5, -3], [-2, 0, .4, 1], [.5, 0, -.6, 2.5].
    // Sums -0.5, 0, 0.3, 0.5: signs -, 0, +, +; the zero takes the
    // majority (+). Agreeing entries: {-2}, {}, {.5, .4}, {1, 2.5}.
    assert_eq!(merging::trim_threshold(&taus[0], 0.5), 0.5);
    let mean = merging::ties(&taus, 0.5, TiesMerge::Mean);
    let want = [-2.0f32, 0.0, 0.45, 1.75];
    for (g, w) in mean.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{mean:?}");
    }
    let sum = merging::ties(&taus, 0.5, TiesMerge::Sum);
    let want = [-2.0f32, 0.0, 0.9, 3.5];
    for (g, w) in sum.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{sum:?}");
    }
    // A zero sum with entries on both sides: the elected majority sign (+)
    // keeps the positive one.
    let tie = merging::ties(&[vec![1.0, 2.0], vec![-1.0, 3.0]], 1.0, TiesMerge::Mean);
    assert_eq!(tie, vec![1.0, 2.5]);
}

/// θ0 + Σ_t k_t·(θ_t − θ0) on the host, in f64.
fn host_merge(base: &Model, tasks: &[Model], k: &[f32]) -> Model {
    let mut m = base.clone();
    for (j, v) in m.flat.iter_mut().enumerate() {
        let b = base.flat[j] as f64;
        let d: f64 = tasks
            .iter()
            .zip(k)
            .map(|(t, &kt)| kt as f64 * (t.flat[j] as f64 - b))
            .sum();
        *v = (b + d) as f32;
    }
    m
}

#[test]
fn stacked_forward_equals_each_samples_merged_model() {
    // An odd width, GELU and no projection, so nothing here is a tile
    // multiple or the fixtures' shape.
    let spec = ModelSpec {
        width: 36,
        heads: 3,
        mlp: 52,
        embed_dim: 36,
        has_proj: false,
        classes: Some(6),
        ..crate::common::small_spec(6, Act::Gelu)
    };
    let base = Model::random(spec.clone(), 11);
    let tasks: Vec<Model> = (0..3)
        .map(|t| {
            let mut m = base.clone();
            let mut r = SplitMix(20 + t);
            m.flat
                .iter_mut()
                .for_each(|v| *v += 0.2 * r.normal() * (0.05 + v.abs()));
            m
        })
        .collect();
    let n = 5;
    let mut r = SplitMix(5);
    let px: Vec<f32> = (0..n * 3 * 144).map(|_| r.normal()).collect();
    // Per sample: mixed (one negative, sums above 1), one-hot, all zero.
    let coef: Vec<f32> = vec![
        0.9, -0.3, 0.6, //
        0.1, 0.2, 0.3, //
        0.0, 1.0, 0.0, //
        0.0, 0.0, 0.0, //
        1.2, 0.4, -0.5,
    ];
    let cpu = Cpu::new();
    let mut want = Vec::new();
    let mut want_embeds = Vec::new();
    for i in 0..n {
        let m = host_merge(&base, &tasks, &coef[i * 3..(i + 1) * 3]);
        let dm = PlacedModel::upload(&cpu, &m).unwrap();
        let out = forward(&cpu, &dm, &px[i * 432..(i + 1) * 432], 1, None).unwrap();
        want.extend(out.logits.unwrap());
        want_embeds.extend(out.embeds);
    }
    let models: Vec<&Model> = std::iter::once(&base).chain(&tasks).collect();
    for (kind, ex) in executors() {
        let stack = ModelStack::upload(ex.as_ref(), &models).unwrap();
        let out = forward_stacked(ex.as_ref(), &stack, &px, n, &coef).unwrap();
        assert_close(
            &format!("stacked logits on {kind}"),
            &out.logits.unwrap(),
            &want,
            1e-5,
        );
        assert_close(
            &format!("stacked embeddings on {kind}"),
            &out.embeds,
            &want_embeds,
            1e-5,
        );
        // A stack's set is the model itself.
        let one = forward(ex.as_ref(), &stack.model(2), &px, n, None).unwrap();
        let alone = forward(
            ex.as_ref(),
            &PlacedModel::upload(ex.as_ref(), &tasks[1]).unwrap(),
            &px,
            n,
            None,
        )
        .unwrap();
        assert_eq!(one, alone, "set 2 of the stack on {kind}");
        let none = forward_stacked(ex.as_ref(), &stack, &[], 0, &[]).unwrap();
        assert_eq!((none.embeds.len(), none.logits), (0, Some(vec![])));
        let e = forward_stacked(ex.as_ref(), &stack, &px, n, &coef[..6]).unwrap_err();
        assert!(
            e.to_string()
                .contains("6 task coefficients for 5 samples of 3 tasks"),
            "{e}"
        );
    }
    // A model of another architecture is refused, naming what differs.
    let other = Model::random(crate::common::small_spec(6, Act::Gelu), 3);
    let e = ModelStack::upload(&cpu, &[&base, &other]).err().unwrap();
    assert!(
        e.to_string().contains("model 1 of the stack differs"),
        "{e}"
    );
}

#[test]
fn batched_and_materialized_per_sample_merges_agree() {
    let d = tempfile::tempdir().unwrap();
    let (_, _, paths) = three_tasks(d.path());
    let data = d.path().join("data.safetensors");
    write_data(&data, 9, 4, 3);
    let cpu = Cpu::new();
    let run = |mode: PerSample| {
        let mut o = options(d.path(), &paths, 2, data.clone(), &format!("{mode:?}"));
        o.per_sample = mode;
        o.batch_size = 4;
        mtl::run(&o, &cpu).unwrap()
    };
    let (exact, built) = (run(PerSample::Exact), run(PerSample::Materialize));
    assert_close(
        "exact vs materialize",
        &exact.dawin_logits,
        &built.dawin_logits,
        1e-5,
    );
    assert_eq!(
        exact.summary["methods"]["dawin"],
        built.summary["methods"]["dawin"]
    );
    assert_eq!(exact.summary["per_sample"], "exact");
    assert_eq!(built.summary["per_sample"], "materialize");
}

/// A head pickled by torch as a module, the way the official multi-task
/// code saves `head_<task>.pt` (`torch.save` of a `ClassificationHead`, a
/// `torch.nn.Linear` subclass): inside the fixtures' `torch.save` of a whole
/// WiSE-FT-style classifier (there a plain `Linear`), and cut out of it as a
/// `src.modeling.ClassificationHead` at the root of its own file
/// (`tools/head_from_module.py`); both read without running their classes
/// and equal the head the model loader reads.
#[test]
fn a_torch_pickled_head_module_reads_as_a_head_file() {
    let p = crate::common::fixtures_dir().join("checkpoints/wiseft_module.pt");
    let ov = Overrides {
        heads: Some(3),
        act: Some(Act::Gelu),
        pickled_modules: true,
        ..Overrides::default()
    };
    let m = Model::load(&p, ov).unwrap();
    let h = dawin::model::head_file::read(&p, m.spec.embed_dim).unwrap();
    assert_eq!(Some(h.classes), m.spec.classes);
    assert_eq!(h.w, m.flat[m.params.head_w.clone().unwrap()].to_vec());
    assert_eq!(h.b, m.flat[m.params.head_b.clone().unwrap()].to_vec());
    assert!(h.w.iter().any(|v| *v != 0.0));
    // The same head saved alone, as the official multi-task code saves
    // `head_<task>.pt`: a `src.modeling.ClassificationHead` at the root.
    let alone = crate::common::fixtures_dir().join("checkpoints/head_task.pt");
    assert_eq!(
        dawin::model::head_file::read(&alone, m.spec.embed_dim).unwrap(),
        h
    );
    let e = dawin::model::head_file::read(&alone, m.spec.embed_dim + 1).unwrap_err();
    assert!(e.to_string().contains("[5, 48]"), "{e}");
}

/// The same task model listed twice is merged twice, with a warning naming
/// it.
#[test]
fn a_task_listed_twice_is_warned_about() {
    let d = tempfile::tempdir().unwrap();
    let (_, _, paths) = three_tasks(d.path());
    let data = d.path().join("data.safetensors");
    write_data(&data, 3, 5, 9);
    let s = |p: &Path| p.display().to_string();
    let tasks = format!("{},{}", s(&paths[0]), s(&paths[0]));
    let o = std::process::Command::new(crate::common::dawin_bin())
        .args([
            "eval-mtl",
            "--base",
            &s(&d.path().join("base.safetensors")),
            "--tasks",
            &tasks,
            "--data",
            &s(&data),
            "--task-index",
            "0",
            "--out-dir",
            &s(&d.path().join("out")),
            "--quiet",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("lists") && err.contains("twice (task 1 and task 2)"),
        "{err}"
    );
}

/// TIES as the official script computes it, written out independently:
/// each task vector the image encoder's state dict flattened (every tower
/// tensor, no classification head), minus the base's; trimmed with
/// `kthvalue` (k = d − int(d·K), kept where |τ| ≥ the k-th smallest
/// magnitude); signs elected by the sum, zeros by the majority; the
/// agreeing entries averaged. In f64; the head stays the base's.
fn official_ties(base: &Model, tasks: &[Model], keep: f64) -> Model {
    let tower: Vec<std::ops::Range<usize>> = base
        .params
        .named()
        .into_iter()
        .filter(|(n, _)| !n.starts_with("classification_head"))
        .map(|(_, r)| r.clone())
        .collect();
    let flat = |m: &Model| -> Vec<f64> {
        tower
            .iter()
            .flat_map(|r| m.flat[r.clone()].iter().map(|&v| v as f64))
            .collect()
    };
    let theta0 = flat(base);
    let d = theta0.len();
    let trimmed: Vec<Vec<f64>> = tasks
        .iter()
        .map(|m| {
            let tau: Vec<f64> = flat(m).iter().zip(&theta0).map(|(a, b)| a - b).collect();
            let mut mags: Vec<f64> = tau.iter().map(|v| v.abs()).collect();
            mags.sort_by(f64::total_cmp);
            let kth = mags[d - (d as f64 * keep) as usize - 1];
            tau.iter()
                .map(|&v| if v.abs() >= kth { v } else { 0.0 })
                .collect()
        })
        .collect();
    let sign = |x: f64| (x > 0.0) as i32 as f64 - (x < 0.0) as i32 as f64;
    let mut elected: Vec<f64> = (0..d)
        .map(|j| sign(trimmed.iter().map(|t| t[j]).sum()))
        .collect();
    let majority = sign(elected.iter().sum());
    elected
        .iter_mut()
        .filter(|s| **s == 0.0)
        .for_each(|s| *s = majority);
    let merged: Vec<f64> = (0..d)
        .map(|j| {
            let agree: Vec<f64> = trimmed
                .iter()
                .map(|t| t[j])
                .filter(|&v| if elected[j] > 0.0 { v > 0.0 } else { v < 0.0 })
                .collect();
            theta0[j] + agree.iter().sum::<f64>() / (agree.len().max(1) as f64)
        })
        .collect();
    let mut m = base.clone();
    let mut at = 0;
    for r in &tower {
        for (v, x) in m.flat[r.clone()].iter_mut().zip(&merged[at..]) {
            *v = *x as f32;
        }
        at += r.len();
    }
    m
}

/// `--domain-fit`: `moments` (one component) is the plain mean's model,
/// `dawin-domain`; with a two-component Dirichlet mixture each sample is
/// classified by the model merged at its component's mean (built here on
/// the host from the means summary.json reports), and the members add up.
#[test]
fn domain_fits_merge_each_sample_at_its_components_mean() {
    let d = tempfile::tempdir().unwrap();
    let (base, tasks, paths) = three_tasks(d.path());
    let n = 12;
    let data = d.path().join("data.safetensors");
    let px = write_data(&data, n, 7, 17);
    let o = MtlOptions {
        domain_fits: vec!["moments".parse().unwrap(), "dirichlet:2".parse().unwrap()],
        ..options(d.path(), &paths, 1, data, "out")
    };
    let cpu = Cpu::new();
    let r = mtl::run(&o, &cpu).unwrap();
    let statics: std::collections::HashMap<_, _> = r.static_logits.iter().cloned().collect();
    assert_close(
        "moments with one component",
        &statics["dawin-domain:moments"],
        &statics["dawin-domain"],
        1e-5,
    );
    let fits = r.summary["dawin_domain_fits"].as_array().unwrap();
    assert_eq!(fits[1]["method"], "dawin-domain:dirichlet:2");
    let base_h = base.with_head_of(&tasks[1]);
    let with_head: Vec<Model> = tasks.iter().map(|m| m.with_head_of(&tasks[1])).collect();
    let component_logits: Vec<Vec<f32>> = fits[1]["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let mean: Vec<f64> = serde_json::from_value(c["mean"].clone()).unwrap();
            let mut m = base_h.clone();
            for (j, v) in m.flat.iter_mut().enumerate() {
                let b = base_h.flat[j] as f64;
                let acc: f64 = (0..3)
                    .map(|t| 0.3 * 3.0 * mean[t] * (with_head[t].flat[j] as f64 - b))
                    .sum();
                *v = (b + acc) as f32;
            }
            let dm = PlacedModel::upload(&cpu, &m).unwrap();
            forward(&cpu, &dm, &px, n, None).unwrap().logits.unwrap()
        })
        .collect();
    let got = &statics["dawin-domain:dirichlet:2"];
    let c = 7;
    let mut members = vec![0; component_logits.len()];
    for i in 0..n {
        let row = &got[i * c..(i + 1) * c];
        let k = (0..component_logits.len())
            .find(|&k| {
                let want = &component_logits[k][i * c..(i + 1) * c];
                row.iter().zip(want).all(|(a, b)| (a - b).abs() <= 1e-4)
            })
            .unwrap_or_else(|| panic!("sample {i}'s logits are no component's model's"));
        members[k] += 1;
    }
    for (k, m) in members.iter().enumerate() {
        assert_eq!(fits[1]["components"][k]["members"], *m, "component {k}");
    }
    assert_eq!(r.summary["methods"]["dawin-domain:dirichlet:2"]["count"], n);
}
