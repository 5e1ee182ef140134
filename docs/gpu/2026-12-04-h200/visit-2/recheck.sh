#!/usr/bin/env bash
# Second GPU visit of 2026-12-04: the checks of the first that crashed at
# exit or outran their boxes, after the drop-order fix.
set -u
cd "$(dirname "$0")/../../.."
C=$PWD/target/gpu-check/carry; BIN=$C/dawin; W=$(mktemp -d); L=$OUT/log2.txt
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/nvidia/lib64
S0=$(date +%s)
s() { local n=$1 b=$2; shift 2; echo "=== $n" >>"$L"; local t=$(date +%s); timeout -k5 "$b" "$@" >>"$L" 2>&1; local rc=$?; echo "=== $n: rc=$rc $(( $(date +%s)-t ))s (at $(( $(date +%s)-S0 ))s)" | tee -a "$L"; }
smoke() { local f=0; for m in tests/fixtures/*.io.safetensors; do n=$(basename "$m" .io.safetensors)
  "$BIN" forward --model tests/fixtures/$n.safetensors --input "$m" --out "$W/$n.cpu.safetensors" --device cpu || f=1
  "$BIN" forward --model tests/fixtures/$n.safetensors --input "$m" --out "$W/$n.cuda.safetensors" --device cuda; echo "cuda forward rc=$?"
  python3 tools/gpu-results.py compare "$W/$n.cuda.safetensors" "$W/$n.cpu.safetensors" --tol 1e-4 || f=1; done; return $f; }
t() { DAWIN_TEST_DEVICES=$2 PROPTEST_CASES=8 DAWIN_REPO=$PWD DAWIN_BIN=$BIN DAWIN_DEVICE_TABLE=$OUT/devices.json "$C/$1" --test-threads 16; }
san() { local fx=tests/fixtures/hf_quickgelu
  compute-sanitizer --tool memcheck --error-exitcode 9 "$BIN" forward --model $fx.safetensors --input $fx.io.safetensors --out "$W/san.safetensors" --device cuda
  echo "memcheck forward rc=$?"
  compute-sanitizer --tool memcheck --error-exitcode 9 "$BIN" eval --pretrained tests/fixtures/dawin_pt.safetensors --finetuned tests/fixtures/dawin_ft.safetensors --data tests/fixtures/dawin_data.safetensors --out-dir "$W/san-eval" --methods zeroshot,wise-ft:0.5,dawin --quiet --device cuda
  echo "memcheck eval rc=$?"; grep -o '"device"[^,]*' "$W/san-eval/summary.json"; }
export -f smoke t san; export BIN W C
s smoke 40 smoke
s "tests ops" 45 t ops cpu,cuda
s "tests ops_bf16" 45 t ops_bf16 cpu,cuda
s "tests devices" 30 t devices cpu,emu,cuda
s sanitizer 50 san
s "bench kernels" 70 "$BIN" bench --device cuda --suite kernels --repeats 3 --json "$OUT/kernels.json"
s "bench pipeline f32" 50 "$BIN" bench --device cuda --suite pipeline --repeats 2 --json "$OUT/pipeline.json"
s "e2e exact f32 10k" 35 "$BIN" bench --device cuda --suite pipeline --images 10000 --batch 256 --repeats 1 --filter "dawin exact" --json "$OUT/e2e.json"
s "e2e exact bf16 10k" 25 "$BIN" bench --device cuda --suite pipeline --precision bf16 --images 10000 --batch 256 --repeats 1 --filter "dawin exact" --json "$OUT/e2e-bf16.json"
s "mtl 64" 30 "$BIN" bench --device cuda --suite mtl --images 64 --batch 64 --repeats 1 --json "$OUT/mtl.json"
grep -E "^=== .*rc=|^test result|panicked|Segmentation|images/s|^pipeline|^gemm|^attention|^lerp|^layernorm|^quick|^softmax|^mtl" "$L" | cut -c1-150
