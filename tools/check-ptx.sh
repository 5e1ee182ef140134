#!/usr/bin/env bash
# Validates every ptx/*.ptx with ptxas for sm_80 and sm_90: -Werror, and no
# register spills. Usage: tools/check-ptx.sh [PTXAS]
set -euo pipefail
cd "$(dirname "$0")/.."
ptxas=${1:-$(tools/get-ptxas.sh)}
fail=0
for f in ptx/*.ptx; do
  for arch in sm_80 sm_90; do
    if ! out=$("$ptxas" -arch=$arch -v -Werror "$f" -o /dev/null 2>&1); then
      echo "FAIL $f ($arch):"; echo "$out"; fail=1; continue
    fi
    if echo "$out" | grep -Eq '[1-9][0-9]* bytes spill (stores|loads)'; then
      echo "FAIL $f ($arch): register spills"; echo "$out"; fail=1; continue
    fi
    regs=$(echo "$out" | grep -o 'Used [0-9]* registers' | head -1)
    echo "ok   $f ($arch): $regs"
  done
done
exit $fail
