//! Every SVG dawin writes parses and renders in a real renderer (resvg),
//! titles with `& < >` included, and its axes show only possible values.
//! The PNGs land in target/svg-render/ for a person to look at.

use crate::common::{dawin_bin, fixtures_dir};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Renders `svg` to a PNG beside the test outputs; panics on a parse error.
fn render(svg: &Path) -> PathBuf {
    let text = std::fs::read_to_string(svg).unwrap();
    let mut opt = resvg::usvg::Options::default();
    opt.fontdb_mut().load_system_fonts();
    // A generic family must map to an installed font (resvg assumes Arial).
    opt.fontdb_mut().set_sans_serif_family("DejaVu Sans");
    let tree = resvg::usvg::Tree::from_str(&text, &opt)
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", svg.display()));
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height()).unwrap();
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::default(),
        &mut pixmap.as_mut(),
    );
    let out = crate::common::repo_root().join("target/svg-render");
    std::fs::create_dir_all(&out).unwrap();
    let name = svg
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string()
        + "-"
        + &svg.file_stem().unwrap().to_string_lossy();
    let png = out.join(format!("{name}.png"));
    pixmap.save_png(&png).unwrap();
    png
}

/// The numbers of the text nodes anchored like tick labels (`middle` for
/// x, `end` for y).
fn ticks(svg: &str, anchor: &str) -> Vec<f64> {
    svg.split("<text ")
        .skip(1)
        .filter(|t| t.contains(&format!("text-anchor=\"{anchor}\"")))
        .filter_map(|t| {
            t.split_once('>')
                .and_then(|(_, r)| r.split_once("</text>"))
                .map(|(v, _)| v.trim().to_string())
        })
        .filter_map(|v| v.parse::<f64>().ok())
        .collect()
}

fn dawin(args: &[&std::ffi::OsStr]) {
    let o = Command::new(dawin_bin()).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn every_svg_renders_and_its_axes_are_possible() {
    let d = tempfile::tempdir().unwrap();
    // A data file whose name needs escaping puts `& < >` in the title.
    let data = d.path().join("set & <shift>.safetensors");
    std::fs::copy(fixtures_dir().join("dawin_data.safetensors"), &data).unwrap();
    let mut svgs = Vec::new();
    for interp in ["exact", "bmm:2"] {
        let out = d.path().join(format!("eval-{}", interp.replace(':', "")));
        let pt = fixtures_dir().join("dawin_pt.safetensors");
        let ft = fixtures_dir().join("dawin_ft.safetensors");
        dawin(&[
            "eval".as_ref(),
            "--pretrained".as_ref(),
            pt.as_os_str(),
            "--finetuned".as_ref(),
            ft.as_os_str(),
            "--data".as_ref(),
            data.as_os_str(),
            "--out-dir".as_ref(),
            out.as_os_str(),
            "--interp".as_ref(),
            interp.as_ref(),
            "--quiet".as_ref(),
        ]);
        svgs.push(out.join("lambdas.svg"));
    }
    // The oracle plot: its own title, Pearson's r, and dots one can see.
    let oracle = d.path().join("eval-exact/lambda_oracle.svg");
    let text = std::fs::read_to_string(&oracle).unwrap();
    assert!(text.contains("DaWin λ against the oracle λ") && text.contains("Pearson r = "));
    assert!(text.contains(r#"r="4""#), "16 samples get large dots");
    render(&oracle);
    // The mixture's legend lies above the plot area: no component line
    // (drawn from the plot's top down) can cross it.
    let text = std::fs::read_to_string(&svgs[1]).unwrap();
    let legend_y: f64 = text
        .split("component 1: mean")
        .next()
        .and_then(|before| before.rsplit("y=\"").next())
        .and_then(|v| v.split('"').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let top: f64 = text
        .split(r#"stroke-dasharray="5,3" stroke-width="1.5"/>"#)
        .next()
        .and_then(|first| first.rsplit("y1=\"").next())
        .and_then(|v| v.split('"').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        legend_y < top,
        "legend at y {legend_y}, component lines from {top}"
    );
    let summary = d.path().join("eval-exact/summary.json");
    let wise = d.path().join("wise/plot.svg");
    std::fs::create_dir_all(wise.parent().unwrap()).unwrap();
    dawin(&[
        "plot-wise".as_ref(),
        "--id".as_ref(),
        summary.as_os_str(),
        "--ood".as_ref(),
        summary.as_os_str(),
        "--out".as_ref(),
        wise.as_os_str(),
        "--title".as_ref(),
        "WiSE-FT & DaWin <fixture>".as_ref(),
    ]);
    for svg in &svgs {
        let text = std::fs::read_to_string(svg).unwrap();
        assert!(
            text.contains("set &amp; &lt;shift&gt;"),
            "title not escaped"
        );
        let x = ticks(&text, "middle");
        assert!(x.iter().all(|v| (0.0..=1.0).contains(v)), "λ ticks {x:?}");
        assert!(ticks(&text, "end").iter().all(|v| *v >= 0.0));
        render(svg);
    }
    let text = std::fs::read_to_string(&wise).unwrap();
    assert!(text.contains("WiSE-FT &amp; DaWin &lt;fixture&gt;"));
    for anchor in ["middle", "end"] {
        let t = ticks(&text, anchor);
        assert!(
            t.len() >= 3 && t.iter().all(|v| (0.0..=100.0).contains(v)),
            "{anchor} ticks {t:?}"
        );
    }
    render(&wise);
}

/// A tool, not a check: `DAWIN_RENDER_DIR=D cargo test --test svg_render
/// -- --ignored` renders every `.svg` under D (pictures for docs/).
#[test]
#[ignore]
fn renders_a_given_folder() {
    let dir =
        std::env::var_os("DAWIN_RENDER_DIR").expect("set DAWIN_RENDER_DIR to a folder of SVGs");
    let mut stack = vec![PathBuf::from(dir)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "svg") {
                println!("{} -> {}", p.display(), render(&p).display());
            }
        }
    }
}
