//! The delivery loop of the running daemon: each sink drains in a task of its own, woken by a cycle
//! or an idle tick, so a paced or stuck sink never holds back another.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::{Dispatcher, IDLE_PASS};
use crate::metrics::Delivery;

impl Dispatcher {
    /// Deliver until `stop` turns true, then make one last pass so the final cycle's notifications go
    /// out before exit. Each sink drains its own queue in a task of its own: a paced or slow sink
    /// (Slack at a message a second, a webhook that times out) never holds back another, and a new
    /// notification for a free sink leaves at once.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut running = tokio::task::JoinSet::new();
        let mut busy: BTreeSet<String> = BTreeSet::new();
        let mut jobs: HashMap<tokio::task::Id, String> = HashMap::new();
        // Work is started on a wake-up or an idle tick; a wake-up that came while jobs ran is
        // answered again when one ends (its sink may have been busy), never in a loop of its own.
        let mut start = true;
        let mut woken_while_busy = false;
        loop {
            if std::mem::take(&mut start) {
                self.start_work(&mut running, &mut busy, &mut jobs, Utc::now());
            }
            // A sink that re-sends state (Alertmanager) may need passes more often than retries do.
            let idle = self
                .sinks()
                .iter()
                .filter_map(|s| s.mirror().map(|m| m.refresh_every()))
                .fold(IDLE_PASS, Duration::min);
            tokio::select! {
                Some(done) = running.join_next_with_id() => {
                    // A job that panicked frees its name too, or its sink would never drain again.
                    let id = match &done {
                        Ok((id, _)) => *id,
                        Err(e) => e.id(),
                    };
                    if let Some(job) = jobs.remove(&id) {
                        busy.remove(&job);
                    }
                    self.update_queue_metric();
                    start = std::mem::take(&mut woken_while_busy);
                }
                _ = self.wake.notified() => {
                    start = true;
                    woken_while_busy = !busy.is_empty();
                }
                _ = tokio::time::sleep(idle) => start = true,
                _ = stop.changed() => {
                    while running.join_next().await.is_some() {}
                    // What is held for `group_wait` goes with the last pass, not after a restart.
                    if let Err(e) = self.state.release_held(Utc::now()) {
                        tracing::error!(error = %e, "cannot release the held messages; they are sent when due after a restart");
                    }
                    self.dispatch().await;
                    return;
                }
            }
        }
    }

    /// Start what is due and not already under way: each sink's drain, each mirror's refresh. Every
    /// job is named (`drain:<sink>`, `refresh:<sink>`) in `busy` until it ends.
    fn start_work(
        self: &Arc<Self>,
        running: &mut tokio::task::JoinSet<()>,
        busy: &mut BTreeSet<String>,
        jobs: &mut HashMap<tokio::task::Id, String>,
        now: DateTime<Utc>,
    ) {
        let sinks = self.sinks();
        for sink in &sinks {
            if sink.mirror().is_none() {
                continue;
            }
            let job = format!("refresh:{}", sink.name());
            if !busy.insert(job.clone()) {
                continue;
            }
            let (me, sink) = (Arc::clone(self), Arc::clone(sink));
            let task = running.spawn(async move {
                if let Some(mirror) = sink.mirror() {
                    if mirror.refresh(now).await.is_err() {
                        me.count(sink.name(), Delivery::Failed);
                    }
                }
            });
            jobs.insert(task.id(), job);
        }
        let queued = match self.state.pending_sinks() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox");
                return;
            }
        };
        for name in queued {
            let job = format!("drain:{name}");
            if !busy.insert(job.clone()) {
                continue;
            }
            let me = Arc::clone(self);
            let sink = sinks.iter().find(|s| s.name() == name).cloned();
            let task = running.spawn(async move {
                me.drain(&name, sink.as_deref(), now).await;
            });
            jobs.insert(task.id(), job);
        }
    }
}
