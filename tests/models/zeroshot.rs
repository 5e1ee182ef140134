//! `dawin zeroshot` and `dawin encode-text` on the CLIP fixtures with text
//! towers (tests/fixtures/text, made by `tools/make_fixtures.py --text`):
//! heads, zero-shot logits and text embeddings against transformers' and
//! open_clip's float64 references within 1e-4 of their scale, on every
//! executor; the zero-shot model evaluated by `dawin eval` beside a
//! fine-tuned one; bad inputs as clear errors.

use crate::common::{assert_close, dawin_bin, fixtures_dir};
use dawin::tensorfile::TensorFile;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

fn text_dir() -> PathBuf {
    fixtures_dir().join("text")
}

/// Runs dawin; returns success and everything it printed.
fn dawin<S: AsRef<OsStr>>(args: &[S]) -> (bool, String) {
    let o = Command::new(dawin_bin()).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(!text.contains("panicked"), "{text}");
    (o.status.success(), text)
}

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// The fixture's classes and templates as the files a user writes.
fn prompt_files(dir: &Path) -> (PathBuf, PathBuf) {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(text_dir().join("zeroshot.json")).unwrap())
            .unwrap();
    let lines = |k: &str| {
        let items: Vec<&str> = v[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        items.join("\n") + "\n"
    };
    let (c, t) = (dir.join("classes.txt"), dir.join("templates.txt"));
    std::fs::write(&c, format!("# the fixture's classes\n{}", lines("classes"))).unwrap();
    std::fs::write(&t, lines("templates")).unwrap();
    (c, t)
}

fn zeroshot(model: &str, dir: &Path, device: &str) -> PathBuf {
    let (c, t) = prompt_files(dir);
    let out = dir.join(format!("zs_{model}_{device}.safetensors"));
    let m = text_dir().join(model);
    let args = [
        "zeroshot",
        "--model",
        &path(&m),
        "--classes",
        &path(&c),
        "--templates",
        &path(&t),
    ];
    let (ok, text) = dawin(&[&args[..], &["-o", &path(&out), "-d", device, "-q"]].concat());
    assert!(ok, "{text}");
    assert!(!text.contains("warning"), "{text}");
    out
}

fn check_zeroshot(model: &str) {
    let dir = tempfile::tempdir().unwrap();
    let reference = TensorFile::open(&text_dir().join(format!("{model}.io.safetensors"))).unwrap();
    for device in dawin::exec::available().iter().map(|d| d.to_string()) {
        let zs = zeroshot(model, dir.path(), &device);
        let f = TensorFile::open(&zs).unwrap();
        let what = format!("{model} on {device}");
        let head = f.read_f32("classification_head.weight").unwrap();
        assert_close(
            &format!("{what}: head"),
            &head.data,
            &reference.read_f32("head").unwrap().data,
            1e-4,
        );
        assert!(
            f.read_f32("classification_head.bias")
                .unwrap()
                .data
                .iter()
                .all(|&b| b == 0.0)
        );
        let meta = f.metadata();
        let classes: Vec<String> = serde_json::from_str(&meta["zeroshot_classes"]).unwrap();
        assert_eq!(classes.len(), 5, "{what}");
        // The classifier runs with no flags: its logits are the zero-shot ones.
        let out = dir.path().join("logits.safetensors");
        let input = text_dir().join(format!("{model}.io.safetensors"));
        let (ok, text) = dawin(&[
            "forward",
            "--model",
            &path(&zs),
            "--input",
            &path(&input),
            "--out",
            &path(&out),
        ]);
        assert!(ok && !text.contains("warning"), "{text}");
        let got = TensorFile::open(&out).unwrap().read_f32("logits").unwrap();
        assert_close(
            &format!("{what}: zero-shot logits"),
            &got.data,
            &reference.read_f32("logits").unwrap().data,
            1e-4,
        );
    }
}

#[test]
fn hf_clip_zero_shot_head_and_logits_match_transformers() {
    check_zeroshot("hf_clip");
}

#[test]
fn open_clip_zero_shot_head_and_logits_match_open_clip() {
    check_zeroshot("open_clip");
}

#[test]
fn encode_text_writes_openai_ids_and_the_reference_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    for model in ["hf_clip", "open_clip"] {
        let out = dir.path().join(format!("{model}.safetensors"));
        let m = text_dir().join(model);
        let prompts = text_dir().join("prompts.txt");
        let (ok, text) = dawin(&[
            "encode-text",
            "--model",
            &path(&m),
            "--texts",
            &path(&prompts),
            "-o",
            &path(&out),
            "-q",
        ]);
        assert!(ok, "{text}");
        assert!(
            text.contains("1 of 7 prompts were longer than the context"),
            "{text}"
        );
        let (got, want) = (
            TensorFile::open(&out).unwrap(),
            TensorFile::open(&text_dir().join(format!("{model}.io.safetensors"))).unwrap(),
        );
        assert_eq!(
            got.read_i64("input_ids").unwrap(),
            want.read_i64("input_ids").unwrap()
        );
        let e = got.read_f32("text_embeds").unwrap();
        assert_close(
            &format!("{model} text_embeds"),
            &e.data,
            &want.read_f32("text_embeds").unwrap().data,
            1e-4,
        );
    }
}

/// A "fine-tuned" classifier beside the zero-shot one: its weights moved a
/// little and its head another one, as fine-tuning leaves them.
fn finetuned_from(zs: &Path, out: &Path) {
    use dawin::model::{Model, Overrides};
    let mut m = Model::load(zs, Overrides::default()).unwrap();
    let mut rng = dawin::rng::SplitMix(7);
    for v in m.flat.iter_mut() {
        *v += 0.05 * v.abs().max(0.1) * rng.normal();
    }
    m.save(out).unwrap();
}

#[test]
fn the_zero_shot_model_evaluates_beside_a_finetuned_one() {
    let dir = tempfile::tempdir().unwrap();
    let zs = zeroshot("hf_clip", dir.path(), "cpu");
    let ft = dir.path().join("ft.safetensors");
    finetuned_from(&zs, &ft);
    let io = TensorFile::open(&text_dir().join("hf_clip.io.safetensors")).unwrap();
    let px = io.read_f32("pixel_values").unwrap();
    let data = dir.path().join("data.safetensors");
    dawin::tensorfile::write_f32_with_labels(&data, &px, &[0, 1, 2, 3]).unwrap();
    let run = dir.path().join("run");
    let args = [
        "eval",
        "--pretrained",
        &path(&zs),
        "--finetuned",
        &path(&ft),
        "--data",
        &path(&data),
    ];
    let (ok, text) = dawin(&[&args[..], &["-o", &path(&run), "-q"]].concat());
    assert!(ok, "{text}");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let methods = s["methods"].as_object().unwrap();
    assert!(
        methods.keys().any(|k| k.starts_with("dawin")),
        "{methods:?}"
    );
    assert_eq!(s["samples"], 4, "{s}");
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (classes, templates) = prompt_files(d);
    let model = path(&text_dir().join("open_clip"));
    let write = |name: &str, bytes: &[u8]| {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        path(&p)
    };
    let empty = write("empty.txt", b"# nothing\n\n");
    let no_slot = write("no_slot.txt", b"a photo of a {}.\na photo of a thing.\n");
    let twice = write("twice.txt", b"dog\ncat\ndog\n");
    let latin1 = write("latin1.txt", b"a caf\xe9\n");
    let out = path(&d.join("zs.safetensors"));
    let zs = |m: &str, c: &str, t: &str| {
        dawin(&[
            "zeroshot",
            "--model",
            m,
            "--classes",
            c,
            "--templates",
            t,
            "-o",
            &out,
        ])
    };
    let (c, t) = (path(&classes), path(&templates));
    let image_only = path(&fixtures_dir().join("dawin_pt.safetensors"));
    for ((ok, text), want) in [
        (zs(&model, &empty, &t), "no class names in it"),
        (
            zs(&model, &c, &no_slot),
            "has no `{}` where the class name goes",
        ),
        (
            zs(&model, &latin1, &t),
            "is not UTF-8 text (an invalid byte on line 1",
        ),
        (
            zs(&image_only, &c, &t),
            "no CLIP text tower in this checkpoint",
        ),
        (
            zs(&model, &c, "no-such-set"),
            "not a shipped name (openai-imagenet, simple, sun397, cars,",
        ),
        (
            dawin(&[
                "encode-text",
                "--model",
                &model,
                "--texts",
                &latin1,
                "-o",
                &out,
            ]),
            "is not UTF-8 text",
        ),
    ] {
        assert!(!ok, "should fail with `{want}`: {text}");
        assert!(text.contains(want), "expected `{want}` in: {text}");
    }
    assert!(
        !d.join("zs.safetensors").exists(),
        "no output from a failed run"
    );
    // A name given twice is allowed (CLIP's ImageNet list has two) but said.
    let (ok, text) = zs(&model, &twice, &t);
    assert!(ok && text.contains("`dog` names classes 0 and 2"), "{text}");
}

#[test]
fn shipped_sets_have_their_sizes() {
    use dawin::pipelines::zeroshot::{classes, templates};
    let imagenet = classes(Path::new("imagenet")).unwrap().1;
    assert_eq!(imagenet.len(), 1000);
    assert_eq!(dawin::pipelines::zeroshot::repeated(&imagenet).len(), 2);
    assert_eq!(templates(Path::new("openai-imagenet")).unwrap().1.len(), 80);
    assert_eq!(
        templates(Path::new("simple")).unwrap().1,
        ["a photo of a {}."]
    );
}

/// `--classes FOLDER` names the head's rows by the image folder's class
/// folders in the order eval labels them, underscores as spaces: the same
/// head as a class file listing those names in that order.
#[test]
fn classes_from_an_image_folder_follow_its_label_order() {
    let dir = tempfile::tempdir().unwrap();
    let (_, t) = prompt_files(dir.path());
    let names = ["red panda", "cat", "a dog"];
    let folder = dir.path().join("images");
    for n in names {
        std::fs::create_dir_all(folder.join(n.replace(' ', "_"))).unwrap();
    }
    let mut sorted: Vec<String> = names.iter().map(|n| n.replace(' ', "_")).collect();
    sorted.sort();
    let listed = dir.path().join("listed.txt");
    let spaced: Vec<String> = sorted.iter().map(|n| n.replace('_', " ")).collect();
    std::fs::write(&listed, spaced.join("\n")).unwrap();
    let m = path(&text_dir().join("hf_clip"));
    let run = |classes: &Path, out: &Path| {
        let (ok, text) = dawin(&[
            "zeroshot",
            "--model",
            &m,
            "--classes",
            &path(classes),
            "--templates",
            &path(&t),
            "-o",
            &path(out),
            "-q",
        ]);
        assert!(ok, "{text}");
    };
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    run(&folder, &a);
    run(&listed, &b);
    let (fa, fb) = (TensorFile::open(&a).unwrap(), TensorFile::open(&b).unwrap());
    let w = "classification_head.weight";
    assert_eq!(fa.read_f32(w).unwrap().data, fb.read_f32(w).unwrap().data);
    let meta = fa.metadata();
    let got: Vec<String> = serde_json::from_str(&meta["zeroshot_classes"]).unwrap();
    assert_eq!(got, spaced);
}
