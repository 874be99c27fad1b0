//! Webhook sink: POST the notification as JSON (schema version 1, `message::webhook_payload`).
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
use reqwest::header::HeaderName;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::http::Poster;
use super::{message, Message, Sink, SinkConfig, SinkContext, SinkError};
use crate::secret::{self, SecretUrl};
use crate::config::types::{HumanDuration, Invalid};

/// The header that carries `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Npm-Watchdog-Signature";

crate::sink_section! {
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
        #[serde(default = "super::default_sink_timeout")]
        pub timeout: HumanDuration,
    }
}

impl SinkConfig for WebhookSinkConfig {
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn validate(&self) -> Result<(), Invalid> {
        super::http::require_http("url", self.url.scheme())
    }

    fn secret_files(&self) -> Vec<(&'static str, &Path)> {
        self.secret_file
            .iter()
            .map(|p| ("secret_file", p.as_path()))
            .collect()
    }

    fn build(&self, name: String, _: &SinkContext) -> Result<Vec<Arc<dyn Sink>>, SinkError> {
        Ok(vec![Arc::new(WebhookSink::new(name, self)?)])
    }
}

#[derive(Debug)]
pub struct WebhookSink {
    name: String,
    secret_file: Option<PathBuf>,
    poster: Poster,
}

impl WebhookSink {
    pub fn new(name: String, cfg: &WebhookSinkConfig) -> Result<Self, SinkError> {
        let poster = Poster::new("webhook", &name, &cfg.url, cfg.timeout)?;
        Ok(WebhookSink {
            name,
            secret_file: cfg.secret_file.clone(),
            poster,
        })
    }
}

#[async_trait::async_trait]
impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, m: &Message) -> Result<(), SinkError> {
        let body = serde_json::to_vec(&message::webhook_message(m))
            .map_err(|e| self.poster.error(&format!("cannot encode the payload: {e}")))?;
        let key = match &self.secret_file {
            Some(path) => {
                Some(secret::read_bytes(path, "secret_file").map_err(|e| self.poster.error(&e))?)
            }
            None => None,
        };
        let mut headers = Vec::new();
        if let Some(key) = &key {
            headers.push((
                HeaderName::from_static("x-npm-watchdog-signature"),
                signature(key, &body),
            ));
        }
        let key_text = key.as_deref().and_then(|k| std::str::from_utf8(k).ok());
        let answer = self
            .poster
            .post(body, &headers, key_text.as_slice())
            .await?;
        if answer.status.is_success() {
            return Ok(());
        }
        // A receiver we know nothing about: keep retrying rather than throw a message away.
        Err(self.poster.refused(&answer, false))
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

#[cfg(test)]
mod tests {
    use super::*;
    use url::Url;

    fn config(url: &str) -> WebhookSinkConfig {
        WebhookSinkConfig {
            name: None,
            url: SecretUrl::new(Url::parse(url).expect("url")),
            secret_file: None,
            timeout: HumanDuration::secs(2),
            min_severity: crate::finding::Severity::Info,
            checks: Vec::new(),
            exclude_checks: Vec::new(),
            repeat_interval: None,
            group_by: None,
            max_items: None,
            group_wait: None,
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
