//! dawin's CLIP tokenizer against OpenAI's own (`clip/simple_tokenizer.py`
//! with `clip.tokenize(truncate=True)`'s rule) and open_clip's on the
//! strings of `tests/fixtures/tokenizer/cases.json`: every ImageNet class
//! name, a third of them in a prompt, and strings chosen to break
//! tokenizers (accents, CJK, emoji, HTML entities, curly quotes, numbers,
//! control characters, special tokens, over-long text). Made by
//! `tools/make_fixtures.py --text`.

use dawin::tokenizer::{CONTEXT, tokenize};

fn ids(v: &serde_json::Value) -> Vec<i32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap() as i32)
        .collect()
}

/// The ids up to and with the first end-of-text.
fn upto_eot(ids: &[i32]) -> &[i32] {
    &ids[..ids
        .iter()
        .position(|&t| t == 49407)
        .map_or(ids.len(), |p| p + 1)]
}

#[test]
fn ids_equal_openai_on_every_case_and_open_clip_where_no_special_token_is_spelled() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tokenizer/cases.json"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() > 1000, "{} cases", cases.len());
    let mut wrong = Vec::new();
    let mut compared_with_open_clip = 0;
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let full = tokenize(text, CONTEXT);
        assert_eq!(full.len(), CONTEXT);
        let got = upto_eot(&full);
        let openai = ids(&c["openai"]);
        if got != openai {
            wrong.push(format!("{text:?}: got {got:?}, OpenAI's {openai:?}"));
        }
        // open_clip spells its special tokens `<start_of_text>`/`<end_of_text>`.
        let spelled = [
            "<|startoftext|>",
            "<|endoftext|>",
            "<start_of_text>",
            "<end_of_text>",
        ];
        if !spelled.iter().any(|s| text.to_lowercase().contains(s)) {
            compared_with_open_clip += 1;
            assert_eq!(
                ids(&c["open_clip"]),
                openai,
                "{text:?}: the references disagree"
            );
        }
    }
    assert!(compared_with_open_clip > 1000);
    assert!(
        wrong.is_empty(),
        "{} of {} differ:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}
