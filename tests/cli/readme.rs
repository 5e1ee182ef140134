//! Every `dawin …` command line of the README's `sh` blocks runs as
//! written, in order, from a folder laid out like the repository root
//! (`tests/` and an empty `target/`), and exits 0: the README cannot drift
//! from the command line.

use std::process::Command;

/// The `dawin` lines of every ```sh block, in order.
fn readme_commands(readme: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in readme.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_sh = t == "```sh";
            continue;
        }
        if in_sh && t.starts_with("dawin ") {
            out.push(t.to_string());
        }
    }
    out
}

#[test]
fn every_readme_command_runs() {
    let root = crate::common::repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let commands = readme_commands(&readme);
    assert!(commands.len() >= 8, "too few examples found: {commands:?}");
    let d = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(root.join("tests"), d.path().join("tests")).unwrap();
    std::fs::create_dir(d.path().join("target")).unwrap();
    for line in &commands {
        let words = shlex::split(line).unwrap_or_else(|| panic!("unbalanced quotes: {line}"));
        let o = Command::new(crate::common::dawin_bin())
            .args(&words[1..])
            .current_dir(d.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "README example failed: {line}\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// The README's quickstart (its ```bash block under `## Quickstart`) runs
/// on stand-ins for the files it names: an HF CLIP folder with its text
/// tower, a fine-tuned `.pt` state dict of the same architecture (no
/// metadata: `tools/make_finetuned_pt.py`) and an image folder of five
/// classes. Nothing is assumed (the `.pt` takes heads and act from the
/// zero-shot model, as summary.json records), and every output it points
/// to is there.
#[test]
fn the_quickstart_runs() {
    let root = crate::common::repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let block = readme
        .split("## Quickstart")
        .nth(1)
        .and_then(|rest| rest.split("```bash").nth(1))
        .and_then(|b| b.split("```").next())
        .expect("a ```bash block under ## Quickstart");
    let commands: Vec<&str> = block.lines().filter(|l| l.starts_with("dawin ")).collect();
    assert_eq!(commands.len(), 2, "{block}");
    let d = tempfile::tempdir().unwrap();
    let fx = crate::common::fixtures_dir();
    std::os::unix::fs::symlink(fx.join("text/hf_clip"), d.path().join("clip-vit-b-32")).unwrap();
    std::os::unix::fs::symlink(
        fx.join("checkpoints/finetuned_hf_clip.pt"),
        d.path().join("finetuned.pt"),
    )
    .unwrap();
    let classes = [
        "goldfish",
        "great_white_shark",
        "hen",
        "ostrich",
        "tabby_cat",
    ];
    for (c, name) in classes.iter().enumerate() {
        for k in 0..2u8 {
            let dir = d.path().join("imagenet/val").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let px = image::Rgb([40 * c as u8, 90 * k, 200 - 30 * c as u8]);
            image::RgbImage::from_pixel(40, 36, px)
                .save(dir.join(format!("{k}.png")))
                .unwrap();
        }
    }
    for line in commands {
        let words = shlex::split(line).unwrap();
        let o = Command::new(crate::common::dawin_bin())
            .args(&words[1..])
            .current_dir(d.path())
            .output()
            .unwrap();
        let text =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "quickstart failed: {line}\n{text}");
        assert!(!text.contains("assuming"), "{line}: {text}");
    }
    let results = d.path().join("results");
    for f in [
        "summary.json",
        "samples.csv",
        "lambdas.svg",
        "lambda_oracle.svg",
        "classes.txt",
    ] {
        assert!(results.join(f).exists(), "{f}");
    }
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(s["methods"]["dawin"]["count"], 10);
    let ft = &s["model_settings"]["finetuned"];
    assert_eq!(ft["heads"]["source"], "other model", "{ft}");
    assert_eq!(
        ft["heads"]["value"], 2,
        "the config's 2 heads, not width/64 = 1"
    );
    assert_eq!(ft["act"]["value"], "gelu", "{ft}");
    // The zero-shot head records what built it, and where that came from.
    let zs = &s["model_settings"]["pretrained"]["zeroshot_head"];
    assert_eq!(zs["text_heads"]["source"], "config", "{zs}");
    assert_eq!(zs["text_heads"]["value"], 4.0, "{zs}");
    assert_eq!(zs["logit_scale"]["source"], "tensor", "{zs}");
}
