//! Delivery of the outbox: the dispatcher owns the sinks and their routes, delivers each sink's queued
//! notifications in order, retries with backoff, and keeps the notification metrics.
//!
//! Notifications are queued by [`State::commit`] inside the transaction that records the cycle causing
//! them; this module only reads the queue and marks rows. Each row is claimed before its sink is
//! called and marked after, so a crash mid-send resends that one message (at-least-once) and never
//! loses it. Sinks work in parallel, each in order: a sink that fails stops for this pass so that its
//! messages never overtake each other, and waits at least as long as the receiver's `Retry-After`. A
//! message the receiver refuses for good (PagerDuty's 400, Slack's `channel_not_found`) is recorded
//! with the reason, counted as `rejected` and logged as an error; it is not retried forever and does
//! not hold back the next one. A row whose sink is no longer configured (a reload removed it) is
//! counted as `dropped` and never sent elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::alerts::{
    Failure, Grouping, Notification, Route, Sink, SinkError, SinkGrouping, Target,
};
use crate::metrics::{Delivery, Metrics};
use crate::state::{OutboxItem, State};

mod run;

/// How long a pass waits for a wake-up before looking at the outbox again (for retries falling due).
const IDLE_PASS: Duration = Duration::from_secs(5);
/// The longest a receiver's `Retry-After` may hold a sink back: one that asks for a day is not
/// believed (the outbox's own backoff still applies).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

pub struct Dispatcher {
    state: Arc<State>,
    metrics: Metrics,
    targets: RwLock<Vec<Target>>,
    wake: Notify,
}

/// Outbox rows read at a time per sink: a backlog is worked through in slices instead of being
/// decoded whole, and the head of the queue (where a new critical message goes) is looked at again
/// after each slice.
const DRAIN_SLICE: usize = 32;

impl Dispatcher {
    pub fn new(state: Arc<State>, metrics: Metrics, targets: Vec<Target>) -> Self {
        Self {
            state,
            metrics,
            targets: RwLock::new(targets),
            wake: Notify::new(),
        }
    }

    fn targets(&self) -> Vec<Target> {
        // A panic while holding the lock cannot leave a half-written list behind: it is replaced whole.
        self.targets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn sinks(&self) -> Vec<Arc<dyn Sink>> {
        self.targets().into_iter().map(|t| t.sink).collect()
    }

    /// Replace the sinks (a configuration reload). What is queued for a removed sink is dropped by the
    /// next pass.
    pub fn set_sinks(&self, targets: Vec<Target>) {
        *self.targets.write().unwrap_or_else(|p| p.into_inner()) = targets;
        self.update_queue_metric();
    }

    /// Each sink's name and route: where a cycle's notifications are queued.
    pub fn routes(&self) -> Vec<(String, Route)> {
        self.targets()
            .into_iter()
            .map(|t| (t.sink.name().to_string(), t.route))
            .collect()
    }

    /// How each sink groups a run's notifications (see [`crate::alerts::group`]); `groups` names
    /// each check's group.
    pub fn grouping(&self, groups: BTreeMap<String, String>) -> Grouping {
        let sinks = self
            .targets()
            .into_iter()
            .filter_map(|t| {
                let g = t.grouping?;
                Some((
                    t.sink.name().to_string(),
                    SinkGrouping {
                        by: g.by,
                        max_items: g.max_items,
                        wait: g.wait,
                        route: t.route,
                    },
                ))
            })
            .collect();
        Grouping { sinks, groups }
    }

    pub fn names(&self) -> Vec<String> {
        self.sinks().iter().map(|s| s.name().to_string()).collect()
    }

    /// Whether any sink mirrors what is firing (see [`Mirror`](crate::alerts::Mirror)).
    pub fn any_mirrors(&self) -> bool {
        self.sinks().iter().any(|s| s.mirror().is_some())
    }

    /// Tell the sinks that mirror what is firing (Alertmanager) which findings are active now, each
    /// sink only what its route wants.
    pub fn firing(&self, active: &[Notification]) {
        for t in self.targets() {
            let Some(mirror) = t.sink.mirror() else {
                continue;
            };
            let wanted = active
                .iter()
                .filter(|n| t.route.wants(&n.finding))
                .cloned()
                .collect();
            mirror.firing(wanted);
        }
    }

    /// Deliver `note` straight to every sink whose route wants it, except those in `skip`, without
    /// the outbox: for the one alert that must get out when the state database cannot be written.
    /// Returns the names of the sinks that accepted it.
    pub async fn send_direct(
        &self,
        note: &Notification,
        skip: &BTreeSet<String>,
    ) -> BTreeSet<String> {
        let mut accepted = BTreeSet::new();
        for t in self.targets() {
            let name = t.sink.name().to_string();
            if skip.contains(&name) || !t.route.wants(&note.finding) {
                continue;
            }
            match t.sink.send(note).await {
                Ok(()) => {
                    self.count(&name, Delivery::Sent);
                    accepted.insert(name);
                }
                Err(e) => {
                    self.count(
                        &name,
                        if e.is_rejected() {
                            Delivery::Rejected
                        } else {
                            Delivery::Failed
                        },
                    );
                    tracing::error!(sink = %name, error = %e, "cannot send the alert about the state database");
                }
            }
        }
        accepted
    }

    /// Rows a previous process claimed and never finished are released to be sent again. Returns how
    /// many, for the start-up log.
    pub fn release_interrupted(&self) -> usize {
        match self.state.release_interrupted() {
            Ok(0) => 0,
            Ok(n) => {
                tracing::warn!(
                    count = n,
                    "notifications were being sent when npm-watchdog last stopped; sending them again (a receiver may see them twice)"
                );
                n
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox");
                0
            }
        }
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
        let queued = match self.state.pending_sinks() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox");
                return;
            }
        };
        let sinks = self.sinks();
        let mut tasks = tokio::task::JoinSet::new();
        for sink in &sinks {
            let (me, sink) = (Arc::clone(self), Arc::clone(sink));
            tasks.spawn(async move {
                let Some(mirror) = sink.mirror() else { return };
                if mirror.refresh(now).await.is_err() {
                    me.count(sink.name(), Delivery::Failed);
                }
            });
        }
        for name in queued {
            let me = Arc::clone(self);
            let sink = sinks.iter().find(|s| s.name() == name).cloned();
            tasks.spawn(async move { me.drain(&name, sink.as_deref(), now).await });
        }
        while tasks.join_next().await.is_some() {}
        self.update_queue_metric();
    }

    fn count(&self, sink: &str, outcome: Delivery) {
        self.metrics.notification(sink, outcome);
    }

    /// Work through the queue of the sink `name` in order, a slice at a time, until it is empty or
    /// the sink must wait (a failed send, a retry not yet due). A sink no longer configured has its
    /// rows dropped.
    async fn drain(&self, name: &str, sink: Option<&dyn Sink>, now: DateTime<Utc>) {
        // Each slice is read from the head of the queue again, so a critical message queued while a
        // backlog of warnings drains goes out after the current slice, not after the backlog. Rows
        // handled in this pass are not handled twice, even if the outbox could not record them.
        let mut handled = std::collections::HashSet::new();
        loop {
            let items = match self.state.pending_for(name, DRAIN_SLICE, now) {
                Ok(items) => items,
                Err(e) => {
                    tracing::error!(error = %e, sink = name, "cannot read the outbox");
                    return;
                }
            };
            let whole = items.len() == DRAIN_SLICE;
            // A row seen again in this pass is one the outbox could not record as done: leave it
            // to the next pass rather than send it again now.
            let items: Vec<OutboxItem> =
                items.into_iter().filter(|i| handled.insert(i.id)).collect();
            if items.is_empty() {
                return;
            }
            let went_on = match sink {
                Some(sink) => self.deliver(sink, items, now).await,
                None => {
                    self.drop_all(name, items, now);
                    true
                }
            };
            if !(went_on && whole) {
                return;
            }
        }
    }

    fn drop_all(&self, name: &str, items: Vec<OutboxItem>, now: DateTime<Utc>) {
        tracing::warn!(
            sink = name,
            count = items.len(),
            "dropping queued notifications: the sink is no longer configured"
        );
        for item in items {
            self.count(name, Delivery::Dropped);
            if let Err(e) =
                self.state
                    .mark_delivered(item.id, now, Some("dropped: sink no longer configured"))
            {
                tracing::error!(error = %e, "cannot update the outbox");
            }
        }
    }

    /// Send `items` in order. Returns whether it got through all of them; `false` when the sink
    /// must wait (the first that failed or is not yet due holds back what follows, so order is kept).
    async fn deliver(&self, sink: &dyn Sink, items: Vec<OutboxItem>, now: DateTime<Utc>) -> bool {
        let name = sink.name();
        for item in items {
            if item.next_attempt > now {
                return false;
            }
            match self.state.claim(item.id, now) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    // Without a claim a crash could not tell this send from one never tried: wait.
                    tracing::error!(error = %e, "cannot claim an outbox row; delivery waits");
                    return false;
                }
            }
            match sink.deliver(&item.message).await {
                Ok(()) => {
                    self.count(name, Delivery::Sent);
                    self.metrics.notified(name, item.message.total);
                    if let Err(e) = self.state.mark_delivered(item.id, now, None) {
                        tracing::error!(error = %e, "notification sent but the outbox cannot record it; it may be sent again");
                    }
                    // The queue gauge follows a backlog as it drains, not only at the end of it.
                    self.update_queue_metric();
                }
                Err(e) if e.is_rejected() => {
                    // Refused for good, perhaps for its size or a name the receiver chokes on: the
                    // reduced form (names cut, fewer findings, the counts kept) is tried once.
                    let reduced = match item.message.reduced() {
                        Some(r) => sink.deliver(&r).await.map(|()| r.total),
                        None => Err(e),
                    };
                    match reduced {
                        // The reduced form met a passing fault: the row waits and is tried again.
                        Err(e) if !e.is_rejected() => {
                            self.count(name, Delivery::Failed);
                            let wait = retry_delay(item.attempts, &e);
                            if let Err(e) =
                                self.state.mark_failed(item.id, &e.to_string(), now + wait)
                            {
                                tracing::error!(error = %e, "cannot update the outbox");
                            }
                            return false;
                        }
                        Ok(total) => {
                            self.count(name, Delivery::Reduced);
                            self.metrics.notified(name, total);
                            tracing::warn!(
                                sink = name,
                                about = %about(&item.message),
                                "the receiver refused a notification; its reduced form was accepted"
                            );
                            let note = "delivered reduced: the full message was refused";
                            if let Err(e) = self.state.mark_delivered(item.id, now, Some(note)) {
                                tracing::error!(error = %e, "cannot update the outbox");
                            }
                        }
                        Err(e) => self.rejected(name, &item, &e, now),
                    }
                }
                Err(e) => {
                    self.count(name, Delivery::Failed);
                    let wait = retry_delay(item.attempts, &e);
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
                    return false;
                }
            }
        }
        true
    }

    /// The receiver refused the message for good: keep the reason with the row, count it and say so
    /// loudly. Retrying would only be refused again and hold back what follows.
    fn rejected(&self, name: &str, item: &OutboxItem, e: &SinkError, now: DateTime<Utc>) {
        self.count(name, Delivery::Rejected);
        tracing::error!(
            sink = name,
            about = %about(&item.message),
            status = item.message.status.as_str(),
            error = %e,
            "notification rejected by the receiver; it will not be retried: fix the sink's configuration"
        );
        let note = format!("rejected: {e}");
        if let Err(e) = self.state.mark_delivered(item.id, now, Some(&note)) {
            tracing::error!(error = %e, "cannot update the outbox");
        }
    }

    /// `notification_queue{sink}` for every configured sink (zero when nothing waits).
    pub fn update_queue_metric(&self) {
        match self.state.queue_depth() {
            Ok(depths) => {
                let sinks = self.sinks();
                self.metrics.set_queues(sinks.iter().map(|s| {
                    let n = depths
                        .iter()
                        .find(|(name, _)| name == s.name())
                        .map_or(0, |(_, n)| *n);
                    (s.name(), n)
                }));
            }
            Err(e) => tracing::error!(error = %e, "cannot read the outbox size"),
        }
    }
}

/// What a message is about, for a log line: its one finding, or its group and how many.
fn about(m: &crate::alerts::Message) -> String {
    match m.only() {
        Some(n) => format!("{}: {}", n.finding.check, n.finding.subject),
        None => format!("{} finding(s) [{}]", m.total, m.key_text()),
    }
}

/// Outbox retry backoff: 5 s, 10 s, 20 s … up to 15 minutes, or the receiver's `Retry-After` when
/// that is longer (up to an hour); delivery is retried until it succeeds.
fn retry_delay(attempts: u32, e: &SinkError) -> chrono::Duration {
    let secs = 5u64.saturating_mul(1u64 << attempts.min(10)).min(900);
    let asked = match e.failure {
        Failure::Retry { after: Some(a) } => a.min(MAX_RETRY_AFTER).as_secs(),
        _ => 0,
    };
    chrono::Duration::seconds(secs.max(asked) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_backoff_doubles_up_to_a_quarter_hour() {
        let plain = SinkError::new("down");
        let secs: Vec<i64> = [0, 1, 2, 7, 8, 30]
            .into_iter()
            .map(|a| retry_delay(a, &plain).num_seconds())
            .collect();
        assert_eq!(secs, vec![5, 10, 20, 640, 900, 900]);
        let slow = |s| SinkError::retry_after("429", Some(Duration::from_secs(s)));
        assert_eq!(retry_delay(0, &slow(30)).num_seconds(), 30);
        assert_eq!(retry_delay(3, &slow(30)).num_seconds(), 40);
        assert_eq!(retry_delay(0, &slow(86_400)).num_seconds(), 3600);
    }
}
