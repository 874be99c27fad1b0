//! The one retrying GET under every read: the registry client and the CI providers' clients both
//! call `get`. It retries connection errors, cut-off bodies, 408, 420, 429 and 5xx with jittered
//! exponential backoff that honours `Retry-After`, waits out a rate limit the caller recognises
//! (GitHub's) up to a bound, reads a body chunk by chunk up to a cap, and reports every answer to
//! the caller's observer. What an error answer means is the caller's to say (npm's OTP challenge is
//! not GitHub's rate limit), so a refusal comes back with its status, headers and the first
//! `ERROR_BODY_KEEP` bytes.
//!
//! [`Reason`] is the one list of why a read failed. Its names are the `reason` label of
//! `npm_watchdog_check_errors_total`, whichever source failed.

use std::fmt;
use std::time::Duration;

use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::Value;
use url::Url;

/// Why a read failed. [`Reason::as_str`] is the metric label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The registry asked for a one-time password.
    OtpRequired,
    /// The credential's CIDR list excludes this host.
    IpBlocked,
    /// 401: the credential itself was refused.
    Unauthorized,
    /// 403: the credential may not read this.
    Forbidden,
    NotFound,
    /// 408, 420, 429 after the retries, or a rate limit that resets too late.
    RateLimited,
    ServerError,
    UnexpectedStatus,
    /// The answer did not parse, or had the wrong shape.
    Malformed,
    /// No answer: connection refused, timed out, cut off.
    Unreachable,
    /// The answer was larger than its cap.
    TooLarge,
    /// A paginated list that did not end, looped, or left the API's origin.
    Pagination,
    /// The credential (a token file) could not be read.
    Credential,
    /// The whole run took longer than `schedule.max_run`.
    RunTimeout,
    /// A read task ended without an answer (it panicked).
    TaskFailed,
    /// The state database could not be written.
    State,
}

impl Reason {
    /// Every reason, in the order the README lists them.
    pub const ALL: [Reason; 16] = [
        Reason::OtpRequired,
        Reason::IpBlocked,
        Reason::Unauthorized,
        Reason::Forbidden,
        Reason::NotFound,
        Reason::RateLimited,
        Reason::ServerError,
        Reason::UnexpectedStatus,
        Reason::Malformed,
        Reason::Unreachable,
        Reason::TooLarge,
        Reason::Pagination,
        Reason::Credential,
        Reason::RunTimeout,
        Reason::TaskFailed,
        Reason::State,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::OtpRequired => "otp_required",
            Reason::IpBlocked => "ip_blocked",
            Reason::Unauthorized => "unauthorized",
            Reason::Forbidden => "forbidden",
            Reason::NotFound => "not_found",
            Reason::RateLimited => "rate_limited",
            Reason::ServerError => "server_error",
            Reason::UnexpectedStatus => "unexpected_status",
            Reason::Malformed => "malformed",
            Reason::Unreachable => "unreachable",
            Reason::TooLarge => "too_large",
            Reason::Pagination => "pagination",
            Reason::Credential => "credential",
            Reason::RunTimeout => "run_timeout",
            Reason::TaskFailed => "task_failed",
            Reason::State => "state",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a GET is retried.
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

/// How long a read may take. A slow answer that keeps coming is read; one that stalls is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting.
    pub connect: Duration,
    /// No bytes, before the headers or between two parts of the body.
    pub idle: Duration,
    /// What an answer may take beyond its size at `min_throughput`.
    pub answer: Duration,
    /// Bytes per second a whole answer is given time for.
    pub min_throughput: u64,
}

impl Timeouts {
    /// Every timeout `t`, with the default throughput: the shape of the old single timeout.
    pub fn uniform(t: Duration) -> Self {
        Self {
            connect: t,
            idle: t,
            answer: t,
            min_throughput: 64 << 10,
        }
    }

    /// The whole request's cap for an answer of at most `cap` bytes: a packument of 100 MB on a
    /// slow link must not fail for taking longer than a token-list page.
    pub fn overall(&self, cap: u64) -> Duration {
        let transfer = Duration::from_secs(cap / self.min_throughput.max(1));
        self.answer.saturating_add(transfer)
    }

    /// A client with these connect and idle timeouts, no redirects (one could carry a credential
    /// to another host) and the product's user agent. The overall cap is set per request.
    pub fn client(&self) -> reqwest::Result<reqwest::Client> {
        reqwest::Client::builder()
            .connect_timeout(self.connect)
            .read_timeout(self.idle)
            .user_agent(concat!("npm-watchdog/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
    }
}

/// How much of an error answer is kept: enough for the server's `{error}` or `{message}` and npm's
/// one-time-password hint; the rest is not read.
pub(crate) const ERROR_BODY_KEEP: usize = 64 << 10;

/// One GET as the caller wants it.
pub(crate) struct Request<'a> {
    pub http: &'a reqwest::Client,
    pub url: Url,
    /// Every header, the credential's included.
    pub headers: HeaderMap,
    /// The largest body read from a 2xx answer.
    pub cap: u64,
    /// The whole request's time, body included ([`Timeouts::overall`] of `cap`).
    pub overall: Duration,
    pub retry: &'a RetryPolicy,
    /// Who is asking, for the debug log (`registry`, `github`).
    pub source: &'static str,
    pub endpoint: &'static str,
    /// Told the status code of every answer, or `timeout` / `error` when none came.
    pub observe: &'a (dyn Fn(&str) + Send + Sync),
    /// A rate-limited answer the caller recognises, and how long it asks to wait; waited out when
    /// within `max_wait` and a retry is left.
    pub rate_limit: Option<fn(StatusCode, &HeaderMap) -> Option<Duration>>,
    pub max_wait: Duration,
}

/// A 2xx or 304 answer, its body read whole.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

/// Why [`get`] gave up.
pub(crate) enum Failed {
    /// No answer after every attempt.
    Network { attempts: u32, detail: String },
    /// The body passed the cap; `declared` is the `Content-Length`, when one was sent. Not retried:
    /// the same answer would come again.
    TooLarge { declared: Option<u64> },
    /// A rate limit recognised by [`Request::rate_limit`] that resets after `max_wait`, or with no
    /// retry left.
    RateLimited {
        status: StatusCode,
        attempts: u32,
        wait: Duration,
    },
    /// Any other answer: for the caller to classify.
    Refused {
        status: StatusCode,
        headers: HeaderMap,
        /// The first [`ERROR_BODY_KEEP`] bytes.
        body: Vec<u8>,
        attempts: u32,
    },
}

/// GET with retries. Returns 2xx and 304 answers; everything else is a [`Failed`].
pub(crate) async fn get(r: Request<'_>) -> Result<Reply, Failed> {
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let retries_left = attempt <= r.retry.retries;
        let sent = r
            .http
            .get(r.url.clone())
            .headers(r.headers.clone())
            .timeout(r.overall)
            .send()
            .await;
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) => {
                (r.observe)(if e.is_timeout() { "timeout" } else { "error" });
                if retries_left {
                    pause(&r, r.retry.delay(attempt - 1, None), "unreachable").await;
                    continue;
                }
                return Err(Failed::Network {
                    attempts: attempt,
                    detail: describe_reqwest(&e),
                });
            }
        };
        let status = resp.status();
        (r.observe)(status.as_str());
        let headers = resp.headers().clone();
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            match read_capped(resp, r.cap).await {
                Ok(body) => {
                    return Ok(Reply {
                        status,
                        headers,
                        body: body.into(),
                    })
                }
                Err(BodyError::TooLarge { declared }) => return Err(Failed::TooLarge { declared }),
                // A body that stalled past the idle timeout is counted as one.
                Err(BodyError::Cut(e)) if e.is_timeout() && retries_left => {
                    (r.observe)("timeout");
                    pause(&r, r.retry.delay(attempt - 1, None), "answer stalled").await;
                    continue;
                }
                // A body cut off mid-way is a connection error like any other.
                Err(BodyError::Cut(_)) if retries_left => {
                    pause(&r, r.retry.delay(attempt - 1, None), "answer cut off").await;
                    continue;
                }
                Err(BodyError::Cut(e)) => {
                    if e.is_timeout() {
                        (r.observe)("timeout");
                    }
                    return Err(Failed::Network {
                        attempts: attempt,
                        detail: describe_reqwest(&e),
                    });
                }
            }
        }
        if let Some(wait) = r.rate_limit.and_then(|f| f(status, &headers)) {
            if wait > r.max_wait || !retries_left {
                return Err(Failed::RateLimited {
                    status,
                    attempts: attempt,
                    wait,
                });
            }
            // Past the reset by a moment, so the first request after it is not refused again.
            pause(&r, wait + Duration::from_secs(1), "rate limited").await;
            continue;
        }
        let retryable = matches!(status.as_u16(), 408 | 420 | 429) || status.is_server_error();
        if retryable && retries_left {
            let d = r.retry.delay(attempt - 1, retry_after(&headers));
            pause(&r, d, "busy").await;
            continue;
        }
        // Only the start of an error answer matters; one that cannot be read leaves the status to
        // speak for itself.
        let body = read_prefix(resp, ERROR_BODY_KEEP).await.unwrap_or_default();
        return Err(Failed::Refused {
            status,
            headers,
            body,
            attempts: attempt,
        });
    }
}

async fn pause(r: &Request<'_>, d: Duration, why: &'static str) {
    tracing::debug!(
        source = r.source,
        endpoint = r.endpoint,
        delay_ms = d.as_millis() as u64,
        "{why}, retrying"
    );
    tokio::time::sleep(d).await;
}

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

/// The server's own words for an error, from `{error}` or `{message}`, kept short and stripped of
/// control characters. Never more than that: a CI provider's answer can hold a variable's value.
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
    fn the_overall_cap_grows_with_what_an_answer_may_weigh() {
        let t = Timeouts {
            connect: Duration::from_secs(10),
            idle: Duration::from_secs(30),
            answer: Duration::from_secs(10),
            min_throughput: 64 << 10,
        };
        // A 4 MiB API answer: 10 s + 64 s. A 128 MiB packument: 10 s + 2048 s.
        assert_eq!(t.overall(4 << 20), Duration::from_secs(74));
        assert_eq!(t.overall(128 << 20), Duration::from_secs(2058));
        assert_eq!(t.overall(0), Duration::from_secs(10));
    }

    #[test]
    fn reasons_are_distinct_metric_labels() {
        let labels: std::collections::BTreeSet<&str> =
            Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), Reason::ALL.len());
        assert!(labels
            .iter()
            .all(|l| l.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
    }
}
