//! OpenAI's CLIP tokenizer (`clip.simple_tokenizer`, which open_clip
//! reuses), to the token id:
//!
//! 1. cleaning: the context-free fixes of `ftfy.fix_text` (C1 controls read
//!    as Windows-1252, Latin ligatures split, half/fullwidth forms to
//!    standard width, curly quotes straightened, line breaks unified,
//!    terminal escapes and stray control characters removed, NFC), repeated
//!    until nothing changes; then `html.unescape` twice, whitespace runs
//!    collapsed to one space, trimmed, lowercased. ftfy's mojibake repair
//!    (`fix_encoding`, a statistical guess at text decoded with the wrong
//!    codec) and its all-caps HTML entities are not reproduced: prompts
//!    with mojibake in them may tokenize differently.
//! 2. OpenAI's pre-tokenizer pattern, in which `<|startoftext|>` and
//!    `<|endoftext|>` are tokens wherever they appear in the text;
//! 3. byte-level BPE over the 49,152-token vocabulary, each pre-token
//!    encoded by the `instant-clip-tokenizer` crate (which embeds OpenAI's
//!    merge list, so the repository carries no copy);
//! 4. `<|startoftext|>` first, `<|endoftext|>` last, zeros to the context;
//!    longer prompts keep their first `context − 1` tokens and end with
//!    `<|endoftext|>` (open_clip's and `clip.tokenize(truncate=True)`'s rule).
//!
//! `tests/models/tokenizer.rs` checks the ids against open_clip's tokenizer.

use crate::model::text::EOT;
use instant_clip_tokenizer::Tokenizer;
use regex::Regex;
use std::sync::OnceLock;

/// `<|startoftext|>`.
pub const SOT: i32 = 49_406;
/// Every CLIP's context length.
pub const CONTEXT: usize = 77;

fn bpe() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(Tokenizer::new)
}

fn pattern() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| {
        Regex::new(
            r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
        )
        .expect("the CLIP pattern compiles")
    })
}

/// The token ids of `text` without start/end tokens.
pub fn encode(text: &str) -> Vec<i32> {
    let clean = clean(text);
    let mut out = Vec::new();
    let mut word = Vec::new();
    for m in pattern().find_iter(&clean) {
        match m.as_str() {
            "<|startoftext|>" => out.push(SOT),
            "<|endoftext|>" => out.push(EOT),
            w => {
                word.clear();
                bpe().encode(w, &mut word);
                out.extend(word.iter().map(|t| t.to_u16() as i32));
            }
        }
    }
    out
}

/// `[context]` ids: start, the text's tokens (truncated), end, zeros.
pub fn tokenize(text: &str, context: usize) -> Vec<i32> {
    tokenize_noting_cuts(text, context).0
}

/// [`tokenize`], and whether it cut the text (the caller may warn).
pub fn tokenize_noting_cuts(text: &str, context: usize) -> (Vec<i32>, bool) {
    let mut ids = Vec::with_capacity(context);
    ids.push(SOT);
    ids.extend(encode(text));
    let keep = context.saturating_sub(1).max(1);
    let cut = ids.len() > keep;
    ids.truncate(keep);
    ids.push(EOT);
    ids.resize(context, 0);
    (ids, cut)
}

/// Did `tokenize` cut this text?
pub fn truncated(text: &str, context: usize) -> bool {
    tokenize_noting_cuts(text, context).1
}

/// The cleaning of OpenAI's tokenizer (step 1 of the module comment).
pub fn clean(text: &str) -> String {
    let fixed = fix_text(text);
    let once = htmlize::unescape(fixed.trim());
    let twice = htmlize::unescape(once.as_ref());
    let mut out = String::with_capacity(twice.len());
    for word in twice.split(python_space).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out.to_lowercase()
}

/// Python's `str.isspace` (what `re`'s `\s` matches): Unicode White_Space
/// plus the separators U+001C–U+001F.
fn python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// ftfy's context-free fixes, repeated until the text is stable (ftfy
/// decodes HTML entities ending in `;` itself unless the text holds `<`).
fn fix_text(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let entities = !text.contains('<');
    let mut s = text.to_string();
    for _ in 0..8 {
        let unescaped = match entities {
            true => unescape_entities(&s),
            false => s.clone(),
        };
        let fixed: String = remove_controls(&remove_terminal_escapes(&fix_line_breaks(
            &unescaped.chars().flat_map(fix_char).collect::<String>(),
        )))
        .nfc()
        .collect();
        if fixed == s {
            break;
        }
        s = fixed;
    }
    s
}

/// ftfy's `unescape_html`: each `&name;` / `&#n;` that decodes whole.
fn unescape_entities(s: &str) -> String {
    static R: OnceLock<Regex> = OnceLock::new();
    let r = R.get_or_init(|| Regex::new("&#?[0-9A-Za-z]{1,24};").expect("compiles"));
    r.replace_all(s, |c: &regex::Captures| {
        let e = &c[0];
        let d = htmlize::unescape(e);
        match d.contains(';') {
            true => e.to_string(),
            false => d.into_owned(),
        }
    })
    .into_owned()
}

/// C1 controls as Windows-1252, ligatures, widths and quotes, per char.
fn fix_char(c: char) -> Vec<char> {
    use unicode_normalization::UnicodeNormalization;
    let one = |s: &str| s.chars().collect();
    match c {
        '\u{80}'..='\u{9f}' => vec![cp1252(c as u8)],
        'Ĳ' => one("IJ"),
        'ĳ' => one("ij"),
        'ŉ' => one("ʼn"),
        'Ǳ' => one("DZ"),
        'ǲ' => one("Dz"),
        'ǳ' => one("dz"),
        'Ǆ' => one("DŽ"),
        'ǅ' => one("Dž"),
        'ǆ' => one("dž"),
        'Ǉ' => one("LJ"),
        'ǈ' => one("Lj"),
        'ǉ' => one("lj"),
        'Ǌ' => one("NJ"),
        'ǋ' => one("Nj"),
        'ǌ' => one("nj"),
        'ﬀ' => one("ff"),
        'ﬁ' => one("fi"),
        'ﬂ' => one("fl"),
        'ﬃ' => one("ffi"),
        'ﬄ' => one("ffl"),
        'ﬅ' => one("ſt"),
        'ﬆ' => one("st"),
        '\u{3000}' => vec![' '],
        '\u{ff01}'..='\u{ffef}' => std::iter::once(c).nfkc().collect(),
        '\u{2bc}' | '\u{2018}'..='\u{201b}' => vec!['\''],
        '\u{201c}'..='\u{201f}' => vec!['"'],
        _ => vec![c],
    }
}

/// Windows-1252 for 0x80–0x9F; the five bytes it leaves undefined stay
/// the C1 control they are (ftfy's "sloppy" codec).
fn cp1252(b: u8) -> char {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž',
        '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}',
        'ž', 'Ÿ',
    ];
    HIGH[(b - 0x80) as usize]
}

/// CRLF, CR, U+2028, U+2029 and NEL to `\n`.
fn fix_line_breaks(s: &str) -> String {
    s.replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

/// `ESC [ digits/semicolons letter` sequences removed.
fn remove_terminal_escapes(s: &str) -> String {
    static R: OnceLock<Regex> = OnceLock::new();
    let r = R.get_or_init(|| Regex::new("\x1b\\[[0-9;]*[a-zA-Z]").expect("compiles"));
    r.replace_all(s, "").into_owned()
}

/// ftfy's list of control characters nobody means to write.
fn remove_controls(s: &str) -> String {
    s.chars()
        .filter(|&c| {
            !matches!(c,
                '\u{0}'..='\u{8}' | '\u{b}' | '\u{e}'..='\u{1f}' | '\u{7f}'
                | '\u{206a}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffc}')
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_photo_of_a_dog() {
        // OpenAI's ids for this prompt (clip.tokenize).
        let ids = tokenize("a photo of a dog.", 77);
        assert_eq!(&ids[..7], &[49406, 320, 1125, 539, 320, 1929, 269]);
        assert_eq!(ids[7], EOT);
        assert!(ids[8..].iter().all(|&t| t == 0));
    }

    #[test]
    fn long_text_keeps_76_tokens_and_ends_with_eot() {
        let ids = tokenize(&"word ".repeat(200), 77);
        assert_eq!(ids.len(), 77);
        assert_eq!(ids[76], EOT);
        assert_eq!(ids[0], SOT);
        assert!(truncated(&"word ".repeat(200), 77));
    }

    #[test]
    fn special_tokens_inside_text() {
        assert_eq!(encode("a<|endoftext|>b"), [320, EOT, 321]);
    }
}
