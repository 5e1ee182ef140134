#!/usr/bin/env bash
# The whole GPU visit as one command.
#
#   tools/gpu-check.sh --build    here: the cuda binary and the test
#                                 executables (ops, ops_bf16, forward,
#                                 executors, cli, dawin), stripped, into
#                                 target/gpu-check/carry (prints its size)
#   tools/gpu-check.sh --run      on the GPU machine, from the repository
#                                 root with that folder carried: every step
#                                 below, results into $OUT
#   tools/gpu-check.sh --dry-run  here, no GPU: the same steps with the
#                                 cuda binary on the emulated driver
#                                 (tools/build-emu-driver.sh), the test
#                                 executables on cpu and emu, small shapes,
#                                 into $OUT (default target/gpu-check/dry-run)
#
# Steps, each in its own time box, going on after a failure, the whole run
# within 8 minutes: smoke (forward on every fixture against cpu), the
# property and fixture tests on the device, every op on cpu/emu/device,
# compute-sanitizer, dawin bench and tools/bench_torch.py, ncu on four
# kernels, the end-to-end images/s of exact DaWin at 5,120 images against
# PyTorch's dual-batched forward on the same images, the multi-task merges
# (batched against built per sample, 64 images). A tool that is missing or
# fails is recorded in the summary, never fatal.
#
# $OUT gets at most 8 files: summary.md, results.json (every figure),
# logs.txt (every step's output), and the raw bench and device JSON.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CARRY=$ROOT/target/gpu-check/carry
# The test binaries carried, and the one that holds each subject (a module
# of it: its tests are `SUBJECT::name`).
TESTS="numerics models pipelines cli"
binary_of() {
  case $1 in
    ops|ops_bf16|executors) echo numerics ;;
    forward) echo models ;;
    dawin) echo pipelines ;;
    cli) echo cli ;;
  esac
}

usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

# Copies the test executables named in cargo's JSON messages ($1) and the
# binary ($2) into the carry folder $3, stripped when $4 is "strip".
collect() {
  local messages=$1 bin=$2 dest=$3 mode=$4
  rm -rf "$dest" && mkdir -p "$dest"
  python3 - "$messages" "$dest" "$TESTS" <<'PY' || return 1
import json, sys, os
msgs, dest, want = sys.argv[1], sys.argv[2], sys.argv[3].split()
found = {}
for line in open(msgs):
    if not line.startswith("{"):
        continue
    m = json.loads(line)
    t = m.get("target", {})
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in t.get("kind", []) and t.get("name") in want:
        found[t["name"]] = m["executable"]
missing = [w for w in want if w not in found]
if missing:
    sys.exit(f"test executables not built: {missing}")
with open(os.path.join(dest, "tests.txt"), "w") as f:
    for w in want:
        f.write(f"{w}\t{found[w]}\n")
PY
  while IFS=$'\t' read -r name path; do
    if [ "$mode" = strip ]; then strip -o "$dest/$name" "$path"; else ln -sf "$path" "$dest/$name"; fi
  done < "$dest/tests.txt"
  if [ "$mode" = strip ]; then strip -o "$dest/dawin" "$bin"; else ln -sf "$bin" "$dest/dawin"; fi
}

build_carry() {
  local messages=$ROOT/target/gpu-check/build.jsonl
  mkdir -p "$ROOT/target/gpu-check"
  local bin
  bin=$(tools/build-cuda.sh | tail -1) || return 1
  tools/build-cuda.sh --tests --message-format=json > "$messages" || return 1
  collect "$messages" "$bin" "$CARRY" strip || return 1
  echo "carry folder $CARRY: $(du -sh --apparent-size "$CARRY" | cut -f1) (repository: $(git ls-files | xargs du -cb 2>/dev/null | tail -1 | cut -f1) bytes)"
}

# The dry run's binary is the cuda build on the emulated driver, so the
# command lines that will run on a GPU run here through cust and the driver
# ABI; its test executables are the ordinary (cpu, emu) test build. Every
# path comes from the build scripts or cargo's messages, so CARGO_TARGET_DIR
# may be set, relative or absolute.
build_dry() {
  local messages=$ROOT/target/gpu-check/dry-build.jsonl bin lib
  mkdir -p "$ROOT/target/gpu-check"
  bin=$(tools/build-cuda.sh 2>/dev/null | tail -1) || return 1
  lib=$(tools/build-emu-driver.sh 2>/dev/null | tail -1) || return 1
  export LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  cargo test --no-run --message-format=json > "$messages" 2>/dev/null || return 1
  collect "$messages" "$bin" "$ROOT/target/gpu-check/dry-carry" link
}

# ---------------------------------------------------------------- the run

BUDGET=${GPU_CHECK_BUDGET:-470}   # seconds for all steps: within 8 minutes

# step NAME BOX CMD...: runs CMD for at most BOX seconds (less if the whole
# budget is nearly spent), logs its output, records pass/fail/skip.
step() {
  local name=$1 box=$2; shift 2
  local left=$((BUDGET - ($(date +%s) - START)))
  [ "$box" -gt "$left" ] && box=$left
  if [ "$box" -le 5 ]; then
    printf '%s\tskip\t0\tno time left in the %ss budget\n' "$name" "$BUDGET" >> "$WORK/status.tsv"
    return
  fi
  local t0=$(date +%s) rc
  { echo "=== $name (time box ${box}s): $*"; } >> "$LOG"
  timeout --kill-after=10 "$box" bash -c '"$@"' _ "$@" >> "$LOG" 2>&1
  rc=$?
  local secs=$(($(date +%s) - t0)) status=pass note=""
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status=fail; note="timed out after ${box}s"
  elif [ $rc -eq 77 ]; then status=skip; note=$(tail -1 "$LOG")
  elif [ $rc -ne 0 ]; then status=fail; note="exit $rc: $(grep -m1 -iE 'error|panicked|fail|not supported' "$LOG.step" 2>/dev/null | cut -c1-160)"
  fi
  echo "=== $name: $status ${secs}s $note" >> "$LOG"
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$secs" "$note" >> "$WORK/status.tsv"
}

# Runs "$@" keeping its output also in $LOG.step (for the failure note).
logged() { "$@" 2>&1 | tee "$LOG.step"; return "${PIPESTATUS[0]}"; }

# Exit 77 (skip) with a reason when a command is missing.
need() { command -v "$1" >/dev/null || { echo "skip: $1 is not installed here"; exit 77; }; }

smoke() {
  local dev=$1 fail=0
  for m in tests/fixtures/*.io.safetensors; do
    local name; name=$(basename "$m" .io.safetensors)
    "$BIN" forward --model "tests/fixtures/$name.safetensors" --input "$m" --out "$WORK/$name.cpu.safetensors" --device cpu || fail=1
    "$BIN" forward --model "tests/fixtures/$name.safetensors" --input "$m" --out "$WORK/$name.$dev.safetensors" --device "$dev" || { fail=1; continue; }
    python3 tools/gpu-results.py compare "$WORK/$name.$dev.safetensors" "$WORK/$name.cpu.safetensors" --tol 1e-4 || fail=1
  done
  return $fail
}

# The devices of a comma list, each once.
unique() { echo "$1" | tr , '\n' | awk '!seen[$0]++' | paste -sd,; }

# A test executable on the given devices. The dry run, whose point is the
# plumbing (the suite itself runs in `cargo test`), runs one test of each
# long executable.
test_exe() {
  local name=$1 filter=("$1::")
  if [ "$MODE" = dry-run ]; then
    case $name in
      forward) filter=(forward::fixtures_match_hf_on_every_executor) ;;
      cli) filter=(cli::inspect_reports_each_layout) ;;
      dawin) filter=(dawin::exact_and_materialize) ;;
    esac
  fi
  DAWIN_TEST_DEVICES=$(unique "$2") PROPTEST_CASES=${PROPTEST_CASES:-8} DAWIN_REPO=$ROOT DAWIN_BIN=$BIN \
    DAWIN_DEVICE_TABLE=$WORK/devices.json "$CARRYDIR/$(binary_of "$name")" --test-threads "$(nproc)" "${filter[@]}"
}

sanitizer() {
  need compute-sanitizer
  local fail=0 fx=tests/fixtures/hf_quickgelu
  for tool in memcheck racecheck synccheck; do
    compute-sanitizer --tool "$tool" --error-exitcode 9 "$BIN" forward --model $fx.safetensors \
      --input $fx.io.safetensors --out "$WORK/san.safetensors" --device "$DEV" || fail=1
  done
  compute-sanitizer --tool memcheck --error-exitcode 9 "$BIN" eval --pretrained tests/fixtures/dawin_pt.safetensors \
    --finetuned tests/fixtures/dawin_ft.safetensors --data tests/fixtures/dawin_data.safetensors \
    --out-dir "$WORK/san-eval" --methods zeroshot,wise-ft:0.5,dawin --quiet --device "$DEV" || fail=1
  return $fail
}

torch_bench() {
  python3 -c "import torch" 2>/dev/null || { echo "skip: no PyTorch on this machine"; exit 77; }
  python3 tools/bench_torch.py "$@"
}

ncu_kernels() {
  need ncu
  local metrics=sm__warps_active.avg.pct_of_peak_sustained_active,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,smsp__sass_inst_executed_op_ldsm.sum
  local fail=0
  for k in "gemm:gemm B/32 fc1" "gemm_bf16:gemm B/32 fc1" "attention_bf16:attention 197" "lerp:lerp"; do
    ncu --metrics "$metrics" -k "regex:^${k%%:*}\$" -c 1 "$BIN" bench --device "$DEV" --suite kernels \
      --repeats 1 --filter "${k#*:}" || fail=1
  done
  return $fail
}

environment() {
  python3 - "$WORK/environment.json" "$MODE" <<'PY'
import json, subprocess, sys, datetime
def out(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except FileNotFoundError:
        return f"none ({cmd[0]} not found)"
    except Exception as e:
        return f"unavailable ({e.__class__.__name__})"
smi = out(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
parts = [p.strip() for p in smi.split(",")] if "," in smi else [smi, "?"]
json.dump(dict(mode=sys.argv[2], gpu=parts[0] or "none", driver=parts[1] if len(parts) > 1 else "?",
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               cpu=out(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"]),
               cores=out(["nproc"])), open(sys.argv[1], "w"), indent=1)
PY
}

run_steps() {
  # The budget counts from here: a dry run's build comes before it.
  START=$(date +%s)
  WORK=$(mktemp -d)
  LOG=$OUT/logs.txt
  # The steps run under timeout in a child bash: it needs these.
  export WORK LOG BIN DEV TEST_DEV CARRYDIR ROOT MODE
  export -f logged need smoke test_exe unique binary_of sanitizer torch_bench ncu_kernels
  mkdir -p "$OUT" && : > "$LOG" && : > "$WORK/status.tsv"
  environment
  # Sizes from the first visit (2026-12-04, H200): the kernel suite took
  # 55 s at 3 repeats, the f32 pipeline 16 s at 2; exact DaWin runs about
  # 660 images/s in f32 and 1,800 in bf16 there, each e2e row a warm-up and
  # a timed pass; the mtl suite's 64 images took 29 s (mostly building the
  # nine random models). PyTorch's e2e runs the same images and rows.
  local q=() reps=(--repeats 3) e2e=(--images 5120 --batch 256 --repeats 1)
  local mtl=(--images 64 --batch 64 --repeats 1) kern=() pipe=()
  if [ "$MODE" = dry-run ]; then
    q=(--quick)
    reps=(--repeats 1)
    # One row of each suite: the plumbing, not the figures.
    kern=(--filter lerp)
    pipe=(--filter "forward (one model)")
    e2e=(--quick --images 4 --batch 2 --repeats 1)
    mtl=(--quick --images 4 --batch 2 --repeats 1)
  fi
  step smoke 60 logged smoke "$DEV"
  for t in ops ops_bf16 forward; do step "tests: $t" 90 logged test_exe "$t" "cpu,$TEST_DEV"; done
  step "tests: executors (every op on $(unique "cpu,emu,$TEST_DEV"))" 30 logged test_exe executors "cpu,emu,$TEST_DEV"
  for t in cli dawin; do step "tests: $t" 60 logged test_exe "$t" "cpu,$TEST_DEV"; done
  if [ "$MODE" = dry-run ]; then
    printf 'compute-sanitizer\tskip\t0\tdry run (no GPU)\n' >> "$WORK/status.tsv"
  else
    step compute-sanitizer 90 logged sanitizer
  fi
  step "dawin bench (f32 and bf16 kernels)" 90 logged "$BIN" bench --device "$DEV" --suite kernels "${q[@]}" "${reps[@]}" "${kern[@]}" --json "$WORK/bench-dawin-kernels.json"
  step "dawin bench (f32 pipeline)" 60 logged "$BIN" bench --device "$DEV" --suite pipeline "${q[@]}" "${reps[@]}" "${pipe[@]}" --json "$WORK/bench-dawin.json"
  step "dawin bench (bf16 pipeline)" 45 logged "$BIN" bench --device "$DEV" --suite pipeline --precision bf16 "${q[@]}" "${reps[@]}" "${pipe[@]}" --json "$WORK/bench-dawin-bf16.json"
  step "bench_torch.py" 90 logged torch_bench --device "$TORCH_DEV" "${q[@]}" "${reps[@]}" --json "$WORK/bench-torch.json"
  step "bench_torch.py (bf16 pipeline)" 45 logged torch_bench --device "$TORCH_DEV" --suite pipeline --precision bf16 "${q[@]}" "${reps[@]}" --json "$WORK/bench-torch-bf16.json"
  if [ "$MODE" = dry-run ]; then
    printf 'ncu\tskip\t0\tdry run (no GPU)\n' >> "$WORK/status.tsv"
  else
    step ncu 60 logged ncu_kernels
  fi
  step "end to end, f32" 45 logged "$BIN" bench --device "$DEV" --suite pipeline --filter "dawin exact" "${e2e[@]}" --json "$WORK/e2e-dawin.json"
  step "end to end, bf16" 30 logged "$BIN" bench --device "$DEV" --suite pipeline --precision bf16 --filter "dawin exact" "${e2e[@]}" --json "$WORK/e2e-dawin-bf16.json"
  step "end to end, PyTorch f32" 45 logged torch_bench --device "$TORCH_DEV" --suite pipeline --filter "dual batched" "${e2e[@]}" --json "$WORK/e2e-torch.json"
  step "end to end, PyTorch bf16" 30 logged torch_bench --device "$TORCH_DEV" --suite pipeline --precision bf16 --filter "dual batched" "${e2e[@]}" --json "$WORK/e2e-torch-bf16.json"
  step "dawin bench (multi-task merges)" 60 logged "$BIN" bench --device "$DEV" --suite mtl "${mtl[@]}" --json "$WORK/bench-mtl.json"
  python3 tools/gpu-results.py summarize "$WORK" "$OUT"
  for f in bench-dawin-kernels.json bench-dawin.json bench-torch.json bench-mtl.json devices.json; do [ -f "$WORK/$f" ] && cp "$WORK/$f" "$OUT/"; done
  rm -f "$LOG.step"
  cat "$OUT/summary.md" | sed -n '1,40p'
  echo "-> $OUT (summary.md, results.json, logs.txt); $(($(date +%s) - START))s"
  ! grep -q $'\tfail\t' "$WORK/status.tsv"
}

case "${1:-}" in
  --build) build_carry ;;
  --run)
    MODE=run DEV=cuda TEST_DEV=cuda TORCH_DEV=cuda CARRYDIR=$CARRY BIN=$CARRY/dawin OUT=${OUT:-$ROOT/target/gpu-check/out}
    [ -x "$BIN" ] || { echo "no $BIN: run tools/gpu-check.sh --build here and carry target/gpu-check/carry"; exit 1; }
    run_steps ;;
  --dry-run)
    MODE=dry-run DEV=cuda TEST_DEV=emu TORCH_DEV=cpu CARRYDIR=$ROOT/target/gpu-check/dry-carry BIN=$CARRYDIR/dawin
    OUT=${OUT:-$ROOT/target/gpu-check/dry-run}
    build_dry || { echo "the dry-run build failed"; exit 1; }
    run_steps ;;
  *) usage ;;
esac
