#!/usr/bin/env python3
"""Turns what tools/gpu-check.sh measured into tables, with nothing copied by hand.

  gpu-results.py compare A.safetensors B.safetensors [--tol T]
      max |a - b| / max |b| per f32 tensor of two output files; exit 1 above T.
  gpu-results.py summarize WORK OUT
      WORK/status.tsv (one step a line: name, status, seconds, note) and the
      JSON files beside it -> OUT/results.json (every figure) and
      OUT/summary.md (one table per step, the ratios against PyTorch).
  gpu-results.py docs BUNDLE [BUNDLE...] [--write docs/benchmarks.md]
      the GPU sections of docs/benchmarks.md from each BUNDLE/results.json
      (one section per visit, in the order given); with --write, replaces the
      part between the gpu-results markers.

Standard library only: it runs on the GPU machine (no Rust there) and here.
"""
import argparse
import json
import math
import os
import struct
import sys
from array import array

BEGIN, END = "<!-- gpu-results:begin -->", "<!-- gpu-results:end -->"


# ------------------------------------------------------------ safetensors

def read_f32_tensors(path):
    """{name: (shape, array('f'))} of the f32 tensors of a safetensors file."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__" or t["dtype"] != "F32":
            continue
        a, b = t["data_offsets"]
        v = array("f")
        v.frombytes(raw[8 + n + a:8 + n + b])
        if sys.byteorder != "little":
            v.byteswap()
        out[name] = (t["shape"], v)
    return out


def compare(a_path, b_path, tol):
    a, b = read_f32_tensors(a_path), read_f32_tensors(b_path)
    worst = 0.0
    if set(a) != set(b):
        print(f"tensors differ: {sorted(a)} vs {sorted(b)}")
        return 1
    for name in sorted(a):
        (sa, va), (sb, vb) = a[name], b[name]
        if sa != sb:
            print(f"{name}: shape {sa} vs {sb}")
            return 1
        scale = max((abs(x) for x in vb), default=0.0) or 1e-30
        err = max((abs(x - y) if not (math.isnan(x) or math.isnan(y)) else math.inf
                   for x, y in zip(va, vb)), default=0.0) / scale
        worst = max(worst, err)
        print(f"{name}: max difference {err:.2e} of the scale {scale:.3g}")
    return 0 if worst <= tol else 1


# ------------------------------------------------------------ summaries

def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# dawin row name -> the PyTorch row it races (suffix-free names; " bf16"
# rows map to their bf16 counterparts).
def torch_name(name):
    bf16 = name.endswith(" bf16")
    base = name[:-5] if bf16 else name
    if base.startswith("gemm ") and not base.startswith("gemm_dual"):
        return f"{base} {'bf16' if bf16 else 'fp32'}"
    if base.startswith("lerp "):
        return None if bf16 else base + " (torch.lerp_)"
    if base.startswith("attention "):
        return base + (" bf16 (sdpa)" if bf16 else " (sdpa)")
    pipeline = {
        "pipeline dawin exact": "pipeline dawin dual batched",
        "pipeline dawin bmm:3": "pipeline dawin bmm:3 (tertiles)",
        "pipeline dawin materialize": "pipeline dawin official per-sample loop",
    }
    if base.startswith("pipeline "):
        return pipeline.get(base, base) + (" bf16" if bf16 else "")
    return None if bf16 else base


def ratios(dawin, torch):
    """Rows of (dawin row, torch row, dawin ms, torch ms, ratio): above 1
    means dawin is faster. Kernels compare min ms, pipelines median ms."""
    by_name = {r["name"]: r for r in torch}
    out = []
    for r in dawin:
        t = by_name.get(torch_name(r["name"]) or "")
        if t is None:
            continue
        key = "median_ms" if r.get("images") else "min_ms"
        out.append(dict(dawin=r["name"], torch=t["name"], dawin_ms=r[key], torch_ms=t[key],
                        ratio=t[key] / r[key] if r[key] > 0 else None))
    return out


def summarize(work, out):
    steps = []
    with open(os.path.join(work, "status.tsv")) as f:
        for line in f:
            name, status, secs, note = (line.rstrip("\n").split("\t") + [""] * 4)[:4]
            steps.append(dict(step=name, status=status, seconds=float(secs or 0), note=note))
    results = dict(steps=steps, environment=load(os.path.join(work, "environment.json")))
    for key in ("bench-dawin", "bench-dawin-bf16", "bench-torch", "bench-torch-bf16",
                "e2e-dawin", "e2e-dawin-bf16", "e2e-torch", "e2e-torch-bf16", "bench-mtl", "devices"):
        results[key] = load(os.path.join(work, key + ".json"))
    rows = lambda k: (results.get(k) or {}).get("rows", []) if isinstance(results.get(k), dict) else []
    # The kernel suite runs as its own step; its rows lead bench-dawin's.
    kernels = load(os.path.join(work, "bench-dawin-kernels.json"))
    if isinstance(kernels, dict):
        merged = dict(results.get("bench-dawin") or kernels)
        merged["rows"] = kernels.get("rows", []) + rows("bench-dawin")
        results["bench-dawin"] = merged
    results["ratios"] = (ratios(rows("bench-dawin"), rows("bench-torch"))
                         + ratios(rows("bench-dawin-bf16"), rows("bench-torch-bf16"))
                         + ratios(rows("e2e-dawin"), rows("e2e-torch"))
                         + ratios(rows("e2e-dawin-bf16"), rows("e2e-torch-bf16")))
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(markdown(results))


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def markdown(res):
    env = res.get("environment") or {}
    s = "# GPU check\n\n"
    s += f"Machine: {env.get('gpu', 'unknown')}; driver {env.get('driver', '?')}; "
    s += f"mode {env.get('mode', '?')}; date {env.get('date', '?')}.\n\n"
    s += "## Steps\n\n" + table(["step", "result", "seconds", "note"],
                                [[x["step"], x["status"], f"{x['seconds']:.0f}", x["note"]] for x in res["steps"]])
    dev = res.get("devices") or []
    if dev:
        s += "\n## Every op on every executor (max difference of the output's scale)\n\n"
        s += table(["op", "device", "against", "max diff", "tolerance", "ok"],
                   [[r["op"], r["device"], r["against"], f"{r['max_rel_diff']:.2e}", f"{r['tolerance']:.0e}",
                     "yes" if r["max_rel_diff"] <= r["tolerance"] else "**no**"] for r in dev])
    bench = (res.get("bench-dawin") or {}).get("rows", [])
    if bench:
        s += "\n## dawin bench\n\n" + table(
            ["row", "min ms", "median ms", "TFLOP/s", "GB/s", "images/s"],
            [[r["name"], f"{r['min_ms']:.3f}", f"{r['median_ms']:.3f}",
              f"{r['flops'] / r['min_ms'] / 1e9:.2f}" if r.get("flops") else "-",
              f"{r['bytes'] / r['min_ms'] / 1e6:.1f}" if r.get("bytes") else "-",
              f"{r['images'] / r['median_ms'] * 1e3:.1f}" if r.get("images") else "-"] for r in bench])
    mtl = {r["name"]: r for r in (res.get("bench-mtl") or {}).get("rows", []) if r.get("images")}
    if mtl:
        rate = lambda r: r["images"] / r["median_ms"] * 1e3
        built = next((r for n, r in mtl.items() if "materialize" in n), None)
        s += "\n## Multi-task per-sample merges (against building each sample's model, same run)\n\n" + table(
            ["row", "median ms", "images/s", "vs materialize"],
            [[n, f"{r['median_ms']:.3f}", f"{rate(r):.1f}",
              f"{rate(r) / rate(built):.2f}" if built else "-"] for n, r in mtl.items()])
    if res.get("ratios"):
        s += "\n## Against PyTorch, same run (above 1: dawin faster)\n\n" + table(
            ["dawin", "PyTorch", "dawin ms", "PyTorch ms", "ratio"],
            [[r["dawin"], r["torch"], f"{r['dawin_ms']:.3f}", f"{r['torch_ms']:.3f}",
              f"{r['ratio']:.2f}" if r["ratio"] else "-"] for r in res["ratios"]])
    return s


def docs(bundles, write):
    body = ""
    for bundle in bundles:
        res = load(os.path.join(bundle, "results.json"))
        if res is None:
            sys.exit(f"{bundle}/results.json is missing or not JSON")
        # Each visit's own section; its tables one level below.
        section = markdown(res).replace("\n## ", "\n### ")
        body += section.replace("# GPU check", f"## GPU: {bundle}", 1) + "\n"
    block = f"{BEGIN}\n{body}{END}"
    if not write:
        print(block)
        return
    with open(write) as f:
        text = f.read()
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(write, "w") as f:
        f.write(text)
    print(f"-> {write}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--tol", type=float, default=1e-4)
    s = sub.add_parser("summarize")
    s.add_argument("work")
    s.add_argument("out")
    d = sub.add_parser("docs")
    d.add_argument("bundle", nargs="+")
    d.add_argument("--write", default=None)
    a = ap.parse_args()
    if a.cmd == "compare":
        sys.exit(compare(a.a, a.b, a.tol))
    if a.cmd == "summarize":
        summarize(a.work, a.out)
    if a.cmd == "docs":
        docs(a.bundle, a.write)


if __name__ == "__main__":
    main()
