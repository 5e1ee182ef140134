#!/usr/bin/env bash
# CIFAR-10 reproduction, evaluation side: after tools/cifar_pair.py has
# written the models (cifar/) and tools/cifar_tests.py the test folders
# (.cifar/test/), this preprocesses every test set with `dawin preprocess`,
# runs `dawin eval` (all methods with DaWin exact, then DaWin bmm, then
# DaWin entropy-offset), draws the WiSE-FT curve and prints the results
# tables in markdown.
#
# Usage: tools/cifar_eval.sh [--device cpu|emu|cuda]
# DAWIN_BIN=path uses that binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
dev=${2:-cpu}
[ "${1:-}" = "--device" ] || dev=cpu
bin=${DAWIN_BIN:-target/release/dawin}
[ -n "${DAWIN_BIN:-}" ] || cargo build --release --quiet
work=.cifar
mkdir -p $work/pre $work/runs docs
sets=$(ls $work/test)
for s in $sets; do
  [ -f $work/pre/$s.safetensors ] || $bin preprocess $work/test/$s --size 32 --out $work/pre/$s.safetensors
  M="--pretrained cifar/pretrained.safetensors --finetuned cifar/finetuned.safetensors --data $work/pre/$s.safetensors --device $dev --batch-size 256 --quiet"
  $bin eval $M --out-dir $work/runs/$s --methods all > /dev/null
  $bin eval $M --out-dir $work/runs/$s-bmm --methods dawin --interp bmm > /dev/null
  $bin eval $M --out-dir $work/runs/$s-offset --methods dawin --expertise entropy-offset > /dev/null
done
ood=$(for s in $sets; do [ "$s" = clean ] || echo $work/runs/$s/summary.json; done)
$bin plot-wise --id $work/runs/clean/summary.json --ood $ood --out docs/cifar10-wise-ft.svg --title "CIFAR-10: WiSE-FT curve (ID: clean test, OOD: mean of 12 corrupted sets)"
cp $work/runs/clean-bmm/lambdas.svg docs/cifar10-lambdas-clean.svg
cp $work/runs/contrast-5-bmm/lambdas.svg docs/cifar10-lambdas-contrast-5.svg
python3 - "$work" $sets <<'PY'
import json, sys
work, sets = sys.argv[1], sys.argv[2:]
sets = ["clean"] + [s for s in sets if s != "clean"]
runs = {}
summary = lambda s, suf: runs.setdefault((s, suf), json.load(open(f"{work}/runs/{s}{suf}/summary.json")))
rows = [("zero-shot", "zeroshot", ""), ("fine-tuned", "finetuned", ""), ("WiSE-FT 0.5", "wise-ft:0.5", ""),
        ("ensemble", "ensemble", ""), ("DaWin (exact)", "dawin", ""), ("DaWin (bmm)", "dawin", "-bmm"),
        ("DaWin (entropy-offset)", "dawin", "-offset")]
head = lambda first: print(f"| {first} | " + " | ".join(sets) + " | OOD mean |\n" + "|---" * (len(sets) + 2) + "|")

def table(title, first, cell, mean=True):
    print(f"\n{title}\n")
    head(first)
    for name, m, suf in rows:
        v = [cell(summary(s, suf)["methods"][m]) for s in sets]
        tail = f"{sum(v[1:]) / len(v[1:]):.1f}" if mean else ""
        print(f"| {name} | " + " | ".join(f"{x:.1f}" for x in v) + f" | {tail} |")

table("Accuracy (%)", "method", lambda r: r["accuracy"] * 100)
table("95 % bootstrap interval, half-width (points)", "method",
      lambda r: (r["ci95"][1] - r["ci95"][0]) * 50, mean=False)
table("Expected calibration error (%, 15 bins)", "method", lambda r: r["ece"] * 100)

print("\nDaWin (exact) against each method, sample by sample: wins/losses (exact McNemar p)\n")
head("against")
for name, m, suf in rows:
    if suf or m == "dawin":
        continue
    cells = []
    for s in sets:
        a = summary(s, "")["paired"]["against"][m]
        cells.append(f"{a['dawin_wins']}/{a['dawin_losses']} ({a['p_value']:.2g})")
    print(f"| {name} | " + " | ".join(cells) + " | |")
PY
