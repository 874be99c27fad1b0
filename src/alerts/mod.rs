//! Alerts: what a notification says, and the sinks that carry it.
//!
//! The lifecycle (FIRING at once, a reminder every `repeat_interval`, RESOLVED when a finding is gone)
//! lives in [`lifecycle`]; notifications go through the SQLite outbox in [`crate::state`] so that none is
//! lost by a restart or a down mail server. Sinks only deliver: they sit behind the small [`Sink`] trait
//! and never see a secret other than their own (SMTP password, webhook key), which they do not print.

pub mod email;
pub mod lifecycle;
pub mod log;
pub mod message;
pub mod webhook;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::checks::{Finding, Severity};
use crate::config::AlertsConfig;

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
    pub finding: Finding,
    pub first_seen: DateTime<Utc>,
    /// When the state change happened (not when it was delivered).
    pub at: DateTime<Utc>,
}

impl Notification {
    pub fn fingerprint(&self) -> String {
        self.finding.fingerprint()
    }

    /// A harmless notification for `notify-test`.
    pub fn test(now: DateTime<Utc>) -> Self {
        Notification {
            status: Status::Firing,
            reminder: false,
            event: true,
            test: true,
            finding: Finding {
                check: "notify-test".into(),
                subject_key: "notify-test".into(),
                subject: "test notification".into(),
                severity: Severity::Info,
                summary: "This is a test notification from `npm-watchdog notify-test`.".into(),
                why: "It proves that this sink can deliver the watchdog's alerts.".into(),
                fix: "Nothing to fix.".into(),
                dod: None,
            },
            first_seen: now,
            at: now,
        }
    }
}

/// A delivery failure. The message must never include a secret: sinks describe what failed, not
/// what they sent.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// Something that delivers notifications: email, webhook, the log.
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    /// Unique among the configured sinks; used in metrics and the outbox.
    fn name(&self) -> &str;
    /// Findings below this severity are not sent to this sink.
    fn min_severity(&self) -> Severity;
    async fn send(&self, n: &Notification) -> Result<(), SinkError>;
}

/// Build the sinks the configuration asks for. With no email or webhook sink the log is used, so a
/// finding is never silently dropped.
pub fn build_sinks(cfg: &AlertsConfig) -> Result<Vec<Arc<dyn Sink>>, SinkError> {
    let mut sinks: Vec<Arc<dyn Sink>> = Vec::new();
    for (i, e) in cfg.email.iter().enumerate() {
        sinks.push(Arc::new(email::EmailSink::new(cfg.email_name(i), e)?));
    }
    for (i, w) in cfg.webhook.iter().enumerate() {
        sinks.push(Arc::new(webhook::WebhookSink::new(cfg.webhook_name(i), w)?));
    }
    if sinks.is_empty() || cfg.log {
        sinks.push(Arc::new(log::LogSink));
    }
    Ok(sinks)
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// The bulk-hardening token's stale bypass-2FA finding, as a notification.
    pub fn note(status: Status, reminder: bool) -> Notification {
        let t = DateTime::parse_from_rfc3339("2026-11-26T12:00:00Z")
            .expect("fixture time")
            .with_timezone(&Utc);
        Notification {
            status,
            reminder,
            event: false,
            test: false,
            finding: Finding {
                check: "token-bypass-2fa".into(),
                subject_key: "82e3930f1c5a6a7f0d2b9c44e1f3a5b6".into(),
                subject: "token 82e393 (bulk-hardening)".into(),
                severity: Severity::Critical,
                summary: "A bypass-2FA token is 2d old.".into(),
                why: "It publishes without 2FA.".into(),
                fix: "Revoke it: `npm token revoke 82e393`.".into(),
                dod: Some("D9".into()),
            },
            first_seen: t,
            at: t,
        }
    }
}
