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
        "INSERT INTO outbox (sink, fingerprint, body, created, next_attempt, priority) VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
    )?;
    for (sink, message) in group::messages(notes, grouping, &active) {
        let body = super::json_text(&message)?;
        // What the row is about, for whoever reads the table: the finding, or the group key.
        let about = match message.only() {
            Some(n) => n.fingerprint(),
            None => format!("group:{}", message.key_text()),
        };
        insert.execute(params![sink, about, body, ts(now), priority(&message)])?;
        queued += 1;
    }
    Ok(queued)
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
    pub fn pending_for(&self, sink: &str, limit: usize) -> Result<Vec<OutboxItem>, StateError> {
        self.pending_rows(
            "SELECT id, sink, body, attempts, next_attempt FROM outbox
             WHERE sink = ?1 AND delivered IS NULL AND claimed IS NULL
             ORDER BY priority DESC, id LIMIT ?2",
            params![sink, i64::try_from(limit).unwrap_or(i64::MAX)],
        )
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
