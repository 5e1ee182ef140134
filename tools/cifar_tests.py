#!/usr/bin/env python3
"""CIFAR-10 reproduction, test side: writes the in-distribution and shifted
test sets as class folders of PNGs for `dawin preprocess` (numpy, Pillow and
imagecorruptions; no torch; about 2 minutes on 2 cores).

    .venv/bin/pip install numpy pillow "setuptools<81" imagecorruptions
    .venv/bin/python tools/cifar_tests.py --cifar ../shared/data/cifar10 --work .cifar

Every `--test-every`-th test image (all classes) goes into `clean`; each TEST
corruption (disjoint from the ones tools/cifar_pair.py trains with) at
severities 3 and 5 gives one more set. Several corruptions draw from numpy's
global generator (the noises, motion blur's angle), so it is seeded per set:
the same command writes the same pixels.
"""
import argparse
import io
import os
import tarfile
import time

import numpy as np
from PIL import Image

TEST_CORRUPTIONS = ["shot_noise", "impulse_noise", "motion_blur", "contrast", "pixelate", "jpeg_compression"]
SEVERITIES = (3, 5)


def read_tar(path):
    """(images uint8 [N,32,32,3], labels, class names) from a tar of class/NAME.jpg."""
    imgs, labels = [], []
    with tarfile.open(path) as t:
        members = sorted((m for m in t.getmembers() if m.isfile() and m.name.endswith(".jpg")), key=lambda m: m.name)
        classes = sorted({m.name.split("/")[-2] for m in members})
        for m in members:
            imgs.append(np.asarray(Image.open(io.BytesIO(t.extractfile(m).read())).convert("RGB")))
            labels.append(classes.index(m.name.split("/")[-2]))
    return np.stack(imgs), np.array(labels), classes


def write_folder(root, imgs, labels, classes):
    for c in classes:
        os.makedirs(os.path.join(root, c), exist_ok=True)
    for i, (im, y) in enumerate(zip(imgs, labels)):
        Image.fromarray(im).save(os.path.join(root, classes[y], f"{i:05d}.png"))


def write_test_sets(xte, yte, classes, root, every, seed):
    """Writes clean and every corruption-severity set under root; skips sets already there."""
    from imagecorruptions import corrupt
    sel = np.arange(0, len(xte), every)
    if not os.path.isdir(os.path.join(root, "clean")):
        write_folder(os.path.join(root, "clean"), xte[sel], yte[sel], classes)
    for k, (c, s) in enumerate((c, s) for c in TEST_CORRUPTIONS for s in SEVERITIES):
        out = os.path.join(root, f"{c}-{s}")
        if os.path.isdir(out):
            continue
        np.random.seed(seed * 1000 + k)
        imgs = np.stack([corrupt(im, corruption_name=c, severity=s) for im in xte[sel]])
        write_folder(out, imgs.astype(np.uint8), yte[sel], classes)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cifar", default="../shared/data/cifar10", help="folder with test.tar")
    ap.add_argument("--work", default=".cifar", help="writes WORK/test/SET/CLASS/NNNNN.png")
    ap.add_argument("--test-every", type=int, default=5, help="keep every N-th test image")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    t0 = time.time()
    xte, yte, classes = read_tar(os.path.join(a.cifar, "test.tar"))
    root = os.path.join(a.work, "test")
    write_test_sets(xte, yte, classes, root, a.test_every, a.seed)
    print(f"test sets in {root} ({time.time() - t0:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
