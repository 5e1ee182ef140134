#!/usr/bin/env python3
"""Trains the demo's pretrained / fine-tuned pair (PyTorch, CPU, a few minutes).

The data comes from the Rust generator, the one source of truth:

    cargo run --release -- synth --out .demo-data --per-class 400 --seed 1
    python3 -m venv .venv && .venv/bin/pip install torch transformers safetensors
    .venv/bin/python tools/train_demo.py --data .demo-data --out demo

1. "Pretrained": a small CLIP-layout ViT (HF transformers) trained briefly on a
   broad mix of every domain (clean, noise, texture, colour, blur, occlusion),
   like a zero-shot model that is decent everywhere.
2. "Fine-tuned": started from it and trained on the clean domain only, longer
   and harder, so it gains in distribution and forgets the shifts: the robust
   fine-tuning trade-off DaWin addresses.

The classifier is the WiSE-FT one: logits = normalize(embedding) @ W.T + b.
Both are written in HF layout with `classification_head.*` and metadata, as
demo/pretrained.safetensors and demo/finetuned.safetensors (f32).
"""
import argparse
import os
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

DOMAINS = ["id", "noise", "texture", "colour", "blur", "occlusion"]


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        conf = CLIPVisionConfig(hidden_size=96, intermediate_size=384, num_hidden_layers=3,
                                num_attention_heads=4, image_size=32, patch_size=8,
                                projection_dim=64, hidden_act="quick_gelu")
        self.tower = CLIPVisionModelWithProjection(conf)
        self.head = torch.nn.Linear(64, 10)
        with torch.no_grad():
            self.head.weight.mul_(10.0)

    def forward(self, x):
        e = self.tower(pixel_values=x).image_embeds
        return self.head(F.normalize(e, dim=-1))


def load(data, names):
    xs, ys = [], []
    for n in names:
        d = load_file(os.path.join(data, f"{n}.safetensors"))
        xs.append(d["pixel_values"])
        ys.append(d["labels"])
    return torch.cat(xs), torch.cat(ys)


def train(model, x, y, epochs, lr, seed):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * ((len(x) + 127) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    for ep in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        total = 0.0
        for i in range(0, len(x), 128):
            idx = perm[i:i + 128]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        print(f"  epoch {ep + 1}/{epochs}: loss {total / len(x):.3f}", flush=True)
    model.eval()


@torch.no_grad()
def accuracy(model, data, per_domain):
    out = {}
    for n in DOMAINS:
        x, y = load(data, [n])
        out[n] = float((model(x[:per_domain]).argmax(1) == y[:per_domain]).float().mean())
    return out


def save(model, path):
    sd = {k: v.contiguous() for k, v in model.tower.state_dict().items() if "position_ids" not in k}
    sd["classification_head.weight"] = model.head.weight.detach().contiguous()
    sd["classification_head.bias"] = model.head.bias.detach().contiguous()
    save_file(sd, path, metadata={"heads": "4", "act": "quick_gelu", "ln_eps": "1e-05"})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="folder written by `dawin synth`")
    ap.add_argument("--out", default="demo")
    # Short and gentle on purpose: the "zero-shot" model should be decent
    # everywhere but not saturate the clean domain.
    ap.add_argument("--pretrain-epochs", type=int, default=1)
    ap.add_argument("--pretrain-lr", type=float, default=1e-3)
    ap.add_argument("--finetune-epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pretrain-size", type=int, default=24000,
                    help="images of the all-domain mix used for pretraining")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    t0 = time.time()
    model = Net()
    x, y = load(a.data, DOMAINS)
    keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(a.seed))[:a.pretrain_size]
    x, y = x[keep], y[keep]
    print(f"pretraining on {len(x)} images of all domains", flush=True)
    train(model, x, y, a.pretrain_epochs, a.pretrain_lr, a.seed)
    print("pretrained accuracy (training data):", accuracy(model, a.data, 1000), flush=True)
    os.makedirs(a.out, exist_ok=True)
    save(model, os.path.join(a.out, "pretrained.safetensors"))
    x, y = load(a.data, ["id"])
    print(f"fine-tuning on {len(x)} clean images", flush=True)
    train(model, x, y, a.finetune_epochs, 3e-3, a.seed + 1)
    print("fine-tuned accuracy (training data):", accuracy(model, a.data, 1000), flush=True)
    save(model, os.path.join(a.out, "finetuned.safetensors"))
    print(f"done in {time.time() - t0:.0f}s -> {a.out}/", flush=True)


if __name__ == "__main__":
    main()
