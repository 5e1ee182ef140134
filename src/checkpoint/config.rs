//! Model folders' configuration files turned into hints: HF transformers'
//! `config.json` (a `CLIPConfig` with `vision_config`/`text_config`, or a
//! bare `CLIPVisionConfig`) and open_clip's `open_clip_config.json`.
//!
//! Hint keys: `heads`, `act`, `ln_eps`, `image_size`, `patch_size`, `width`
//! for the vision tower, the same with a `text_` prefix for the text tower.
//! A key the config leaves out takes the value transformers or open_clip
//! themselves give it (their class defaults), so the hint is what the
//! reference implementation would build.

use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

pub type Hints = HashMap<String, String>;

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("not valid JSON: {e}")))
}

fn get_num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// transformers' CLIPVisionConfig / CLIPTextConfig defaults.
struct HfDefaults {
    heads: f64,
    width: f64,
}

const HF_VISION: HfDefaults = HfDefaults {
    heads: 12.0,
    width: 768.0,
};
const HF_TEXT: HfDefaults = HfDefaults {
    heads: 8.0,
    width: 512.0,
};

fn hf_tower(cfg: &Value, prefix: &str, d: &HfDefaults, out: &mut Hints) {
    let num = |k: &str, default: f64| get_num(cfg, k).unwrap_or(default);
    out.insert(
        format!("{prefix}heads"),
        (num("num_attention_heads", d.heads) as u64).to_string(),
    );
    out.insert(
        format!("{prefix}width"),
        (num("hidden_size", d.width) as u64).to_string(),
    );
    let act = cfg
        .get("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or("quick_gelu");
    out.insert(format!("{prefix}act"), act.to_string());
    out.insert(
        format!("{prefix}ln_eps"),
        num("layer_norm_eps", 1e-5).to_string(),
    );
    if prefix.is_empty() {
        out.insert(
            "image_size".into(),
            (num("image_size", 224.0) as u64).to_string(),
        );
        out.insert(
            "patch_size".into(),
            (num("patch_size", 32.0) as u64).to_string(),
        );
    }
}

/// Hints from an HF `config.json`.
pub fn hf(path: &Path) -> Result<Hints> {
    let v = read_json(path)?;
    let mut out = Hints::new();
    let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
    match (v.get("vision_config"), model_type) {
        (Some(vc), _) if vc.is_object() => hf_tower(vc, "", &HF_VISION, &mut out),
        (_, "clip_vision_model") => hf_tower(&v, "", &HF_VISION, &mut out),
        (_, "clip_text_model") => {}
        _ => {
            return Err(Error::file(
                path,
                format!(
                    "not a CLIP config (model_type {model_type:?}, no `vision_config`); dawin reads CLIP image towers"
                ),
            ));
        }
    }
    match (v.get("text_config"), model_type) {
        (Some(tc), _) if tc.is_object() => hf_tower(tc, "text_", &HF_TEXT, &mut out),
        (_, "clip_text_model") => hf_tower(&v, "text_", &HF_TEXT, &mut out),
        _ => {}
    }
    Ok(out)
}

/// Hints from open_clip's `open_clip_config.json` (`model_cfg` with
/// `vision_cfg`, `text_cfg`, `quick_gelu`).
pub fn open_clip(path: &Path) -> Result<Hints> {
    let v = read_json(path)?;
    let m = v.get("model_cfg").unwrap_or(&v);
    let Some(vc) = m.get("vision_cfg").filter(|x| x.is_object()) else {
        return Err(Error::file(
            path,
            "no `model_cfg.vision_cfg`: not an open_clip model config",
        ));
    };
    if vc.get("timm_model_name").is_some_and(|t| !t.is_null()) {
        return Err(Error::file(
            path,
            "a timm image tower (`timm_model_name`); dawin runs CLIP ViT towers only",
        ));
    }
    unsupported_vision_options(path, vc)?;
    if let Some(tc) = m.get("text_cfg").filter(|x| x.is_object()) {
        unsupported_kwargs(path, "text_cfg", tc)?;
    }
    unread_keys(path, vc);
    let quick = m
        .get("quick_gelu")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let act = if quick { "quick_gelu" } else { "gelu" };
    let mut out = Hints::new();
    let width = get_num(vc, "width").unwrap_or(768.0);
    let head_width = get_num(vc, "head_width").unwrap_or(64.0);
    if head_width <= 0.0 || width % head_width != 0.0 {
        return Err(Error::file(
            path,
            format!("vision head_width {head_width} does not divide width {width}"),
        ));
    }
    out.insert("heads".into(), ((width / head_width) as u64).to_string());
    out.insert("width".into(), (width as u64).to_string());
    out.insert("act".into(), act.into());
    let eps = |c: &Value| {
        c.pointer("/norm_kwargs/eps")
            .and_then(Value::as_f64)
            .unwrap_or(1e-5)
    };
    out.insert("ln_eps".into(), eps(vc).to_string());
    match vc.get("image_size") {
        Some(Value::Array(a)) if a.len() == 2 && a[0] == a[1] => {
            out.insert("image_size".into(), a[0].to_string());
        }
        Some(Value::Number(n)) => {
            out.insert("image_size".into(), n.to_string());
        }
        _ => {}
    }
    if let Some(p) = get_num(vc, "patch_size") {
        out.insert("patch_size".into(), (p as u64).to_string());
    }
    if let Some(tc) = m.get("text_cfg").filter(|x| x.is_object()) {
        out.insert(
            "text_heads".into(),
            (get_num(tc, "heads").unwrap_or(8.0) as u64).to_string(),
        );
        out.insert(
            "text_width".into(),
            (get_num(tc, "width").unwrap_or(512.0) as u64).to_string(),
        );
        out.insert("text_act".into(), act.into());
        out.insert("text_ln_eps".into(), eps(tc).to_string());
    }
    Ok(out)
}

/// `act_kwargs` and `norm_kwargs` change the activation and the layer norm
/// (`{approximate: "tanh"}` is SigLIP's tanh GELU); only the norm's `eps`,
/// which is read, and an exact GELU are computed, so anything else is
/// refused by name rather than run as the plain op.
fn unsupported_kwargs(path: &Path, tower: &str, cfg: &Value) -> Result<()> {
    let mut found = Vec::new();
    if let Some(Value::Object(kw)) = cfg.get("act_kwargs") {
        for (k, v) in kw {
            if !(k == "approximate" && v.as_str() == Some("none")) {
                found.push(format!("{tower}.act_kwargs.{k} = {v}"));
            }
        }
    }
    if let Some(Value::Object(kw)) = cfg.get("norm_kwargs") {
        for (k, v) in kw.iter().filter(|(k, _)| k.as_str() != "eps") {
            found.push(format!("{tower}.norm_kwargs.{k} = {v}"));
        }
    }
    for k in ["act_layer", "norm_layer"] {
        if let Some(v) = cfg.get(k).filter(|v| !v.is_null()) {
            found.push(format!("{tower}.{k} = {v}"));
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    Err(Error::file(
        path,
        format!(
            "the config sets {}; dawin computes exact (erf) or quick GELU and a plain layer norm only, so the results would be wrong and the model is refused",
            found.join(", ")
        ),
    ))
}

/// The `vision_cfg` keys dawin reads, refuses when set, or knows do not
/// change the image tower's output (training-time dropout, output options
/// of other towers).
const VISION_KEYS: &[&str] = &[
    "width",
    "head_width",
    "layers",
    "image_size",
    "patch_size",
    "mlp_ratio",
    "norm_kwargs",
    "act_kwargs",
    "timm_model_name",
    "pool_type",
    "pos_embed_type",
    "block_type",
    "act_layer",
    "norm_layer",
    "patch_dropout",
    "emb_dropout",
    "output_tokens",
    "embed_dim",
    "attn_pooler_queries",
    "attn_pooler_heads",
    "timm_model_pretrained",
    "timm_pool",
    "timm_proj",
    "timm_proj_bias",
    "timm_drop",
    "timm_drop_path",
    "input_patchnorm",
    "output_dim",
    "layers_per_stage",
];

/// open_clip vision switches that change the computation beyond a plain
/// CLIP ViT when set (some add no tensors, so only the config can tell).
const REFUSED_SWITCHES: &[&str] = &[
    "attentional_pool",
    "final_ln_after_pool",
    "no_ln_pre",
    "ls_init_value",
    "qk_norm",
    "scaled_cosine_attn",
    "scale_heads",
    "scale_attn_inner",
    "scale_attn",
    "scale_fc",
    "global_average_pool",
];

/// Says which `vision_cfg` keys dawin does not read, so a config option it
/// has not been taught about is seen rather than silently ignored.
fn unread_keys(path: &Path, vc: &Value) {
    let Some(obj) = vc.as_object() else { return };
    let unread: Vec<&str> = obj
        .keys()
        .map(String::as_str)
        .filter(|k| !VISION_KEYS.contains(k) && !REFUSED_SWITCHES.contains(k))
        .collect();
    if !unread.is_empty() {
        crate::reporter::warn(&format!(
            "{}: vision_cfg sets {} that dawin does not read; check that the model is a plain CLIP ViT",
            path.display(),
            unread.join(", ")
        ));
    }
}

/// open_clip vision options that change the computation beyond a plain
/// CLIP ViT (some add no tensors, so only the config can tell).
fn unsupported_vision_options(path: &Path, vc: &Value) -> Result<()> {
    let truthy = |k: &str| {
        vc.get(k)
            .is_some_and(|v| v.as_bool().unwrap_or(!v.is_null()))
    };
    let mut found: Vec<String> = REFUSED_SWITCHES
        .iter()
        .filter(|k| truthy(k))
        .map(|k| format!("{k} = {}", vc[*k]))
        .collect();
    for (k, ok) in [
        ("pool_type", "tok"),
        ("pos_embed_type", "learnable"),
        ("block_type", "default"),
    ] {
        if let Some(v) = vc.get(k).and_then(Value::as_str).filter(|v| *v != ok) {
            found.push(format!("{k} = {v:?}"));
        }
    }
    unsupported_kwargs(path, "vision_cfg", vc)?;
    if found.is_empty() {
        return Ok(());
    }
    Err(Error::file(
        path,
        format!(
            "the image tower uses {}, which dawin's CLIP ViT does not compute; results would be wrong, so it is refused",
            found.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_clip_with(vision_extra: &str) -> Result<Hints> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("open_clip_config.json");
        let cfg = format!(
            r#"{{"model_cfg": {{"embed_dim": 512, "quick_gelu": false,
                "vision_cfg": {{"width": 64, "layers": 2, "patch_size": 4, "image_size": 12{vision_extra}}},
                "text_cfg": {{"width": 32, "heads": 2, "layers": 1}}}}}}"#
        );
        std::fs::write(&p, cfg).unwrap();
        open_clip(&p)
    }

    /// Options that change the activation or the norm are refused by name;
    /// an exact GELU and the norm's eps are read.
    #[test]
    fn activation_and_norm_options_are_honoured_or_refused() {
        let e = open_clip_with(r#", "act_kwargs": {"approximate": "tanh"}"#).unwrap_err();
        assert!(
            e.to_string()
                .contains("vision_cfg.act_kwargs.approximate = \"tanh\""),
            "{e}"
        );
        let e = open_clip_with(r#", "norm_kwargs": {"elementwise_affine": false}"#).unwrap_err();
        assert!(
            e.to_string().contains("norm_kwargs.elementwise_affine"),
            "{e}"
        );
        let ok = open_clip_with(
            r#", "act_kwargs": {"approximate": "none"}, "norm_kwargs": {"eps": 1e-6}"#,
        )
        .unwrap();
        assert_eq!(ok["act"], "gelu");
        assert_eq!(ok["ln_eps"], "0.000001");
    }
}
