#!/usr/bin/env python3
"""Where the dynamic-merging rules stand on the CIFAR-10 pair: after
tools/cifar_pair.py (the models in cifar/) and tools/cifar_tests.py (the
test folders in .cifar/test/), runs `dawin eval` on every test set under
each rule (DaWin exact, entropy-offset, bmm:3, batch-wise B = 32, T³, T³_B
with B = 32, and the baselines with `wise-ft:auto`) and prints markdown
tables: accuracy per set, then on the clean set and on all shifted sets
pooled, each with a 95 % percentile-bootstrap interval and McNemar's exact
test against DaWin exact, sample by sample.

    .venv/bin/python tools/cifar_rules.py [--bin target/release/dawin] [--device cpu]

numpy only. Runs reuse what an earlier call left in .cifar/rules/.
"""

import argparse
import csv
import json
import math
import pathlib
import subprocess

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORK = ROOT / ".cifar"

# Each run's name (its folder .cifar/rules/SET-NAME) and eval flags; the rows
# read a method from one run.
RUNS = {
    "all": ["--methods", "all,wise-ft:auto"],
    "offset": ["--methods", "dawin", "--expertise", "entropy-offset"],
    "bmm": ["--methods", "dawin", "--interp", "bmm"],
    "batch32": ["--methods", "dawin", "--interp", "batchwise:32"],
    "t3": ["--methods", "dawin", "--expertise", "t3"],
    "t3b32": ["--methods", "dawin", "--expertise", "t3", "--interp", "batchwise:32"],
}
ROWS = [
    ("zero-shot", "all", "zeroshot"),
    ("fine-tuned", "all", "finetuned"),
    ("WiSE-FT α = 0.5", "all", "wise-ft:0.5"),
    ("WiSE-FT α auto (entropy-min)", "all", "wise-ft:auto"),
    ("output ensemble", "all", "ensemble"),
    ("DaWin exact (entropy)", "all", "dawin"),
    ("DaWin entropy-offset", "offset", "dawin"),
    ("DaWin bmm:3", "bmm", "dawin"),
    ("DaWin batch-wise B = 32", "batch32", "dawin"),
    ("T³ exact", "t3", "dawin"),
    ("T³_B, B = 32", "t3b32", "dawin"),
]
REFERENCE = "DaWin exact (entropy)"


def run_all(binary, device, sets):
    (WORK / "pre").mkdir(parents=True, exist_ok=True)
    for s in sets:
        data = WORK / "pre" / f"{s}.safetensors"
        if not data.exists():
            subprocess.run([binary, "preprocess", str(WORK / "test" / s), "--size", "32",
                            "--out", str(data)], check=True)
        for name, flags in RUNS.items():
            out = WORK / "rules" / f"{s}-{name}"
            if (out / "summary.json").exists():
                continue
            subprocess.run([binary, "eval", "--pretrained", "cifar/pretrained.safetensors",
                            "--finetuned", "cifar/finetuned.safetensors", "--data", str(data),
                            "--device", device, "--batch-size", "256", "--quiet",
                            "--out-dir", str(out), *flags],
                           check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def correct(s, run, method):
    """Per-sample correctness, in index order."""
    with open(WORK / "rules" / f"{s}-{run}" / "samples.csv") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["index"]))
    return np.array([int(r[f"pred_{method}"]) == int(r["label"]) for r in rows])


def bootstrap(c, resamples=1000, seed=1):
    rng = np.random.default_rng(seed)
    means = [c[rng.integers(0, len(c), len(c))].mean() for _ in range(resamples)]
    return np.percentile(means, [2.5, 97.5])


def mcnemar(a, b):
    """Exact two-sided McNemar p of a against b, and a's wins/losses."""
    wins, losses = int((a & ~b).sum()), int((~a & b).sum())
    n, k = wins + losses, min(wins, losses)
    if n == 0:
        return wins, losses, 1.0
    p = 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return wins, losses, min(1.0, p)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=str(ROOT / "target/release/dawin"))
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    sets = sorted(p.name for p in (WORK / "test").iterdir())
    run_all(a.bin, a.device, sets)
    shifted = [s for s in sets if s != "clean"]
    acc = {(label, s): correct(s, run, m) for label, run, m in ROWS for s in sets}

    print("### Accuracy (%) per set\n")
    print("| method | clean | OOD mean | " + " | ".join(shifted) + " |")
    print("|---|" + "---|" * (len(shifted) + 2))
    for label, _, _ in ROWS:
        per = [100 * acc[label, s].mean() for s in shifted]
        cells = [f"{100 * acc[label, 'clean'].mean():.2f}", f"{np.mean(per):.2f}"]
        print(f"| {label} | " + " | ".join(cells + [f"{v:.2f}" for v in per]) + " |")

    for title, group in [("clean (2,000 images)", ["clean"]),
                         (f"the {len(shifted)} shifted sets pooled", shifted)]:
        print(f"\n### {title}: accuracy, 95 % interval, against DaWin exact\n")
        print("| method | accuracy (%) | 95 % interval | wins/losses vs DaWin exact | McNemar p |")
        print("|---|---|---|---|---|")
        ref = np.concatenate([acc[REFERENCE, s] for s in group])
        for label, _, _ in ROWS:
            c = np.concatenate([acc[label, s] for s in group])
            lo, hi = bootstrap(c)
            if label == REFERENCE:
                vs, p = "—", "—"
            else:
                w, l, pv = mcnemar(c, ref)
                vs, p = f"{w}/{l}", f"{pv:.3g}"
            print(f"| {label} | {100 * c.mean():.2f} | [{100 * lo:.2f}, {100 * hi:.2f}] | {vs} | {p} |")

    print("\n### α found by wise-ft:auto, and mean λ of each dynamic rule\n")
    print("| set | wise-ft:auto α | DaWin λ | T³ λ |")
    print("|---|---|---|---|")
    for s in sets:
        summ = {r: json.loads((WORK / "rules" / f"{s}-{r}" / "summary.json").read_text())
                for r in ("all", "t3")}
        alpha = summ["all"]["wise_ft_auto"]["alpha"]
        print(f"| {s} | {alpha:.3f} | {summ['all']['lambda']['mean']:.3f} | {summ['t3']['lambda']['mean']:.3f} |")


if __name__ == "__main__":
    main()
