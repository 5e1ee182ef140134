//! An eval's results as the report files are written from them: every
//! method's predictions, the λs and entropies, the mixture, timings and
//! diagnostics.

use crate::method::bmm::BetaMixture;
use crate::method::lambda::Entropies;
use crate::method::stats::Scores;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

pub struct Report<'a> {
    pub out_dir: &'a Path,
    /// Method names in the order asked for.
    pub order: &'a [String],
    pub predictions: &'a BTreeMap<String, Vec<usize>>,
    pub labels: &'a [i64],
    pub indices: &'a [usize],
    pub entropies: &'a Entropies,
    pub lambda: &'a [f32],
    pub components: Option<&'a [usize]>,
    /// Each sample's file, for image folders.
    pub paths: Option<&'a [String]>,
    pub bmm: Option<&'a BetaMixture>,
    pub skipped: usize,
    pub device: &'a str,
    pub seconds: &'a mut BTreeMap<String, f64>,
    pub extra: Value,
    pub t0: Instant,
    /// The λ plots' titles.
    pub titles: &'a crate::report::plot::LambdaTitles,
    /// The calibration scores of the methods computed in this run (those
    /// carried over from an earlier samples.csv have predictions only).
    pub scores: &'a BTreeMap<String, Scores>,
    /// Bootstrap resamples and seed of `ci95`.
    pub bootstrap: (usize, u64),
    /// The oracle λ (the λ rule on each model's loss against the label),
    /// which the λ diagnostics and `lambda_oracle.svg` compare DaWin's with.
    pub oracle_lambda: Option<&'a [f32]>,
    /// Whether the pretrained and the fine-tuned model were right on each
    /// sample: how well each model's entropy ranks its own errors.
    pub model_correct: (&'a [bool], &'a [bool]),
}
