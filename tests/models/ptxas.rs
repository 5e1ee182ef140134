//! NVIDIA's ptxas accepts every kernel for sm_80 and sm_90 with -Werror and
//! no register spills. Runs when ptxas is found (`DAWIN_PTXAS`, or `ptxas`
//! on the PATH); `.ci/run` fetches it (tools/get-ptxas.sh) so CI always runs
//! it. Without ptxas the test says so and checks nothing.

use std::process::Command;

fn ptxas() -> Option<String> {
    if let Ok(p) = std::env::var("DAWIN_PTXAS") {
        return Some(p);
    }
    Command::new("ptxas")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "ptxas".to_string())
}

#[test]
fn ptxas_accepts_every_kernel_without_spills() {
    let Some(ptxas) = ptxas() else {
        eprintln!("ptxas not found (set DAWIN_PTXAS or run tools/get-ptxas.sh): not checked");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (file, src) in dawin::ops::PTX_MODULES {
        let path = dir.path().join(file);
        std::fs::write(&path, src).unwrap();
        for arch in ["sm_80", "sm_90"] {
            let o = Command::new(&ptxas)
                .args([&format!("-arch={arch}"), "-v", "-Werror"])
                .arg(&path)
                .args(["-o", "/dev/null"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&o.stderr).to_string()
                + &String::from_utf8_lossy(&o.stdout);
            assert!(
                o.status.success(),
                "ptxas rejects {file} for {arch}:\n{text}"
            );
            assert!(
                text.contains("0 bytes spill stores, 0 bytes spill loads"),
                "{file} spills registers on {arch}:\n{text}"
            );
        }
    }
}
