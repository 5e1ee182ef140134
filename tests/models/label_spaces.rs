//! Shipped label spaces and presets: `--temperature vit-b32`, class-subset
//! files with comments and Python list syntax, `--folders` and
//! `--crop-border` on image folders.

use crate::common::{dawin_bin, fixtures_dir};
use dawin::data::dataset::{Dataset, FolderOptions, LabelOrder};
use dawin::data::preprocess::{Rgb8, crop_border, load_image, load_image_cropped};
use dawin::data::projection::Projection;
use std::path::Path;
use std::process::Command;

fn eval(out: &Path, extra: &[&str]) -> (bool, String, Option<serde_json::Value>) {
    let fx = |n: &str| fixtures_dir().join(n);
    let o = Command::new(dawin_bin())
        .arg("eval")
        .arg("--pretrained")
        .arg(fx("dawin_pt.safetensors"))
        .arg("--finetuned")
        .arg(fx("dawin_ft.safetensors"))
        .arg("--data")
        .arg(fx("dawin_data.safetensors"))
        .arg("--out-dir")
        .arg(out)
        .args(["--quiet", "--methods", "zeroshot,finetuned,dawin"])
        .args(extra)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    let summary = std::fs::read_to_string(out.join("summary.json"))
        .ok()
        .map(|s| serde_json::from_str(&s).unwrap());
    (o.status.success(), text, summary)
}

#[test]
fn temperature_presets_record_their_numbers() {
    let d = tempfile::tempdir().unwrap();
    let (ok, text, s) = eval(&d.path().join("a"), &["--temperature", "ViT-B/16"]);
    assert!(ok, "{text}");
    let t = &s.unwrap()["temperature"];
    let t: Vec<f64> = t
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        (t[0] - 0.96).abs() < 1e-6 && (t[1] - 1.0066).abs() < 1e-6,
        "{t:?}"
    );
    let (ok, text, _) = eval(&d.path().join("b"), &["--temperature", "rn50"]);
    assert!(!ok && text.contains("vit-b32"), "{text}");
}

#[test]
fn subset_files_take_comments_and_python_lists() {
    let d = tempfile::tempdir().unwrap();
    let plain = d.path().join("plain.txt");
    std::fs::write(&plain, "0 2 4").unwrap();
    let python = d.path().join("python.txt");
    std::fs::write(
        &python,
        "# the even classes\n[0, 2,\n 4]  # pasted from Python\n",
    )
    .unwrap();
    assert_eq!(
        Projection::subset_file(&plain).unwrap(),
        Projection::subset_file(&python).unwrap()
    );
    let twice = d.path().join("twice.txt");
    std::fs::write(&twice, "[1, 1]").unwrap();
    assert!(
        Projection::subset_file(&twice)
            .unwrap_err()
            .to_string()
            .contains("twice")
    );
    // Shipped names, and a file of that name wins over them.
    assert_eq!(
        Projection::subset_file(Path::new("imagenet-r"))
            .unwrap()
            .out_classes(0),
        200
    );
    assert_eq!(
        Projection::map_file(Path::new("objectnet"))
            .unwrap()
            .out_classes(0),
        113
    );
    let e = Projection::subset_file(Path::new("imagenet-z"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("imagenet-a") && e.contains("no such file"),
        "{e}"
    );
    // Applied to a 6-class head the 1000-class lists are refused by index.
    let (ok, text, _) = eval(&d.path().join("r"), &["--class-subset", "imagenet-a"]);
    assert!(!ok && text.contains("out of range"), "{text}");
}

fn image(path: &Path, w: u32, h: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 7 % 256) as u8,
            (y * 11 % 256) as u8,
            ((x + y) % 256) as u8,
        ])
    });
    img.save(path).unwrap();
}

#[test]
fn folder_filter_keeps_the_listed_classes_in_sorted_order() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("objectnet");
    for c in ["alarm_clock", "banana", "zebra_crossing", "backpack"] {
        image(&root.join(c).join("1.png"), 20, 18);
    }
    let opt = FolderOptions {
        order: LabelOrder::Sorted,
        keep: Some(vec![
            "banana".into(),
            "alarm_clock".into(),
            "not_there".into(),
        ]),
        crop_border: 0,
    };
    let ds = Dataset::open_with(&root, 16, &opt).unwrap();
    assert_eq!(ds.classes, ["alarm_clock", "banana"]);
    assert_eq!(ds.labels, [0, 1]);
    let w = ds.warnings.join("\n");
    assert!(
        w.contains("`not_there`") && w.contains("2 class folders outside --folders"),
        "{w}"
    );
}

#[test]
fn border_crop_is_pil_crop_then_the_clip_transform() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.png");
    image(&p, 23, 19);
    let img = dawin::data::preprocess::decode(&p).unwrap();
    let c = crop_border(&img, 2).unwrap();
    assert_eq!((c.width, c.height), (19, 15));
    // Pixel (x, y) of the crop is pixel (x + 2, y + 2) of the image.
    for (x, y) in [(0, 0), (18, 14), (5, 7)] {
        for ch in 0..3 {
            assert_eq!(
                c.data[(y * 19 + x) * 3 + ch],
                img.data[((y + 2) * 23 + x + 2) * 3 + ch]
            );
        }
    }
    let want = dawin::data::preprocess::clip_preprocess(&c, 16);
    assert_eq!(load_image_cropped(&p, 16, 2).unwrap(), want);
    assert_eq!(
        load_image_cropped(&p, 16, 0).unwrap(),
        load_image(&p, 16).unwrap()
    );
    let tiny = Rgb8 {
        width: 4,
        height: 4,
        data: vec![0; 48],
    };
    assert!(crop_border(&tiny, 2).is_none());
}

/// The eight-task benchmark's presets (tools/make_task_presets.py): each
/// task's class count as its dataset has it, label 0's name as the
/// benchmark code lists it, and templates with `{}`; `zeroshot --classes
/// TASK --templates TASK` reads them by name.
#[test]
fn the_eight_task_presets_ship_in_label_order() {
    use dawin::pipelines::zeroshot::{classes, templates};
    let want = [
        ("sun397", 397, "abbey"),
        ("cars", 196, "AM General Hummer SUV 2000"),
        ("resisc45", 45, "airplane"),
        ("eurosat", 10, "annual crop land"),
        ("svhn", 10, "0"),
        ("gtsrb", 43, "red and white circle 20 kph speed limit"),
        ("mnist", 10, "0"),
        ("dtd", 47, "banded"),
    ];
    for (task, count, first) in want {
        let (name, c) = classes(Path::new(task)).unwrap();
        assert_eq!(
            (name.as_str(), c.len(), c[0].as_str()),
            (task, count, first)
        );
        let (_, t) = templates(Path::new(task)).unwrap();
        assert!(
            !t.is_empty() && t.iter().all(|t| t.contains("{}")),
            "{task}: {t:?}"
        );
    }
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("gtsrb.safetensors");
    let model = fixtures_dir().join("text/hf_clip");
    let o = Command::new(dawin_bin())
        .args([
            "zeroshot",
            "--classes",
            "gtsrb",
            "--templates",
            "gtsrb",
            "--model",
        ])
        .arg(&model)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = dawin::model::Model::load(&out, Default::default()).unwrap();
    assert_eq!(m.spec.classes, Some(43));
}
