//! `--device cuda` end to end without a GPU: the `cuda` build of dawin
//! (tools/build-cuda.sh) on the emulated driver (tools/build-emu-driver.sh,
//! `libcuda.so.1` over the PTX emulator), so cust, argument packing, pinned
//! staging, stream ordering, events, the memory pool and the out-of-memory
//! path run on every CI run. Each command is compared with the same command
//! on `emu`, which runs the same PTX directly.
//!
//! The two builds are made (or found up to date) by the scripts on first
//! use; CI builds them before `cargo test`. The op-level property tests on
//! cuda through the same driver: tools/emu-driver-tests.sh.

mod common;

use common::{assert_close, fixtures_dir, repo_root};
use dawin::tensorfile::TensorFile;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The cuda binary and the folder holding the emulated libcuda.so.1.
fn builds() -> &'static (PathBuf, PathBuf) {
    static BUILDS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILDS.get_or_init(|| {
        (
            last_line("tools/build-cuda.sh"),
            last_line("tools/build-emu-driver.sh"),
        )
    })
}

/// Runs a build script from the repository root; its last line is a path.
fn last_line(script: &str) -> PathBuf {
    let out = Command::new("bash")
        .arg(script)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(stdout.lines().last().expect("a path").trim())
}

/// `dawin ARGS --device DEVICE` from the repository root: the cuda binary on
/// the emulated driver for "cuda", the same binary for "emu".
fn dawin(device: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let (bin, lib) = builds();
    let mut c = Command::new(bin);
    c.args(args)
        .args(["--device", device])
        .current_dir(repo_root())
        .env("LD_LIBRARY_PATH", lib);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(device: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = dawin(device, args, env);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "dawin {args:?} --device {device}: {}\n{stderr}",
        out.status
    );
    stderr + &String::from_utf8_lossy(&out.stdout)
}

fn tensor(path: &Path, name: &str) -> Vec<f32> {
    maybe(path, name).unwrap_or_else(|| panic!("{}: no f32 tensor {name}", path.display()))
}

/// A float tensor of a file, if it has one of that name.
fn maybe(path: &Path, name: &str) -> Option<Vec<f32>> {
    TensorFile::open(path)
        .unwrap()
        .read_f32(name)
        .ok()
        .map(|t| t.data)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn forwards_on_cuda_match_emu_and_transformers() {
    let d = tempfile::tempdir().unwrap();
    for m in common::manifest() {
        let name = m["name"].as_str().unwrap();
        let model = fixtures_dir().join(format!("{name}.safetensors"));
        let io = fixtures_dir().join(format!("{name}.io.safetensors"));
        for precision in ["f32", "bf16"] {
            let out = |dev: &str| {
                d.path()
                    .join(format!("{name}.{precision}.{dev}.safetensors"))
            };
            for dev in ["cuda", "emu"] {
                let path = out(dev);
                let args = [
                    "forward",
                    "--model",
                    s(&model),
                    "--input",
                    s(&io),
                    "--out",
                    s(&path),
                ];
                let t = ok(dev, &[&args[..], &["--precision", precision]].concat(), &[]);
                if dev == "cuda" {
                    assert!(t.contains("dawin emulated driver (sm_90)"), "{t}");
                }
            }
            for key in ["image_embeds", "logits"] {
                let Some(want) = maybe(&io, key) else {
                    continue;
                };
                let (cuda, emu) = (tensor(&out("cuda"), key), tensor(&out("emu"), key));
                assert_close(
                    &format!("{name} {precision} {key}: cuda vs emu"),
                    &cuda,
                    &emu,
                    1e-6,
                );
                let tol = if precision == "f32" { 1e-4 } else { 2e-2 };
                assert_close(
                    &format!("{name} {precision} {key}: cuda vs HF"),
                    &cuda,
                    &want,
                    tol,
                );
            }
        }
    }
}

/// The DaWin fixture pair and its data: (pretrained, fine-tuned, data).
fn fixture_pair() -> (String, String, String) {
    let fx = |f: &str| fixtures_dir().join(f).to_str().unwrap().to_string();
    (
        fx("dawin_pt.safetensors"),
        fx("dawin_ft.safetensors"),
        fx("dawin_data.safetensors"),
    )
}

/// `COMMAND --pretrained PT --finetuned FT --data D --out-dir OUT` on the pair.
fn pair_command(command: &str, out: &Path) -> Vec<String> {
    let (pt, ft, data) = fixture_pair();
    [
        command,
        "--pretrained",
        &pt,
        "--finetuned",
        &ft,
        "--data",
        &data,
        "--out-dir",
        s(out),
    ]
    .map(String::from)
    .to_vec()
}

/// An eval's samples.csv (every λ and logit-derived column) and summary.
fn eval(
    device: &str,
    out: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (String, serde_json::Value, String) {
    let mut args = pair_command("eval", out);
    // The methods that run models; the other rules and baselines are
    // arithmetic on the same logits.
    args.extend(["--methods", "zeroshot,finetuned,wise-ft:0.5,dawin"].map(String::from));
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t = ok(device, &args, env);
    let csv = std::fs::read_to_string(out.join("samples.csv")).unwrap();
    let summary =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    (csv, summary, t)
}

/// exact, materialize and bmm:2 at one precision: samples.csv (every λ and
/// prediction) equal between cuda and emu, and the summary names the
/// emulated device. Batches of 5 of the 16 samples: each next batch's
/// images are staged on the copy stream during the current forward.
fn eval_modes_agree(precision: &str) {
    let d = tempfile::tempdir().unwrap();
    for interp in ["exact", "materialize", "bmm:2"] {
        let extra = ["--interp", interp, "--precision", precision, "-b", "5"];
        let (cuda, summary, _) = eval("cuda", &d.path().join(format!("c-{interp}")), &extra, &[]);
        let (emu, _, _) = eval("emu", &d.path().join(format!("e-{interp}")), &extra, &[]);
        assert_eq!(
            cuda, emu,
            "{extra:?}: samples.csv differs between cuda and emu"
        );
        let device = summary["device"].as_str().unwrap_or_default();
        assert!(
            device.contains("dawin emulated driver"),
            "{extra:?}: device {device}"
        );
    }
}

#[test]
fn eval_on_cuda_equals_emu_in_f32() {
    eval_modes_agree("f32");
}

#[test]
fn eval_on_cuda_equals_emu_in_bf16() {
    eval_modes_agree("bf16");
}

#[test]
fn out_of_device_memory_halves_the_batch_and_keeps_the_results() {
    let d = tempfile::tempdir().unwrap();
    let (want, _, _) = eval(
        "cuda",
        &d.path().join("plenty"),
        &["--interp", "exact"],
        &[],
    );
    // Room for the two models and 8 samples' activations, not 16.
    let small = [("DAWIN_EMU_DRIVER_MEMORY", "800000")];
    let (got, _, t) = eval(
        "cuda",
        &d.path().join("small"),
        &["--interp", "exact"],
        &small,
    );
    assert!(
        t.contains("out of device memory with a batch of 16")
            && t.contains("going on with batches of 8"),
        "{t}"
    );
    assert_eq!(got, want);
}

#[test]
fn text_tower_and_expertise_commands_run_on_cuda_as_on_emu() {
    let d = tempfile::tempdir().unwrap();
    let text = fixtures_dir().join("text");
    let classes = d.path().join("classes.txt");
    std::fs::write(&classes, "cat\ndog\nbird\n").unwrap();
    let (model, prompts) = (text.join("hf_clip"), text.join("prompts.txt"));
    for dev in ["cuda", "emu"] {
        let out = d.path().join(format!("text.{dev}.safetensors"));
        ok(
            dev,
            &[
                "encode-text",
                "--model",
                s(&model),
                "--texts",
                s(&prompts),
                "--out",
                s(&out),
            ],
            &[],
        );
        let head = d.path().join(format!("head.{dev}.safetensors"));
        ok(
            dev,
            &[
                "zeroshot",
                "--model",
                s(&model),
                "--classes",
                s(&classes),
                "--out",
                s(&head),
            ],
            &[],
        );
    }
    for file in ["text", "head"] {
        let f = |dev: &str| d.path().join(format!("{file}.{dev}.safetensors"));
        let names = TensorFile::open(&f("emu")).unwrap().names();
        for name in names {
            if let Some(want) = maybe(&f("emu"), &name) {
                assert_close(
                    &format!("{file} {name}"),
                    &tensor(&f("cuda"), &name),
                    &want,
                    1e-6,
                );
            }
        }
    }
    let (pt, ft, data) = fixture_pair();
    for dev in ["cuda", "emu"] {
        let args = pair_command("expertise", &d.path().join(format!("exp.{dev}")));
        ok(
            dev,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            &[],
        );
        let mtl = d.path().join(format!("mtl.{dev}"));
        let tasks = format!("{ft},{pt}");
        let args = [
            "eval-mtl",
            "--base",
            &pt,
            "--tasks",
            &tasks,
            "--task-index",
            "0",
            "--data",
            &data,
            "--out-dir",
            s(&mtl),
        ];
        ok(dev, &args, &[]);
    }
    let f = |dev: &str| {
        d.path()
            .join(format!("exp.{dev}"))
            .join("expertise.safetensors")
    };
    for name in TensorFile::open(&f("emu")).unwrap().names() {
        if let Some(want) = maybe(&f("emu"), &name) {
            assert_close(
                &format!("expertise {name}"),
                &tensor(&f("cuda"), &name),
                &want,
                1e-6,
            );
        }
    }
    let csv = |dev: &str| {
        std::fs::read_to_string(d.path().join(format!("mtl.{dev}")).join("samples.csv")).unwrap()
    };
    assert_eq!(csv("cuda"), csv("emu"), "eval-mtl samples.csv");
}
