//! A reader that goes away is not a crash: every command that prints,
//! run with its stdout, then its stderr, a pipe whose reading end is
//! already closed, exits as it would have (0, or 2 for a usage error)
//! with no panic. `println!` panics there ("failed printing to stdout:
//! Broken pipe", exit 101).

use crate::common::{dawin_bin, fixtures_dir};
use std::process::{Command, Stdio};

fn fx(name: &str) -> String {
    fixtures_dir().join(name).display().to_string()
}

/// Runs `args` with stdout (or stderr) writing into a closed pipe; the
/// other stream is captured. Returns the exit code and the captured text.
fn with_closed(args: &[String], close_stdout: bool) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = Command::new(dawin_bin());
    cmd.args(args).stdin(Stdio::null());
    let out = if close_stdout {
        cmd.stdout(writer).stderr(Stdio::piped()).output().unwrap()
    } else {
        cmd.stderr(writer).stdout(Stdio::piped()).output().unwrap()
    };
    let seen = if close_stdout { out.stderr } else { out.stdout };
    (
        out.status.code(),
        String::from_utf8_lossy(&seen).into_owned(),
    )
}

#[test]
fn every_printing_command_ends_quietly_when_its_reader_has_gone() {
    let d = tempfile::tempdir().unwrap();
    let out = |name: &str| d.path().join(name).display().to_string();
    let text = fixtures_dir().join("text");
    let classes = d.path().join("classes.txt");
    std::fs::write(&classes, "cat\ndog\n").unwrap();
    let (pt, ft, data) = (
        fx("dawin_pt.safetensors"),
        fx("dawin_ft.safetensors"),
        fx("dawin_data.safetensors"),
    );
    let commands: Vec<(Vec<String>, i32)> = vec![
        (vec!["inspect".into(), fx("hf_quickgelu.safetensors")], 0),
        (vec!["--help".into()], 0),
        (vec!["eval".into(), "--help".into()], 0),
        (vec!["completions".into(), "bash".into()], 0),
        (vec!["inspect".into(), "--no-such-flag".into()], 2),
        (vec!["inspect".into(), out("missing.safetensors")], 1),
        (
            [
                "eval",
                "--pretrained",
                &pt,
                "--finetuned",
                &ft,
                "--data",
                &data,
                "--out-dir",
                &out("eval"),
                "--methods",
                "zeroshot,dawin",
            ]
            .map(String::from)
            .to_vec(),
            0,
        ),
        (
            [
                "zeroshot",
                "--model",
                &text.join("hf_clip").display().to_string(),
                "--classes",
                &classes.display().to_string(),
                "--out",
                &out("head.safetensors"),
            ]
            .map(String::from)
            .to_vec(),
            0,
        ),
        (
            [
                "bench",
                "--suite",
                "kernels",
                "--repeats",
                "1",
                "--filter",
                "softmax",
            ]
            .map(String::from)
            .to_vec(),
            0,
        ),
    ];
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let prompts = text.join("prompts.txt").display().to_string();
    let hf = text.join("hf_clip").display().to_string();
    let more = [
        strings(&[
            "encode-text",
            "--model",
            &hf,
            "--texts",
            &prompts,
            "--out",
            &out("text.safetensors"),
        ]),
        strings(&[
            "convert",
            &fx("hf_quickgelu.safetensors"),
            &out("converted.safetensors"),
        ]),
        strings(&[
            "forward",
            "--model",
            &fx("hf_quickgelu.safetensors"),
            "--input",
            &fx("hf_quickgelu.io.safetensors"),
            "--out",
            &out("forward.safetensors"),
        ]),
        strings(&[
            "expertise",
            "--pretrained",
            &pt,
            "--finetuned",
            &ft,
            "--data",
            &data,
            "--out-dir",
            &out("expertise"),
        ]),
        strings(&["synth", "--out", &out("synth"), "--per-class", "1"]),
    ];
    let mut commands = commands;
    commands.extend(more.into_iter().map(|a| (a, 0)));
    for (args, want) in &commands {
        for close_stdout in [true, false] {
            let (code, seen) = with_closed(args, close_stdout);
            let which = if close_stdout { "stdout" } else { "stderr" };
            assert!(
                !seen.contains("panicked") && !seen.contains("Broken pipe"),
                "{args:?} with {which} closed: {seen}"
            );
            assert_eq!(code, Some(*want), "{args:?} with {which} closed: {seen}");
        }
    }
}
