//! The HTTP layer under every endpoint: GETs through the crate's one retrying GET
//! ([`crate::fetch::get`]: backoff, `Retry-After`, which npm ignores, and body caps), POSTs never
//! retried, and every non-2xx answer sorted into a [`RegistryError`] the way npm-registry-fetch's
//! check-response does (EOTP, EAUTHIP, E401 …). Each request is reported to the client's
//! [`Observer`](super::Observer).
//!
//! Bodies are read up to a cap ([`BodyLimits`]), so a broken or hostile registry cannot make the
//! daemon hold an answer of any size.

use std::time::Duration;

use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use url::Url;

use super::{RegistryClient, RegistryError, WebChallenge};
use crate::credential::Credential;
use crate::fetch::{self, body_detail, describe_reqwest, read_prefix, Failed, ERROR_BODY_KEEP};

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
        let (cap, key) = self.limits.cap(kind);
        let mut headers = extra;
        // Packuments ask for the abbreviated document in `extra`; everything else is JSON.
        headers
            .entry(ACCEPT)
            .or_insert(HeaderValue::from_static("application/json"));
        if let Some(c) = cred {
            let mut auth =
                HeaderValue::from_str(&format!("Bearer {}", c.expose())).map_err(|_| {
                    RegistryError::malformed(endpoint, "the credential cannot be sent in a header")
                })?;
            auth.set_sensitive(true);
            headers.insert(AUTHORIZATION, auth);
        }
        let observe = |outcome: &str| self.observer.request(endpoint, outcome);
        let answer = fetch::get(fetch::Request {
            http: &self.http,
            url,
            headers,
            cap,
            overall: self.timeouts.overall(cap),
            retry: &self.retry,
            source: "registry",
            endpoint,
            observe: &observe,
            rate_limit: None,
            max_wait: Duration::ZERO,
        })
        .await;
        match answer {
            Ok(r) => Ok(Reply {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }),
            Err(Failed::Network { attempts, detail }) => Err(RegistryError::Network {
                endpoint,
                attempts,
                detail,
            }),
            Err(Failed::TooLarge { declared }) => Err(RegistryError::TooLarge {
                endpoint,
                key,
                limit: cap,
                declared,
            }),
            // Not asked for: no rate-limit hook is given.
            Err(Failed::RateLimited {
                status, attempts, ..
            }) => Err(RegistryError::RateLimited {
                endpoint,
                status: status.as_u16(),
                attempts,
            }),
            Err(Failed::Refused {
                status,
                headers,
                body,
                attempts,
            }) => Err(classify(endpoint, status, &headers, &body, attempts)),
        }
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
            .timeout(self.timeouts.overall(ERROR_BODY_KEEP as u64))
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
            let otp = || RegistryError::OtpRequired {
                endpoint,
                web: WebChallenge::from_body(bytes),
            };
            if www.iter().any(|s| s == "otp") {
                otp()
            } else if www.iter().any(|s| s == "ipaddress") {
                RegistryError::IpBlocked { endpoint }
            } else if www.is_empty() && String::from_utf8_lossy(bytes).contains("one-time pass") {
                otp()
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

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

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
