#!/usr/bin/env bash
# A sharded DaWin evaluation as four dependent SLURM jobs:
#   1. an array of `dawin expertise` shards (both models' logits, cached
#      in each shard's folder, and their entropies);
#   2. one `dawin merge` of the expertise files (the whole set's
#      entropies, which entropy-offset and bmm fit on);
#   3. an array of `dawin eval` shards that reuse step 1's cached logits;
#   4. one `dawin merge` of the shards' summaries: one result set, every
#      statistic recomputed on the concatenated samples.csv.
#
# Usage: tools/slurm/submit.sh PRETRAINED FINETUNED DATA RUNS [SHARDS]
#   RUNS       a folder on a shared file system: RUNS/shard<i>/ per shard,
#              RUNS/expertise.safetensors, then RUNS/summary.json with
#              samples.csv and the plots beside it; job logs in RUNS/logs/.
#   SHARDS     number of shards (default 8).
# Environment:
#   METHODS       eval's --methods, also given to the expertise jobs so
#                 that they cache every logit eval needs (default: eval's
#                 default, all).
#   EVAL_FLAGS    eval's other flags, e.g. "--lambda-rule entropy-offset
#                 --interp bmm:3" (default: none, eval's defaults).
#   DEVICE        --device of the model jobs (default cuda).
#   SBATCH_FLAGS  extra sbatch flags for every job (partition, account,
#                 time), e.g. "--partition=gpu --time=02:00:00".
#   GPU_FLAGS     extra sbatch flags for the model jobs (default
#                 "--gres=gpu:1").
#   DAWIN         the dawin binary (default: dawin on PATH).
#   SBATCH        the submit command (default sbatch; tools/slurm/local-sbatch
#                 runs the same jobs here, one after another, for a trial).
set -euo pipefail
if [ $# -lt 4 ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
export PT=$1 FT=$2 DATA=$3 RUNS=$4 SHARDS=${5:-8}
export METHODS=${METHODS:-all} EVAL_FLAGS=${EVAL_FLAGS:-} DEVICE=${DEVICE:-cuda} DAWIN=${DAWIN:-dawin}
sbatch=${SBATCH:-sbatch}
read -r -a common <<< "${SBATCH_FLAGS:-}"
read -r -a gpu <<< "${GPU_FLAGS:---gres=gpu:1}"
mkdir -p "$RUNS/logs"
last=$((SHARDS - 1))

submit() { "$sbatch" --parsable --export=ALL "${common[@]}" "$@"; }
expertise=$(submit "${gpu[@]}" --array="0-$last" --job-name=dawin-expertise \
  --output="$RUNS/logs/expertise-%a.out" "$here/expertise.sbatch")
merge1=$(submit --dependency="afterok:$expertise" --job-name=dawin-merge-expertise \
  --output="$RUNS/logs/merge-expertise.out" "$here/merge-expertise.sbatch")
eval_=$(submit "${gpu[@]}" --dependency="afterok:$merge1" --array="0-$last" \
  --job-name=dawin-eval --output="$RUNS/logs/eval-%a.out" "$here/eval.sbatch")
merge2=$(submit --dependency="afterok:$eval_" --job-name=dawin-merge-summaries \
  --output="$RUNS/logs/merge-summaries.out" "$here/merge-summaries.sbatch")
echo "submitted: expertise $expertise, merge $merge1, eval $eval_, merge $merge2"
echo "results: $RUNS/summary.json (logs in $RUNS/logs/)"
