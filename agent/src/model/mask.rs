//! Secret masking: every secret value becomes `***` in step output, logs, outputs and the
//! report, in its raw form and in the encodings a script is likely to print it in.
//!
//! Masked forms of a value `s`: `s` itself; its base64 encodings (standard and URL-safe) at
//! each of the three byte alignments it can have inside a longer encoded text (only the
//! characters that depend on `s` alone, so an encoded `s` is caught wherever it sits);
//! its URL (percent) encodings (upper- and lower-case hex, and `+` for spaces); its
//! JSON-escaped form.
//!
//! Values shorter than [`MIN_SECRET_LEN`] bytes (and derived forms shorter than that) are
//! not masked: masking `a` or `1` would shred every line of output while protecting
//! nothing, which is what GitHub Actions does too.
//!
//! [`StreamMasker`] masks a stream that arrives in chunks: a value split across two chunks
//! is still masked, because the masker holds back a tail shorter than the longest form
//! until the next chunk (or the end) shows whether it starts a secret.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use regex::Regex;
use serde_json::Value;
use std::borrow::Cow;

/// The replacement text.
const MASK: &str = "***";
/// Shortest secret value (in bytes) that is masked.
const MIN_SECRET_LEN: usize = 3;

/// Masks a fixed set of secret values. Cheap to clone; empty when there are no secrets.
#[derive(Debug, Clone, Default)]
pub(crate) struct Masker {
    re: Option<Regex>,
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "only the chunked masker reads it, and only the tests use that"
        )
    )]
    max_len: usize,
}

/// Percent-encodes `s`, leaving the unreserved characters and the bytes of `keep` as they are.
fn percent(s: &str, upper: bool, plus_for_space: bool, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ if keep.contains(&b) => out.push(b as char),
            b' ' if plus_for_space => out.push('+'),
            _ if upper => out.push_str(&format!("%{b:02X}")),
            _ => out.push_str(&format!("%{b:02x}")),
        }
    }
    out
}

/// The base64 fragments that an encoding of `s` contains at each alignment.
fn base64_forms(s: &[u8]) -> Vec<String> {
    let mut forms = Vec::new();
    for k in 0..3usize {
        let mut buf = vec![0u8; k];
        buf.extend_from_slice(s);
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let enc = engine.encode(&buf);
            let start = (8 * k).div_ceil(6);
            let end = (8 * (k + s.len())) / 6;
            if end > start
                && let Some(part) = enc.get(start..end)
            {
                forms.push(part.to_string());
            }
        }
    }
    forms
}

/// Every form of one secret value that gets masked.
fn forms_of(secret: &str) -> Vec<String> {
    if secret.len() < MIN_SECRET_LEN {
        return Vec::new();
    }
    let mut forms = vec![secret.to_string()];
    // Output is handled line by line: each line of a multi-line secret is a secret too.
    if secret.contains('\n') {
        forms.extend(
            secret
                .lines()
                .map(|l| l.trim_end_matches('\r'))
                .filter(|l| l.len() >= MIN_SECRET_LEN)
                .map(str::to_string),
        );
    }
    forms.extend(base64_forms(secret.as_bytes()));
    // Strict encoders (`curl --data-urlencode`, `jq @uri`), Python's `quote()` (keeps `/`),
    // `quote_plus()` and form encoding (`+` for spaces), JavaScript's `encodeURIComponent`
    // (keeps `!'()*`), each with upper- and lower-case hex.
    const KEEP_SETS: [&[u8]; 3] = [b"", b"/", b"!'()*"];
    for keep in KEEP_SETS {
        for upper in [true, false] {
            forms.push(percent(secret, upper, false, keep));
        }
    }
    forms.push(percent(secret, true, true, b""));
    if let Ok(json) = serde_json::to_string(secret) {
        forms.push(json[1..json.len() - 1].to_string());
    }
    forms.retain(|f| f.len() >= MIN_SECRET_LEN);
    forms
}

impl Masker {
    /// A masker for these secret values.
    pub(crate) fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut forms: Vec<String> = secrets.into_iter().flat_map(forms_of).collect();
        // Longest first so that the alternation prefers the longest form at a position.
        forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        forms.dedup();
        if forms.is_empty() {
            return Masker::default();
        }
        let max_len = forms[0].len();
        let pattern = forms
            .iter()
            .map(|f| regex::escape(f))
            .collect::<Vec<_>>()
            .join("|");
        match Regex::new(&pattern) {
            Ok(re) => Masker {
                re: Some(re),
                max_len,
            },
            // Only a pattern over the size limit can fail: fall back to the raw values.
            Err(_) => Masker::default(),
        }
    }

    /// True when there is nothing to mask.
    pub(crate) fn is_empty(&self) -> bool {
        self.re.is_none()
    }

    /// `text` with every secret form replaced by `***`.
    pub(crate) fn mask<'t>(&self, text: &'t str) -> Cow<'t, str> {
        match &self.re {
            None => Cow::Borrowed(text),
            Some(re) => re.replace_all(text, MASK),
        }
    }

    /// Masks every string inside a JSON value (keys included).
    pub(crate) fn mask_value(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => {
                if let Cow::Owned(m) = self.mask(s) {
                    *s = m;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.mask_value(v)),
            Value::Object(map) => {
                let old = std::mem::take(map);
                for (k, mut v) in old {
                    self.mask_value(&mut v);
                    map.insert(self.mask(&k).into_owned(), v);
                }
            }
            _ => {}
        }
    }

    /// A streaming masker over this set of secrets.
    #[cfg(test)]
    pub(crate) fn stream(&self) -> StreamMasker {
        StreamMasker {
            masker: self.clone(),
            buf: String::new(),
        }
    }
}

/// Masks text that arrives in chunks (see the module doc).
#[cfg(test)]
#[derive(Debug, Clone)]
pub struct StreamMasker {
    masker: Masker,
    buf: String,
}

#[cfg(test)]
impl StreamMasker {
    /// Feeds a chunk and returns the text that is safe to show now (masked).
    pub fn push(&mut self, chunk: &str) -> String {
        let Some(re) = &self.masker.re else {
            return chunk.to_string();
        };
        self.buf.push_str(chunk);
        let keep = self.masker.max_len.saturating_sub(1);
        let mut cut = self.buf.len().saturating_sub(keep);
        while !self.buf.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut out = String::with_capacity(cut);
        let mut last = 0;
        for m in re.find_iter(&self.buf) {
            if m.start() >= cut {
                break;
            }
            out.push_str(&self.buf[last..m.start()]);
            out.push_str(MASK);
            last = m.end();
        }
        let cut = cut.max(last);
        out.push_str(&self.buf[last..cut]);
        self.buf.drain(..cut);
        out
    }

    /// Ends the stream and returns the rest, masked.
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.buf);
        self.masker.mask(&rest).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};

    const S: &str = "hunter2-s3cr3t/?&";

    #[test]
    fn raw_and_short() {
        let m = Masker::new([S, "ab", ""]);
        assert_eq!(m.mask(&format!("pw={S}!")), "pw=***!");
        assert_eq!(m.mask("ab cd"), "ab cd");
        assert!(Masker::new(["", "x"]).is_empty());
        assert!(matches!(Masker::new([S]).mask("nothing"), Cow::Borrowed(_)));
    }

    #[test]
    fn base64_every_alignment_both_alphabets() {
        let m = Masker::new([S]);
        for prefix in ["", "a", "ab", "abc"] {
            for enc in [&STANDARD, &URL_SAFE] {
                let text = enc.encode(format!("{prefix}{S}suffix"));
                let masked = m.mask(&text);
                assert!(masked.contains(MASK), "{prefix:?}: {text} -> {masked}");
                // At most two leaked characters on each side of the mask.
                let core = &text[(8 * prefix.len()).div_ceil(6) + 2..][..8];
                assert!(!masked.contains(core), "{text} -> {masked}");
            }
        }
    }

    #[test]
    fn url_and_json_forms() {
        let m = Masker::new(["a b/c\"d"]);
        assert_eq!(m.mask("q=a%20b%2Fc%22d&"), "q=***&");
        assert_eq!(m.mask("q=a%20b%2fc%22d&"), "q=***&");
        assert_eq!(m.mask("q=a+b%2Fc%22d&"), "q=***&");
        assert_eq!(m.mask(r#"{"k":"a b/c\"d"}"#), r#"{"k":"***"}"#);
    }

    /// Guards the percent-encodings that leave some characters as they are: Python's
    /// `urllib.parse.quote()` keeps `/`, JavaScript's `encodeURIComponent` keeps `!'()*`.
    #[test]
    fn url_forms_with_safe_characters() {
        let m = Masker::new(["p@ss/w*rd 1"]);
        assert_eq!(m.mask("u=p%40ss/w%2Ard%201"), "u=***", "python quote()");
        assert_eq!(m.mask("u=p%40ss/w%2ard%201"), "u=***", "lower-case hex");
        assert_eq!(m.mask("u=p%40ss%2Fw*rd%201"), "u=***", "encodeURIComponent");
    }

    #[test]
    fn multi_line_secret_lines() {
        let m = Masker::new(["-----BEGIN KEY-----\nabcdef\n-----END KEY-----"]);
        assert_eq!(m.mask("abcdef"), "***");
        assert_eq!(m.mask("x -----END KEY-----"), "x ***");
    }

    #[test]
    fn mask_json_value() {
        let m = Masker::new([S]);
        let mut v = serde_json::json!({"a": [S, 1, {"b": format!("x{S}")}], S: true});
        m.mask_value(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"a": ["***", 1, {"b": "x***"}], "***": true})
        );
    }

    #[test]
    fn stream_split_across_chunks() {
        let m = Masker::new([S, "other-secret"]);
        let text = format!("line one {S} and other-secret; tail {S}");
        for split in 1..12 {
            let mut st = m.stream();
            let mut out = String::new();
            let bytes = text.as_bytes();
            for chunk in bytes.chunks(split) {
                out.push_str(&st.push(std::str::from_utf8(chunk).expect("ascii")));
            }
            out.push_str(&st.finish());
            assert_eq!(out, "line one *** and ***; tail ***", "split {split}");
        }
    }

    #[test]
    fn stream_keeps_unicode_boundaries() {
        let m = Masker::new(["sécret"]);
        let mut st = m.stream();
        let mut out = st.push("ééé sé");
        out.push_str(&st.push("cret ü"));
        out.push_str(&st.finish());
        assert_eq!(out, "ééé *** ü");
    }
}
