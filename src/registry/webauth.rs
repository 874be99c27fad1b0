//! Web-based 2FA: after an OTP challenge that carries `{authUrl, doneUrl}`, the npm CLI polls
//! `doneUrl` with the request's own credential until the user has confirmed in the browser. 202 with
//! `retry-after` means "not yet, ask again in that many seconds"; 200 carries `{token}`, which is then
//! sent as `npm-otp` on the request that was challenged (npm-profile's `webAuthCheckLogin`).

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;

use super::http::{parse_json, BodyKind};
use super::{RegistryClient, RegistryError, WebChallenge};
use crate::credential::Credential;

/// The answer to one poll of `doneUrl`.
pub enum WebPoll {
    /// Not confirmed yet: ask again after this long.
    Pending(Duration),
    /// Confirmed: the one-time code to send.
    Done(String),
}

impl std::fmt::Debug for WebPoll {
    /// The code is a credential for a few seconds: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WebPoll::Pending(d) => f.debug_tuple("Pending").field(d).finish(),
            WebPoll::Done(_) => f.write_str("Done(<redacted>)"),
        }
    }
}

/// How long to wait when a 202 gives no usable `retry-after`, and the bounds put on one that does (a
/// registry's answer must not make the command spin or sleep for an hour).
const DEFAULT_WAIT: Duration = Duration::from_secs(2);
const MIN_WAIT: Duration = Duration::from_secs(1);
const MAX_WAIT: Duration = Duration::from_secs(30);

impl RegistryClient {
    /// Poll `doneUrl` once. The credential goes with the request, so a `doneUrl` off the registry's
    /// origin is refused without being asked.
    pub async fn web_auth_poll(
        &self,
        challenge: &WebChallenge,
        cred: &Credential,
    ) -> Result<WebPoll, RegistryError> {
        const EP: &str = "webauth";
        let url = self
            .resolve(&challenge.done_url)
            .map_err(|detail| RegistryError::malformed(EP, detail))?;
        if url.origin() != self.base.origin() {
            return Err(RegistryError::malformed(
                EP,
                "the registry's doneUrl points to another origin; the credential is only sent to \
                 the registry, so web-based 2FA cannot be completed here: give a code instead",
            ));
        }
        let reply = self
            .get(EP, url, Some(cred), HeaderMap::new(), BodyKind::Api)
            .await?;
        if reply.status == StatusCode::ACCEPTED {
            let wait = reply
                .headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(DEFAULT_WAIT, |s| {
                    Duration::from_secs(s).clamp(MIN_WAIT, MAX_WAIT)
                });
            return Ok(WebPoll::Pending(wait));
        }
        if reply.status != StatusCode::OK {
            return Err(RegistryError::Status {
                endpoint: EP,
                status: reply.status.as_u16(),
                detail: String::new(),
            });
        }
        let body = parse_json(EP, &reply.body)?;
        match body.get("token").and_then(|t| t.as_str()) {
            Some(t) if !t.trim().is_empty() && t.len() <= 1024 => Ok(WebPoll::Done(t.to_string())),
            _ => Err(RegistryError::malformed(
                EP,
                "the answer to doneUrl has no usable `token`",
            )),
        }
    }
}
