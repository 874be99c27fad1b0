//! Delivery of the outbox: the dispatcher owns the sinks, delivers each sink's queued notifications in
//! order, retries with backoff, and keeps the notification metrics.
//!
//! Notifications are queued by [`State::commit`] inside the transaction that records the cycle causing
//! them; this module only reads the queue and marks rows. Sinks work in parallel, each in order: a sink
//! that fails stops for this pass so that its messages never overtake each other. A row whose sink is
//! no longer configured (a reload removed it) is counted as `dropped` and never sent elsewhere.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{watch, Notify};

use crate::alerts::Sink;
use crate::finding::Severity;
use crate::metrics::Metrics;
use crate::state::{OutboxItem, State};

/// How long a pass waits for a wake-up before looking at the outbox again (for retries falling due).
const IDLE_PASS: Duration = Duration::from_secs(5);

pub struct Dispatcher {
    state: Arc<State>,
    metrics: Metrics,
    sinks: RwLock<Vec<Arc<dyn Sink>>>,
    wake: Notify,
}

impl Dispatcher {
    pub fn new(state: Arc<State>, metrics: Metrics, sinks: Vec<Arc<dyn Sink>>) -> Self {
        Self {
            state,
            metrics,
            sinks: RwLock::new(sinks),
            wake: Notify::new(),
        }
    }

    fn sinks(&self) -> Vec<Arc<dyn Sink>> {
        // A panic while holding the lock cannot leave a half-written list behind: it is replaced whole.
        self.sinks.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replace the sinks (a configuration reload). What is queued for a removed sink is dropped by the
    /// next pass.
    pub fn set_sinks(&self, sinks: Vec<Arc<dyn Sink>>) {
        *self.sinks.write().unwrap_or_else(|p| p.into_inner()) = sinks;
        self.update_queue_metric();
    }

    /// Each sink's name and minimum severity: where a cycle's notifications are queued.
    pub fn targets(&self) -> Vec<(String, Severity)> {
        self.sinks()
            .iter()
            .map(|s| (s.name().to_string(), s.min_severity()))
            .collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.sinks().iter().map(|s| s.name().to_string()).collect()
    }

    /// Ask the delivery loop for a pass now (a cycle queued something).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Deliver every due outbox row.
    pub async fn dispatch(self: &Arc<Self>) {
        self.dispatch_at(Utc::now()).await
    }

    /// [`dispatch`](Self::dispatch) as if it were `now`, so a test can step past retry backoff.
    pub async fn dispatch_at(self: &Arc<Self>, now: DateTime<Utc>) {
        let pending = match self.state.pending() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox");
                return;
            }
        };
        let mut by_sink: BTreeMap<String, Vec<OutboxItem>> = BTreeMap::new();
        for item in pending {
            by_sink.entry(item.sink.clone()).or_default().push(item);
        }
        let sinks = self.sinks();
        let mut tasks = tokio::task::JoinSet::new();
        for (name, items) in by_sink {
            let me = Arc::clone(self);
            let sink = sinks.iter().find(|s| s.name() == name).cloned();
            tasks.spawn(async move {
                match sink {
                    Some(sink) => me.deliver(sink.as_ref(), items, now).await,
                    None => me.drop_all(&name, items, now),
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        self.update_queue_metric();
    }

    fn count(&self, sink: &str, outcome: &str) {
        self.metrics
            .notifications
            .with_label_values(&[sink, outcome])
            .inc();
    }

    /// The sink is no longer configured: its queue is dropped, loudly, and nothing goes elsewhere.
    fn drop_all(&self, name: &str, items: Vec<OutboxItem>, now: DateTime<Utc>) {
        tracing::warn!(
            sink = name,
            count = items.len(),
            "dropping queued notifications: the sink is no longer configured"
        );
        for item in items {
            self.count(name, "dropped");
            if let Err(e) =
                self.state
                    .mark_delivered(item.id, now, Some("dropped: sink no longer configured"))
            {
                tracing::error!(error = %e, "cannot update the outbox");
            }
        }
    }

    async fn deliver(&self, sink: &dyn Sink, items: Vec<OutboxItem>, now: DateTime<Utc>) {
        let name = sink.name();
        for item in items {
            if item.next_attempt > now {
                break;
            }
            match sink.send(&item.notification).await {
                Ok(()) => {
                    self.count(name, "sent");
                    if let Err(e) = self.state.mark_delivered(item.id, now, None) {
                        tracing::error!(error = %e, "notification sent but the outbox cannot record it; it may be sent again");
                    }
                }
                Err(e) => {
                    self.count(name, "failed");
                    let wait = retry_delay(item.attempts);
                    tracing::warn!(
                        sink = name,
                        attempts = item.attempts + 1,
                        retry_in_s = wait.num_seconds(),
                        error = %e,
                        "notification not delivered; will retry"
                    );
                    if let Err(e) = self.state.mark_failed(item.id, &e.to_string(), now + wait) {
                        tracing::error!(error = %e, "cannot update the outbox");
                    }
                    break;
                }
            }
        }
    }

    /// `notification_queue{sink}` for every configured sink (zero when nothing waits).
    pub fn update_queue_metric(&self) {
        match self.state.queue_depth() {
            Ok(depths) => {
                self.metrics.notification_queue.reset();
                for s in self.sinks() {
                    let n = depths
                        .iter()
                        .find(|(name, _)| name == s.name())
                        .map_or(0, |(_, n)| *n);
                    self.metrics
                        .notification_queue
                        .with_label_values(&[s.name()])
                        .set(n);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the outbox size"),
        }
    }

    /// Deliver until `stop` turns true, then make one last pass so the final cycle's notifications go
    /// out before exit.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            self.dispatch().await;
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(IDLE_PASS) => {}
                _ = stop.changed() => {
                    self.dispatch().await;
                    return;
                }
            }
        }
    }
}

/// Outbox retry backoff: 5 s, 10 s, 20 s … up to 15 minutes; delivery is retried until it succeeds.
fn retry_delay(attempts: u32) -> chrono::Duration {
    let secs = 5u64.saturating_mul(1u64 << attempts.min(10)).min(900);
    chrono::Duration::seconds(secs as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_backoff_doubles_up_to_a_quarter_hour() {
        let secs: Vec<i64> = [0, 1, 2, 7, 8, 30]
            .into_iter()
            .map(|a| retry_delay(a).num_seconds())
            .collect();
        assert_eq!(secs, vec![5, 10, 20, 640, 900, 900]);
    }
}
