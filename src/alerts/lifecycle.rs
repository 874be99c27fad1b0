//! The finding lifecycle, after Alertmanager: a new finding fires at once, a finding still active fires
//! a reminder every `repeat_interval`, a severity change fires again, and a finding that is gone sends
//! RESOLVED (when `send_resolved`). Events fire once and are not kept.
//!
//! Each notification carries the sinks whose route wants it; reminders follow each sink's own
//! `repeat_interval` (see [`Route::reminder_due`]).
//!
//! [`plan`] is pure: it compares the previous active findings of the checks that *ran* with what they
//! found now. Findings of checks that did not run (their source failed) are never passed in, so they
//! can neither resolve nor re-fire.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::AlertsConfig;
use super::{Notification, Route};
use crate::finding::{Finding, Severity};

/// A finding that is active, with its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    pub finding: Arc<Finding>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub last_notified: Option<DateTime<Utc>>,
}

/// An active finding as [`plan`] compares it: its identity, severity and history, and a digest of its
/// text; the text itself only where the plan may send it ([`needs_text`]: a finding that is gone, or
/// that changed severity). Holding every active finding's text for the comparison would cost what
/// did not change: 150 MB at 90,000 findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Previous {
    pub fingerprint: String,
    pub severity: Severity,
    /// [`text_digest`] of the finding's stored JSON.
    pub digest: u64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub last_notified: Option<DateTime<Utc>>,
    /// Boxed: present for few, and a `Finding` in place would make each of 90,000 entries 150 bytes
    /// larger.
    pub finding: Option<Box<Finding>>,
}

impl From<Active> for Previous {
    fn from(a: Active) -> Self {
        Previous {
            fingerprint: a.finding.fingerprint(),
            severity: a.finding.severity,
            digest: finding_digest(&a.finding),
            first_seen: a.first_seen,
            last_seen: a.last_seen,
            last_notified: a.last_notified,
            finding: Some(Box::new(Arc::unwrap_or_clone(a.finding))),
        }
    }
}

/// A digest of a finding's stored JSON text. Both sides of a comparison are digested in the same
/// process, so the hasher's stability across builds does not matter; a collision (one in 2^64)
/// would only delay rewriting a changed text until its next change.
pub fn text_digest(json: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    json.hash(&mut h);
    h.finish()
}

/// [`text_digest`] of a finding as the state stores it.
pub fn finding_digest(f: &Finding) -> u64 {
    // A finding always serializes; if it could not, an empty text differs from any stored one, so
    // the finding is written again rather than taken as unchanged.
    text_digest(&serde_json::to_string(f).unwrap_or_default())
}

/// The fingerprints among `previous` whose text [`plan`] may send: those `current` no longer has
/// (RESOLVED) and those whose severity changed (RESOLVED to the sinks that no longer take it).
pub fn needs_text(previous: &[Previous], current: &[Finding]) -> HashSet<String> {
    // Start from every previous finding and strike those found again at the same severity: the
    // map is the size of what was active, and a first run (nothing active) builds none.
    let mut wanted: HashMap<&str, Severity> = previous
        .iter()
        .map(|p| (p.fingerprint.as_str(), p.severity))
        .collect();
    if wanted.is_empty() {
        return HashSet::new();
    }
    for f in current {
        let fp = f.fingerprint();
        if wanted.get(fp.as_str()) == Some(&f.severity) {
            wanted.remove(fp.as_str());
        }
    }
    wanted.into_keys().map(str::to_string).collect()
}

/// One notification and the sinks (by name) it is queued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub note: Notification,
    /// Shared with the notifications before it that go to the same sinks, as most do: a list per
    /// notification would cost 8 MB at 90,000 findings.
    pub sinks: Arc<[String]>,
}

/// What one cycle changes: findings to write, fingerprints to drop, notifications to queue.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// New findings, and active ones whose text, severity or last notification changed.
    pub upserts: Vec<Active>,
    /// Active findings seen again unchanged: only their `last_seen` moves to now. Writing them
    /// whole every cycle would cost what did not change (2,100 bodies a token cycle at 1,000 tokens).
    pub touched: Vec<String>,
    pub resolved: Vec<String>,
    pub notifications: Vec<Outgoing>,
}

impl Plan {
    /// Queue `note` for the sinks in `routes` that `pick` chooses; nothing when none does.
    fn push(
        &mut self,
        note: Notification,
        routes: &[(String, Route)],
        pick: impl Fn(&Route) -> bool,
    ) {
        let wanted = routes
            .iter()
            .filter(|(_, r)| r.wants(&note.finding) && pick(r))
            .map(|(name, _)| name);
        let sinks: Arc<[String]> = match self.notifications.last() {
            Some(last) if last.sinks.iter().eq(wanted.clone()) => Arc::clone(&last.sinks),
            _ => wanted.cloned().collect(),
        };
        if !sinks.is_empty() {
            self.notifications.push(Outgoing { note, sinks });
        }
    }
}

/// Compare `previous` (active findings of the checks that ran) with `current` (what they found now).
/// `events` are the ids of event checks; `routes` names each sink and what it wants.
pub fn plan<P: Into<Previous>>(
    previous: impl IntoIterator<Item = P>,
    current: Vec<Finding>,
    events: &HashSet<&str>,
    now: DateTime<Utc>,
    cfg: &AlertsConfig,
    routes: &[(String, Route)],
) -> Plan {
    let mut prev: HashSet<ByFingerprint> = previous
        .into_iter()
        .map(|p| ByFingerprint(p.into()))
        .collect();
    // At least the findings not active before are new, each written and (mostly) notified: sized
    // for them at once, as a first run over tens of thousands of findings would otherwise hold
    // two buffers at each doubling. A later run, with most findings unchanged, reserves little.
    let new = current.len().saturating_sub(prev.len());
    let mut out = Plan {
        upserts: Vec::with_capacity(new),
        notifications: Vec::with_capacity(new),
        ..Plan::default()
    };
    // Fingerprints seen in this run, by a digest: one subject reported twice by one check is kept
    // once. The hasher's keys are random per run, so a collision (about one in 10^10 at 90,000
    // findings) cannot be aimed at, and would only delay a finding by a run; a set of the
    // fingerprints themselves would hold 7 MB at that size.
    use std::hash::BuildHasher;
    let seen_keys = std::collections::hash_map::RandomState::new();
    let mut seen_now: HashSet<u64> = HashSet::with_capacity(current.len());
    // Taken from the back of the reversed list so that its buffer shrinks as the findings move
    // into the plan, a few thousand at a time: at 90,000 findings it is 14 MB that would otherwise
    // be held beside their new copies until the end.
    let mut current = current;
    current.reverse();
    while let Some(finding) = current.pop() {
        if current.capacity() - current.len() >= 4096 {
            current.shrink_to_fit();
        }
        let fp = finding.fingerprint();
        if !seen_now.insert(seen_keys.hash_one(&fp)) {
            continue; // one subject reported twice by one check: keep the first
        }
        if events.contains(&*finding.check) {
            out.push(Notification::event(finding, now), routes, |_| true);
            continue;
        }
        // One copy of the text, shared by the finding's record and its notification.
        let finding = Arc::new(finding);
        match prev.take(fp.as_str()).map(|p| p.0) {
            None => {
                out.push(
                    Notification::firing(finding.clone(), now, now),
                    routes,
                    |_| true,
                );
                out.upserts.push(Active {
                    finding,
                    first_seen: now,
                    last_seen: now,
                    last_notified: Some(now),
                });
            }
            Some(old) => {
                let changed = old.severity != finding.severity;
                let before = out.notifications.len();
                if changed {
                    // A sink that was told about the old severity but does not take the new one
                    // (a pager for critical only, after a downgrade) is told it is over for it,
                    // or its incident would stay open forever.
                    if cfg.send_resolved {
                        let text = old_text(&old, Some(finding.as_ref()));
                        let over = Notification::resolved(text, old.first_seen, now);
                        out.push(over, routes, |r| !r.wants(&finding));
                    }
                    let again = Notification::firing(finding.clone(), old.first_seen, now);
                    out.push(again, routes, |_| true);
                } else {
                    let due = |r: &Route| {
                        r.reminder_due(cfg.repeat_interval, old.first_seen, old.last_seen, now)
                    };
                    let reminder = Notification::reminder(finding.clone(), old.first_seen, now);
                    out.push(reminder, routes, due);
                }
                let last_notified = if out.notifications.len() > before {
                    Some(now)
                } else {
                    old.last_notified
                };
                if last_notified == old.last_notified && finding_digest(&finding) == old.digest {
                    out.touched.push(fp);
                    continue;
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
    let mut gone: Vec<Previous> = prev.into_iter().map(|p| p.0).collect();
    gone.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
    for old in gone {
        if cfg.send_resolved {
            let text = old_text(&old, None);
            let over = Notification::resolved(text, old.first_seen, now);
            out.push(over, routes, |_| true);
        }
        out.resolved.push(old.fingerprint);
    }
    out
}

/// A previous finding looked up by its fingerprint, without a second copy of it as the key.
struct ByFingerprint(Previous);

impl std::hash::Hash for ByFingerprint {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.fingerprint.as_str().hash(state);
    }
}

impl PartialEq for ByFingerprint {
    fn eq(&self, other: &Self) -> bool {
        self.0.fingerprint == other.0.fingerprint
    }
}

impl Eq for ByFingerprint {}

impl std::borrow::Borrow<str> for ByFingerprint {
    fn borrow(&self) -> &str {
        &self.0.fingerprint
    }
}

/// The text of an earlier finding, for its RESOLVED. The caller loads it for every fingerprint
/// [`needs_text`] names; should it be missing all the same, the notification still goes out, with
/// the current text at the old severity, or else only what the fingerprint says.
fn old_text(old: &Previous, current: Option<&Finding>) -> Finding {
    if let Some(f) = &old.finding {
        return Finding::clone(f);
    }
    if let Some(f) = current {
        return Finding {
            severity: old.severity,
            ..f.clone()
        };
    }
    let (check, key) = old
        .fingerprint
        .split_once(':')
        .unwrap_or((old.fingerprint.as_str(), ""));
    Finding {
        check: check.to_string().into(),
        subject_key: key.to_string(),
        subject: key.to_string(),
        severity: old.severity,
        summary: "The finding is gone; its earlier text could not be read back.".into(),
        why: "".into(),
        fix: String::new(),
        dod: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::Status;
    use crate::finding::Severity;

    fn f(check: &str, key: &str, sev: Severity) -> Finding {
        Finding::bare(check, key, sev)
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
            .map(|o| (o.note.fingerprint(), o.note.status, o.note.reminder))
            .collect()
    }

    /// One sink that wants everything.
    fn all() -> Vec<(String, Route)> {
        vec![("log".into(), Route::default())]
    }

    /// The active findings as `State::commit` leaves them after each plan: the next cycle's
    /// previous state.
    #[derive(Default)]
    struct Ledger(Vec<Active>);

    impl Ledger {
        fn commit(&mut self, p: &Plan, at: DateTime<Utc>) -> Vec<Active> {
            self.0.retain(|a| {
                let fp = a.finding.fingerprint();
                !p.resolved.contains(&fp)
                    && !p.upserts.iter().any(|u| u.finding.fingerprint() == fp)
            });
            for a in &mut self.0 {
                if p.touched.contains(&a.finding.fingerprint()) {
                    a.last_seen = at;
                }
            }
            self.0.extend(p.upserts.iter().cloned());
            self.0.clone()
        }
    }

    #[test]
    fn fire_remind_escalate_resolve() {
        let mut l = Ledger::default();
        let cfg = AlertsConfig::default(); // repeat 4h, send_resolved
        let ev = HashSet::new();
        let a = f("token-bypass-2fa", "aaa", Severity::Warning);
        let p1 = plan(
            Vec::<Active>::new(),
            vec![a.clone()],
            &ev,
            t(0),
            &cfg,
            &all(),
        );
        assert_eq!(
            statuses(&p1),
            vec![("token-bypass-2fa:aaa".into(), Status::Firing, false)]
        );
        let p2 = plan(
            l.commit(&p1, t(0)),
            vec![a.clone()],
            &ev,
            t(1),
            &cfg,
            &all(),
        );
        assert!(p2.notifications.is_empty(), "no repeat within 4h");
        // Seen again, unchanged and not notified: only its last_seen is written.
        assert!(p2.upserts.is_empty());
        assert_eq!(p2.touched, vec!["token-bypass-2fa:aaa".to_string()]);
        let p3 = plan(
            l.commit(&p2, t(1)),
            vec![a.clone()],
            &ev,
            t(4),
            &cfg,
            &all(),
        );
        assert_eq!(
            statuses(&p3),
            vec![("token-bypass-2fa:aaa".into(), Status::Firing, true)]
        );
        // A reminder went out: the row is written whole (its last notification moved).
        assert_eq!(p3.upserts.len(), 1);
        assert!(p3.touched.is_empty());
        let crit = f("token-bypass-2fa", "aaa", Severity::Critical);
        let p4 = plan(l.commit(&p3, t(4)), vec![crit], &ev, t(5), &cfg, &all());
        assert_eq!(
            statuses(&p4),
            vec![("token-bypass-2fa:aaa".into(), Status::Firing, false)]
        );
        assert_eq!(p4.upserts[0].first_seen, t(0));
        let p5 = plan(l.commit(&p4, t(5)), vec![], &ev, t(6), &cfg, &all());
        assert_eq!(
            statuses(&p5),
            vec![("token-bypass-2fa:aaa".into(), Status::Resolved, false)]
        );
        assert_eq!(p5.resolved, vec!["token-bypass-2fa:aaa".to_string()]);
        assert_eq!(p5.notifications[0].note.first_seen, t(0));
    }

    #[test]
    fn events_fire_once_and_are_not_kept() {
        let ev: HashSet<&str> = ["token-created"].into();
        let p = plan(
            Vec::<Active>::new(),
            vec![f("token-created", "bbb", Severity::Critical)],
            &ev,
            t(0),
            &AlertsConfig::default(),
            &all(),
        );
        assert_eq!(p.notifications.len(), 1);
        assert!(p.notifications[0].note.event);
        assert!(p.upserts.is_empty());
    }

    #[test]
    fn no_resolved_when_disabled() {
        let cfg = AlertsConfig {
            send_resolved: false,
            ..AlertsConfig::default()
        };
        let prev = plan(
            Vec::<Active>::new(),
            vec![f("token-present", "c", Severity::Warning)],
            &HashSet::new(),
            t(0),
            &cfg,
            &all(),
        );
        let p = plan(
            Ledger::default().commit(&prev, t(0)),
            vec![],
            &HashSet::new(),
            t(1),
            &cfg,
            &all(),
        );
        assert!(p.notifications.is_empty());
        assert_eq!(p.resolved.len(), 1);
    }

    #[test]
    fn each_sink_gets_what_its_route_wants_at_its_own_rhythm() {
        let mut l = Ledger::default();
        let cfg = AlertsConfig::default(); // repeat 4h
        let ev = HashSet::new();
        let routes = vec![
            ("mail".to_string(), Route::default()),
            (
                "pager".to_string(),
                Route {
                    min_severity: Severity::Critical,
                    repeat_interval: Some(crate::config::types::HumanDuration::secs(3600)),
                    ..Route::default()
                },
            ),
            (
                "chat".to_string(),
                Route {
                    exclude_checks: vec!["token-bypass-2fa".into()],
                    ..Route::default()
                },
            ),
        ];
        let sinks = |p: &Plan| -> Vec<Vec<String>> {
            p.notifications.iter().map(|o| o.sinks.to_vec()).collect()
        };
        let crit = f("token-bypass-2fa", "aaa", Severity::Critical);
        let p1 = plan(
            Vec::<Active>::new(),
            vec![crit.clone()],
            &ev,
            t(0),
            &cfg,
            &routes,
        );
        assert_eq!(sinks(&p1), vec![vec!["mail".to_string(), "pager".into()]]);
        // 1h: the pager's hourly reminder only.
        let p2 = plan(
            l.commit(&p1, t(0)),
            vec![crit.clone()],
            &ev,
            t(1),
            &cfg,
            &routes,
        );
        assert_eq!(sinks(&p2), vec![vec!["pager".to_string()]]);
        assert!(p2.notifications[0].note.reminder);
        assert_eq!(p2.upserts[0].last_notified, Some(t(1)));
        // 4h: both.
        let p3 = plan(
            l.commit(&p2, t(1)),
            vec![crit.clone()],
            &ev,
            t(4),
            &cfg,
            &routes,
        );
        assert_eq!(sinks(&p3), vec![vec!["mail".to_string(), "pager".into()]]);
        // Downgraded to a warning: the pager hears it is over for it; the mailbox hears the change.
        let warn_now = f("token-bypass-2fa", "aaa", Severity::Warning);
        let p3b = plan(
            l.commit(&p3, t(4)),
            vec![warn_now.clone()],
            &ev,
            t(5),
            &cfg,
            &routes,
        );
        assert_eq!(
            statuses(&p3b),
            vec![
                ("token-bypass-2fa:aaa".into(), Status::Resolved, false),
                ("token-bypass-2fa:aaa".into(), Status::Firing, false),
            ]
        );
        assert_eq!(
            sinks(&p3b),
            vec![vec!["pager".to_string()], vec!["mail".into()]]
        );
        // Gone later: only the mailbox, which still had it, hears RESOLVED.
        let p3c = plan(l.commit(&p3b, t(5)), vec![], &ev, t(6), &cfg, &routes);
        assert_eq!(sinks(&p3c), vec![vec!["mail".to_string()]]);
        // A warning elsewhere: not for the pager (severity), but for chat.
        let warn = f("token-present", "bbb", Severity::Warning);
        let p4 = plan(Vec::<Active>::new(), vec![warn], &ev, t(0), &cfg, &routes);
        assert_eq!(sinks(&p4), vec![vec!["mail".to_string(), "chat".into()]]);
        // Nobody wants it: no notification, but the finding is still recorded.
        let info = f("token-present", "ccc", Severity::Info);
        let only_pager = &routes[1..2];
        let p5 = plan(
            Vec::<Active>::new(),
            vec![info],
            &ev,
            t(0),
            &cfg,
            only_pager,
        );
        assert!(p5.notifications.is_empty());
        assert_eq!(p5.upserts.len(), 1);
    }

    /// Compared without its text, a finding whose text changed is written again, one that did not is
    /// only touched, and one gone is resolved with whatever text is at hand.
    #[test]
    fn previous_findings_are_compared_by_digest() {
        let cfg = AlertsConfig::default();
        let a = f("token-present", "aaa", Severity::Warning);
        let stored = |f: &Finding| Previous {
            finding: None,
            ..Previous::from(Active {
                finding: f.clone().into(),
                first_seen: t(0),
                last_seen: t(0),
                last_notified: Some(t(0)),
            })
        };
        let same = plan(
            vec![stored(&a)],
            vec![a.clone()],
            &HashSet::new(),
            t(1),
            &cfg,
            &all(),
        );
        assert_eq!(same.touched, ["token-present:aaa"]);
        assert!(same.upserts.is_empty() && same.notifications.is_empty());

        let mut reworded = a.clone();
        reworded.summary = "now says more".into();
        let p = plan(
            vec![stored(&a)],
            vec![reworded.clone()],
            &HashSet::new(),
            t(1),
            &cfg,
            &all(),
        );
        assert!(p.touched.is_empty());
        assert_eq!(p.upserts.len(), 1);
        assert_eq!(*p.upserts[0].finding, reworded);
        assert_eq!(p.upserts[0].first_seen, t(0));

        // Gone, and its text was not loaded: RESOLVED still goes out, named by its fingerprint.
        let p = plan(
            vec![stored(&a)],
            Vec::new(),
            &HashSet::new(),
            t(1),
            &cfg,
            &all(),
        );
        assert_eq!(p.resolved, ["token-present:aaa"]);
        assert_eq!(
            statuses(&p),
            [("token-present:aaa".into(), Status::Resolved, false)]
        );
        assert_eq!(p.notifications[0].note.finding.subject_key, "aaa");

        let escalated = f("token-present", "aaa", Severity::Critical);
        assert_eq!(
            needs_text(&[stored(&a)], &[escalated]),
            HashSet::from(["token-present:aaa".to_string()])
        );
        assert!(needs_text(&[stored(&a)], &[a]).is_empty());
    }
}
