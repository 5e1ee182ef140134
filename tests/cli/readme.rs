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
