//! The SVG plots dawin writes: the λ histogram of an eval (`lambdas.svg`)
//! and the WiSE-FT curve (`plot-wise`). Axes are fitted to the data with
//! round ticks, never past what a quantity can be; every text is escaped.

use crate::method::bmm::BetaMixture;
use std::fmt::Write as _;
use std::path::Path;

/// Text for an SVG text node or attribute.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if (c as u32) < 0x20 && c != '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// Round axis ticks covering [lo, hi] with about `n` intervals, the range
/// kept inside [min, max]: (axis lo, axis hi, step).
pub fn nice_axis(lo: f64, hi: f64, n: usize, min: f64, max: f64) -> (f64, f64, f64) {
    let (lo, hi) = if hi - lo < 1e-9 {
        (
            lo - 0.05 * lo.abs().max(1e-3),
            hi + 0.05 * hi.abs().max(1e-3),
        )
    } else {
        (lo, hi)
    };
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let a = ((lo / step).floor() * step).max(min);
    let b = ((hi / step).ceil() * step).min(max);
    (a, b, step)
}

/// The tick values of an axis from [`nice_axis`].
fn ticks(a: f64, b: f64, step: f64) -> Vec<f64> {
    let first = (a / step).ceil() as i64;
    let last = (b / step + 1e-9).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// A tick label with as many decimals as the step needs.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = (-step.log10().floor()).max(0.0) as usize
        + usize::from((step / 10f64.powf(step.log10().floor()) - 2.5).abs() < 1e-9);
    format!("{v:.decimals$}")
}

struct Frame {
    w: f64,
    h: f64,
    ml: f64,
    mt: f64,
    pw: f64,
    ph: f64,
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn px(&self, v: f64) -> f64 {
        self.ml + (v - self.x.0) / (self.x.1 - self.x.0) * self.pw
    }
    fn py(&self, v: f64) -> f64 {
        let t = ((v - self.y.0) / (self.y.1 - self.y.0)).clamp(0.0, 1.0);
        self.mt + self.ph - t * self.ph
    }

    fn open(&self, s: &mut String, title: &str, subtitle: &str) {
        let (w, h) = (self.w, self.h);
        writeln!(s, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="DejaVu Sans, sans-serif" font-size="12">"#).unwrap();
        writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#).unwrap();
        writeln!(
            s,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
            w / 2.0,
            esc(title)
        )
        .unwrap();
        writeln!(
            s,
            r##"<text x="{}" y="40" text-anchor="middle" font-size="11" fill="#555">{}</text>"##,
            w / 2.0,
            esc(subtitle)
        )
        .unwrap();
    }

    /// Axes, round ticks with grid lines, and axis titles.
    fn axes(
        &self,
        s: &mut String,
        xs: (f64, f64, f64),
        ys: (f64, f64, f64),
        scale: f64,
        xl: &str,
        yl: &str,
    ) {
        let (ml, mt, pw, ph) = (self.ml, self.mt, self.pw, self.ph);
        for v in ticks(xs.0, xs.1, xs.2) {
            let x = self.px(v);
            writeln!(s, r##"<line x1="{x:.2}" x2="{x:.2}" y1="{mt}" y2="{}" stroke="#eee"/><text x="{x:.2}" y="{}" text-anchor="middle">{}</text>"##, mt + ph, mt + ph + 16.0, tick_label(v * scale, xs.2 * scale)).unwrap();
        }
        for v in ticks(ys.0, ys.1, ys.2) {
            let y = self.py(v);
            writeln!(s, r##"<line x1="{ml}" x2="{}" y1="{y:.2}" y2="{y:.2}" stroke="#eee"/><text x="{}" y="{:.2}" text-anchor="end">{}</text>"##, ml + pw, ml - 6.0, y + 4.0, tick_label(v * scale, ys.2 * scale)).unwrap();
        }
        writeln!(s, r#"<line x1="{ml}" y1="{0}" x2="{1}" y2="{0}" stroke="black"/><line x1="{ml}" y1="{mt}" x2="{ml}" y2="{0}" stroke="black"/>"#, mt + ph, ml + pw).unwrap();
        writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            ml + pw / 2.0,
            self.h - 12.0,
            esc(xl)
        )
        .unwrap();
        let lx = (ml - 42.0).max(18.0);
        writeln!(s, r#"<text x="{lx}" y="{0}" transform="rotate(-90 {lx} {0})" text-anchor="middle">{1}</text>"#, mt + ph / 2.0, esc(yl)).unwrap();
    }
}

/// The titles of a run's λ plots: the set, the λ rule and the
/// interpolation; the subtitle names the models and, for a mixture, its K.
pub struct LambdaTitles {
    /// `lambdas.svg`'s.
    pub histogram: String,
    /// `lambda_oracle.svg`'s.
    pub oracle: String,
    /// What follows `n = N` under each title, starting `, `.
    pub subtitle: String,
}

pub fn lambda_titles(
    set: &str,
    rule: &str,
    interp: &str,
    models: (&Path, &Path),
    k: Option<usize>,
) -> LambdaTitles {
    let name = |p: &Path| {
        p.file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string()
    };
    let k = k.map_or(String::new(), |k| format!(", K = {k}"));
    LambdaTitles {
        histogram: format!("DaWin λ per sample: {set} ({rule}, {interp})"),
        oracle: format!("DaWin λ against the oracle λ: {set} ({rule})"),
        subtitle: format!(
            ", pretrained {}, fine-tuned {}{k}",
            name(models.0),
            name(models.1)
        ),
    }
}

/// A λ histogram (density scale) over the range the λs span, with the
/// fitted mixture density and the component means (sorted by mean).
pub fn histogram_svg(
    lambda: &[f32],
    bmm: Option<&BetaMixture>,
    title: &str,
    subtitle: &str,
) -> String {
    const BINS: usize = 40;
    let finite: Vec<f64> = lambda
        .iter()
        .map(|&v| v as f64)
        .filter(|v| v.is_finite())
        .collect();
    let lo = finite.iter().cloned().fold(1.0, f64::min).clamp(0.0, 1.0);
    let hi = finite.iter().cloned().fold(0.0, f64::max).clamp(0.0, 1.0);
    let (lo, hi) = if finite.is_empty() {
        (0.0, 1.0)
    } else {
        (lo.min(hi), hi.max(lo))
    };
    let xs = nice_axis(lo, hi, 8, 0.0, 1.0);
    let bw = (xs.1 - xs.0) / BINS as f64;
    let mut counts = [0usize; BINS];
    for v in &finite {
        counts[(((v - xs.0) / bw) as usize).min(BINS - 1)] += 1;
    }
    let n = finite.len().max(1) as f64;
    let dens: Vec<f64> = counts.iter().map(|&c| c as f64 / n / bw).collect();
    let curve: Vec<(f64, f64)> = bmm
        .map(|b| {
            (0..=400)
                .map(|i| xs.0 + (xs.1 - xs.0) * i as f64 / 400.0)
                .map(|x| (x, b.pdf(x)))
                .collect()
        })
        .unwrap_or_default();
    let top = dens.iter().cloned().fold(1e-9, f64::max);
    // The curve may peak far above the bars (a narrow component): show it
    // up to twice the tallest bar, clipped there.
    let cmax = curve.iter().map(|p| p.1).fold(0.0, f64::max).min(2.0 * top);
    let ys = nice_axis(0.0, top.max(cmax) * 1.05, 5, 0.0, f64::INFINITY);
    // The mixture's legend sits between the subtitle and the plot, where
    // no bar, curve or component line can cross it.
    let legend_h = bmm.map_or(0.0, |b| 15.0 * (b.weights.len() + 1) as f64 + 6.0);
    let f = Frame {
        w: 720.0,
        h: 420.0 + legend_h,
        ml: 60.0,
        mt: 56.0 + legend_h,
        pw: 640.0,
        ph: 304.0,
        x: (xs.0, xs.1),
        y: (ys.0, ys.1),
    };
    let mut s = String::new();
    let sub = format!("n = {}{subtitle}", lambda.len());
    f.open(&mut s, title, &sub);
    f.axes(
        &mut s,
        xs,
        ys,
        1.0,
        "λ (weight on the fine-tuned model)",
        "density",
    );
    for (i, d) in dens.iter().enumerate() {
        let x0 = f.px(xs.0 + i as f64 * bw);
        let y = f.py(*d);
        writeln!(s, r##"<rect x="{x0:.2}" y="{y:.2}" width="{:.2}" height="{:.2}" fill="#9ecae1" stroke="#4a90c2" stroke-width="0.5"/>"##, f.pw / BINS as f64, f.mt + f.ph - y).unwrap();
    }
    if let Some(b) = bmm {
        let pts: Vec<String> = curve
            .iter()
            .map(|(a, v)| format!("{:.2},{:.2}", f.px(*a), f.py(*v)))
            .collect();
        writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#d62728" stroke-width="2"/>"##,
            pts.join(" ")
        )
        .unwrap();
        let mut order: Vec<usize> = (0..b.weights.len()).collect();
        let means = b.means();
        order.sort_by(|&i, &j| means[i].total_cmp(&means[j]));
        let (lx, ly) = (f.ml + 10.0, f.mt - legend_h + 4.0);
        writeln!(s, r##"<line x1="{lx}" x2="{}" y1="{}" y2="{1}" stroke="#d62728" stroke-width="2"/><text x="{}" y="{}">Beta mixture density (K = {})</text>"##, lx + 20.0, ly + 6.0, lx + 26.0, ly + 10.0, order.len()).unwrap();
        for (rank, &k) in order.iter().enumerate() {
            let (m, wt) = (means[k], b.weights[k]);
            writeln!(s, r##"<line x1="{0:.2}" x2="{0:.2}" y1="{1}" y2="{2}" stroke="#2ca02c" stroke-dasharray="5,3" stroke-width="1.5"/>"##, f.px(m), f.mt, f.mt + f.ph).unwrap();
            let y = ly + 25.0 + 15.0 * rank as f64;
            writeln!(s, r##"<line x1="{lx}" x2="{}" y1="{}" y2="{1}" stroke="#2ca02c" stroke-dasharray="5,3" stroke-width="1.5"/><text x="{}" y="{y}" fill="#2ca02c">component {rank}: mean λ {m:.3}, weight {wt:.2}</text>"##, lx + 20.0, y - 4.0, lx + 26.0).unwrap();
        }
    }
    s.push_str("</svg>\n");
    s
}

/// DaWin's λ against the oracle λ of the same samples, one dot each (at
/// most 4000 drawn, evenly spaced in sample order; larger and darker the
/// fewer there are), with the diagonal and Pearson's r (`corr_oracle`).
pub fn lambda_scatter_svg(lambda: &[f32], oracle: &[f32], title: &str, subtitle: &str) -> String {
    // Wide enough for the subtitle's file names; the square plot centred.
    let f = Frame {
        w: 660.0,
        h: 540.0,
        ml: 130.0,
        mt: 76.0,
        pw: 440.0,
        ph: 404.0,
        x: (0.0, 1.0),
        y: (0.0, 1.0),
    };
    let mut s = String::new();
    let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    let r = crate::method::stats::pearson(&wide(lambda), &wide(oracle));
    f.open(&mut s, title, &format!("n = {}{subtitle}", lambda.len()));
    writeln!(
        s,
        r#"<text x="{}" y="60" text-anchor="middle" font-size="12">Pearson r = {r:.3} (corr_oracle: how closely λ rises and falls with the oracle λ)</text>"#,
        f.w / 2.0
    )
    .unwrap();
    let unit = (0.0, 1.0, 0.2);
    f.axes(
        &mut s,
        unit,
        unit,
        1.0,
        "oracle λ (from the labels)",
        "DaWin λ",
    );
    writeln!(
        s,
        r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#999" stroke-dasharray="4,3"/>"##,
        f.px(0.0),
        f.py(0.0),
        f.px(1.0),
        f.py(1.0)
    )
    .unwrap();
    let step = lambda.len().div_ceil(4000).max(1);
    let (radius, opacity) = match lambda.len() {
        0..=100 => (4.0, 0.8),
        101..=1000 => (2.8, 0.6),
        _ => (1.6, 0.45),
    };
    for (l, o) in lambda.iter().zip(oracle).step_by(step) {
        if l.is_finite() && o.is_finite() {
            let (x, y) = (f.px(*o as f64), f.py(*l as f64));
            writeln!(
                s,
                r##"<circle cx="{x:.1}" cy="{y:.1}" r="{radius}" fill="#1f77b4" fill-opacity="{opacity}"/>"##
            )
            .unwrap();
        }
    }
    s.push_str("</svg>\n");
    s
}

/// Label boxes placed so far (x0, y0, x1, y1), for moving labels apart.
fn overlaps(b: (f64, f64, f64, f64), placed: &[(f64, f64, f64, f64)]) -> bool {
    placed
        .iter()
        .any(|p| b.0 < p.2 && p.0 < b.2 && b.1 < p.3 && p.1 < b.3)
}

/// One point of the WiSE-FT plot: (x, y) accuracies in [0, 1].
pub type Point = (f64, f64);

/// The WiSE-FT curve: accuracy in distribution against the mean under
/// shift, one point per α (0 zero-shot … 1 fine-tuned), with the other
/// methods marked.
pub fn wise_curve_svg(
    curve: &[(f64, Point)],
    others: &[(&str, &str, Point)],
    title: &str,
    subtitle: &str,
) -> String {
    let all: Vec<Point> = curve
        .iter()
        .map(|c| c.1)
        .chain(others.iter().map(|o| o.2))
        .collect();
    let lo = |g: fn(&Point) -> f64| all.iter().map(g).fold(f64::INFINITY, f64::min);
    let hi = |g: fn(&Point) -> f64| all.iter().map(g).fold(f64::NEG_INFINITY, f64::max);
    let pad = |a: f64, b: f64| ((a - (b - a) * 0.08).max(0.0), (b + (b - a) * 0.08).min(1.0));
    let (xa, xb) = pad(lo(|p| p.0), hi(|p| p.0));
    let (ya, yb) = pad(lo(|p| p.1), hi(|p| p.1));
    let xs = nice_axis(xa, xb, 6, 0.0, 1.0);
    let ys = nice_axis(ya, yb, 6, 0.0, 1.0);
    // The legend goes right of the plot, where it can hide no marker.
    let f = Frame {
        w: 660.0 + LEGEND_W,
        h: 480.0,
        ml: 70.0,
        mt: 56.0,
        pw: 560.0,
        ph: 364.0,
        x: (xs.0, xs.1),
        y: (ys.0, ys.1),
    };
    let mut s = String::new();
    f.open(&mut s, title, subtitle);
    f.axes(
        &mut s,
        xs,
        ys,
        100.0,
        "accuracy in distribution (%)",
        "mean accuracy under shift (%)",
    );
    let pts: Vec<String> = curve
        .iter()
        .map(|(_, p)| format!("{:.2},{:.2}", f.px(p.0), f.py(p.1)))
        .collect();
    writeln!(
        s,
        r##"<polyline points="{}" fill="none" stroke="#1f77b4" stroke-width="2"/>"##,
        pts.join(" ")
    )
    .unwrap();
    // Markers first, then labels placed where they hit no marker or label.
    let mut placed: Vec<(f64, f64, f64, f64)> = all
        .iter()
        .map(|p| {
            (
                f.px(p.0) - 5.0,
                f.py(p.1) - 5.0,
                f.px(p.0) + 5.0,
                f.py(p.1) + 5.0,
            )
        })
        .collect();
    for (_, p) in curve {
        writeln!(
            s,
            r##"<circle cx="{:.2}" cy="{:.2}" r="3.5" fill="#1f77b4"/>"##,
            f.px(p.0),
            f.py(p.1)
        )
        .unwrap();
    }
    for (a, p) in curve {
        let text = format!("α={a}");
        let tw = 6.5 * text.chars().count() as f64;
        let (cx, cy) = (f.px(p.0), f.py(p.1));
        let spots = [
            (6.0, -6.0),
            (6.0, 14.0),
            (-6.0 - tw, -6.0),
            (-6.0 - tw, 14.0),
            (-tw / 2.0, -10.0),
            (-tw / 2.0, 20.0),
        ];
        if let Some((dx, dy)) = spots.iter().find(|(dx, dy)| {
            !overlaps(
                (cx + dx, cy + dy - 10.0, cx + dx + tw, cy + dy + 2.0),
                &placed,
            )
        }) {
            placed.push((cx + dx, cy + dy - 10.0, cx + dx + tw, cy + dy + 2.0));
            writeln!(
                s,
                r##"<text x="{:.2}" y="{:.2}" font-size="10" fill="#1f77b4">{}</text>"##,
                cx + dx,
                cy + dy,
                esc(&text)
            )
            .unwrap();
        }
    }
    for (k, (c, _, p)) in others.iter().enumerate() {
        s.push_str(&marker(k, c, f.px(p.0), f.py(p.1)));
    }
    legend(&mut s, &f, others);
    s.push_str("</svg>\n");
    s
}

/// Width of the WiSE-FT plot's legend column.
const LEGEND_W: f64 = 250.0;

/// The k-th other method's marker at (x, y): a filled square, then hollow
/// shapes of growing size, so that methods on one point all stay visible.
fn marker(k: usize, colour: &str, x: f64, y: f64) -> String {
    match k {
        0 => format!(
            r##"<rect x="{:.2}" y="{:.2}" width="9" height="9" fill="{colour}"/>"##,
            x - 4.5,
            y - 4.5
        ),
        1 => format!(
            r##"<circle cx="{x:.2}" cy="{y:.2}" r="8" fill="none" stroke="{colour}" stroke-width="2"/>"##
        ),
        _ => {
            // A hollow diamond, half-diagonal h.
            let h = 7.0 + 4.0 * (k - 2) as f64;
            format!(
                r##"<polygon points="{x:.2},{:.2} {:.2},{y:.2} {x:.2},{:.2} {:.2},{y:.2}" fill="none" stroke="{colour}" stroke-width="1.5"/>"##,
                y - h,
                x + h,
                y + h,
                x - h
            )
        }
    }
}

/// The legend, in its own column right of the plot: each marker as drawn.
fn legend(s: &mut String, f: &Frame, others: &[(&str, &str, Point)]) {
    let (lx, ly) = (f.ml + f.pw + 24.0, f.mt + 8.0);
    for (k, (c, l, _)) in others.iter().enumerate() {
        let y = ly + 22.0 * k as f64;
        s.push_str(&marker(k, c, lx + 8.0, y));
        writeln!(
            s,
            r##"<text x="{}" y="{}">{}</text>"##,
            lx + 24.0,
            y + 4.0,
            esc(l)
        )
        .unwrap();
    }
    let y = ly + 22.0 * others.len() as f64;
    writeln!(s, r##"<circle cx="{}" cy="{y}" r="3.5" fill="#1f77b4"/><text x="{}" y="{}">WiSE-FT (α=0 zero-shot …</text><text x="{1}" y="{}">α=1 fine-tuned)</text>"##, lx + 8.0, lx + 24.0, y + 4.0, y + 18.0).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_round_and_inside_their_limits() {
        let (a, b, s) = nice_axis(0.452, 0.897, 8, 0.0, 1.0);
        assert!(a <= 0.452 && b >= 0.897 && a >= 0.0 && b <= 1.0, "{a} {b}");
        // (0.897-0.452)/8 = 0.056 rounds up to the nice step 0.1.
        assert!((s - 0.1).abs() < 1e-12, "{s}");
        let (a, b, _) = nice_axis(0.615, 1.028, 6, 0.0, 1.0);
        assert!(b <= 1.0 && a <= 0.615);
        let t = ticks(0.0, 4.8, 1.0);
        assert_eq!(t, [0.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(tick_label(0.25, 0.25), "0.25");
        assert_eq!(tick_label(60.0, 5.0), "60");
        assert_eq!(esc("a & <b> \"c\""), "a &amp; &lt;b&gt; &quot;c&quot;");
    }
}
