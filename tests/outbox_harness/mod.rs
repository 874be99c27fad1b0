#![allow(dead_code)]
//! The outbox as the daemon runs it, for sink tests: a state database in a temporary folder, a
//! dispatcher over the given sinks, notifications queued as a cycle queues them, and delivery passes
//! stepped by hand (`pass(after)` runs one as if `after` had gone by, to step past retry backoff).
//!
//! Include it from an integration test file with `mod outbox_harness;`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use npm_watchdog::alerts::{Notification, Route, Sink, Target};
use npm_watchdog::alerts::{Outgoing, Plan};
use npm_watchdog::delivery::Dispatcher;
use npm_watchdog::metrics::Metrics;
use npm_watchdog::state::State;

pub struct Outbox {
    pub dir: tempfile::TempDir,
    pub state: Arc<State>,
    pub metrics: Metrics,
    pub dispatcher: Arc<Dispatcher>,
    /// The moment the outbox was made; passes are timed from it.
    pub now: DateTime<Utc>,
}

impl Outbox {
    /// A fresh state database in `dir` and a dispatcher delivering through `sinks`, each taking
    /// everything (the default route).
    pub fn new(sinks: Vec<Arc<dyn Sink>>, dir: tempfile::TempDir) -> Outbox {
        let state = Arc::new(State::open(&dir.path().join("state.db")).expect("state"));
        let metrics = Metrics::new();
        let targets = sinks
            .into_iter()
            .map(|sink| Target {
                sink,
                route: Route::default(),
                grouping: None,
            })
            .collect();
        let dispatcher = Arc::new(Dispatcher::new(
            Arc::clone(&state),
            metrics.clone(),
            targets,
        ));
        Outbox {
            dir,
            state,
            metrics,
            dispatcher,
            now: Utc::now(),
        }
    }

    /// Queue each notification for the named sinks, in order, as one cycle's commit does.
    pub fn queue(&self, notes: Vec<Notification>, sinks: &[&str]) {
        let plan = Plan {
            upserts: vec![],
            touched: vec![],
            resolved: vec![],
            notifications: notes
                .into_iter()
                .map(|note| Outgoing {
                    note,
                    sinks: sinks.iter().map(|s| s.to_string()).collect(),
                })
                .collect(),
        };
        self.state.commit(&plan, None, self.now).expect("queued");
    }

    /// One delivery pass, as if `after` had passed since the outbox was made.
    pub async fn pass(&self, after: Duration) {
        self.dispatcher.dispatch_at(self.at(after)).await;
    }

    /// The moment `after` past the start.
    pub fn at(&self, after: Duration) -> DateTime<Utc> {
        self.now + chrono::Duration::from_std(after).expect("duration")
    }

    /// `notifications_total{sink, outcome}`, as a scrape shows it (0 when there is no series).
    pub fn count(&self, sink: &str, outcome: &str) -> u64 {
        let (sink, outcome) = (format!("sink=\"{sink}\""), format!("outcome=\"{outcome}\""));
        self.metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("npm_watchdog_notifications_total{"))
            .find(|l| l.contains(&sink) && l.contains(&outcome))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Rows still waiting for `sink`.
    pub fn waiting(&self, sink: &str) -> i64 {
        self.state
            .queue_depth()
            .expect("queue")
            .iter()
            .find(|(s, _)| s == sink)
            .map_or(0, |(_, n)| *n)
    }

    /// What the outbox recorded with each row queued for `sink`, oldest first: whether it is closed
    /// (delivered or rejected) and its `last_error`, read straight from the state database.
    pub fn rows(&self, sink: &str) -> Vec<(bool, Option<String>)> {
        let c = rusqlite::Connection::open(self.dir.path().join("state.db")).expect("open");
        let mut q = c
            .prepare(
                "SELECT delivered IS NOT NULL, last_error FROM outbox WHERE sink = ?1 ORDER BY id",
            )
            .expect("prepare");
        let rows = q
            .query_map([sink], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<Vec<_>, _>>()
            .expect("rows");
        rows
    }

    /// Every byte the state database and its journal hold, for searching.
    pub fn database_bytes(&self) -> String {
        let mut all = Vec::new();
        for entry in std::fs::read_dir(self.dir.path()).expect("dir") {
            let path = entry.expect("entry").path();
            if path.is_file() {
                all.extend(std::fs::read(&path).expect("read"));
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    }
}
