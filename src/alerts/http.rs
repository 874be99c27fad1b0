//! What the HTTP sinks (webhook, PagerDuty, Slack, Alertmanager) share: one client setup (a timeout
//! over the whole request, no redirects, our User-Agent), one way to post, and one careful reading of
//! the answer.
//!
//! Redirects are not followed: an endpoint that moved is a configuration error to fix, not something
//! to chase with an alert. Everything that ends up in an error goes through [`Poster::scrub`] first,
//! because a receiver or the HTTP stack may echo the URL (whose path can be the secret) or a key.

use std::time::Duration;

use reqwest::header::{HeaderName, CONTENT_TYPE, USER_AGENT};
use reqwest::StatusCode;

use super::SinkError;
use crate::config::types::{check, rule, HumanDuration, Invalid};
use crate::secret::{self, SecretUrl};

/// How much of a failed response's body goes into an error.
const ERROR_BODY_CHARS: usize = 200;
/// How much of a response's body is read at most: receivers answer briefly, and a hostile one must
/// not make us buffer megabytes.
const BODY_READ: usize = 4096;

/// One endpoint of one sink.
#[derive(Debug)]
pub struct Poster {
    /// `webhook`, `pagerduty`, … as errors name it.
    kind: &'static str,
    name: String,
    url: SecretUrl,
    timeout: HumanDuration,
    client: reqwest::Client,
}

/// What the receiver answered: the status, the first [`BODY_READ`] bytes of the body (scrubbed) and
/// `Retry-After` when it sent one.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: String,
    pub retry_after: Option<Duration>,
}

impl Poster {
    pub fn new(
        kind: &'static str,
        name: &str,
        url: &SecretUrl,
        timeout: HumanDuration,
    ) -> Result<Self, SinkError> {
        Self::check_scheme(kind, name, url)?;
        let client = Self::client(kind, name, timeout)?;
        Self::with_client(kind, name, url, timeout, client)
    }

    /// The client [`Poster::new`] builds (whole-request `timeout`, no redirects). A sink that reads
    /// its URL at every send builds it once and hands it to [`Poster::with_client`] per send, so
    /// connections are reused.
    pub fn client(
        kind: &'static str,
        name: &str,
        timeout: HumanDuration,
    ) -> Result<reqwest::Client, SinkError> {
        reqwest::Client::builder()
            .timeout(timeout.0)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                SinkError::new(format!(
                    "{kind} sink {name}: cannot build the HTTP client: {}",
                    chain(&e.without_url())
                ))
            })
    }

    /// A poster for `url` over a client from [`Poster::client`] built with the same `timeout`.
    /// Errors and scrubbing then cover this URL.
    pub fn with_client(
        kind: &'static str,
        name: &str,
        url: &SecretUrl,
        timeout: HumanDuration,
        client: reqwest::Client,
    ) -> Result<Self, SinkError> {
        Self::check_scheme(kind, name, url)?;
        Ok(Poster {
            kind,
            name: name.to_string(),
            url: url.clone(),
            timeout,
            client,
        })
    }

    fn check_scheme(kind: &'static str, name: &str, url: &SecretUrl) -> Result<(), SinkError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SinkError::new(format!(
                "{kind} sink {name}: {url} is not an http:// or https:// URL"
            )));
        }
        Ok(())
    }

    /// `<kind> sink <name>: POST <redacted url> <what>`. `what` is our own text; anything from the
    /// receiver goes through [`Self::scrub`] before it gets here.
    pub fn error(&self, what: &str) -> SinkError {
        SinkError::new(self.message(what))
    }

    /// The same wording as [`Self::error`], for a failure of another kind.
    pub fn message(&self, what: &str) -> String {
        format!("{} sink {}: POST {} {what}", self.kind, self.name, self.url)
    }

    /// Remove what must never be shown even if a library or the receiver echoes it: the URL's
    /// secret parts and the given secrets.
    pub fn scrub(&self, text: &str, secrets: &[&str]) -> String {
        secret::scrub(&self.url.scrub(text), secrets)
    }

    /// POST `body` as JSON with the extra headers. A network failure or timeout is a retryable
    /// error; any answer, whatever its status, is returned for the sink to read.
    pub async fn post(
        &self,
        body: Vec<u8>,
        headers: &[(HeaderName, String)],
        secrets: &[&str],
    ) -> Result<Answer, SinkError> {
        let mut request = self
            .client
            .post(self.url.expose().clone())
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("npm-watchdog/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let mut response = match request.body(body).send().await {
            Ok(r) => r,
            Err(e) => {
                let (timeout, connect) = (e.is_timeout(), e.is_connect());
                let detail = self.scrub(&chain(&e.without_url()), secrets);
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
        let retry_after = crate::fetch::retry_after(response.headers());
        let mut head = Vec::new();
        while head.len() < BODY_READ {
            match response.chunk().await {
                Ok(Some(chunk)) => head.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        head.truncate(BODY_READ);
        Ok(Answer {
            status,
            body: self.scrub(&String::from_utf8_lossy(&head), secrets),
            retry_after,
        })
    }

    /// The error for an answer the sink did not accept: `answered 400 Bad Request: <snippet>`.
    /// 429, 408 and 5xx are worth retrying (after `Retry-After` when given); when `reject_4xx`, any
    /// other 4xx is a permanent rejection, else it is retried too (a receiver we know nothing about
    /// may be misconfigured for a while; its messages must not be thrown away).
    pub fn refused(&self, answer: &Answer, reject_4xx: bool) -> SinkError {
        let snippet = snippet(&answer.body);
        let what = if snippet.is_empty() {
            format!("answered {}", answer.status)
        } else {
            format!("answered {}: {snippet}", answer.status)
        };
        let s = answer.status;
        let transient = s == StatusCode::TOO_MANY_REQUESTS
            || s == StatusCode::REQUEST_TIMEOUT
            || s.is_server_error();
        if reject_4xx && s.is_client_error() && !transient {
            SinkError::rejected(self.message(&what))
        } else {
            SinkError::retry_after(self.message(&what), answer.retry_after)
        }
    }
}

/// The configuration rule for an HTTP sink's endpoint: `key` names it, `scheme` is its URL's.
pub fn require_http(key: &str, scheme: &str) -> Result<(), Invalid> {
    check([rule(
        key,
        !matches!(scheme, "http" | "https"),
        "must be an http:// or https:// URL",
    )])
}

/// At most [`ERROR_BODY_CHARS`] characters of a response body, on one line, without control characters.
pub fn snippet(text: &str) -> String {
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
pub fn chain(e: &dyn std::error::Error) -> String {
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

    fn poster(url: &str) -> Poster {
        Poster::new(
            "webhook",
            "hook",
            &SecretUrl::new(Url::parse(url).expect("url")),
            HumanDuration::secs(2),
        )
        .expect("poster")
    }

    fn answer(code: u16, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(code).expect("status"),
            body: body.into(),
            retry_after: Some(Duration::from_secs(7)),
        }
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
    fn scrub_removes_url_path_query_and_secrets() {
        let url = "https://hooks.example.com/services/T0/B0/PATHSECRET?token=QSECRET";
        let p = poster(url);
        let text =
            format!("echo {url} and /services/T0/B0/PATHSECRET and token=QSECRET and KEYSECRET");
        let out = p.scrub(&text, &["KEYSECRET"]);
        for s in ["PATHSECRET", "QSECRET", "KEYSECRET"] {
            assert!(!out.contains(s), "{out}");
        }
        assert!(
            out.contains("https://hooks.example.com/<redacted>"),
            "{out}"
        );
    }

    #[test]
    fn answers_are_retried_or_rejected_by_status() {
        let p = poster("https://hooks.example.com/x");
        let rejected = p.refused(&answer(400, "invalid_payload"), true);
        assert!(rejected.is_rejected());
        assert_eq!(
            rejected.to_string(),
            "webhook sink hook: POST https://hooks.example.com/<redacted> answered 400 Bad Request: invalid_payload"
        );
        assert!(!p.refused(&answer(400, ""), false).is_rejected());
        for code in [408, 429, 500, 503] {
            let e = p.refused(&answer(code, ""), true);
            assert_eq!(
                e.failure,
                super::super::Failure::Retry {
                    after: Some(Duration::from_secs(7))
                },
                "{code}"
            );
        }
    }

    #[test]
    fn non_http_url_is_refused_without_showing_it() {
        let err = Poster::new(
            "webhook",
            "hook",
            &SecretUrl::new(Url::parse("ftp://example.com/PATHSECRET").expect("url")),
            HumanDuration::secs(1),
        )
        .expect_err("ftp");
        assert!(!err.to_string().contains("PATHSECRET"), "{err}");
    }
}
