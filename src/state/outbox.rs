//! The outbox table: messages (grouped notifications) waiting for a sink. Rows are added inside the transaction that
//! records the cycle causing them ([`queue`], called from [`State::commit`]), so a notification is
//! never lost and never queued twice for one state change; [`crate::outbox`] delivers them.
//!
//! A row is claimed (`claimed` = the attempt's start) in its own committed statement before its sink
//! is called, and marked delivered or failed after. A row found claimed at start was being sent when
//! the process died: the sink may or may not have accepted it, so it is sent again (at-least-once).

use chrono::{DateTime, Utc};
use rusqlite::{params, Transaction};

use super::{from_ts, ts, State, StateError};
use std::collections::BTreeMap;

use crate::alerts::group::{self, Grouping, Message};
use crate::alerts::lifecycle::Outgoing;
use crate::alerts::{Notification, Status};
use crate::finding::Severity;

/// One undelivered message for one sink.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub id: i64,
    pub sink: String,
    pub message: Message,
    pub attempts: u32,
    pub next_attempt: DateTime<Utc>,
}

/// Queue the plan's notifications as messages: grouped per sink as `grouping` says (see
/// [`crate::alerts::group`]), one row per message. Called after the cycle's findings are written,
/// so the counts of what is still active are this run's. Returns how many rows were added.
pub(super) fn queue(
    tx: &Transaction<'_>,
    notes: &[Outgoing],
    grouping: &Grouping,
    now: DateTime<Utc>,
) -> rusqlite::Result<usize> {
    if notes.is_empty() {
        return Ok(0);
    }
    // Only a RESOLVED message says how much of its group is still active.
    let active = if notes.iter().any(|o| o.note.status == Status::Resolved) {
        active_counts(tx)?
    } else {
        BTreeMap::new()
    };
    let mut queued = 0;
    let mut insert = tx.prepare_cached(
        "INSERT INTO outbox (sink, fingerprint, body, created, next_attempt, priority) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut held = Held::default();
    for (sink, message) in group::messages(notes, grouping, &active) {
        let mut due = now;
        let holds = grouping.sinks.get(&sink).filter(|g| !g.wait.is_zero());
        if let (Some(g), Some(_)) = (holds, &message.key) {
            let rows = held.of(tx, &sink, now)?;
            if let Some(h) = rows.iter_mut().find(|h| h.message.can_absorb(&message)) {
                h.message.absorb(message, g.max_items);
                h.changed = true;
                continue;
            }
            if message.status == Status::Firing && !message.reminder {
                due = now + chrono::Duration::from_std(g.wait).unwrap_or(chrono::Duration::zero());
            } else {
                // A RESOLVED or a reminder of a key whose FIRING is held would overtake it: the
                // held one goes now, ahead of it.
                for h in rows.iter_mut().filter(|h| h.message.key == message.key) {
                    h.release = true;
                }
            }
        }
        let body = super::json_text(&message)?;
        // What the row is about, for whoever reads the table: the finding, or the group key.
        let about = match message.only() {
            Some(n) => n.fingerprint(),
            None => format!("group:{}", message.key_text()),
        };
        let id_priority = priority(&message);
        insert.execute(params![sink, about, body, ts(now), ts(due), id_priority])?;
        if due > now {
            let id = tx.last_insert_rowid();
            held.add(&sink, HeldRow::new(id, message));
        }
        queued += 1;
    }
    held.write(tx, now)?;
    Ok(queued)
}

/// The messages held for `group_wait` (queued, never tried, not yet due), by sink, read when a
/// sink that holds is first met in a queueing. Held rows are few: one per group key at most.
#[derive(Default)]
struct Held(BTreeMap<String, Vec<HeldRow>>);

struct HeldRow {
    id: i64,
    message: Message,
    /// Absorbed a later message: its body is written again.
    changed: bool,
    /// To be sent now (something of its key must not overtake it).
    release: bool,
}

impl HeldRow {
    fn new(id: i64, message: Message) -> Self {
        HeldRow {
            id,
            message,
            changed: false,
            release: false,
        }
    }
}

impl Held {
    fn of(
        &mut self,
        tx: &Transaction<'_>,
        sink: &str,
        now: DateTime<Utc>,
    ) -> rusqlite::Result<&mut Vec<HeldRow>> {
        if !self.0.contains_key(sink) {
            let mut stmt = tx.prepare_cached(
                "SELECT id, body FROM outbox WHERE sink = ?1 AND delivered IS NULL AND claimed IS NULL
                 AND attempts = 0 AND next_attempt > ?2 ORDER BY id",
            )?;
            let rows = stmt.query_map(params![sink, ts(now)], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?;
            let mut held = Vec::new();
            for row in rows {
                let (id, body) = row?;
                // A row that does not decode as a message is left as it is, to be sent when due.
                if let Ok(message) = serde_json::from_str::<Message>(&body) {
                    held.push(HeldRow::new(id, message));
                }
            }
            self.0.insert(sink.to_string(), held);
        }
        Ok(self.0.entry(sink.to_string()).or_default())
    }

    fn add(&mut self, sink: &str, row: HeldRow) {
        self.0.entry(sink.to_string()).or_default().push(row);
    }

    fn write(self, tx: &Transaction<'_>, now: DateTime<Utc>) -> rusqlite::Result<()> {
        for row in self.0.into_values().flatten() {
            if row.changed {
                tx.execute(
                    "UPDATE outbox SET body = ?2, priority = MAX(priority, ?3) WHERE id = ?1",
                    params![
                        row.id,
                        super::json_text(&row.message)?,
                        priority(&row.message)
                    ],
                )?;
            }
            if row.release {
                tx.execute(
                    "UPDATE outbox SET next_attempt = ?2 WHERE id = ?1",
                    params![row.id, ts(now)],
                )?;
            }
        }
        Ok(())
    }
}

/// A message's place in its sink's queue: the highest severity first, so a new critical finding
/// reaches the sink ahead of a backlog of warnings; in queue order within a severity.
fn priority(m: &Message) -> i64 {
    match m.severity() {
        Severity::Critical => 2,
        Severity::Warning => 1,
        Severity::Info => 0,
    }
}

/// Active findings by check and severity.
fn active_counts(tx: &Transaction<'_>) -> rusqlite::Result<BTreeMap<(String, Severity), usize>> {
    let mut stmt =
        tx.prepare_cached("SELECT check_id, severity, COUNT(*) FROM findings GROUP BY 1, 2")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (check, severity, n) = row?;
        if let Some(sev) = Severity::parse(&severity) {
            out.insert((check, sev), usize::try_from(n).unwrap_or(0));
        }
    }
    Ok(out)
}

impl State {
    /// Every undelivered, unclaimed outbox row, oldest first.
    pub fn pending(&self) -> Result<Vec<OutboxItem>, StateError> {
        self.pending_rows(
            "SELECT id, sink, body, attempts, next_attempt FROM outbox
             WHERE delivered IS NULL AND claimed IS NULL ORDER BY priority DESC, id",
            params![],
        )
    }

    /// The sinks that have undelivered, unclaimed rows.
    pub fn pending_sinks(&self) -> Result<Vec<String>, StateError> {
        Ok(self
            .rows::<(String,)>(
                "SELECT DISTINCT sink FROM outbox WHERE delivered IS NULL AND claimed IS NULL ORDER BY sink",
            )?
            .into_iter()
            .map(|(s,)| s)
            .collect())
    }

    /// Up to `limit` undelivered, unclaimed rows of `sink` from the head of its queue: the highest
    /// severity first, oldest first within it. The dispatcher reads a queue in such slices, so a
    /// backlog of any length costs one slice of memory.
    /// A message held for `group_wait` is left out until it is due: it must not hold back the rest
    /// of its queue the way a failed one waiting for its retry does.
    pub fn pending_for(
        &self,
        sink: &str,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<OutboxItem>, StateError> {
        self.pending_rows(
            "SELECT id, sink, body, attempts, next_attempt FROM outbox
             WHERE sink = ?1 AND delivered IS NULL AND claimed IS NULL
               AND NOT (attempts = 0 AND next_attempt > ?3)
             ORDER BY priority DESC, id LIMIT ?2",
            params![sink, i64::try_from(limit).unwrap_or(i64::MAX), ts(now)],
        )
    }

    /// Make every held message due now (the daemon is stopping: what it holds goes out with its
    /// last pass rather than waiting for a restart). Returns how many.
    pub fn release_held(&self, now: DateTime<Utc>) -> Result<usize, StateError> {
        self.with(|c| {
            c.execute(
                "UPDATE outbox SET next_attempt = ?1
                 WHERE delivered IS NULL AND claimed IS NULL AND attempts = 0 AND next_attempt > ?1",
                [ts(now)],
            )
        })
    }

    fn pending_rows(
        &self,
        sql: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<OutboxItem>, StateError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(sql)?;
            let rows = stmt.query_map(args, |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, u32>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?
        .into_iter()
        .map(|(id, sink, body, attempts, next)| {
            // Rows queued before messages were grouped hold one notification.
            let message = match serde_json::from_str::<Message>(&body) {
                Ok(m) => m,
                Err(_) => Message::single(
                    self.decode::<Notification>(&format!("outbox row {id}"), &body)?,
                ),
            };
            Ok(OutboxItem {
                id,
                sink,
                message,
                attempts,
                next_attempt: from_ts(next),
            })
        })
        .collect()
    }

    /// Mark a row in flight before its sink is called. `false`: it is no longer pending (delivered
    /// or claimed meanwhile), so it must not be sent.
    pub fn claim(&self, id: i64, now: DateTime<Utc>) -> Result<bool, StateError> {
        self.with(|c| {
            c.execute(
                "UPDATE outbox SET claimed = ?2, attempts = attempts + 1
                 WHERE id = ?1 AND delivered IS NULL AND claimed IS NULL",
                params![id, ts(now)],
            )
            .map(|n| n == 1)
        })
    }

    /// Done with a row: sent, or (with `note`) rejected by its sink or dropped with it.
    pub fn mark_delivered(
        &self,
        id: i64,
        now: DateTime<Utc>,
        note: Option<&str>,
    ) -> Result<(), StateError> {
        self.with(|c| {
            c.execute(
                "UPDATE outbox SET delivered = ?2, claimed = NULL, last_error = ?3 WHERE id = ?1",
                params![id, ts(now), note],
            )
            .map(|_| ())
        })
    }

    pub fn mark_failed(
        &self,
        id: i64,
        error: &str,
        next_attempt: DateTime<Utc>,
    ) -> Result<(), StateError> {
        self.with(|c| {
            c.execute(
                "UPDATE outbox SET claimed = NULL, last_error = ?2, next_attempt = ?3 WHERE id = ?1",
                params![id, error, ts(next_attempt)],
            )
            .map(|_| ())
        })
    }

    /// Release the rows a previous process claimed and never finished (it died mid-send), so they
    /// are sent again. Returns how many.
    pub fn release_interrupted(&self) -> Result<usize, StateError> {
        self.with(|c| {
            c.execute(
                "UPDATE outbox SET claimed = NULL WHERE claimed IS NOT NULL AND delivered IS NULL",
                [],
            )
        })
    }

    /// Undelivered rows per sink.
    pub fn queue_depth(&self) -> Result<Vec<(String, i64)>, StateError> {
        self.rows("SELECT sink, COUNT(*) FROM outbox WHERE delivered IS NULL GROUP BY sink")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::alerts::group::{default_group_by, SinkGrouping};
    use crate::alerts::lifecycle::{Outgoing, Plan};
    use crate::alerts::Route;
    use crate::finding::Finding;
    use crate::state::CycleRecord;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .expect("t")
            .with_timezone(&Utc)
            + chrono::Duration::seconds(secs)
    }

    fn finding(key: &str) -> Finding {
        Finding {
            check: "token-present".into(),
            subject_key: key.into(),
            subject: format!("token {key}"),
            severity: Severity::Warning,
            summary: "s".into(),
            why: "w".into(),
            fix: "f".into(),
            dod: None,
        }
    }

    /// A sink `mail` that holds FIRING messages for 60 s.
    fn holding() -> Grouping {
        Grouping {
            sinks: [(
                "mail".to_string(),
                SinkGrouping {
                    by: default_group_by(),
                    max_items: 50,
                    wait: Duration::from_secs(60),
                    route: Route::default(),
                },
            )]
            .into(),
            groups: [("token-present".to_string(), "tokens".to_string())].into(),
        }
    }

    /// One run that fires (or resolves) `keys`, committed at `at`.
    fn run(s: &State, grouping: &Grouping, keys: &[&str], status: Status, at: DateTime<Utc>) {
        let notes = keys
            .iter()
            .map(|k| Outgoing {
                note: match status {
                    Status::Firing => Notification::firing(Arc::new(finding(k)), at, at),
                    Status::Resolved => Notification::resolved(finding(k), at, at),
                },
                sinks: vec!["mail".to_string()].into(),
            })
            .collect();
        let plan = Plan {
            notifications: notes,
            ..Plan::default()
        };
        s.commit_cycle(&CycleRecord {
            group: "tokens",
            grouping,
            error: None,
            copies: Default::default(),
            plan: &plan,
            seen_tokens: None,
            prune_before: at,
            now: at,
        })
        .expect("commit");
    }

    fn totals(items: &[OutboxItem]) -> Vec<(Status, usize)> {
        items
            .iter()
            .map(|i| (i.message.status, i.message.total))
            .collect()
    }

    #[test]
    fn a_held_firing_message_takes_in_later_runs_and_goes_when_due() {
        let s = State::open_in_memory().expect("state");
        let g = holding();
        run(&s, &g, &["a", "b"], Status::Firing, t(0));
        // Held: not offered to the sink, and it does not hold back the queue either.
        assert!(s.pending_for("mail", 32, t(1)).expect("pending").is_empty());
        run(&s, &g, &["c"], Status::Firing, t(30));
        assert_eq!(s.queue_depth().expect("depth"), [("mail".to_string(), 1)]);
        assert!(s
            .pending_for("mail", 32, t(59))
            .expect("pending")
            .is_empty());
        // Due 60 s after it was first queued, with what the second run found.
        let due = s.pending_for("mail", 32, t(60)).expect("pending");
        assert_eq!(totals(&due), [(Status::Firing, 3)]);
        let keys: Vec<&str> = due[0]
            .message
            .notes
            .iter()
            .map(|n| n.finding.subject_key.as_str())
            .collect();
        assert_eq!(keys, ["a", "b", "c"]);
        // Once due it takes in nothing more: a later run is a message of its own, held in turn.
        run(&s, &g, &["d"], Status::Firing, t(61));
        assert_eq!(
            totals(&s.pending_for("mail", 32, t(61)).expect("pending")),
            [(Status::Firing, 3)]
        );
        assert_eq!(s.queue_depth().expect("depth"), [("mail".to_string(), 2)]);
    }

    #[test]
    fn a_resolved_message_releases_the_held_one_of_its_key_ahead_of_it() {
        let s = State::open_in_memory().expect("state");
        let g = holding();
        run(&s, &g, &["a"], Status::Firing, t(0));
        run(&s, &g, &["a"], Status::Resolved, t(10));
        // The FIRING goes first, then the RESOLVED: never the other way round.
        assert_eq!(
            totals(&s.pending_for("mail", 32, t(10)).expect("pending")),
            [(Status::Firing, 1), (Status::Resolved, 1)]
        );
    }

    #[test]
    fn a_sink_without_group_wait_is_never_held_and_stopping_releases_what_is() {
        let s = State::open_in_memory().expect("state");
        let mut g = holding();
        run(&s, &g, &["a"], Status::Firing, t(0));
        assert_eq!(s.release_held(t(5)).expect("release"), 1);
        assert_eq!(
            totals(&s.pending_for("mail", 32, t(5)).expect("pending")),
            [(Status::Firing, 1)]
        );
        if let Some(m) = g.sinks.get_mut("mail") {
            m.wait = Duration::ZERO;
        }
        run(&s, &g, &["b"], Status::Firing, t(6));
        assert_eq!(
            totals(&s.pending_for("mail", 32, t(6)).expect("pending")),
            [(Status::Firing, 1), (Status::Firing, 1)]
        );
    }
}
