//! The one assertion that a secret appears nowhere: not in a log, a metric, an alert, a state file, an
//! error or a `Debug` output. Tests hand it every secret they planted and every text a user or an
//! attacker could read, each with the place it came from.
//!
//! A failure names the place and which secret (by its position and length), never the secret
//! itself: a test log is an output like any other.

use std::fmt::Display;
use std::path::Path;

/// Panic if any of `secrets` occurs in any of `places` (`(where, text)`).
pub fn assert_absent<W: Display, T: AsRef<str>>(
    secrets: &[&str],
    places: impl IntoIterator<Item = (W, T)>,
) {
    let mut searched = 0;
    for (place, text) in places {
        searched += 1;
        let text = text.as_ref();
        for (i, secret) in secrets.iter().enumerate() {
            assert!(
                !secret.is_empty(),
                "secret #{i} is empty: nothing to search"
            );
            assert!(
                !text.contains(secret),
                "secret #{i} ({} characters) leaked into {place}",
                secret.len()
            );
        }
    }
    assert!(searched > 0, "no place was searched for the secrets");
}

/// A file as text for [`assert_absent`], bytes that are not UTF-8 replaced (a SQLite file, its WAL);
/// an empty text when it does not exist (a WAL after a checkpoint).
pub fn file_text(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    }
}

/// Every file under `dir`, each as `(path, text)`, for searching a whole state or log folder.
pub fn files_under(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push((path.display().to_string(), file_text(&path)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_anywhere_fails_and_the_message_does_not_quote_it() {
        assert_absent(&["npm_SECRET"], [("log", "all quiet"), ("metrics", "x 1")]);
        let caught = std::panic::catch_unwind(|| {
            assert_absent(&["other", "npm_SECRET"], [("log", "a npm_SECRET b")]);
        });
        let message = caught
            .expect_err("a leak fails")
            .downcast::<String>()
            .expect("a message");
        assert!(
            message.contains("secret #1 (10 characters) leaked into log"),
            "{message}"
        );
        assert!(!message.contains("npm_SECRET"), "{message}");
    }
}
