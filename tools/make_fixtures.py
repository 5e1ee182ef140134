#!/usr/bin/env python3
"""Writes the golden fixtures under tests/fixtures/ (run from the repo root).

Small random CLIP vision towers built with HF transformers (random init, no
downloads), saved in each weight layout dawin recognises, with inputs and the
outputs HF computes for them in float64. Layernorm weights and biases are
perturbed so that every tensor matters.

    python3 -m venv .venv && .venv/bin/pip install torch transformers safetensors numpy
    .venv/bin/python tools/make_fixtures.py

Each fixture NAME has:
  NAME.safetensors      the model, in its layout
  NAME.io.safetensors   pixel_values [N,3,S,S] f32, image_embeds [N,D] f32
                        (projected, before normalisation), logits [N,C] f32
and tests/fixtures/manifest.json describes them all.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")

# layout, width, layers, heads, mlp, patch, image, proj (None: no projection),
# classes (None: no head), act, ln_eps, dtype stored, metadata written.
FIXTURES = [
    dict(name="hf_quickgelu", layout="hf", width=64, layers=2, heads=4, mlp=128, patch=8,
         image=32, proj=32, classes=10, act="quick_gelu", eps=1e-5, dtype="f32",
         meta={"heads": "4", "act": "quick_gelu"}, n=4),
    dict(name="hfbare_gelu_bf16", layout="hf-bare", width=48, layers=2, heads=3, mlp=96, patch=8,
         image=40, proj=None, classes=7, act="gelu", eps=1e-6, dtype="bf16",
         meta={"heads": "3", "act": "gelu", "ln_eps": "1e-6"}, n=3),
    dict(name="openai_gelu", layout="openai", width=64, layers=3, heads=2, mlp=256, patch=8,
         image=32, proj=32, classes=None, act="gelu", eps=1e-5, dtype="f32",
         meta={"heads": "2", "act": "gelu"}, n=3),
    dict(name="soups_quickgelu", layout="model-soups", width=64, layers=2, heads=1, mlp=128,
         patch=16, image=48, proj=24, classes=5, act="quick_gelu", eps=1e-5, dtype="f16",
         meta={}, n=5),
]


def build(cfg, seed):
    torch.manual_seed(seed)
    conf = CLIPVisionConfig(
        hidden_size=cfg["width"], intermediate_size=cfg["mlp"], num_hidden_layers=cfg["layers"],
        num_attention_heads=cfg["heads"], image_size=cfg["image"], patch_size=cfg["patch"],
        hidden_act=cfg["act"], layer_norm_eps=cfg["eps"], projection_dim=cfg["proj"] or cfg["width"],
        attn_implementation="eager",
    )
    model = (CLIPVisionModelWithProjection if cfg["proj"] else CLIPVisionModel)(conf).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif "norm" in name and name.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
            elif "embedding" in name:
                p.copy_(0.5 * torch.randn_like(p))
            else:
                # Larger than HF's init so attention and activations are non-trivial.
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5 * 1.5)
            # Round to the stored dtype so the float64 reference sees the same weights.
            if cfg["dtype"] == "bf16":
                p.copy_(p.to(torch.bfloat16).float())
            elif cfg["dtype"] == "f16":
                p.copy_(p.to(torch.float16).float())
    head = None
    if cfg["classes"]:
        d = cfg["proj"] or cfg["width"]
        # Like a zero-shot head: normalised class embeddings times a logit scale.
        w = 30.0 * F.normalize(torch.randn(cfg["classes"], d), dim=-1)
        b = 0.5 * torch.randn(cfg["classes"])
        head = (w, b)
    return model, head


def reference(model, head, pixels, has_proj):
    m = model.double()
    with torch.no_grad():
        out = m(pixel_values=pixels.double())
        emb = out.image_embeds if has_proj else out.pooler_output
        logits = None
        if head is not None:
            logits = F.normalize(emb, dim=-1) @ head[0].double().T + head[1].double()
    model.float()
    return emb.float(), None if logits is None else logits.float()


def hf_state(model):
    # Recent transformers save a bare CLIPVisionModel without `vision_model.`;
    # put the prefix back so every layout is derived from one naming.
    sd = {}
    for k, v in model.state_dict().items():
        if "position_ids" in k:
            continue
        if not k.startswith(("vision_model.", "visual_projection.")):
            k = "vision_model." + k
        sd[k] = v.detach().clone()
    return sd


def to_openai(sd, layers, prefix):
    v = "vision_model."
    o = {
        prefix + "conv1.weight": sd[v + "embeddings.patch_embedding.weight"],
        prefix + "class_embedding": sd[v + "embeddings.class_embedding"],
        prefix + "positional_embedding": sd[v + "embeddings.position_embedding.weight"],
        prefix + "ln_pre.weight": sd[v + "pre_layrnorm.weight"],
        prefix + "ln_pre.bias": sd[v + "pre_layrnorm.bias"],
        prefix + "ln_post.weight": sd[v + "post_layernorm.weight"],
        prefix + "ln_post.bias": sd[v + "post_layernorm.bias"],
    }
    for i in range(layers):
        s, d = f"{v}encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        o[d + "ln_1.weight"] = sd[s + "layer_norm1.weight"]
        o[d + "ln_1.bias"] = sd[s + "layer_norm1.bias"]
        o[d + "attn.in_proj_weight"] = torch.cat([sd[s + f"self_attn.{x}_proj.weight"] for x in "qkv"])
        o[d + "attn.in_proj_bias"] = torch.cat([sd[s + f"self_attn.{x}_proj.bias"] for x in "qkv"])
        o[d + "attn.out_proj.weight"] = sd[s + "self_attn.out_proj.weight"]
        o[d + "attn.out_proj.bias"] = sd[s + "self_attn.out_proj.bias"]
        o[d + "ln_2.weight"] = sd[s + "layer_norm2.weight"]
        o[d + "ln_2.bias"] = sd[s + "layer_norm2.bias"]
        o[d + "mlp.c_fc.weight"] = sd[s + "mlp.fc1.weight"]
        o[d + "mlp.c_fc.bias"] = sd[s + "mlp.fc1.bias"]
        o[d + "mlp.c_proj.weight"] = sd[s + "mlp.fc2.weight"]
        o[d + "mlp.c_proj.bias"] = sd[s + "mlp.fc2.bias"]
    if "visual_projection.weight" in sd:
        o[prefix + "proj"] = sd["visual_projection.weight"].T.contiguous()
    return o


def save_model(cfg, model, head, path):
    sd = hf_state(model)
    if cfg["layout"] == "hf":
        out = dict(sd)
    elif cfg["layout"] == "hf-bare":
        out = {k[len("vision_model."):]: v for k, v in sd.items() if k.startswith("vision_model.")}
    elif cfg["layout"] == "openai":
        out = to_openai(sd, cfg["layers"], "visual.")
    elif cfg["layout"] == "model-soups":
        out = to_openai(sd, cfg["layers"], "model.visual.")
    else:
        raise ValueError(cfg["layout"])
    if head is not None:
        out["classification_head.weight"] = head[0]
        out["classification_head.bias"] = head[1]
    dt = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[cfg["dtype"]]
    out = {k: v.to(dt).contiguous() for k, v in out.items()}
    save_file(out, path, metadata=cfg["meta"] or None)
    return sum(v.numel() for v in out.values())


def dawin_fixture():
    """A pretrained/fine-tuned pair and a labelled set, with the per-sample
    lambda and the logits of each sample's own merged HF model: the check that
    `dawin eval --interp exact|materialize` is the official algorithm."""
    cfg = dict(name="dawin_pair", layout="model-soups", width=48, layers=2, heads=3, mlp=96,
               patch=8, image=24, proj=16, classes=6, act="quick_gelu", eps=1e-5, dtype="f16",
               meta={"heads": "3"}, n=16)
    pt, head_pt = build(cfg, 77)
    ft, _ = build(cfg, 77)
    head_pt = (head_pt[0] * 0.4, head_pt[1])
    torch.manual_seed(78)
    with torch.no_grad():
        # "Fine-tuning": move every weight, the head strongly, so the two
        # models disagree on some samples and agree on others.
        for p in ft.parameters():
            p.add_(0.25 * p.std() * torch.randn_like(p) if p.numel() > 1 else 0.0)
            p.copy_(p.to(torch.float16).float())
        w = 2.5 * head_pt[0] + 25.0 * torch.randn_like(head_pt[0]) / head_pt[0].shape[1] ** 0.5
        head_ft = (w.to(torch.float16).float(), (head_pt[1] + 0.5 * torch.randn_like(head_pt[1])).to(torch.float16).float())
    head_pt = (head_pt[0].to(torch.float16).float(), head_pt[1].to(torch.float16).float())
    g = torch.Generator().manual_seed(79)
    n = cfg["n"]
    pixels = torch.randn(n, 3, cfg["image"], cfg["image"], generator=g)
    _, lp = reference(pt, head_pt, pixels, True)
    _, lf = reference(ft, head_ft, pixels, True)
    labels = torch.where(torch.arange(n) % 2 == 0, lf.argmax(1), torch.randint(0, cfg["classes"], (n,), generator=g))

    def entropy(z):
        z = z.double()
        return -(F.softmax(z, 1) * F.log_softmax(z, 1)).sum(1)

    hp, hf = entropy(lp), entropy(lf)
    lam = torch.exp(-hf) / (torch.exp(-hp) + torch.exp(-hf))
    # Each sample through its own merged model: the official, slow route.
    sd_pt, sd_ft = pt.state_dict(), ft.state_dict()
    merged = CLIPVisionModelWithProjection(pt.config).eval()
    dawin_logits = []
    for i in range(n):
        l = float(lam[i])
        merged.load_state_dict({k: (1 - l) * sd_pt[k] + l * sd_ft[k] for k in sd_pt})
        hw = (1 - l) * head_pt[0] + l * head_ft[0]
        hb = (1 - l) * head_pt[1] + l * head_ft[1]
        _, z = reference(merged, (hw, hb), pixels[i:i + 1], True)
        dawin_logits.append(z[0])
    dawin_logits = torch.stack(dawin_logits)
    save_model(cfg, pt, head_pt, os.path.join(OUT, "dawin_pt.safetensors"))
    save_model(dict(cfg, layout="hf"), ft, head_ft, os.path.join(OUT, "dawin_ft.safetensors"))
    save_file({"pixel_values": pixels.contiguous(), "labels": labels.to(torch.int64).contiguous()},
              os.path.join(OUT, "dawin_data.safetensors"))
    save_file({"lambda": lam.float().contiguous(), "entropy_pt": hp.float().contiguous(),
               "entropy_ft": hf.float().contiguous(), "dawin_logits": dawin_logits.contiguous(),
               "logits_pt": lp.contiguous(), "logits_ft": lf.contiguous()},
              os.path.join(OUT, "dawin_expected.safetensors"))
    acc = float((dawin_logits.argmax(1) == labels).double().mean())
    print(f"dawin pair: lambda in [{float(lam.min()):.3f}, {float(lam.max()):.3f}], dawin accuracy {acc:.3f}",
          file=sys.stderr)


def main():
    os.makedirs(OUT, exist_ok=True)
    dawin_fixture()
    manifest = []
    for seed, cfg in enumerate(FIXTURES):
        model, head = build(cfg, 1000 + seed)
        if head is not None and cfg["dtype"] != "f32":
            dt = torch.bfloat16 if cfg["dtype"] == "bf16" else torch.float16
            head = (head[0].to(dt).float(), head[1].to(dt).float())
        g = torch.Generator().manual_seed(2000 + seed)
        pixels = torch.randn(cfg["n"], 3, cfg["image"], cfg["image"], generator=g)
        emb, logits = reference(model, head, pixels, cfg["proj"] is not None)
        name = cfg["name"]
        n_params = save_model(cfg, model, head, os.path.join(OUT, f"{name}.safetensors"))
        io = {"pixel_values": pixels.contiguous(), "image_embeds": emb.contiguous()}
        if logits is not None:
            io["logits"] = logits.contiguous()
        save_file(io, os.path.join(OUT, f"{name}.io.safetensors"))
        manifest.append({
            "name": name, "layout": cfg["layout"], "width": cfg["width"], "layers": cfg["layers"],
            "heads": cfg["heads"], "mlp": cfg["mlp"], "patch": cfg["patch"], "image_size": cfg["image"],
            "embed_dim": cfg["proj"] or cfg["width"], "has_proj": cfg["proj"] is not None,
            "classes": cfg["classes"], "act": cfg["act"], "ln_eps": cfg["eps"],
            "dtype": cfg["dtype"], "params": n_params, "samples": cfg["n"],
        })
        print(f"{name}: {n_params} parameters, layout {cfg['layout']}", file=sys.stderr)
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
