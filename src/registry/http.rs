//! The HTTP layer under every endpoint: GETs retried with jittered exponential backoff that honours
//! `Retry-After` (npm ignores it), POSTs never retried, and every non-2xx answer sorted into a
//! [`RegistryError`] the way npm-registry-fetch's check-response does (EOTP, EAUTHIP, E401 …).
//! Each request is reported to the client's [`Observer`](super::Observer).
//!
//! Bodies are read chunk by chunk up to a cap ([`BodyLimits`]): a `Content-Length` above it fails
//! before anything is read, and a body without one fails as soon as it passes the cap, so a broken
//! or hostile registry cannot make the daemon hold an answer of any size. Error answers are read only
//! as far as their first [`ERROR_BODY_KEEP`] bytes, which is all that classifying them needs.

use std::time::Duration;

use rand::Rng;
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use url::Url;

use super::{RegistryClient, RegistryError};
use crate::credential::Credential;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Further attempts after the first.
    pub retries: u32,
    /// Delay before the first retry; doubled for each further one, then jittered.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// The longest `Retry-After` that is honoured; a longer one is cut to this.
    pub retry_after_cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            retry_after_cap: Duration::from_secs(60),
        }
    }
}

/// The largest body read from one answer, by kind of request. A larger one is
/// [`RegistryError::TooLarge`], never a truncated document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// API answers (`registry.max_body`): token-list pages, profile, whoami, package, org and team
    /// listings, trust configurations, provenance attestations.
    pub api: u64,
    /// Packuments (`registry.max_packument`): every version's manifest in one document.
    pub packument: u64,
}

impl Default for BodyLimits {
    /// The configuration's defaults. An API answer is kilobytes (a page of 100 tokens, a package
    /// list of a few thousand names), so 4 MiB leaves room for the largest accounts and orgs. npm
    /// refuses a publish that would grow a packument past 100 MB and popular ones are tens of
    /// megabytes (vite, next), so 128 MiB reads every packument npmjs.com can serve.
    fn default() -> Self {
        Self {
            api: 4 << 20,
            packument: 128 << 20,
        }
    }
}

/// Which cap applies to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyKind {
    Api,
    Packument,
}

impl BodyLimits {
    /// The cap for `kind` and the configuration key that sets it (named in the error).
    fn cap(&self, kind: BodyKind) -> (u64, &'static str) {
        match kind {
            BodyKind::Api => (self.api, "registry.max_body"),
            BodyKind::Packument => (self.packument, "registry.max_packument"),
        }
    }
}

/// How much of an error answer is kept: enough for the registry's `{error}` message and the
/// one-time-password hint; the rest is not read.
pub(crate) const ERROR_BODY_KEEP: usize = 64 << 10;

/// Why a body was not read whole.
pub(crate) enum BodyError {
    /// Past the cap; `declared` is the `Content-Length`, when one was sent.
    TooLarge { declared: Option<u64> },
    /// The connection failed mid-way.
    Cut(reqwest::Error),
}

/// The whole body, or [`BodyError::TooLarge`] as soon as it is known to pass `limit`: at once from
/// `Content-Length`, else once the chunks read add up past it. At most `limit` bytes are held.
pub(crate) async fn read_capped(
    mut resp: reqwest::Response,
    limit: u64,
) -> Result<Vec<u8>, BodyError> {
    let declared = resp.content_length();
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge { declared });
    }
    // Room for what was announced (already known to be within the cap), else grow as chunks come.
    let reserve = declared.and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
    let mut body = Vec::with_capacity(reserve);
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Cut)? {
        let total = (body.len() as u64).saturating_add(chunk.len() as u64);
        if total > limit {
            return Err(BodyError::TooLarge { declared });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The first `keep` bytes of a body; the rest is left unread (the connection is then closed rather
/// than reused, which is cheaper than draining an answer of unknown size).
pub(crate) async fn read_prefix(
    mut resp: reqwest::Response,
    keep: usize,
) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    while body.len() < keep {
        match resp.chunk().await.map_err(BodyError::Cut)? {
            Some(chunk) => {
                let room = keep - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            None => break,
        }
    }
    Ok(body)
}

impl RetryPolicy {
    /// Full jitter on an exponential step, but never less than what the server asked for.
    pub(crate) fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let step = self
            .base_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_delay);
        let jittered = if step.is_zero() {
            step
        } else {
            rand::rng().random_range(step / 2..=step)
        };
        match retry_after {
            Some(ra) => jittered.max(ra.min(self.retry_after_cap)),
            None => jittered,
        }
    }
}

/// A reply the caller handles (2xx or 304).
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: bytes::Bytes,
}

pub(super) fn parse_json(endpoint: &'static str, body: &[u8]) -> Result<Value, RegistryError> {
    serde_json::from_slice(body)
        .map_err(|e| RegistryError::malformed(endpoint, format!("body is not JSON ({e})")))
}

/// The headers npm sends with a one-time password (`--otp` also forces `auth-type=legacy`).
pub(super) fn otp_headers(otp: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(code) = otp.and_then(|c| HeaderValue::from_str(c.trim()).ok()) {
        h.insert(HeaderName::from_static("npm-otp"), code);
        h.insert(
            HeaderName::from_static("npm-auth-type"),
            HeaderValue::from_static("legacy"),
        );
    }
    h
}

impl RegistryClient {
    /// A GET with retries of an API endpoint (capped by `registry.max_body`), returning the parsed
    /// JSON body. Only for answers that are small by nature: the tree costs several times the body.
    pub(super) async fn get_json(
        &self,
        endpoint: &'static str,
        url: Url,
        cred: Option<&Credential>,
    ) -> Result<Value, RegistryError> {
        let reply = self
            .get(endpoint, url, cred, HeaderMap::new(), BodyKind::Api)
            .await?;
        parse_json(endpoint, &reply.body)
    }

    /// A GET with retries. Returns 2xx and 304 replies, their body read up to the cap of `kind`;
    /// every other status is a typed error, and so is a body past the cap.
    pub(super) async fn get(
        &self,
        endpoint: &'static str,
        url: Url,
        cred: Option<&Credential>,
        extra: HeaderMap,
        kind: BodyKind,
    ) -> Result<Reply, RegistryError> {
        let (limit, key) = self.limits.cap(kind);
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let mut req = self
                .http
                .request(Method::GET, url.clone())
                .header(ACCEPT, "application/json")
                .headers(extra.clone());
            if let Some(c) = cred {
                req = req.header(AUTHORIZATION, format!("Bearer {}", c.expose()));
            }
            let retries_left = attempt <= self.retry.retries;
            match req.send().await {
                Err(e) => {
                    self.observer
                        .request(endpoint, if e.is_timeout() { "timeout" } else { "error" });
                    if retries_left {
                        self.back_off(endpoint, attempt, None, "registry unreachable")
                            .await;
                        continue;
                    }
                    return Err(RegistryError::Network {
                        endpoint,
                        attempts: attempt,
                        detail: describe_reqwest(&e),
                    });
                }
                Ok(resp) => {
                    let status = resp.status();
                    self.observer.request(endpoint, status.as_str());
                    let retryable =
                        matches!(status.as_u16(), 408 | 420 | 429) || status.is_server_error();
                    if retryable && retries_left {
                        let ra = retry_after(resp.headers());
                        self.back_off(endpoint, attempt, ra, "registry busy").await;
                        continue;
                    }
                    let headers = resp.headers().clone();
                    let wanted = status.is_success() || status == StatusCode::NOT_MODIFIED;
                    let read = if wanted {
                        read_capped(resp, limit).await
                    } else {
                        read_prefix(resp, ERROR_BODY_KEEP).await
                    };
                    let body = match read {
                        Ok(b) => b,
                        // Never retried: the same answer would come again, and a cap is not a
                        // transient fault. It fails the read, so nothing is taken as empty.
                        Err(BodyError::TooLarge { declared }) => {
                            return Err(RegistryError::TooLarge {
                                endpoint,
                                key,
                                limit,
                                declared,
                            })
                        }
                        // A body cut off mid-way is a connection error like any other: retry it.
                        Err(BodyError::Cut(_)) if retries_left => {
                            self.back_off(endpoint, attempt, None, "response cut off")
                                .await;
                            continue;
                        }
                        Err(BodyError::Cut(e)) => {
                            return Err(RegistryError::Network {
                                endpoint,
                                attempts: attempt,
                                detail: describe_reqwest(&e),
                            })
                        }
                    };
                    if wanted {
                        return Ok(Reply {
                            status,
                            headers,
                            body: body.into(),
                        });
                    }
                    return Err(classify(endpoint, status, &headers, &body, attempt));
                }
            }
        }
    }

    /// Wait before the next attempt: the retry policy's delay, at least what `Retry-After` asked.
    async fn back_off(
        &self,
        endpoint: &'static str,
        attempt: u32,
        retry_after: Option<Duration>,
        why: &'static str,
    ) {
        let d = self.retry.delay(attempt - 1, retry_after);
        tracing::debug!(
            endpoint,
            attempt,
            delay_ms = d.as_millis() as u64,
            "{why}, retrying"
        );
        tokio::time::sleep(d).await;
    }

    /// A POST, never retried (npm does not retry writes either), with the OTP headers npm sends.
    pub(super) async fn post_json(
        &self,
        endpoint: &'static str,
        url: Url,
        cred: &Credential,
        otp: Option<&str>,
        body: &impl serde::Serialize,
    ) -> Result<(), RegistryError> {
        let req = self
            .http
            .request(Method::POST, url)
            .header(ACCEPT, "application/json")
            .header(AUTHORIZATION, format!("Bearer {}", cred.expose()))
            .headers(otp_headers(otp))
            .json(body);
        match req.send().await {
            Err(e) => {
                self.observer
                    .request(endpoint, if e.is_timeout() { "timeout" } else { "error" });
                Err(RegistryError::Network {
                    endpoint,
                    attempts: 1,
                    detail: describe_reqwest(&e),
                })
            }
            Ok(resp) => {
                let status = resp.status();
                self.observer.request(endpoint, status.as_str());
                let headers = resp.headers().clone();
                // Only the start of the answer matters (the error message); a body that cannot be
                // read leaves the status to speak for itself.
                let bytes = read_prefix(resp, ERROR_BODY_KEEP).await.unwrap_or_default();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(classify(endpoint, status, &headers, &bytes, 1))
                }
            }
        }
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The registry's own words for an error, from `{error}` or `{message}`, kept short. The body is the
/// registry's; it never holds our token, but it is cut and stripped of control characters anyway.
pub(crate) fn body_detail(bytes: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(bytes).ok();
    let text = parsed
        .as_ref()
        .and_then(|v| {
            v.get("error")
                .or_else(|| v.get("message"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default();
    let clean: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
    if clean.is_empty() {
        String::new()
    } else {
        format!(": {clean}")
    }
}

/// Sort an error response the way npm-registry-fetch's check-response does (EOTP, EAUTHIP, E401…).
fn classify(
    endpoint: &'static str,
    status: StatusCode,
    headers: &HeaderMap,
    bytes: &[u8],
    attempts: u32,
) -> RegistryError {
    let detail = body_detail(bytes);
    match status.as_u16() {
        401 => {
            let www: Vec<String> = headers
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|s| s.trim().to_ascii_lowercase())
                .collect();
            if www.iter().any(|s| s == "otp") {
                RegistryError::OtpRequired { endpoint }
            } else if www.iter().any(|s| s == "ipaddress") {
                RegistryError::IpBlocked { endpoint }
            } else if www.is_empty() && String::from_utf8_lossy(bytes).contains("one-time pass") {
                RegistryError::OtpRequired { endpoint }
            } else {
                RegistryError::Unauthorized { endpoint, detail }
            }
        }
        403 => RegistryError::Forbidden { endpoint, detail },
        404 => RegistryError::NotFound { endpoint, detail },
        408 | 420 | 429 => RegistryError::RateLimited {
            endpoint,
            status: status.as_u16(),
            attempts,
        },
        s if s >= 500 => RegistryError::Server {
            endpoint,
            status: s,
            attempts,
            detail,
        },
        s => RegistryError::Status {
            endpoint,
            status: s,
            detail,
        },
    }
}

/// reqwest's message without the URL (which is harmless, but long) and with its causes.
pub(crate) fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    if e.is_timeout() {
        parts.push("timed out".to_string());
    } else if e.is_connect() {
        parts.push("connection failed".to_string());
    } else if e.is_decode() || e.is_body() {
        parts.push("reading the response failed".to_string());
    } else {
        parts.push("request failed".to_string());
    }
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_delay_honours_retry_after_within_cap() {
        let p = RetryPolicy {
            retries: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            retry_after_cap: Duration::from_secs(5),
        };
        for attempt in 0..6 {
            let d = p.delay(attempt, None);
            assert!(d <= Duration::from_secs(1), "{d:?}");
        }
        assert!(p.delay(0, Some(Duration::from_secs(3))) >= Duration::from_secs(3));
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(600))),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn classification_follows_npm() {
        let mut h = HeaderMap::new();
        h.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer, OTP"));
        assert_eq!(
            classify("t", StatusCode::UNAUTHORIZED, &h, b"{}", 1).label(),
            "otp_required"
        );
        h.insert(WWW_AUTHENTICATE, HeaderValue::from_static("IPAddress"));
        assert_eq!(
            classify("t", StatusCode::UNAUTHORIZED, &h, b"{}", 1).label(),
            "ip_blocked"
        );
        let none = HeaderMap::new();
        let body = br#"{"error":"You must provide a one-time pass."}"#;
        assert_eq!(
            classify("t", StatusCode::UNAUTHORIZED, &none, body, 1).label(),
            "otp_required"
        );
        let e = classify(
            "t",
            StatusCode::UNAUTHORIZED,
            &none,
            br#"{"error":"bad token"}"#,
            1,
        );
        assert_eq!(
            e.to_string(),
            "t: unauthorized (401): the credential was rejected: bad token"
        );
        assert_eq!(
            classify("t", StatusCode::NOT_FOUND, &none, b"", 1).label(),
            "not_found"
        );
        assert_eq!(
            classify("t", StatusCode::BAD_GATEWAY, &none, b"", 4).label(),
            "server_error"
        );
    }
}
