//! One-dimensional bounded minimisation by golden-section search, for the
//! set-level α that `wise-ft:auto` fits (the α of lowest mean prediction
//! entropy of the merged model).

/// The minimum of `f` found on `[lo, hi]`: its argument, its value, and how
/// many times `f` ran. Golden-section search down to an interval of width
/// `tol`, then the better of that point and the two ends (so a minimum at
/// an end is found too). `f` is assumed unimodal on the interval; where it
/// is not, the result is a local minimum.
pub fn golden_section_min(
    mut f: impl FnMut(f64) -> crate::error::Result<f64>,
    (lo, hi): (f64, f64),
    tol: f64,
) -> crate::error::Result<(f64, f64, usize)> {
    let inv_phi = (5f64.sqrt() - 1.0) / 2.0;
    let (mut a, mut b) = (lo, hi);
    let mut c = b - inv_phi * (b - a);
    let mut d = a + inv_phi * (b - a);
    let (mut fc, mut fd) = (f(c)?, f(d)?);
    let mut evals = 2;
    while b - a > tol {
        if fc <= fd {
            (b, d, fd) = (d, c, fc);
            c = b - inv_phi * (b - a);
            fc = f(c)?;
        } else {
            (a, c, fc) = (c, d, fd);
            d = a + inv_phi * (b - a);
            fd = f(d)?;
        }
        evals += 1;
    }
    let mut best = if fc <= fd { (c, fc) } else { (d, fd) };
    for end in [lo, hi] {
        let v = f(end)?;
        evals += 1;
        if v < best.1 {
            best = (end, v);
        }
    }
    Ok((best.0, best.1, evals))
}

#[cfg(test)]
mod tests {
    use super::golden_section_min;

    #[test]
    fn finds_interior_and_end_minima() {
        let (x, fx, n) =
            golden_section_min(|x| Ok((x - 0.37).powi(2) + 1.0), (0.0, 1.0), 1e-4).unwrap();
        assert!(
            (x - 0.37).abs() < 1e-4 && (fx - 1.0).abs() < 1e-8,
            "{x} {fx}"
        );
        assert!(n < 30, "{n} evaluations");
        // Falling over the whole interval: the minimum is the end.
        let (x, _, _) = golden_section_min(|x| Ok(-x), (0.0, 1.0), 1e-3).unwrap();
        assert_eq!(x, 1.0);
        let (x, _, _) = golden_section_min(Ok, (0.0, 1.0), 1e-3).unwrap();
        assert_eq!(x, 0.0);
    }
}
