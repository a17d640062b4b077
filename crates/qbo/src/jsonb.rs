//! What jsonb cannot store. PostgreSQL's jsonb rejects the escape `\u0000` (a NUL character in a
//! string): one such record would fail the whole page. Policy, documented in README.md: every
//! `\u0000` escape in a record is replaced by `\ufffd` (U+FFFD REPLACEMENT CHARACTER) before the
//! cast; nothing else in the record changes. An escaped backslash followed by `u0000` (the text
//! `\\u0000`) is ordinary text and is kept. Both ways a record reaches jsonb apply it on the
//! network thread: [`crate::jsonb::encode`] as it writes the bytes, and
//! [`crate::pager::RawRecord::from_page`] on a text left for `jsonb_in`.

pub mod encode;

use std::borrow::Cow;

/// The record text with every `\u0000` escape replaced by `\ufffd`.
pub fn storable(json: &str) -> Cow<'_, str> {
    if !json.contains("\\u0000") {
        return Cow::Borrowed(json);
    }
    let b = json.as_bytes();
    let mut out = String::with_capacity(json.len());
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            if b[i + 1] == b'u' && b.len() >= i + 6 && &b[i + 2..i + 6] == b"0000" {
                out.push_str(&json[last..i]);
                out.push_str("\\ufffd");
                i += 6;
                last = i;
                continue;
            }
            i += 2; // any other escape, including an escaped backslash
            continue;
        }
        i += 1;
    }
    out.push_str(&json[last..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::storable;

    #[test]
    fn nul_escapes_are_replaced_and_nothing_else_changes() {
        assert_eq!(
            storable(r#"{"a":"x\u0000y","n":12.30}"#),
            r#"{"a":"x\ufffdy","n":12.30}"#
        );
        assert_eq!(storable(r#"{"a":"\\u0000"}"#), r#"{"a":"\\u0000"}"#);
        assert_eq!(storable(r#"{"a":"\\\u0000"}"#), r#"{"a":"\\\ufffd"}"#);
        assert!(matches!(
            storable(r#"{"a":"Café"}"#),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
