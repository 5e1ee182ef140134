//! `eval --data name=PATH,...`: the argument's parsing, the shipped
//! label-space presets, and a three-set run whose per-set results must be
//! those of three separate evals (and whose OOD mean is their mean).

use crate::common::fixtures_dir;
use dawin::data::dataset::LabelOrder;
use dawin::data::projection::Projection;
use dawin::method::methods::Method;
use dawin::pipelines::eval::{self, EvalOptions};
use dawin::pipelines::multiset::{self, DataSet};
use dawin::tensorfile::{Tensor, TensorFile, write_f32_with_labels};
use std::path::{Path, PathBuf};

fn options(data: PathBuf, out: &Path) -> EvalOptions {
    EvalOptions {
        pretrained: fixtures_dir().join("dawin_pt.safetensors"),
        finetuned: fixtures_dir().join("dawin_ft.safetensors"),
        data,
        out_dir: out.to_path_buf(),
        batch_size: 8,
        methods: Method::parse_list("zeroshot,finetuned,wise-ft,ensemble,dawin").unwrap(),
        progress: false,
        ..EvalOptions::default()
    }
}

/// The fixture data with its pixels scaled by `contrast` (a stand-in shift).
fn shifted_copy(dir: &Path, name: &str, contrast: f32) -> PathBuf {
    let f = TensorFile::open(&fixtures_dir().join("dawin_data.safetensors")).unwrap();
    let mut px = f.read_f32("pixel_values").unwrap();
    let labels = f.read_i64("labels").unwrap().1;
    px.data.iter_mut().for_each(|v| *v *= contrast);
    let path = dir.join(format!("{name}.safetensors"));
    write_f32_with_labels(
        &path,
        &Tensor {
            shape: px.shape.clone(),
            data: px.data,
        },
        &labels,
    )
    .unwrap();
    path
}

#[test]
fn the_data_argument_is_a_path_or_a_list_of_named_sets() {
    let d = tempfile::tempdir().unwrap();
    let odd = d.path().join("a=b.safetensors");
    std::fs::write(&odd, b"x").unwrap();
    assert_eq!(
        multiset::parse_sets(&odd).unwrap(),
        None,
        "an existing path is a path"
    );
    assert_eq!(
        multiset::parse_sets(Path::new("plain.safetensors")).unwrap(),
        None
    );
    let sets = multiset::parse_sets(Path::new("clean=/x/c.safetensors, imagenet-a=/x/a/")).unwrap();
    assert_eq!(
        sets,
        Some(vec![
            DataSet {
                name: "clean".into(),
                path: "/x/c.safetensors".into()
            },
            DataSet {
                name: "imagenet-a".into(),
                path: "/x/a/".into()
            },
        ])
    );
    for bad in ["a=x,a=y", "a=x,oops", "../up=x", "=x", "a b=x"] {
        assert!(
            multiset::parse_sets(Path::new(bad)).is_err(),
            "{bad} should be refused"
        );
    }
}

#[test]
fn set_names_select_the_shipped_label_spaces() {
    let mut o = EvalOptions::default();
    assert_eq!(multiset::apply_preset("clean", &mut o).unwrap(), None);
    assert_eq!(o.projection, Projection::None);
    assert!(
        multiset::apply_preset("imagenet-a", &mut o)
            .unwrap()
            .is_some()
    );
    assert_eq!(o.projection.out_classes(1000), 200);
    let mut o = EvalOptions::default();
    multiset::apply_preset("objectnet", &mut o).unwrap();
    assert_eq!(o.projection.out_classes(1000), 113);
    assert_eq!(o.keep_folders.as_ref().map(Vec::len), Some(113));
    assert_eq!(o.crop_border, 2);
    let mut o = EvalOptions::default();
    multiset::apply_preset("imagenet-v2", &mut o).unwrap();
    assert_eq!(o.label_order, LabelOrder::Numeric);
}

#[test]
fn a_multi_set_run_is_one_eval_per_set_and_their_ood_mean() {
    let d = tempfile::tempdir().unwrap();
    let ex = dawin::exec::open(dawin::exec::ExecutorKind::Cpu).unwrap();
    let sets = vec![
        DataSet {
            name: "clean".into(),
            path: fixtures_dir().join("dawin_data.safetensors"),
        },
        DataSet {
            name: "low".into(),
            path: shifted_copy(d.path(), "low", 0.3),
        },
        DataSet {
            name: "high".into(),
            path: shifted_copy(d.path(), "high", 2.5),
        },
    ];
    let out = d.path().join("multi");
    let r = multiset::run(&options(PathBuf::new(), &out), &sets, ex.as_ref()).unwrap();
    assert_eq!(r.runs.len(), 3);
    let mut alone = Vec::new();
    for s in &sets {
        let o = options(s.path.clone(), &d.path().join(format!("alone-{}", s.name)));
        alone.push(eval::run(&o, ex.as_ref()).unwrap());
        assert!(
            out.join(&s.name).join("summary.json").is_file(),
            "{}",
            s.name
        );
    }
    let acc = |s: &serde_json::Value, m: &str| s["methods"][m]["accuracy"].as_f64().unwrap();
    for m in ["zeroshot", "finetuned", "wise-ft:0.5", "ensemble", "dawin"] {
        for (i, s) in sets.iter().enumerate() {
            assert_eq!(
                r.summary["methods"][m]["accuracy"][&s.name]
                    .as_f64()
                    .unwrap(),
                acc(&alone[i].summary, m),
                "{m} on {}",
                s.name
            );
        }
        let ood = (acc(&alone[1].summary, m) + acc(&alone[2].summary, m)) / 2.0;
        let got = r.summary["methods"][m]["ood_mean"].as_f64().unwrap();
        assert!((got - ood).abs() < 1e-12, "{m}: {got} vs {ood}");
    }
    assert_eq!(
        r.runs[1].1.lambdas, alone[1].lambdas,
        "one expertise pass per set"
    );
    assert_ne!(
        alone[0].summary["methods"]["zeroshot"]["nll"],
        alone[1].summary["methods"]["zeroshot"]["nll"],
        "the shifted copies must differ from the clean set"
    );
    assert!(
        r.table.contains("OOD mean") && r.table.contains("high"),
        "{}",
        r.table
    );
    assert!(out.join("sets.json").is_file() && out.join("table.txt").is_file());
    assert_eq!(r.wise_svg, Some(out.join("wise-ft.svg")));
    assert!(out.join("wise-ft.svg").is_file());
}

#[test]
fn a_multi_set_run_refuses_one_sets_expertise_file() {
    let d = tempfile::tempdir().unwrap();
    let ex = dawin::exec::open(dawin::exec::ExecutorKind::Cpu).unwrap();
    let o = EvalOptions {
        expertise_from: Some(d.path().join("expertise.safetensors")),
        ..options(PathBuf::new(), d.path())
    };
    let sets = [DataSet {
        name: "a".into(),
        path: fixtures_dir().join("dawin_data.safetensors"),
    }];
    let e = multiset::run(&o, &sets, ex.as_ref()).err().unwrap();
    assert!(e.to_string().contains("--expertise-from"), "{e}");
}
