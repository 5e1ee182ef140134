//! Every λ rule and baseline of the official scripts against references
//! written here from the formulas (paper and official code), the
//! statistics of summary.json against hand-computed cases, and an eval of
//! the DaWin fixture pair under every rule.

use crate::common::fixtures_dir;
use dawin::choice::Choice;
use dawin::method::interp::{Interp, PerSample};
use dawin::method::lambda::{Entropies, Inputs, LambdaRule, T3Shape, lambdas};
use dawin::method::methods::Method;
use dawin::method::stats;
use dawin::pipelines::eval::{self, EvalOptions};

// ---- references (f64, written out with no dawin code) ----

fn softmax(z: &[f32], t: f64) -> Vec<f64> {
    let m = z.iter().map(|&v| v as f64 / t).fold(f64::MIN, f64::max);
    let e: Vec<f64> = z.iter().map(|&v| (v as f64 / t - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn entropy(z: &[f32], t: f64) -> f64 {
    -softmax(z, t).iter().map(|p| p * p.ln()).sum::<f64>()
}

/// −Σ q log softmax(z) at T = 1.
fn xent(z: &[f32], q: &[f64]) -> f64 {
    let p = softmax(z, 1.0);
    -q.iter().zip(&p).map(|(a, b)| a * b.ln()).sum::<f64>()
}

fn one_hot(y: usize, c: usize) -> Vec<f64> {
    (0..c).map(|i| (i == y) as u8 as f64).collect()
}

fn argmax(v: &[f64]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

/// torch's mean and unbiased std.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (
        m,
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt(),
    )
}

/// The official offset ratio over per-sample measures `lp`, `lf` (lower =
/// more expert), with or without the set-level offset.
fn offset_ratio(lp: &[f64], lf: &[f64], offset: bool) -> Vec<f64> {
    let (b, w) = if offset {
        let ((mp, sp), (mf, sf)) = (mean_std(lp), mean_std(lf));
        ((sp / mp + sf / mf) / 2.0, (mp + mf) / mp)
    } else {
        (0.0, 2.0)
    };
    lp.iter()
        .zip(lf)
        .map(|(p, f)| ((-f).exp() + b / w) / ((-p).exp() + (-f).exp() + b))
        .collect()
}

struct Case {
    pt: Vec<f32>,
    ft: Vec<f32>,
    merged: Vec<f32>,
    labels: Vec<i64>,
    c: usize,
    t: (f32, f32),
}

impl Case {
    fn new() -> Case {
        let mut r = dawin::rng::SplitMix(7);
        let (n, c) = (9, 4);
        let mut draw = |s: f32| (0..n * c).map(|_| s * r.normal()).collect::<Vec<f32>>();
        let (pt, ft, merged) = (draw(2.0), draw(3.0), draw(1.5));
        let labels = (0..n as i64).map(|i| (i * 3 + 1) % c as i64).collect();
        Case {
            pt,
            ft,
            merged,
            labels,
            c,
            t: (0.9, 1.1),
        }
    }
    fn n(&self) -> usize {
        self.labels.len()
    }
    fn row<'a>(&self, z: &'a [f32], i: usize) -> &'a [f32] {
        &z[i * self.c..(i + 1) * self.c]
    }
    fn entropies(&self) -> Entropies {
        let (tp, tf) = (self.t.0 as f64, self.t.1 as f64);
        Entropies {
            pt: (0..self.n())
                .map(|i| entropy(self.row(&self.pt, i), tp))
                .collect(),
            ft: (0..self.n())
                .map(|i| entropy(self.row(&self.ft, i), tf))
                .collect(),
        }
    }
    /// Each model's loss against the targets `q(i)`.
    fn losses(&self, q: impl Fn(usize) -> Vec<f64>) -> (Vec<f64>, Vec<f64>) {
        (0..self.n())
            .map(|i| {
                (
                    xent(self.row(&self.pt, i), &q(i)),
                    xent(self.row(&self.ft, i), &q(i)),
                )
            })
            .unzip()
    }
    fn ensemble(&self, i: usize) -> Vec<f64> {
        let p = softmax(self.row(&self.pt, i), self.t.0 as f64);
        let f = softmax(self.row(&self.ft, i), self.t.1 as f64);
        p.iter().zip(&f).map(|(a, b)| (a + b) / 2.0).collect()
    }
}

fn run(rule: LambdaRule, k: &Case, ent: &Entropies, raw_max: &(Vec<f32>, Vec<f32>)) -> Vec<f32> {
    run_t3(rule, k, ent, raw_max, T3Shape::default())
}

fn run_t3(
    rule: LambdaRule,
    k: &Case,
    ent: &Entropies,
    raw_max: &(Vec<f32>, Vec<f32>),
    t3: T3Shape,
) -> Vec<f32> {
    let idx: Vec<usize> = (0..k.n()).collect();
    lambdas(
        rule,
        &Inputs {
            logits_pt: &k.pt,
            logits_ft: &k.ft,
            classes: k.c,
            labels: &k.labels,
            entropies: ent,
            offset: dawin::method::lambda::offset_constants(ent),
            temperature: k.t,
            raw_max: Some((&raw_max.0, &raw_max.1)),
            merged: Some(&k.merged),
            indices: &idx,
            seed: 3,
            t3,
        },
    )
}

/// T³'s λ written from its published formula: the pretrained model's
/// weight lo + (hi − lo)·σ(γ·JS), JS as the entropy of the midpoint less
/// the mean entropy (nats), and λ its complement.
fn t3_reference(k: &Case, gamma: f64, lo: f64, hi: f64) -> Vec<f64> {
    let h = |p: &[f64]| {
        -p.iter()
            .filter(|&&v| v > 0.0)
            .map(|v| v * v.ln())
            .sum::<f64>()
    };
    (0..k.n())
        .map(|i| {
            let p = softmax(k.row(&k.pt, i), k.t.0 as f64);
            let q = softmax(k.row(&k.ft, i), k.t.1 as f64);
            let m: Vec<f64> = p.iter().zip(&q).map(|(a, b)| (a + b) / 2.0).collect();
            let js = h(&m) - (h(&p) + h(&q)) / 2.0;
            1.0 - (lo + (hi - lo) / (1.0 + (-gamma * js).exp()))
        })
        .collect()
}

fn close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= 1e-6,
            "{what}, sample {i}: {g} vs reference {w}"
        );
    }
}

#[test]
fn every_rule_matches_its_reference() {
    let k = Case::new();
    let ent = k.entropies();
    // Raw maxima from "unprojected" logits: here the projected ones plus
    // a class that only the raw head has, so raw and projected differ.
    let raw_max = (
        (0..k.n())
            .map(|i| k.row(&k.pt, i).iter().cloned().fold(4.0, f32::max))
            .collect(),
        (0..k.n())
            .map(|i| k.row(&k.ft, i).iter().cloned().fold(1.0, f32::max))
            .collect(),
    );
    let n = k.n();
    let label = |i: usize| one_hot(k.labels[i] as usize, k.c);
    let (lp, lf) = k.losses(label);
    let cases: Vec<(LambdaRule, Vec<f64>)> = vec![
        (LambdaRule::Entropy, offset_ratio(&ent.pt, &ent.ft, false)),
        (
            LambdaRule::EntropyOffset,
            offset_ratio(&ent.pt, &ent.ft, true),
        ),
        (LambdaRule::Oracle, offset_ratio(&lp, &lf, false)),
        (LambdaRule::OracleOffset, offset_ratio(&lp, &lf, true)),
        (
            LambdaRule::SelectiveLoss,
            (0..n).map(|i| (lp[i] > lf[i]) as u8 as f64).collect(),
        ),
        (
            LambdaRule::Selective,
            (0..n)
                .map(|i| (ent.pt[i] > ent.ft[i]) as u8 as f64)
                .collect(),
        ),
        (LambdaRule::PseudoSoftEnsemble, {
            let (p, f) = k.losses(|i| k.ensemble(i));
            offset_ratio(&p, &f, true)
        }),
        (LambdaRule::PseudoSoftMerged, {
            let (p, f) = k.losses(|i| softmax(k.row(&k.merged, i), 1.0));
            offset_ratio(&p, &f, true)
        }),
        (LambdaRule::PseudoHardEnsemble, {
            let (p, f) = k.losses(|i| one_hot(argmax(&k.ensemble(i)), k.c));
            offset_ratio(&p, &f, true)
        }),
        (LambdaRule::PseudoHardMerged, {
            let (p, f) = k.losses(|i| {
                let z: Vec<f64> = k.row(&k.merged, i).iter().map(|&v| v as f64).collect();
                one_hot(argmax(&z), k.c)
            });
            offset_ratio(&p, &f, true)
        }),
    ];
    for (rule, want) in &cases {
        close(&run(*rule, &k, &ent, &raw_max), want, rule.name());
    }
    // Confidence ratios, each model from its own logits (the official code
    // reads the zero-shot logits for both: a bug not reproduced).
    let conf = |z: &[f32], t: f32, gap: bool| {
        let mut p = softmax(z, t as f64);
        p.sort_by(|a, b| b.total_cmp(a));
        if gap { p[0] - p[1] } else { p[0] }
    };
    for (rule, gap) in [
        (LambdaRule::Expconf, false),
        (LambdaRule::Expconfdiff, true),
    ] {
        let want: Vec<f64> = (0..n)
            .map(|i| {
                let cp = conf(k.row(&k.pt, i), k.t.0, gap).exp();
                let cf = conf(k.row(&k.ft, i), k.t.1, gap).exp();
                cf / (cp + cf)
            })
            .collect();
        close(&run(rule, &k, &ent, &raw_max), &want, rule.name());
    }
    let maxlogit = |mp: f64, mf: f64| (mf / (mp + mf)).clamp(0.0, 1.0);
    let want: Vec<f64> = (0..n)
        .map(|i| maxlogit(raw_max.0[i] as f64, raw_max.1[i] as f64))
        .collect();
    close(
        &run(LambdaRule::MaxLogitRaw, &k, &ent, &raw_max),
        &want,
        "max-logit-raw",
    );
    let mx = |z: &[f32]| z.iter().cloned().fold(f32::MIN, f32::max) as f64;
    let want: Vec<f64> = (0..n)
        .map(|i| maxlogit(mx(k.row(&k.pt, i)), mx(k.row(&k.ft, i))))
        .collect();
    close(
        &run(LambdaRule::MaxLogit, &k, &ent, &raw_max),
        &want,
        "max-logit",
    );
    close(
        &run(LambdaRule::T3, &k, &ent, &raw_max),
        &t3_reference(&k, 0.5, 0.0, 1.0),
        "t3",
    );
    let steep = T3Shape {
        gamma: 8.0,
        lo: 0.2,
        hi: 0.9,
    };
    close(
        &run_t3(LambdaRule::T3, &k, &ent, &raw_max, steep),
        &t3_reference(&k, 8.0, 0.2, 0.9),
        "t3 with γ 8 over [0.2, 0.9]",
    );
}

#[test]
fn random_baselines_are_seeded_clipped_and_shard_stable() {
    let n = 20000;
    let idx: Vec<usize> = (0..n).collect();
    let ent = Entropies {
        pt: vec![1.0; n],
        ft: vec![1.0; n],
    };
    let draw = |rule, seed, idx: &[usize]| {
        lambdas(
            rule,
            &Inputs {
                entropies: &ent,
                indices: idx,
                seed,
                ..Inputs::default()
            },
        )
    };
    for (rule, mean, std, lo, hi) in [
        (
            LambdaRule::RandomUniform,
            0.5,
            (1.0f64 / 12.0).sqrt(),
            0.0,
            1.0,
        ),
        (LambdaRule::RandomGaussian, 0.5, 0.2, 0.01, 0.99),
        (LambdaRule::RandomWiseGaussian, 0.8, 0.1, 0.01, 0.99),
    ] {
        let l = draw(rule, 5, &idx);
        assert_eq!(l.len(), n);
        // f32 rounding of the clip bounds aside.
        let inside = |v: f32| (lo - 1e-7..=hi + 1e-7).contains(&(v as f64));
        assert!(l.iter().all(|&v| inside(v)), "{rule:?} range");
        let v: Vec<f64> = l.iter().map(|&x| x as f64).collect();
        let (m, s) = mean_std(&v);
        // Clipping at 0.01/0.99 trims at most ~1 % of N(0.8, 0.1): the
        // moments stay within these bounds.
        assert!((m - mean).abs() < 0.01, "{rule:?} mean {m}");
        assert!((s - std).abs() < 0.01, "{rule:?} std {s}");
        assert_eq!(l, draw(rule, 5, &idx), "{rule:?} is seeded");
        assert_ne!(l, draw(rule, 6, &idx), "{rule:?} follows the seed");
        // A shard draws what the whole run drew for its samples.
        let part = draw(rule, 5, &idx[700..900]);
        assert_eq!(&part[..], &l[700..900], "{rule:?} per-sample stable");
    }
}

#[test]
fn calibration_statistics_by_hand() {
    // Two samples, three classes: p = (0.7, 0.2, 0.1) label 0; (0.5, 0.4, 0.1) label 1.
    let mut s = stats::Scores::default();
    s.push(&[0.7, 0.2, 0.1], None, 0);
    s.push(&[0.5, 0.4, 0.1], None, 1);
    let correct = [true, false];
    let v = stats::calibration(&s, &correct);
    let nll = (-(0.7f64.ln()) - 0.4f64.ln()) / 2.0;
    let brier = ((0.09 + 0.04 + 0.01) + (0.25 + 0.36 + 0.01)) / 2.0;
    // Bins: 0.7 falls in (0.6667, 0.7333], 0.5 in (0.4667, 0.5333]:
    // |1 − 0.7|/2 + |0 − 0.5|/2.
    let ece = 0.3 / 2.0 + 0.5 / 2.0;
    for (k, want) in [("nll", nll), ("brier", brier), ("ece", ece)] {
        let got = v[k].as_f64().unwrap();
        assert!((got - want).abs() < 1e-12, "{k}: {got} vs {want}");
    }
    // Samples at confidence 1/15 exactly sit in the first bin, (0, 1/15].
    assert!((stats::ece(&[1.0 / 15.0, 1.0], &[false, true]) - 1.0 / 30.0).abs() < 1e-12);
}

#[test]
fn mcnemar_exact_by_hand() {
    assert_eq!(stats::mcnemar_p(0, 0), 1.0);
    assert!((stats::mcnemar_p(1, 0) - 1.0).abs() < 1e-12);
    assert!((stats::mcnemar_p(5, 0) - 2.0 / 32.0).abs() < 1e-12);
    // 2·(C(12,0) + C(12,1) + C(12,2)) / 2^12.
    assert!((stats::mcnemar_p(10, 2) - 2.0 * 79.0 / 4096.0).abs() < 1e-12);
    assert!((stats::mcnemar_p(2, 10) - stats::mcnemar_p(10, 2)).abs() < 1e-15);
    // Large counts stay finite and tiny, not 0/0.
    let p = stats::mcnemar_p(3000, 2000);
    assert!(p > 0.0 && p < 1e-40, "{p}");
    let a = [true, true, false, true, false];
    let b = [false, true, true, false, false];
    assert_eq!(stats::mcnemar(&a, &b), (2, 1, 1.0));
}

#[test]
fn bootstrap_interval_behaves() {
    let all = vec![true; 50];
    assert_eq!(stats::bootstrap_ci95(&all, 200, 1), [1.0, 1.0]);
    let mixed: Vec<bool> = (0..1000).map(|i| i % 5 != 0).collect();
    let ci = stats::bootstrap_ci95(&mixed, 1000, 1);
    assert_eq!(ci, stats::bootstrap_ci95(&mixed, 1000, 1), "seeded");
    assert!(ci[0] < 0.8 && 0.8 < ci[1], "{ci:?}");
    // The normal approximation's half-width, 1.96·√(0.16/1000) = 0.0248.
    let half = (ci[1] - ci[0]) / 2.0;
    assert!((half - 0.0248).abs() < 0.004, "{half}");
    assert_eq!(stats::quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
}

#[test]
fn auroc_and_correlation_by_hand() {
    // Positives score 3 and 2, negatives 2 and 1: pairs (3>2) (3>1) (2=2: ½) (2>1) → 3.5/4.
    let a = stats::auroc(&[3.0, 2.0, 2.0, 1.0], &[true, true, false, false]);
    assert!((a - 0.875).abs() < 1e-12, "{a}");
    assert!(stats::auroc(&[1.0, 2.0], &[true, true]).is_nan());
    let r = stats::pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 7.0]);
    // cov 5, var 2 and 12.667: 5/√(2·12.667).
    assert!(
        (r - 5.0 / (2.0f64 * 38.0 / 3.0).sqrt()).abs() < 1e-12,
        "{r}"
    );
}

#[test]
fn bic_picks_the_mixture_the_data_came_from() {
    use dawin::method::bmm::BetaMixture;
    let mut r = dawin::rng::SplitMix(11);
    // Two tight clusters at 0.2 and 0.8.
    let x: Vec<f32> = (0..400)
        .map(|i| {
            let c = if i % 2 == 0 { 0.2 } else { 0.8 };
            (c + 0.03 * r.normal()).clamp(0.01, 0.99)
        })
        .collect();
    let m1 = BetaMixture::fit(&x, 1, 1).unwrap();
    let m2 = BetaMixture::fit(&x, 2, 1).unwrap();
    let ll: f64 = x
        .iter()
        .map(|&v| {
            let v = v as f64;
            let (a, b) = (m1.alpha[0], m1.beta[0]);
            (a - 1.0) * v.ln() + (b - 1.0) * (1.0 - v).ln()
                - (libm::lgamma(a) + libm::lgamma(b) - libm::lgamma(a + b))
        })
        .sum();
    assert!((m1.total_log_likelihood(&x) - ll).abs() < 1e-6 * ll.abs());
    assert!((m1.bic(&x) - (-2.0 * ll + 2.0 * 400f64.ln())).abs() < 1e-6 * ll.abs());
    assert!(m2.bic(&x) < m1.bic(&x));
}

fn fixture_options(out: &std::path::Path) -> EvalOptions {
    EvalOptions {
        pretrained: fixtures_dir().join("dawin_pt.safetensors"),
        finetuned: fixtures_dir().join("dawin_ft.safetensors"),
        data: fixtures_dir().join("dawin_data.safetensors"),
        out_dir: out.to_path_buf(),
        batch_size: 8,
        methods: Method::parse_list("zeroshot,finetuned,wise-ft:0.5,ensemble,ensemble:0.5,dawin")
            .unwrap(),
        progress: false,
        ..EvalOptions::default()
    }
}

#[test]
fn the_fixture_pair_under_every_rule() {
    let d = tempfile::tempdir().unwrap();
    let ex = dawin::exec::open(dawin::exec::ExecutorKind::Cpu).unwrap();
    for rule in LambdaRule::ALL.iter().map(|n| n.value) {
        let o = EvalOptions {
            rule,
            cache: Some(d.path().join("cache.safetensors")),
            ..fixture_options(&d.path().join(rule.name().replace(':', "_")))
        };
        let r = eval::run(&o, ex.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", rule.name()));
        let s = &r.summary;
        assert!(
            r.lambdas.iter().all(|l| (0.0..=1.0).contains(l)),
            "{}",
            rule.name()
        );
        let m = &s["methods"]["dawin"];
        println!(
            "{:<22} mean λ {:.4}  dawin {}/{}",
            rule.name(),
            s["lambda"]["mean"].as_f64().unwrap(),
            m["correct"],
            m["count"]
        );
        for k in ["nll", "ece", "brier"] {
            assert!(
                m[k].as_f64().is_some_and(f64::is_finite),
                "{} {k}",
                rule.name()
            );
        }
        let ci = m["ci95"].as_array().unwrap();
        let acc = m["accuracy"].as_f64().unwrap();
        assert!(ci[0].as_f64().unwrap() <= acc && acc <= ci[1].as_f64().unwrap());
        assert_eq!(
            s["methods"]["ensemble"]["correct"], s["methods"]["ensemble:0.5"]["correct"],
            "a constant 0.5 is the plain ensemble"
        );
        let zs = &s["paired"]["against"]["zeroshot"];
        assert!(
            zs["p_value"]
                .as_f64()
                .is_some_and(|p| (0.0..=1.0).contains(&p))
        );
        assert!(
            s["lambda"]["corr_oracle"].is_number()
                || rule.is_random()
                || s["lambda"]["corr_oracle"].is_null()
        );
        let rows = r.table.lines().skip(1).take_while(|l| !l.starts_with('λ'));
        assert!(
            rows.into_iter().all(|l| l.contains('±') || l.contains('[')),
            "every accuracy with its interval: {}",
            r.table
        );
    }
}

#[test]
fn bmm_auto_records_every_fit() {
    let d = tempfile::tempdir().unwrap();
    let o = EvalOptions {
        interp: Interp::BmmAuto,
        ..fixture_options(d.path())
    };
    let r = eval::run(
        &o,
        dawin::exec::open(dawin::exec::ExecutorKind::Cpu)
            .unwrap()
            .as_ref(),
    )
    .unwrap();
    let sel = &r.summary["bmm_selection"];
    let fits = sel["fits"].as_array().unwrap();
    // 16 samples allow K ≤ 16/5 = 3.
    assert_eq!(fits.len(), 3);
    let best = fits
        .iter()
        .min_by(|a, b| {
            a["bic"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["bic"].as_f64().unwrap())
        })
        .unwrap();
    assert_eq!(sel["chosen_k"], best["k"]);
    assert_eq!(
        r.summary["bmm"]["weights"].as_array().unwrap().len() as u64,
        best["k"].as_u64().unwrap()
    );
    assert_eq!(r.summary["interp"], "bmm:auto");
}

#[test]
fn wise_alpha_scales_lambda() {
    let d = tempfile::tempdir().unwrap();
    let ex = dawin::exec::open(dawin::exec::ExecutorKind::Cpu).unwrap();
    let plain = eval::run(&fixture_options(&d.path().join("a")), ex.as_ref()).unwrap();
    let o = EvalOptions {
        wise_alpha: Some(0.5),
        ..fixture_options(&d.path().join("b"))
    };
    let scaled = eval::run(&o, ex.as_ref()).unwrap();
    for (a, b) in plain.lambdas.iter().zip(&scaled.lambdas) {
        assert!((a * 0.5 - b).abs() < 1e-7);
    }
}

#[test]
fn temperature_fit_recovers_the_sampling_temperature() {
    use dawin::pipelines::calibrate::{fit_temperature, mean_nll};
    let (n, c, t_true) = (20000, 5, 2.5f64);
    let mut r = dawin::rng::SplitMix(21);
    let logits: Vec<f32> = (0..n * c).map(|_| 3.0 * r.normal()).collect();
    // Labels drawn from softmax(z / t_true): the NLL's minimiser is near t_true.
    let labels: Vec<i64> = logits
        .chunks(c)
        .map(|z| {
            let p = softmax(z, t_true);
            let mut u = r.uniform() as f64;
            p.iter()
                .position(|&q| {
                    u -= q;
                    u < 0.0
                })
                .unwrap_or(c - 1) as i64
        })
        .collect();
    let t = fit_temperature(&logits, &labels, c).unwrap();
    assert!((t as f64 - t_true).abs() < 0.1, "fitted T {t}");
    let best = mean_nll(&logits, &labels, c, t);
    for probe in [0.5f32, 1.0, 2.0, 2.4, 2.6, 3.0, 5.0] {
        assert!(
            best <= mean_nll(&logits, &labels, c, probe) + 1e-12,
            "T = {probe}"
        );
    }
}

#[test]
fn temperature_fit_refuses_an_optimum_at_a_bound() {
    use dawin::pipelines::calibrate::fit_temperature;
    let c = 3;
    let logits: Vec<f32> = (0..30).map(|i| [4.0, 1.0, 0.0][i % 3]).collect();
    // Always the top logit: the NLL falls all the way to T = 0.
    let right = vec![0i64; 10];
    let e = fit_temperature(&logits, &right, c).unwrap_err();
    assert!(e.contains("below T = 0.01"), "{e}");
    // Always the bottom logit: the NLL falls all the way to T = ∞.
    let wrong = vec![2i64; 10];
    let e = fit_temperature(&logits, &wrong, c).unwrap_err();
    assert!(e.contains("above T = 100"), "{e}");
    // One in three wrong: an interior optimum.
    let mixed: Vec<i64> = (0..10).map(|i| if i % 3 == 0 { 1 } else { 0 }).collect();
    let t = fit_temperature(&logits, &mixed, c).unwrap();
    assert!(t > 0.01 && t < 100.0, "{t}");
}

#[test]
fn calibrate_writes_what_eval_temperature_reads() {
    let d = tempfile::tempdir().unwrap();
    let fx = |n: &str| fixtures_dir().join(n);
    let cli = |args: &[&str]| {
        let o = std::process::Command::new(crate::common::dawin_bin())
            .args(args)
            .arg("--pretrained")
            .arg(fx("dawin_pt.safetensors"))
            .arg("--finetuned")
            .arg(fx("dawin_ft.safetensors"))
            .arg("--data")
            .arg(fx("dawin_data.safetensors"))
            .arg("--quiet")
            .output()
            .unwrap();
        let text =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{text}");
        text
    };
    let cal = d.path().join("cal");
    let text = cli(&["calibrate", "--out-dir", cal.to_str().unwrap()]);
    assert!(text.contains("T = "), "{text}");
    let file = cal.join("temperature.json");
    let t = dawin::pipelines::calibrate::read_temperature(&file).unwrap();
    let run = d.path().join("run");
    cli(&[
        "eval",
        "--out-dir",
        run.to_str().unwrap(),
        "--temperature",
        file.to_str().unwrap(),
        "--methods",
        "zeroshot,finetuned,dawin",
    ]);
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["temperature"][0].as_f64().unwrap() as f32, t.0);
    assert_eq!(s["temperature"][1].as_f64().unwrap() as f32, t.1);
    // The fitted temperature cannot have a higher NLL than T = 1 on the data it was fitted on.
    let cal_summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    for i in 0..2 {
        assert!(
            cal_summary["nll_fitted"][i].as_f64().unwrap()
                <= cal_summary["nll_at_t1"][i].as_f64().unwrap() + 1e-12
        );
    }
}

#[test]
fn saved_components_are_the_models_the_bmm_run_evaluated() {
    use dawin::method::engine::Engine;
    use dawin::model::{Model, Overrides};
    use dawin::tensorfile::TensorFile;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("components");
    let o = EvalOptions {
        interp: Interp::Bmm(2),
        save_components: Some(dir.clone()),
        ..fixture_options(&d.path().join("out"))
    };
    let ex = dawin::exec::open(dawin::exec::ExecutorKind::Cpu).unwrap();
    let r = eval::run(&o, ex.as_ref()).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("components.json")).unwrap())
            .unwrap();
    let comps = manifest["components"].as_array().unwrap();
    assert_eq!(comps.len(), 2);
    let members: u64 = comps.iter().map(|c| c["members"].as_u64().unwrap()).sum();
    assert_eq!(members as usize, r.indices.len());
    let pt = Model::load(&o.pretrained, Overrides::default()).unwrap();
    let ft = Model::load(&o.finetuned, Overrides::default()).unwrap();
    let io = TensorFile::open(&o.data).unwrap();
    let px = io.read_f32("pixel_values").unwrap();
    let per = px.data.len() / px.shape[0];
    let dawin_logits = r.dawin_logits.as_ref().unwrap();
    let c = dawin_logits.len() / r.indices.len();
    let mut matched = vec![false; r.indices.len()];
    for comp in comps {
        let lambda = comp["lambda"].as_f64().unwrap() as f32;
        let m = Model::load(
            &dir.join(comp["file"].as_str().unwrap()),
            Overrides::default(),
        )
        .unwrap();
        // Every parameter is (1 − λ)·θ_pt + λ·θ_ft.
        for (k, (a, b)) in pt.flat.iter().zip(&ft.flat).enumerate() {
            let want = (1.0 - lambda as f64) * *a as f64 + lambda as f64 * *b as f64;
            assert!((m.flat[k] as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()));
        }
        // Its logits are the run's DaWin logits on the samples whose λ it
        // was evaluated at (the members share one λ, the component mean).
        let engine = Engine::new(ex.as_ref(), &m, &m, Default::default()).unwrap();
        for (j, &i) in r.indices.iter().enumerate() {
            let got = engine
                .logits(&engine.pt, &px.data[i * per..(i + 1) * per], 1)
                .unwrap();
            if got
                .iter()
                .zip(&dawin_logits[j * c..(j + 1) * c])
                .all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + b.abs()))
            {
                matched[j] = true;
            }
        }
    }
    // Each sample matches the component it belongs to.
    assert!(matched.iter().all(|&m| m), "{matched:?}");
    // A second run into the same folder is refused before it starts.
    let again = eval::run(&o, ex.as_ref()).err().unwrap().to_string();
    assert!(again.contains("already holds components.json"), "{again}");
    // So is one into a folder holding a component file without its
    // manifest (another run's, stopped before writing it).
    std::fs::remove_file(dir.join("components.json")).unwrap();
    let orphan = std::fs::read(dir.join("component_0.safetensors")).unwrap();
    let again = eval::run(&o, ex.as_ref()).err().unwrap().to_string();
    assert!(
        again.contains("already holds component_0.safetensors"),
        "{again}"
    );
    assert_eq!(
        std::fs::read(dir.join("component_0.safetensors")).unwrap(),
        orphan
    );
    // And a run without a mixture cannot save components.
    let exact = EvalOptions {
        interp: Interp::PerSample(PerSample::Exact),
        save_components: Some(d.path().join("x")),
        ..fixture_options(&d.path().join("out2"))
    };
    let err = eval::run(&exact, ex.as_ref()).err().unwrap().to_string();
    assert!(err.contains("--interp bmm"), "{err}");
}

/// `wise-ft:auto` against a reference written here: the merged models
/// (1−α)·θ_pt + α·θ_ft built by lerping the weights in f64 and run on the
/// CPU at every α of a 0.01 grid, each one's mean entropy of softmax(z) in
/// f64. The α found has the lowest mean entropy of them all (within the
/// search's width), and its predictions are its merged model's.
#[test]
fn wise_ft_auto_finds_the_lowest_entropy_alpha() {
    use dawin::exec::cpu::Cpu;
    use dawin::model::Model;
    use dawin::model::placed::PlacedModel;
    use dawin::model::vit::forward;
    let d = tempfile::tempdir().unwrap();
    let mut o = fixture_options(d.path());
    o.methods = Method::parse_list("zeroshot,wise-ft:auto").unwrap();
    let ex = dawin::exec::open(dawin::exec::ExecutorKind::Cpu).unwrap();
    let r = eval::run(&o, ex.as_ref()).unwrap();
    let found = r.summary["wise_ft_auto"]["alpha"].as_f64().unwrap();
    let pt = Model::load(
        &fixtures_dir().join("dawin_pt.safetensors"),
        Default::default(),
    )
    .unwrap();
    let ft = Model::load(
        &fixtures_dir().join("dawin_ft.safetensors"),
        Default::default(),
    )
    .unwrap();
    let io = dawin::tensorfile::TensorFile::open(&fixtures_dir().join("dawin_data.safetensors"))
        .unwrap();
    let px = io.read_f32("pixel_values").unwrap();
    let n = px.shape[0];
    let cpu = Cpu::new();
    let logits_at = |a: f64| -> Vec<f32> {
        let mut m = pt.clone();
        for (v, (x, y)) in m.flat.iter_mut().zip(pt.flat.iter().zip(&ft.flat)) {
            *v = ((1.0 - a) * *x as f64 + a * *y as f64) as f32;
        }
        let dm = PlacedModel::upload(&cpu, &m).unwrap();
        forward(&cpu, &dm, &px.data, n, None)
            .unwrap()
            .logits
            .unwrap()
    };
    let mean_entropy = |z: &[f32]| z.chunks(6).map(|r| entropy(r, 1.0)).sum::<f64>() / n as f64;
    let grid_min = (0..=100)
        .map(|i| mean_entropy(&logits_at(i as f64 / 100.0)))
        .fold(f64::INFINITY, f64::min);
    let at_found = mean_entropy(&logits_at(found));
    assert!(
        at_found <= grid_min + 1e-6,
        "α {found}: {at_found} > grid minimum {grid_min}"
    );
    let want: Vec<usize> = logits_at(found)
        .chunks(6)
        .map(|r| argmax(&r.iter().map(|&v| v as f64).collect::<Vec<_>>()))
        .collect();
    assert_eq!(r.predictions["wise-ft:auto"], want);
    // One α for the whole set: a shard would fit its own, so it is refused.
    o.shard = Some((0, 2));
    let e = eval::run(&o, ex.as_ref()).err().unwrap().to_string();
    assert!(e.contains("without --shard"), "{e}");
}
