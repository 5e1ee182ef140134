//! `dawin demo`: the whole DaWin evaluation on the built-in procedural image
//! set with the bundled pretrained/fine-tuned pair (tools/train_demo.py),
//! in distribution and under five shifts; no network, no file outside the
//! repository (the models are embedded in the binary).

use crate::data::synth::{DOMAINS, SIZE, generate};
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::method::interp::Interp;
use crate::method::methods::Method;
use crate::pipelines::eval::{self, EvalOptions};
use crate::tensorfile::{Tensor, write_atomic, write_f32_with_labels};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const PRETRAINED: &[u8] = include_bytes!("../../demo/pretrained.safetensors");
const FINETUNED: &[u8] = include_bytes!("../../demo/finetuned.safetensors");
/// Evaluation images are drawn from this seed; training used others.
pub const EVAL_SEED: u64 = 1000;

pub struct DemoResult {
    pub table: String,
    /// rows × domains accuracies, rows as in `ROWS`.
    pub accuracy: Vec<Vec<f64>>,
    pub svgs: Vec<PathBuf>,
}

pub const ROWS: [&str; 6] = [
    "zero-shot",
    "fine-tuned",
    "WiSE-FT 0.5",
    "ensemble",
    "DaWin (exact)",
    "DaWin (bmm)",
];

/// The Beta mixture's component count in the demo's bmm row.
const BMM_K: usize = 3;

/// The demo's table: what the numbers are, one row per method and a
/// column per domain with the OOD mean, then what they say, read plainly.
fn table_text(accuracy: &[Vec<f64>], images: usize) -> String {
    let mut t = format!(
        "top-1 accuracy (%) on {images} images per domain (10 classes); id is the clean domain the fine-tuned model was trained on, the other five are shifts, OOD mean their mean\n"
    );
    write!(t, "{:<14}", "method").unwrap();
    for d in DOMAINS {
        write!(t, " {:>9}", d.name()).unwrap();
    }
    writeln!(t, " {:>9}", "OOD mean").unwrap();
    for (r, name) in ROWS.iter().enumerate() {
        write!(t, "{name:<14}").unwrap();
        for a in &accuracy[r] {
            write!(t, " {:>9.1}", 100.0 * a).unwrap();
        }
        writeln!(t, " {:>9.1}", 100.0 * ood_mean(&accuracy[r])).unwrap();
    }
    writeln!(
        t,
        "DaWin (exact): each image's own merged model; DaWin (bmm): K = {BMM_K} merged models from a Beta mixture over λ"
    )
    .unwrap();
    t + &read_plainly(accuracy)
}

/// The mean over the shifted domains (all but the first).
fn ood_mean(row: &[f64]) -> f64 {
    row[1..].iter().sum::<f64>() / (row.len() - 1) as f64
}

/// Three lines saying what the table shows, from its own numbers.
fn read_plainly(acc: &[Vec<f64>]) -> String {
    let pts = |v: f64| 100.0 * v;
    let (zs, ft, exact, bmm) = (&acc[0], &acc[1], &acc[4], &acc[5]);
    let worst = (1..ft.len())
        .min_by(|&a, &b| (ft[a] - zs[a]).total_cmp(&(ft[b] - zs[b])))
        .unwrap_or(1);
    let best = (0..ROWS.len())
        .max_by(|&a, &b| ood_mean(&acc[a]).total_cmp(&ood_mean(&acc[b])))
        .unwrap_or(0);
    let gap = exact
        .iter()
        .zip(bmm)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    format!(
        "Read plainly:\n  fine-tuning moves in-distribution accuracy by {:+.1} points and the OOD mean by {:+.1} (its worst shift: {}, {:+.1});\n  DaWin (exact) is at {:.1} in distribution (fine-tuned {:.1}) and {:.1} on the OOD mean (fine-tuned {:.1}); the best OOD mean is {}'s, {:.1};\n  bmm with K = {BMM_K} merged models stays within {:.1} points of exact DaWin on every domain.\n",
        pts(ft[0] - zs[0]),
        pts(ood_mean(ft) - ood_mean(zs)),
        DOMAINS[worst].name(),
        pts(ft[worst] - zs[worst]),
        pts(exact[0]),
        pts(ft[0]),
        pts(ood_mean(exact)),
        pts(ood_mean(ft)),
        ROWS[best],
        pts(ood_mean(&acc[best])),
        pts(gap)
    )
}

pub fn run(out: &Path, per_class: usize, ex: &dyn Executor, progress: bool) -> Result<DemoResult> {
    crate::limits::check_alloc("one domain's images", per_class * 10, 4 * 3 * SIZE * SIZE)?;
    let models = out.join("models");
    std::fs::create_dir_all(&models).map_err(|e| Error::io(&models, e))?;
    let (pt, ft) = (
        models.join("pretrained.safetensors"),
        models.join("finetuned.safetensors"),
    );
    write_atomic(&pt, PRETRAINED)?;
    write_atomic(&ft, FINETUNED)?;
    let mut accuracy = vec![vec![0f64; DOMAINS.len()]; ROWS.len()];
    let mut svgs = Vec::new();
    let t0 = std::time::Instant::now();
    let tell = progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
    for (col, d) in DOMAINS.iter().enumerate() {
        if tell {
            // Where the whole run stands, above each domain's phase bars.
            crate::reporter::status(&format!(
                "domain {}/{}: {} ({:.1}s so far)",
                col + 1,
                DOMAINS.len(),
                d.name(),
                t0.elapsed().as_secs_f64()
            ));
        }
        let dir = out.join(d.name());
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let (px, labels) = generate(*d, per_class, EVAL_SEED);
        let data = dir.join("data.safetensors");
        let t = Tensor {
            shape: vec![labels.len(), 3, SIZE, SIZE],
            data: px,
        };
        write_f32_with_labels(&data, &t, &labels)?;
        let mut o = EvalOptions {
            pretrained: pt.clone(),
            finetuned: ft.clone(),
            data,
            out_dir: dir.clone(),
            batch_size: 256,
            methods: Method::parse_list("zeroshot,finetuned,wise-ft:0.5,ensemble,dawin")
                .expect("valid"),
            progress,
            progress_label: format!("{}: ", d.name()),
            set_name: Some(format!("{} domain", d.name())),
            ..EvalOptions::default()
        };
        let exact = eval::run(&o, ex)?;
        // The bmm run reuses the expertise pass the first one cached, and
        // reports into its own folder (other settings: its own result set).
        o.interp = Interp::Bmm(BMM_K);
        o.progress_label = format!("{}: bmm ", d.name());
        o.methods = vec![Method::Dawin];
        o.cache = Some(dir.join("cache.safetensors"));
        o.out_dir = dir.join("bmm");
        let bmm = eval::run(&o, ex)?;
        let acc = |r: &eval::EvalResult, m: &str| {
            r.summary["methods"][m]["accuracy"]
                .as_f64()
                .unwrap_or(f64::NAN)
        };
        for (row, (r, m)) in [
            (&exact, "zeroshot"),
            (&exact, "finetuned"),
            (&exact, "wise-ft:0.5"),
            (&exact, "ensemble"),
            (&exact, "dawin"),
            (&bmm, "dawin"),
        ]
        .into_iter()
        .enumerate()
        {
            accuracy[row][col] = acc(r, m);
        }
        svgs.push(dir.join("lambdas.svg"));
    }
    let table = table_text(&accuracy, per_class * 10);
    write_atomic(&out.join("table.txt"), table.as_bytes())?;
    Ok(DemoResult {
        table,
        accuracy,
        svgs,
    })
}
