#!/usr/bin/env python3
"""dawin against PyTorch in one run: `dawin bench --json` and
tools/bench_torch.py --json with the same arguments, back to back on the
same machine, then one table of the rows both have, with the ratio
PyTorch time / dawin time at the minimum (above 1: dawin is faster; for
the pipeline rows, which time the same images, it is also the ratio of
images/s).

    python tools/bench_compare.py [--device cpu] [--batch 8] [--repeats 5]
        [--suite kernels] [--filter TEXT] [--bin target/release/dawin]
        [--rounds 2] [--json OUT.json]

Needs torch in the Python that runs it. `--rounds N` alternates the two
N times and keeps each row's best minimum, so a burst of noise on a shared
machine hits both sides alike. Prints the CPU model (or GPU) with the
table.
"""

import argparse
import json
import pathlib
import platform
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"]
                return " ".join(f for f in wanted if f in have)
    except OSError:
        pass
    return ""


def run_side(cmd, out):
    subprocess.run(cmd + ["--json", str(out)], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    return json.loads(pathlib.Path(out).read_text())


def rows_of(doc):
    rows = doc["rows"] if isinstance(doc, dict) else doc
    return {r["name"]: r for r in rows}


def best(into, rows):
    for name, r in rows.items():
        if name not in into or r["min_ms"] < into[name]["min_ms"]:
            into[name] = r


# dawin's pipeline rows and the PyTorch way each is compared with.
COUNTERPARTS = {
    "pipeline dawin exact": "pipeline dawin dual batched",
    "pipeline dawin materialize": "pipeline dawin official per-sample loop",
}


def pair(dawin, torch):
    """dawin row → the torch row whose name starts with it (torch adds a
    suffix like "(torch.lerp_)"), or its named counterpart; gemm rows pair
    with torch's fp32 row. The upload row is left out: on the CPU the
    PyTorch side copies nothing."""
    out = []
    for name, d in dawin.items():
        if "upload" in name:
            continue
        base, bf16 = (name[:-5], " bf16") if name.endswith(" bf16") else (name, "")
        if base in COUNTERPARTS:
            name_t = COUNTERPARTS[base] + bf16
            if name_t in torch:
                out.append((f"{name} vs {name_t[len('pipeline '):]}", d, torch[name_t]))
            continue
        cands = [t for t in torch if t == name or t.startswith(name + " ")]
        if name.startswith("gemm") and not name.endswith("bf16"):
            cands = [t for t in cands if "fp32" in t] or cands
        cands = [t for t in cands if ("bf16" in t) == ("bf16" in name)]
        if cands:
            out.append((name, d, torch[min(cands, key=len)]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", default="8")
    ap.add_argument("--repeats", default="5")
    ap.add_argument("--suite", default="all")
    ap.add_argument("--filter", default=None)
    ap.add_argument("--precision", default="f32")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--bin", default=str(ROOT / "target/release/dawin"))
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    common = ["--device", a.device, "--batch", a.batch, "--repeats", a.repeats,
              "--suite", a.suite, "--precision", a.precision]
    if a.filter:
        common += ["--filter", a.filter]
    dawin, torch = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            best(dawin, rows_of(run_side([a.bin, "bench"] + common, f"{tmp}/d{r}.json")))
            best(torch, rows_of(run_side([sys.executable, "tools/bench_torch.py"] + common,
                                         f"{tmp}/t{r}.json")))
    where = f"{cpu_model()} ({cpu_flags()})" if a.device == "cpu" else a.device
    print(f"dawin vs PyTorch on {where}, {' '.join(common)}, best of {a.rounds} round(s)\n")
    print(f"| row | dawin ms | PyTorch ms | ratio |")
    print("|---|---|---|---|")
    table = []
    for name, d, t in pair(dawin, torch):
        # Pipeline rows time the same images on both sides, so the time
        # ratio is the images/s ratio too.
        ratio = t["min_ms"] / d["min_ms"]
        table.append({"row": name, "dawin_ms": d["min_ms"], "torch_ms": t["min_ms"], "ratio": ratio})
        print(f"| {name} | {d['min_ms']:.3f} | {t['min_ms']:.3f} | {ratio:.2f} |")
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps({"where": where, "args": common, "rows": table}, indent=1))


if __name__ == "__main__":
    main()
