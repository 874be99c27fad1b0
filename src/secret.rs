//! Redaction in one place: how a secret-bearing URL is shown, how a secret file is read, and how a
//! secret is scrubbed out of text that came from elsewhere (a server's reply, a library's error).
//!
//! Secrets never sit in the configuration itself, only paths to files that hold them; the one
//! exception is a webhook URL, since chat webhooks carry their secret in the path. Such a URL is a
//! [`SecretUrl`], which shows itself redacted in `Debug`, `Display` and when serialized, so `config
//! check`, logs and errors cannot print it by accident.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

/// Show a URL without what may be a credential: user info, path and query.
pub fn redact_url(url: &Url) -> String {
    let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    if url.path() != "/" || url.query().is_some() {
        shown.push_str("/<redacted>");
    }
    shown
}

/// A URL whose path or query may hold a secret. Shown only as [`redact_url`] shows it; the sink that
/// sends to it reads the real one with [`SecretUrl::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(Url);

impl SecretUrl {
    pub fn new(url: Url) -> Self {
        Self(url)
    }

    /// Only the sink that sends to this URL calls this.
    pub fn expose(&self) -> &Url {
        &self.0
    }

    pub fn scheme(&self) -> &str {
        self.0.scheme()
    }

    /// Replace every spelling of this URL's secret parts in `text` (a library or a receiver may echo
    /// the full URL, its path or its query).
    pub fn scrub(&self, text: &str) -> String {
        let url = &self.0;
        let mut out = text.replace(url.as_str(), &redact_url(url));
        let path = url.path();
        if path.len() > 1 {
            out = out.replace(path, "/<redacted>");
        }
        if let Some(q) = url.query().filter(|q| !q.is_empty()) {
            out = out.replace(q, "<redacted>");
        }
        out
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Serialized redacted: the only reason to serialize a configuration is to show it.
impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        // The parse error names the problem, never the value, which may be the secret itself.
        Url::parse(&text)
            .map(SecretUrl)
            .map_err(|e| serde::de::Error::custom(format!("not a valid URL ({e})")))
    }
}

/// Read a secret file: its content without one trailing newline (what an editor or `echo` adds,
/// not part of the secret). `key` is the config key that names the file; errors name the key and the
/// file, never the content.
pub fn read_bytes(path: &Path, key: &str) -> Result<Vec<u8>, String> {
    let mut bytes =
        std::fs::read(path).map_err(|e| format!("cannot read {key} {}: {e}", path.display()))?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(format!("{key} {} is empty", path.display()));
    }
    Ok(bytes)
}

/// [`read_bytes`] for a secret that must be text (a password).
pub fn read_text(path: &Path, key: &str) -> Result<String, String> {
    String::from_utf8(read_bytes(path, key)?)
        .map_err(|_| format!("cannot read {key} {}: not UTF-8 text", path.display()))
}

/// Defence in depth: no server reply or library message should hold a secret, but if one ever does,
/// it does not reach logs or the outbox. Secrets shorter than 4 bytes are not searched for:
/// replacing them would garble ordinary words of the message.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|s| s.len() >= 4)
        .fold(text.to_string(), |out, s| out.replace(s, "<redacted>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_url_never_shows_its_path_or_query() {
        let url = SecretUrl::new(
            Url::parse("https://hooks.example.com/services/T0/B0/PATHSECRET?token=QSECRET")
                .expect("url"),
        );
        for shown in [
            format!("{url}"),
            format!("{url:?}"),
            serde_json::to_string(&url).expect("json"),
        ] {
            assert!(!shown.contains("SECRET"), "{shown}");
            assert!(
                shown.contains("https://hooks.example.com/<redacted>"),
                "{shown}"
            );
        }
        let text = format!(
            "echo {} and /services/T0/B0/PATHSECRET and token=QSECRET",
            url.expose()
        );
        assert!(!url.scrub(&text).contains("SECRET"));
    }

    #[test]
    fn a_bad_secret_url_is_refused_without_echoing_it() {
        let err = serde_json::from_str::<SecretUrl>("\"hooks.example.com/PATHSECRET\"")
            .expect_err("no scheme")
            .to_string();
        assert!(!err.contains("PATHSECRET"), "{err}");
        assert!(err.contains("not a valid URL"), "{err}");
    }

    #[test]
    fn secret_files_lose_one_newline_and_errors_name_the_file_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("hook-secret");
        std::fs::write(&p, "k3y-material\n").expect("write");
        assert_eq!(
            read_bytes(&p, "secret_file").expect("read"),
            b"k3y-material"
        );
        std::fs::write(&p, "k3y\n\n").expect("write");
        assert_eq!(read_bytes(&p, "secret_file").expect("read"), b"k3y\n");
        std::fs::write(&p, "s3cret\r\n").expect("write");
        assert_eq!(read_text(&p, "password_file").expect("read"), "s3cret");
        std::fs::write(&p, "\r\n").expect("write");
        assert_eq!(
            read_bytes(&p, "secret_file").expect_err("empty"),
            format!("secret_file {} is empty", p.display())
        );
        std::fs::write(&p, [0xff, 0xfe, b'x']).expect("write");
        let err = read_text(&p, "password_file").expect_err("not utf-8");
        assert!(err.contains(&p.display().to_string()), "{err}");
        let missing = dir.path().join("missing");
        let err = read_bytes(&missing, "secret_file").expect_err("missing");
        assert!(
            err.starts_with(&format!("cannot read secret_file {}: ", missing.display())),
            "{err}"
        );
    }

    #[test]
    fn scrub_hides_secrets_but_not_every_letter() {
        assert_eq!(
            scrub("535 bad hunter2x", &["hunter2x"]),
            "535 bad <redacted>"
        );
        assert_eq!(scrub("535 bad", &["a"]), "535 bad");
        assert_eq!(scrub("535 bad", &[]), "535 bad");
    }
}
