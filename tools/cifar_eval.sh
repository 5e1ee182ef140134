#!/usr/bin/env bash
# CIFAR-10 reproduction, evaluation side: after tools/cifar_pair.py has
# written the models (cifar/) and the test folders (.cifar/test/), this
# preprocesses every test set with `dawin preprocess`, runs `dawin eval`
# (all methods, DaWin exact, then DaWin bmm), draws the WiSE-FT curve and
# prints the results table in markdown.
#
# Usage: tools/cifar_eval.sh [--device cpu|emu|cuda]
set -euo pipefail
cd "$(dirname "$0")/.."
dev=${2:-cpu}
[ "${1:-}" = "--device" ] || dev=cpu
cargo build --release --quiet
bin=target/release/dawin
work=.cifar
mkdir -p $work/pre $work/runs docs
sets=$(ls $work/test)
for s in $sets; do
  [ -f $work/pre/$s.safetensors ] || $bin preprocess $work/test/$s --size 32 --out $work/pre/$s.safetensors
  M="--pretrained cifar/pretrained.safetensors --finetuned cifar/finetuned.safetensors --data $work/pre/$s.safetensors --device $dev --batch-size 256 --quiet"
  $bin eval $M --out-dir $work/runs/$s --methods all > /dev/null
  $bin eval $M --out-dir $work/runs/$s-bmm --methods dawin --interp bmm > /dev/null
done
ood=$(for s in $sets; do [ "$s" = clean ] || echo $work/runs/$s/summary.json; done)
$bin plot-wise --id $work/runs/clean/summary.json --ood $ood --out docs/cifar10-wise-ft.svg --title "CIFAR-10: WiSE-FT curve (ID: clean test, OOD: mean of 12 corrupted sets)"
cp $work/runs/clean-bmm/lambdas.svg docs/cifar10-lambdas-clean.svg
cp $work/runs/contrast-5-bmm/lambdas.svg docs/cifar10-lambdas-contrast-5.svg
python3 - "$work" $sets <<'PY'
import json, sys
work, sets = sys.argv[1], sys.argv[2:]
sets = ["clean"] + [s for s in sets if s != "clean"]
rows = [("zero-shot", "zeroshot", ""), ("fine-tuned", "finetuned", ""), ("WiSE-FT 0.5", "wise-ft:0.5", ""),
        ("ensemble", "ensemble", ""), ("DaWin (exact)", "dawin", ""), ("DaWin (bmm)", "dawin", "-bmm")]
acc = lambda s, m, suf: json.load(open(f"{work}/runs/{s}{suf}/summary.json"))["methods"][m]["accuracy"] * 100
print("| method | " + " | ".join(sets) + " | OOD mean |")
print("|---" * (len(sets) + 2) + "|")
for name, m, suf in rows:
    v = [acc(s, m, suf) for s in sets]
    print(f"| {name} | " + " | ".join(f"{x:.1f}" for x in v) + f" | {sum(v[1:]) / len(v[1:]):.1f} |")
PY
