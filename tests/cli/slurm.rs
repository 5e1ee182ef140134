//! The shipped SLURM example (tools/slurm/) runs as written: its four
//! dependent jobs, through local-sbatch, give the result set of one whole
//! run, and each eval shard reuses the logits its expertise job cached.

use crate::common::{dawin_bin, fixtures_dir, repo_root};
use std::process::Command;

#[test]
fn the_slurm_example_equals_one_whole_run() {
    let d = tempfile::tempdir().unwrap();
    let fx = |n: &str| fixtures_dir().join(n).display().to_string();
    let (pt, ft, data) = (
        fx("dawin_pt.safetensors"),
        fx("dawin_ft.safetensors"),
        fx("dawin_data.safetensors"),
    );
    let runs = d.path().join("runs");
    let flags = "--lambda-rule entropy-offset --interp bmm:2";
    let o = Command::new("bash")
        .arg(repo_root().join("tools/slurm/submit.sh"))
        .args([&pt, &ft, &data, &runs.display().to_string(), "3"])
        .env("SBATCH", repo_root().join("tools/slurm/local-sbatch"))
        .env("DAWIN", dawin_bin())
        .env("DEVICE", "cpu")
        .env("EVAL_FLAGS", flags)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{text}");
    let whole = d.path().join("whole");
    let o = Command::new(dawin_bin())
        .args([
            "eval",
            "--pretrained",
            &pt,
            "--finetuned",
            &ft,
            "--data",
            &data,
            "-q",
            "-o",
        ])
        .arg(&whole)
        .args(flags.split(' '))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read = |p: std::path::PathBuf| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let (w, m) = (
        read(whole.join("summary.json")),
        read(runs.join("summary.json")),
    );
    for key in ["methods", "paired", "bmm"] {
        assert_eq!(w[key], m[key], "{key}");
    }
    assert_eq!(
        m["cache"], "hit",
        "every eval shard reused its cached logits"
    );
    let csv = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap();
    assert_eq!(
        csv(whole.join("samples.csv")),
        csv(runs.join("samples.csv"))
    );
}
