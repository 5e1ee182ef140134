//! `dawin.evaluate`: the run `dawin eval` makes, its summary returned as a
//! dict with each sample's λ, index and predictions.

use super::{PyModel, choice, invalid, ndarray, py_err, to_python};
use dawin::data::dataset::LabelOrder;
use dawin::data::projection::Projection;
use dawin::exec::{self, ExecutorKind};
use dawin::method::interp::Interp;
use dawin::method::lambda::{LambdaRule, T3Shape};
use dawin::method::methods::Method;
use dawin::model::Act;
use dawin::model::placed::Precision;
use dawin::pipelines::eval::{self, EvalOptions};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::path::PathBuf;

/// A model argument: a path, or a `dawin.Model` (its file).
fn model_path(obj: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    match obj.extract::<PyRef<'_, PyModel>>() {
        Ok(m) => Ok(m.path.clone()),
        Err(_) => obj.extract::<PathBuf>(),
    }
}

/// `methods` as a comma string or a list of names.
fn methods(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Vec<Method>> {
    let text = match obj.cast::<PyList>() {
        Ok(list) => list.extract::<Vec<String>>()?.join(","),
        Err(_) => obj.extract::<String>()?,
    };
    Method::parse_list(&text).map_err(|e| invalid(py, e))
}

/// Sets one of eval's flags (snake case) on `o`; an unknown flag is an
/// error, never ignored.
fn set_flag(py: Python<'_>, o: &mut EvalOptions, key: &str, v: &Bound<'_, PyAny>) -> PyResult<()> {
    match key {
        "lambda_rule" | "expertise" => {
            o.rule = choice::<LambdaRule>(py, key, &v.extract::<String>()?)?;
        }
        "temperature" => o.temperature = v.extract::<(f32, f32)>()?,
        "wise_alpha" => o.wise_alpha = Some(v.extract::<f32>()?),
        "t3_gamma" => {
            let t = o.t3;
            o.t3 = T3Shape::new(v.extract()?, t.lo, t.hi).map_err(|e| py_err(py, e))?;
        }
        "t3_range" => {
            let (lo, hi) = v.extract::<(f64, f64)>()?;
            o.t3 = T3Shape::new(o.t3.gamma, lo, hi).map_err(|e| py_err(py, e))?;
        }
        "seed" => o.seed = v.extract()?,
        "bootstrap" => o.bootstrap = v.extract()?,
        "batch_size" => o.batch_size = v.extract::<usize>()?.max(1),
        "heads" => o.overrides.heads = Some(v.extract()?),
        "act" => {
            let a: String = v.extract()?;
            o.overrides.act = Some(a.parse::<Act>().map_err(|e| invalid(py, e))?);
        }
        "precision" => o.precision = choice::<Precision>(py, key, &v.extract::<String>()?)?,
        "shard" => {
            let s: String = v.extract()?;
            let parsed = s
                .split_once('/')
                .and_then(|(i, n)| Some((i.parse().ok()?, n.parse().ok()?)));
            o.shard = Some(parsed.ok_or_else(|| invalid(py, format!("shard `{s}` is not i/n")))?);
        }
        "expertise_from" => o.expertise_from = Some(v.extract()?),
        "class_subset" => {
            let p: PathBuf = v.extract()?;
            o.projection = Projection::subset_file(&p).map_err(|e| py_err(py, e))?;
        }
        "class_map" => {
            let p: PathBuf = v.extract()?;
            o.projection = Projection::map_file(&p).map_err(|e| py_err(py, e))?;
        }
        "label_order" => o.label_order = choice::<LabelOrder>(py, key, &v.extract::<String>()?)?,
        "crop_border" => o.crop_border = v.extract()?,
        "save_components" => o.save_components = Some(v.extract()?),
        _ => {
            return Err(invalid(
                py,
                format!(
                    "evaluate() has no flag `{key}` (it takes lambda_rule, temperature, wise_alpha, t3_gamma, t3_range, seed, bootstrap, batch_size, heads, act, precision, shard, expertise_from, class_subset, class_map, label_order, crop_border, save_components)"
                ),
            ));
        }
    }
    Ok(())
}

/// Where `evaluate`'s progress goes: `None`/`True` tqdm bars when tqdm is
/// installed, `False` nowhere, a callable `callback(what, done, total)`.
/// Whether to report progress at all.
fn set_progress(progress: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
    let mut slot = crate::report::PROGRESS
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    *slot = None;
    match progress {
        None => Ok(true),
        Some(p) if p.is_callable() => {
            *slot = Some(p.clone().unbind());
            Ok(true)
        }
        Some(p) => p.extract::<bool>(),
    }
}

/// The same run as `dawin eval`; returns summary.json's content plus
/// `lambdas`, `indices` and `predictions` (method name → ndarray), one
/// entry per evaluated sample. Writes files only when `out_dir` is given.
// Its Python keyword arguments are its parameters.
#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (pretrained, finetuned, data, *, methods=None, interp="exact", out_dir=None, device="cpu", progress=None, **flags))]
pub fn evaluate<'py>(
    py: Python<'py>,
    pretrained: &Bound<'py, PyAny>,
    finetuned: &Bound<'py, PyAny>,
    data: PathBuf,
    methods: Option<&Bound<'py, PyAny>>,
    interp: &str,
    out_dir: Option<PathBuf>,
    device: &str,
    progress: Option<&Bound<'py, PyAny>>,
    flags: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let scratch = match out_dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().map_err(|e| invalid(py, e.to_string()))?),
    };
    let out = out_dir.unwrap_or_else(|| scratch.as_ref().expect("made above").path().join("out"));
    let mut o = EvalOptions {
        pretrained: model_path(pretrained)?,
        finetuned: model_path(finetuned)?,
        data,
        out_dir: out,
        methods: match methods {
            Some(m) => self::methods(py, m)?,
            None => Method::parse_list("all").map_err(|e| invalid(py, e))?,
        },
        interp: interp
            .parse::<Interp>()
            .map_err(|e| invalid(py, e.to_string()))?,
        progress: false,
        ..EvalOptions::default()
    };
    for (k, v) in flags.into_iter().flat_map(|d| d.iter()) {
        set_flag(py, &mut o, &k.extract::<String>()?, &v)?;
    }
    let device = choice::<ExecutorKind>(py, "device", device)?;
    o.progress = set_progress(progress)?;
    dawin::interrupt::clear();
    let r = py.detach(|| -> dawin::error::Result<eval::EvalResult> {
        let ex = exec::open(device)?;
        eval::run(&o, ex.as_ref())
    });
    *crate::report::PROGRESS
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = None;
    dawin::interrupt::clear();
    let r = r.map_err(|e| py_err(py, e))?;
    let result = to_python(py, &r.summary)?;
    let n = r.indices.len();
    result.set_item("lambdas", ndarray(py, r.lambdas, &[n])?)?;
    let indices: Vec<i64> = r.indices.iter().map(|&i| i as i64).collect();
    result.set_item("indices", ndarray(py, indices, &[n])?)?;
    let preds = PyDict::new(py);
    for (name, p) in r.predictions {
        let p: Vec<i64> = p.into_iter().map(|v| v as i64).collect();
        preds.set_item(name, ndarray(py, p, &[n])?)?;
    }
    result.set_item("predictions", preds)?;
    Ok(result)
}
