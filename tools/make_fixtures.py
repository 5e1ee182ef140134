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

Checkpoints as users hold them go under tests/fixtures/checkpoints/
(`--checkpoints` writes only those; they need open_clip too):
  dawin_pt.pt              the dawin pair's pretrained model as a training
                           script's torch.save: {'state_dict': ..., 'epoch'},
                           f16, a strided tensor and shared storages
  dawin_ft.bin             the pair's fine-tuned model, a plain HF state dict
  open_clip/               open_clip_config.json + open_clip_pytorch_model.bin
                           (gelu, head_width 32: 3 heads at width 96)
  hf_clip/                 save_pretrained of a CLIPModel (4 heads at width 128)
  hf_sharded/              a CLIPVisionModelWithProjection in 4 safetensors shards
  hf_sharded_bin/          the same as pytorch_model-*.bin shards + index
  open_clip_torchscript.pt the open_clip model as torch.jit.script(...).save
  wiseft_module.pt         torch.save of a whole WiSE-FT-style ImageClassifier
  wiseft_pickle.pt         the same as WiSE-FT saves it: pickle.dump(classifier)
  head_task.pt             wiseft_module.pt's head alone as the official
                           multi-task code saves heads (torch.save of a
                           src.modeling.ClassificationHead), cut out by
                           tools/head_from_module.py (no torch needed)
  dawin_ft_legacy.bin      dawin_ft.bin in torch's legacy (pre-1.6) format
  refused_namespace.pt     a state dict beside an argparse.Namespace
  malicious_os_system.pt   a pickle whose reduce calls os.system
  *.io.safetensors         pixel_values and the reference image_embeds/logits

CLIP models with text towers go under tests/fixtures/text/ (`--text`, needs
open_clip and ftfy), with OpenAI's 49,408-token vocabulary, stored in f16:
  hf_clip/                 an HF CLIPModel folder (text: 4 heads at width 32,
                           head dim 8; gelu vision, quick_gelu text)
  open_clip/               an open_clip CLIP folder, quick_gelu, safetensors
  NAME.io.safetensors      input_ids [P,77] (open_clip's tokenizer) of
                           prompts.txt, text_embeds [P,D]; head [C,D] of
                           zeroshot.json's classes and templates, and
                           pixel_values [N,3,32,32] with image_embeds and the
                           zero-shot logits [N,C]; all from float64
  prompts.txt, zeroshot.json
and tests/fixtures/tokenizer/cases.json holds the ids of OpenAI's own
tokenizer (clip/simple_tokenizer.py with clip.tokenize(truncate=True)'s
rule; give the unpacked `pip download openai-clip` sdist, a copy of OpenAI's
code, as OPENAI_CLIP=DIR) and of open_clip's for about 1,400 strings
(ImageNet class names, prompts, accents, CJK, emoji, HTML entities, quotes,
numbers, control and special tokens, over-long text). The two differ only
where the text spells a special token: OpenAI matches `<|endoftext|>`,
open_clip `<end_of_text>`.
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
               meta={"heads": "3", "act": "quick_gelu"}, n=16)
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


CKPT = os.path.join(OUT, "checkpoints")


def perturb(model, seed):
    """Random weights on the scale build() uses, so every tensor matters."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "logit_scale" in name:
                continue
            if ("norm" in name or "ln_" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif name.endswith("bias") or "ln_" in name or "norm" in name:
                p.copy_(0.05 * torch.randn_like(p))
            elif p.dim() < 2 or "embedding" in name:
                p.copy_(0.5 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5 * 1.5)


def save_io(name, pixels, emb, logits=None):
    io = {"pixel_values": pixels.contiguous(), "image_embeds": emb.float().contiguous()}
    if logits is not None:
        io["logits"] = logits.float().contiguous()
    save_file(io, os.path.join(CKPT, f"{name}.io.safetensors"))


def pair_as_torch_files():
    from safetensors.torch import load_file
    sd = load_file(os.path.join(OUT, "dawin_pt.safetensors"))
    # A strided view (the transpose of a contiguous tensor) and two tensors
    # sharing one storage, as torch.save keeps them.
    proj = sd["model.visual.proj"]
    sd["model.visual.proj"] = proj.T.contiguous().T
    w, b = sd["classification_head.weight"], sd["classification_head.bias"]
    flat = torch.cat([w.reshape(-1), b])
    sd["classification_head.weight"] = flat[: w.numel()].view(w.shape)
    sd["classification_head.bias"] = flat[w.numel():]
    torch.save({"state_dict": sd, "epoch": 3, "best_acc": 0.5}, os.path.join(CKPT, "dawin_pt.pt"))
    ft = load_file(os.path.join(OUT, "dawin_ft.safetensors"))
    torch.save(ft, os.path.join(CKPT, "dawin_ft.bin"))
    # torch's format before 1.6, still written on request.
    torch.save(ft, os.path.join(CKPT, "dawin_ft_legacy.bin"), _use_new_zipfile_serialization=False)


def open_clip_fixture(pixels):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    vision = dict(layers=2, width=96, head_width=32, mlp_ratio=2.0, patch_size=8, image_size=32)
    text = dict(context_length=77, vocab_size=512, width=64, heads=2, layers=1)
    model = CLIP(48, CLIPVisionCfg(**vision), CLIPTextCfg(**text), quick_gelu=False).eval()
    perturb(model, 3000)
    d = os.path.join(CKPT, "open_clip")
    os.makedirs(d, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(d, "open_clip_pytorch_model.bin"))
    cfg = {"model_cfg": {"embed_dim": 48, "vision_cfg": vision, "text_cfg": text},
           "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                              "std": [0.26862954, 0.26130258, 0.27577711]}}
    with open(os.path.join(d, "open_clip_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with torch.no_grad():
        emb = model.double().encode_image(pixels.double())
    model.float()
    save_io("open_clip", pixels, emb)
    # The same model as a TorchScript archive (what OpenAI's clip.load reads).
    torch.jit.script(model).save(os.path.join(CKPT, "open_clip_torchscript.pt"))
    return model


class ImageEncoder(torch.nn.Module):
    """WiSE-FT's wrapper: the CLIP model under `.model`."""

    def __init__(self, clip):
        super().__init__()
        self.model = clip


class ImageClassifier(torch.nn.Module):
    """WiSE-FT's classifier: image encoder + linear head on normalised features."""

    def __init__(self, encoder, head):
        super().__init__()
        self.image_encoder = encoder
        self.classification_head = head


def wiseft_fixture(clip, pixels):
    torch.manual_seed(3100)
    head = torch.nn.Linear(48, 5)
    with torch.no_grad():
        head.weight.copy_(30.0 * F.normalize(torch.randn(5, 48), dim=-1))
        head.bias.copy_(0.5 * torch.randn(5))
    classifier = ImageClassifier(ImageEncoder(clip), head)
    torch.save(classifier, os.path.join(CKPT, "wiseft_module.pt"))
    # WiSE-FT's own utils.torch_save: a plain pickle, each storage inline.
    import pickle
    with open(os.path.join(CKPT, "wiseft_pickle.pt"), "wb") as f:
        pickle.dump(classifier, f)
    with torch.no_grad():
        emb = clip.double().encode_image(pixels.double())
        logits = F.normalize(emb, dim=-1) @ head.weight.double().T + head.bias.double()
    clip.float()
    save_io("wiseft_module", pixels, emb, logits)


def hf_fixtures(pixels):
    from transformers import CLIPConfig, CLIPModel
    conf = CLIPConfig(
        vision_config=dict(hidden_size=128, num_attention_heads=4, intermediate_size=256,
                           num_hidden_layers=2, image_size=32, patch_size=8, hidden_act="gelu"),
        text_config=dict(hidden_size=64, num_attention_heads=2, intermediate_size=128,
                         num_hidden_layers=1, vocab_size=512, eos_token_id=2, bos_token_id=1,
                         pad_token_id=1),
        projection_dim=40)
    model = CLIPModel(conf).eval()
    perturb(model, 3200)
    model.save_pretrained(os.path.join(CKPT, "hf_clip"))
    with torch.no_grad():
        m = model.double()
        pooled = m.vision_model(pixel_values=pixels.double()).pooler_output
        emb = m.visual_projection(pooled)
    save_io("hf_clip", pixels, emb)

    vconf = CLIPVisionConfig(hidden_size=96, num_attention_heads=6, intermediate_size=192,
                             num_hidden_layers=3, image_size=32, patch_size=8, projection_dim=24,
                             layer_norm_eps=1e-6)
    vis = CLIPVisionModelWithProjection(vconf).eval()
    perturb(vis, 3300)
    vis.save_pretrained(os.path.join(CKPT, "hf_sharded"), max_shard_size="150KB")
    with torch.no_grad():
        emb = vis.double()(pixel_values=pixels.double()).image_embeds
    vis.float()
    save_io("hf_sharded", pixels, emb)
    # The same weights as pytorch_model-*.bin shards, as older hub folders hold.
    src = os.path.join(CKPT, "hf_sharded")
    dst = os.path.join(CKPT, "hf_sharded_bin")
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(src, "model.safetensors.index.json")) as f:
        index = json.load(f)
    from safetensors.torch import load_file
    weight_map = {}
    for shard in sorted(set(index["weight_map"].values())):
        tensors = load_file(os.path.join(src, shard))
        name = shard.replace("model-", "pytorch_model-").replace(".safetensors", ".bin")
        torch.save(tensors, os.path.join(dst, name))
        weight_map.update({k: name for k in tensors})
    with open(os.path.join(dst, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": index.get("metadata", {}), "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(src, "config.json")) as f, open(os.path.join(dst, "config.json"), "w") as g:
        g.write(f.read())


class RunsCode:
    def __reduce__(self):
        import os as _os
        return (_os.system, ("echo this checkpoint ran code",))


def refused_fixtures():
    import argparse
    sd = {"visual.conv1.weight": torch.zeros(4, 3, 2, 2)}
    torch.save({"state_dict": sd, "args": argparse.Namespace(lr=1e-5)},
               os.path.join(CKPT, "refused_namespace.pt"))
    torch.save({"state_dict": sd, "payload": RunsCode()}, os.path.join(CKPT, "malicious_os_system.pt"))


def checkpoints():
    os.makedirs(CKPT, exist_ok=True)
    g = torch.Generator().manual_seed(4000)
    pixels = torch.randn(3, 3, 32, 32, generator=g)
    pair_as_torch_files()
    clip = open_clip_fixture(pixels)
    wiseft_fixture(clip, pixels)
    hf_fixtures(pixels)
    refused_fixtures()
    print(f"checkpoints written under {CKPT}", file=sys.stderr)


TEXT = os.path.join(OUT, "text")

PROMPTS = [
    "a photo of a dog.",
    "A Photo Of The\tCAT, taken at night!",
    "itap of a goldfish",
    "the dog\u2019s toy &amp; a caf\u00e9 cr\u00e8me br\u00fbl\u00e9e \U0001F436",
    "\u6a31\u306e\u82b1 \u2014 cherry blossoms in 2024",
    " ".join(["a very long prompt that goes on"] * 12),
    "",
]
CLASSES = ["tench", "goldfish", "great white shark", "dog's toy", "cr\u00e8me br\u00fbl\u00e9e"]
TEMPLATES = ["a photo of a {}.", "a bad photo of the {}.", "itap of a {}."]


def zero_shot_reference(encode_text, encode_image, tokenize, logit_scale, pixels):
    """WiSE-FT's head (normalize, mean over templates, normalize, scale) and
    the zero-shot logits, all in float64."""
    with torch.no_grad():
        rows = []
        for c in CLASSES:
            e = F.normalize(encode_text(tokenize([t.format(c) for t in TEMPLATES])), dim=-1)
            rows.append(F.normalize(e.mean(0), dim=-1))
        head = logit_scale.exp() * torch.stack(rows)
        img = encode_image(pixels)
        logits = F.normalize(img, dim=-1) @ head.T
    return head, img, logits


def save_text_io(name, tokenize, encode_text, encode_image, logit_scale, pixels):
    ids = tokenize(PROMPTS)
    with torch.no_grad():
        emb = encode_text(ids)
    head, img, logits = zero_shot_reference(encode_text, encode_image, tokenize, logit_scale, pixels)
    save_file({"input_ids": ids.long().contiguous(), "text_embeds": emb.float().contiguous(),
               "head": head.float().contiguous(), "pixel_values": pixels.float().contiguous(),
               "image_embeds": img.float().contiguous(), "logits": logits.float().contiguous()},
              os.path.join(TEXT, f"{name}.io.safetensors"))


def text_fixtures():
    import open_clip
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    from transformers import CLIPConfig, CLIPModel
    os.makedirs(TEXT, exist_ok=True)
    tok = open_clip.get_tokenizer("ViT-B-32")
    g = torch.Generator().manual_seed(5000)
    pixels = torch.randn(4, 3, 32, 32, generator=g).double()
    with open(os.path.join(TEXT, "prompts.txt"), "w") as f:
        f.write("\n".join(PROMPTS) + "\n")
    with open(os.path.join(TEXT, "zeroshot.json"), "w") as f:
        json.dump({"classes": CLASSES, "templates": TEMPLATES}, f, indent=1, ensure_ascii=False)

    # open_clip, quick_gelu towers, text heads 2 at width 32.
    vision = dict(layers=1, width=64, head_width=32, mlp_ratio=2.0, patch_size=16, image_size=32)
    text = dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=2, mlp_ratio=3.0)
    model = CLIP(24, CLIPVisionCfg(**vision), CLIPTextCfg(**text), quick_gelu=True).eval()
    perturb(model, 5100)
    with torch.no_grad():
        model.logit_scale.fill_(3.9)
    model = model.half().double()  # the weights as stored (f16), computed in f64
    d = os.path.join(TEXT, "open_clip")
    os.makedirs(d, exist_ok=True)
    sd = {k: v.half().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(d, "open_clip_model.safetensors"))
    cfg = {"model_cfg": {"embed_dim": 24, "quick_gelu": True, "vision_cfg": vision, "text_cfg": text}}
    with open(os.path.join(d, "open_clip_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    save_text_io("open_clip", tok, model.encode_text, model.encode_image, model.logit_scale, pixels)

    # HF CLIPModel: text 4 heads at width 32 (head dim 8, not width/64).
    conf = CLIPConfig(
        vision_config=dict(hidden_size=64, num_attention_heads=2, intermediate_size=128,
                           num_hidden_layers=1, image_size=32, patch_size=16, hidden_act="gelu"),
        text_config=dict(hidden_size=32, num_attention_heads=4, intermediate_size=80,
                         num_hidden_layers=2, vocab_size=49408, max_position_embeddings=77,
                         eos_token_id=49407, bos_token_id=49406, pad_token_id=1,
                         hidden_act="quick_gelu"),
        projection_dim=24)
    hf = CLIPModel(conf).eval()
    perturb(hf, 5200)
    with torch.no_grad():
        hf.logit_scale.fill_(4.2)
    hf = hf.half()
    hf.save_pretrained(os.path.join(TEXT, "hf_clip"))
    hf = hf.double()

    def hf_text(ids):
        return hf.get_text_features(input_ids=ids)

    def hf_image(px):
        return hf.get_image_features(pixel_values=px)

    def unwrap(f):
        def g(x):
            out = f(x)
            return out if torch.is_tensor(out) else out.pooler_output
        return g
    save_text_io("hf_clip", tok, unwrap(hf_text), unwrap(hf_image), hf.logit_scale, pixels)
    tokenizer_cases(tok)
    print(f"text fixtures written under {TEXT}", file=sys.stderr)


def tokenizer_cases(tok):
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "data", "classes", "imagenet.txt")) as f:
        classes = [l.rstrip("\n") for l in f if not l.startswith("#")]
    extra = [
        "Hello World", "HELLO, WORLD!!!", "don't stop", "don\u2019t stop", "it's the cat's",
        "\u201cquoted\u201d text", "\u2018single\u2019", "rock 'n' roll", "we'll we've we're I'm he'd",
        "caf\u00e9", "cafe\u0301", "na\u00efve fa\u00e7ade", "\u00c9cole \u00e9l\u00e9mentaire", "Stra\u00dfe",
        "\u0130stanbul", "\u039f\u0394\u039f\u03a3", "\u0645\u0631\u062d\u0628\u0627", "\u05e9\u05dc\u05d5\u05dd",
        "\u4f60\u597d\u4e16\u754c", "\u3053\u3093\u306b\u3061\u306f", "\ud55c\uad6d\uc5b4", "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
        "\U0001F600\U0001F436\U0001F3F3\ufe0f\u200d\U0001F308", "\U0001F468\u200d\U0001F469\u200d\U0001F467", "\u2764\ufe0f",
        "&amp;", "&amp;amp;", "&lt;b&gt;bold&lt;/b&gt;", "<b>bold</b> &amp; more", "fish &amp chips",
        "&#39;s &#x27;t &#8217;", "&copy; 2024 &trade;", "&notin; &not it", "&nbsp;space&nbsp;",
        "3.14159", "1,000,000", "2024-12-01", "42nd street", "\u00bd \u2153 \u00b2 \u2460 \u0663",
        "\uff28\uff45\uff4c\uff4c\uff4f \uff11\uff12\uff13", "\ufb01sh \ufb02ower", "\u00a0non\u00a0breaking\u00a0",
        "tab\there", "new\nline", "cr\r\nlf", "  leading and trailing  ", "multiple     spaces",
        "\u2028line\u2029para", "zero\u200bwidth", "soft\u00adhyphen", "\x85next", "\x96dash\x97",
        "ctrl\x01\x07chars", "\x1b[31mred\x1b[0m", "bom\ufeffinside",
        "<|startoftext|>", "<|endoftext|>", "a<|endoftext|>b", "!!<|endoftext|>", "<|ENDOFTEXT|>",
        "<start_of_text>", "emoji\U0001F600in\U0001F600text", "C++ & C#", "e-mail: a@b.com",
        "http://example.com/path?x=1", "#hashtag @mention", "...", "?!?!", "\u2026", "\u00bf\u00a1",
        "", " ", "a", "A", "0", "'", "''", "'s", "S'", "o'clock", "rock'n'roll",
        "x" * 300, " ".join(["word"] * 100), "supercalifragilisticexpialidocious",
        "pneumonoultramicroscopicsilicovolcanoconiosis", "\u00c5ngstr\u00f6m \u212b", "\u2126 ohm",
    ]
    texts = classes + [f"a photo of a {c}." for c in classes[::3]] + extra
    sys.path.insert(0, os.path.join(os.environ["OPENAI_CLIP"], "clip"))
    import simple_tokenizer
    openai = simple_tokenizer.SimpleTokenizer()
    sot, eot = openai.encoder["<|startoftext|>"], openai.encoder["<|endoftext|>"]

    def openai_tokenize(t):
        ids = [sot] + openai.encode(t) + [eot]
        if len(ids) > 77:
            ids = ids[:77]
            ids[-1] = eot
        return ids

    def upto_eot(row):
        return row[: row.index(eot) + 1] if eot in row else row
    cases = [{"text": t, "openai": upto_eot(openai_tokenize(t)), "open_clip": upto_eot(row)}
             for t, row in zip(texts, tok(texts).tolist())]
    d = os.path.join(OUT, "tokenizer")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "cases.json"), "w") as f:
        json.dump({"source": f"OpenAI CLIP simple_tokenizer (openai-clip 1.0.1 sdist) and open_clip "
                             f"{__import__('open_clip').__version__}, ftfy {__import__('ftfy').__version__}, "
                             "context 77", "cases": cases}, f, ensure_ascii=True)
        f.write("\n")


if __name__ == "__main__":
    if "--checkpoints" in sys.argv:
        checkpoints()
    elif "--text" in sys.argv:
        text_fixtures()
    else:
        main()
        checkpoints()
        text_fixtures()
