//! Alerts: what a notification says, and the sinks that carry it.
//!
//! The lifecycle (FIRING at once, a reminder every `repeat_interval`, RESOLVED when a finding is gone)
//! lives in `lifecycle`; notifications are queued in the state database's outbox in the same
//! transaction as the findings that cause them, and [`crate::delivery`] delivers them. Sinks only deliver:
//! they sit behind the small [`Sink`] trait and never see a secret other than their own (SMTP password,
//! webhook key), which they do not print.
//!
//! Adding a sink: write `src/alerts/<kind>.rs` with its config section (declared with
//! [`sink_section!`](crate::sink_section), which adds the routing keys, and implementing
//! [`SinkConfig`]) and its [`Sink`], then add one line to the list in `sink_kinds!` below. The
//! `[[alerts.<kind>]]` section, its validation, routing, naming, `config check` and the daemon's
//! dispatch follow from that line. HTTP sinks share `http` for posting and classifying answers.

#[macro_use]
pub(crate) mod route;
pub mod group;
pub(crate) mod http;
pub(crate) mod lifecycle;
pub(crate) mod log;
pub(crate) mod message;
mod setup;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::types::{HumanDuration, Invalid};
use crate::finding::{Finding, Severity};

pub use group::{GroupDim, Grouping, Message, SinkGrouping};
pub use lifecycle::{Active, Outgoing, Plan};
pub use route::{Route, Routed};

/// Expands the sink list: the modules, [`AlertsConfig`] with one array per kind, and
/// [`AlertsConfig::entries`].
macro_rules! sink_kinds {
    ($($kind:ident => $config:ident),+ $(,)?) => {
        $(pub mod $kind;)+

        /// `[alerts]`: the lifecycle's settings and one array of entries per sink kind.
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct AlertsConfig {
            pub repeat_interval: HumanDuration,
            pub send_resolved: bool,
            /// Also write notifications to the log when other sinks exist (the log is always used
            /// when none do).
            pub log: bool,
            /// What a run's notifications are grouped by, per sink (see [`group`]).
            pub group_by: Vec<group::GroupDim>,
            /// Notifications carried in full per grouped message; the rest are counted.
            pub max_items: usize,
            /// How long a grouped FIRING message is held once queued, so that what later runs find
            /// for the same group key joins it (0: sent when its run ends).
            #[serde(deserialize_with = "crate::config::types::zero_or_duration")]
            pub group_wait: HumanDuration,
            $(pub $kind: Vec<$kind::$config>,)+
        }

        impl Default for AlertsConfig {
            fn default() -> Self {
                Self {
                    repeat_interval: HumanDuration::secs(4 * 3600),
                    send_resolved: true,
                    log: false,
                    group_by: group::default_group_by(),
                    max_items: group::DEFAULT_MAX_ITEMS,
                    group_wait: HumanDuration::secs(0),
                    $($kind: Vec::new(),)+
                }
            }
        }

        impl AlertsConfig {
            /// Every configured sink entry, in the order of the list above.
            pub fn entries(&self) -> Vec<SinkEntry<'_>> {
                let mut out = Vec::new();
                $(
                    for (index, config) in self.$kind.iter().enumerate() {
                        out.push(SinkEntry {
                            kind: stringify!($kind),
                            index,
                            config: config as &dyn SinkConfig,
                        });
                    }
                )+
                out
            }
        }
    };
}

// The sink list: `<module> => <its config section>`. Each line declares the module, adds the
// `[[alerts.<module>]]` array to [`AlertsConfig`] and makes its entries buildable.
sink_kinds! {
    email => EmailSinkConfig,
    webhook => WebhookSinkConfig,
    pagerduty => PagerDutySinkConfig,
    slack => SlackSinkConfig,
    alertmanager => AlertmanagerSinkConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// One message about one finding's state change (or a reminder that it is still there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub status: Status,
    /// A repeat of an earlier FIRING after `repeat_interval`.
    #[serde(default)]
    pub reminder: bool,
    /// An event (e.g. `token-created`): fires once, never resolves.
    #[serde(default)]
    pub event: bool,
    /// Sent by `npm-watchdog notify-test`, not by a real finding.
    #[serde(default)]
    pub test: bool,
    /// Shared with the plan's record of the finding: a first run over tens of thousands of
    /// findings holds each text once, not once per copy.
    pub finding: Arc<Finding>,
    pub first_seen: DateTime<Utc>,
    /// When the state change happened (not when it was delivered).
    pub at: DateTime<Utc>,
    /// Why a RESOLVED came, when it is not simply that the check no longer finds it (`the token
    /// expired on 2026-12-01`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
}

impl Notification {
    /// A state change with its status given: [`Self::firing`] or [`Self::resolved`].
    pub fn change(
        status: Status,
        finding: impl Into<Arc<Finding>>,
        first_seen: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Self {
        Notification {
            status,
            reminder: false,
            event: false,
            test: false,
            finding: finding.into(),
            first_seen,
            at,
            resolution: None,
        }
    }

    /// A finding starts firing (or fires again at a new severity), at `at`.
    pub fn firing(
        finding: impl Into<Arc<Finding>>,
        first_seen: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Self {
        Self::change(Status::Firing, finding, first_seen, at)
    }

    /// A finding still firing, repeated after `repeat_interval`.
    pub fn reminder(
        finding: impl Into<Arc<Finding>>,
        first_seen: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Self {
        Notification {
            reminder: true,
            ..Self::firing(finding, first_seen, at)
        }
    }

    /// A finding is gone (or no longer at the severity a sink was told).
    pub fn resolved(
        finding: impl Into<Arc<Finding>>,
        first_seen: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Self {
        Self::change(Status::Resolved, finding, first_seen, at)
    }

    /// A one-shot finding (`token-created`): fires once, never resolves.
    pub fn event(finding: impl Into<Arc<Finding>>, at: DateTime<Utc>) -> Self {
        Notification {
            event: true,
            ..Self::firing(finding, at, at)
        }
    }

    /// A harmless notification for `notify-test`.
    pub fn test(now: DateTime<Utc>) -> Self {
        Notification {
            test: true,
            ..Self::event(
                Finding {
                    check: "notify-test".into(),
                    subject_key: "notify-test".into(),
                    subject: "test notification".into(),
                    severity: Severity::Info,
                    summary: "This is a test notification from `npm-watchdog notify-test`.".into(),
                    why: "It proves that this sink can deliver the watchdog's alerts.".into(),
                    fix: "Nothing to fix.".into(),
                    dod: None,
                },
                now,
            )
        }
    }

    pub fn fingerprint(&self) -> String {
        self.finding.fingerprint()
    }
}

/// How a delivery failed: worth retrying (the default), or refused for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The receiver was down, slow, overloaded or rate-limiting: try again, not before `after` when
    /// it said so (`Retry-After`).
    Retry { after: Option<Duration> },
    /// The receiver understood the request and refused it (a bad routing key, an archived channel):
    /// sending the same message again cannot succeed.
    Rejected,
}

/// A delivery failure. The message must never include a secret: sinks describe what failed, not
/// what they sent.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    pub message: String,
    pub failure: Failure,
}

impl SinkError {
    /// A failure worth retrying.
    pub fn new(message: impl Into<String>) -> Self {
        SinkError {
            message: message.into(),
            failure: Failure::Retry { after: None },
        }
    }

    /// A permanent refusal: recorded, counted as `rejected` and never retried.
    pub fn rejected(message: impl Into<String>) -> Self {
        SinkError {
            message: message.into(),
            failure: Failure::Rejected,
        }
    }

    /// A failure worth retrying, not before `after`.
    pub fn retry_after(message: impl Into<String>, after: Option<Duration>) -> Self {
        SinkError {
            message: message.into(),
            failure: Failure::Retry { after },
        }
    }

    pub fn is_rejected(&self) -> bool {
        self.failure == Failure::Rejected
    }
}

/// Something that delivers notifications: email, webhook, a pager, the log. It delivers and
/// nothing else; a sink that also keeps a receiver's view of what is firing says so through
/// [`Self::mirror`].
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    /// Unique among the configured sinks; used in metrics and the outbox.
    fn name(&self) -> &str;
    /// Deliver one message: a group of notifications (see [`group`]), or one on its own.
    async fn deliver(&self, m: &Message) -> Result<(), SinkError>;
    /// Deliver one notification on its own.
    async fn send(&self, n: &Notification) -> Result<(), SinkError> {
        self.deliver(&Message::single(n.clone())).await
    }
    /// The sink's [`Mirror`], when it has one (Alertmanager). Only then does a cycle read every
    /// active finding back from the state (at 90,000 findings that is hundreds of megabytes).
    fn mirror(&self) -> Option<&dyn Mirror> {
        None
    }
}

/// A receiver that keeps state, not events (Alertmanager): it must be told again and again what
/// is firing, or its alerts time out. The outbox's rows carry the delivery guarantees; this only
/// keeps the receiver's view current between them.
#[async_trait::async_trait]
pub trait Mirror: Send + Sync {
    /// After every cycle: every active finding this sink routes, as a FIRING notification.
    fn firing(&self, active: Vec<Notification>);
    /// Called on every delivery pass; re-sends the mirrored state when due. A failure is counted
    /// as a failed delivery and is the mirror's to log (once per outage); nothing is retried here
    /// before the next period.
    async fn refresh(&self, now: DateTime<Utc>) -> Result<(), SinkError>;
    /// How often [`Self::refresh`] has work: the delivery loop passes at least this often.
    fn refresh_every(&self) -> Duration;
}

/// What a sink may say about a check beyond its id. Handed over by the layer that knows the checks
/// (`runtime`), so this module does not depend on `checks`, which depends on `config`, which embeds
/// the sink sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckFacts {
    /// The check's group (`tokens`, `packages`, …).
    pub group: &'static str,
    /// The kind of its subject (`token`, `package`, `team`, `user`, `secret`), if it names one.
    pub subject: Option<&'static str>,
}

/// What every sink may say about where its alerts come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkContext {
    /// The watched account(s) and registry (`registry.npmjs.org: alice, @acme`). The same on every
    /// replica watching the same account, so receivers can deduplicate. Sent as PagerDuty's
    /// `payload.source` and Alertmanager's `source` annotation, which are those APIs' words.
    pub watched: String,
    /// `server.external_url`: where people reach this daemon's pages, when set.
    pub external_url: Option<Url>,
    /// Every check by id. A finding of a check not listed (`notify-test`) has no facts.
    pub checks: BTreeMap<&'static str, CheckFacts>,
}

impl SinkContext {
    pub fn check(&self, id: &str) -> Option<CheckFacts> {
        self.checks.get(id).copied()
    }
}

/// One `[[alerts.<kind>]]` entry, as its sink file defines it.
pub trait SinkConfig: Routed + fmt::Debug + Send + Sync {
    /// The `name` key, when the user gave one (else the sink is named after its kind).
    fn name(&self) -> Option<&str>;
    /// Rules the types cannot express. Keys are relative to the entry (`smtp_url`).
    fn validate(&self) -> Result<(), Invalid> {
        Ok(())
    }
    /// Whether this kind of sink takes grouped messages. Alertmanager does not: it groups alerts
    /// itself, so it gets one alert per finding.
    fn groups(&self) -> bool {
        true
    }
    /// The secret files the entry names, by key, so `config check` can say whether each is readable.
    fn secret_files(&self) -> Vec<(&'static str, &Path)> {
        Vec::new()
    }
    /// The sinks this entry delivers through: usually one; one per instance where each instance
    /// must be delivered to on its own (an Alertmanager cluster).
    fn build(&self, name: String, ctx: &SinkContext) -> Result<Vec<Arc<dyn Sink>>, SinkError>;
}

/// A built sink with the route its entry asked for, and how it groups (`None`: one message per
/// notification).
#[derive(Clone)]
pub struct Target {
    pub sink: Arc<dyn Sink>,
    pub route: Route,
    pub grouping: Option<group::GroupSettings>,
}

/// A configured sink entry with where it sits in the configuration.
pub struct SinkEntry<'a> {
    pub kind: &'static str,
    pub index: usize,
    pub config: &'a dyn SinkConfig,
}

impl SinkEntry<'_> {
    /// `alerts.email[0]`.
    pub fn key(&self) -> String {
        format!("alerts.{}[{}]", self.kind, self.index)
    }

    /// The given name, else the kind for the first entry and `kind-N` for the N-th.
    pub fn name(&self) -> String {
        match self.config.name() {
            Some(n) => n.to_string(),
            None if self.index == 0 => self.kind.to_string(),
            None => format!("{}-{}", self.kind, self.index + 1),
        }
    }
}

pub(crate) fn default_sink_timeout() -> HumanDuration {
    HumanDuration::secs(10)
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::finding::Dod;

    /// A context that knows the real checks, as the daemon's does.
    pub fn context(source: &str, external_url: Option<&str>) -> SinkContext {
        SinkContext {
            watched: source.into(),
            external_url: external_url.map(|u| Url::parse(u).expect("url")),
            checks: crate::runtime::check_facts(),
        }
    }

    /// One grouped message (the default `group_by`, `max_items` 50) of `n` FIRING findings of one
    /// check, each about its own subject named `subject(i)`.
    pub fn group_of(n: usize, subject: impl Fn(usize) -> String) -> Message {
        let notes: Vec<Outgoing> = (0..n)
            .map(|i| {
                let mut note = note(Status::Firing, false);
                std::sync::Arc::make_mut(&mut note.finding).check =
                    "trusted-publisher-missing".into();
                std::sync::Arc::make_mut(&mut note.finding).severity = if i == 0 {
                    Severity::Critical
                } else {
                    Severity::Warning
                };
                std::sync::Arc::make_mut(&mut note.finding).subject_key = format!("pkg-{i}");
                std::sync::Arc::make_mut(&mut note.finding).subject = subject(i);
                Outgoing {
                    note,
                    sinks: vec!["s".into()].into(),
                }
            })
            .collect();
        let grouping = Grouping {
            sinks: [(
                "s".to_string(),
                SinkGrouping {
                    by: group::default_group_by(),
                    max_items: group::DEFAULT_MAX_ITEMS,
                    wait: std::time::Duration::ZERO,
                    route: Route::default(),
                },
            )]
            .into(),
            groups: [(
                "trusted-publisher-missing".to_string(),
                "packages".to_string(),
            )]
            .into(),
        };
        let mut all = group::messages(&notes, &grouping, &BTreeMap::new());
        assert_eq!(all.len(), 1);
        all.remove(0).1
    }

    /// The bulk-hardening token's stale bypass-2FA finding, as a notification.
    pub fn note(status: Status, reminder: bool) -> Notification {
        let t = DateTime::parse_from_rfc3339("2026-11-26T12:00:00Z")
            .expect("fixture time")
            .with_timezone(&Utc);
        let finding = Finding {
            check: "token-bypass-2fa".into(),
            subject_key: "82e3930f1c5a6a7f0d2b9c44e1f3a5b6".into(),
            subject: "token 82e393 (bulk-hardening)".into(),
            severity: Severity::Critical,
            summary: "A bypass-2FA token is 2d old.".into(),
            why: "It publishes without 2FA.".into(),
            fix: "Revoke it: `npm token revoke 82e393`.".into(),
            dod: Some(Dod::D9),
        };
        match (status, reminder) {
            (Status::Firing, false) => Notification::firing(finding, t, t),
            (Status::Firing, true) => Notification::reminder(finding, t, t),
            (Status::Resolved, _) => Notification::resolved(finding, t, t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Arbitrary names (control, bidi and zero-width characters, any length), made inert as every
    /// finding is, then rendered by every channel: one line per subject, no hidden character in any
    /// text, every body inside its channel's limits.
    #[test]
    fn arbitrary_names_render_inert_and_bounded_in_every_channel() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(2021);
        let pool: Vec<char> = (0u32..0x100)
            .chain(0x2000..0x2070)
            .chain([0xfeff, 0x61c, 0x1f600, 0x41, 0x20])
            .filter_map(char::from_u32)
            .collect();
        let hidden = |c: char| {
            (c.is_control() && c != '\n')
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200b}'..='\u{200d}' | '\u{2028}' | '\u{2029}' | '\u{feff}')
        };
        let ctx = fixtures::context("registry.npmjs.org: alice", None);
        for round in 0..100 {
            let n = rng.random_range(1..80);
            let len = if round % 20 == 0 {
                20_000
            } else {
                rng.random_range(0..300)
            };
            let names: Vec<String> = (0..n)
                .map(|_| {
                    (0..len)
                        .map(|_| pool[rng.random_range(0..pool.len())])
                        .collect()
                })
                .collect();
            let m = fixtures::group_of(n, |i| {
                crate::inert::show(&format!("package {}", names[i])).into_owned()
            });
            let subject = message::message_subject(&m);
            assert!(
                !subject.chars().any(|c| hidden(c) || c == '\n'),
                "{subject:?}"
            );
            assert!(subject.len() < 998, "{} byte subject", subject.len());
            for text in [message::message_body(&m), message::message_html(&m)] {
                assert!(!text.chars().any(hidden), "round {round}");
                assert!(text.len() < 2 << 20, "{} bytes", text.len());
            }
            let slack = serde_json::to_vec(&slack::message_payload(&m)).expect("json");
            assert!(slack.len() < 200_000, "{} bytes", slack.len());
            let pd = pagerduty::group_event(&m, "pager", "key", &ctx).expect("trigger");
            assert!(serde_json::to_vec(&pd).expect("json").len() < 512 << 10);
            let hook = serde_json::to_vec(&message::webhook_message(&m)).expect("json");
            assert!(hook.len() < 4 << 20, "{} bytes", hook.len());
        }
    }

    #[test]
    fn entries_are_named_by_kind_and_position_unless_named() {
        let cfg: AlertsConfig = toml::from_str(
            r#"
[[webhook]]
url = "https://example.com/a"
[[webhook]]
url = "https://example.com/b"
[[email]]
smtp_url = "smtp://127.0.0.1:25"
from = "w@example.com"
to = "a@example.com"
name = "mail"
"#,
        )
        .expect("parse");
        let shown: Vec<(String, String)> =
            cfg.entries().iter().map(|e| (e.key(), e.name())).collect();
        assert_eq!(
            shown,
            vec![
                ("alerts.email[0]".into(), "mail".into()),
                ("alerts.webhook[0]".into(), "webhook".into()),
                ("alerts.webhook[1]".into(), "webhook-2".into()),
            ]
        );
        let ctx = SinkContext::default();
        let sinks = cfg.build_sinks(&ctx).expect("build");
        let names: Vec<&str> = sinks.iter().map(|s| s.sink.name()).collect();
        assert_eq!(names, vec!["mail", "webhook", "webhook-2"]);
        let none = AlertsConfig::default().build_sinks(&ctx).expect("build");
        assert_eq!(none.len(), 1);
        assert_eq!(none[0].sink.name(), "log");
    }
}
