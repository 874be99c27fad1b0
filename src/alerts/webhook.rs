//! Webhook sink: POST the notification as JSON (schema version 1, [`message::webhook_payload`]).
//!
//! With `secret_file`, the request carries `X-Npm-Watchdog-Signature: sha256=<hex>`, the HMAC-SHA256
//! of the exact body bytes under the file's content (read at every send, one trailing newline
//! trimmed), so a receiver can reject forged alerts. Redirects are not followed: a webhook that moved
//! is a configuration error to fix, not something to chase with a signed alert.
//!
//! Chat webhooks carry their secret in the URL path, so the URL is a [`SecretUrl`]: shown redacted in
//! every error, in `Debug` and in `config check`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use reqwest::header::{CONTENT_TYPE, USER_AGENT};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{message, Notification, Sink, SinkConfig, SinkError};
use crate::finding::Severity;
use crate::secret::{self, SecretUrl};
use crate::settings::{HumanDuration, Invalid};

/// The header that carries `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Npm-Watchdog-Signature";
/// How much of a failed response's body goes into the error.
const ERROR_BODY_CHARS: usize = 200;
/// How much of a failed response's body is read at most.
const ERROR_BODY_READ: usize = 4096;

/// `[[alerts.webhook]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    #[serde(default)]
    pub name: Option<String>,
    /// Chat webhooks carry their secret in the path, so this is redacted wherever it is shown.
    pub url: SecretUrl,
    /// File with the HMAC-SHA256 key for the `X-Npm-Watchdog-Signature` header.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    #[serde(default = "super::default_min_severity")]
    pub min_severity: Severity,
    #[serde(default = "super::default_sink_timeout")]
    pub timeout: HumanDuration,
}

impl SinkConfig for WebhookSinkConfig {
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn validate(&self) -> Result<(), Invalid> {
        if !matches!(self.url.scheme(), "http" | "https") {
            return Err(Invalid::new("url", "must be an http:// or https:// URL"));
        }
        Ok(())
    }

    fn secret_files(&self) -> Vec<(&'static str, &Path)> {
        self.secret_file
            .iter()
            .map(|p| ("secret_file", p.as_path()))
            .collect()
    }

    fn build(&self, name: String) -> Result<Arc<dyn Sink>, SinkError> {
        Ok(Arc::new(WebhookSink::new(name, self)?))
    }
}

#[derive(Debug)]
pub struct WebhookSink {
    name: String,
    min_severity: Severity,
    url: SecretUrl,
    secret_file: Option<PathBuf>,
    timeout: HumanDuration,
    client: reqwest::Client,
}

impl WebhookSink {
    pub fn new(name: String, cfg: &WebhookSinkConfig) -> Result<Self, SinkError> {
        if !matches!(cfg.url.scheme(), "http" | "https") {
            return Err(SinkError(format!(
                "webhook sink {name}: {} is not an http:// or https:// URL",
                cfg.url
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout.0)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                SinkError(format!(
                    "webhook sink {name}: cannot build the HTTP client: {}",
                    chain(&e.without_url())
                ))
            })?;
        Ok(WebhookSink {
            name,
            min_severity: cfg.min_severity,
            url: cfg.url.clone(),
            secret_file: cfg.secret_file.clone(),
            timeout: cfg.timeout,
            client,
        })
    }

    /// `what` is our own text (it may name files); anything from the receiver or the HTTP stack
    /// goes through [`Self::scrub`] before it gets here.
    fn error(&self, what: &str) -> SinkError {
        SinkError(format!("webhook sink {}: POST {} {what}", self.name, self.url))
    }

    /// Remove what must never be shown even if a library or the receiver echoes it: the URL's
    /// secret parts and the signing key.
    fn scrub(&self, text: &str, key: Option<&[u8]>) -> String {
        let key = key.and_then(|k| std::str::from_utf8(k).ok());
        secret::scrub(&self.url.scrub(text), key.as_slice())
    }
}

#[async_trait::async_trait]
impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn min_severity(&self) -> Severity {
        self.min_severity
    }

    async fn send(&self, n: &Notification) -> Result<(), SinkError> {
        let body = serde_json::to_vec(&message::webhook_payload(n))
            .map_err(|e| self.error(&format!("cannot encode the payload: {e}")))?;
        let key = match &self.secret_file {
            Some(path) => {
                Some(secret::read_bytes(path, "secret_file").map_err(|e| self.error(&e))?)
            }
            None => None,
        };
        let mut request = self
            .client
            .post(self.url.expose().clone())
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("npm-watchdog/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(key) = &key {
            request = request.header(SIGNATURE_HEADER, signature(key, &body));
        }
        let mut response = match request.body(body).send().await {
            Ok(r) => r,
            Err(e) => {
                let (timeout, connect) = (e.is_timeout(), e.is_connect());
                let detail = self.scrub(&chain(&e.without_url()), key.as_deref());
                let what = if timeout {
                    format!("timed out after {}", self.timeout)
                } else if connect {
                    format!("could not connect ({detail})")
                } else {
                    format!("failed ({detail})")
                };
                return Err(self.error(&what));
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // Read a little of the body: receivers often say why they refused.
        let mut head = Vec::new();
        while head.len() < ERROR_BODY_READ {
            match response.chunk().await {
                Ok(Some(chunk)) => head.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        // Scrubbed before it is cut, so that no prefix of a secret survives.
        let text = self.scrub(&String::from_utf8_lossy(&head), key.as_deref());
        let snippet = snippet(&text);
        let what = if snippet.is_empty() {
            format!("answered {status}")
        } else {
            format!("answered {status}: {snippet}")
        };
        Err(self.error(&what))
    }
}

/// `sha256=<hex HMAC-SHA256 of body under key>`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length; the error case of `new_from_slice` cannot happen for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::from("sha256=invalid-key"),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// At most [`ERROR_BODY_CHARS`] characters of a response body, on one line, without control characters.
fn snippet(text: &str) -> String {
    let mut out = String::new();
    let mut count = 0;
    for c in text.chars() {
        let c = if c.is_whitespace() { ' ' } else { c };
        if c.is_control() || (c == ' ' && out.ends_with(' ')) {
            continue;
        }
        if count == ERROR_BODY_CHARS {
            out.push('…');
            break;
        }
        out.push(c);
        count += 1;
    }
    out.trim().to_string()
}

/// An error and its sources on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use url::Url;

    fn config(url: &str) -> WebhookSinkConfig {
        WebhookSinkConfig {
            name: None,
            url: SecretUrl::new(Url::parse(url).expect("url")),
            secret_file: None,
            min_severity: Severity::Info,
            timeout: HumanDuration::secs(2),
        }
    }

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn snippet_is_short_single_line_and_clean() {
        assert_eq!(
            snippet("  oops\r\n\tbad\x1b[31m red\x07 \n"),
            "oops bad[31m red"
        );
        let long = "x".repeat(500);
        let s = snippet(&long);
        assert_eq!(s.chars().count(), ERROR_BODY_CHARS + 1);
        assert!(s.ends_with('…'));
        assert_eq!(snippet(""), "");
    }

    #[test]
    fn scrub_removes_url_path_query_and_key() {
        let sink = WebhookSink::new(
            "webhook".into(),
            &config("https://hooks.example.com/services/T0/B0/PATHSECRET?token=QSECRET"),
        )
        .expect("sink");
        let text = format!(
            "echo {} and /services/T0/B0/PATHSECRET and token=QSECRET and KEYSECRET",
            sink.url.expose()
        );
        let out = sink.scrub(&text, Some(b"KEYSECRET"));
        for s in ["PATHSECRET", "QSECRET", "KEYSECRET"] {
            assert!(!out.contains(s), "{out}");
        }
        assert!(
            out.contains("https://hooks.example.com/<redacted>"),
            "{out}"
        );
    }

    #[test]
    fn debug_redacts_the_url() {
        let sink = WebhookSink::new(
            "webhook".into(),
            &config("https://hooks.example.com/services/T0/B0/PATHSECRET"),
        )
        .expect("sink");
        let shown = format!("{sink:?}");
        assert!(!shown.contains("PATHSECRET"), "{shown}");
        assert!(
            shown.contains("https://hooks.example.com/<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn non_http_url_is_refused_without_showing_it() {
        let err = WebhookSink::new("webhook".into(), &config("ftp://example.com/PATHSECRET"))
            .expect_err("ftp");
        assert!(!err.to_string().contains("PATHSECRET"), "{err}");
    }

    #[tokio::test]
    async fn connection_refused_is_an_error_with_the_url_redacted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let sink = WebhookSink::new(
            "webhook".into(),
            &config(&format!("http://127.0.0.1:{port}/hook/PATHSECRET")),
        )
        .expect("sink");
        let t = chrono::Utc::now();
        let err = sink
            .send(&super::super::Notification::test(t))
            .await
            .expect_err("refused")
            .to_string();
        assert!(
            err.starts_with(&format!(
                "webhook sink webhook: POST http://127.0.0.1:{port}/<redacted> could not connect"
            )),
            "{err}"
        );
        assert!(!err.contains("PATHSECRET"), "{err}");
    }
}
