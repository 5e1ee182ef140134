//! Named label spaces and settings shipped with dawin (data/label-spaces/,
//! written by tools/make_label_spaces.py from WiSE-FT, whose provenance each
//! file's header states), and the official DaWin temperatures.
//!
//! A name is used only when no file of that name exists, so files keep
//! working.

use std::path::Path;

/// Class subsets by name: (name, file contents).
const SUBSETS: [(&str, &str); 2] = [
    (
        "imagenet-a",
        include_str!("../../data/label-spaces/imagenet-a.txt"),
    ),
    (
        "imagenet-r",
        include_str!("../../data/label-spaces/imagenet-r.txt"),
    ),
];

/// Class maps by name.
const MAPS: [(&str, &str); 1] = [(
    "objectnet",
    include_str!("../../data/label-spaces/objectnet.txt"),
)];

/// Folder filters by name.
const FOLDERS: [(&str, &str); 1] = [(
    "objectnet",
    include_str!("../../data/label-spaces/objectnet-folders.txt"),
)];

/// Class-name lists for `dawin zeroshot --classes` by name: ImageNet's,
/// and the eight-task multi-task benchmark's (tools/make_task_presets.py).
const CLASSES: [(&str, &str); 9] = [
    ("imagenet", include_str!("../../data/classes/imagenet.txt")),
    ("sun397", include_str!("../../data/classes/sun397.txt")),
    ("cars", include_str!("../../data/classes/cars.txt")),
    ("resisc45", include_str!("../../data/classes/resisc45.txt")),
    ("eurosat", include_str!("../../data/classes/eurosat.txt")),
    ("svhn", include_str!("../../data/classes/svhn.txt")),
    ("gtsrb", include_str!("../../data/classes/gtsrb.txt")),
    ("mnist", include_str!("../../data/classes/mnist.txt")),
    ("dtd", include_str!("../../data/classes/dtd.txt")),
];

/// Prompt template sets for `dawin zeroshot --templates` by name: OpenAI's
/// ImageNet set, a plain one, and each benchmark task's.
const TEMPLATES: [(&str, &str); 10] = [
    (
        "openai-imagenet",
        include_str!("../../data/templates/openai-imagenet.txt"),
    ),
    ("simple", include_str!("../../data/templates/simple.txt")),
    ("sun397", include_str!("../../data/templates/sun397.txt")),
    ("cars", include_str!("../../data/templates/cars.txt")),
    (
        "resisc45",
        include_str!("../../data/templates/resisc45.txt"),
    ),
    ("eurosat", include_str!("../../data/templates/eurosat.txt")),
    ("svhn", include_str!("../../data/templates/svhn.txt")),
    ("gtsrb", include_str!("../../data/templates/gtsrb.txt")),
    ("mnist", include_str!("../../data/templates/mnist.txt")),
    ("dtd", include_str!("../../data/templates/dtd.txt")),
];

/// The official scripts' softmax temperatures (pretrained, fine-tuned) by
/// CLIP backbone.
pub const TEMPERATURES: [(&str, (f32, f32)); 3] = [
    ("vit-b32", (0.9576, 0.9733)),
    ("vit-b16", (0.96, 1.0066)),
    ("vit-l14", (1.0767, 0.9545)),
];

/// What a `--class-subset`, `--class-map` or `--folders` argument names:
/// a file that exists, else a shipped list.
pub enum Named {
    File,
    /// The shipped list's name and contents.
    Shipped(&'static str, &'static str),
    Unknown(String),
}

fn lookup(arg: &Path, table: &[(&'static str, &'static str)]) -> Named {
    if arg.exists() {
        return Named::File;
    }
    let key = arg.to_string_lossy().to_lowercase();
    match table.iter().find(|(n, _)| *n == key) {
        Some((n, text)) => Named::Shipped(n, text),
        None => Named::Unknown(format!(
            "{}: no such file, and not a shipped name ({})",
            arg.display(),
            table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// A shipped list's text by its exact name, whatever files exist (for the
/// multi-set presets, which name the shipped lists, not files).
fn shipped(name: &str, table: &[(&'static str, &'static str)]) -> Option<&'static str> {
    table.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

pub fn shipped_subset(name: &str) -> Option<&'static str> {
    shipped(name, &SUBSETS)
}

pub fn shipped_map(name: &str) -> Option<&'static str> {
    shipped(name, &MAPS)
}

pub fn shipped_folders(name: &str) -> Option<&'static str> {
    shipped(name, &FOLDERS)
}

pub fn subset(arg: &Path) -> Named {
    lookup(arg, &SUBSETS)
}

pub fn map(arg: &Path) -> Named {
    lookup(arg, &MAPS)
}

pub fn folders(arg: &Path) -> Named {
    lookup(arg, &FOLDERS)
}

pub fn classes(arg: &Path) -> Named {
    lookup(arg, &CLASSES)
}

pub fn templates(arg: &Path) -> Named {
    lookup(arg, &TEMPLATES)
}

/// A backbone name as the temperature presets spell it: lower case without
/// `/`, `-` or `_` (`ViT-B/32` → `vitb32`).
fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '/' | '-' | '_' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The official temperatures of a backbone named like `ViT-B/32` or `vit-b32`.
pub fn temperature(name: &str) -> Option<(f32, f32)> {
    TEMPERATURES
        .iter()
        .find(|(n, _)| squash(n) == squash(name))
        .map(|(_, t)| *t)
}

/// The names of the temperature presets, for messages.
pub fn temperature_names() -> String {
    TEMPERATURES
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Folder names, one per line (`#` comments and blank lines ignored).
pub fn parse_folders(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_lists_have_their_sizes() {
        for (name, text) in SUBSETS {
            let p =
                crate::data::projection::Projection::subset_text(Path::new(name), text).unwrap();
            assert_eq!(p.out_classes(1000), 200, "{name}");
            p.check(1000).unwrap();
        }
        let m = crate::data::projection::Projection::map_text(Path::new("objectnet"), MAPS[0].1)
            .unwrap();
        assert_eq!(m.out_classes(1000), 113);
        m.check(1000).unwrap();
        let f = parse_folders(FOLDERS[0].1);
        assert_eq!(f.len(), 113);
        let mut sorted = f.clone();
        sorted.sort();
        assert_eq!(f, sorted, "labels follow sorted folder names");
    }

    #[test]
    fn temperature_names_are_forgiving() {
        assert_eq!(temperature("ViT-B/32"), Some((0.9576, 0.9733)));
        assert_eq!(temperature("vit_l14"), Some((1.0767, 0.9545)));
        assert_eq!(temperature("rn50"), None);
    }
}
