//! The outbox table: notifications waiting for a sink. Rows are added inside the transaction that
//! records the cycle causing them ([`queue`], called from [`State::commit`]), so a notification is
//! never lost and never queued twice for one state change; [`crate::outbox`] delivers them.

use chrono::{DateTime, Utc};
use rusqlite::{params, Transaction};

use super::{from_ts, ts, State, StateError};
use crate::alerts::Notification;
use crate::finding::Severity;

/// One undelivered notification for one sink.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub id: i64,
    pub sink: String,
    pub notification: Notification,
    pub attempts: u32,
    pub next_attempt: DateTime<Utc>,
}

/// Queue each encoded notification for every sink whose minimum severity it reaches. Returns how many
/// rows were added.
pub(super) fn queue(
    tx: &Transaction<'_>,
    notes: &[(&Notification, String)],
    sinks: &[(String, Severity)],
    now: DateTime<Utc>,
) -> rusqlite::Result<usize> {
    let mut queued = 0;
    for (n, body) in notes {
        for (sink, min) in sinks {
            if n.finding.severity < *min {
                continue;
            }
            tx.execute(
                "INSERT INTO outbox (sink, fingerprint, body, created, next_attempt) VALUES (?1, ?2, ?3, ?4, ?4)",
                params![sink, n.fingerprint(), body, ts(now)],
            )?;
            queued += 1;
        }
    }
    Ok(queued)
}

impl State {
    /// Every undelivered outbox row, oldest first.
    pub fn pending(&self) -> Result<Vec<OutboxItem>, StateError> {
        self.rows::<(i64, String, String, u32, i64)>(
            "SELECT id, sink, body, attempts, next_attempt FROM outbox WHERE delivered IS NULL ORDER BY id",
        )?
        .into_iter()
            .map(|(id, sink, body, attempts, next)| {
                let notification = self.decode(&format!("outbox row {id}"), &body)?;
                Ok(OutboxItem {
                    id,
                    sink,
                    notification,
                    attempts,
                    next_attempt: from_ts(next),
                })
            })
            .collect()
    }

    pub fn mark_delivered(
        &self,
        id: i64,
        now: DateTime<Utc>,
        note: Option<&str>,
    ) -> Result<(), StateError> {
        self.with(|c| {
            c.execute(
                "UPDATE outbox SET delivered = ?2, attempts = attempts + 1, last_error = ?3 WHERE id = ?1",
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
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt = ?3 WHERE id = ?1",
                params![id, error, ts(next_attempt)],
            )
            .map(|_| ())
        })
    }

    /// Undelivered rows per sink.
    pub fn queue_depth(&self) -> Result<Vec<(String, i64)>, StateError> {
        self.rows("SELECT sink, COUNT(*) FROM outbox WHERE delivered IS NULL GROUP BY sink")
    }

    /// Forget delivered outbox rows older than `before`, so the file does not grow forever.
    pub fn prune_delivered(&self, before: DateTime<Utc>) -> Result<usize, StateError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM outbox WHERE delivered IS NOT NULL AND delivered < ?1",
                [ts(before)],
            )
        })
    }
}
