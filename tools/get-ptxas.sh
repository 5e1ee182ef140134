#!/usr/bin/env bash
# Fetches NVIDIA's ptxas from the PyPI wheel nvidia-cuda-nvcc into .tools/
# (ignored by git, never committed) and prints its path. Needs only libc.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=13.0.88
dest=.tools/ptxas-$VERSION
if [ ! -x "$dest/ptxas" ]; then
  mkdir -p "$dest"
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary=:all: "nvidia-cuda-nvcc==$VERSION" -d "$tmp" >&2
  python3 - "$tmp" "$dest" <<'PY'
import glob, sys, zipfile, os
whl = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    data = z.read("nvidia/cu13/bin/ptxas")
out = os.path.join(sys.argv[2], "ptxas")
with open(out, "wb") as f:
    f.write(data)
os.chmod(out, 0o755)
PY
  rm -rf "$tmp"
fi
echo "$PWD/$dest/ptxas"
