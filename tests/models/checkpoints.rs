//! Checkpoints as users hold them (tests/fixtures/checkpoints, made by
//! `tools/make_fixtures.py --checkpoints` with torch, transformers and
//! open_clip): each runs with no flags and matches the reference its
//! library computed; the restricted unpickler refuses what it must; the
//! zip and pickle readers turn damaged files into errors, never panics.

use crate::common::{assert_close, dawin_bin, fixtures_dir};
use dawin::checkpoint::{Checkpoint, Globals, OpenOptions, pickle};
use dawin::tensorfile::TensorFile;
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ck(name: &str) -> PathBuf {
    fixtures_dir().join("checkpoints").join(name)
}

fn dawin(args: &[&std::ffi::OsStr]) -> (Output, String) {
    let o = Command::new(dawin_bin()).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    (o, text)
}

/// Runs `dawin forward` on a model with `extra` flags; returns the output
/// file's tensors and what the command printed.
fn forward(model: &Path, io: &str, extra: &[&str]) -> (TensorFile, String) {
    let d = tempfile::tempdir().unwrap().keep();
    let out = d.join("out.safetensors");
    let input = ck(&format!("{io}.io.safetensors"));
    let mut args: Vec<&std::ffi::OsStr> =
        vec!["forward".as_ref(), "--model".as_ref(), model.as_os_str()];
    args.extend([
        "--input".as_ref(),
        input.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    args.extend(extra.iter().map(|s| std::ffi::OsStr::new(*s)));
    let (o, text) = dawin(&args);
    assert!(o.status.success(), "{}: {text}", model.display());
    (TensorFile::open(&out).unwrap(), text)
}

fn check_against_reference(model: &Path, io: &str, extra: &[&str]) -> String {
    let (got, text) = forward(model, io, extra);
    let want = TensorFile::open(&ck(&format!("{io}.io.safetensors"))).unwrap();
    for t in ["image_embeds", "logits"] {
        if let Ok(w) = want.read_f32(t) {
            let g = got.read_f32(t).unwrap();
            assert_eq!(g.shape, w.shape, "{t}");
            assert_close(&format!("{} {t}", model.display()), &g.data, &w.data, 1e-4);
        }
    }
    text
}

#[test]
fn folders_run_with_no_flags_and_match_their_references() {
    for (dir, io) in [
        ("open_clip", "open_clip"),
        ("hf_clip", "hf_clip"),
        ("hf_sharded", "hf_sharded"),
        ("hf_sharded_bin", "hf_sharded"),
    ] {
        let text = check_against_reference(&ck(dir), io, &[]);
        assert!(!text.contains("warning"), "{dir}: {text}");
    }
}

#[test]
fn hf_folder_heads_come_from_config_json_not_width_over_64() {
    // Width 128 would be 2 heads by the OpenAI default; config.json says 4.
    let m = dawin::model::Model::load(&ck("hf_clip"), Default::default()).unwrap();
    assert_eq!((m.spec.width, m.spec.heads), (128, 4));
    assert_eq!(m.spec.act, dawin::model::Act::Gelu);
    let oc = dawin::model::Model::load(&ck("open_clip"), Default::default()).unwrap();
    assert_eq!((oc.spec.width, oc.spec.heads), (96, 3), "head_width 32");
    assert_eq!(oc.spec.act, dawin::model::Act::Gelu, "quick_gelu absent");
    // A contradicting flag loses to the config, with a warning on stderr.
    let (_, text) = forward(&ck("hf_clip"), "hf_clip", &["--heads", "2"]);
    assert!(
        text.contains("--heads 2 ignored") && text.contains("config.json"),
        "{text}"
    );
}

#[test]
fn a_pickled_whole_module_reads_with_pickled_modules_only() {
    let p = ck("wiseft_module.pt");
    let (o, text) = dawin(&["inspect".as_ref(), p.as_os_str()]);
    assert!(!o.status.success());
    assert!(
        text.contains("__main__.ImageClassifier") && text.contains("--pickled-modules"),
        "{text}"
    );
    let text = check_against_reference(
        &p,
        "wiseft_module",
        &["--pickled-modules", "--heads", "3", "--act", "gelu"],
    );
    assert!(!text.contains("assuming"), "{text}");
}

#[test]
fn wiseft_plain_pickles_and_the_legacy_format_read() {
    // WiSE-FT's utils.torch_save: pickle.dump(classifier), storages inline.
    let p = ck("wiseft_pickle.pt");
    let args = ["--pickled-modules", "--heads", "3", "--act", "gelu"];
    check_against_reference(&p, "wiseft_module", &args);
    // torch.save(..., _use_new_zipfile_serialization=False).
    let a = Checkpoint::open(&ck("dawin_ft_legacy.bin"), OpenOptions::default()).unwrap();
    assert!(a.description.contains("legacy"), "{}", a.description);
    let b = TensorFile::open(&fixtures_dir().join("dawin_ft.safetensors")).unwrap();
    assert_eq!(a.names(), b.names());
    for n in b.names() {
        assert_eq!(a.read_f32(&n).unwrap(), b.read_f32(&n).unwrap().data, "{n}");
    }
}

#[test]
fn a_torchscript_archive_reads_by_attribute_path() {
    let p = ck("open_clip_torchscript.pt");
    let text = check_against_reference(&p, "open_clip", &["--heads", "3", "--act", "gelu"]);
    assert!(!text.contains("warning"), "{text}");
    let m = dawin::model::Model::load(&p, Default::default()).unwrap();
    assert!(m.origin.contains("TorchScript"), "{}", m.origin);
}

#[test]
fn globals_outside_the_allow_list_are_refused_by_name() {
    for (file, names) in [
        ("refused_namespace.pt", "argparse.Namespace"),
        ("malicious_os_system.pt", "system"),
    ] {
        let p = ck(file);
        let (o, text) = dawin(&["inspect".as_ref(), p.as_os_str()]);
        assert!(!o.status.success(), "{file}");
        assert!(text.contains(names), "{file}: {text}");
        assert!(!text.contains("this checkpoint ran code"), "{text}");
    }
    // os.system stays refused even when records are allowed.
    let p = ck("malicious_os_system.pt");
    let (o, text) = dawin(&[
        "inspect".as_ref(),
        "--pickled-modules".as_ref(),
        p.as_os_str(),
    ]);
    assert!(!o.status.success() && text.contains("refused"), "{text}");
}

#[test]
fn a_file_without_metadata_says_what_it_assumed() {
    let p = ck("dawin_ft.bin");
    let (o, text) = dawin(&["inspect".as_ref(), p.as_os_str()]);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("assuming 1 heads (width/64) and quick_gelu"),
        "{text}"
    );
    let (_, text) = dawin(&[
        "inspect".as_ref(),
        p.as_os_str(),
        "--heads".as_ref(),
        "3".as_ref(),
    ]);
    assert!(
        text.contains("assuming quick_gelu") && !text.contains("width/64"),
        "{text}"
    );
}

/// summary.json of an eval of this pair, without the provenance (paths
/// and hashes differ by construction).
fn eval_summary(pt: &Path, ft: &Path, extra: &[&str]) -> serde_json::Value {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let data = fixtures_dir().join("dawin_data.safetensors");
    let mut args: Vec<&std::ffi::OsStr> =
        vec!["eval".as_ref(), "--pretrained".as_ref(), pt.as_os_str()];
    args.extend([
        "--finetuned".as_ref(),
        ft.as_os_str(),
        "--data".as_ref(),
        data.as_os_str(),
    ]);
    args.extend(["--out-dir".as_ref(), out.as_os_str(), "--quiet".as_ref()]);
    args.extend(extra.iter().map(|s| std::ffi::OsStr::new(*s)));
    let (o, text) = dawin(&args);
    assert!(o.status.success(), "{text}");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    s["methods"].clone()
}

#[test]
fn eval_on_torch_files_equals_eval_on_safetensors() {
    let st = eval_summary(
        &fixtures_dir().join("dawin_pt.safetensors"),
        &fixtures_dir().join("dawin_ft.safetensors"),
        &[],
    );
    // .pt/.bin files carry no metadata: heads come from the flag here.
    let pt = eval_summary(&ck("dawin_pt.pt"), &ck("dawin_ft.bin"), &["--heads", "3"]);
    assert_eq!(st, pt);
    assert!(st["dawin"]["count"] == 16, "{st}");
}

#[test]
fn strided_and_shared_storages_read_as_their_values() {
    let a = Checkpoint::open(&ck("dawin_pt.pt"), OpenOptions::default()).unwrap();
    let b = TensorFile::open(&fixtures_dir().join("dawin_pt.safetensors")).unwrap();
    assert!(
        a.description.contains("state dict under `state_dict`"),
        "{}",
        a.description
    );
    for n in b.names() {
        let want = b.read_f32(&n).unwrap();
        assert_eq!(a.shape(&n).unwrap(), want.shape, "{n}");
        assert_eq!(a.read_f32(&n).unwrap(), want.data, "{n}");
    }
}

#[test]
fn converted_files_run_with_no_flags_and_give_the_same_outputs() {
    let d = tempfile::tempdir().unwrap();
    for names in ["canonical", "keep"] {
        let out = d.path().join(format!("oc-{names}.safetensors"));
        let src = ck("open_clip");
        let (o, text) = dawin(&[
            "convert".as_ref(),
            src.as_os_str(),
            out.as_os_str(),
            "--names".as_ref(),
            names.as_ref(),
        ]);
        assert!(o.status.success(), "{text}");
        let meta = TensorFile::open(&out).unwrap().metadata();
        assert_eq!(meta["heads"], "3");
        assert_eq!(meta["act"], "gelu");
        assert!(
            meta.contains_key("logit_scale") && meta.contains_key("layout"),
            "{meta:?}"
        );
        let (a, _) = forward(&src, "open_clip", &[]);
        let (b, text) = forward(&out, "open_clip", &[]);
        assert!(!text.contains("warning"), "{text}");
        assert_eq!(
            a.read_f32("image_embeds").unwrap(),
            b.read_f32("image_embeds").unwrap()
        );
    }
    // A .pt without metadata, converted once with its flags, needs none
    // after; a value it still guessed stays a guess (and a warning) when
    // read back, not a fact of the converted file's metadata.
    let src = ck("dawin_pt.pt");
    let convert = |out: &Path, flags: &[&str]| {
        let mut a: Vec<&std::ffi::OsStr> =
            vec!["convert".as_ref(), src.as_os_str(), out.as_os_str()];
        a.extend(flags.iter().map(std::ffi::OsStr::new));
        let (o, text) = dawin(&a);
        assert!(o.status.success(), "{text}");
        dawin::model::Model::load(out, Default::default()).unwrap()
    };
    let m = convert(
        &d.path().join("pt.safetensors"),
        &["--heads", "3", "--act", "quick_gelu"],
    );
    assert_eq!(m.spec.heads, 3);
    assert!(m.notes.is_empty(), "{:?}", m.notes);
    assert_eq!(m.sources.heads, dawin::model::sources::Source::Metadata);
    let m = convert(&d.path().join("pt-heads.safetensors"), &["--heads", "3"]);
    assert_eq!(m.sources.act, dawin::model::sources::Source::Assumed);
    assert!(
        m.notes.iter().any(|n| n.contains("assuming quick_gelu")),
        "{:?}",
        m.notes
    );
}

#[test]
fn damaged_folders_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let err = |p: &Path| {
        dawin::model::Model::load(p, Default::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(
        err(d.path()).contains("without `config.json`"),
        "{}",
        err(d.path())
    );
    // An index naming a missing shard, and one escaping the folder.
    let f = d.path().join("f");
    std::fs::create_dir(&f).unwrap();
    std::fs::copy(ck("hf_sharded/config.json"), f.join("config.json")).unwrap();
    std::fs::write(
        f.join("model.safetensors.index.json"),
        r#"{"weight_map": {"a": "nope.safetensors"}}"#,
    )
    .unwrap();
    assert!(err(&f).contains("nope.safetensors"), "{}", err(&f));
    std::fs::write(
        f.join("model.safetensors.index.json"),
        r#"{"weight_map": {"a": "../x.safetensors"}}"#,
    )
    .unwrap();
    assert!(
        err(&f).contains("not a file name in the folder"),
        "{}",
        err(&f)
    );
    // A config that describes another model.
    let g = d.path().join("g");
    std::fs::create_dir(&g).unwrap();
    std::fs::copy(ck("hf_clip/model.safetensors"), g.join("model.safetensors")).unwrap();
    std::fs::copy(ck("hf_sharded/config.json"), g.join("config.json")).unwrap();
    assert!(err(&g).contains("another model"), "{}", err(&g));
    // An open_clip tower with layer scale is refused, not run without it.
    let h = d.path().join("h");
    std::fs::create_dir(&h).unwrap();
    std::fs::copy(
        ck("open_clip/open_clip_pytorch_model.bin"),
        h.join("open_clip_pytorch_model.bin"),
    )
    .unwrap();
    let cfg = std::fs::read_to_string(ck("open_clip/open_clip_config.json")).unwrap();
    let cfg = cfg.replacen(
        "\"layers\": 2,",
        "\"layers\": 2, \"ls_init_value\": 0.1,",
        1,
    );
    std::fs::write(h.join("open_clip_config.json"), cfg).unwrap();
    assert!(err(&h).contains("ls_init_value"), "{}", err(&h));
}

/// Opens a (possibly damaged) file and reads every tensor it lists.
fn open_and_read(bytes: &[u8]) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.pt");
    std::fs::write(&p, bytes).unwrap();
    if let Ok(c) = Checkpoint::open(
        &p,
        OpenOptions {
            pickled_modules: true,
        },
    ) {
        for n in c.names() {
            let _ = c.bytes(&n);
        }
    }
}

fn data_pkl(zip_bytes: &[u8]) -> Vec<u8> {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).unwrap();
    let name = (0..z.len())
        .map(|i| z.by_index(i).unwrap().name().unwrap().to_string())
        .find(|n| n.ends_with("data.pkl"))
        .unwrap();
    let mut f = z.by_name(&name).unwrap();
    let mut v = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut v).unwrap();
    v
}

proptest! {
    #![proptest_config(crate::common::proptest_config(48))]

    #[test]
    fn damaged_torch_files_are_errors_not_panics(
        which in 0usize..4,
        cut in 0.0f64..1.0,
        flips in proptest::collection::vec((0.0f64..1.0, any::<u8>()), 0..6),
    ) {
        let src = [ck("dawin_ft.bin"), ck("wiseft_module.pt"), ck("wiseft_pickle.pt"), ck("dawin_ft_legacy.bin")][which].clone();
        let mut b = std::fs::read(src).unwrap();
        for (at, v) in flips {
            let i = (at * b.len() as f64) as usize % b.len();
            b[i] = v;
        }
        if cut < 0.3 {
            b.truncate((cut / 0.3 * b.len() as f64) as usize);
        }
        open_and_read(&b);
    }

    #[test]
    fn damaged_pickles_are_errors_not_panics(
        cut in 0.0f64..1.0,
        flips in proptest::collection::vec((0.0f64..1.0, any::<u8>()), 1..8),
    ) {
        let mut p = data_pkl(&std::fs::read(ck("wiseft_module.pt")).unwrap());
        for (at, v) in flips {
            let i = (at * p.len() as f64) as usize % p.len();
            p[i] = v;
        }
        p.truncate(((0.5 + cut / 2.0) * p.len() as f64) as usize);
        let _ = pickle::load(&p, Globals::Records);
        let _ = pickle::load(&p, Globals::Strict);
        let _ = pickle::load_legacy(&p, 0..p.len(), Globals::Records);
    }
}

/// A safetensors file whose header length's low bytes read as a pickle's
/// PROTO opcode (0x80, protocol 2: a 640-byte header) is still safetensors.
#[test]
fn a_safetensors_header_that_starts_like_a_pickle() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("x.safetensors");
    let body = r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":{"pad":""#;
    let header = body.to_string() + &"a".repeat(640 - body.len() - 3) + r#""}}"#;
    assert_eq!(header.len(), 640);
    let mut bytes = (640u64).to_le_bytes().to_vec();
    assert_eq!(
        &bytes[..2],
        &[0x80, 0x02],
        "the test needs a PROTO-like start"
    );
    bytes.extend(header.as_bytes());
    bytes.extend(1.5f32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let c = Checkpoint::open(&path, OpenOptions::default()).unwrap();
    assert_eq!(c.read_f32("x").unwrap(), vec![1.5]);
}
