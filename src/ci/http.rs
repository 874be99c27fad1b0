//! The HTTP client under every CI provider: the token from the entry's `token_file` in the header
//! the provider wants, GETs through the crate's one retrying GET ([`crate::fetch::get`]) with rate
//! limits waited out (GitHub's 403 or 429 with `x-ratelimit-remaining: 0` until
//! `x-ratelimit-reset`, `Retry-After` anywhere) up to [`Limits::max_wait`], bodies capped like the
//! registry's, `Link` pagination that never leaves the
//! API's origin, and every non-2xx answer sorted into a [`CiError`] whose label is the
//! `check_errors_total` reason.
//!
//! Error messages carry the provider's own `message` at most, never a body: GitLab's answers hold
//! variable values.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use url::Url;

use super::{Auth, CiError, CiProviderConfig};
use crate::fetch::{self, body_detail, retry_after, Failed, RetryPolicy};

/// Counts each request to a CI provider (`npm_watchdog_ci_requests_total`).
pub trait CiObserver: Send + Sync {
    fn request(&self, provider: &str, endpoint: &str, outcome: &str);
}

/// Observes nothing: for one-shot commands, which export no metrics.
impl CiObserver for () {
    fn request(&self, _provider: &str, _endpoint: &str, _outcome: &str) {}
}

/// Bounds on what one read may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest answer read (`registry.max_body`).
    pub max_body: u64,
    /// Further attempts after the first (`registry.retries`).
    pub retries: u32,
    /// The longest rate-limit wait honoured; a reset further away fails the read (the next run
    /// tries again) rather than holding the group.
    pub max_wait: Duration,
    /// Pages of one list followed at most: a provider that keeps sending `next` is an error.
    pub max_pages: usize,
    /// The registry's timeouts (`registry.timeout`, `connect_timeout`, `idle_timeout`,
    /// `min_throughput`): the overall cap of one request comes from them and `max_body`.
    pub timeouts: crate::fetch::Timeouts,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 4 << 20,
            retries: 3,
            max_wait: Duration::from_secs(300),
            max_pages: 1000,
            timeouts: crate::fetch::Timeouts::uniform(Duration::from_secs(10)),
        }
    }
}

/// A client for one configured entry: its API, its token, its provider's headers. The token is
/// held as a sensitive header value (not shown by `Debug`) and sent only to the API's origin.
pub struct Api {
    kind: &'static str,
    base: Url,
    http: reqwest::Client,
    headers: HeaderMap,
    limits: Limits,
    observer: Arc<dyn CiObserver>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("kind", &self.kind)
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl Api {
    /// Reads the entry's token file now, so a rotated token is used from the next run on.
    pub fn new(
        kind: &'static str,
        config: &dyn CiProviderConfig,
        http: reqwest::Client,
        limits: Limits,
        observer: Arc<dyn CiObserver>,
    ) -> Result<Self, CiError> {
        let path = config.token_file();
        let token = crate::secret::read_text(path, "token_file").map_err(CiError::Credential)?;
        let token = token.trim();
        if token.is_empty() {
            return Err(CiError::Credential(format!(
                "token_file {} is empty",
                path.display()
            )));
        }
        let mut headers = HeaderMap::new();
        let (name, value) = match config.auth() {
            Auth::Bearer => (AUTHORIZATION, format!("Bearer {token}")),
            Auth::Header(name) => (HeaderName::from_static(name), token.to_string()),
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            CiError::Credential(format!(
                "token_file {} holds characters a header cannot carry",
                path.display()
            ))
        })?;
        value.set_sensitive(true);
        headers.insert(name, value);
        for (name, value) in config.extra_headers() {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        if !headers.contains_key(ACCEPT) {
            headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        }
        let mut base = config.api_url().clone();
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Self {
            kind,
            base,
            http,
            headers,
            limits,
            observer,
        })
    }

    /// A URL under the API: `path` is relative (no leading `/`) with its segments escaped by the
    /// caller (`segment`).
    pub fn url(&self, path: &str) -> Url {
        // Joining a relative path onto a base that ends with `/` cannot fail.
        self.base
            .join(path.trim_start_matches('/'))
            .unwrap_or_else(|_| self.base.clone())
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// One GET with retries, parsed as `T`. Returns the answer's headers too (pagination).
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        url: &Url,
    ) -> Result<(T, HeaderMap), CiError> {
        let (headers, body) = self.get(endpoint, url).await?;
        let parsed = serde_json::from_slice(&body).map_err(|e| json_error(endpoint, &e))?;
        Ok((parsed, headers))
    }

    /// Every page of a list paginated by `Link: <…>; rel="next"` (GitHub, GitLab), flattened by
    /// `items`. A `next` to another origin, one seen before, or more than [`Limits::max_pages`]
    /// pages is an error, never a silently shorter list.
    pub async fn get_all_linked<T: DeserializeOwned, I>(
        &self,
        endpoint: &'static str,
        first: Url,
        mut items: impl FnMut(T) -> Vec<I>,
    ) -> Result<Vec<I>, CiError> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut url = first;
        for _ in 0..self.limits.max_pages {
            seen.insert(url.to_string());
            let (page, headers) = self.get_json::<T>(endpoint, &url).await?;
            out.extend(items(page));
            match self.next_link(endpoint, &headers)? {
                None => return Ok(out),
                Some(next) if seen.contains(next.as_str()) => {
                    return Err(CiError::pagination(
                        endpoint,
                        "the next page link points back to a page already read",
                    ))
                }
                Some(next) => url = next,
            }
        }
        Err(CiError::pagination(
            endpoint,
            format!("more than {} pages", self.limits.max_pages),
        ))
    }

    /// The `rel="next"` target of a `Link` header, resolved against the API, and only on its origin:
    /// the token must never follow a link to another host.
    pub fn next_link(
        &self,
        endpoint: &'static str,
        headers: &HeaderMap,
    ) -> Result<Option<Url>, CiError> {
        let mut next = None;
        for value in headers.get_all(reqwest::header::LINK) {
            let text = value
                .to_str()
                .map_err(|_| CiError::malformed(endpoint, "the Link header is not text"))?;
            let links = parse_link_header::parse_with_rel(text)
                .map_err(|e| CiError::malformed(endpoint, format!("Link header: {e:?}")))?;
            if let Some(link) = links.get("next") {
                next = Some(link.raw_uri.clone());
            }
        }
        let Some(raw) = next else { return Ok(None) };
        let url = self
            .base
            .join(&raw)
            .map_err(|e| CiError::malformed(endpoint, format!("next page link: {e}")))?;
        if url.origin() != self.base.origin() {
            return Err(CiError::pagination(
                endpoint,
                format!(
                    "the next page link leaves {} (to {}); not followed",
                    self.base.origin().ascii_serialization(),
                    url.origin().ascii_serialization()
                ),
            ));
        }
        Ok(Some(url))
    }

    /// A GET with retries: a 2xx answer's headers and body (capped), or a typed error.
    async fn get(
        &self,
        endpoint: &'static str,
        url: &Url,
    ) -> Result<(HeaderMap, bytes::Bytes), CiError> {
        let retry = RetryPolicy {
            retries: self.limits.retries,
            ..RetryPolicy::default()
        };
        let observe = |outcome: &str| self.observe(endpoint, outcome);
        let answer = fetch::get(fetch::Request {
            http: &self.http,
            url: url.clone(),
            headers: self.headers.clone(),
            cap: self.limits.max_body,
            overall: self.limits.timeouts.overall(self.limits.max_body),
            retry: &retry,
            source: self.kind,
            endpoint,
            observe: &observe,
            rate_limit: Some(rate_limit_wait),
            max_wait: self.limits.max_wait,
        })
        .await;
        let (status, body, attempts) = match answer {
            Ok(reply) => return Ok((reply.headers, reply.body)),
            Err(Failed::Network { attempts, detail }) => {
                return Err(CiError::Network {
                    endpoint,
                    attempts,
                    detail,
                })
            }
            Err(Failed::TooLarge { .. }) => {
                return Err(CiError::TooLarge {
                    endpoint,
                    limit: self.limits.max_body,
                })
            }
            Err(Failed::RateLimited {
                status,
                attempts,
                wait,
            }) => {
                return Err(CiError::RateLimited {
                    endpoint,
                    status: status.as_u16(),
                    attempts,
                    until: format!(
                        "; the limit resets in {}",
                        humantime::format_duration(Duration::from_secs(wait.as_secs()))
                    ),
                })
            }
            Err(Failed::Refused {
                status,
                body,
                attempts,
                ..
            }) => (status, body, attempts),
        };
        let detail = body_detail(&body);
        Err(match status.as_u16() {
            401 => CiError::Unauthorized { endpoint, detail },
            403 => CiError::Forbidden { endpoint, detail },
            404 => CiError::NotFound { endpoint, detail },
            408 | 420 | 429 => CiError::RateLimited {
                endpoint,
                status: status.as_u16(),
                attempts,
                until: String::new(),
            },
            s if s >= 500 => CiError::Server {
                endpoint,
                status: s,
                attempts,
                detail,
            },
            s => CiError::Status {
                endpoint,
                status: s,
                detail,
            },
        })
    }

    fn observe(&self, endpoint: &str, outcome: &str) {
        self.observer.request(self.kind, endpoint, outcome);
    }
}

/// How long a rate-limited answer asks to wait, if it is one: GitHub's primary limit (403 or 429
/// with `x-ratelimit-remaining: 0`, until `x-ratelimit-reset`, epoch seconds), and any 403 or 429
/// with `Retry-After` (GitHub's secondary limits, CircleCI, GitLab). A 403 without either is a
/// permission error, not a limit.
fn rate_limit_wait(status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    if !matches!(status.as_u16(), 403 | 429) {
        return None;
    }
    if let Some(d) = retry_after(headers) {
        return Some(d);
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if header("x-ratelimit-remaining") == Some(0) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        return Some(match header("x-ratelimit-reset") {
            Some(reset) => Duration::from_secs(reset.saturating_sub(now)),
            // Out of requests without a reset time: wait a minute, as GitHub advises.
            None => Duration::from_secs(60),
        });
    }
    None
}

/// A body that does not parse, described by what went wrong and where, but never by what was read:
/// serde_json's own message can quote it (``invalid type: integer `918273645` ``), and in a GitLab
/// answer that is a variable's value. A missing field is named (its name is no value).
pub(crate) fn json_error(endpoint: &'static str, e: &serde_json::Error) -> CiError {
    use serde_json::error::Category;
    let at = format!("at line {} column {}", e.line(), e.column());
    let what = match e.classify() {
        Category::Io | Category::Eof => "the answer is cut off".to_string(),
        Category::Syntax => "the answer is not JSON".to_string(),
        Category::Data => {
            let text = e.to_string();
            match text.strip_prefix("missing field ") {
                Some(rest) => format!(
                    "missing field {}",
                    rest.split(" at line ").next().unwrap_or(rest)
                ),
                None => "a field has an unexpected type or value".to_string(),
            }
        }
    };
    CiError::malformed(endpoint, format!("{what} ({at})"))
}

/// One path segment, percent-escaped (`acme/widget` as a GitLab id becomes `acme%2Fwidget`, an
/// environment named `prod eu` becomes `prod%20eu`).
pub fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn rate_limits_are_told_from_permission_errors() {
        let forbidden = StatusCode::FORBIDDEN;
        assert_eq!(rate_limit_wait(forbidden, &headers(&[])), None);
        assert_eq!(
            rate_limit_wait(forbidden, &headers(&[("x-ratelimit-remaining", "12")])),
            None
        );
        assert_eq!(
            rate_limit_wait(forbidden, &headers(&[("retry-after", "30")])),
            Some(Duration::from_secs(30))
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let reset = (now + 120).to_string();
        let wait = rate_limit_wait(
            forbidden,
            &headers(&[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &reset),
            ]),
        )
        .expect("limited");
        assert!((118..=120).contains(&wait.as_secs()), "{wait:?}");
        assert_eq!(
            rate_limit_wait(StatusCode::NOT_FOUND, &headers(&[("retry-after", "3")])),
            None
        );
    }

    #[test]
    fn a_parse_error_names_the_field_but_quotes_no_value() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Item {
            key: String,
            value: String,
        }
        let wrong_type =
            serde_json::from_slice::<Vec<Item>>(br#"[{"key": "X", "value": 918273645}]"#)
                .expect_err("not a string");
        assert!(
            wrong_type.to_string().contains("918273645"),
            "premise: {wrong_type}"
        );
        let e = json_error("project_variables", &wrong_type);
        assert_eq!(
            e.to_string(),
            "project_variables: malformed answer: a field has an unexpected type or value (at line 1 column 32)"
        );
        let missing =
            serde_json::from_slice::<Item>(br#"{"key": "SECRET_NAME"}"#).expect_err("missing");
        assert_eq!(
            json_error("repo_secrets", &missing).to_string(),
            "repo_secrets: malformed answer: missing field `value` (at line 1 column 22)"
        );
        let garbage = serde_json::from_slice::<Item>(b"<html>").expect_err("not json");
        assert_eq!(json_error("x", &garbage).label(), "malformed");
        assert!(json_error("x", &garbage).to_string().contains("not JSON"));
    }

    #[test]
    fn segments_are_escaped_whole() {
        assert_eq!(segment("acme/widget"), "acme%2Fwidget");
        assert_eq!(segment("prod eu"), "prod%20eu");
        assert_eq!(segment("gh/acme"), "gh%2Facme");
    }
}
