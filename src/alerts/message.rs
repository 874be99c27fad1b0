//! How a notification reads: the subject line, the plain-text body and the webhook JSON.
//!
//! Everything here is built from the finding alone, which by construction holds token key prefixes
//! and names but never a token value.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Notification, Status};

/// `[FIRING:critical] token-bypass-2fa: token 82e393 (bulk-hardening)`, `[RESOLVED] token-present: …`.
pub fn subject(n: &Notification) -> String {
    let state = match (n.status, n.reminder) {
        (Status::Resolved, _) => "[RESOLVED]".to_string(),
        (Status::Firing, false) => format!("[FIRING:{}]", n.finding.severity),
        (Status::Firing, true) => format!("[FIRING:{}] (reminder)", n.finding.severity),
    };
    let test = if n.test { "[TEST] " } else { "" };
    format!("{test}{state} {}: {}", n.finding.check, n.finding.subject)
}

/// The plain-text body of an email or a log entry.
pub fn body(n: &Notification) -> String {
    let f = &n.finding;
    let mut out = String::new();
    match n.status {
        Status::Firing => {
            out.push_str(&format!("{}\n\n", f.summary));
            out.push_str(&format!("Why it matters: {}\n\n", f.why));
            out.push_str(&format!("Fix: {}\n\n", f.fix));
        }
        Status::Resolved => {
            out.push_str(&format!(
                "Resolved: {} no longer reports {}.\n\nIt was: {}\n\n",
                f.check, f.subject, f.summary
            ));
        }
    }
    out.push_str(&format!("Check:       {}\n", f.check));
    out.push_str(&format!("Subject:     {}\n", f.subject));
    out.push_str(&format!("Severity:    {}\n", f.severity));
    if let Some(d) = &f.dod {
        out.push_str(&format!("DoD box:     {d}\n"));
    }
    out.push_str(&format!("First seen:  {}\n", rfc3339(n.first_seen)));
    out.push_str(&format!("State since: {}\n", rfc3339(n.at)));
    out.push_str(&format!("Fingerprint: {}\n", n.fingerprint()));
    out.push_str("\n-- npm-watchdog\n");
    out
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Webhook body, schema version 1 (documented in the README).
#[derive(Debug, Serialize)]
pub struct WebhookPayload<'a> {
    pub version: &'static str,
    pub status: &'static str,
    pub reminder: bool,
    pub event: bool,
    pub test: bool,
    pub check: &'a str,
    pub severity: &'static str,
    pub subject: &'a str,
    pub fingerprint: String,
    pub summary: &'a str,
    pub why: &'a str,
    pub fix: &'a str,
    pub dod: Option<&'static str>,
    pub first_seen: String,
    pub at: String,
    pub title: String,
}

pub fn webhook_payload(n: &Notification) -> WebhookPayload<'_> {
    let f = &n.finding;
    WebhookPayload {
        version: "1",
        status: n.status.as_str(),
        reminder: n.reminder,
        event: n.event,
        test: n.test,
        check: &f.check,
        severity: f.severity.as_str(),
        subject: &f.subject,
        fingerprint: n.fingerprint(),
        summary: &f.summary,
        why: &f.why,
        fix: &f.fix,
        dod: f.dod.map(|d| d.as_str()),
        first_seen: rfc3339(n.first_seen),
        at: rfc3339(n.at),
        title: subject(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::fixtures::note;

    #[test]
    fn subjects_name_state_severity_check_and_subject() {
        assert_eq!(
            subject(&note(Status::Firing, false)),
            "[FIRING:critical] token-bypass-2fa: token 82e393 (bulk-hardening)"
        );
        assert_eq!(
            subject(&note(Status::Resolved, false)),
            "[RESOLVED] token-bypass-2fa: token 82e393 (bulk-hardening)"
        );
        assert!(subject(&note(Status::Firing, true)).contains("(reminder)"));
    }

    #[test]
    fn body_has_what_why_and_fix() {
        let b = body(&note(Status::Firing, false));
        assert!(b.starts_with("A bypass-2FA token is 2d old.\n\nWhy it matters: "));
        assert!(b.contains("Fix: Revoke it: `npm token revoke 82e393`."));
        assert!(b.contains("DoD box:     D9"));
        assert!(b.contains("Fingerprint: token-bypass-2fa:82e3930f1c5a6a7f0d2b9c44e1f3a5b6\n"));
    }

    #[test]
    fn webhook_payload_is_stable() {
        let v =
            serde_json::to_value(webhook_payload(&note(Status::Resolved, false))).expect("json");
        assert_eq!(v["version"], "1");
        assert_eq!(v["status"], "resolved");
        assert_eq!(v["severity"], "critical");
        assert_eq!(
            v["fingerprint"],
            "token-bypass-2fa:82e3930f1c5a6a7f0d2b9c44e1f3a5b6"
        );
        assert_eq!(v["first_seen"], "2026-11-26T12:00:00Z");
    }
}
