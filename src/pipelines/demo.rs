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
            ..EvalOptions::default()
        };
        let exact = eval::run(&o, ex)?;
        // The bmm run reuses the expertise pass the first one cached, and
        // reports into its own folder (other settings: its own result set).
        o.interp = Interp::Bmm(3);
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
    let mut table = format!("{:<14}", "accuracy %");
    for d in DOMAINS {
        write!(table, " {:>9}", d.name()).unwrap();
    }
    writeln!(table, " {:>9}", "OOD mean").unwrap();
    for (r, name) in ROWS.iter().enumerate() {
        write!(table, "{name:<14}").unwrap();
        for a in &accuracy[r] {
            write!(table, " {:>9.1}", 100.0 * a).unwrap();
        }
        let ood: f64 = accuracy[r][1..].iter().sum::<f64>() / (DOMAINS.len() - 1) as f64;
        writeln!(table, " {:>9.1}", 100.0 * ood).unwrap();
    }
    write_atomic(&out.join("table.txt"), table.as_bytes())?;
    Ok(DemoResult {
        table,
        accuracy,
        svgs,
    })
}
