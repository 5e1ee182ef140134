//! The `dawin` binary as a user runs it: inspect, forward on every fixture,
//! and clear errors (exit status 1, no panic) for bad requests.

mod common;

use common::{assert_close, fixtures_dir, manifest};
use dawin::tensorfile::{Tensor, TensorFile, write_f32};
use std::process::{Command, Output};

fn dawin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dawin"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn fixture(name: &str, suffix: &str) -> String {
    fixtures_dir()
        .join(format!("{name}{suffix}"))
        .display()
        .to_string()
}

#[test]
fn inspect_reports_each_layout() {
    for f in manifest() {
        let name = f["name"].as_str().unwrap();
        let o = dawin(&["inspect", &fixture(name, ".safetensors")]);
        assert!(o.status.success(), "{}", text(&o));
        let out = text(&o);
        let layout = f["layout"].as_str().unwrap();
        assert!(
            out.contains(&format!("layout      {layout} ")),
            "{name}: {out}"
        );
        assert!(
            out.contains(&format!("{} heads", f["heads"])),
            "{name}: {out}"
        );
        assert!(
            out.contains(&format!("parameters  {}", f["params"])),
            "{name}: {out}"
        );
    }
}

#[test]
fn forward_matches_every_fixture_on_cpu_and_emu() {
    let d = tempfile::tempdir().unwrap();
    for device in ["cpu", "emu"] {
        for f in manifest() {
            let name = f["name"].as_str().unwrap();
            let out = d.path().join(format!("{name}.{device}.safetensors"));
            let o = dawin(&[
                "forward",
                "--model",
                &fixture(name, ".safetensors"),
                "--input",
                &fixture(name, ".io.safetensors"),
                "--out",
                out.to_str().unwrap(),
                "--batch-size",
                "2",
                "--device",
                device,
            ]);
            assert!(o.status.success(), "{}", text(&o));
            let got = TensorFile::open(&out).unwrap();
            let want =
                TensorFile::open(&fixtures_dir().join(format!("{name}.io.safetensors"))).unwrap();
            for t in ["image_embeds", "logits"] {
                match (got.read_f32(t), want.read_f32(t)) {
                    (Ok(g), Ok(w)) => {
                        assert_eq!(g.shape, w.shape, "{name} {t}");
                        assert_close(&format!("{name} {t} on {device}"), &g.data, &w.data, 1e-4);
                    }
                    (Err(_), Err(_)) => {}
                    _ => panic!("{name}: {t} present in one file only"),
                }
            }
        }
    }
}

#[test]
fn unavailable_devices_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("o.safetensors");
    for (dev, says) in [("cuda", "built without the `cuda` feature")]
        .iter()
        .filter(|_| cfg!(not(feature = "cuda")))
    {
        let o = dawin(&[
            "forward",
            "--model",
            &fixture("hf_quickgelu", ".safetensors"),
            "--input",
            &fixture("hf_quickgelu", ".io.safetensors"),
            "--out",
            out.to_str().unwrap(),
            "--device",
            dev,
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains(says), "{}", text(&o));
        assert!(!text(&o).contains("panicked"));
    }
    let o = dawin(&[
        "forward", "--model", "m", "--input", "i", "--out", "o", "--device", "tpu",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("possible values: cpu, emu, cuda"),
        "{}",
        text(&o)
    );
}

#[test]
fn wrong_image_size_is_explained() {
    let d = tempfile::tempdir().unwrap();
    let inp = d.path().join("in.safetensors");
    let px = Tensor {
        shape: vec![2, 3, 33, 33],
        data: vec![0.1; 2 * 3 * 33 * 33],
    };
    write_f32(&inp, &[("pixel_values", &px)], None).unwrap();
    let o = dawin(&[
        "forward",
        "--model",
        &fixture("hf_quickgelu", ".safetensors"),
        "--input",
        inp.to_str().unwrap(),
        "--out",
        d.path().join("o.safetensors").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(
        t.contains("3×33×33")
            && t.contains("3×32×32")
            && t.contains("positional embedding has 17 tokens"),
        "{t}"
    );
    assert!(
        !d.path().join("o.safetensors").exists(),
        "no output on failure"
    );
}

#[test]
fn nan_inputs_warn_with_a_count() {
    let d = tempfile::tempdir().unwrap();
    let io = TensorFile::open(&fixtures_dir().join("hf_quickgelu.io.safetensors")).unwrap();
    let mut px = io.read_f32("pixel_values").unwrap();
    px.data[5] = f32::NAN;
    px.data[7] = f32::INFINITY;
    px.data[100] = f32::NAN;
    let inp = d.path().join("nan.safetensors");
    write_f32(&inp, &[("pixel_values", &px)], None).unwrap();
    let out = d.path().join("o.safetensors");
    let o = dawin(&[
        "forward",
        "--model",
        &fixture("hf_quickgelu", ".safetensors"),
        "--input",
        inp.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("warning") && text(&o).contains("3 NaN/Inf values"),
        "{}",
        text(&o)
    );
    // The clean images still come out right.
    let got = TensorFile::open(&out).unwrap().read_f32("logits").unwrap();
    let want = io.read_f32("logits").unwrap();
    assert_close("clean images", &got.data[10..], &want.data[10..], 1e-4);
}

#[test]
fn missing_input_tensor_and_files() {
    let d = tempfile::tempdir().unwrap();
    let o = dawin(&[
        "forward",
        "--model",
        &fixture("hf_quickgelu", ".safetensors"),
        "--input",
        &fixture("hf_quickgelu", ".safetensors"),
        "--out",
        d.path().join("o").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("missing tensor `pixel_values`"),
        "{}",
        text(&o)
    );
    let o = dawin(&["inspect", "/no/such/model.safetensors"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("/no/such/model.safetensors"),
        "{}",
        text(&o)
    );
}

#[test]
fn help_explains_the_commands() {
    let t = text(&dawin(&["--help"]));
    assert!(t.contains("inspect") && t.contains("forward"), "{t}");
    let t = text(&dawin(&["forward", "--help"]));
    assert!(
        t.contains("pixel_values") && t.contains("--batch-size") && t.contains("--device"),
        "{t}"
    );
}
