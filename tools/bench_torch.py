#!/usr/bin/env python3
"""PyTorch baselines for `dawin bench`: the same workloads, the same table.

Kernels (CUDA events, L2 flushed before each repeat on the GPU):
  * cuBLAS GEMM at the ViT-B/32 and B/16 linear shapes and 4096^3, in fp32,
    tf32 and bf16 (C = A @ W^T + b, as torch.nn.functional.linear);
  * torch SDPA at 50/197/257 tokens (f32), torch.lerp_ over 88M weights,
    layer_norm, the quick_gelu expression, softmax entropy over 1000 classes.
Pipeline (wall clock, images/s at the median), on a random CLIP ViT-B/32
image tower + 1000-class head written here in plain torch:
  * forward of one model, the expertise pass (both models + entropies);
  * DaWin as the official code runs it: a state-dict merge per sample, then a
    batch-1 forward ("official per-sample loop");
  * the grouped version: 3 merged models, one per λ tertile, batched
    ("bmm:3 (tertiles)"; the official code fits a Beta mixture instead);
  * DaWin done well in torch: both weight sets in one batched pass with every
    linear/conv/layernorm output mixed per sample ("dual batched").

Usage:
  python tools/bench_torch.py                     # on cuda if present
  python tools/bench_torch.py --device cpu --quick
Needs only torch. Shapes follow `dawin bench` (same --batch, --quick).
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F


def timer(dev):
    """Returns run(fn) -> milliseconds of one call, caches flushed first."""
    if dev.type == "cuda":
        flush = torch.empty(256 << 20, dtype=torch.uint8, device=dev)

        def run(fn):
            flush.zero_()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            return a.elapsed_time(b)
    else:
        flush = torch.empty(256 << 20, dtype=torch.uint8)

        def run(fn):
            flush.add_(1)
            t = time.perf_counter()
            fn()
            return (time.perf_counter() - t) * 1e3
    return run


def measure(run, fn, repeats):
    run(fn)  # warm-up
    ts = sorted(run(fn) for _ in range(repeats))
    return ts[0], ts[len(ts) // 2]


class Rows:
    def __init__(self):
        self.rows = []

    def add(self, name, mn, med, flops=0.0, nbytes=0.0, images=None):
        self.rows.append(dict(name=name, min_ms=mn, median_ms=med, flops=flops, bytes=nbytes, images=images))
        print(fmt_row(self.rows[-1]), flush=True)


def fmt_row(r):
    s = r["min_ms"] / 1e3
    if r["images"] is None:
        gbs = f"{r['bytes'] / s / 1e9:.1f}"
        tfs = f"{r['flops'] / s / 1e12:.3f}"
        ips = "-"
    else:
        gbs = tfs = "-"
        ips = f"{r['images'] / (r['median_ms'] / 1e3):.1f}"
    return f"{r['name']:<44} {r['min_ms']:>10.3f} {r['median_ms']:>10.3f} {gbs:>9} {tfs:>9} {'-':>7} {ips:>10}"


def kernels(dev, a, rows, run):
    q, b = a.quick, a.batch
    width, mlp = (64, 256) if q else (768, 3072)
    g = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=g).to(dev, dtype)

    dtypes = [("fp32", torch.float32, False), ("tf32", torch.float32, True), ("bf16", torch.bfloat16, False)]
    if dev.type != "cuda":
        # No tf32 on the CPU; bf16 runs on oneDNN (AMX or AVX512-BF16 where
        # the CPU has them), the rows dawin's bf16 gemm races.
        dtypes = [dtypes[0], dtypes[2]]
    shapes = []
    for model, tokens in (("B/32", 50), ("B/16", 197)):
        m = b * (tokens // 10 if q else tokens)
        for layer, n, k in (("qkv", 3 * width, width), ("attn_out", width, width), ("fc1", mlp, width), ("fc2", width, mlp)):
            shapes.append((f"gemm B/{model[2:]} {layer} {m}x{n}x{k}", m, n, k))
    sq = 128 if q else 4096
    shapes.append((f"gemm {sq}x{sq}x{sq}", sq, sq, sq))
    for tag, dt, tf32 in dtypes:
        if dev.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = tf32
        for name, m, n, k in shapes:
            # The filter sees the row's full name, dtype tag included.
            if a.filter and a.filter not in f"{name} {tag}":
                continue
            x, w, bias = rnd(m, k, dtype=dt), rnd(n, k, dtype=dt), rnd(n, dtype=dt)
            el = 2 if dt == torch.bfloat16 else 4
            mn, med = measure(run, lambda: F.linear(x, w, bias), a.repeats)
            rows.add(f"{name} {tag}", mn, med, 2.0 * m * n * k, el * (m * k + n * k + m * n + n))
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False

    n = 1 << 20 if q else 88_000_000
    name = f"lerp {n} weights"
    if not a.filter or a.filter in name:
        w0, w1 = rnd(n), rnd(n)
        mn, med = measure(run, lambda: w0.lerp_(w1, 0.3), a.repeats)
        rows.add(name + " (torch.lerp_)", mn, med, 2.0 * n, 12.0 * n)
        dst = torch.empty_like(w0)
        mn, med = measure(run, lambda: dst.copy_(w0), a.repeats)
        rows.add(f"copy {n} floats (device to device)", mn, med, 0.0, 8.0 * n)

    heads = 2 if q else 12
    bb = 1 if q else b
    for t in (50, 197, 257):
        name = f"attention {t} tokens {bb}x{heads}x64"
        wanted = [not a.filter or a.filter in n for n in (name, name + " bf16")]
        if not any(wanted):
            continue
        flops, nbytes = bb * heads * t * t * (4.0 * 64 + 5), 16.0 * bb * t * heads * 64
        qq, kk, vv = (rnd(bb, heads, t, 64) for _ in range(3))
        if wanted[0]:
            mn, med = measure(run, lambda: F.scaled_dot_product_attention(qq, kk, vv), a.repeats)
            rows.add(name + " (sdpa)", mn, med, flops, nbytes)
        if wanted[1]:
            # bf16 SDPA (the flash kernel on a GPU): the row attention_bf16 races.
            qb, kb, vb = (x.to(torch.bfloat16) for x in (qq, kk, vv))
            mn, med = measure(run, lambda: F.scaled_dot_product_attention(qb, kb, vb), a.repeats)
            rows.add(name + " bf16 (sdpa)", mn, med, flops, nbytes / 2)

    m = b * (5 if q else 50)
    name = f"layernorm {m}x{width}"
    if not a.filter or a.filter in name:
        x, gm, bt = rnd(m, width), rnd(width), rnd(width)
        mn, med = measure(run, lambda: F.layer_norm(x, (width,), gm, bt, 1e-5), a.repeats)
        rows.add(name, mn, med, 8.0 * m * width, 4.0 * (2 * m * width + 2 * width))
    name = f"quick_gelu {m}x{mlp}"
    if not a.filter or a.filter in name:
        x = rnd(m, mlp)
        mn, med = measure(run, lambda: x * torch.sigmoid(1.702 * x), a.repeats)
        rows.add(name, mn, med, 8.0 * m * mlp, 8.0 * m * mlp)
    r = 256 if q else 50_000
    name = f"softmax_entropy {r}x1000"
    if not a.filter or a.filter in name:
        z = rnd(r, 1000)

        def ent():
            lp = torch.log_softmax(z, dim=1)
            return -(lp.exp() * lp).sum(1)

        mn, med = measure(run, ent, a.repeats)
        rows.add(name, mn, med, 8.0 * r * 1000, 4.0 * (r * 1000 + 4 * r))


# ---------------------------------------------------------------- the model

def vit_spec(quick):
    if quick:
        return dict(width=64, layers=2, heads=2, mlp=256, image=32, patch=8, embed=32, classes=10)
    return dict(width=768, layers=12, heads=12, mlp=3072, image=224, patch=32, embed=512, classes=1000)


def random_params(s, seed, dev):
    g = torch.Generator().manual_seed(seed)
    w, t = s["width"], (s["image"] // s["patch"]) ** 2 + 1

    def r(*shape, std=0.02):
        return (torch.randn(*shape, generator=g) * std).to(dev)

    p = dict(conv=r(w, 3, s["patch"], s["patch"]), cls=r(w), pos=r(t, w),
             ln_pre_w=1 + r(w), ln_pre_b=r(w), ln_post_w=1 + r(w), ln_post_b=r(w),
             proj=r(s["embed"], w), head_w=r(s["classes"], s["embed"], std=1.0), head_b=r(s["classes"]))
    for i in range(s["layers"]):
        p.update({f"{i}.ln1_w": 1 + r(w), f"{i}.ln1_b": r(w), f"{i}.qkv_w": r(3 * w, w), f"{i}.qkv_b": r(3 * w),
                  f"{i}.out_w": r(w, w), f"{i}.out_b": r(w), f"{i}.ln2_w": 1 + r(w), f"{i}.ln2_b": r(w),
                  f"{i}.fc1_w": r(s["mlp"], w), f"{i}.fc1_b": r(s["mlp"]), f"{i}.fc2_w": r(w, s["mlp"]),
                  f"{i}.fc2_b": r(w)})
    return p


def vit(s, p, x, p1=None, lam=None):
    """CLIP image tower + normalised-embedding linear head. With p1 and
    lam [B], every parameterised op is run with both weight sets and mixed
    per sample: out = (1-λ)·op(θ0) + λ·op(θ1), exactly DaWin's merged model
    (every op is affine in its parameters)."""
    B, w, h = x.shape[0], s["width"], s["heads"]
    L = None if lam is None else lam.view(B, 1, 1)

    def lin(h_, name_w, name_b=None):
        y = F.linear(h_, p[name_w], p[name_b] if name_b else None)
        if p1 is None:
            return y
        y1 = F.linear(h_, p1[name_w], p1[name_b] if name_b else None)
        lv = L if y.dim() == 3 else L.view(B, 1)
        return y + lv * (y1 - y)

    def ln(h_, nw, nb):
        if p1 is None:
            return F.layer_norm(h_, (h_.shape[-1],), p[nw], p[nb], 1e-5)
        lv = L if h_.dim() == 3 else L.view(B, 1)
        return F.layer_norm(h_, (h_.shape[-1],)) * torch.lerp(p[nw], p1[nw], lv) + torch.lerp(p[nb], p1[nb], lv)

    pt = F.conv2d(x, p["conv"], stride=s["patch"]).flatten(2).transpose(1, 2)
    if p1 is not None:
        pt1 = F.conv2d(x, p1["conv"], stride=s["patch"]).flatten(2).transpose(1, 2)
        pt = pt + L * (pt1 - pt)
        cls = torch.lerp(p["cls"], p1["cls"], L)
        pos = torch.lerp(p["pos"], p1["pos"], L)
        z = torch.cat([cls.expand(B, 1, w), pt], 1) + pos
    else:
        z = torch.cat([p["cls"].expand(B, 1, w), pt], 1) + p["pos"]
    z = ln(z, "ln_pre_w", "ln_pre_b")
    T = z.shape[1]
    for i in range(s["layers"]):
        y = ln(z, f"{i}.ln1_w", f"{i}.ln1_b")
        qkv = lin(y, f"{i}.qkv_w", f"{i}.qkv_b").view(B, T, 3, h, w // h).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(B, T, w)
        z = z + lin(a, f"{i}.out_w", f"{i}.out_b")
        y = lin(ln(z, f"{i}.ln2_w", f"{i}.ln2_b"), f"{i}.fc1_w", f"{i}.fc1_b")
        z = z + lin(y * torch.sigmoid(1.702 * y), f"{i}.fc2_w", f"{i}.fc2_b")
    e = lin(ln(z[:, 0], "ln_post_w", "ln_post_b"), "proj")
    return lin(F.normalize(e, dim=-1), "head_w", "head_b")


def entropy(z):
    lp = torch.log_softmax(z.float(), dim=1)
    return -(lp.exp() * lp).sum(1)


def pipeline(dev, a, rows):
    s = vit_spec(a.quick)
    p0, p1 = random_params(s, 1, dev), random_params(s, 2, dev)
    n, bs = a.images, a.batch
    # The images stay in host memory and each batch is copied to the device
    # inside the timed region, as dawin's pipeline uploads them (and as an
    # evaluation that reads its data from disk must).
    x = torch.randn(n, 3, s["image"], s["image"], generator=torch.Generator().manual_seed(7))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def batched(p):
        return torch.cat([vit(s, p, x[i:i + bs].to(dev)) for i in range(0, n, bs)])

    def expertise():
        hp, hf = entropy(batched(p0)), entropy(batched(p1))
        return torch.exp(-hf) / (torch.exp(-hp) + torch.exp(-hf))

    def official():
        lam = expertise().tolist()
        for i, l in enumerate(lam):
            merged = {k: torch.lerp(p0[k], p1[k], l) for k in p0}
            vit(s, merged, x[i:i + 1].to(dev))

    def grouped():
        lam = expertise()
        edges = torch.quantile(lam, torch.tensor([1 / 3, 2 / 3], device=dev))
        comp = torch.bucketize(lam, edges)
        for k in range(3):
            idx = (comp == k).nonzero().flatten()
            if len(idx) == 0:
                continue
            merged = {kk: torch.lerp(p0[kk], p1[kk], float(lam[idx].mean())) for kk in p0}
            for j in range(0, len(idx), bs):
                vit(s, merged, x[idx[j:j + bs].cpu()].to(dev))

    def dual():
        lam = expertise()
        for i in range(0, n, bs):
            vit(s, p0, x[i:i + bs].to(dev), p1, lam[i:i + bs])

    def upload():
        return [x[i:i + bs].to(dev) for i in range(0, n, bs)]

    cases = [("upload (images to the device)", upload), ("forward (one model)", lambda: batched(p0)), ("expertise (both models)", expertise),
             ("dawin dual batched", dual), ("dawin bmm:3 (tertiles)", grouped),
             ("dawin official per-sample loop", official)]
    # bf16: autocast, the usual best PyTorch mixed precision (bf16 matmuls
    # and SDPA, f32 layernorm and softmax), as dawin bench --precision bf16.
    bf16 = a.precision == "bf16"
    amp = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=bf16)
    suffix = " bf16" if bf16 else ""
    with torch.inference_mode(), amp:
        for name, fn in cases:
            if a.filter and a.filter not in "pipeline " + name:
                continue
            ts = []
            for r in range(a.repeats + 1):
                sync()
                t = time.perf_counter()
                fn()
                sync()
                if r:
                    ts.append((time.perf_counter() - t) * 1e3)
            ts.sort()
            rows.add(f"pipeline {name}{suffix}", ts[0], ts[len(ts) // 2], images=n)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="small shapes and model (as dawin bench --quick)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--precision", choices=["f32", "bf16"], default="f32",
                    help="arithmetic of the pipeline rows (bf16: torch.autocast)")
    ap.add_argument("--batch", type=int, default=None, help="images per batch (256, or 2 with --quick)")
    ap.add_argument("--images", type=int, default=None, help="pipeline images per repeat (default: the batch)")
    ap.add_argument("--suite", choices=["kernels", "pipeline", "all"], default="all")
    ap.add_argument("--filter", default=None)
    ap.add_argument("--json", default=None, help="also write the rows here")
    a = ap.parse_args()
    a.batch = a.batch or (2 if a.quick else 256)
    a.images = a.images or a.batch
    dev = torch.device(a.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"torch {torch.__version__} bench on {name}")
    print(f"{'benchmark':<44} {'min ms':>10} {'median ms':>10} {'GB/s':>9} {'TFLOP/s':>9} {'%roof':>7} {'images/s':>10}")
    rows = Rows()
    if a.suite != "pipeline":
        kernels(dev, a, rows, timer(dev))
    if a.suite != "kernels":
        pipeline(dev, a, rows)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(device=name, torch=torch.__version__, quick=a.quick, batch=a.batch,
                           repeats=a.repeats, rows=rows.rows), f, indent=1)


if __name__ == "__main__":
    main()
