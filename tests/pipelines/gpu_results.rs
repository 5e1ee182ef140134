//! tools/gpu-results.py, which turns a GPU check's measurements into the
//! summary and docs/benchmarks.md: the dry run here has no PyTorch, so the
//! pairing of dawin rows with PyTorch rows and the ratios are checked on a
//! hand-made bundle; `compare` on real forward outputs.

use std::path::Path;
use std::process::Command;

fn py(args: &[&str]) -> std::process::Output {
    Command::new("python3")
        .arg(crate::common::repo_root().join("tools/gpu-results.py"))
        .args(args)
        .output()
        .expect("python3 runs")
}

fn row(name: &str, min_ms: f64, images: Option<u32>) -> serde_json::Value {
    serde_json::json!({"name": name, "min_ms": min_ms, "median_ms": min_ms, "flops": 1e9, "bytes": 1e6, "images": images})
}

fn write(dir: &Path, name: &str, v: serde_json::Value) {
    std::fs::write(dir.join(name), v.to_string()).unwrap();
}

#[test]
fn summaries_pair_rows_and_state_ratios() {
    let work = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::write(
        w.join("status.tsv"),
        "smoke\tpass\t3\t\nncu\tfail\t9\texit 1: Device not supported\n",
    )
    .unwrap();
    let dawin = [
        row("gemm B/32 fc1 400x3072x768", 2.0, None),
        row("gemm B/32 fc1 400x3072x768 bf16", 1.0, None),
        row("attention 197 tokens 8x12x64", 4.0, None),
        row("pipeline dawin exact", 10.0, Some(256)),
    ];
    let torch = [
        row("gemm B/32 fc1 400x3072x768 fp32", 3.0, None),
        row("gemm B/32 fc1 400x3072x768 bf16", 0.5, None),
        row("attention 197 tokens 8x12x64 (sdpa)", 2.0, None),
        row("pipeline dawin dual batched", 20.0, Some(256)),
    ];
    write(w, "bench-dawin.json", serde_json::json!({"rows": dawin}));
    write(w, "bench-torch.json", serde_json::json!({"rows": torch}));
    let o = py(&[
        "summarize",
        w.to_str().unwrap(),
        out.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(out.path().join("summary.md")).unwrap();
    for want in [
        "| gemm B/32 fc1 400x3072x768 | gemm B/32 fc1 400x3072x768 fp32 | 2.000 | 3.000 | 1.50 |",
        "| gemm B/32 fc1 400x3072x768 bf16 | gemm B/32 fc1 400x3072x768 bf16 | 1.000 | 0.500 | 0.50 |",
        "| attention 197 tokens 8x12x64 | attention 197 tokens 8x12x64 (sdpa) | 4.000 | 2.000 | 0.50 |",
        "| pipeline dawin exact | pipeline dawin dual batched | 10.000 | 20.000 | 2.00 |",
        "| ncu | fail | 9 | exit 1: Device not supported |",
    ] {
        assert!(md.contains(want), "missing `{want}` in\n{md}");
    }
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    assert_eq!(results["ratios"].as_array().unwrap().len(), 4);
    // The docs section replaces only what lies between its markers.
    let doc = out.path().join("benchmarks.md");
    std::fs::write(
        &doc,
        "# B\n\nbefore\n<!-- gpu-results:begin -->\nold\n<!-- gpu-results:end -->\nafter\n",
    )
    .unwrap();
    let o = py(&[
        "docs",
        out.path().to_str().unwrap(),
        "--write",
        doc.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&doc).unwrap();
    assert!(
        text.contains("before") && text.contains("after") && !text.contains("old"),
        "{text}"
    );
    assert!(text.contains("| pipeline dawin exact |"), "{text}");
}

#[test]
fn compare_reads_safetensors_outputs() {
    let io = crate::common::fixtures_dir().join("hf_quickgelu.io.safetensors");
    let o = py(&[
        "compare",
        io.to_str().unwrap(),
        io.to_str().unwrap(),
        "--tol",
        "0",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(String::from_utf8_lossy(&o.stdout).contains("logits: max difference 0.00e+00"));
    let other = crate::common::fixtures_dir().join("soups_quickgelu.io.safetensors");
    let o = py(&["compare", io.to_str().unwrap(), other.to_str().unwrap()]);
    assert!(
        !o.status.success(),
        "different outputs must not compare equal"
    );
}
