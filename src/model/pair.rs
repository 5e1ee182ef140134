//! The two models DaWin interpolates share one architecture, so a setting
//! the shapes cannot tell (heads, act, ln_eps) that one file says and the
//! other leaves to a guess is taken from the first; two files that both
//! say it must agree. A fine-tuned `.pt` (no metadata) beside a zero-shot
//! model made from an HF or open_clip folder then runs with the folder's
//! settings, not with guesses.

use super::load::{ASSUMING, assumption_note};
use super::sources::Source;
use super::{Model, Overrides};
use crate::error::Result;
use std::path::Path;

/// Whether a setting was guessed rather than read.
fn guessed(s: &Source) -> bool {
    matches!(s, Source::Assumed | Source::Default)
}

/// Loads both models, each taking from the other what it left to a guess,
/// and says each model's notes (once per process). Whether the two are one
/// architecture is the caller's check (shapes first, then [`check_agree`]).
pub fn load_pair(paths: (&Path, &Path), ov: Overrides) -> Result<(Model, Model)> {
    let a = Model::load(paths.0, ov)?;
    let b = Model::load(paths.1, ov)?;
    let b2 = adopt(&b, &a, paths.0);
    let a2 = adopt(&a, &b, paths.1);
    a2.say_notes(paths.0);
    b2.say_notes(paths.1);
    Ok((a2, b2))
}

/// Two files that both say a setting must say the same.
pub fn check_agree((a, b): (&Model, &Model), paths: (&Path, &Path)) -> Result<()> {
    let (sa, sb) = (&a.sources, &b.sources);
    let rows = [
        (
            "heads",
            &sa.heads,
            &sb.heads,
            a.spec.heads.to_string(),
            b.spec.heads.to_string(),
        ),
        (
            "act",
            &sa.act,
            &sb.act,
            a.spec.act.to_string(),
            b.spec.act.to_string(),
        ),
        (
            "ln_eps",
            &sa.ln_eps,
            &sb.ln_eps,
            a.spec.ln_eps.to_string(),
            b.spec.ln_eps.to_string(),
        ),
    ];
    for (key, src_a, src_b, va, vb) in rows {
        if !guessed(src_a) && !guessed(src_b) && va != vb {
            return Err(crate::invalid!(
                "the models disagree on {key}, so they are not one architecture: {} says {key} = {va} ({}), {} says {vb} ({})",
                paths.0.display(),
                src_a.describe(),
                paths.1.display(),
                src_b.describe()
            ));
        }
    }
    Ok(())
}

/// `m` with the settings it guessed and `from` read taken from `from`.
fn adopt(m: &Model, from: &Model, from_path: &Path) -> Model {
    let mut n = m.clone();
    let name = from_path.file_name().unwrap_or_default().to_string_lossy();
    let paired = Source::Paired(name.to_string());
    let (s, f) = (&mut n.sources, &from.sources);
    if guessed(&s.heads) && !guessed(&f.heads) {
        n.spec.heads = from.spec.heads;
        s.heads = paired.clone();
    }
    if guessed(&s.act) && !guessed(&f.act) {
        n.spec.act = from.spec.act;
        s.act = paired.clone();
    }
    if guessed(&s.ln_eps) && !guessed(&f.ln_eps) {
        n.spec.ln_eps = from.spec.ln_eps;
        s.ln_eps = paired;
    }
    // The warning says only what is still guessed.
    n.notes.retain(|note| !note.starts_with(ASSUMING));
    n.notes
        .extend(assumption_note(n.layout, n.spec.heads, &n.sources));
    n
}
