//! The registry client: the only code that talks to npm, and it returns typed data.
//!
//! Behaviour follows the npm CLI where that is safe and deliberately differs where a daemon needs more:
//! GETs go through the crate's one retrying GET ([`crate::fetch`]: 408, 420, 429, 5xx and connection
//! errors retried with jittered exponential backoff that honours `Retry-After`, which npm ignores);
//! POSTs are never retried; every failure is a typed
//! [`RegistryError`] whose [`label`](RegistryError::label) is safe to use in metrics. A failure is never
//! turned into an empty result. Every body is read up to a cap ([`BodyLimits`]: `registry.max_body`
//! for API answers, `registry.max_packument` for packuments); past it the call fails with
//! [`RegistryError::TooLarge`] without reading the rest, and large answers (token-list pages,
//! packuments) are parsed straight into their typed views, never into a JSON tree.
//!
//! The client is split by area: `http` (requests, retries, error classification), `tokens` (the
//! token list, profile, whoami), `packument` (packuments and provenance), `org` (package lists,
//! orgs, teams) and `trust` (trusted publishers and publishing access). Each file holds the endpoints
//! and the typed views of what they return. Every request is reported to an [`Observer`], so the
//! client does not know about metrics.

mod error;
pub(crate) mod http;
mod org;
mod packument;
mod tokens;
mod trust;
mod webauth;

use std::sync::Arc;
use std::time::Duration;

use url::Url;

pub use crate::fetch::{RetryPolicy, Timeouts};
pub use error::{FieldError, RegistryError, WebChallenge};
pub use http::BodyLimits;
pub use org::{OrgView, TeamView};
pub use packument::{
    parse_packument, parse_provenance, Fetched, Packument, ProvenanceSource, TrustedPublisher,
    VersionInfo,
};
pub use tokens::{Access, Profile, TfaMode, Token, TokenKind, MAX_TOKEN_PAGES};
pub use trust::TrustConfig;
pub use webauth::WebPoll;

#[cfg(test)]
pub(crate) use tokens::{assign_ids, parse_profile, parse_tokens};
#[cfg(test)]
pub(crate) use trust::parse_trust;

/// Told about every request the client makes: the endpoint's name and the status code, or `timeout`
/// or `error` when no answer came. The daemon counts these in `registry_requests_total`.
pub trait Observer: Send + Sync {
    fn request(&self, endpoint: &str, outcome: &str);
}

/// Observes nothing: for one-shot commands, which export no metrics.
impl Observer for () {
    fn request(&self, _endpoint: &str, _outcome: &str) {}
}

/// Client for one registry. Cheap to clone.
#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: Url,
    retry: RetryPolicy,
    limits: BodyLimits,
    timeouts: Timeouts,
    observer: Arc<dyn Observer>,
}

impl RegistryClient {
    /// A client whose every timeout is `timeout` (see [`Self::with_timeouts`]).
    pub fn new(
        base: Url,
        timeout: Duration,
        retry: RetryPolicy,
        observer: impl Observer + 'static,
    ) -> Result<Self, RegistryError> {
        let timeouts = Timeouts::uniform(timeout);
        Ok(Self {
            http: Self::http(&timeouts)?,
            base,
            retry,
            limits: BodyLimits::default(),
            timeouts,
            observer: Arc::new(observer),
        })
    }

    /// The same client with other timeouts (`registry.connect_timeout`, `idle_timeout`, `timeout`
    /// and `min_throughput`).
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Result<Self, RegistryError> {
        self.http = Self::http(&timeouts)?;
        self.timeouts = timeouts;
        Ok(self)
    }

    fn http(timeouts: &Timeouts) -> Result<reqwest::Client, RegistryError> {
        // Redirects are off: they could carry the bearer token to another host, and the registry
        // API does not use them.
        timeouts.client().map_err(|e| RegistryError::Network {
            endpoint: "client",
            attempts: 0,
            detail: e.to_string(),
        })
    }

    /// The same client with other body caps (from `registry.max_body` and `registry.max_packument`;
    /// [`new`](Self::new) starts with their defaults).
    pub fn with_body_limits(mut self, limits: BodyLimits) -> Self {
        self.limits = limits;
        self
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

    fn endpoint_url(&self, endpoint: &'static str, path: &str) -> Result<Url, RegistryError> {
        self.resolve(path)
            .map_err(|detail| RegistryError::malformed(endpoint, detail))
    }
}

/// The name escaping of package routes: only the first `/` becomes `%2f`; `@` stays.
fn escape_package(name: &str) -> String {
    name.replacen('/', "%2f", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_follows_the_cli() {
        assert_eq!(escape_package("@a/b"), "@a%2fb");
        assert_eq!(escape_package("plain"), "plain");
        assert_eq!(org::escape_entity("@myorg"), "myorg");
        assert_eq!(org::escape_entity("dev team"), "dev%20team");
    }
}
