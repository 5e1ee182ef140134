#!/usr/bin/env python3
"""The image path against torchvision: decode + CLIP preprocessing of
generated ImageNet-sized JPEGs, `dawin preprocess` against torchvision's
ImageFolder + DataLoader with as many workers as dawin has threads, in one
run, back to back, best of --rounds.

    python tools/bench_data.py --images 600 --cores 2 [--rounds 3]

The JPEGs (default 500x375 and 375x500 at quality 90, about 100 KB each,
textured so they compress like photographs) are written once to --dir
(default a temporary folder) in 10 class folders. PyTorch's side runs
Resize(224, BICUBIC) + CenterCrop(224) + ToTensor + Normalize, the
transform of OpenAI CLIP, and touches every batch; dawin's side runs
`dawin preprocess --threads C`, which writes the same [N,3,224,224] f32
tensor to a file, and `--dtype u8`, which writes the u8 pixel cache.
Prints images/s for each and the ratio, and images/s per core.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent


def make_images(root, n, seed=0):
    """n textured JPEGs in 10 class folders (kept when already there)."""
    rng = np.random.default_rng(seed)
    made = sorted(root.glob("*/*.jpg"))
    if len(made) >= n:
        return made[:n]
    for i in range(n):
        w, h = (500, 375) if i % 3 else (375, 500)
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        f = rng.uniform(0.005, 0.05, size=(3, 2))
        base = np.stack([127 + 80 * np.sin(x * f[c, 0] + y * f[c, 1] + c) for c in range(3)], -1)
        noise = rng.normal(0, 18, size=(h, w, 3))
        img = np.clip(base + noise, 0, 255).astype(np.uint8)
        d = root / f"class{i % 10:02d}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"img{i:05d}.jpg", quality=90)
    return sorted(root.glob("*/*.jpg"))[:n]


def time_dawin(binary, root, cores, out, extra):
    t = time.perf_counter()
    subprocess.run([binary, "preprocess", "--size", "224", "--threads", str(cores),
                    "--out", str(out), *extra, str(root)],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def time_torchvision(root, cores):
    import torch
    from torchvision import datasets, transforms
    torch.set_num_threads(1)
    tf = transforms.Compose([
        transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    ])
    ds = datasets.ImageFolder(str(root), transform=tf)
    dl = torch.utils.data.DataLoader(ds, batch_size=64, num_workers=cores)
    t = time.perf_counter()
    s = 0.0
    for x, _ in dl:
        s += float(x[:, 0, 0, 0].sum())
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--cores", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where the JPEGs are written (kept)")
    ap.add_argument("--bin", default=str(ROOT / "target/release/dawin"))
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    root = pathlib.Path(a.dir or tmp.name) / "jpegs"
    files = make_images(root, a.images)
    kb = sum(f.stat().st_size for f in files) / len(files) / 1024
    out = pathlib.Path(tmp.name) / "pixels.safetensors"
    rows = {}
    for _ in range(a.rounds):
        for name, fn in (("dawin preprocess (f32 file)", lambda: time_dawin(a.bin, root, a.cores, out, [])),
                         ("dawin preprocess --dtype u8 (pixel cache)",
                          lambda: time_dawin(a.bin, root, a.cores, out, ["--dtype", "u8"])),
                         ("torchvision DataLoader", lambda: time_torchvision(root, a.cores))):
            s = fn()
            rows[name] = min(rows.get(name, s), s)
    n = len(files)
    print(f"{n} JPEGs, {kb:.0f} KB each on average, {a.cores} cores, best of {a.rounds}\n")
    print("| path | s | images/s | images/s per core |")
    print("|---|---|---|---|")
    for name, s in rows.items():
        print(f"| {name} | {s:.2f} | {n / s:.0f} | {n / s / a.cores:.0f} |")
    tv = rows["torchvision DataLoader"]
    ratios = {name: tv / s for name, s in rows.items() if name.startswith("dawin")}
    print()
    for name, r in ratios.items():
        per_core = n / rows[name] / a.cores
        print(f"{name} / torchvision: {r:.2f}x; at {per_core:.0f} images/s per core, "
              f"16 cores would feed about {16 * per_core:.0f} images/s")
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps({"images": n, "kb": kb, "cores": a.cores,
                                                    "seconds": rows, "ratios": ratios}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
