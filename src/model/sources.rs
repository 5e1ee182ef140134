//! Where each model setting that the weights' shapes cannot tell (heads,
//! activation, layer-norm eps; the text tower's heads; the logit scale)
//! came from, so that a result records what was read and what was guessed.

use serde_json::{Value, json};

/// The source of one setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The checkpoint's own metadata.
    Metadata,
    /// The config file beside the weights (its name).
    Config(String),
    /// A tensor of the checkpoint (`logit_scale`).
    Tensor,
    /// A command-line flag.
    Flag,
    /// CLIP's value, which every OpenAI and open_clip ViT uses (layer-norm
    /// eps 1e-5): not said by the file, but not a guess either.
    Default,
    /// Guessed: nothing said it (a warning says so).
    Assumed,
    /// Set by the program: a model made in memory.
    Given,
    /// Taken from the other model of the pair (its file name), which
    /// read it: DaWin's two models share one architecture.
    Paired(String),
}

impl Source {
    /// The short name summary.json records.
    pub fn key(&self) -> &'static str {
        match self {
            Source::Metadata => "metadata",
            Source::Config(_) => "config",
            Source::Tensor => "tensor",
            Source::Flag => "flag",
            Source::Default => "default",
            Source::Assumed => "assumed",
            Source::Given => "given",
            Source::Paired(_) => "other model",
        }
    }

    /// The words `inspect` prints.
    pub fn describe(&self) -> String {
        match self {
            Source::Metadata => "from the file's metadata".into(),
            Source::Config(name) => format!("from {name}"),
            Source::Tensor => "from the file's tensor".into(),
            Source::Flag => "from a flag".into(),
            Source::Default => "CLIP's default".into(),
            Source::Assumed => "assumed".into(),
            Source::Given => "given".into(),
            Source::Paired(name) => format!("from the other model, {name}"),
        }
    }

    /// `{"value": v, "source": key}` (and the config file's name).
    pub fn record(&self, value: Value) -> Value {
        let mut v = json!({"value": value, "source": self.key()});
        match self {
            Source::Config(name) | Source::Paired(name) => {
                v["file"] = json!(name.trim_matches('`'));
            }
            _ => {}
        }
        v
    }
}

/// The sources of an image tower's heads, activation and eps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingSources {
    pub heads: Source,
    pub act: Source,
    pub ln_eps: Source,
}

impl SettingSources {
    /// Every setting of a model made in memory.
    pub fn given() -> SettingSources {
        SettingSources {
            heads: Source::Given,
            act: Source::Given,
            ln_eps: Source::Given,
        }
    }
}

/// The metadata key of a written model's sources: `{"heads": "assumed",
/// ...}`, so that a value dawin wrote as a guess is read back as one, not
/// as metadata (the checkpoint reader drops such hints).
pub const META_KEY: &str = crate::checkpoint::SETTINGS_SOURCES_KEY;

impl From<crate::checkpoint::HintOrigin> for Source {
    fn from(o: crate::checkpoint::HintOrigin) -> Source {
        match o {
            crate::checkpoint::HintOrigin::Metadata => Source::Metadata,
            crate::checkpoint::HintOrigin::Config(name) => Source::Config(name),
        }
    }
}

/// `earlier` (a JSON object of sources, e.g. the text tower's) with the
/// image tower's sources added.
pub fn with_image_sources(earlier: Option<&String>, s: &SettingSources) -> String {
    let mut v: serde_json::Map<String, Value> = earlier
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    for (k, src) in [("heads", &s.heads), ("act", &s.act), ("ln_eps", &s.ln_eps)] {
        v.insert(k.into(), src.key().into());
    }
    Value::Object(v).to_string()
}

/// What a head built by `dawin zeroshot` was built with, from the file's
/// metadata: the text tower's heads and the logit scale, each with the
/// source the metadata recorded; `None` for other heads.
pub fn zeroshot_record(metadata: &std::collections::HashMap<String, String>) -> Option<Value> {
    metadata.get("zeroshot_from")?;
    let sources: serde_json::Map<String, Value> = metadata
        .get(META_KEY)
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    let entry = |key: &str| {
        let value = metadata.get(key).and_then(|v| v.parse::<f64>().ok());
        let source = sources.get(key).cloned().unwrap_or(Value::Null);
        json!({"value": value, "source": source})
    };
    Some(json!({
        "from": metadata.get("zeroshot_from"),
        "text_heads": entry("text_heads"),
        "logit_scale": entry("logit_scale"),
    }))
}
