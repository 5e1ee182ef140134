#!/usr/bin/env python3
"""CIFAR-10 reproduction: trains a small CLIP-layout ViT pair and builds the
shifted test sets for `dawin eval` (PyTorch + transformers + imagecorruptions,
CPU; about 40 minutes on 2 cores).

    python3 -m venv .venv
    .venv/bin/pip install torch transformers safetensors pillow "setuptools<81" imagecorruptions
    .venv/bin/python tools/cifar_pair.py --cifar ../shared/data/cifar10 --work .cifar --out cifar

* "Pretrained": trained on the train set with broad augmentation (crop, flip)
  and corruption mixing: half of each epoch's images come from a copy of the
  train set corrupted with the TRAIN corruptions below at severities 1-5.
* "Fine-tuned": started from it and trained on the clean train set only.
* Test sets: written by tools/cifar_tests.py (called from here first):
  2000 test images (every 5th, all classes), clean, and with each TEST
  corruption (disjoint from the training ones) at severities 3 and 5.

Nothing derived from CIFAR images is written inside the repository except the
two trained models (into --out). Seeds are fixed (torch's, and numpy's for
the corruptions); nothing is tuned on the test sets. The models in cifar/
were trained before numpy's global generator was seeded here, so a retrain
gives close but not byte-identical weights.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cifar_tests import read_tar, write_test_sets  # noqa: E402
from train_demo import save  # noqa: E402  (same checkpoint format as the demo)

TRAIN_CORRUPTIONS = ["gaussian_noise", "defocus_blur", "snow", "saturate", "spatter", "speckle_noise"]
MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
        conf = CLIPVisionConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                                num_attention_heads=4, image_size=32, patch_size=4,
                                projection_dim=128, hidden_act="quick_gelu")
        self.tower = CLIPVisionModelWithProjection(conf)
        self.head = torch.nn.Linear(128, 10)
        with torch.no_grad():
            self.head.weight.mul_(10.0)

    def forward(self, x):
        return self.head(F.normalize(self.tower(pixel_values=x).image_embeds, dim=-1))


def to_input(u8, augment, g):
    x = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255.0
    if augment:
        n = x.shape[0]
        flip = torch.rand(n, generator=g) < 0.5
        x[flip] = x[flip].flip(3)
        pad = F.pad(x, (4, 4, 4, 4), mode="reflect")
        dx, dy = torch.randint(0, 9, (2,), generator=g).tolist()
        x = pad[:, :, dy:dy + 32, dx:dx + 32]
    return (x - MEAN) / STD


def train(model, clean, corrupted, labels, epochs, lr, seed, mix):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    bs = 128
    steps = epochs * ((len(clean) + bs - 1) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    for ep in range(epochs):
        t0 = time.time()
        perm = torch.randperm(len(clean), generator=g).numpy()
        total, correct = 0.0, 0
        for i in range(0, len(perm), bs):
            idx = perm[i:i + bs]
            u8 = clean[idx].copy()
            if mix:
                use = np.random.default_rng(seed * 1000 + ep * 100000 + i).random(len(idx)) < 0.5
                u8[use] = corrupted[idx[use]]
            x, y = to_input(u8, True, g), torch.from_numpy(labels[idx])
            out = model(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == y).sum())
        print(f"  epoch {ep + 1}/{epochs}: loss {total / len(perm):.3f}, train acc {correct / len(perm):.3f} "
              f"({time.time() - t0:.0f}s)", flush=True)
    model.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cifar", default="../shared/data/cifar10")
    ap.add_argument("--work", default=".cifar")
    ap.add_argument("--out", default="cifar")
    ap.add_argument("--pretrain-epochs", type=int, default=6)
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--test-every", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from imagecorruptions import corrupt
    torch.manual_seed(a.seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    t0 = time.time()
    xtr, ytr, classes = read_tar(os.path.join(a.cifar, "train.tar"))
    xte, yte, _ = read_tar(os.path.join(a.cifar, "test.tar"))
    print(f"read {len(xtr)} train and {len(xte)} test images ({time.time() - t0:.0f}s)", flush=True)

    # Test sets first (cheap), so an interrupted training still leaves them.
    tests = os.path.join(a.work, "test")
    write_test_sets(xte, yte, classes, tests, a.test_every, a.seed)
    print(f"test sets in {tests} ({time.time() - t0:.0f}s)", flush=True)

    rng = np.random.default_rng(a.seed)
    names = rng.integers(0, len(TRAIN_CORRUPTIONS), len(xtr))
    sev = rng.integers(1, 6, len(xtr))
    np.random.seed(a.seed)  # the noise corruptions draw from numpy's global generator
    corrupted = np.stack([corrupt(im, corruption_name=TRAIN_CORRUPTIONS[n], severity=int(s))
                          for im, n, s in zip(xtr, names, sev)]).astype(np.uint8)
    print(f"corrupted training copy ready ({time.time() - t0:.0f}s)", flush=True)

    model = Net()
    print("pretraining (clean + corruption mix)", flush=True)
    train(model, xtr, corrupted, ytr, a.pretrain_epochs, 2e-3, a.seed, mix=True)
    os.makedirs(a.out, exist_ok=True)
    save(model, os.path.join(a.out, "pretrained.safetensors"))
    print("fine-tuning (clean only)", flush=True)
    train(model, xtr, None, ytr, a.finetune_epochs, 1e-3, a.seed + 1, mix=False)
    save(model, os.path.join(a.out, "finetuned.safetensors"))
    print(f"done in {time.time() - t0:.0f}s -> {a.out}/", flush=True)


if __name__ == "__main__":
    main()
