//! `dawin demo` end to end on the CPU with a small image count: the table
//! has every row and domain, the bundled pair shows the robust fine-tuning
//! trade-off, and the reports are written.

use std::process::Command;

#[test]
fn demo_runs_and_shows_the_trade_off() {
    let d = tempfile::tempdir().unwrap();
    let o = Command::new(crate::common::dawin_bin())
        .args([
            "demo",
            "--per-class",
            "20",
            "--quiet",
            "--device",
            "cpu",
            "--out-dir",
        ])
        .arg(d.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let rows: Vec<&str> = text.lines().collect();
    assert!(
        rows[0].contains("top-1 accuracy (%) on 200 images per domain"),
        "{text}"
    );
    assert!(
        rows[1].contains("id") && rows[1].contains("occlusion") && rows[1].contains("OOD mean"),
        "{text}"
    );
    assert!(
        text.contains("K = 3") && text.contains("Read plainly:"),
        "{text}"
    );
    let parse = |name: &str| -> Vec<f64> {
        let line = rows
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row {name}: {text}"));
        line[14..]
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    };
    let (zs, ft) = (parse("zero-shot"), parse("fine-tuned"));
    assert_eq!(zs.len(), 7);
    for name in ["WiSE-FT 0.5", "ensemble", "DaWin (exact)", "DaWin (bmm)"] {
        assert_eq!(parse(name).len(), 7, "{name}");
    }
    // Fine-tuning wins in distribution and loses under the colour shift.
    assert!(ft[0] > zs[0] + 10.0, "{text}");
    assert!(zs[3] > ft[3] + 10.0, "{text}");
    for dom in ["id", "noise", "texture", "colour", "blur", "occlusion"] {
        assert!(d.path().join(dom).join("lambdas.svg").exists(), "{dom}");
        assert!(d.path().join(dom).join("summary.json").exists(), "{dom}");
    }
    assert!(d.path().join("table.txt").exists());
}
