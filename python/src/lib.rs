//! `dawin._dawin`: the Python module's native half, over the same engine
//! the CLI runs. Arrays come in as anything numpy can view as float32
//! (numpy arrays, CPU torch tensors) and go out as numpy arrays; the GIL
//! is released while the engine computes; errors become the exceptions of
//! `dawin.errors`, with the CLI's message; warnings, notes and progress go
//! through Python ([`report`]).

use dawin::choice::Choice;
use dawin::exec::{self, ExecutorKind};
use dawin::method::engine::Engine;
use dawin::method::entropy::entropies;
use dawin::method::lambda::{self, Entropies, Inputs, LambdaRule, T3Shape};
use dawin::model::batch::forward_batched;
use dawin::model::placed::{PlacedModel, Precision};
use dawin::model::{Act, Model, Overrides};
use numpy::{IntoPyArray, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::path::PathBuf;

mod evaluate;
mod report;

/// A dawin error as the `dawin.errors` exception of its kind.
fn py_err(py: Python<'_>, e: dawin::error::Error) -> PyErr {
    use dawin::error::Error;
    let kind = match &e {
        Error::Interrupted => return PyKeyboardInterrupt::new_err(e.to_string()),
        Error::Io { err, .. } if err.kind() == std::io::ErrorKind::NotFound => "FileMissingError",
        Error::Invalid(m) | Error::File { msg: m, .. } if m.contains("no such file") => {
            "FileMissingError"
        }
        Error::Invalid(_) | Error::File { .. } => "InvalidInputError",
        Error::OutOfMemory(_) => "OutOfDeviceMemoryError",
        _ => "DawinError",
    };
    match py
        .import("dawin.errors")
        .and_then(|m| m.getattr(kind))
        .and_then(|cls| cls.call1((e.to_string(),)))
    {
        Ok(exc) => PyErr::from_value(exc),
        Err(import_failed) => import_failed,
    }
}

/// A bad argument, as `dawin.errors.InvalidInputError`.
fn invalid(py: Python<'_>, msg: String) -> PyErr {
    py_err(py, dawin::error::Error::Invalid(msg))
}

/// A value of a [`Choice`] by name, or an error listing the names.
fn choice<T: Choice>(py: Python<'_>, what: &str, s: &str) -> PyResult<T> {
    T::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = T::ALL.iter().map(|n| n.name).collect();
        invalid(
            py,
            format!("{what} `{s}` is not one of: {}", names.join(", ")),
        )
    })
}

/// Any array-like numpy can view as float32, as a contiguous copy and its
/// shape.
pub(crate) fn f32_array(obj: &Bound<'_, PyAny>) -> PyResult<(Vec<f32>, Vec<usize>)> {
    let np = obj.py().import("numpy")?;
    let arr = np.call_method1("ascontiguousarray", (obj, "float32"))?;
    let arr: PyReadonlyArrayDyn<f32> = arr.extract()?;
    let shape = arr.shape().to_vec();
    let data = arr
        .as_slice()
        .map_err(|e| invalid(obj.py(), e.to_string()))?
        .to_vec();
    Ok((data, shape))
}

/// A serde_json value as the Python object `json.loads` makes of it.
pub(crate) fn to_python<'py>(
    py: Python<'py>,
    v: &serde_json::Value,
) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (v.to_string(),))
}

/// `values` as a numpy array of `shape`.
fn ndarray<'py, T: numpy::Element>(
    py: Python<'py>,
    values: Vec<T>,
    shape: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    Ok(values.into_pyarray(py).reshape(shape)?.into_any())
}

/// A CLIP image classifier (or image tower) loaded from any artefact dawin
/// reads: safetensors, PyTorch `.pt`/`.bin`, HF or open_clip folders.
#[pyclass(name = "Model", module = "dawin")]
pub struct PyModel {
    pub(crate) inner: Model,
    pub(crate) path: PathBuf,
    device: ExecutorKind,
    precision: Precision,
    /// The folder holding a model made in memory (`zeroshot`), kept while
    /// the model lives so that `evaluate` can read it.
    _files: Option<tempfile::TempDir>,
}

#[pymethods]
impl PyModel {
    #[new]
    #[pyo3(signature = (path, *, heads=None, act=None, device="cpu", precision="f32"))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        heads: Option<usize>,
        act: Option<&str>,
        device: &str,
        precision: &str,
    ) -> PyResult<Self> {
        let act = match act {
            Some(a) => Some(a.parse::<Act>().map_err(|e| invalid(py, e))?),
            None => None,
        };
        let device = choice::<ExecutorKind>(py, "device", device)?;
        let precision = choice::<Precision>(py, "precision", precision)?;
        let ov = Overrides {
            heads,
            act,
            ..Overrides::default()
        };
        let inner = py
            .detach(|| Model::load(&path, ov))
            .map_err(|e| py_err(py, e))?;
        Ok(PyModel {
            inner,
            path,
            device,
            precision,
            _files: None,
        })
    }

    /// Width, layers, heads, act, ln_eps, patch, image size, embedding
    /// width and classes, and where each setting the shapes cannot tell
    /// came from (`settings`).
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = &self.inner.spec;
        let v = serde_json::json!({
            "width": s.width,
            "layers": s.layers,
            "heads": s.heads,
            "act": s.act.to_string(),
            "ln_eps": s.ln_eps,
            "patch": s.patch,
            "image_size": s.image_size,
            "embed_dim": s.embed_dim,
            "classes": s.classes,
            "settings": self.inner.settings_record(),
        });
        to_python(py, &v)
    }

    /// What the loader noted: assumptions, flags the file overrode.
    #[getter]
    fn notes(&self) -> Vec<String> {
        self.inner.notes.clone()
    }

    /// The path the model was read from.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// `pixel_values` `[N,3,S,S]` (float32, or anything numpy views as it)
    /// through the model: `{"image_embeds": [N,D], "logits": [N,C]}` (no
    /// `logits` without a head).
    #[pyo3(signature = (pixel_values, *, batch_size=64))]
    fn forward<'py>(
        &self,
        py: Python<'py>,
        pixel_values: &Bound<'py, PyAny>,
        batch_size: usize,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (data, shape) = f32_array(pixel_values)?;
        let n = self.check_images(py, &shape)?;
        let (m, device, precision) = (&self.inner, self.device, self.precision);
        let out = py
            .detach(move || -> dawin::error::Result<_> {
                let ex = exec::open(device)?;
                let placed = PlacedModel::upload_as(ex.as_ref(), m, precision)?;
                forward_batched(ex.as_ref(), &placed, &data, n, batch_size.max(1), |_| {})
            })
            .map_err(|e| py_err(py, e))?;
        let d = PyDict::new(py);
        let embed = self.inner.spec.embed_dim;
        d.set_item("image_embeds", ndarray(py, out.embeds, &[n, embed])?)?;
        if let (Some(l), Some(c)) = (out.logits, self.inner.spec.classes) {
            d.set_item("logits", ndarray(py, l, &[n, c])?)?;
        }
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let s = &self.inner.spec;
        format!(
            "dawin.Model({:?}: width {}, {} layers, {} heads, {} classes)",
            self.path.display().to_string(),
            s.width,
            s.layers,
            s.heads,
            s.classes.map_or("no".to_string(), |c| c.to_string())
        )
    }
}

impl PyModel {
    /// The image count of a `[N,3,S,S]` batch this model reads, or an error.
    fn check_images(&self, py: Python<'_>, shape: &[usize]) -> PyResult<usize> {
        let s = &self.inner.spec;
        match shape {
            [n, c, h, w] if *c == s.channels && *h == s.image_size && *w == s.image_size => Ok(*n),
            _ => Err(invalid(
                py,
                format!(
                    "pixel_values has shape {shape:?}, but {} reads [N, {}, {}, {}]",
                    self.path.display(),
                    s.channels,
                    s.image_size,
                    s.image_size
                ),
            )),
        }
    }
}

/// Two `[N,C]` logit arrays of one shape, as (pt, ft, n, c).
type LogitPair = (Vec<f32>, Vec<f32>, usize, usize);

fn logit_pair(py: Python<'_>, a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<LogitPair> {
    let ((pt, sa), (ft, sb)) = (f32_array(a)?, f32_array(b)?);
    match (sa.as_slice(), sb.as_slice()) {
        ([n, c], [m, k]) if n == m && c == k && *c > 0 => Ok((pt, ft, *n, *c)),
        _ => Err(invalid(
            py,
            format!("logits_pt {sa:?} and logits_ft {sb:?} must both be [N, C], C ≥ 1"),
        )),
    }
}

/// λ per sample from both models' logits by any of eval's rules (the
/// pseudo-*-merged ones need the merged model's logits: use `evaluate`).
#[pyfunction]
#[pyo3(signature = (logits_pt, logits_ft, rule="entropy", temperature=(1.0, 1.0), labels=None, seed=1, t3_gamma=0.5, t3_range=(0.0, 1.0)))]
#[allow(clippy::too_many_arguments)]
fn lambdas<'py>(
    py: Python<'py>,
    logits_pt: &Bound<'py, PyAny>,
    logits_ft: &Bound<'py, PyAny>,
    rule: &str,
    temperature: (f32, f32),
    labels: Option<Vec<i64>>,
    seed: u64,
    t3_gamma: f64,
    t3_range: (f64, f64),
) -> PyResult<Bound<'py, PyAny>> {
    let rule = choice::<LambdaRule>(py, "rule", rule)?;
    let t3 = T3Shape::new(t3_gamma, t3_range.0, t3_range.1).map_err(|e| py_err(py, e))?;
    if rule.needs_merged() {
        return Err(invalid(
            py,
            format!(
                "rule {} reads the weight-averaged model's logits: run it through dawin.evaluate",
                rule.name()
            ),
        ));
    }
    let (pt, ft, n, c) = logit_pair(py, logits_pt, logits_ft)?;
    let labels = match labels {
        Some(l) if l.len() == n => l,
        Some(l) => {
            return Err(invalid(
                py,
                format!("labels has {} entries for {n} samples", l.len()),
            ));
        }
        None if rule.uses_labels() => {
            return Err(invalid(
                py,
                format!("rule {} reads the labels: pass labels=", rule.name()),
            ));
        }
        None => vec![-1; n],
    };
    let out = py
        .detach(|| -> dawin::error::Result<Vec<f32>> {
            let ex = exec::open(ExecutorKind::Cpu)?;
            let ent = Entropies {
                pt: entropies(ex.as_ref(), &pt, c, temperature.0)?.0,
                ft: entropies(ex.as_ref(), &ft, c, temperature.1)?.0,
            };
            let max = |z: &[f32]| -> Vec<f32> {
                z.chunks(c)
                    .map(|r| r.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)))
                    .collect()
            };
            let (max_pt, max_ft) = (max(&pt), max(&ft));
            let indices: Vec<usize> = (0..n).collect();
            let inputs = Inputs {
                logits_pt: &pt,
                logits_ft: &ft,
                classes: c,
                labels: &labels,
                entropies: &ent,
                offset: lambda::offset_constants(&ent),
                temperature,
                raw_max: Some((&max_pt, &max_ft)),
                merged: None,
                indices: &indices,
                seed,
                t3,
            };
            Ok(lambda::lambdas(rule, &inputs))
        })
        .map_err(|e| py_err(py, e))?;
    ndarray(py, out, &[n])
}

/// Each sample through its own merged model `(1−λ)·θ_pt + λ·θ_ft`,
/// exactly, on the dual-weight ops (no merged weights built): `[N,C]`
/// logits.
#[pyfunction]
#[pyo3(signature = (pretrained, finetuned, pixel_values, lambdas, *, batch_size=64))]
fn interpolated_forward<'py>(
    py: Python<'py>,
    pretrained: PyRef<'py, PyModel>,
    finetuned: PyRef<'py, PyModel>,
    pixel_values: &Bound<'py, PyAny>,
    lambdas: &Bound<'py, PyAny>,
    batch_size: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let diffs = pretrained.inner.shape_differences(&finetuned.inner);
    if !diffs.is_empty() {
        return Err(invalid(
            py,
            format!("the models are not one architecture: {}", diffs.join("; ")),
        ));
    }
    let classes = pretrained.inner.spec.classes.ok_or_else(|| {
        invalid(
            py,
            format!("{} has no classification head", pretrained.path.display()),
        )
    })?;
    let (data, shape) = f32_array(pixel_values)?;
    let n = pretrained.check_images(py, &shape)?;
    let (lam, lshape) = f32_array(lambdas)?;
    if lshape != [n] {
        return Err(invalid(
            py,
            format!("lambdas has shape {lshape:?}, expected [{n}]"),
        ));
    }
    let (a, b, device, precision) = (
        &pretrained.inner,
        &finetuned.inner,
        pretrained.device,
        pretrained.precision,
    );
    let per_image = data.len() / n.max(1);
    let logits = py
        .detach(move || -> dawin::error::Result<Vec<f32>> {
            let ex = exec::open(device)?;
            let engine = Engine::new(ex.as_ref(), a, b, precision)?;
            let mut out = Vec::with_capacity(n * classes);
            for start in (0..n).step_by(batch_size.max(1)) {
                let k = batch_size.max(1).min(n - start);
                let px = &data[start * per_image..(start + k) * per_image];
                out.extend(engine.dual_logits(px, k, &lam[start..start + k])?);
            }
            Ok(out)
        })
        .map_err(|e| py_err(py, e))?;
    ndarray(py, logits, &[n, classes])
}

/// OpenAI CLIP's token ids of each text: `[N, context]` int32, start and
/// end tokens included, zero-padded, cut to fit.
#[pyfunction]
#[pyo3(signature = (texts, context=77))]
fn tokenize<'py>(
    py: Python<'py>,
    texts: Vec<String>,
    context: usize,
) -> PyResult<Bound<'py, PyAny>> {
    if context < 2 {
        return Err(invalid(
            py,
            "context must hold at least the start and end tokens (2)".into(),
        ));
    }
    let ids: Vec<i32> = texts
        .iter()
        .flat_map(|t| dawin::tokenizer::tokenize(t, context))
        .collect();
    ndarray(py, ids, &[texts.len(), context])
}

/// The zero-shot classifier of a CLIP checkpoint with its text tower: a
/// head from `classes` (a list of names, a class file, an image folder, or
/// a shipped list such as `imagenet`) and `templates` (a list with `{}`, a
/// file, or `openai-imagenet` / `simple`).
#[pyfunction]
#[pyo3(signature = (model, classes, templates=None, *, device="cpu"))]
fn zeroshot(
    py: Python<'_>,
    model: PathBuf,
    classes: &Bound<'_, PyAny>,
    templates: Option<&Bound<'_, PyAny>>,
    device: &str,
) -> PyResult<PyModel> {
    let dir = tempfile::tempdir().map_err(|e| invalid(py, e.to_string()))?;
    let as_path = |obj: &Bound<'_, PyAny>, name: &str| -> PyResult<PathBuf> {
        if let Ok(list) = obj.cast::<PyList>() {
            let lines: Vec<String> = list.extract()?;
            let p = dir.path().join(name);
            std::fs::write(&p, lines.join("\n") + "\n").map_err(|e| invalid(py, e.to_string()))?;
            return Ok(p);
        }
        obj.extract::<PathBuf>()
    };
    let classes = as_path(classes, "classes.txt")?;
    let templates = match templates {
        Some(t) => as_path(t, "templates.txt")?,
        None => PathBuf::from("openai-imagenet"),
    };
    let device = choice::<ExecutorKind>(py, "device", device)?;
    let out = dir.path().join("zeroshot.safetensors");
    let o = dawin::pipelines::zeroshot::ZeroShotOptions {
        model,
        classes,
        templates,
        out: out.clone(),
        overrides: Overrides::default(),
        text_heads: None,
        scale: None,
        batch: 256,
        progress: false,
    };
    let inner = py
        .detach(|| -> dawin::error::Result<Model> {
            let ex = exec::open(device)?;
            dawin::pipelines::zeroshot::run(&o, ex.as_ref())?;
            Model::load(&out, Overrides::default())
        })
        .map_err(|e| py_err(py, e))?;
    Ok(PyModel {
        inner,
        path: out,
        device,
        precision: Precision::F32,
        _files: Some(dir),
    })
}

#[pymodule]
fn _dawin(m: &Bound<'_, PyModule>) -> PyResult<()> {
    dawin::reporter::install(std::sync::Arc::new(report::PyReporter));
    m.add_class::<PyModel>()?;
    m.add_function(wrap_pyfunction!(lambdas, m)?)?;
    m.add_function(wrap_pyfunction!(interpolated_forward, m)?)?;
    m.add_function(wrap_pyfunction!(tokenize, m)?)?;
    m.add_function(wrap_pyfunction!(zeroshot, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate::evaluate, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
