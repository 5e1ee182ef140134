//! The methods `--methods` names: DaWin and its baselines, and their
//! predictions from the logits of the expertise and DaWin passes.

use crate::method::probs;
use crate::method::stats::Scores;
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    Zeroshot,
    Finetuned,
    WiseFt(f32),
    /// WiSE-FT at the α of lowest mean prediction entropy on the evaluated
    /// set (AdaWiSE-style test-time α; fit by golden-section search).
    WiseFtAuto,
    Ensemble,
    /// The output ensemble with a constant weight c on the fine-tuned model.
    EnsembleConst(f32),
    EnsembleDynamic,
    Dawin,
}

impl Method {
    pub fn name(&self) -> String {
        match self {
            Method::Zeroshot => "zeroshot".into(),
            Method::Finetuned => "finetuned".into(),
            Method::WiseFt(a) => format!("wise-ft:{a}"),
            Method::WiseFtAuto => "wise-ft:auto".into(),
            Method::Ensemble => "ensemble".into(),
            Method::EnsembleConst(c) => format!("ensemble:{c}"),
            Method::EnsembleDynamic => "ensemble-dynamic".into(),
            Method::Dawin => "dawin".into(),
        }
    }

    /// The α of every `wise-ft:α` in `methods`.
    pub fn wise_alphas(methods: &[Method]) -> Vec<f32> {
        methods
            .iter()
            .filter_map(|m| match m {
                Method::WiseFt(a) => Some(*a),
                _ => None,
            })
            .collect()
    }

    /// Parses `--methods`: a comma list; `wise-ft` alone means 0.1, …, 0.9.
    pub fn parse_list(s: &str) -> std::result::Result<Vec<Method>, String> {
        let mut out: Vec<Method> = Vec::new();
        for item in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
            let new: Vec<Method> = match item {
                "all" => {
                    let mut v = vec![Method::Zeroshot, Method::Finetuned];
                    v.extend((1..10).map(|i| Method::WiseFt(i as f32 / 10.0)));
                    v.extend([Method::Ensemble, Method::EnsembleDynamic, Method::Dawin]);
                    v
                }
                "zeroshot" => vec![Method::Zeroshot],
                "finetuned" => vec![Method::Finetuned],
                "wise-ft" => (1..10).map(|i| Method::WiseFt(i as f32 / 10.0)).collect(),
                "ensemble" => vec![Method::Ensemble],
                "ensemble-dynamic" => vec![Method::EnsembleDynamic],
                "dawin" => vec![Method::Dawin],
                "wise-ft:auto" => vec![Method::WiseFtAuto],
                other => vec![parse_weighted(other)?],
            };
            for m in new {
                if !out.contains(&m) {
                    out.push(m);
                }
            }
        }
        if out.is_empty() {
            return Err("no methods given".into());
        }
        Ok(out)
    }
}

/// The method names `--methods` takes, for suggestions.
const NAMES: [&str; 10] = [
    "zeroshot",
    "finetuned",
    "wise-ft",
    "wise-ft:α",
    "wise-ft:auto",
    "ensemble",
    "ensemble:c",
    "ensemble-dynamic",
    "dawin",
    "all",
];

/// `wise-ft:α` or `ensemble:c`, the weight in [0, 1].
fn parse_weighted(item: &str) -> std::result::Result<Method, String> {
    for (prefix, what) in [("wise-ft:", "α"), ("ensemble:", "c")] {
        let Some(text) = item.strip_prefix(prefix) else {
            continue;
        };
        let w: f32 = text
            .parse()
            .map_err(|_| format!("`{item}`: {what} must be a number in [0, 1], got `{text}`"))?;
        if !(0.0..=1.0).contains(&w) {
            return Err(format!("`{item}`: {what} must be in [0, 1], got {w}"));
        }
        return Ok(if prefix == "wise-ft:" {
            Method::WiseFt(w)
        } else {
            Method::EnsembleConst(w)
        });
    }
    let near = NAMES
        .iter()
        .map(|n| (strsim::damerau_levenshtein(item, n), n))
        .min()
        .filter(|(d, _)| *d <= 2)
        .map_or(String::new(), |(_, n)| format!("; did you mean `{n}`?"));
    Err(format!(
        "unknown method `{item}`{near} (zeroshot, finetuned, wise-ft, wise-ft:α, wise-ft:auto, ensemble, ensemble:c, ensemble-dynamic, dawin, all; α and c in [0,1])"
    ))
}

/// Projected logits of every model a method reads, one row per sample.
pub struct Logits<'a> {
    pub pt: &'a [f32],
    pub ft: &'a [f32],
    /// Each `wise-ft:α` merged model's (and `wise-ft:auto`'s), by method
    /// name.
    pub wise: &'a HashMap<String, Vec<f32>>,
    /// DaWin's per-sample models', when `dawin` was evaluated.
    pub dawin: Option<&'a [f32]>,
    pub lambda: &'a [f32],
    pub classes: usize,
    pub temperature: (f32, f32),
    pub labels: &'a [i64],
}

/// A method's predictions and what its calibration statistics average.
pub struct Outcome {
    pub pred: Vec<usize>,
    pub scores: Scores,
}

/// Each method's prediction per sample, by method name.
pub fn predictions(methods: &[Method], l: &Logits) -> BTreeMap<String, Vec<usize>> {
    outcomes(methods, l)
        .into_iter()
        .map(|(k, o)| (k, o.pred))
        .collect()
}

/// Each method's predictions and scores, by method name. The zero-shot
/// and fine-tuned models' probabilities are softmax(z/T) at their
/// temperatures, the merged models' (wise-ft, dawin) softmax(z), the
/// ensembles' their mixtures.
pub fn outcomes(methods: &[Method], l: &Logits) -> BTreeMap<String, Outcome> {
    let (t_pt, t_ft) = l.temperature;
    methods
        .iter()
        .map(|m| {
            let out = match m {
                Method::Zeroshot => model(l, l.pt, t_pt),
                Method::Finetuned => model(l, l.ft, t_ft),
                Method::WiseFt(_) | Method::WiseFtAuto => model(l, &l.wise[&m.name()], 1.0),
                Method::Ensemble => ensemble(l, |_| 0.5),
                Method::EnsembleConst(w) => ensemble(l, |_| *w as f64),
                Method::EnsembleDynamic => ensemble(l, |i| l.lambda[i] as f64),
                Method::Dawin => model(l, l.dawin.expect("the DaWin pass ran"), 1.0),
            };
            (m.name(), out)
        })
        .collect()
}

/// A single model's outcome from its logits at temperature `t`.
fn model(l: &Logits, z: &[f32], t: f32) -> Outcome {
    let mut scores = Scores::default();
    let pred = z
        .chunks(l.classes)
        .zip(l.labels)
        .map(|(row, &y)| {
            let lp = probs::log_softmax(row, t);
            let p: Vec<f64> = lp.iter().map(|v| v.exp()).collect();
            scores.push(&p, Some(lp[y as usize]), y as usize);
            probs::argmax(row)
        })
        .collect();
    Outcome { pred, scores }
}

/// The output ensemble `(1−w)·p_pt + w·p_ft` with weight `w(sample)`, the
/// probabilities at each model's temperature.
fn ensemble(l: &Logits, weight: impl Fn(usize) -> f64) -> Outcome {
    let c = l.classes;
    let mut scores = Scores::default();
    let pred = (0..l.labels.len())
        .map(|i| {
            let pp = probs::softmax(&l.pt[i * c..(i + 1) * c], l.temperature.0);
            let pf = probs::softmax(&l.ft[i * c..(i + 1) * c], l.temperature.1);
            let w = weight(i);
            let p: Vec<f64> = pp
                .iter()
                .zip(&pf)
                .map(|(a, b)| (1.0 - w) * a + w * b)
                .collect();
            scores.push(&p, None, l.labels[i] as usize);
            probs::argmax(&p)
        })
        .collect();
    Outcome { pred, scores }
}

pub fn argmax_rows<T: Copy + PartialOrd>(v: &[T], c: usize) -> Vec<usize> {
    v.chunks(c).map(probs::argmax).collect()
}
