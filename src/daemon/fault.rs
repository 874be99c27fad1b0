//! When the state database cannot be written, the daemon must not carry on blind while looking
//! healthy. Decision: it stays up (the registry may still be readable, and a restart would not fix a
//! full disk or another process's lock), and it says so everywhere a person or a machine looks:
//! - `npm_watchdog_state_write_errors_total` counts the failed cycles, and the group's
//!   `check_success` is 0 (with `check_errors_total{reason="state"}`);
//! - `/readyz` answers 503 until a cycle is recorded again;
//! - the error is logged at every failed cycle;
//! - a critical `watchdog-blind` alert about the state database is sent straight to the sinks,
//!   without the outbox, since the outbox lives in the database that cannot be written. It is sent
//!   once per outage to each sink that accepts it (a sink that failed is tried again at the next
//!   failed cycle), and its RESOLVED goes through the outbox, durably, once writes work again.
//!
//! Nothing of a failed cycle was kept, so the next successful cycle sees the same changes again and
//! queues their notifications then: findings are late, never lost.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};

use super::Watchdog;
use crate::alerts::lifecycle::{Outgoing, Plan};
use crate::alerts::{Notification, Status};
use crate::checks::Group;
use crate::fetch::Reason;
use crate::finding::{Finding, Severity};
use crate::state::StateError;

/// An outage of the state database, as the daemon lives through it.
#[derive(Debug)]
pub(super) struct StateFault {
    since: DateTime<Utc>,
    /// The sinks that accepted the alert about it.
    told: BTreeSet<String>,
}

impl Watchdog {
    /// Ready once the first cycles are done and while the last cycle could be recorded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The first runs at start are over: ready, unless the state cannot be written.
    pub(super) fn first_cycles_done(&self) {
        self.started.store(true, Ordering::SeqCst);
        let ok = self.fault().is_none();
        self.ready.store(ok, Ordering::SeqCst);
        if ok {
            tracing::info!("first cycle done; ready");
        } else {
            tracing::error!(
                "first cycle done, but the state database cannot be written: not ready"
            );
        }
    }

    fn fault(&self) -> std::sync::MutexGuard<'_, Option<StateFault>> {
        self.fault.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A cycle of `group` could not be recorded.
    pub(super) async fn state_write_failed(&self, group: Group, e: &StateError) {
        tracing::error!(
            %group,
            error = %e,
            "cannot record the cycle: the state database cannot be written; not ready until it can"
        );
        self.metrics.state_write_failed();
        self.metrics.group_error(group, Reason::State);
        self.metrics.group_ran(group, false, Utc::now());
        self.ready.store(false, Ordering::SeqCst);
        let (since, told) = {
            let mut fault = self.fault();
            let f = fault.get_or_insert_with(|| StateFault {
                since: Utc::now(),
                told: BTreeSet::new(),
            });
            (f.since, f.told.clone())
        };
        let note = self.state_alert(Status::Firing, since, since, &e.to_string());
        let accepted = self.outbox.send_direct(&note, &told).await;
        if let Some(f) = self.fault().as_mut() {
            f.told.extend(accepted);
        }
    }

    /// A cycle was recorded. After an outage: ready again, and RESOLVED queued for every sink that
    /// was told about it.
    pub(super) fn state_write_ok(&self) {
        let Some(fault) = self.fault().take() else {
            return;
        };
        let now = Utc::now();
        tracing::info!(
            down_s = (now - fault.since).num_seconds(),
            "the state database can be written again"
        );
        if !fault.told.is_empty() {
            let note = self.state_alert(Status::Resolved, fault.since, now, "");
            let plan = Plan {
                notifications: vec![Outgoing {
                    note,
                    sinks: fault.told.into_iter().collect(),
                }],
                ..Plan::default()
            };
            if let Err(e) = self.state.commit(&plan, None, now) {
                // Writable a moment ago: say so, and let the next cycle find the fault again.
                tracing::error!(error = %e, "cannot queue the RESOLVED of the state database alert");
            }
            self.outbox.wake();
        }
        if self.started.load(Ordering::SeqCst) {
            self.ready.store(true, Ordering::SeqCst);
        }
    }

    /// The alert about the state database: a `watchdog-blind` finding with its own subject.
    fn state_alert(
        &self,
        status: Status,
        since: DateTime<Utc>,
        at: DateTime<Utc>,
        error: &str,
    ) -> Notification {
        let path = self.bound.1.display();
        let finding = Finding {
            check: "watchdog-blind".into(),
            subject_key: "state".into(),
            subject: format!("state database {path}"),
            severity: Severity::Critical,
            summary: format!("npm-watchdog cannot write its state database {path}: {error}"),
            why: "Every finding and every notification is recorded there before it is sent. \
                      While it cannot be written, new tokens, publishes and team changes are \
                      still read but neither recorded nor alerted; they will be once it can."
                .into(),
            fix: "Read the error: free disk space, restore write permission on the file and \
                      its folder, or stop the other process holding a lock on it. The daemon \
                      recovers by itself at the next cycle; `/readyz` answers 200 again then."
                .into(),
            dod: None,
        };
        Notification::change(status, finding, since, at)
    }
}
