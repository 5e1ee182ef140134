//! The methods `--methods` names: DaWin and its baselines, and their
//! predictions from the logits of the expertise and DaWin passes.

use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    Zeroshot,
    Finetuned,
    WiseFt(f32),
    Ensemble,
    EnsembleDynamic,
    Dawin,
}

impl Method {
    pub fn name(&self) -> String {
        match self {
            Method::Zeroshot => "zeroshot".into(),
            Method::Finetuned => "finetuned".into(),
            Method::WiseFt(a) => format!("wise-ft:{a}"),
            Method::Ensemble => "ensemble".into(),
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
                other => match other.strip_prefix("wise-ft:").map(|a| a.parse::<f32>()) {
                    Some(Ok(a)) if (0.0..=1.0).contains(&a) => vec![Method::WiseFt(a)],
                    _ => {
                        return Err(format!(
                            "unknown method `{other}` (zeroshot, finetuned, wise-ft, wise-ft:α with α in [0,1], ensemble, ensemble-dynamic, dawin, all)"
                        ));
                    }
                },
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

/// Projected logits of every model a method reads, one row per sample.
pub struct Logits<'a> {
    pub pt: &'a [f32],
    pub ft: &'a [f32],
    /// Each `wise-ft:α` merged model's, by method name.
    pub wise: &'a HashMap<String, Vec<f32>>,
    /// DaWin's per-sample models', when `dawin` was evaluated.
    pub dawin: Option<&'a [f32]>,
    pub lambda: &'a [f32],
    pub classes: usize,
    pub temperature: (f32, f32),
}

/// Each method's prediction per sample, by method name.
pub fn predictions(methods: &[Method], l: &Logits) -> BTreeMap<String, Vec<usize>> {
    let c = l.classes;
    methods
        .iter()
        .map(|m| {
            let pred = match m {
                Method::Zeroshot => argmax_rows(l.pt, c),
                Method::Finetuned => argmax_rows(l.ft, c),
                Method::WiseFt(_) => argmax_rows(&l.wise[&m.name()], c),
                Method::Ensemble => argmax_rows(&ensemble(l, |_| 0.5), c),
                Method::EnsembleDynamic => argmax_rows(&ensemble(l, |i| l.lambda[i] as f64), c),
                Method::Dawin => argmax_rows(l.dawin.expect("the DaWin pass ran"), c),
            };
            (m.name(), pred)
        })
        .collect()
}

/// The output ensemble `(1−w)·p_pt + w·p_ft` with weight `w(sample)`.
fn ensemble(l: &Logits, weight: impl Fn(usize) -> f64) -> Vec<f64> {
    let c = l.classes;
    let (pp, pf) = (
        softmax_rows(l.pt, c, l.temperature.0),
        softmax_rows(l.ft, c, l.temperature.1),
    );
    (0..pp.len())
        .map(|k| {
            let w = weight(k / c);
            (1.0 - w) * pp[k] + w * pf[k]
        })
        .collect()
}

/// Softmax of each row of `z/t`, in f64.
fn softmax_rows(z: &[f32], c: usize, t: f32) -> Vec<f64> {
    z.chunks(c)
        .flat_map(|r| {
            let s = crate::ops::softmax_entropy::row(r, t);
            r.iter()
                .map(move |&v| ((v as f64 / t as f64) - s.logsumexp as f64).exp())
                .collect::<Vec<_>>()
        })
        .collect()
}

pub fn argmax_rows<T: Copy + PartialOrd>(v: &[T], c: usize) -> Vec<usize> {
    v.chunks(c)
        .map(|r| {
            let mut best = 0;
            for (i, x) in r.iter().enumerate() {
                if x > &r[best] {
                    best = i;
                }
            }
            best
        })
        .collect()
}
