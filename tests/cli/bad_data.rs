//! The matrix of bad inputs and faults a demanding user meets, command by
//! command: each case gives a clear error (exit 1, naming the thing, no
//! panic) or a correct result, and nothing is lost or mixed. Classes: data
//! read wrongly, image folders, caches, provenance, merges, output folders,
//! non-finite values, sizes, messages.

use crate::common::{dawin_bin, fixtures_dir};
use dawin::tensorfile::{Tensor, TensorFile, write_f32, write_f32_with_labels};
use safetensors::{Dtype, tensor::TensorView};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fx(name: &str) -> String {
    fixtures_dir().join(name).display().to_string()
}

fn run(args: &[&str]) -> Output {
    Command::new(dawin_bin()).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

/// The command succeeds; its output.
fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(o.status.success(), "dawin {args:?} failed:\n{}", text(&o));
    text(&o)
}

/// The command fails cleanly (exit 1 or a usage error 2, no panic) with a
/// message containing every one of `says`.
fn fails(args: &[&str], says: &[&str]) -> String {
    let o = run(args);
    let t = text(&o);
    assert!(
        matches!(o.status.code(), Some(1) | Some(2)),
        "dawin {args:?}: exit {:?}\n{t}",
        o.status.code()
    );
    assert!(
        !t.contains("panicked") && !t.contains("RUST_BACKTRACE"),
        "dawin {args:?} panicked:\n{t}"
    );
    for s in says {
        assert!(t.contains(s), "dawin {args:?}: no `{s}` in\n{t}");
    }
    t
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// `eval` of the fixture pair on `data` into `out`, with `extra` flags.
fn eval_args(data: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "eval",
        "--pretrained",
        &fx("dawin_pt.safetensors"),
        "--finetuned",
        &fx("dawin_ft.safetensors"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend([
        "--data".into(),
        data.into(),
        "--out-dir".into(),
        p(out),
        "--quiet".into(),
    ]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn eval(data: &str, out: &Path, extra: &[&str]) -> String {
    let a = eval_args(data, out, extra);
    ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
}

fn summary(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

/// The fixture data's pixels written in another dtype (raw bytes given).
fn data_as(dir: &Path, name: &str, dtype: Dtype, bytes: &[u8]) -> String {
    let io = TensorFile::open(&fixtures_dir().join("dawin_data.safetensors")).unwrap();
    let px = io.read_f32("pixel_values").unwrap();
    let labels = io.read_i64("labels").unwrap().1;
    let views = vec![
        (
            "pixel_values".to_string(),
            TensorView::new(dtype, px.shape.clone(), bytes).unwrap(),
        ),
        (
            "labels".to_string(),
            TensorView::new(
                Dtype::I64,
                vec![labels.len()],
                bytemuck::cast_slice(&labels),
            )
            .unwrap(),
        ),
    ];
    let path = dir.join(name);
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    p(&path)
}

fn fixture_pixels() -> Vec<f32> {
    TensorFile::open(&fixtures_dir().join("dawin_data.safetensors"))
        .unwrap()
        .read_f32("pixel_values")
        .unwrap()
        .data
}

#[test]
fn pixels_of_every_float_dtype_give_the_f32_results_and_integers_are_refused() {
    let d = tempfile::tempdir().unwrap();
    eval(
        &fx("dawin_data.safetensors"),
        &d.path().join("f32"),
        &["--methods", "zeroshot,finetuned,dawin"],
    );
    let want = summary(&d.path().join("f32"))["methods"].clone();
    let px = fixture_pixels();
    let f64s: Vec<f64> = px.iter().map(|&v| v as f64).collect();
    let f16s: Vec<half::f16> = px.iter().map(|&v| half::f16::from_f32(v)).collect();
    let cases = [
        (
            "f64",
            data_as(
                d.path(),
                "f64.safetensors",
                Dtype::F64,
                bytemuck::cast_slice(&f64s),
            ),
        ),
        (
            "f16",
            data_as(
                d.path(),
                "f16.safetensors",
                Dtype::F16,
                bytemuck::cast_slice(&f16s),
            ),
        ),
    ];
    for (name, data) in cases {
        let out = d.path().join(name);
        eval(&data, &out, &["--methods", "zeroshot,finetuned,dawin"]);
        let got = summary(&out)["methods"].clone();
        if name == "f64" {
            assert_eq!(got, want, "f64 pixels are the f32 values exactly");
        } else {
            for m in ["zeroshot", "finetuned", "dawin"] {
                assert_eq!(got[m]["count"], want[m]["count"], "{m}");
            }
        }
    }
    let ints: Vec<i64> = px.iter().map(|&v| (v * 100.0) as i64).collect();
    let data = data_as(
        d.path(),
        "i64.safetensors",
        Dtype::I64,
        bytemuck::cast_slice(&ints),
    );
    let a = eval_args(&data, &d.path().join("i64"), &[]);
    fails(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &["`pixel_values` has dtype I64", "floats"],
    );
}

/// A solid-colour image of `w`×`h` in the format its extension names.
fn image_file(path: &Path, rgb: [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_pixel(30, 26, image::Rgb(rgb));
    img.save(path).unwrap();
}

#[test]
fn image_folders_are_read_as_imagefolder_reads_them() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("images");
    // Upper-case and other formats, a nested folder, a stray text file.
    image_file(&root.join("a/one.PNG"), [200, 10, 10]);
    image_file(&root.join("a/two.JPG"), [10, 200, 10]);
    image_file(&root.join("a/sub/deeper/three.webp"), [10, 10, 200]);
    image_file(&root.join("b/four.bmp"), [90, 90, 90]);
    image_file(&root.join("b/five.tiff"), [250, 250, 0]);
    image_file(&root.join("c/six.gif"), [0, 250, 250]);
    std::fs::write(root.join("c/notes.txt"), "not an image").unwrap();
    std::fs::create_dir_all(root.join("d-empty")).unwrap();
    let out = d.path().join("out");
    // Four folders for a 6-class head: refused before any image is read,
    // then evaluated on the head's first four classes.
    let a = eval_args(&p(&root), &out, &["--methods", "zeroshot,dawin"]);
    fails(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &[
            "has 4 class folders but the head has 6 classes",
            "--class-subset",
        ],
    );
    let subset = d.path().join("first-four.txt");
    std::fs::write(&subset, "0 1 2 3").unwrap();
    let t = eval(
        &p(&root),
        &out,
        &["--methods", "zeroshot,dawin", "--class-subset", &p(&subset)],
    );
    assert!(t.contains("`d-empty` (label 3) holds no image"), "{t}");
    assert!(
        t.contains("skipped 1 files") && t.contains("notes.txt"),
        "{t}"
    );
    let s = summary(&out);
    assert_eq!(
        s["methods"]["dawin"]["count"], 6,
        "all six images, nested and any case"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("classes.txt")).unwrap(),
        "a\nb\nc\nd-empty\n"
    );
    assert!(
        std::fs::read_to_string(out.join("skipped.txt"))
            .unwrap()
            .contains("notes.txt")
    );
    let csv = std::fs::read_to_string(out.join("samples.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    assert!(header.ends_with(",path"), "{header}");
    // ImageFolder's order: folder a's files first, then its subfolder's.
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert!(
        rows[0].ends_with("one.PNG")
            && rows[1].ends_with("two.JPG")
            && rows[2].ends_with("three.webp"),
        "{csv}"
    );
    assert!(
        rows[0].starts_with("0,0,") && rows[3].starts_with("3,1,"),
        "labels by sorted folder: {csv}"
    );
    // Folders named by class index.
    let num = d.path().join("numeric");
    image_file(&num.join("5/x.png"), [1, 2, 3]);
    image_file(&num.join("2/y.png"), [3, 2, 1]);
    let out = d.path().join("num-out");
    eval(
        &p(&num),
        &out,
        &["--methods", "zeroshot", "--label-order", "numeric"],
    );
    let csv = std::fs::read_to_string(out.join("samples.csv")).unwrap();
    let labels: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(labels, ["2", "5"], "{csv}");
    std::fs::create_dir_all(num.join("cat")).unwrap();
    let a = eval_args(
        &p(&num),
        &d.path().join("num2"),
        &["--label-order", "numeric"],
    );
    fails(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &["class folder `cat` is not a class index"],
    );
    // preprocess reads folders the same way.
    let px = d.path().join("px.safetensors");
    let t = ok(&["preprocess", &p(&root), "--size", "24", "--out", &p(&px)]);
    assert!(t.contains("6 images (1 skipped)"), "{t}");
}

#[test]
fn caches_that_fail_a_check_are_recomputed_and_fixed_samples_are_retried() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let data = d.path().join("data.safetensors");
    std::fs::copy(fixtures_dir().join("dawin_data.safetensors"), &data).unwrap();
    let methods = ["--methods", "zeroshot,finetuned,dawin"];
    eval(&p(&data), &out, &methods);
    let first = summary(&out)["methods"].clone();
    eval(&p(&data), &out, &methods);
    assert_eq!(summary(&out)["cache"], "hit");
    // A same-size edit of the data changes its fingerprint.
    let mut px = fixture_pixels();
    px[10] += 1.0;
    let labels = TensorFile::open(&data)
        .unwrap()
        .read_i64("labels")
        .unwrap()
        .1;
    write_f32_with_labels(
        &data,
        &Tensor {
            shape: vec![16, 3, 24, 24],
            data: px,
        },
        &labels,
    )
    .unwrap();
    eval(&p(&data), &out, &methods);
    assert_eq!(summary(&out)["cache"], "computed");
    std::fs::copy(fixtures_dir().join("dawin_data.safetensors"), &data).unwrap();
    eval(&p(&data), &out, &methods);
    // pt and ft swapped inside a cache with the right key.
    let cache = out.join("cache.safetensors");
    let f = TensorFile::open(&cache).unwrap();
    let meta = f.metadata();
    let (lp, lf, valid) = (
        f.read_f32("logits_pt").unwrap(),
        f.read_f32("logits_ft").unwrap(),
        f.read_f32("valid").unwrap(),
    );
    drop(f);
    write_f32(
        &cache,
        &[("logits_pt", &lf), ("logits_ft", &lp), ("valid", &valid)],
        Some(meta.clone()),
    )
    .unwrap();
    let t = eval(&p(&data), &out, &methods);
    assert!(
        t.contains("does not match its checksum") && t.contains("recomputing"),
        "{t}"
    );
    assert_eq!(summary(&out)["methods"], first);
    // Fewer rows than the shard, under the right key and checksums.
    let short = Tensor {
        shape: vec![3],
        data: vec![1.0; 3],
    };
    let mut m = meta.clone();
    m.insert(
        "xxh3:valid".into(),
        format!(
            "{:032x}",
            xxhash_rust::xxh3::xxh3_128(bytemuck::cast_slice(&short.data))
        ),
    );
    write_f32(
        &cache,
        &[("logits_pt", &lp), ("logits_ft", &lf), ("valid", &short)],
        Some(m),
    )
    .unwrap();
    let t = eval(&p(&data), &out, &methods);
    assert!(t.contains("recomputing"), "{t}");
    assert_eq!(summary(&out)["methods"], first);
    // An unreadable image is skipped, then retried once it is fixed.
    let root = d.path().join("images");
    image_file(&root.join("a/good.png"), [9, 9, 9]);
    std::fs::create_dir_all(root.join("b")).unwrap();
    std::fs::write(root.join("b/bad.png"), b"not a png").unwrap();
    let out = d.path().join("folder-out");
    let subset = d.path().join("first-two.txt");
    std::fs::write(&subset, "0 1").unwrap();
    let flags = ["--methods", "zeroshot", "--class-subset", &p(&subset)];
    let t = eval(&p(&root), &out, &flags);
    assert!(
        t.contains("skipped 1 unreadable images") && t.contains("bad.png"),
        "{t}"
    );
    assert_eq!(summary(&out)["skipped"], 1);
    image_file(&root.join("b/bad.png"), [1, 1, 1]);
    eval(&p(&root), &out, &flags);
    assert_eq!(summary(&out)["skipped"], 0);
    assert_eq!(summary(&out)["methods"]["zeroshot"]["count"], 2);
}

#[test]
fn every_summary_says_what_produced_it() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    eval(
        &fx("dawin_data.safetensors"),
        &out,
        &[
            "--methods",
            "dawin",
            "--interp",
            "bmm:2",
            "--temperature",
            "0.9,1.1",
        ],
    );
    let prov = &summary(&out)["provenance"];
    assert_eq!(prov["dawin"], env!("CARGO_PKG_VERSION"));
    assert!(
        prov["command"].as_str().unwrap().contains("--interp bmm:2"),
        "{prov}"
    );
    for role in ["pretrained", "finetuned", "data"] {
        assert_eq!(
            prov["inputs"][role]["hash"].as_str().unwrap().len(),
            32,
            "{role}: {prov}"
        );
    }
    let st = &prov["settings"];
    assert_eq!(st["interp"], "bmm:2");
    assert_eq!(st["temperature"][1].as_f64().unwrap() as f32, 1.1);
    for k in [
        "expertise",
        "seed",
        "precision",
        "projection",
        "label_order",
    ] {
        assert!(st.get(k).is_some(), "{k} missing: {st}");
    }
}

/// Summaries and expertise files of the fixture pair in shards of `n`.
fn shards(dir: &Path, n: usize, extra: &[&str]) -> (Vec<String>, Vec<String>) {
    let (mut sums, mut exps) = (vec![], vec![]);
    for i in 0..n {
        let out = dir.join(format!("s{i}"));
        let shard = format!("{i}/{n}");
        let mut a = eval_args(&fx("dawin_data.safetensors"), &out, &["--shard", &shard]);
        a[0] = "expertise".into();
        ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
        let mut flags = vec!["--shard", &shard, "--methods", "zeroshot,dawin"];
        flags.extend(extra);
        eval(&fx("dawin_data.safetensors"), &out, &flags);
        sums.push(p(&out.join("summary.json")));
        exps.push(p(&out.join("expertise.safetensors")));
    }
    (sums, exps)
}

fn merge(inputs: &[&String], out: &Path, extra: &[&str]) -> Output {
    let mut a: Vec<&str> = vec!["merge"];
    a.extend(inputs.iter().map(|s| s.as_str()));
    let o = p(out);
    a.extend(["--out", &o]);
    a.extend(extra);
    run(&a)
}

#[test]
fn merges_refuse_what_does_not_add_up() {
    let d = tempfile::tempdir().unwrap();
    let (sums, exps) = shards(&d.path().join("a"), 3, &[]);
    let out = d.path().join("m.json");
    let check = |o: Output, says: &str| {
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{t}");
        assert!(
            t.contains(says) && !t.contains("panicked"),
            "no `{says}` in {t}"
        );
    };
    check(
        merge(&[&sums[0], &sums[1], &sums[1], &sums[2]], &out, &[]),
        "repeats shard 1/3",
    );
    check(
        merge(&[&sums[0], &sums[2]], &out, &[]),
        "shards 1/3 are missing",
    );
    let o = merge(&[&sums[0], &sums[2]], &out, &["--allow-partial"]);
    assert!(o.status.success(), "{}", text(&o));
    let m: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(m["partial"], true);
    assert_eq!(m["shards"], serde_json::json!(["0/3", "2/3"]));
    // A whole-set summary on top of a shard.
    let whole = d.path().join("whole");
    eval(
        &fx("dawin_data.safetensors"),
        &whole,
        &["--methods", "zeroshot,dawin"],
    );
    let w = p(&whole.join("summary.json"));
    check(
        merge(&[&w, &sums[0]], &out, &[]),
        "covers the whole data set",
    );
    // Another λ rule, other methods.
    let (other, _) = shards(&d.path().join("b"), 3, &["--expertise", "selective"]);
    check(
        merge(&[&sums[0], &other[1], &sums[2]], &out, &[]),
        "other models, data or settings",
    );
    let c = d.path().join("c");
    eval(
        &fx("dawin_data.safetensors"),
        &c,
        &["--shard", "1/3", "--methods", "zeroshot"],
    );
    let c = p(&c.join("summary.json"));
    check(
        merge(&[&sums[0], &c, &sums[2]], &out, &[]),
        "has the methods",
    );
    // Expertise merges: missing shards, another model pair.
    let e = d.path().join("e.safetensors");
    check(
        merge(&[&exps[0], &exps[1]], &e, &[]),
        "shards 2/3 are missing",
    );
    let other_pair = d.path().join("o1");
    let a = [
        "expertise",
        "--pretrained",
        &fx("dawin_ft.safetensors"),
        "--finetuned",
        &fx("dawin_pt.safetensors"),
        "--data",
        &fx("dawin_data.safetensors"),
        "--out-dir",
        &p(&other_pair),
        "--shard",
        "1/3",
        "--quiet",
    ];
    ok(&a);
    let o1 = p(&other_pair.join("expertise.safetensors"));
    check(
        merge(&[&exps[0], &o1, &exps[2]], &e, &[]),
        "other models, data or settings",
    );
    assert!(
        merge(&[&exps[0], &exps[1], &exps[2]], &e, &[])
            .status
            .success()
    );
    // --expertise-from of other models.
    let a = eval_args(
        &fx("dawin_data.safetensors"),
        &d.path().join("x"),
        &["--expertise-from", &p(&e)],
    );
    let mut a: Vec<&str> = a.iter().map(String::as_str).collect();
    let (pt, ft) = (fx("dawin_pt.safetensors"), fx("dawin_ft.safetensors"));
    (a[2], a[4]) = (&ft, &pt);
    fails(&a, &["other models, data or settings"]);
    let swapped = eval_args(
        &fx("dawin_data.safetensors"),
        &d.path().join("y"),
        &["--expertise-from", &p(&e), "--temperature", "2"],
    );
    fails(
        &swapped.iter().map(String::as_str).collect::<Vec<_>>(),
        &["other models, data or settings"],
    );
}

#[test]
fn output_folders_never_mix_runs() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    // Held by another run: a clear error at once.
    {
        let held = dawin::report::outdir::OutDir::lock(&out).unwrap();
        let a = eval_args(&fx("dawin_data.safetensors"), &out, &[]);
        fails(
            &a.iter().map(String::as_str).collect::<Vec<_>>(),
            &["is in use by pid"],
        );
        drop(held);
    }
    // Reruns with the same inputs and settings keep the other methods.
    eval(
        &fx("dawin_data.safetensors"),
        &out,
        &["--methods", "zeroshot,finetuned"],
    );
    eval(&fx("dawin_data.safetensors"), &out, &["--methods", "dawin"]);
    let s = summary(&out);
    let names: Vec<&String> = s["methods"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["dawin", "zeroshot", "finetuned"], "{s}");
    let header = std::fs::read_to_string(out.join("samples.csv"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert!(
        header.contains("pred_zeroshot") && header.contains("pred_dawin"),
        "{header}"
    );
    // Other settings: the earlier set is moved aside, not dropped.
    let t = eval(
        &fx("dawin_data.safetensors"),
        &out,
        &["--methods", "dawin", "--temperature", "2"],
    );
    assert!(t.contains("moved them to"), "{t}");
    let moved: Vec<PathBuf> = std::fs::read_dir(out.join("previous"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(moved.len(), 1);
    let old = summary(&moved[0]);
    assert!(old["methods"]["zeroshot"].is_object());
    assert_eq!(summary(&out)["methods"].as_object().unwrap().len(), 1);
    // A failed run leaves the complete earlier set: a bad option value
    // stops eval after the models load, before any report is written.
    let before = std::fs::read_to_string(out.join("summary.json")).unwrap();
    let a = eval_args(
        &fx("dawin_data.safetensors"),
        &out,
        &[
            "--methods",
            "dawin",
            "--temperature",
            "2",
            "--expertise-from",
            &p(&d.path().join("nope.safetensors")),
        ],
    );
    fails(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &["nope.safetensors"],
    );
    assert_eq!(
        std::fs::read_to_string(out.join("summary.json")).unwrap(),
        before
    );
    let leftovers: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".staging") || n.ends_with(".tmp~"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The demo keeps every domain's exact and bmm results.
    let demo = d.path().join("demo");
    ok(&[
        "demo",
        "--per-class",
        "3",
        "--quiet",
        "--device",
        "cpu",
        "--out-dir",
        &p(&demo),
    ]);
    assert!(summary(&demo.join("id"))["methods"]["zeroshot"].is_object());
    assert_eq!(summary(&demo.join("id/bmm"))["interp"], "bmm:3");
}

/// A run killed at every point of its commit (the test hook aborts the
/// process as SIGKILL would) leaves, once the folder is next opened, one
/// whole set: the earlier one untouched (killed before the commit record)
/// or the new one with the earlier moved to `previous/` (after it). A rerun
/// then finds no stage, record or scratch, and one earlier set aside.
#[test]
fn an_interrupted_commit_leaves_one_whole_set() {
    let d = tempfile::tempdir().unwrap();
    let data = fx("dawin_data.safetensors");
    let b_flags = ["--methods", "zeroshot,dawin", "--temperature", "2"];
    for k in 1..40 {
        let out = d.path().join(format!("out{k}"));
        eval(&data, &out, &["--methods", "zeroshot"]);
        let a = std::fs::read(out.join("summary.json")).unwrap();
        let args = eval_args(&data, &out, &b_flags);
        let b = Command::new(dawin_bin())
            .args(&args)
            .env("DAWIN_TEST_ABORT_COMMIT_AT", k.to_string())
            .output()
            .unwrap();
        // Opening the folder finishes or forgets the interrupted commit.
        drop(dawin::report::outdir::OutDir::lock(&out).unwrap());
        let top = summary(&out);
        let methods: Vec<&String> = top["methods"].as_object().unwrap().keys().collect();
        let header = std::fs::read_to_string(out.join("samples.csv")).unwrap();
        let header = header.lines().next().unwrap();
        let previous: Vec<PathBuf> = std::fs::read_dir(out.join("previous"))
            .map(|r| r.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        if methods.len() == 1 {
            // The earlier set, as it was.
            assert_eq!(
                std::fs::read(out.join("summary.json")).unwrap(),
                a,
                "kill point {k}"
            );
            assert!(!header.contains("pred_dawin"), "kill point {k}: {header}");
            assert!(
                previous
                    .iter()
                    .all(|p| std::fs::read_dir(p).unwrap().next().is_none()),
                "kill point {k}"
            );
        } else {
            assert!(header.contains("pred_dawin"), "kill point {k}: {header}");
            assert_eq!(previous.len(), 1, "kill point {k}");
            assert_eq!(
                std::fs::read(previous[0].join("summary.json")).unwrap(),
                a,
                "kill point {k}"
            );
        }
        eval(&data, &out, &b_flags);
        let names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert!(
            !names.iter().any(|n| n.starts_with(".staging")
                || n.starts_with(".replaced")
                || n == ".dawin-commit"),
            "kill point {k}: {names:?}"
        );
        assert_eq!(
            std::fs::read_dir(out.join("previous")).unwrap().count(),
            1,
            "kill point {k}"
        );
        if b.status.success() {
            assert!(k > 3, "the commit has more points than {k}");
            return;
        }
    }
    panic!("the commit never completed under the hook");
}

/// Ctrl-C or SIGTERM during a run stops it at the next safe point: exit
/// 130 with "interrupted", the folder's earlier set as it was, and nothing
/// of the stopped run left once the folder is next opened.
#[test]
fn a_signal_stops_the_run_at_a_safe_point() {
    use std::io::BufRead;
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    eval(
        &fx("dawin_data.safetensors"),
        &out,
        &["--methods", "zeroshot"],
    );
    let earlier = std::fs::read(out.join("summary.json")).unwrap();
    // 6,400 images, evaluated the official way (a model built per sample)
    // on one thread: seconds of work after the models load.
    let io = TensorFile::open(Path::new(&fx("dawin_data.safetensors"))).unwrap();
    let px = io.read_f32("pixel_values").unwrap();
    let (_, labels) = io.read_i64("labels").unwrap();
    let reps = 400;
    let mut shape = px.shape.clone();
    shape[0] *= reps;
    let big = Tensor {
        shape,
        data: px.data.repeat(reps),
    };
    let data = d.path().join("big.safetensors");
    write_f32_with_labels(&data, &big, &labels.repeat(reps)).unwrap();
    for signal in ["-INT", "-TERM"] {
        let flags = [
            "--methods",
            "zeroshot,dawin",
            "--temperature",
            "2",
            "--interp",
            "materialize",
            "--threads",
            "1",
            "-b",
            "8",
        ];
        let mut child = Command::new(dawin_bin())
            .args(eval_args(&p(&data), &out, &flags))
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // The first line on stderr (a note on the models) comes after the
        // handler is installed.
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        err.read_line(&mut first).unwrap();
        Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130), "{signal}: {first}{rest}");
        assert!(rest.contains("interrupted"), "{signal}: {rest}");
        drop(dawin::report::outdir::OutDir::lock(&out).unwrap());
        assert_eq!(
            std::fs::read(out.join("summary.json")).unwrap(),
            earlier,
            "{signal}"
        );
        let left: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with('.') && n != ".dawin.lock")
            .collect();
        assert!(left.is_empty(), "{signal}: {left:?}");
    }
}

/// The fixture pretrained model with one weight set to `v`.
fn poisoned(dir: &Path, v: f32) -> String {
    let f = TensorFile::open(&fixtures_dir().join("dawin_pt.safetensors")).unwrap();
    let meta = f.metadata();
    let names = f.names();
    let mut ts: Vec<(String, Tensor)> = names
        .iter()
        .map(|n| (n.clone(), f.read_f32(n).unwrap()))
        .collect();
    let target = names
        .iter()
        .position(|n| n.contains("resblocks.1.mlp.c_fc.weight"))
        .unwrap();
    ts[target].1.data[7] = v;
    let path = dir.join(format!("poisoned-{v}.safetensors"));
    let refs: Vec<(&str, &Tensor)> = ts.iter().map(|(n, t)| (n.as_str(), t)).collect();
    write_f32(&path, &refs, Some(meta)).unwrap();
    p(&path)
}

#[test]
fn non_finite_inputs_are_named_at_the_source() {
    let d = tempfile::tempdir().unwrap();
    for v in [f32::NAN, f32::INFINITY] {
        let m = poisoned(d.path(), v);
        let mut a = eval_args(&fx("dawin_data.safetensors"), &d.path().join("o"), &[]);
        a[2] = m.clone();
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        fails(
            &a,
            &[
                &m,
                "resblocks.1.mlp.c_fc.weight",
                "NaN/Inf",
                "--allow-non-finite",
            ],
        );
        let mut allowed = a.clone();
        allowed.push("--allow-non-finite");
        let t = ok(&allowed);
        assert!(
            t.contains("warning") && t.contains("resblocks.1.mlp.c_fc.weight"),
            "{t}"
        );
    }
    let mtl = [
        "eval-mtl",
        "--base",
        &fx("dawin_pt.safetensors"),
        "--tasks",
        &fx("dawin_ft.safetensors"),
        "--task-index",
        "0",
        "--data",
        &fx("dawin_data.safetensors"),
        "--out-dir",
        &p(&d.path().join("m")),
    ];
    for scale in ["NaN", "inf"] {
        let mut a = mtl.to_vec();
        a.extend(["--scale", scale]);
        fails(&a, &["--scale must be a finite number"]);
    }
    let a = eval_args(
        &fx("dawin_data.safetensors"),
        &d.path().join("t"),
        &["--temperature", "nan"],
    );
    fails(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &["positive numbers"],
    );
    fails(
        &["eval", "--methods", "wise-ft:NaN"],
        &["α must be in [0, 1], got NaN"],
    );
}

#[test]
fn sizes_are_checked_before_allocation() {
    let d = tempfile::tempdir().unwrap();
    fails(
        &[
            "preprocess",
            &fx("dawin_data.safetensors"),
            "--size",
            "100000",
            "--out",
            &p(&d.path().join("x")),
        ],
        &["--size"],
    );
    fails(
        &[
            "synth",
            "--out",
            &p(&d.path().join("s")),
            "--per-class",
            "10000000000",
        ],
        &["--per-class"],
    );
    fails(
        &[
            "demo",
            "--per-class",
            "10000000000",
            "--out-dir",
            &p(&d.path().join("d")),
        ],
        &["--per-class"],
    );
    fails(
        &["bench", "--suite", "pipeline", "--images", "100000000"],
        &["GB of memory"],
    );
    fails(&["bench", "--images", "0"], &["--images"]);
    // An expertise file that claims 1e11 samples, and one whose lengths differ.
    let (_, exps) = shards(&d.path().join("a"), 2, &[]);
    for (meta, tensor_len, says) in [
        (Some("100000000000"), None, "more than the"),
        (None, Some(3), "holds 8 indices but 3 and 8 entropies"),
    ] {
        let f = TensorFile::open(Path::new(&exps[0])).unwrap();
        let mut m = f.metadata();
        if let Some(t) = meta {
            m.insert("samples_total".into(), t.into());
        }
        let (_, index) = f.read_i64("index").unwrap();
        let mut pt = f.read_f32("entropy_pt").unwrap();
        let ft = f.read_f32("entropy_ft").unwrap();
        if let Some(n) = tensor_len {
            pt.data.truncate(n);
            pt.shape = vec![n];
        }
        drop(f);
        let views = vec![
            (
                "index".to_string(),
                TensorView::new(Dtype::I64, vec![index.len()], bytemuck::cast_slice(&index))
                    .unwrap(),
            ),
            (
                "entropy_pt".to_string(),
                TensorView::new(Dtype::F32, pt.shape.clone(), bytemuck::cast_slice(&pt.data))
                    .unwrap(),
            ),
            (
                "entropy_ft".to_string(),
                TensorView::new(Dtype::F32, ft.shape.clone(), bytemuck::cast_slice(&ft.data))
                    .unwrap(),
            ),
        ];
        let bad = d.path().join("bad.safetensors");
        std::fs::write(&bad, safetensors::serialize(views, Some(m)).unwrap()).unwrap();
        let o = merge(&[&p(&bad), &exps[1]], &d.path().join("m.safetensors"), &[]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{t}");
        assert!(
            t.contains(says) && !t.contains("panicked"),
            "no `{says}` in {t}"
        );
    }
}

#[test]
fn messages_name_the_thing() {
    let d = tempfile::tempdir().unwrap();
    // A header with an unknown dtype, and a metadata value that is a number.
    let good = std::fs::read(fixtures_dir().join("dawin_pt.safetensors")).unwrap();
    let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&good[8..8 + n]).unwrap();
    for (from, to, says) in [
        (
            "\"dtype\":\"F16\"",
            "\"dtype\":\"F15\"",
            "unknown dtype \"F15\"",
        ),
        ("\"heads\":\"3\"", "\"heads\":3  ", "metadata `heads` is 3"),
    ] {
        assert!(header.contains(from), "fixture header lacks {from}");
        let h = header.replacen(from, to, 1);
        let mut b = (h.len() as u64).to_le_bytes().to_vec();
        b.extend(h.as_bytes());
        b.extend(&good[8 + n..]);
        let path = d.path().join("bad.safetensors");
        std::fs::write(&path, b).unwrap();
        fails(&["inspect", &p(&path)], &[says]);
    }
    // Offsets that do not fit name the tensor.
    let h = header.replacen("\"data_offsets\":[0,", "\"data_offsets\":[4,", 1);
    let mut b = (h.len() as u64).to_le_bytes().to_vec();
    b.extend(h.as_bytes());
    b.extend(&good[8 + n..]);
    let path = d.path().join("offsets.safetensors");
    std::fs::write(&path, b).unwrap();
    fails(&["inspect", &p(&path)], &["tensor `"]);
    // A directory that is not a model folder.
    fails(
        &["inspect", &p(d.path())],
        &["not a model folder", "config.json"],
    );
    // Outputs: a missing folder and a directory, before any work, no leftovers.
    let io = fx("hf_quickgelu.io.safetensors");
    let model = fx("hf_quickgelu.safetensors");
    let missing = d.path().join("no/such/dir/out.safetensors");
    fails(
        &[
            "forward",
            "--model",
            &model,
            "--input",
            &io,
            "--out",
            &p(&missing),
        ],
        &[&p(&missing), "does not exist"],
    );
    fails(
        &[
            "forward",
            "--model",
            &model,
            "--input",
            &io,
            "--out",
            &p(d.path()),
        ],
        &["is a directory"],
    );
    let json = d.path().join("gone/bench.json");
    let t0 = std::time::Instant::now();
    fails(&["bench", "--json", &p(&json)], &[&p(&json)]);
    assert!(
        t0.elapsed().as_secs() < 5,
        "refused before the benchmark ran"
    );
    let leftovers: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with("tmp~")
        })
        .collect();
    assert!(leftovers.is_empty());
    // An empty shard says so in words.
    let a = eval_args(
        &fx("dawin_data.safetensors"),
        &d.path().join("e"),
        &["--shard", "0/17"],
    );
    fails(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &["shard 0/17 of 16 samples is empty"],
    );
}

/// Every file of an image folder that is not evaluated (not an image, a
/// broken link, a link loop, an unreadable image) is on one line of
/// skipped.txt with its reason, counted in summary.json's `skipped` and
/// on the terminal; a split lists each in exactly one shard, and the
/// merged result set lists each once.
#[cfg(unix)]
#[test]
fn every_file_not_evaluated_is_listed_once() {
    use std::os::unix::fs::symlink;
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("images");
    for c in 0..6 {
        for k in 0..2 {
            image_file(
                &root.join(format!("c{c}/{k}.png")),
                [40 * c as u8, 9, 9 * k],
            );
        }
    }
    std::fs::write(root.join("c1/notes.txt"), "not an image").unwrap();
    symlink(root.join("c2/nowhere.png"), root.join("c2/broken.png")).unwrap();
    symlink(root.join("c3"), root.join("c3/loop")).unwrap();
    symlink(root.join("c4/self.png"), root.join("c4/self.png")).unwrap();
    std::fs::write(root.join("c5/bad.png"), "not a png\nat all").unwrap();
    let names = ["notes.txt", "broken.png", "loop", "self.png", "bad.png"];
    let lines = |out: &Path| -> Vec<String> {
        std::fs::read_to_string(out.join("skipped.txt"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    };
    let whole = d.path().join("whole");
    let t = eval(&p(&root), &whole, &["--methods", "zeroshot"]);
    let listed = lines(&whole);
    assert_eq!(listed.len(), names.len(), "{listed:?}");
    for n in names {
        let line = listed
            .iter()
            .find(|l| l.split('\t').next().unwrap().ends_with(n));
        let line = line.unwrap_or_else(|| panic!("{n} not in {listed:?}"));
        let (path, why) = line.split_once('\t').unwrap();
        assert!(!why.contains(path) && !why.is_empty(), "{line}");
    }
    assert_eq!(summary(&whole)["skipped"], names.len(), "summary.json");
    assert!(t.contains(&format!("{} files skipped", names.len())), "{t}");
    let mut merged_lines = Vec::new();
    let mut sums = Vec::new();
    for i in 0..3 {
        let out = d.path().join(format!("s{i}"));
        eval(
            &p(&root),
            &out,
            &["--methods", "zeroshot", "--shard", &format!("{i}/3")],
        );
        merged_lines.extend(lines(&out));
        assert_eq!(summary(&out)["skipped"], lines(&out).len(), "shard {i}");
        sums.push(p(&out.join("summary.json")));
    }
    merged_lines.sort();
    let mut all = listed.clone();
    all.sort();
    assert_eq!(merged_lines, all, "each file in one shard");
    let mut m = vec!["merge"];
    m.extend(sums.iter().map(String::as_str));
    let total = d.path().join("merged/summary.json");
    std::fs::create_dir_all(total.parent().unwrap()).unwrap();
    m.extend(["--out", total.to_str().unwrap()]);
    ok(&m);
    assert_eq!(summary(total.parent().unwrap())["skipped"], names.len());
    assert_eq!(lines(total.parent().unwrap()).len(), names.len());
}

/// A `w`×`h` image of seeded noise (so resampling and cropping matter).
fn noise_image(path: &Path, w: u32, h: u32, seed: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let v = (x * 7919 + y * 104_729 + seed * 31).wrapping_mul(2_654_435_761) >> 24;
        image::Rgb([v as u8, (v * 3) as u8, (255 - v) as u8])
    });
    img.save(path).unwrap();
}

/// `preprocess` of a class folder and single files, some unreadable, more
/// images than one decoded chunk: the file holds the readable ones in the
/// order given, with their labels (−1 for single files), each image's
/// pixels those of the library's own decode; nothing else is left beside it.
#[test]
fn preprocess_keeps_order_labels_and_pixels_across_chunks_and_skips() {
    use dawin::data::preprocess::load_pixels_cropped;
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("images");
    let mut want = vec![];
    for i in 0..70u32 {
        let class = i % 3;
        let f = root.join(format!("c{class}/i{i:03}.png"));
        noise_image(&f, 20 + i % 7, 17 + i % 5, i);
    }
    std::fs::write(root.join("c1/broken.png"), b"not a png").unwrap();
    for class in 0..3 {
        let mut files: Vec<_> = std::fs::read_dir(root.join(format!("c{class}")))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|f| !f.ends_with("broken.png"))
            .collect();
        files.sort();
        want.extend(files.into_iter().map(|f| (f, class as i64)));
    }
    let single = d.path().join("single.png");
    noise_image(&single, 31, 23, 99);
    let bad = d.path().join("bad.png");
    std::fs::write(&bad, b"not a png either").unwrap();
    want.push((single.clone(), -1));
    let out = d.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let px = out.join("px.safetensors");
    let t = ok(&[
        "preprocess",
        &p(&root),
        &p(&single),
        &p(&bad),
        "--size",
        "16",
        "--dtype",
        "u8",
        "--out",
        &p(&px),
    ]);
    assert!(t.contains("71 images (2 skipped)"), "{t}");
    assert!(t.contains("broken.png") && t.contains("bad.png"), "{t}");
    let f = TensorFile::open(&px).unwrap();
    let labels = f.read_i64("labels").unwrap().1;
    assert_eq!(labels, want.iter().map(|w| w.1).collect::<Vec<_>>());
    let st = f.tensors();
    let got = st.tensor("pixel_values").unwrap();
    assert_eq!(got.shape(), [71, 3, 16, 16]);
    for (i, (file, _)) in want.iter().enumerate() {
        let one = load_pixels_cropped(file, 16, 0).unwrap();
        assert!(
            got.data()[i * 768..][..768] == one[..],
            "image {i}: {file:?}"
        );
    }
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        1,
        "only the output"
    );
}

#[test]
fn the_u8_pixel_cache_gives_the_f32_results() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("images");
    // Landscape, portrait, square, already at the model's size: one per
    // class of the fixture head (6).
    let sizes = [(61, 40), (33, 57), (48, 48), (24, 30), (90, 25), (24, 24)];
    for (i, (w, h)) in sizes.iter().enumerate() {
        noise_image(&root.join(format!("c{i}/i{i}.png")), *w, *h, i as u32);
    }
    let (f32s, u8s) = (
        d.path().join("f32.safetensors"),
        d.path().join("u8.safetensors"),
    );
    ok(&["preprocess", &p(&root), "--size", "24", "--out", &p(&f32s)]);
    let t = ok(&[
        "preprocess",
        &p(&root),
        "--size",
        "24",
        "--dtype",
        "u8",
        "--out",
        &p(&u8s),
    ]);
    assert!(t.contains("6 images"), "{t}");
    let f = TensorFile::open(&u8s).unwrap();
    assert!(f.metadata().contains_key("dawin.pixel_values"));
    assert_eq!(
        f.tensors().tensor("pixel_values").unwrap().dtype(),
        Dtype::U8
    );
    // A quarter of the bytes of f32 (plus headers).
    let (a, b) = (
        std::fs::metadata(&f32s).unwrap().len(),
        std::fs::metadata(&u8s).unwrap().len(),
    );
    assert!(b * 3 < a, "u8 {b} bytes against f32 {a}");
    // eval on the folder, the f32 file and the u8 cache: the same results.
    let methods = ["--methods", "zeroshot,finetuned,dawin"];
    let mut results = vec![];
    for (name, data) in [("folder", &root), ("f32", &f32s), ("u8", &u8s)] {
        let out = d.path().join(format!("eval-{name}"));
        eval(&p(data), &out, &methods);
        let csv = std::fs::read_to_string(out.join("samples.csv")).unwrap();
        results.push((name, summary(&out)["methods"].clone(), csv));
    }
    for (name, methods, csv) in &results[1..] {
        assert_eq!(methods, &results[0].1, "{name} vs the folder");
        // Per-sample rows carry the λs and entropies: equal to the last digit
        // once the folder's extra `path` column is set aside.
        let rows = |c: &str| {
            let fields = c
                .lines()
                .next()
                .unwrap()
                .split(',')
                .take_while(|f| *f != "path")
                .count();
            c.lines()
                .map(|l| l.split(',').take(fields).collect::<Vec<_>>().join(","))
                .collect::<Vec<_>>()
        };
        assert_eq!(rows(csv), rows(&results[0].2), "{name} samples.csv");
    }
    // forward reads the cache too, to the same outputs.
    let model = fx("dawin_pt.safetensors");
    let mut outs = vec![];
    for (name, data) in [("f32", &f32s), ("u8", &u8s)] {
        let out = d.path().join(format!("fwd-{name}.safetensors"));
        ok(&[
            "forward",
            "--model",
            &model,
            "--input",
            &p(data),
            "--out",
            &p(&out),
        ]);
        outs.push(
            TensorFile::open(&out)
                .unwrap()
                .read_f32("image_embeds")
                .unwrap()
                .data,
        );
    }
    assert_eq!(outs[0], outs[1]);
    // u8 pixels from elsewhere are read the same way, and the run says how.
    let raw = TensorFile::open(&u8s).unwrap();
    let st = raw.tensors();
    let bytes = st.tensor("pixel_values").unwrap().data().to_vec();
    let other = d.path().join("other.safetensors");
    let labels = raw.read_i64("labels").unwrap().1;
    let views = vec![
        (
            "pixel_values".to_string(),
            TensorView::new(Dtype::U8, vec![6, 3, 24, 24], &bytes).unwrap(),
        ),
        (
            "labels".to_string(),
            TensorView::new(Dtype::I64, vec![6], bytemuck::cast_slice(&labels)).unwrap(),
        ),
    ];
    std::fs::write(&other, safetensors::serialize(views, None).unwrap()).unwrap();
    let out = d.path().join("eval-other");
    let t = eval(&p(&other), &out, &methods);
    assert!(t.contains("without dawin's"), "{t}");
    let s = summary(&out);
    assert_eq!(s["methods"], results[0].1);
    let noted = s["provenance"]["data_warnings"].to_string();
    assert!(noted.contains("without dawin's"), "{noted}");
}

/// The entries (`.json` marks a complete one) and leftovers of a pixel
/// cache folder.
fn cache_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn eval_keeps_an_image_folders_pixels_and_reads_them_back() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("images");
    let sizes = [(61, 40), (33, 57), (48, 48), (24, 30), (90, 25), (24, 24)];
    for (i, (w, h)) in sizes.iter().enumerate() {
        noise_image(&root.join(format!("c{i}/i{i}.png")), *w, *h, i as u32);
    }
    std::fs::write(root.join("c0/broken.png"), b"not a png").unwrap();
    let cache = d.path().join("pixels");
    let run_into = |name: &str, extra: &[&str]| {
        let out = d.path().join(name);
        let mut flags = vec!["--methods", "zeroshot,finetuned,dawin"];
        let cache = p(&cache);
        if !extra.contains(&"--pixel-cache") {
            flags.extend(["--pixel-cache", &cache]);
        }
        let said = eval(&p(&root), &out, &[&flags[..], extra].concat());
        let s = summary(&out);
        let csv = std::fs::read_to_string(out.join("samples.csv")).unwrap();
        (said, s, csv)
    };
    // A shard does not read every image: no entry, nothing left behind.
    let (_, s, _) = run_into("shard", &["--shard", "0/2"]);
    let state = s["provenance"]["pixel_cache"].as_str().unwrap().to_string();
    assert!(state.starts_with("unused"), "{state}");
    assert!(cache_files(&cache).is_empty(), "{:?}", cache_files(&cache));
    // The first whole run fills the entry as it decodes (and clears what a
    // killed filler left: no process has pid 999999999).
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join(".0123.u8.999999999.tmp~"), b"partial").unwrap();
    let (said, first, csv) = run_into("first", &[]);
    assert!(said.contains("kept the 7 decoded images"), "{said}");
    assert!(said.contains("broken.png"), "{said}");
    assert_eq!(first["provenance"]["pixel_cache"], "filled by this run");
    let files = cache_files(&cache);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().all(|f| !f.ends_with("tmp~")), "{files:?}");
    // A second run reads it: no decoding, the same results, the unreadable
    // image reported again.
    let (said, second, csv2) = run_into("second", &[]);
    assert!(said.contains("from the pixel cache"), "{said}");
    assert!(said.contains("broken.png"), "{said}");
    assert_eq!(second["provenance"]["pixel_cache"], "hit");
    assert_eq!(second["methods"], first["methods"]);
    assert_eq!(csv2, csv);
    // A damaged entry is noticed, and the images decoded instead.
    let data = cache.join(files.iter().find(|f| f.ends_with(".u8")).unwrap());
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&data, bytes).unwrap();
    let (said, third, csv3) = run_into("damaged", &[]);
    assert!(said.contains("does not match its checksum"), "{said}");
    assert_eq!(third["methods"], first["methods"]);
    assert_eq!(csv3, csv);
    // ... and refilled by the next run.
    let (_, refilled, _) = run_into("refilled", &[]);
    assert_eq!(refilled["provenance"]["pixel_cache"], "filled by this run");
    // Changed files are other content: a second entry.
    noise_image(&root.join("c3/i3.png"), 24, 30, 99);
    let (_, fourth, _) = run_into("changed", &[]);
    assert_eq!(fourth["provenance"]["pixel_cache"], "filled by this run");
    assert_eq!(cache_files(&cache).len(), 4, "{:?}", cache_files(&cache));
    // A cache folder that cannot be made is said, and the run goes on.
    let file = d.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let (said, blocked, _) = run_into("blocked", &["--pixel-cache", &p(&file)]);
    assert!(said.contains("pixel cache:"), "{said}");
    assert_eq!(blocked["methods"], fourth["methods"]);
    // `off` neither reads nor writes it.
    let (said, off, _) = run_into("off", &["--pixel-cache", "off"]);
    assert!(!said.contains("pixel cache"), "{said}");
    assert!(off["provenance"].get("pixel_cache").is_none());
}

/// eval-mtl's passes over an image folder decode it once, and a later run
/// reads the entry: the same results, and the summary says which.
#[test]
fn eval_mtl_reads_an_image_folder_through_the_pixel_cache() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("images");
    for i in 0..6 {
        noise_image(&root.join(format!("c{i}/i{i}.png")), 30 + i, 27, i);
    }
    let cache = d.path().join("pixels");
    let tasks = format!(
        "{},{}",
        fx("dawin_ft.safetensors"),
        fx("dawin_pt.safetensors")
    );
    let run_into = |name: &str| {
        let out = d.path().join(name);
        ok(&[
            "eval-mtl",
            "--base",
            &fx("dawin_pt.safetensors"),
            "--tasks",
            &tasks,
            "--task-index",
            "0",
            "--data",
            &p(&root),
            "--pixel-cache",
            &p(&cache),
            "-o",
            &p(&out),
            "-q",
        ]);
        summary(&out)
    };
    let first = run_into("first");
    assert_eq!(first["pixel_cache"], "filled by this run");
    let second = run_into("second");
    assert_eq!(second["pixel_cache"], "hit");
    assert_eq!(second["methods"], first["methods"]);
}
