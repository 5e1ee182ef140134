//! How DaWin's per-sample models are evaluated (`--interp`), and the DaWin
//! pass that runs them.

use crate::choice::{Choice, Named};
use crate::data::dataset::{Batch, Dataset};
use crate::error::Result;
use crate::method::engine::Engine;
use crate::model::batch::Lookahead;
use crate::reporter;
use std::collections::HashMap;

/// How each sample's own merged model is evaluated (DaWin's `--interp`
/// exact/materialize, multi-task DaWin's `--per-sample`).
/// Each value's meaning is its help in [`PerSample::ALL`](crate::choice::Choice::ALL).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PerSample {
    #[default]
    Exact,
    Materialize,
}

impl Choice for PerSample {
    const ALL: &'static [Named<Self>] = &[
        Named::new(
            PerSample::Exact,
            "exact",
            "Batched: the stacked ops merge per row, no model is built",
        ),
        Named::new(
            PerSample::Materialize,
            "materialize",
            "Each sample's model built in a working buffer, run at batch 1 (the official code's way; for checking exact)",
        ),
    ];
}

crate::display_choice!(PerSample);

/// How DaWin's per-sample models are evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interp {
    /// Each sample's own merged model: `exact`, one batched pass through
    /// the dual-weight ops with no merged weights built, or `materialize`,
    /// one working weight buffer lerped in place per sample (in λ order,
    /// skipping repeats), then a batch-1 forward.
    PerSample(PerSample),
    /// K merged models from a Beta mixture fitted to λ.
    Bmm(usize),
    /// The same with K ∈ 1..=8 chosen by the lowest BIC.
    BmmAuto,
    /// One merged model per batch of B consecutive evaluated samples (in
    /// the data's order), at the mean of their λs: T³_B's batch-wise
    /// merging, with any λ rule; between exact and bmm in cost.
    Batchwise(usize),
}

/// The largest K `bmm:auto` tries.
pub const BMM_AUTO_MAX_K: usize = 8;

impl std::str::FromStr for Interp {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if let Some(p) = PerSample::from_name(s) {
            return Ok(Interp::PerSample(p));
        }
        let count = |prefix: &str| match s.strip_prefix(prefix).map(|k| k.parse::<usize>()) {
            Some(Ok(k)) if k >= 1 => Some(k),
            _ => None,
        };
        match s {
            "bmm" => Ok(Interp::Bmm(3)),
            "bmm:auto" => Ok(Interp::BmmAuto),
            _ => match (count("bmm:"), count("batchwise:")) {
                (Some(k), _) => Ok(Interp::Bmm(k)),
                (_, Some(b)) => Ok(Interp::Batchwise(b)),
                _ => Err(format!(
                    "unknown interpolation `{s}` (exact, materialize, bmm, bmm:K with K ≥ 1, bmm:auto, or batchwise:B with B ≥ 1)"
                )),
            },
        }
    }
}

impl std::fmt::Display for Interp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Interp::PerSample(p) => write!(f, "{p}"),
            Interp::Bmm(k) => write!(f, "bmm:{k}"),
            Interp::BmmAuto => f.write_str("bmm:auto"),
            Interp::Batchwise(b) => write!(f, "batchwise:{b}"),
        }
    }
}

/// How a pass over the data runs.
#[derive(Clone, Debug)]
pub struct Pass {
    pub batch_size: usize,
    pub progress: bool,
    /// What the bars say before the phase (`colour: ` in the demo).
    pub label: String,
}

/// Each sample's Beta-mixture component and the components' mean λ.
#[derive(Clone, Copy)]
pub struct Groups<'a> {
    pub component: &'a [usize],
    pub means: &'a [f32],
}

/// Raw (unprojected) logits of the samples at `indices` (dataset order),
/// from each model of DaWin's per-sample interpolation under `interp`.
/// `lambda[j]` belongs to `indices[j]`; `groups` is needed for `Bmm`.
pub fn dawin_logits(
    engine: &mut Engine,
    data: &Dataset,
    indices: &[usize],
    lambda: &[f32],
    interp: Interp,
    groups: Option<Groups>,
    pass: Pass,
) -> Result<Vec<f32>> {
    let c = engine.classes();
    let mut out = vec![0f32; indices.len() * c];
    let pos: HashMap<usize, usize> = indices.iter().enumerate().map(|(j, &i)| (i, j)).collect();
    let pb = reporter::progress(
        indices.len(),
        &format!("{}dawin", pass.label),
        pass.progress,
    );
    let mut place = |b: &Batch, logits: &[f32]| {
        for (k, i) in b.indices.iter().enumerate() {
            let j = pos[i];
            out[j * c..(j + 1) * c].copy_from_slice(&logits[k * c..(k + 1) * c]);
        }
        pb.inc(b.indices.len() as u64);
    };
    // Runs `f` on every batch of `members` and places its logits; `f` may
    // stage the next batch's images during its forward.
    let mut each = |members: &[usize], batch: usize, f: &mut BatchForward| {
        data.for_each_batch_ahead(members, batch, |b, upcoming| {
            lost_on_second_pass(data, &b)?;
            let logits = f(&b, upcoming)?;
            place(&b, &logits);
            Ok(())
        })
    };
    match interp {
        Interp::PerSample(PerSample::Exact) => each(indices, pass.batch_size, &mut |b, next| {
            let l: Vec<f32> = b.indices.iter().map(|i| lambda[pos[i]]).collect();
            engine.dual_logits_ahead(b.images(), &l, Some(next))
        })?,
        Interp::PerSample(PerSample::Materialize) => {
            // λ order makes equal λs adjacent, so their lerps are skipped.
            let mut order: Vec<usize> = (0..indices.len()).collect();
            order.sort_by(|&a, &b| lambda[a].total_cmp(&lambda[b]));
            let ordered: Vec<usize> = order.iter().map(|&j| indices[j]).collect();
            each(&ordered, 1, &mut |b, next| {
                engine.set_merged(lambda[pos[&b.indices[0]]])?;
                engine.merged_logits_ahead(b.images(), Some(next))
            })?
        }
        Interp::Batchwise(size) => {
            for (group, members) in indices.chunks(size).enumerate() {
                let start = group * size;
                let lam = &lambda[start..start + members.len()];
                let mean = lam.iter().map(|&v| v as f64).sum::<f64>() / lam.len() as f64;
                engine.set_merged(mean as f32)?;
                each(members, pass.batch_size, &mut |b, next| {
                    engine.merged_logits_ahead(b.images(), Some(next))
                })?;
            }
        }
        Interp::Bmm(_) | Interp::BmmAuto => {
            let g = groups.ok_or_else(|| crate::invalid!("bmm needs the mixture's groups"))?;
            for (k, &mean) in g.means.iter().enumerate() {
                let members: Vec<usize> = (0..indices.len())
                    .filter(|&j| g.component[j] == k)
                    .map(|j| indices[j])
                    .collect();
                if members.is_empty() {
                    continue;
                }
                engine.set_merged(mean)?;
                each(&members, pass.batch_size, &mut |b, next| {
                    engine.merged_logits_ahead(b.images(), Some(next))
                })?;
            }
        }
    }
    pb.finish();
    Ok(out)
}

/// One batch's forward, given the batches still to come.
type BatchForward<'f> = dyn FnMut(&Batch, &mut dyn Lookahead) -> Result<Vec<f32>> + 'f;

/// A sample read in the expertise pass that fails now cannot be skipped
/// quietly: its row would be missing from every method.
fn lost_on_second_pass(data: &Dataset, b: &Batch) -> Result<()> {
    match b.failed.first() {
        Some((i, e)) => Err(crate::invalid!(
            "{} could not be read on a second pass: {e}",
            data.describe(*i)
        )),
        None => Ok(()),
    }
}
