//! PagerDuty sink: findings page through PagerDuty's Events API v2 (`POST /v2/enqueue`).
//!
//! `[[alerts.pagerduty]]` takes `routing_key_file` (required: a file holding the service's 32-character
//! integration key), `url` (default `https://events.pagerduty.com/v2/enqueue`, http or https), `timeout`
//! (default 10s), an optional `name` and the routing keys every sink takes. The key file is read at
//! every send, so a rotated key is used from the next message on; a file that is missing or does not
//! hold a 32-character alphanumeric key is a retryable error naming the file, never its content.
//!
//! A FIRING notification (first, reminder or event) is a `trigger` event, RESOLVED a `resolve` event,
//! both under the same `dedup_key`: the finding's fingerprint, or `sha256:<hex>` of it when it is
//! longer than PagerDuty's 255 characters. It is a pure function of the fingerprint, so a restarted
//! daemon, or a second replica, resolves the incident an earlier one opened, and reminders fold into
//! the open incident instead of paging again.
//!
//! Delivery: any 2xx is delivered. A 400 (`invalid event`) or any other 4xx but 408/429 (a wrong key,
//! URL or an oversized event will not fix itself) is rejected for good, with PagerDuty's own reasons;
//! 408, 429 (after its `Retry-After`), 5xx and network failures are retried by the outbox. The
//! routing key is the API's authentication and travels only in the request body: it is scrubbed from
//! every error, and this sink's `Debug` never holds it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use url::Url;

use super::http::{snippet, Answer, Poster};
use super::{message, Message, Notification, Sink, SinkConfig, SinkContext, SinkError, Status};
use crate::finding::Severity;
use crate::secret::{self, SecretUrl};
use crate::config::types::{HumanDuration, Invalid};

/// Where events go unless `url` says otherwise.
pub const DEFAULT_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// PagerDuty's limit on `payload.summary`, in characters.
pub const SUMMARY_CHARS: usize = 1024;
/// PagerDuty's limit on `dedup_key`, in characters.
pub const DEDUP_KEY_CHARS: usize = 255;
/// The length of an Events API v2 integration key.
const ROUTING_KEY_CHARS: usize = 32;
/// `client` on every event: how PagerDuty shows where it came from.
const CLIENT: &str = "npm-watchdog";

fn default_url() -> Url {
    // A constant, checked by `default_url_is_the_events_api`: this cannot fail on any input.
    Url::parse(DEFAULT_URL).expect("DEFAULT_URL is a valid URL")
}

crate::sink_section! {
    /// `[[alerts.pagerduty]]`.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct PagerDutySinkConfig {
        #[serde(default)]
        pub name: Option<String>,
        /// File with the service's Events API v2 integration key (32 characters).
        pub routing_key_file: PathBuf,
        #[serde(default = "default_url")]
        pub url: Url,
        #[serde(default = "super::default_sink_timeout")]
        pub timeout: HumanDuration,
    }
}

impl SinkConfig for PagerDutySinkConfig {
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn validate(&self) -> Result<(), Invalid> {
        super::http::require_http("url", self.url.scheme())
    }

    fn secret_files(&self) -> Vec<(&'static str, &Path)> {
        vec![("routing_key_file", self.routing_key_file.as_path())]
    }

    fn build(&self, name: String, ctx: &SinkContext) -> Result<Vec<Arc<dyn Sink>>, SinkError> {
        Ok(vec![Arc::new(PagerDutySink::new(name, self, ctx)?)])
    }
}

/// Delivers to one PagerDuty service. Holds the key file's path, never the key.
#[derive(Debug)]
pub struct PagerDutySink {
    name: String,
    routing_key_file: PathBuf,
    ctx: SinkContext,
    poster: Poster,
}

impl PagerDutySink {
    pub fn new(
        name: String,
        cfg: &PagerDutySinkConfig,
        ctx: &SinkContext,
    ) -> Result<Self, SinkError> {
        // Nothing secret in the Events API's URL, but the shared poster shows every URL the same way.
        let poster = Poster::new(
            "pagerduty",
            &name,
            &SecretUrl::new(cfg.url.clone()),
            cfg.timeout,
        )?;
        Ok(PagerDutySink {
            name,
            routing_key_file: cfg.routing_key_file.clone(),
            ctx: ctx.clone(),
            poster,
        })
    }

    /// The integration key, read afresh so a rotation needs no restart. Retryable when wrong: the
    /// file may be mid-rotation, and the messages must wait for it rather than be thrown away.
    fn routing_key(&self) -> Result<String, SinkError> {
        let fail = |what: String| SinkError::new(format!("pagerduty sink {}: {what}", self.name));
        let text = secret::read_text(&self.routing_key_file, "routing_key_file").map_err(fail)?;
        let key = text.trim();
        if key.chars().count() != ROUTING_KEY_CHARS
            || !key.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(fail(format!(
                "routing_key_file {} does not hold a {ROUTING_KEY_CHARS}-character integration key (letters and digits only)",
                self.routing_key_file.display()
            )));
        }
        Ok(key.to_string())
    }

    /// A 400 is PagerDuty saying the event is invalid; its `errors` say why.
    fn invalid_event(&self, answer: &Answer) -> SinkError {
        let reasons = serde_json::from_str::<Refusal>(&answer.body)
            .ok()
            .map(|r| {
                let mut parts = Vec::new();
                if let Some(m) = r.message.filter(|m| !m.is_empty()) {
                    parts.push(m);
                }
                if !r.errors.is_empty() {
                    parts.push(r.errors.join("; "));
                }
                parts.join(": ")
            })
            .filter(|r| !r.is_empty());
        match reasons {
            Some(r) => SinkError::rejected(self.poster.message(&format!(
                "answered {}: invalid event: {}",
                answer.status,
                snippet(&r)
            ))),
            None => self.poster.refused(answer, true),
        }
    }
}

/// The body of PagerDuty's refusal: `{"status":"invalid event","message":…,"errors":[…]}`.
#[derive(Deserialize)]
struct Refusal {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Vec<String>,
}

#[async_trait::async_trait]
impl Sink for PagerDutySink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, m: &Message) -> Result<(), SinkError> {
        let key = self.routing_key()?;
        let event = match (&m.key, m.only()) {
            (None, Some(n)) => event(n, &key, &self.ctx),
            _ => match group_event(m, &self.name, &key, &self.ctx) {
                Some(e) => e,
                // Findings of the group are still active: its incident stays open.
                None => return Ok(()),
            },
        };
        let body = serde_json::to_vec(&event)
            .map_err(|e| self.poster.error(&format!("cannot encode the event: {e}")))?;
        let answer = self.poster.post(body, &[], &[&key]).await?;
        if answer.status.is_success() {
            return Ok(());
        }
        if answer.status == StatusCode::BAD_REQUEST {
            return Err(self.invalid_event(&answer));
        }
        Err(self.poster.refused(&answer, true))
    }
}

/// One Events API v2 event.
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    pub routing_key: &'a str,
    pub event_action: &'static str,
    pub dedup_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Payload<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
}

impl<'a> Event<'a> {
    /// A bare `resolve` of the incident `dedup_key`.
    fn resolve(routing_key: &'a str, dedup_key: String) -> Self {
        Event {
            routing_key,
            event_action: "resolve",
            dedup_key,
            payload: None,
            client: None,
            client_url: None,
            links: Vec::new(),
        }
    }
}

/// What a trigger event says about the finding.
#[derive(Debug, Serialize)]
pub struct Payload<'a> {
    pub summary: String,
    pub source: &'a str,
    pub severity: &'static str,
    pub timestamp: String,
    pub component: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<&'static str>,
    pub class: &'static str,
    pub custom_details: serde_json::Value,
}

#[derive(Debug, Serialize)]
pub struct Details<'a> {
    pub subject: &'a str,
    pub why: &'a str,
    pub fix: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dod: Option<&'static str>,
    pub first_seen: String,
    pub fingerprint: String,
    pub reminder: bool,
    pub test: bool,
}

#[derive(Debug, Serialize)]
pub struct Link {
    pub href: String,
    pub text: &'static str,
}

/// The event for `n`: `trigger` with the finding for FIRING, a bare `resolve` for RESOLVED.
pub fn event<'a>(n: &'a Notification, routing_key: &'a str, ctx: &'a SinkContext) -> Event<'a> {
    let fingerprint = n.fingerprint();
    let dedup_key = dedup_key(&fingerprint);
    if n.status == Status::Resolved {
        return Event::resolve(routing_key, dedup_key);
    }
    let f = &n.finding;
    let def = ctx.check(&f.check);
    let links = message::npm_page(n, ctx)
        .map(|href| Link {
            href,
            text: "Package on npmjs.com",
        })
        .into_iter()
        .collect();
    Event {
        routing_key,
        event_action: "trigger",
        dedup_key,
        payload: Some(Payload {
            summary: cut(
                &format!("{}: {}", message::subject(n), f.summary),
                SUMMARY_CHARS,
            ),
            source: &ctx.watched,
            severity: severity(f.severity),
            timestamp: rfc3339(n.at),
            component: &f.check,
            group: def.map(|d| d.group),
            class: def.and_then(|d| d.subject).unwrap_or("watchdog"),
            custom_details: serde_json::to_value(Details {
                subject: &f.subject,
                why: &f.why,
                fix: &f.fix,
                dod: f.dod.map(|d| d.as_str()),
                first_seen: rfc3339(n.first_seen),
                fingerprint,
                reminder: n.reminder,
                test: n.test,
            })
            .unwrap_or_default(),
        }),
        client: Some(CLIENT),
        client_url: ctx.external_url.as_ref().map(Url::as_str),
        links,
    }
}

/// The longest text of one finding put in a grouped event's details, so that `max_items` findings
/// stay far inside PagerDuty's 512 KB event limit whatever the names are.
const DETAIL_CHARS: usize = 1000;

/// The event for a grouped message: one incident per sink and group key (its dedup key), which new
/// findings of the group update; `resolve` once none of the group's findings is active, else `None`
/// (nothing to tell PagerDuty).
pub fn group_event<'a>(
    m: &Message,
    sink: &str,
    routing_key: &'a str,
    ctx: &'a SinkContext,
) -> Option<Event<'a>> {
    let dedup_key = dedup_key(&format!("npm-watchdog:{sink}:{}", m.key_text()));
    if m.status == Status::Resolved {
        if m.still_active > 0 {
            return None;
        }
        return Some(Event::resolve(routing_key, dedup_key));
    }
    let findings: Vec<serde_json::Value> = m
        .notes
        .iter()
        .map(|n| {
            let f = &n.finding;
            serde_json::json!({
                "check": f.check,
                "severity": f.severity.as_str(),
                "subject": cut(&f.subject, DETAIL_CHARS),
                "fix": cut(&f.fix, DETAIL_CHARS),
                "fingerprint": cut(&n.fingerprint(), DETAIL_CHARS),
            })
        })
        .collect();
    let group = m
        .key
        .as_ref()
        .and_then(|k| k.get("group"))
        .and_then(|g| ctx.checks.values().map(|c| c.group).find(|c| c == g));
    let at = m.notes.iter().map(|n| n.at).max().unwrap_or_else(Utc::now);
    Some(Event {
        routing_key,
        event_action: "trigger",
        dedup_key,
        payload: Some(Payload {
            summary: cut(&message::message_subject(m), SUMMARY_CHARS),
            source: &ctx.watched,
            severity: severity(m.severity()),
            timestamp: rfc3339(at),
            component: "npm-watchdog",
            group,
            class: "findings",
            custom_details: serde_json::json!({
                "group_key": m.key,
                "total": m.total,
                "omitted": m.omitted(),
                "checks": m.checks,
                "reminder": m.reminder,
                "findings": findings,
                "see_all": message::SEE_ALL,
            }),
        }),
        client: Some(CLIENT),
        client_url: ctx.external_url.as_ref().map(Url::as_str),
        links: Vec::new(),
    })
}

/// PagerDuty's severity for ours; its `error` level has no counterpart here.
pub fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::Warning => "warning",
        Severity::Info => "info",
    }
}

/// The fingerprint when PagerDuty takes it as is, else `sha256:<hex>` of it (71 characters): the
/// same for the same finding on every run, so trigger and resolve always meet.
pub fn dedup_key(fingerprint: &str) -> String {
    if fingerprint.chars().count() <= DEDUP_KEY_CHARS {
        fingerprint.to_string()
    } else {
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(fingerprint.as_bytes()))
        )
    }
}

/// At most `max` characters of `text`, ending in `…` when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_one_incident_inside_pagerdutys_limits_resolved_when_all_of_it_is() {
        use crate::alerts::fixtures::{context, group_of};
        let ctx = context("registry.npmjs.org: alice", None);
        let m = group_of(500, |i| format!("package {i} {}", "x".repeat(1_000_000)));
        let e = group_event(&m, "pager", "key", &ctx).expect("a trigger");
        assert_eq!(e.event_action, "trigger");
        let body = serde_json::to_vec(&e).expect("json");
        assert!(body.len() < 512 * 1024, "{} bytes", body.len());
        let payload = e.payload.as_ref().expect("payload");
        assert!(payload.summary.chars().count() <= SUMMARY_CHARS);
        assert_eq!(payload.severity, "critical");
        assert_eq!(payload.custom_details["total"], 500);
        assert_eq!(payload.custom_details["omitted"], 450);
        let again = group_of(3, |i| format!("package {i}"));
        let e2 = group_event(&again, "pager", "key", &ctx).expect("a trigger");
        assert_eq!(e.dedup_key, e2.dedup_key, "one incident per sink and group key");
        let other = group_event(&again, "pager-2", "key", &ctx).expect("a trigger");
        assert_ne!(e.dedup_key, other.dedup_key);

        let mut resolved = again.clone();
        resolved.status = Status::Resolved;
        resolved.still_active = 2;
        assert!(group_event(&resolved, "pager", "key", &ctx).is_none(), "the group is still open");
        resolved.still_active = 0;
        let r = group_event(&resolved, "pager", "key", &ctx).expect("a resolve");
        assert_eq!(r.event_action, "resolve");
        assert_eq!(r.dedup_key, e.dedup_key);
    }
    use crate::alerts::fixtures::note;

    const KEY: &str = "R0utingKey0123456789abcdefABCDEF";

    fn ctx() -> SinkContext {
        crate::alerts::fixtures::context(
            "registry.npmjs.org: alice",
            Some("https://watchdog.example.com/"),
        )
    }

    fn json(n: &Notification, ctx: &SinkContext) -> serde_json::Value {
        serde_json::to_value(event(n, KEY, ctx)).expect("json")
    }

    #[test]
    fn default_url_is_the_events_api() {
        assert_eq!(default_url().as_str(), DEFAULT_URL);
        let cfg: PagerDutySinkConfig =
            toml::from_str("routing_key_file = \"/run/pd-key\"\n").expect("parse");
        assert_eq!(cfg.url.as_str(), DEFAULT_URL);
        assert_eq!(cfg.timeout, HumanDuration::secs(10));
        assert!(cfg.validate().is_ok());
        assert_eq!(
            cfg.secret_files(),
            vec![("routing_key_file", Path::new("/run/pd-key"))]
        );
    }

    #[test]
    fn config_refuses_unknown_keys_a_missing_key_file_and_other_schemes() {
        let unknown = toml::from_str::<PagerDutySinkConfig>(
            "routing_key_file = \"/k\"\nrouting_key = \"inline\"\n",
        )
        .expect_err("inline key");
        assert!(unknown.to_string().contains("routing_key"), "{unknown}");
        assert!(toml::from_str::<PagerDutySinkConfig>("name = \"pd\"\n").is_err());
        let ftp: PagerDutySinkConfig =
            toml::from_str("routing_key_file = \"/k\"\nurl = \"ftp://example.com/x\"\n")
                .expect("parse");
        assert_eq!(
            ftp.validate().expect_err("ftp").to_string(),
            "url: must be an http:// or https:// URL"
        );
    }

    #[test]
    fn firing_is_a_trigger_with_the_finding() {
        let v = json(&note(Status::Firing, false), &ctx());
        assert_eq!(
            v,
            serde_json::json!({
                "routing_key": KEY,
                "event_action": "trigger",
                "dedup_key": "token-bypass-2fa:82e3930f1c5a6a7f0d2b9c44e1f3a5b6",
                "payload": {
                    "summary": "[FIRING:critical] token-bypass-2fa: token 82e393 (bulk-hardening): A bypass-2FA token is 2d old.",
                    "source": "registry.npmjs.org: alice",
                    "severity": "critical",
                    "timestamp": "2026-11-26T12:00:00Z",
                    "component": "token-bypass-2fa",
                    "group": "tokens",
                    "class": "token",
                    "custom_details": {
                        "subject": "token 82e393 (bulk-hardening)",
                        "why": "It publishes without 2FA.",
                        "fix": "Revoke it: `npm token revoke 82e393`.",
                        "dod": "D9",
                        "first_seen": "2026-11-26T12:00:00Z",
                        "fingerprint": "token-bypass-2fa:82e3930f1c5a6a7f0d2b9c44e1f3a5b6",
                        "reminder": false,
                        "test": false,
                    },
                },
                "client": "npm-watchdog",
                "client_url": "https://watchdog.example.com/",
            })
        );
    }

    #[test]
    fn resolved_is_a_bare_resolve_under_the_same_key() {
        let firing = json(&note(Status::Firing, true), &ctx());
        let v = json(&note(Status::Resolved, false), &ctx());
        assert_eq!(
            v,
            serde_json::json!({
                "routing_key": KEY,
                "event_action": "resolve",
                "dedup_key": firing["dedup_key"],
            })
        );
    }

    #[test]
    fn severities_map_one_to_one_and_never_to_error() {
        let got: Vec<&str> = Severity::ALL.into_iter().map(severity).collect();
        assert_eq!(got, vec!["critical", "warning", "info"]);
    }

    #[test]
    fn package_findings_link_their_npm_page_and_unknown_checks_are_watchdog_class() {
        let mut n = note(Status::Firing, false);
        std::sync::Arc::make_mut(&mut n.finding).check = "publish-untrusted".into();
        std::sync::Arc::make_mut(&mut n.finding).subject_key = "@acme/core@1.2.1".into();
        std::sync::Arc::make_mut(&mut n.finding).dod = None;
        let v = json(&n, &crate::alerts::fixtures::context("", None));
        assert_eq!(
            v["links"],
            serde_json::json!([{"href": "https://www.npmjs.com/package/@acme/core", "text": "Package on npmjs.com"}])
        );
        assert_eq!(v["payload"]["class"], "package");
        assert_eq!(v["payload"]["group"], "packages");
        assert!(v["payload"]["custom_details"].get("dod").is_none(), "{v}");
        assert!(v.get("client_url").is_none(), "{v}");

        let t = json(&Notification::test(n.at), &crate::alerts::fixtures::context("", None));
        assert_eq!(t["payload"]["class"], "watchdog");
        assert!(t["payload"].get("group").is_none(), "{t}");
        assert_eq!(t["payload"]["custom_details"]["test"], true);
        assert_eq!(t["payload"]["severity"], "info");
        assert!(t.get("links").is_none(), "{t}");
    }

    #[test]
    fn summary_is_cut_at_1024_characters_on_a_char_boundary() {
        let mut n = note(Status::Firing, false);
        std::sync::Arc::make_mut(&mut n.finding).summary = "é".repeat(2000);
        let v = json(&n, &ctx());
        let s = v["payload"]["summary"].as_str().expect("summary");
        assert_eq!(s.chars().count(), SUMMARY_CHARS);
        assert!(s.ends_with("é…"), "{s}");
        assert!(s.starts_with("[FIRING:critical] token-bypass-2fa: "));

        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("exactly10!", 10), "exactly10!");
        assert_eq!(cut("exactly 11!", 10), "exactly 1…");
        assert_eq!(cut("日本語のテキスト", 4), "日本語…");
    }

    #[test]
    fn dedup_key_is_the_fingerprint_or_its_stable_hash() {
        let short = "token-bypass-2fa:82e3930f1c5a6a7f0d2b9c44e1f3a5b6";
        assert_eq!(dedup_key(short), short);
        let edge = "x".repeat(DEDUP_KEY_CHARS);
        assert_eq!(dedup_key(&edge), edge);
        let long = format!(
            "maintainers-changed:@acme/core:{}",
            "maintainer,".repeat(40)
        );
        // Pinned: a different key after an upgrade would orphan every open incident.
        assert_eq!(
            dedup_key(&long),
            "sha256:cf2084f23b392ebe7d519c37f7d11625db443c4d32f0f3d9bb4feeb78cbb89c7"
        );
        assert_eq!(
            dedup_key(&"x".repeat(DEDUP_KEY_CHARS + 1)),
            format!(
                "sha256:{}",
                hex::encode(Sha256::digest("x".repeat(DEDUP_KEY_CHARS + 1).as_bytes()))
            )
        );
        assert_ne!(dedup_key(&long), dedup_key(&format!("{long}x")));
    }

    #[test]
    fn debug_of_config_and_sink_never_holds_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pd-key");
        std::fs::write(&file, KEY).expect("write");
        let cfg: PagerDutySinkConfig = toml::from_str(&format!(
            "routing_key_file = {:?}\nurl = \"http://127.0.0.1:9/v2/enqueue\"\n",
            file.display().to_string()
        ))
        .expect("parse");
        let sink = PagerDutySink::new("pd".into(), &cfg, &ctx()).expect("sink");
        assert_eq!(sink.routing_key().expect("key"), KEY);
        for shown in [format!("{cfg:?}"), format!("{sink:?}")] {
            assert!(!shown.contains(KEY), "{shown}");
        }
    }
}
