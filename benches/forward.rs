//! CPU forward of a ViT-B/32-sized CLIP image tower (random weights, batch 8,
//! 224²), as images/s, min and median over repeats.
//!
//!     cargo bench --bench forward
//!     DAWIN_TORCH_PYTHON=.venv/bin/python cargo bench --bench forward
//!
//! With `DAWIN_TORCH_PYTHON` set, the same workload also runs in PyTorch
//! (tools/bench_torch_cpu.py) in the same process tree, and the ratio is printed.
//! Extra arguments: `--batch N`, `--repeats N`, `--dual` (DaWin's exact
//! per-sample interpolation, two weight sets).

use dawin::exec::{Executor, cpu::Cpu};
use dawin::model::placed::PlacedModel;
use dawin::model::vit::{DualWeights, forward};
use dawin::model::{Model, ModelSpec};
use std::time::Instant;

fn arg(name: &str, default: usize) -> usize {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let batch = arg("--batch", 8);
    let repeats = arg("--repeats", 5);
    let dual = std::env::args().any(|a| a == "--dual");
    let spec = ModelSpec::vit_b32(Some(1000));
    let m0 = Model::random(spec.clone(), 1);
    let m1 = Model::random(spec.clone(), 2);
    let ex = Cpu::new();
    let d0 = PlacedModel::upload(&ex, &m0).unwrap();
    let d1 = PlacedModel::upload(&ex, &m1).unwrap();
    let px = dawin::model::Model::random(
        ModelSpec {
            layers: 0,
            ..spec.clone()
        },
        3,
    )
    .flat;
    let img = 3 * 224 * 224;
    let pixels: Vec<f32> = px.iter().cycle().take(batch * img).copied().collect();
    let lambdas: Vec<f32> = (0..batch).map(|i| i as f32 / batch as f32).collect();
    let run = || {
        let ip = dual.then(|| DualWeights {
            other: &d1,
            lambda: &lambdas,
        });
        forward(&ex, &d0, &pixels, batch, ip).unwrap()
    };
    run(); // warm-up: page in weights, spin up threads
    let mut times: Vec<f64> = (0..repeats)
        .map(|_| {
            let t = Instant::now();
            run();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let (min, med) = (times[0], times[times.len() / 2]);
    let ours = batch as f64 / med;
    println!(
        "dawin cpu ({}) ViT-B/32 {} batch {batch}: min {:.1} ms, median {:.1} ms, {:.2} images/s",
        ex.name(),
        if dual { "dual-λ forward" } else { "forward" },
        min * 1e3,
        med * 1e3,
        ours
    );
    if let Ok(py) = std::env::var("DAWIN_TORCH_PYTHON") {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/bench_torch_cpu.py");
        let mut cmd = std::process::Command::new(py);
        cmd.args([
            script,
            "--batch",
            &batch.to_string(),
            "--repeats",
            &repeats.to_string(),
        ]);
        if dual {
            cmd.arg("--dual");
        }
        match cmd.output() {
            Ok(o) if o.status.success() => {
                let text = String::from_utf8_lossy(&o.stdout);
                print!("{text}");
                if let Some(theirs) = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("images/s "))
                    .filter_map(|v| v.trim().parse::<f64>().ok())
                    .next()
                {
                    println!("ratio dawin/torch: {:.2}×", ours / theirs);
                }
            }
            Ok(o) => eprintln!(
                "torch baseline failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("torch baseline could not start: {e}"),
        }
    }
}
