//! What the API accepts in its text fields, and how error messages quote what a caller
//! sent.
//!
//! Two kinds of text cross the API. *Names* (labels, context keys, idempotency keys,
//! provider names, workflow names) end up in tables, logs and terminal lines, one per line:
//! they must be printable, so they may hold no control character (C0, DEL, C1), no line
//! or paragraph separator and no bidirectional override or isolate (U+202A–U+202E,
//! U+2066–U+2069), which could make a label read differently from what it is. *Free text*
//! (prompts, context values, workflow variable values, cancel reasons) may hold line
//! breaks, tabs and anything else a person pastes, except NUL, which no string field
//! accepts (C strings, PostgreSQL text and many terminals end or break at it).
//!
//! An error never echoes a huge input back: [`quote`] cuts what it quotes to
//! [`MAX_QUOTED_CHARS`] characters.

use crate::FieldError;

/// Most characters of a caller's input an error message quotes.
pub const MAX_QUOTED_CHARS: usize = 100;

/// `text` as an error message quotes it: in double quotes with Rust escapes (so control
/// characters show as `\u{1b}`), cut after [`MAX_QUOTED_CHARS`] characters with `…` and
/// the full length in bytes.
pub fn quote(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &text[..cut], text.len()),
    }
}

/// The largest character boundary of `text` at or before byte `max`: where to cut it to
/// at most `max` bytes without splitting a character.
pub fn floor_char_boundary(text: &str, max: usize) -> usize {
    if max >= text.len() {
        return text.len();
    }
    let mut at = max;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Why `c` may not appear in a name, if it may not.
pub fn forbidden_in_name(c: char) -> Option<&'static str> {
    match c {
        '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}' => Some("a line break"),
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
            Some("a bidirectional override that changes how the text reads")
        }
        c if c.is_control() => Some("a control character"),
        _ => None,
    }
}

/// Checks a name: printable text with no control character, line break or bidirectional
/// override. `field` is the request field, `what` names the value in the message
/// (`label 2`, `context key "repo"`).
pub fn check_name(field: &'static str, what: &str, value: &str) -> Result<(), FieldError> {
    match value
        .char_indices()
        .find_map(|(at, c)| forbidden_in_name(c).map(|why| (at, c, why)))
    {
        None => Ok(()),
        Some((at, c, why)) => Err(FieldError::new(
            field,
            format!(
                "{what} {} holds U+{:04X} ({why}) at byte {at}; names must be printable, without control characters, line breaks or bidirectional overrides",
                quote(value),
                c as u32
            ),
        )),
    }
}

/// Checks free text (prompts, context values, reasons): anything but NUL.
pub fn check_text(field: &'static str, what: &str, value: &str) -> Result<(), FieldError> {
    match value.find('\0') {
        None => Ok(()),
        Some(at) => Err(FieldError::new(
            field,
            format!(
                "{what} holds U+0000 (NUL) at byte {at} of {}; no text field accepts NUL",
                value.len()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_fall_on_character_boundaries() {
        assert_eq!(floor_char_boundary("aé", 2), 1);
        assert_eq!(floor_char_boundary("aé", 3), 3);
        assert_eq!(floor_char_boundary("aé", 9), 3);
        assert_eq!(floor_char_boundary("éé", 1), 0);
        assert_eq!(floor_char_boundary("", 0), 0);
    }

    #[test]
    fn quotes_are_cut_and_escaped() {
        assert_eq!(quote("a\u{1b}b"), r#""a\u{1b}b""#);
        let long = "é".repeat(500);
        let q = quote(&long);
        assert!(q.ends_with("… (1000 bytes)"), "{q}");
        assert_eq!(q.chars().filter(|c| *c == 'é').count(), MAX_QUOTED_CHARS);
    }

    #[test]
    fn names_refuse_controls_line_breaks_and_bidi_overrides() {
        for ok in ["team-a", "ci/main", "日本語", "a b", "émoji 🚀"] {
            assert!(check_name("labels", "label", ok).is_ok(), "{ok}");
        }
        for (bad, code, at) in [
            ("a\0b", "U+0000", 1),
            ("red\u{1b}[31m", "U+001B", 3),
            ("x\ty", "U+0009", 1),
            ("two\nlines", "U+000A", 3),
            ("del\u{7f}", "U+007F", 3),
            ("c1\u{9b}", "U+009B", 2),
            ("evil\u{202e}txt", "U+202E", 4),
            ("iso\u{2066}", "U+2066", 3),
            ("sep\u{2028}", "U+2028", 3),
        ] {
            let e = check_name("labels", "label 1", bad).expect_err(bad);
            assert_eq!(e.field, "labels");
            assert!(e.message.contains(code), "{bad:?}: {e}");
            assert!(e.message.contains(&format!("at byte {at}")), "{bad:?}: {e}");
        }
    }

    #[test]
    fn free_text_refuses_only_nul() {
        assert!(check_text("prompt", "the prompt", "a\n\tb\r\n\u{1b}[1m").is_ok());
        let e = check_text("prompt", "the prompt", &format!("{}\0", "x".repeat(5000)))
            .expect_err("NUL");
        assert!(e.message.contains("U+0000") && e.message.contains("byte 5000"));
        assert!(e.message.len() < 200, "the text is not echoed: {e}");
    }
}
