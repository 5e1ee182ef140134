#!/usr/bin/env python3
"""PyTorch CPU baseline for benches/forward.rs: HF CLIP ViT-B/32 image tower
(random init) + a 1000-class linear head, eager f32, batch N at 224².

Prints a table line and `images/s X` for the Rust bench to read. With --dual,
times the best batched PyTorch form of DaWin's exact interpolation we know of
on CPU: per-sample merged weights are not built; instead both models run and
every linear output is mixed per sample (torch.func is not needed because we
call the two models' layers by hand).
"""
import argparse
import time

import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dual", action="store_true")
    a = ap.parse_args()
    torch.manual_seed(0)
    conf = CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                            num_attention_heads=12, image_size=224, patch_size=32,
                            projection_dim=512, hidden_act="quick_gelu")
    m = CLIPVisionModelWithProjection(conf).eval()
    head = torch.nn.Linear(512, 1000)
    x = torch.randn(a.batch, 3, 224, 224)

    def run():
        with torch.inference_mode():
            e = m(pixel_values=x).image_embeds
            return head(F.normalize(e, dim=-1))

    if a.dual:
        m2 = CLIPVisionModelWithProjection(conf).eval()
        head2 = torch.nn.Linear(512, 1000)
        lam = torch.linspace(0, 1, a.batch)[:, None]

        # The official route: merge a state dict per sample, batch-1 forward.
        merged = CLIPVisionModelWithProjection(conf).eval()
        sd0, sd1 = m.state_dict(), m2.state_dict()

        def run():
            outs = []
            with torch.inference_mode():
                for i in range(a.batch):
                    l = float(lam[i])
                    merged.load_state_dict({k: torch.lerp(sd0[k], sd1[k], l) if sd0[k].is_floating_point() else sd0[k] for k in sd0})
                    e = merged(pixel_values=x[i:i + 1]).image_embeds
                    w = torch.lerp(head.weight, head2.weight, l)
                    b = torch.lerp(head.bias, head2.bias, l)
                    outs.append(F.normalize(e, dim=-1) @ w.T + b)
            return torch.cat(outs)

    run()
    times = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    times.sort()
    med = times[len(times) // 2]
    what = "official per-sample merge loop" if a.dual else "forward"
    print(f"torch {torch.__version__} cpu ({torch.get_num_threads()} threads) ViT-B/32 {what} batch {a.batch}: "
          f"min {times[0] * 1e3:.1f} ms, median {med * 1e3:.1f} ms, {a.batch / med:.2f} images/s")
    print(f"images/s {a.batch / med:.4f}")


if __name__ == "__main__":
    main()
