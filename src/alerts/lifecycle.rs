//! The finding lifecycle, after Alertmanager: a new finding fires at once, a finding still active fires
//! a reminder every `repeat_interval`, a severity change fires again, and a finding that is gone sends
//! RESOLVED (when `send_resolved`). Events fire once and are not kept.
//!
//! [`plan`] is pure: it compares the previous active findings of the checks that *ran* with what they
//! found now. Findings of checks that did not run (their source failed) are never passed in, so they
//! can neither resolve nor re-fire.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::AlertsConfig;
use super::{Notification, Status};
use crate::finding::Finding;

/// A finding that is active, with its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    pub finding: Finding,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub last_notified: Option<DateTime<Utc>>,
}

/// What one cycle changes: findings to write, fingerprints to drop, notifications to queue.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub upserts: Vec<Active>,
    pub resolved: Vec<String>,
    pub notifications: Vec<Notification>,
}

/// Compare `previous` (active findings of the checks that ran) with `current` (what they found now).
/// `events` are the ids of event checks.
pub fn plan(
    previous: Vec<Active>,
    current: Vec<Finding>,
    events: &HashSet<&str>,
    now: DateTime<Utc>,
    cfg: &AlertsConfig,
) -> Plan {
    let mut out = Plan::default();
    let mut prev: HashMap<String, Active> = previous
        .into_iter()
        .map(|a| (a.finding.fingerprint(), a))
        .collect();
    let repeat = cfg.repeat_interval.as_chrono();
    let mut seen_now = HashSet::new();
    for finding in current {
        let fp = finding.fingerprint();
        if !seen_now.insert(fp.clone()) {
            continue; // one subject reported twice by one check: keep the first
        }
        if events.contains(finding.check.as_str()) {
            out.notifications.push(Notification {
                status: Status::Firing,
                reminder: false,
                event: true,
                test: false,
                finding,
                first_seen: now,
                at: now,
            });
            continue;
        }
        match prev.remove(&fp) {
            None => {
                out.notifications.push(firing(&finding, now, now, false));
                out.upserts.push(Active {
                    finding,
                    first_seen: now,
                    last_seen: now,
                    last_notified: Some(now),
                });
            }
            Some(old) => {
                let changed = old.finding.severity != finding.severity;
                let due = old.last_notified.is_none_or(|t| now - t >= repeat);
                let mut last_notified = old.last_notified;
                if changed || due {
                    out.notifications
                        .push(firing(&finding, old.first_seen, now, !changed));
                    last_notified = Some(now);
                }
                out.upserts.push(Active {
                    finding,
                    first_seen: old.first_seen,
                    last_seen: now,
                    last_notified,
                });
            }
        }
    }
    let mut gone: Vec<Active> = prev.into_values().collect();
    gone.sort_by_key(|a| a.finding.fingerprint());
    for old in gone {
        out.resolved.push(old.finding.fingerprint());
        if cfg.send_resolved {
            out.notifications.push(Notification {
                status: Status::Resolved,
                reminder: false,
                event: false,
                test: false,
                first_seen: old.first_seen,
                finding: old.finding,
                at: now,
            });
        }
    }
    out
}

fn firing(
    f: &Finding,
    first_seen: DateTime<Utc>,
    now: DateTime<Utc>,
    reminder: bool,
) -> Notification {
    Notification {
        status: Status::Firing,
        reminder,
        event: false,
        test: false,
        finding: f.clone(),
        first_seen,
        at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Severity;

    fn f(check: &str, key: &str, sev: Severity) -> Finding {
        Finding {
            check: check.into(),
            subject_key: key.into(),
            subject: format!("token {key}"),
            severity: sev,
            summary: String::new(),
            why: String::new(),
            fix: String::new(),
            dod: None,
        }
    }

    fn t(h: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-26T00:00:00Z")
            .expect("t")
            .with_timezone(&Utc)
            + chrono::Duration::hours(h)
    }

    fn statuses(p: &Plan) -> Vec<(String, Status, bool)> {
        p.notifications
            .iter()
            .map(|n| (n.fingerprint(), n.status, n.reminder))
            .collect()
    }

    /// Feed the plan's upserts back in as the next cycle's previous state.
    fn next(p: &Plan) -> Vec<Active> {
        p.upserts.clone()
    }

    #[test]
    fn fire_remind_escalate_resolve() {
        let cfg = AlertsConfig::default(); // repeat 4h, send_resolved
        let ev = HashSet::new();
        let a = f("token-bypass-2fa", "aaa", Severity::Warning);
        let p1 = plan(vec![], vec![a.clone()], &ev, t(0), &cfg);
        assert_eq!(
            statuses(&p1),
            vec![("token-bypass-2fa:aaa".into(), Status::Firing, false)]
        );
        let p2 = plan(next(&p1), vec![a.clone()], &ev, t(1), &cfg);
        assert!(p2.notifications.is_empty(), "no repeat within 4h");
        let p3 = plan(next(&p2), vec![a.clone()], &ev, t(4), &cfg);
        assert_eq!(
            statuses(&p3),
            vec![("token-bypass-2fa:aaa".into(), Status::Firing, true)]
        );
        let crit = f("token-bypass-2fa", "aaa", Severity::Critical);
        let p4 = plan(next(&p3), vec![crit], &ev, t(5), &cfg);
        assert_eq!(
            statuses(&p4),
            vec![("token-bypass-2fa:aaa".into(), Status::Firing, false)]
        );
        assert_eq!(p4.upserts[0].first_seen, t(0));
        let p5 = plan(next(&p4), vec![], &ev, t(6), &cfg);
        assert_eq!(
            statuses(&p5),
            vec![("token-bypass-2fa:aaa".into(), Status::Resolved, false)]
        );
        assert_eq!(p5.resolved, vec!["token-bypass-2fa:aaa".to_string()]);
        assert_eq!(p5.notifications[0].first_seen, t(0));
    }

    #[test]
    fn events_fire_once_and_are_not_kept() {
        let ev: HashSet<&str> = ["token-created"].into();
        let p = plan(
            vec![],
            vec![f("token-created", "bbb", Severity::Critical)],
            &ev,
            t(0),
            &AlertsConfig::default(),
        );
        assert_eq!(p.notifications.len(), 1);
        assert!(p.notifications[0].event);
        assert!(p.upserts.is_empty());
    }

    #[test]
    fn no_resolved_when_disabled() {
        let cfg = AlertsConfig {
            send_resolved: false,
            ..AlertsConfig::default()
        };
        let prev = plan(
            vec![],
            vec![f("token-present", "c", Severity::Warning)],
            &HashSet::new(),
            t(0),
            &cfg,
        );
        let p = plan(next(&prev), vec![], &HashSet::new(), t(1), &cfg);
        assert!(p.notifications.is_empty());
        assert_eq!(p.resolved.len(), 1);
    }
}
