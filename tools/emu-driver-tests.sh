#!/usr/bin/env bash
# The property tests (ops, ops_bf16) and the every-op comparison (executors),
# the test binary `numerics`, on cpu, emu and cuda, where cuda is the cuda
# build on the emulated driver:
# the launchers and cust's driver calls of every op run through the driver
# ABI on every CI run. (The fixture forwards and commands on cuda run in
# tests/emu_driver.rs.)
#
# Usage: tools/emu-driver-tests.sh
set -euo pipefail
cd "$(dirname "$0")/.."
lib=$(tools/build-emu-driver.sh 2>/dev/null | tail -1)
messages=$(mktemp)
trap 'rm -f "$messages"' EXIT
tools/build-cuda.sh --test numerics --message-format=json > "$messages" 2>/dev/null
python3 - "$messages" <<'PY' | while read -r name exe; do
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        m = json.loads(line)
        t = m.get("target", {})
        if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in t.get("kind", []):
            print(t["name"], m["executable"])
PY
  echo "== $name on cpu, emu and cuda (emulated driver)"
  LD_LIBRARY_PATH=$lib DAWIN_TEST_DEVICES=cpu,emu,cuda DAWIN_REPO=$PWD "$exe" 2>&1 | tail -3
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "$name failed on the emulated driver"; exit 1; }
done
