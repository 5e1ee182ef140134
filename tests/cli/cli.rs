//! The `dawin` binary as a user runs it: inspect, forward on every fixture,
//! and clear errors (exit status 1, no panic) for bad requests.

use crate::common::{assert_close, fixtures_dir, manifest};
use dawin::tensorfile::{Tensor, TensorFile, write_f32};
use std::process::{Command, Output};

fn dawin(args: &[&str]) -> Output {
    Command::new(crate::common::dawin_bin())
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
    // eval's flags under headings, with examples and short flags.
    let t = text(&dawin(&["eval", "--help"]));
    for h in [
        "Inputs:",
        "Output:",
        "Method:",
        "Label space:",
        "Performance:",
        "Model:",
        "Examples:",
        "-o, --out-dir",
        "-q, --quiet",
    ] {
        assert!(t.contains(h), "eval --help lacks {h}:\n{t}");
    }
    // Every one-line summary fits a terminal line.
    let t = text(&dawin(&["--help"]));
    for l in t
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
    {
        assert!(l.chars().count() <= 100, "summary too long: {l}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let o = dawin(&["completions", shell]);
        assert!(o.status.success() && text(&o).contains("eval"), "{shell}");
    }
}

fn dawin_pair_args(out: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "eval",
        "--pretrained",
        &fixture("dawin_pt", ".safetensors"),
        "--finetuned",
        &fixture("dawin_ft", ".safetensors"),
        "--data",
        &fixture("dawin_data", ".safetensors"),
        "--out-dir",
        out,
        "--methods",
        "zeroshot,finetuned,dawin",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

#[test]
fn profile_prints_a_per_kernel_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.safetensors").display().to_string();
    for device in ["cpu", "emu"] {
        let o = dawin(&[
            "forward",
            "--model",
            &fixture("hf_quickgelu", ".safetensors"),
            "--input",
            &fixture("hf_quickgelu", ".io.safetensors"),
            "--out",
            &out,
            "--device",
            device,
            "--profile",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let t = text(&o);
        assert!(t.contains("per-kernel profile on"), "{t}");
        // Bank conflicts only when the emulator is asked to count them.
        assert!(!t.contains("bank conflicts"), "{t}");
        // The fixture has two layers (one attention each) and one patch
        // embedding per forward.
        let row = |op: &str| {
            t.lines()
                .find(|l| l.split_whitespace().next() == Some(op))
                .unwrap_or_else(|| panic!("no {op} row in\n{t}"))
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<usize>()
                .unwrap()
        };
        assert_eq!(row("patch_embed"), 1, "{t}");
        assert_eq!(row("attention"), 2, "{t}");
    }
}

/// With `DAWIN_EMU_BANK_CONFLICTS=1` the emu profile counts the bank
/// conflicts of every shared access: every kernel of an eval (single and
/// dual gemms, attention, lerp, softmax_entropy, ...) in both precisions is
/// held to zero, as their headers claim.
#[test]
fn every_kernel_of_an_eval_is_free_of_bank_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    for (precision, must_have) in [
        ("f32", ["gemm", "gemm_dual", "attention", "lerp"]),
        (
            "bf16",
            ["gemm_bf16", "gemm_dual_bf16", "attention_bf16", "lerp_bf16"],
        ),
    ] {
        let out = dir.path().join(precision).display().to_string();
        let o = Command::new(crate::common::dawin_bin())
            .args(["eval", "--pretrained", &fixture("dawin_pt", ".safetensors")])
            .args(["--finetuned", &fixture("dawin_ft", ".safetensors")])
            .args(["--data", &fixture("dawin_data", ".safetensors")])
            .args(["--out-dir", &out, "--quiet", "--device", "emu", "--profile"])
            // wise-ft lerps a merged model; dawin runs the dual gemms.
            .args(["--methods", "zeroshot,wise-ft:0.5,dawin"])
            .args(["--precision", precision])
            .env("DAWIN_EMU_BANK_CONFLICTS", "1")
            .output()
            .unwrap();
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        let head = t
            .lines()
            .position(|l| l.starts_with("op ") && l.ends_with("bank conflicts/call"))
            .unwrap_or_else(|| panic!("no bank conflict column in\n{t}"));
        let rows: Vec<Vec<&str>> = t
            .lines()
            .skip(head + 1)
            .take_while(|l| !l.starts_with("total"))
            .map(|l| l.split_whitespace().collect())
            .collect();
        for op in must_have.iter().chain(&["softmax_entropy", "layernorm"]) {
            assert!(rows.iter().any(|r| r[0] == *op), "no {op} row in\n{t}");
        }
        for r in rows {
            assert_eq!(
                r.last(),
                Some(&"0.0"),
                "{precision}: {} has conflicts\n{t}",
                r[0]
            );
        }
    }
}

#[test]
fn out_of_device_memory_halves_the_batch_and_keeps_results() {
    let dir = tempfile::tempdir().unwrap();
    let run = |out: &str, mem: Option<&str>| {
        let mut c = Command::new(crate::common::dawin_bin());
        c.args(dawin_pair_args(
            out,
            &["--device", "emu", "--batch-size", "16"],
        ));
        if let Some(m) = mem {
            c.env("DAWIN_EMU_MEMORY", m);
        }
        c.output().unwrap()
    };
    let a = dir.path().join("a").display().to_string();
    let b = dir.path().join("b").display().to_string();
    let full = run(&a, None);
    assert!(full.status.success(), "{}", text(&full));
    // Room for both models (2 × 195 kB) and a few images' activations.
    let small = run(&b, Some("650000"));
    assert!(small.status.success(), "{}", text(&small));
    assert!(
        text(&small).contains("going on with batches of"),
        "{}",
        text(&small)
    );
    let csv = |d: &str| std::fs::read_to_string(format!("{d}/samples.csv")).unwrap();
    assert_eq!(csv(&a), csv(&b));
    // No room for even one image: a clear error, no panic.
    let none = run(&dir.path().join("c").display().to_string(), Some("300000"));
    assert_eq!(none.status.code(), Some(1), "{}", text(&none));
    assert!(
        text(&none).contains("out of device memory"),
        "{}",
        text(&none)
    );
}

#[test]
fn bench_quick_reports_kernels_and_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    for (device, filter) in [("cpu", None), ("emu", Some("gemm B/32"))] {
        let json = dir.path().join(format!("{device}.json"));
        let mut args = vec![
            "bench",
            "--quick",
            "--repeats",
            "2",
            "--device",
            device,
            "--json",
            json.to_str().unwrap(),
        ];
        if let Some(f) = filter {
            args.extend(["--filter", f]);
        }
        let rows = bench_rows(&args, &json);
        let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
        for r in &rows {
            let (min, med) = (
                r["min_ms"].as_f64().unwrap(),
                r["median_ms"].as_f64().unwrap(),
            );
            assert!(min > 0.0 && min <= med, "{r}");
        }
        match filter {
            Some(f) => {
                // The four B/32 linear layers in f32 and on bf16 tensor cores.
                assert_eq!(rows.len(), 8, "{names:?}");
                assert!(names.iter().all(|n| n.contains(f)), "{names:?}");
                for r in &rows {
                    let bf16 = r["name"].as_str().unwrap().ends_with(" bf16");
                    assert_eq!(r["tensor_core"].as_bool(), Some(bf16), "{r}");
                }
            }
            None => {
                for want in [
                    "gemm 128x128x128",
                    "lerp",
                    "attention 257 tokens",
                    "softmax_entropy",
                    "pipeline dawin exact",
                    "pipeline dawin bmm:3",
                    "pipeline dawin materialize",
                ] {
                    assert!(names.iter().any(|n| n.contains(want)), "{want}: {names:?}");
                }
                // The bf16 ops run on the cpu executor too.
                assert!(
                    names
                        .iter()
                        .any(|n| n.contains("gemm_dual B/32 fc1") && n.ends_with(" bf16")),
                    "{names:?}"
                );
            }
        }
    }
    let o = dawin(&["bench", "--quick", "--filter", "no such benchmark"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // The pipeline in bf16, on the tensor-core kernels and on the cpu.
    let bf16 = [
        "bench",
        "--quick",
        "--repeats",
        "1",
        "--suite",
        "pipeline",
        "--filter",
        "exact",
        "--precision",
        "bf16",
        "--device",
    ];
    let o = dawin(&[&bf16[..], &["emu"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("pipeline dawin exact bf16"),
        "{}",
        text(&o)
    );
    let o = dawin(&[&bf16[..], &["cpu"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("pipeline dawin exact bf16"),
        "{}",
        text(&o)
    );
}

/// plot-wise warns when its summaries come from other model files: the
/// points would mix two pairs' trade-offs.
#[test]
fn plot_wise_warns_about_summaries_of_other_models() {
    let d = tempfile::tempdir().unwrap();
    let out = |n: &str| d.path().join(n).display().to_string();
    let mut a = dawin_pair_args(&out("a"), &[]);
    let o = dawin(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    // The same pair the other way round: other pretrained and fine-tuned files.
    a = dawin_pair_args(&out("b"), &[]);
    let (pt, ft) = (a[2].clone(), a[4].clone());
    (a[2], a[4]) = (ft, pt);
    let o = dawin(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    let (sa, sb) = (out("a/summary.json"), out("b/summary.json"));
    let svg = out("wise.svg");
    let o = dawin(&["plot-wise", "--id", &sa, "--ood", &sb, "--out", &svg]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("come from different pretrained models"),
        "{}",
        text(&o)
    );
    let o = dawin(&["plot-wise", "--id", &sa, "--ood", &sa, "--out", &svg]);
    assert!(!text(&o).contains("different"), "{}", text(&o));
}

/// `--expertise t3` records its constants; its flags with another rule, or
/// a range that is not one, are refused before any pass.
#[test]
fn t3_constants_are_recorded_and_misuse_refused() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("t3").display().to_string();
    let args = dawin_pair_args(&out, &["--expertise", "t3", "--t3-range", "0.2,0.9"]);
    let o = dawin(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("t3/summary.json")).unwrap()).unwrap();
    assert_eq!(s["expertise"], "t3");
    assert_eq!(s["t3"]["gamma"], 0.5);
    assert_eq!(s["t3"]["range"], serde_json::json!([0.2, 0.9]));
    let refused = [
        vec!["--t3-gamma", "2"],
        vec!["--expertise", "t3", "--t3-range", "0.9,0.1"],
        vec!["--expertise", "t3", "--t3-gamma", "inf"],
    ];
    for extra in refused {
        let args = dawin_pair_args(&d.path().join("x").display().to_string(), &extra);
        let o = dawin(&args.iter().map(String::as_str).collect::<Vec<_>>());
        // 1: refused by dawin, 2: by the flag parser; never a panic (101).
        assert!(
            matches!(o.status.code(), Some(1 | 2)),
            "{extra:?}: {}",
            text(&o)
        );
        assert!(text(&o).contains("t3"), "{extra:?}: {}", text(&o));
    }
}

#[test]
fn bench_data_suite_times_the_image_path() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("data.json");
    let before = bench_data_dirs();
    let args = [
        "bench",
        "--suite",
        "data",
        "--quick",
        "--repeats",
        "1",
        "--json",
        json.to_str().unwrap(),
    ];
    let rows = bench_rows(&args, &json);
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    for want in [
        "data decode jpeg",
        "data preprocess 224 u8",
        "data normalise u8 224",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(want)),
            "{want}: {names:?}"
        );
    }
    for r in &rows {
        assert_eq!(r["images"].as_u64(), Some(8), "{r}");
        assert!(r["min_ms"].as_f64().unwrap() > 0.0, "{r}");
    }
    // Its temporary JPEGs are gone.
    assert_eq!(bench_data_dirs(), before);
}

/// `dawin bench ARGS` (which name `json` after `--json`) succeeds; the
/// rows of its JSON.
fn bench_rows(args: &[&str], json: &std::path::Path) -> Vec<serde_json::Value> {
    let o = dawin(args);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    v["rows"].as_array().unwrap().clone()
}

/// The data suite's temporary folders now in the system's temp dir.
fn bench_data_dirs() -> usize {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("dawin-bench-data-")
        })
        .count()
}
