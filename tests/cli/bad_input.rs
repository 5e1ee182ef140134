//! Bad files and inputs get clear errors naming the file and the problem,
//! never a panic.

use crate::common::fixtures_dir;
use dawin::model::{Model, Overrides};
use proptest::prelude::*;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(format!("{name}.safetensors"))).unwrap()
}

/// Tensors of a file as owned (dtype, shape, bytes), editable.
type Edit = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

fn tensors_of(bytes: &[u8]) -> Edit {
    let st = SafeTensors::deserialize(bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, t)| (n, (t.dtype(), t.shape().to_vec(), t.data().to_vec())))
        .collect()
}

fn write(dir: &Path, name: &str, t: &Edit) -> PathBuf {
    let views: Vec<(String, TensorView)> = t
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn load_err(path: &Path) -> String {
    let e = Model::load(path, Overrides::default()).expect_err("must fail");
    let msg = e.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "error does not name the file: {msg}"
    );
    msg
}

#[test]
fn not_a_safetensors_file() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("notes.safetensors");
    // Text (a CSV, a JSON, notes) and known formats are named as what they are.
    std::fs::write(&p, b"hello, this is not a tensor file at all").unwrap();
    assert!(load_err(&p).contains("is a text file, not a model file"));
    std::fs::write(&p, b"{\"a\": 1}").unwrap();
    assert!(load_err(&p).contains("is a JSON text file, not a model file"));
    std::fs::write(&p, b"\x89PNG\r\n\x1a\n....").unwrap();
    assert!(load_err(&p).contains("is a PNG image, not a model file"));
    std::fs::write(&p, b"\x01\x02\x03").unwrap();
    assert!(load_err(&p).contains("too short"));
    std::fs::write(&p, b"").unwrap();
    load_err(&p);
}

#[test]
fn header_claims_more_bytes_than_the_file_holds() {
    let d = tempfile::tempdir().unwrap();
    let mut b = fixture_bytes("hf_quickgelu");
    let claim = (b.len() as u64 * 2).to_le_bytes();
    b[..8].copy_from_slice(&claim);
    let p = d.path().join("big-header.safetensors");
    std::fs::write(&p, &b).unwrap();
    let msg = load_err(&p);
    assert!(msg.contains("header claims"), "{msg}");
}

#[test]
fn truncated_file() {
    let d = tempfile::tempdir().unwrap();
    let b = fixture_bytes("openai_gelu");
    let p = d.path().join("cut.safetensors");
    std::fs::write(&p, &b[..b.len() - 100]).unwrap();
    let msg = load_err(&p);
    assert!(msg.contains("truncated"), "{msg}");
}

#[test]
fn missing_tensor_names_it() {
    let d = tempfile::tempdir().unwrap();
    let mut t = tensors_of(&fixture_bytes("openai_gelu"));
    t.remove("visual.transformer.resblocks.1.ln_2.bias");
    let msg = load_err(&write(d.path(), "missing.safetensors", &t));
    assert!(
        msg.contains("missing tensor `visual.transformer.resblocks.1.ln_2.bias`"),
        "{msg}"
    );
}

#[test]
fn misshaped_tensor_gives_both_shapes() {
    let d = tempfile::tempdir().unwrap();
    let mut t = tensors_of(&fixture_bytes("openai_gelu"));
    let e = t
        .get_mut("visual.transformer.resblocks.0.attn.in_proj_weight")
        .unwrap();
    e.1 = vec![64, 192];
    let msg = load_err(&write(d.path(), "shape.safetensors", &t));
    assert!(
        msg.contains("[64, 192]") && msg.contains("[192, 64]"),
        "{msg}"
    );
}

#[test]
fn unknown_layout_lists_expected_and_closest_keys() {
    let d = tempfile::tempdir().unwrap();
    let t = tensors_of(&fixture_bytes("openai_gelu"));
    // Any prefix is recognised, so the anchor itself must be gone.
    let renamed: Edit = t
        .into_iter()
        .map(|(n, v)| (n.replace("visual.", "tower.").replace("conv1", "stem"), v))
        .collect();
    let msg = load_err(&write(d.path(), "odd.safetensors", &renamed));
    assert!(msg.contains("unknown weight layout"), "{msg}");
    assert!(
        msg.contains("visual.conv1.weight")
            && msg.contains("vision_model.embeddings.patch_embedding.weight"),
        "{msg}"
    );
    assert!(msg.contains("closest key found: `tower."), "{msg}");
}

#[test]
fn unsupported_dtype_is_named() {
    let d = tempfile::tempdir().unwrap();
    let mut t = tensors_of(&fixture_bytes("openai_gelu"));
    let e = t.get_mut("visual.ln_pre.weight").unwrap();
    e.0 = Dtype::I32;
    let msg = load_err(&write(d.path(), "dtype.safetensors", &t));
    assert!(
        msg.contains("I32") && msg.contains("visual.ln_pre.weight"),
        "{msg}"
    );
}

#[test]
fn bad_metadata_and_heads_that_do_not_divide() {
    let p = fixtures_dir().join("soups_quickgelu.safetensors");
    let e = Model::load(
        &p,
        Overrides {
            heads: Some(5),
            act: None,
            ..Overrides::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("5 attention heads do not divide width 64"),
        "{e}"
    );
    let m = Model::load(
        &p,
        Overrides {
            heads: Some(4),
            act: Some(dawin::model::Act::Gelu),
            ..Overrides::default()
        },
    )
    .unwrap();
    assert_eq!((m.spec.heads, m.spec.act), (4, dawin::model::Act::Gelu));
    // Metadata wins over flags, and says so.
    let m = Model::load(
        &fixtures_dir().join("hf_quickgelu.safetensors"),
        Overrides {
            heads: Some(2),
            act: None,
            ..Overrides::default()
        },
    )
    .unwrap();
    assert_eq!(m.spec.heads, 4);
    assert!(
        m.notes.iter().any(|n| n.contains("--heads 2 ignored")),
        "{:?}",
        m.notes
    );
}

#[test]
fn missing_file_is_an_io_error_with_the_path() {
    let p = PathBuf::from("/nonexistent/model.safetensors");
    let e = Model::load(&p, Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/model.safetensors"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any truncation is an error, never a panic.
    #[test]
    fn truncated_copies_are_errors(cut in 0usize..1000, name in prop::sample::select(vec!["hf_quickgelu", "soups_quickgelu", "hfbare_gelu_bf16"])) {
        let b = fixture_bytes(name);
        let keep = (cut * (b.len() - 1)) / 1000;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.safetensors");
        std::fs::write(&p, &b[..keep]).unwrap();
        let r = std::panic::catch_unwind(|| Model::load(&p, Overrides::default()));
        prop_assert!(r.is_ok(), "panicked on truncation at {keep}");
        prop_assert!(r.unwrap().is_err(), "truncation at {keep} loaded");
    }

    /// Byte mutations anywhere in the header never panic; when the result
    /// still loads, it is a consistent model (the mutation hit a harmless
    /// spot, such as a metadata value).
    #[test]
    fn mutated_headers_never_panic(pos in 0usize..10_000, byte in any::<u8>(), count in 1usize..4) {
        let mut b = fixture_bytes("hf_quickgelu");
        let header = 8 + u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
        for i in 0..count {
            let at = (pos * 7919 + i * 104729) % header;
            b[at] = byte;
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.safetensors");
        std::fs::write(&p, &b).unwrap();
        let r = std::panic::catch_unwind(|| Model::load(&p, Overrides::default()));
        prop_assert!(r.is_ok(), "panicked on mutation at {pos}");
        if let Ok(m) = r.unwrap() {
            let s = &m.spec;
            prop_assert!(s.width % s.heads == 0 && s.tokens() >= 2);
            let total: usize = m.params.named().iter().map(|(_, r)| r.len()).sum();
            prop_assert_eq!(total, m.param_count());
        }
    }
}

/// A cache, an expertise file and a summary made by a real run of the
/// fixture pair (shard 0 of 2), once for the property test below.
fn scale_out_files() -> &'static (PathBuf, PathBuf, PathBuf, PathBuf) {
    static FILES: std::sync::OnceLock<(PathBuf, PathBuf, PathBuf, PathBuf)> =
        std::sync::OnceLock::new();
    FILES.get_or_init(|| {
        use dawin::pipelines::{eval, shard};
        let dir = tempfile::tempdir().unwrap().keep();
        let o = eval::EvalOptions {
            pretrained: fixtures_dir().join("dawin_pt.safetensors"),
            finetuned: fixtures_dir().join("dawin_ft.safetensors"),
            data: fixtures_dir().join("dawin_data.safetensors"),
            out_dir: dir.join("s0"),
            shard: Some((0, 2)),
            progress: false,
            methods: dawin::method::methods::Method::parse_list("zeroshot,dawin").unwrap(),
            ..eval::EvalOptions::default()
        };
        let ex = dawin::exec::open(dawin::exec::ExecutorKind::Cpu).unwrap();
        let r = eval::run_expertise(&o, ex.as_ref()).unwrap();
        shard::write_expertise(&o.out_dir.join("expertise.safetensors"), &r).unwrap();
        drop(r);
        eval::run(&o, ex.as_ref()).unwrap();
        let other = eval::EvalOptions {
            out_dir: dir.join("s1"),
            shard: Some((1, 2)),
            ..o
        };
        let r = eval::run_expertise(&other, ex.as_ref()).unwrap();
        shard::write_expertise(&other.out_dir.join("expertise.safetensors"), &r).unwrap();
        let s0 = dir.join("s0");
        (
            s0.join("cache.safetensors"),
            s0.join("expertise.safetensors"),
            s0.join("summary.json"),
            dir.join("s1/expertise.safetensors"),
        )
    })
}

/// `bytes` with `count` bytes from `pos` on replaced by `byte`, or cut at
/// `pos` when `cut`.
fn mutate(bytes: &[u8], pos: usize, byte: u8, count: usize, cut: bool) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let at = pos % b.len().max(1);
    if cut {
        b.truncate(at);
    } else {
        for x in b.iter_mut().skip(at).take(count) {
            *x = byte;
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Damaged caches, expertise files and summaries are an `Err` (or, for
    /// a cache, a reason to recompute), never a panic, from every reader.
    #[test]
    fn damaged_scale_out_files_never_panic(pos in 0usize..100_000, byte in any::<u8>(), count in 1usize..6, cut in any::<bool>()) {
        use dawin::pipelines::{cache::Cache, shard};
        let (cache, expertise, summary, other) = scale_out_files();
        let d = tempfile::tempdir().unwrap();
        let bad = d.path().join("bad");
        std::fs::write(&bad, mutate(&std::fs::read(cache).unwrap(), pos, byte, count, cut)).unwrap();
        let key = cache_key(cache);
        let _ = Cache::load(&bad, &key, 8, 6);
        std::fs::write(&bad, mutate(&std::fs::read(expertise).unwrap(), pos, byte, count, cut)).unwrap();
        let _ = shard::read_expertise(&bad, 16, 10);
        let _ = shard::merge_expertise(&[bad.as_path(), other.as_path()], &d.path().join("m"), false);
        let json = d.path().join("bad.json");
        std::fs::write(&json, mutate(&std::fs::read(summary).unwrap(), pos, byte, count, cut)).unwrap();
        let _ = shard::merge_summaries(&[json.as_path(), summary.as_path()], &d.path().join("m.json"), true);
    }
}

/// The key a cache file was written with (its metadata), so a mutated
/// copy is read past the key check.
fn cache_key(path: &Path) -> String {
    dawin::tensorfile::TensorFile::open(path)
        .unwrap()
        .metadata()["key"]
        .clone()
}

/// Messages that name the cause: a config's head count that does not
/// divide the width names the config key; a summary among expertise files
/// says to merge them apart; a missing set of a multi-set run is found
/// before the first set runs.
#[test]
fn messages_name_the_cause() {
    let d = tempfile::tempdir().unwrap();
    // An HF folder whose config.json says 3 heads for width 128.
    let src = fixtures_dir().join("checkpoints/hf_clip");
    let folder = d.path().join("hf3");
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(
        src.join("model.safetensors"),
        folder.join("model.safetensors"),
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg["vision_config"]["num_attention_heads"] = 3.into();
    std::fs::write(folder.join("config.json"), cfg.to_string()).unwrap();
    let e = Model::load(
        &folder,
        Overrides {
            heads: Some(4),
            ..Overrides::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("num_attention_heads = 3") && e.contains("--heads cannot override a config"),
        "{e}"
    );
    let run = |args: &[&str]| {
        let o = std::process::Command::new(crate::common::dawin_bin())
            .args(args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let summary = d.path().join("summary.json");
    std::fs::write(&summary, "{}").unwrap();
    let shard = d.path().join("expertise.safetensors");
    std::fs::write(&shard, b"").unwrap();
    let out = d.path().join("merged.safetensors");
    let e = run(&[
        "merge",
        &shard.display().to_string(),
        &summary.display().to_string(),
        "--out",
        &out.display().to_string(),
    ]);
    assert!(
        e.contains("is a summary") && e.contains("separately"),
        "{e}"
    );
    let fx = |n: &str| fixtures_dir().join(n).display().to_string();
    let sets = format!(
        "a={},b={}",
        fx("dawin_data.safetensors"),
        d.path().join("gone.safetensors").display()
    );
    let e = run(&[
        "eval",
        "--pretrained",
        &fx("dawin_pt.safetensors"),
        "--finetuned",
        &fx("dawin_ft.safetensors"),
        "--data",
        &sets,
        "--out-dir",
        &d.path().join("ms").display().to_string(),
        "--quiet",
    ]);
    assert!(
        e.contains("gone.safetensors") && e.contains("nothing was evaluated"),
        "{e}"
    );
    assert!(
        !d.path().join("ms/a/summary.json").exists(),
        "set a ran before the missing set was found"
    );
}

/// A newcomer's mistakes, answered in their terms: count flags that are
/// zero or negative (`-b -4` too), a weight outside [0, 1], a misspelled
/// method, a missing input named by its flag with nothing left behind, and
/// the same model given twice.
#[test]
fn first_hour_mistakes_are_answered_in_the_users_terms() {
    let d = tempfile::tempdir().unwrap();
    let fx = |n: &str| fixtures_dir().join(n).display().to_string();
    let out = d.path().join("out");
    let eval = |extra: &[&str], pretrained: &str| {
        let mut a = vec![
            "eval".to_string(),
            "--pretrained".into(),
            pretrained.into(),
            "--finetuned".into(),
            fx("dawin_ft.safetensors"),
            "--data".into(),
            fx("dawin_data.safetensors"),
            "--out-dir".into(),
            out.display().to_string(),
            "--quiet".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        let o = std::process::Command::new(crate::common::dawin_bin())
            .args(&a)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let pt = fx("dawin_pt.safetensors");
    for b in ["-4", "0"] {
        let (code, e) = eval(&["-b", b], &pt);
        assert_eq!(code, Some(2), "{e}");
        assert!(
            e.contains("must be a positive whole number (1 or more)"),
            "-b {b}: {e}"
        );
    }
    let (_, e) = eval(&["--methods", "wise-ft:1.5"], &pt);
    assert!(e.contains("α must be in [0, 1], got 1.5"), "{e}");
    let (_, e) = eval(&["--methods", "zeroshot,dawn"], &pt);
    assert!(e.contains("did you mean `dawin`?"), "{e}");
    let (code, e) = eval(
        &[],
        &d.path().join("nope.safetensors").display().to_string(),
    );
    assert_eq!(code, Some(1), "{e}");
    assert!(
        e.contains("--pretrained") && e.contains("no such file"),
        "{e}"
    );
    assert!(
        !out.exists(),
        "a run that failed before writing left {}",
        out.display()
    );
    let (code, e) = eval(&[], &fx("dawin_ft.safetensors"));
    assert_eq!(code, Some(0), "{e}");
    assert!(e.contains("hold the same weights"), "{e}");
    // Two architectures: their configurations side by side.
    let (_, e) = eval(&[], &fx("hf_quickgelu.safetensors"));
    assert!(
        e.contains("pretrained") && e.contains("width 64, 2 layers, patch 8, image 32, 10 classes"),
        "{e}"
    );
    // A CLIP checkpoint without a head: the zeroshot command that gives it one.
    let clip = fixtures_dir()
        .join("checkpoints/hf_clip")
        .display()
        .to_string();
    let o = std::process::Command::new(crate::common::dawin_bin())
        .args([
            "eval",
            "--pretrained",
            &clip,
            "--finetuned",
            &clip,
            "--data",
        ])
        .arg(fx("dawin_data.safetensors"))
        .args(["--out-dir", &out.display().to_string()])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains(&format!("dawin zeroshot --model {clip} --classes")),
        "{e}"
    );
}
