//! Grouping, after Alertmanager's `group_by`: the notifications one run of a check group makes for
//! one sink are sent as one [`Message`] per group key, so a new token that trips four checks is one
//! message listing the four and a first run over hundreds of packages is a handful of messages.
//!
//! The key is made of the dimensions in the sink's `group_by` ([`GroupDim`]: the finding's check
//! group, its check, its severity), and of the kind of change (FIRING, reminder, RESOLVED), which is
//! never mixed in one message. A message carries at most `max_items` notifications in full and counts
//! the rest, so its size is bounded whatever the run found. Sinks that keep one alert per finding
//! (Alertmanager, the log) are not grouped: each notification is its own message.
//!
//! [`messages`] is pure; the outbox calls it inside the cycle's transaction, with how many findings of
//! each check and severity are active once the run is recorded (for `still_active`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::lifecycle::Outgoing;
use super::{Notification, Route, Status};
use crate::finding::Severity;

/// What a group key can be made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupDim {
    /// The finding's check group: `tokens`, `packages`, `org`, `ci`, `health`.
    Group,
    /// The finding's check id.
    Check,
    /// The finding's severity.
    Severity,
    /// The finding itself: one message per finding, as before grouping.
    Finding,
}

impl GroupDim {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupDim::Group => "group",
            GroupDim::Check => "check",
            GroupDim::Severity => "severity",
            GroupDim::Finding => "finding",
        }
    }
}

/// The default `group_by`: one message per check group and kind of change.
pub fn default_group_by() -> Vec<GroupDim> {
    vec![GroupDim::Group]
}

/// Findings listed, and characters of each text, in a message's reduced form.
pub const REDUCED_ITEMS: usize = 10;
pub const REDUCED_CHARS: usize = 100;

/// The default `max_items`.
pub const DEFAULT_MAX_ITEMS: usize = 50;

/// The longest `group_wait` the configuration accepts.
pub const MAX_GROUP_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);

/// A sink's grouping as configured (`group_by`, `max_items`, `group_wait`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSettings {
    pub by: Vec<GroupDim>,
    pub max_items: usize,
    pub wait: std::time::Duration,
}

/// How one sink groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkGrouping {
    pub by: Vec<GroupDim>,
    /// Notifications carried in full per message; the rest are counted.
    pub max_items: usize,
    /// How long a FIRING message is held once queued for later runs' findings of its key to join
    /// (`group_wait`; zero: not held).
    pub wait: std::time::Duration,
    /// What the sink is told (to count what is still active in a group for it).
    pub route: Route,
}

/// How every sink groups, and the check group of each check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grouping {
    /// Grouped sinks by name; a sink not here gets one message per notification.
    pub sinks: BTreeMap<String, SinkGrouping>,
    /// Check id → its check group.
    pub groups: BTreeMap<String, String>,
}

/// What one outbox row carries to one sink: the notifications of one group key and one kind of
/// change from one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub status: Status,
    /// Reminders of findings still active.
    #[serde(default)]
    pub reminder: bool,
    /// The group key as `dimension → value` (empty with `group_by = []`). `None`: not grouped, the
    /// message is one notification (Alertmanager, the log, `notify-test`, the state alert).
    #[serde(default)]
    pub key: Option<BTreeMap<String, String>>,
    /// The notifications carried in full, highest severity first; at most the sink's `max_items`.
    pub notes: Vec<Notification>,
    /// How many notifications the message stands for, those not carried included.
    pub total: usize,
    /// How many it stands for, by check (every one, carried or not), for the subject line.
    #[serde(default)]
    pub checks: BTreeMap<String, usize>,
    /// How many it stands for, by severity.
    #[serde(default)]
    pub severities: BTreeMap<Severity, usize>,
    /// For RESOLVED: how many findings of the same group key are still active for this sink once
    /// the run is recorded. A pager resolves its incident only when none is.
    #[serde(default)]
    pub still_active: usize,
    /// This is the reduced form of a message its sink refused ([`Message::reduced`]).
    #[serde(default)]
    pub reduced: bool,
}

impl Message {
    /// A message about nothing yet, to [`count`](Self::count) notifications into.
    fn empty(status: Status, reminder: bool, key: Option<Key>) -> Self {
        Message {
            status,
            reminder,
            key,
            notes: Vec::new(),
            total: 0,
            checks: BTreeMap::new(),
            severities: BTreeMap::new(),
            still_active: 0,
            reduced: false,
        }
    }

    /// One notification on its own (not grouped).
    pub fn single(note: Notification) -> Self {
        let mut m = Message::empty(note.status, note.reminder, None);
        m.count(&note);
        m.notes.push(note);
        m
    }

    fn count(&mut self, note: &Notification) {
        self.total += 1;
        *self
            .checks
            .entry(note.finding.check.to_string())
            .or_default() += 1;
        *self.severities.entry(note.finding.severity).or_default() += 1;
    }

    /// The highest severity among all it stands for.
    pub fn severity(&self) -> Severity {
        self.severities
            .keys()
            .next_back()
            .copied()
            .unwrap_or(Severity::Info)
    }

    /// How many it stands for but does not carry.
    pub fn omitted(&self) -> usize {
        self.total.saturating_sub(self.notes.len())
    }

    /// The one notification of a message that is exactly one (rendered as it always was).
    pub fn only(&self) -> Option<&Notification> {
        match (self.total, self.notes.as_slice()) {
            (1, [n]) => Some(n),
            _ => None,
        }
    }

    /// The key as `group=tokens, severity=critical` (empty when the key is empty or absent). A
    /// `finding` value holds the registry's subject key: shown inert.
    pub fn key_text(&self) -> String {
        self.key
            .iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", crate::inert::show(v)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// What is sent when a sink refuses this message for good as too large or malformed: at most
    /// [`REDUCED_ITEMS`] findings, each text cut to [`REDUCED_CHARS`] characters, the counts kept.
    /// `None` when it is already reduced, or when reducing changes nothing (a small message is
    /// refused for other reasons, and would be refused again).
    pub fn reduced(&self) -> Option<Message> {
        if self.reduced {
            return None;
        }
        let cut = |s: &str| crate::inert::show_at_most(s, REDUCED_CHARS).into_owned();
        let mut m = self.clone();
        m.reduced = true;
        m.notes.truncate(REDUCED_ITEMS);
        for n in &mut m.notes {
            let f = Arc::make_mut(&mut n.finding);
            f.subject = cut(&f.subject);
            f.subject_key = cut(&f.subject_key);
            f.summary = cut(&f.summary);
            f.fix = cut(&f.fix);
            f.why = std::borrow::Cow::Owned(cut(&f.why));
            n.resolution = n.resolution.as_deref().map(cut);
        }
        let mut unchanged = m.clone();
        unchanged.reduced = false;
        (unchanged != *self).then_some(m)
    }

    /// Whether `later`, a later run's message to the same sink, may join this one while this one
    /// is held (`group_wait`): both FIRING (not reminders) with the same group key.
    pub fn can_absorb(&self, later: &Message) -> bool {
        self.status == Status::Firing
            && later.status == Status::Firing
            && !self.reminder
            && !later.reminder
            && !self.reduced
            && self.key.is_some()
            && self.key == later.key
    }

    /// Take in `later` (see [`Self::can_absorb`]): the counts add up, and the `max_items` carried
    /// are the first of both in the message's order. Each part already carries its own first ones,
    /// so nothing the union should carry was left out of either.
    pub fn absorb(&mut self, later: Message, max_items: usize) {
        self.total += later.total;
        for (check, n) in later.checks {
            *self.checks.entry(check).or_default() += n;
        }
        for (severity, n) in later.severities {
            *self.severities.entry(severity).or_default() += n;
        }
        self.notes.extend(later.notes);
        self.notes.sort_by(carried_order);
        self.notes.truncate(max_items.max(1));
    }

    /// Whether it comes from `notify-test`.
    pub fn is_test(&self) -> bool {
        self.notes.iter().any(|n| n.test)
    }
}

/// A group key: dimension → value.
type Key = BTreeMap<String, String>;

/// The kind of change a message is about; never mixed in one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Firing,
    Reminder,
    Resolved,
}

fn kind(n: &Notification) -> Kind {
    match (n.status, n.reminder) {
        (Status::Resolved, _) => Kind::Resolved,
        (Status::Firing, true) => Kind::Reminder,
        (Status::Firing, false) => Kind::Firing,
    }
}

/// The messages for every sink, in the order they are queued: per sink, FIRING first, then
/// reminders, then RESOLVED, each by key. `active` counts the findings active once the run is
/// recorded, by check and severity.
pub fn messages(
    notes: &[Outgoing],
    grouping: &Grouping,
    active: &BTreeMap<(String, Severity), usize>,
) -> Vec<(String, Message)> {
    let mut out = Vec::new();
    let mut grouped: BTreeMap<(String, Kind, Key), Vec<&Notification>> = BTreeMap::new();
    for o in notes {
        for sink in o.sinks.iter() {
            match grouping.sinks.get(sink) {
                None => out.push((sink.clone(), Message::single(o.note.clone()))),
                Some(g) => {
                    let f = &o.note.finding;
                    let mut key = key_of(&g.by, &f.check, f.severity, grouping);
                    if g.by.contains(&GroupDim::Finding) {
                        key.insert("finding".into(), o.note.fingerprint());
                    }
                    grouped
                        .entry((sink.clone(), kind(&o.note), key))
                        .or_default()
                        .push(&o.note);
                }
            }
        }
    }
    for ((sink, kind, key), mut notes) in grouped {
        let Some(g) = grouping.sinks.get(&sink) else {
            continue;
        };
        notes.sort_by(|a, b| carried_order(a, b));
        let status = if kind == Kind::Resolved {
            Status::Resolved
        } else {
            Status::Firing
        };
        let mut m = Message::empty(status, kind == Kind::Reminder, Some(key.clone()));
        for n in notes {
            m.count(n);
            if m.notes.len() < g.max_items.max(1) {
                m.notes.push(n.clone());
            }
        }
        // A group of one finding has nothing else that could still be active.
        if kind == Kind::Resolved && !g.by.contains(&GroupDim::Finding) {
            m.still_active = active
                .iter()
                .filter(|((check, severity), _)| {
                    g.route.wants_kind(check, *severity)
                        && key_of(&g.by, check, *severity, grouping) == key
                })
                .map(|(_, n)| n)
                .sum();
        }
        out.push((sink, m));
    }
    out
}

/// The order of what a message carries: highest severity first, then by check and subject, so the
/// items carried are the ones that matter most and the order is stable.
fn carried_order(a: &Notification, b: &Notification) -> std::cmp::Ordering {
    b.finding
        .severity
        .cmp(&a.finding.severity)
        .then_with(|| a.finding.check.cmp(&b.finding.check))
        .then_with(|| a.finding.subject.cmp(&b.finding.subject))
}

fn key_of(
    by: &[GroupDim],
    check: &str,
    severity: Severity,
    grouping: &Grouping,
) -> BTreeMap<String, String> {
    by.iter()
        .filter_map(|d| {
            let value = match d {
                GroupDim::Group => grouping
                    .groups
                    .get(check)
                    .cloned()
                    .unwrap_or_else(|| "other".into()),
                GroupDim::Check => check.to_string(),
                GroupDim::Severity => severity.as_str().to_string(),
                // Filled in by the caller, which has the finding.
                GroupDim::Finding => return None,
            };
            Some((d.as_str().to_string(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Finding;
    use chrono::{DateTime, Utc};

    fn t() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-26T00:00:00Z")
            .expect("t")
            .with_timezone(&Utc)
    }

    fn note(check: &str, key: &str, sev: Severity, status: Status) -> Notification {
        let f = Finding::bare(check, key, sev);
        match status {
            Status::Firing => Notification::firing(f, t(), t()),
            Status::Resolved => Notification::resolved(f, t(), t()),
        }
    }

    fn out(n: Notification, sinks: &[&str]) -> Outgoing {
        Outgoing {
            note: n,
            sinks: sinks.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn grouping(by: Vec<GroupDim>, max_items: usize) -> Grouping {
        let groups = [
            ("token-created", "tokens"),
            ("token-present", "tokens"),
            ("trusted-publisher-missing", "packages"),
        ];
        Grouping {
            sinks: [(
                "mail".to_string(),
                SinkGrouping {
                    by,
                    max_items,
                    wait: std::time::Duration::ZERO,
                    route: Route::default(),
                },
            )]
            .into(),
            groups: groups
                .iter()
                .map(|(c, g)| (c.to_string(), g.to_string()))
                .collect(),
        }
    }

    fn summary(ms: &[(String, Message)]) -> Vec<String> {
        ms.iter()
            .map(|(s, m)| {
                format!(
                    "{s} {:?}{} [{}] {}/{}",
                    m.status,
                    if m.reminder { " reminder" } else { "" },
                    m.key_text(),
                    m.notes.len(),
                    m.total
                )
            })
            .collect()
    }

    #[test]
    fn one_message_per_sink_kind_and_key() {
        let notes = vec![
            out(
                note("token-present", "a", Severity::Warning, Status::Firing),
                &["mail", "am"],
            ),
            out(
                note("token-created", "a", Severity::Critical, Status::Firing),
                &["mail", "am"],
            ),
            out(
                note(
                    "trusted-publisher-missing",
                    "p",
                    Severity::Warning,
                    Status::Firing,
                ),
                &["mail"],
            ),
            out(
                note("token-present", "b", Severity::Warning, Status::Resolved),
                &["mail"],
            ),
        ];
        let by_group = messages(&notes, &grouping(default_group_by(), 50), &BTreeMap::new());
        assert_eq!(
            summary(&by_group),
            [
                "am Firing [] 1/1",
                "am Firing [] 1/1",
                "mail Firing [group=packages] 1/1",
                "mail Firing [group=tokens] 2/2",
                "mail Resolved [group=tokens] 1/1",
            ]
        );
        let (_, tokens) = &by_group[3];
        assert_eq!(
            tokens.notes[0].finding.check, "token-created",
            "critical first"
        );
        assert_eq!(tokens.severity(), Severity::Critical);
        let all = messages(&notes, &grouping(vec![], 50), &BTreeMap::new());
        assert_eq!(
            summary(&all)[2..],
            ["mail Firing [] 3/3", "mail Resolved [] 1/1"]
        );
        let by_check = messages(
            &notes,
            &grouping(vec![GroupDim::Check, GroupDim::Severity], 50),
            &BTreeMap::new(),
        );
        assert_eq!(by_check.len(), 2 + 4);
    }

    #[test]
    fn a_finding_key_is_shown_inert() {
        let notes = vec![out(
            note(
                "token-present",
                "a\n\u{1b}[2J",
                Severity::Warning,
                Status::Firing,
            ),
            &["mail"],
        )];
        let ms = messages(
            &notes,
            &grouping(vec![GroupDim::Finding], 50),
            &BTreeMap::new(),
        );
        assert_eq!(ms[0].1.key_text(), "finding=token-present:a\\n\\u{1b}[2J");
    }

    #[test]
    fn a_held_message_absorbs_a_later_one_of_its_key_and_carries_the_first_of_both() {
        let run = |keys: &[(&str, Severity)], status: Status| {
            let notes: Vec<Outgoing> = keys
                .iter()
                .map(|(k, sev)| out(note("token-present", k, *sev, status), &["mail"]))
                .collect();
            messages(&notes, &grouping(default_group_by(), 2), &BTreeMap::new())
                .remove(0)
                .1
        };
        let mut held = run(
            &[("b", Severity::Warning), ("c", Severity::Warning)],
            Status::Firing,
        );
        let later = run(
            &[("a", Severity::Critical), ("d", Severity::Info)],
            Status::Firing,
        );
        assert!(held.can_absorb(&later));
        held.absorb(later, 2);
        assert_eq!((held.total, held.notes.len(), held.omitted()), (4, 2, 2));
        assert_eq!(held.severity(), Severity::Critical);
        assert_eq!(held.checks["token-present"], 4);
        let carried: Vec<&str> = held
            .notes
            .iter()
            .map(|n| n.finding.subject_key.as_str())
            .collect();
        assert_eq!(carried, ["a", "b"], "highest severity first, then subject");

        // Never across kinds of change or keys.
        let resolved = run(&[("e", Severity::Warning)], Status::Resolved);
        assert!(!held.can_absorb(&resolved));
        let mut other_key = run(&[("e", Severity::Warning)], Status::Firing);
        other_key.key = Some(BTreeMap::from([("group".into(), "packages".into())]));
        assert!(!held.can_absorb(&other_key));
        let mut reminder = run(&[("e", Severity::Warning)], Status::Firing);
        reminder.reminder = true;
        assert!(!held.can_absorb(&reminder));
    }

    #[test]
    fn past_max_items_the_rest_are_counted_not_carried() {
        let notes: Vec<Outgoing> = (0..500)
            .map(|i| {
                out(
                    note(
                        "trusted-publisher-missing",
                        &format!("p{i:03}"),
                        Severity::Warning,
                        Status::Firing,
                    ),
                    &["mail"],
                )
            })
            .collect();
        let ms = messages(&notes, &grouping(default_group_by(), 50), &BTreeMap::new());
        assert_eq!(ms.len(), 1);
        let m = &ms[0].1;
        assert_eq!((m.notes.len(), m.total, m.omitted()), (50, 500, 450));
        assert_eq!(m.checks["trusted-publisher-missing"], 500);
    }

    #[test]
    fn a_resolved_group_counts_what_is_still_active_for_the_sink() {
        let notes = vec![out(
            note("token-present", "a", Severity::Warning, Status::Resolved),
            &["mail"],
        )];
        let active: BTreeMap<(String, Severity), usize> = [
            (("token-present".to_string(), Severity::Warning), 2),
            (("token-created".to_string(), Severity::Critical), 1),
            (
                ("trusted-publisher-missing".to_string(), Severity::Warning),
                7,
            ),
        ]
        .into();
        let ms = messages(&notes, &grouping(default_group_by(), 50), &active);
        assert_eq!(ms[0].1.still_active, 3, "the tokens group only");
        let mut g = grouping(default_group_by(), 50);
        g.sinks.get_mut("mail").expect("mail").route.min_severity = Severity::Critical;
        let ms = messages(&notes, &g, &active);
        assert_eq!(ms[0].1.still_active, 1, "only what the sink is told about");
    }
}
