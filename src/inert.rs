//! Showing a string someone else chose. Token names, package names, versions, maintainers, team and
//! secret names come from whoever can create a token, publish a version or name a CI secret. Shown
//! raw, such a string can start lines of its own in an email or a log, clear a terminal, hide a link,
//! reorder what is read (bidi overrides) or be megabytes long.
//!
//! [`show`] is the one way such a string goes into text meant for people: every character that could
//! move the cursor, break a line, reorder text or hide itself is written as a visible escape (`\n`,
//! `\u{202e}`), and a long string is cut, ending with how much was left out and a digest that tells two
//! long strings apart. Machine-read outputs (JSON, the state) keep their own encodings.

use std::borrow::Cow;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

/// The most characters of one untrusted string shown.
pub const SHOWN_CHARS: usize = 200;

/// Whether `c` must not be shown as itself: control characters (C0, DEL, C1), line and paragraph
/// separators, bidi controls, and zero-width characters.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' // line and paragraph separators
            | '\u{061c}' | '\u{200e}' | '\u{200f}' // bidi marks
            | '\u{202a}'..='\u{202e}' // bidi embeddings and overrides
            | '\u{2066}'..='\u{2069}' // bidi isolates
            | '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}' // zero-width
            | '\u{180e}' // Mongolian vowel separator (zero-width in older Unicode)
        )
}

/// The most characters of a finding's own sentences (summary, fix) shown: they embed names, and
/// are ours otherwise, so they are bounded as a whole rather than name by name.
pub const TEXT_CHARS: usize = 2000;

/// `s` as it may be shown to a person: hidden characters escaped, at most [`SHOWN_CHARS`]
/// characters of it, then `…(+N bytes, sha256 0123abcd)` when it is longer. Borrowed when nothing
/// needed changing.
pub fn show(s: &str) -> Cow<'_, str> {
    show_at_most(s, SHOWN_CHARS)
}

/// [`show`] with a bound of `max` characters.
pub fn show_at_most(s: &str, max: usize) -> Cow<'_, str> {
    if s.chars().count() <= max && !s.chars().any(hidden) {
        return Cow::Borrowed(s);
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars().take(max) {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if hidden(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
        used += c.len_utf8();
    }
    if used < s.len() {
        let digest = Sha256::digest(s.as_bytes());
        let _ = write!(
            out,
            "…(+{} bytes, sha256 {})",
            s.len() - used,
            hex::encode(&digest[..4])
        );
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_are_borrowed_as_they_are() {
        for s in [
            "bulk-hardening",
            "@acme/widget",
            "1.2.3-rc.1+build.5",
            "Zoë ✓ 日本",
        ] {
            assert!(matches!(show(s), Cow::Borrowed(_)), "{s}");
        }
    }

    #[test]
    fn what_could_move_break_reorder_or_hide_is_escaped() {
        let table = [
            ("a\nINFO forged line", "a\\nINFO forged line"),
            ("\u{1b}[2Jclear", "\\u{1b}[2Jclear"),
            (
                "\u{1b}]8;;https://evil\u{7}link",
                "\\u{1b}]8;;https://evil\\u{7}link",
            ),
            ("c1\u{9b}31m", "c1\\u{9b}31m"),
            ("nul\0", "nul\\u{0}"),
            ("del\u{7f}", "del\\u{7f}"),
            ("gpj.\u{202e}exe", "gpj.\\u{202e}exe"),
            ("zero\u{200b}width", "zero\\u{200b}width"),
            ("para\u{2029}sep", "para\\u{2029}sep"),
            ("tab\there", "tab\\there"),
        ];
        for (raw, shown) in table {
            assert_eq!(show(raw), shown, "{raw:?}");
        }
    }

    #[test]
    fn long_strings_are_cut_with_what_was_left_out() {
        let long = "x".repeat(1_000_000);
        let s = show(&long);
        assert!(s.starts_with(&"x".repeat(SHOWN_CHARS)));
        assert!(s.contains(&format!("…(+{} bytes, sha256 ", 1_000_000 - SHOWN_CHARS)));
        assert!(s.chars().count() < SHOWN_CHARS + 40);
        let long_y = format!("{}y", "x".repeat(999_999));
        assert_ne!(s, show(&long_y), "two long strings stay apart");
    }

    /// Every string, however hostile: one line, no byte a terminal acts on, bounded.
    #[test]
    fn any_string_comes_out_inert_and_bounded() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        let pool: Vec<char> = (0u32..0x300)
            .chain(0x2000..0x2070)
            .chain([0xfeff, 0x180e, 0x061c, 0x1f600])
            .filter_map(char::from_u32)
            .collect();
        for _ in 0..5_000 {
            let len = rng.random_range(0..400);
            let s: String = (0..len)
                .map(|_| pool[rng.random_range(0..pool.len())])
                .collect();
            let out = show(&s);
            assert!(!out.chars().any(hidden), "{s:?} -> {out:?}");
            assert!(out.chars().count() <= SHOWN_CHARS * 10 + 40, "{s:?}");
        }
    }
}
