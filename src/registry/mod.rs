//! The registry client: the only code that talks to npm, and it returns typed data.
//!
//! Behaviour follows the npm CLI where that is safe and deliberately differs where a daemon needs more:
//! GETs are retried on 408, 420, 429, 5xx and connection errors with jittered exponential backoff that
//! honours `Retry-After` (npm ignores it); POSTs are never retried; every failure is a typed
//! [`RegistryError`] whose [`label`](RegistryError::label) is safe to use in metrics. A failure is never
//! turned into an empty result.

pub mod model;
pub mod package;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, ETAG, IF_NONE_MATCH, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use url::Url;

use crate::credential::Credential;
use crate::metrics::Metrics;
use model::{FieldError, Profile, Token};
use package::{escape_entity, escape_package, Packument, ProvenanceSource, TrustConfig};

/// Upper bound on token-list pages, against a registry whose `next` links go round in circles.
pub const MAX_TOKEN_PAGES: usize = 1000;

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

impl RetryPolicy {
    /// Full jitter on an exponential step, but never less than what the server asked for.
    fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
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
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: bytes::Bytes,
}

/// A packument fetch: unchanged since the stored ETag, or a fresh slim copy.
#[derive(Debug)]
pub enum Fetched {
    NotModified,
    Fresh {
        packument: Packument,
        etag: Option<String>,
        /// Size of the full document as received.
        bytes: usize,
    },
}

fn parse_json(endpoint: &'static str, body: &[u8]) -> Result<Value, RegistryError> {
    serde_json::from_slice(body).map_err(|e| RegistryError::Malformed {
        endpoint,
        detail: format!("body is not JSON ({e})"),
    })
}

fn malformed(endpoint: &'static str, e: FieldError) -> RegistryError {
    RegistryError::Malformed {
        endpoint,
        detail: e.to_string(),
    }
}

/// The headers npm sends with a one-time password (`--otp` also forces `auth-type=legacy`).
fn otp_headers(otp: Option<&str>) -> HeaderMap {
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

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{endpoint}: the registry wants a one-time password (EOTP); an unattended run cannot give one")]
    OtpRequired { endpoint: &'static str },
    #[error("{endpoint}: refused from this IP address (EAUTHIP): the credential's CIDR list excludes this host")]
    IpBlocked { endpoint: &'static str },
    #[error("{endpoint}: unauthorized (401): the credential was rejected{detail}")]
    Unauthorized {
        endpoint: &'static str,
        detail: String,
    },
    #[error("{endpoint}: forbidden (403){detail}")]
    Forbidden {
        endpoint: &'static str,
        detail: String,
    },
    #[error("{endpoint}: not found (404){detail}")]
    NotFound {
        endpoint: &'static str,
        detail: String,
    },
    #[error("{endpoint}: rate limited ({status}) after {attempts} attempts")]
    RateLimited {
        endpoint: &'static str,
        status: u16,
        attempts: u32,
    },
    #[error("{endpoint}: server error ({status}) after {attempts} attempts{detail}")]
    Server {
        endpoint: &'static str,
        status: u16,
        attempts: u32,
        detail: String,
    },
    #[error("{endpoint}: unexpected status {status}{detail}")]
    Status {
        endpoint: &'static str,
        status: u16,
        detail: String,
    },
    #[error("{endpoint}: malformed response: {detail}")]
    Malformed {
        endpoint: &'static str,
        detail: String,
    },
    #[error("{endpoint}: cannot reach the registry after {attempts} attempts: {detail}")]
    Network {
        endpoint: &'static str,
        attempts: u32,
        detail: String,
    },
}

impl RegistryError {
    /// A short, fixed label for metrics and the `watchdog-blind` finding.
    pub fn label(&self) -> &'static str {
        match self {
            RegistryError::OtpRequired { .. } => "otp_required",
            RegistryError::IpBlocked { .. } => "ip_blocked",
            RegistryError::Unauthorized { .. } => "unauthorized",
            RegistryError::Forbidden { .. } => "forbidden",
            RegistryError::NotFound { .. } => "not_found",
            RegistryError::RateLimited { .. } => "rate_limited",
            RegistryError::Server { .. } => "server_error",
            RegistryError::Status { .. } => "unexpected_status",
            RegistryError::Malformed { .. } => "malformed",
            RegistryError::Network { .. } => "unreachable",
        }
    }
}

/// Client for one registry. Cheap to clone.
#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: Url,
    retry: RetryPolicy,
    metrics: Metrics,
}

impl RegistryClient {
    pub fn new(
        base: Url,
        timeout: Duration,
        retry: RetryPolicy,
        metrics: Metrics,
    ) -> Result<Self, RegistryError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("npm-watchdog/", env!("CARGO_PKG_VERSION")))
            // Redirects could carry the bearer token to another host; the registry API does not use them.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| RegistryError::Network {
                endpoint: "client",
                attempts: 0,
                detail: e.to_string(),
            })?;
        Ok(Self {
            http,
            base,
            retry,
            metrics,
        })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// Resolve a path or a `urls.next` value the way npm-registry-fetch does: an absolute URL as is, a
    /// relative one appended to the registry URL with its trailing slash trimmed.
    /// Errors describe the problem without echoing the value, whose query could carry anything.
    pub fn resolve(&self, path_or_url: &str) -> Result<Url, String> {
        match Url::parse(path_or_url) {
            Ok(absolute) => return Ok(absolute),
            Err(url::ParseError::RelativeUrlWithoutBase) => {}
            Err(e) => return Err(format!("a link the registry sent is not a valid URL ({e})")),
        }
        let base = self.base.as_str().trim_end_matches('/');
        let rel = path_or_url.trim_start_matches('/');
        Url::parse(&format!("{base}/{rel}"))
            .map_err(|e| format!("a relative link the registry sent is not a valid path ({e})"))
    }

    /// `GET /-/npm/v1/tokens`, following `urls.next` across pages.
    pub async fn list_tokens(&self, cred: &Credential) -> Result<Vec<Token>, RegistryError> {
        const EP: &str = "tokens";
        let malformed = |detail: String| RegistryError::Malformed {
            endpoint: EP,
            detail,
        };
        let mut url = self.resolve("/-/npm/v1/tokens").map_err(malformed)?;
        let mut tokens = Vec::new();
        let mut visited = std::collections::HashSet::new();
        for page in 0.. {
            if page >= MAX_TOKEN_PAGES {
                return Err(malformed(format!(
                    "more than {MAX_TOKEN_PAGES} pages; stopping in case `urls.next` loops"
                )));
            }
            if !visited.insert(url.clone()) {
                return Err(malformed(format!(
                    "page {} links back to a page already read",
                    page
                )));
            }
            let body = self.get_json(EP, url.clone(), Some(cred)).await?;
            let objects = body
                .get("objects")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    malformed(format!(
                        "page {}: `objects` is missing or not an array",
                        page + 1
                    ))
                })?;
            let parsed = model::parse_tokens(objects, tokens.len())
                .map_err(|e| malformed(format!("page {}: {e}", page + 1)))?;
            tokens.extend(parsed);
            // npm throws when `urls` is missing; a daemon that met one would rather say so than guess.
            let urls = body
                .get("urls")
                .ok_or_else(|| malformed(format!("page {}: `urls` is missing", page + 1)))?;
            let next = match urls.get("next") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.is_empty() => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => {
                    return Err(malformed(format!(
                        "page {}: `urls.next` should be a string, found {other}",
                        page + 1
                    )))
                }
            };
            let Some(next) = next else { break };
            let next_url = self.resolve(&next).map_err(malformed)?;
            if next_url.origin() != self.base.origin() {
                // npm would not send the credential to another origin either.
                return Err(malformed(format!(
                    "page {}: `urls.next` points away from the registry ({})",
                    page + 1,
                    crate::config::redact_url(&next_url)
                )));
            }
            url = next_url;
        }
        model::assign_ids(&mut tokens);
        Ok(tokens)
    }

    /// `GET /-/npm/v1/user`.
    pub async fn profile(&self, cred: &Credential) -> Result<Profile, RegistryError> {
        const EP: &str = "profile";
        let url = self.endpoint_url(EP, "/-/npm/v1/user")?;
        let body = self.get_json(EP, url, Some(cred)).await?;
        model::parse_profile(&body).map_err(|e| RegistryError::Malformed {
            endpoint: EP,
            detail: e.to_string(),
        })
    }

    /// `GET /-/whoami`.
    pub async fn whoami(&self, cred: &Credential) -> Result<String, RegistryError> {
        const EP: &str = "whoami";
        let url = self.endpoint_url(EP, "/-/whoami")?;
        let body = self.get_json(EP, url, Some(cred)).await?;
        body.get("username")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or(RegistryError::Malformed {
                endpoint: EP,
                detail: "`username` is missing: the credential is not recognised".into(),
            })
    }

    /// `GET /-/user/<user>/package`: packages a user can access, with `read` or `write`.
    pub async fn user_packages(
        &self,
        user: &str,
        cred: &Credential,
    ) -> Result<BTreeMap<String, String>, RegistryError> {
        self.string_map(
            "user_packages",
            &format!("/-/user/{}/package", escape_entity(user)),
            cred,
        )
        .await
    }

    /// `GET /-/org/<org>/package`. Unlike the npm CLI this never falls back to the user route on a 404:
    /// a missing org is an error for that org, not someone else's package list.
    pub async fn org_packages(
        &self,
        org: &str,
        cred: &Credential,
    ) -> Result<BTreeMap<String, String>, RegistryError> {
        self.string_map(
            "org_packages",
            &format!("/-/org/{}/package", escape_entity(org)),
            cred,
        )
        .await
    }

    /// `GET /-/org/<org>/user`: member → `owner` | `admin` | `developer`.
    pub async fn org_roster(
        &self,
        org: &str,
        cred: &Credential,
    ) -> Result<BTreeMap<String, String>, RegistryError> {
        self.string_map(
            "org_roster",
            &format!("/-/org/{}/user", escape_entity(org)),
            cred,
        )
        .await
    }

    /// `GET /-/org/<org>/team?format=cli`: team names, without the `org:` prefix.
    pub async fn org_teams(
        &self,
        org: &str,
        cred: &Credential,
    ) -> Result<Vec<String>, RegistryError> {
        const EP: &str = "org_teams";
        let url = self.endpoint_url(
            EP,
            &format!("/-/org/{}/team?format=cli", escape_entity(org)),
        )?;
        let body = self.get_json(EP, url, Some(cred)).await?;
        let list = package::parse_string_list(&body, "teams").map_err(|e| malformed(EP, e))?;
        Ok(list
            .into_iter()
            .map(|t| {
                t.trim_start_matches('@')
                    .split_once(':')
                    .map_or(t.clone(), |(_, team)| team.to_string())
            })
            .collect())
    }

    /// `GET /-/team/<org>/<team>/package`: package → `read` | `write`.
    pub async fn team_packages(
        &self,
        org: &str,
        team: &str,
        cred: &Credential,
    ) -> Result<BTreeMap<String, String>, RegistryError> {
        self.string_map(
            "team_packages",
            &format!(
                "/-/team/{}/{}/package",
                escape_entity(org),
                escape_entity(team)
            ),
            cred,
        )
        .await
    }

    async fn string_map(
        &self,
        endpoint: &'static str,
        path: &str,
        cred: &Credential,
    ) -> Result<BTreeMap<String, String>, RegistryError> {
        let url = self.endpoint_url(endpoint, path)?;
        let body = self.get_json(endpoint, url, Some(cred)).await?;
        package::parse_string_map(&body, endpoint).map_err(|e| malformed(endpoint, e))
    }

    /// `GET /<pkg>` (the full document), conditional on `etag` when one is stored.
    pub async fn packument(
        &self,
        name: &str,
        cred: Option<&Credential>,
        etag: Option<&str>,
    ) -> Result<Fetched, RegistryError> {
        const EP: &str = "packument";
        let url = self.endpoint_url(EP, &format!("/{}", escape_package(name)))?;
        let mut headers = HeaderMap::new();
        if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(t).ok()) {
            headers.insert(IF_NONE_MATCH, tag);
        }
        let reply = self.get(EP, url, cred, headers).await?;
        if reply.status == StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        let packument =
            package::parse_packument(&reply.body, name).map_err(|e| malformed(EP, e))?;
        Ok(Fetched::Fresh {
            packument,
            etag: reply
                .headers
                .get(ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            bytes: reply.body.len(),
        })
    }

    /// The repository and workflow named by a version's provenance statement, if it has one.
    pub async fn provenance_source(
        &self,
        name: &str,
        version: &str,
        cred: Option<&Credential>,
    ) -> Result<Option<ProvenanceSource>, RegistryError> {
        const EP: &str = "attestations";
        let url = self.endpoint_url(
            EP,
            &format!("/-/npm/v1/attestations/{}@{version}", escape_package(name)),
        )?;
        let body = match self.get_json(EP, url, cred).await {
            Ok(b) => b,
            Err(RegistryError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        package::parse_provenance(&body).map_err(|e| malformed(EP, e))
    }

    /// `GET /-/package/<pkg>/trust`. npm puts this behind 2FA: without `otp` expect
    /// [`RegistryError::OtpRequired`], which means "unknown", never "none configured".
    pub async fn trust(
        &self,
        name: &str,
        cred: &Credential,
        otp: Option<&str>,
    ) -> Result<Vec<TrustConfig>, RegistryError> {
        const EP: &str = "trust";
        let url = self.endpoint_url(EP, &format!("/-/package/{}/trust", escape_package(name)))?;
        let reply = self.get(EP, url, Some(cred), otp_headers(otp)).await?;
        let body = parse_json(EP, &reply.body)?;
        package::parse_trust(&body).map_err(|e| malformed(EP, e))
    }

    /// `POST /-/package/<pkg>/access` with "Require 2FA and disallow tokens". Never retried.
    pub async fn require_2fa_disallow_tokens(
        &self,
        name: &str,
        cred: &Credential,
        otp: &str,
    ) -> Result<(), RegistryError> {
        const EP: &str = "access";
        let url = self.endpoint_url(EP, &format!("/-/package/{}/access", escape_package(name)))?;
        /// Field order as npm sends it (a `json!` map would sort the keys).
        #[derive(serde::Serialize)]
        struct Body {
            publish_requires_tfa: bool,
            automation_token_overrides_tfa: bool,
        }
        let body = Body {
            publish_requires_tfa: true,
            automation_token_overrides_tfa: false,
        };
        self.post_json(EP, url, cred, Some(otp), &body).await
    }

    fn endpoint_url(&self, endpoint: &'static str, path: &str) -> Result<Url, RegistryError> {
        self.resolve(path)
            .map_err(|detail| RegistryError::Malformed { endpoint, detail })
    }

    /// A GET with retries, returning the parsed JSON body.
    async fn get_json(
        &self,
        endpoint: &'static str,
        url: Url,
        cred: Option<&Credential>,
    ) -> Result<Value, RegistryError> {
        let reply = self.get(endpoint, url, cred, HeaderMap::new()).await?;
        parse_json(endpoint, &reply.body)
    }

    /// A GET with retries. Returns 2xx and 304 replies; every other status is a typed error.
    async fn get(
        &self,
        endpoint: &'static str,
        url: Url,
        cred: Option<&Credential>,
        extra: HeaderMap,
    ) -> Result<Reply, RegistryError> {
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
                    self.count(endpoint, if e.is_timeout() { "timeout" } else { "error" });
                    if retries_left {
                        let d = self.retry.delay(attempt - 1, None);
                        tracing::debug!(
                            endpoint,
                            attempt,
                            delay_ms = d.as_millis() as u64,
                            "registry unreachable, retrying"
                        );
                        tokio::time::sleep(d).await;
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
                    self.count(endpoint, status.as_str());
                    let retryable =
                        matches!(status.as_u16(), 408 | 420 | 429) || status.is_server_error();
                    if retryable && retries_left {
                        let ra = retry_after(resp.headers());
                        let d = self.retry.delay(attempt - 1, ra);
                        tracing::debug!(
                            endpoint,
                            attempt,
                            status = status.as_u16(),
                            delay_ms = d.as_millis() as u64,
                            "registry busy, retrying"
                        );
                        tokio::time::sleep(d).await;
                        continue;
                    }
                    let headers = resp.headers().clone();
                    let body = match resp.bytes().await {
                        Ok(b) => b,
                        // A body cut off mid-way is a connection error like any other: retry it.
                        Err(_) if retries_left => {
                            let d = self.retry.delay(attempt - 1, None);
                            tracing::debug!(
                                endpoint,
                                attempt,
                                delay_ms = d.as_millis() as u64,
                                "response cut off, retrying"
                            );
                            tokio::time::sleep(d).await;
                            continue;
                        }
                        Err(e) => {
                            return Err(RegistryError::Network {
                                endpoint,
                                attempts: attempt,
                                detail: describe_reqwest(&e),
                            })
                        }
                    };
                    if status.is_success() || status == StatusCode::NOT_MODIFIED {
                        return Ok(Reply {
                            status,
                            headers,
                            body,
                        });
                    }
                    return Err(classify(endpoint, status, &headers, &body, attempt));
                }
            }
        }
    }

    /// A POST, never retried (npm does not retry writes either), with the OTP headers npm sends.
    async fn post_json(
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
                self.count(endpoint, if e.is_timeout() { "timeout" } else { "error" });
                Err(RegistryError::Network {
                    endpoint,
                    attempts: 1,
                    detail: describe_reqwest(&e),
                })
            }
            Ok(resp) => {
                let status = resp.status();
                self.count(endpoint, status.as_str());
                let headers = resp.headers().clone();
                let bytes = resp.bytes().await.unwrap_or_default();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(classify(endpoint, status, &headers, &bytes, 1))
                }
            }
        }
    }

    fn count(&self, endpoint: &str, code: &str) {
        self.metrics
            .registry_requests
            .with_label_values(&[endpoint, code])
            .inc();
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
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
fn body_detail(bytes: &[u8]) -> String {
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
fn describe_reqwest(e: &reqwest::Error) -> String {
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

/// Seconds since the epoch, for gauges.
pub fn now_secs() -> f64 {
    Utc::now().timestamp_millis() as f64 / 1000.0
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
