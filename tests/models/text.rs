//! CLIP's text tower on every executor against transformers and open_clip
//! (float64 references in `tests/fixtures/text/NAME.io.safetensors`, made
//! by `tools/make_fixtures.py --text`): text embeddings of the token ids
//! open_clip gives the prompts, within 1e-4 of their scale.

use crate::common::{assert_close, repo_root};
use dawin::exec::{Executor, ExecutorKind};
use dawin::model::Overrides;
use dawin::model::text::TextModel;
use dawin::model::text_tower::{DeviceText, encode};
use dawin::tensorfile::TensorFile;
use std::path::PathBuf;

pub fn text_dir() -> PathBuf {
    repo_root().join("tests/fixtures/text")
}

fn io(name: &str) -> TensorFile {
    TensorFile::open(&text_dir().join(format!("{name}.io.safetensors"))).unwrap()
}

fn check_embeds(kind: ExecutorKind, ex: &dyn Executor, name: &str, heads: usize) {
    let m = TextModel::load(&text_dir().join(name), Overrides::default(), None).unwrap();
    assert_eq!(m.spec.heads, heads, "{name}: heads from the config");
    assert!(m.notes.is_empty(), "{name}: {:?}", m.notes);
    assert_eq!((m.spec.vocab, m.spec.context), (49408, 77));
    let f = io(name);
    let (shape, ids) = f.read_i64("input_ids").unwrap();
    let ids: Vec<i32> = ids.iter().map(|&v| v as i32).collect();
    let want = f.read_f32("text_embeds").unwrap();
    let dev = DeviceText::upload(ex, &m).unwrap();
    let got = encode(ex, &dev, &ids, shape[0]).unwrap();
    assert_close(
        &format!("{name} text embeds on {kind}"),
        &got,
        &want.data,
        1e-4,
    );
}

crate::per_executor! {
fn hf_clip_text_embeds_match_transformers(kind, ex) {
    check_embeds(kind, ex, "hf_clip", 4);
}
}

crate::per_executor! {
fn open_clip_text_embeds_match_open_clip(kind, ex) {
    check_embeds(kind, ex, "open_clip", 2);
}
}

#[test]
fn our_tokenizer_gives_the_fixture_ids() {
    let prompts = std::fs::read_to_string(text_dir().join("prompts.txt")).unwrap();
    let (_, ids) = io("open_clip").read_i64("input_ids").unwrap();
    let ours: Vec<i64> = prompts
        .lines()
        .flat_map(|p| dawin::tokenizer::tokenize(p, 77))
        .map(i64::from)
        .collect();
    assert_eq!(ours, ids);
}

crate::per_executor! {
    /// A batch runs only the positions its longest prompt needs (attention is
    /// causal): each prompt alone, with fewer positions, gives what it gives
    /// inside a batch with the 77-token prompt, on every executor.
    fn positions_after_the_last_end_of_text_do_not_change_embeddings(kind, ex) {
        let m = TextModel::load(&text_dir().join("hf_clip"), Overrides::default(), None).unwrap();
        let (_, ids) = io("hf_clip").read_i64("input_ids").unwrap();
        let ids: Vec<i32> = ids.iter().map(|&v| v as i32).collect();
        let n = ids.len() / 77;
        let dev = DeviceText::upload(ex, &m).unwrap();
        let together = encode(ex, &dev, &ids, n).unwrap();
        let alone: Vec<f32> = ids
            .chunks(77)
            .flat_map(|p| encode(ex, &dev, p, 1).unwrap())
            .collect();
        assert_close(
            &format!("alone vs together on {kind}"),
            &alone,
            &together,
            1e-5,
        );
    }
}
