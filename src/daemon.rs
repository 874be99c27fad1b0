//! The long-running daemon: a schedule per check group, the notification dispatcher, the HTTP server,
//! and an orderly stop.
//!
//! One cycle of a group reads its sources, runs its checks, plans the alert lifecycle and writes the
//! outcome (findings, outbox rows, seen tokens) in one transaction; only then is the dispatcher woken to
//! deliver. Runs of one group never overlap: a tick that finds the previous run still going is skipped.
//! On SIGTERM/SIGINT the scheduler stops, in-flight runs finish, the outbox gets one last delivery
//! pass, and the state file is closed, all within about ten seconds.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{watch, Mutex, Notify};
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::alerts::{self, lifecycle, Sink, SinkError};
use crate::checks::{self, Snapshot};
use crate::collect;
use crate::config::Schedule;
use crate::metrics::Metrics;
use crate::registry::{RegistryClient, RegistryError};
use crate::runtime::Runtime;
use crate::server;
use crate::state::{OutboxItem, State, StateError};

/// Check groups the daemon knows, each with its own schedule (`schedule.<group>`).
pub const GROUPS: &[&str] = &["tokens", "packages", "org"];

/// What one cycle read.
#[derive(Default)]
struct Gathered {
    tokens: Option<Vec<crate::registry::model::Token>>,
    profile: Option<crate::registry::model::Profile>,
    packages: Option<checks::PackageSet>,
    orgs: Option<Vec<crate::registry::package::OrgView>>,
    previous_maintainers: Option<BTreeMap<String, Vec<String>>>,
    /// The registry key of the daemon's own token, when it can be derived (npmjs.com: SHA-512).
    own_key: Option<String>,
    errors: Vec<String>,
}

/// How long an orderly stop may take in all (systemd's default stop timeout is far longer).
const STOP_BUDGET: Duration = Duration::from_secs(9);
/// Delivered outbox rows are kept this long for inspection, then pruned.
const KEEP_DELIVERED: chrono::Duration = chrono::Duration::days(30);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("alert sink: {0}")]
    Sink(#[from] SinkError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("scheduler: {0}")]
    Scheduler(String),
}

pub struct Watchdog {
    rt: Runtime,
    client: RegistryClient,
    state: Arc<State>,
    metrics: Metrics,
    sinks: Vec<Arc<dyn Sink>>,
    wake: Notify,
    ready: Arc<AtomicBool>,
    locks: BTreeMap<&'static str, Mutex<()>>,
}

impl Watchdog {
    pub fn new(rt: Runtime, state: State, metrics: Metrics) -> Result<Self, DaemonError> {
        let client = rt.client(metrics.clone())?;
        let sinks = alerts::build_sinks(&rt.config.alerts)?;
        Ok(Self {
            rt,
            client,
            state: Arc::new(state),
            metrics,
            sinks,
            wake: Notify::new(),
            ready: Arc::new(AtomicBool::new(false)),
            locks: GROUPS.iter().map(|g| (*g, Mutex::new(()))).collect(),
        })
    }

    /// The groups with something to watch: tokens always, packages when `watch` names any source,
    /// org when `watch.orgs` is set.
    pub fn active_groups(&self) -> Vec<&'static str> {
        let w = &self.rt.config.watch;
        GROUPS
            .iter()
            .copied()
            .filter(|g| match *g {
                "packages" => !(w.users.is_empty() && w.orgs.is_empty() && w.packages.is_empty()),
                "org" => !w.orgs.is_empty(),
                _ => true,
            })
            .collect()
    }

    fn schedule_of(&self, group: &str) -> &Schedule {
        let s = &self.rt.config.schedule;
        match group {
            "packages" => &s.packages,
            "org" => &s.org,
            _ => &s.tokens,
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Run one cycle of `group` unless one is already running.
    pub async fn run_group(&self, group: &str) {
        let Some(lock) = self.locks.get(group) else {
            tracing::error!(group, "unknown check group");
            return;
        };
        let Ok(_guard) = lock.try_lock() else {
            tracing::info!(group, "previous run still in progress; skipping this tick");
            return;
        };
        let started = Instant::now();
        let result = match GROUPS.iter().find(|g| **g == group) {
            Some(g) => self.cycle(g).await,
            None => Ok(()),
        };
        self.metrics
            .check_duration
            .with_label_values(&[group])
            .set(started.elapsed().as_secs_f64());
        if let Err(e) = result {
            // The state file could not be written: nothing of this cycle was kept, so the next
            // cycle will see the same changes again and nothing is lost.
            tracing::error!(group, error = %e, "cannot record the cycle");
            self.metrics
                .check_success
                .with_label_values(&[group])
                .set(0);
        }
        self.wake.notify_one();
    }

    /// Read what `group`'s checks look at. Errors are collected; a source that failed is `None`, or
    /// (packages, orgs) its last stored copy.
    async fn gather(&self, group: &str) -> Result<Gathered, StateError> {
        let mut g = Gathered::default();
        let cred = match self.rt.credential() {
            Ok(c) => c,
            Err(e) => {
                g.errors.push(format!("credential: {e}"));
                if group == "org" {
                    // The org checks may still look at the stored packuments for retired maintainers.
                    g.packages = Some(self.stored_packages()?);
                }
                return Ok(g);
            }
        };
        match group {
            "tokens" => {
                let (t, p) =
                    tokio::join!(self.client.list_tokens(&cred), self.client.profile(&cred));
                g.tokens = t.map_err(|e| g.errors.push(e.to_string())).ok();
                g.profile = p.map_err(|e| g.errors.push(e.to_string())).ok();
            }
            "packages" => {
                let found = collect::discover(&self.client, &self.rt.config.watch, &cred).await;
                let mut names = found.packages;
                if found.errors.is_empty() {
                    self.state.retain_packuments(&names)?;
                } else {
                    // A listing failed: keep watching what was known rather than dropping it.
                    names.extend(self.state.packuments()?.into_keys());
                    g.errors.extend(found.errors);
                }
                let read = collect::read_packages(
                    &self.client,
                    &names,
                    &cred,
                    Some(&self.state),
                    self.rt.config.registry.concurrency,
                    self.rt.config.policy.trusted_publishing_since,
                )
                .await?;
                tracing::debug!(
                    fresh = read.fresh,
                    not_modified = read.not_modified,
                    bytes = read.bytes,
                    "packuments read"
                );
                g.errors.extend(read.errors);
                g.previous_maintainers = Some(read.previous_maintainers);
                g.packages = Some(read.set);
            }
            "org" => {
                let (views, errors) = collect::read_orgs(
                    &self.client,
                    &self.rt.config.watch.orgs,
                    &cred,
                    Some(&self.state),
                )
                .await?;
                g.errors.extend(errors);
                g.orgs = Some(views);
                g.packages = Some(self.stored_packages()?);
            }
            _ => {}
        }
        Ok(g)
    }

    fn stored_packages(&self) -> Result<checks::PackageSet, StateError> {
        let cache = self.state.provenance_cache()?;
        Ok(checks::PackageSet {
            packuments: self
                .state
                .packuments()?
                .into_iter()
                .map(|(n, (_, p))| (n, p))
                .collect(),
            provenance: cache
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect(),
        })
    }

    /// One cycle of a group: read, record health, run its checks, plan the alerts, commit.
    async fn cycle(&self, group: &'static str) -> Result<(), StateError> {
        let now = Utc::now();
        let g = self.gather(group).await?;
        let error = (!g.errors.is_empty()).then(|| g.errors.join("; "));
        let was_failing = self
            .state
            .group_health()?
            .iter()
            .any(|h| h.group == group && h.consecutive_failures > 0);
        let health = self.state.record_run(group, error.as_deref(), now)?;
        match &error {
            Some(e) => tracing::warn!(
                group,
                failures = health.consecutive_failures,
                error = %e,
                "check group could not read everything; keeping earlier findings for what it could not read"
            ),
            None if was_failing => tracing::info!(group, "check group recovered"),
            None => tracing::debug!(group, "check group ran"),
        }
        let all_health = self.state.group_health()?;
        let seen = self.state.seen_tokens()?;
        let snap = Snapshot {
            tokens: g.tokens.as_deref(),
            profile: g.profile.as_ref(),
            seen_tokens: seen.as_ref(),
            health: &all_health,
            packages: g.packages.as_ref(),
            orgs: g.orgs.as_deref(),
            previous_maintainers: g.previous_maintainers.as_ref(),
            ..Snapshot::new(now, &self.rt.registry)
        };
        let (mut findings, mut ran) = checks::run_group(group, &snap, &self.rt.config.policy);
        let (health_findings, health_ran) =
            checks::run_group(checks::HEALTH_GROUP, &snap, &self.rt.config.policy);
        findings.extend(health_findings);
        ran.extend(health_ran);
        let previous = self.state.active(Some(&ran))?;
        let events: HashSet<&str> = checks::all()
            .iter()
            .filter(|c| c.event)
            .map(|c| c.id)
            .collect();
        let plan = lifecycle::plan(previous, findings, &events, now, &self.rt.config.alerts);
        for n in &plan.notifications {
            tracing::info!(
                status = n.status.as_str(),
                reminder = n.reminder,
                check = %n.finding.check,
                severity = %n.finding.severity,
                subject = %n.finding.subject,
                "finding {}",
                if n.status == alerts::Status::Firing { "fires" } else { "resolved" }
            );
        }
        let sinks: Vec<(String, checks::Severity)> = self
            .sinks
            .iter()
            .map(|s| (s.name().to_string(), s.min_severity()))
            .collect();
        let keys = g.tokens.as_deref().map(crate::registry::model::keys);
        self.state.commit(&plan, &sinks, keys.as_ref(), now)?;
        self.state.prune_delivered(now - KEEP_DELIVERED)?;

        if let Some(t) = &g.tokens {
            self.metrics.set_tokens(t);
            let policy = &self.rt.config.policy;
            let own = t.iter().find(|t| {
                g.own_key.as_deref() == Some(t.key.as_str())
                    || policy
                        .allow_tokens
                        .iter()
                        .any(|a| a.own && a.matches(&t.key))
            });
            self.metrics.set_own_token(own);
        }
        if group == "packages" {
            if let Some(p) = &g.packages {
                self.metrics.set_packages(p);
            }
        }
        self.metrics.set_findings(&self.state.finding_counts()?);
        let ok = error.is_none();
        self.metrics
            .check_success
            .with_label_values(&[group])
            .set(i64::from(ok));
        if ok {
            self.metrics
                .check_last_success
                .with_label_values(&[group])
                .set(now.timestamp() as f64);
        }
        Ok(())
    }

    /// Deliver every due outbox row; sinks work in parallel, each in order. A sink that fails stops
    /// for this pass so that its messages never overtake each other.
    pub async fn dispatch(self: &Arc<Self>) {
        self.dispatch_at(Utc::now()).await
    }

    /// [`dispatch`](Self::dispatch) as if it were `now`, so a test can step past retry backoff.
    pub async fn dispatch_at(self: &Arc<Self>, now: chrono::DateTime<Utc>) {
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
        let mut tasks = tokio::task::JoinSet::new();
        for (name, items) in by_sink {
            let wd = Arc::clone(self);
            tasks.spawn(async move { wd.deliver(&name, items, now).await });
        }
        while tasks.join_next().await.is_some() {}
        self.update_queue_metric();
    }

    async fn deliver(&self, name: &str, items: Vec<OutboxItem>, now: chrono::DateTime<Utc>) {
        let sink = self.sinks.iter().find(|s| s.name() == name).cloned();
        for item in items {
            let Some(sink) = &sink else {
                tracing::warn!(
                    sink = name,
                    "dropping a queued notification: the sink is no longer configured"
                );
                self.metrics
                    .notifications
                    .with_label_values(&[name, "dropped"])
                    .inc();
                if let Err(e) = self.state.mark_delivered(
                    item.id,
                    now,
                    Some("dropped: sink no longer configured"),
                ) {
                    tracing::error!(error = %e, "cannot update the outbox");
                }
                continue;
            };
            if item.next_attempt > now {
                break;
            }
            match sink.send(&item.notification).await {
                Ok(()) => {
                    self.metrics
                        .notifications
                        .with_label_values(&[name, "sent"])
                        .inc();
                    if let Err(e) = self.state.mark_delivered(item.id, now, None) {
                        tracing::error!(error = %e, "notification sent but the outbox cannot record it; it may be sent again");
                    }
                }
                Err(e) => {
                    self.metrics
                        .notifications
                        .with_label_values(&[name, "failed"])
                        .inc();
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

    fn update_queue_metric(&self) {
        match self.state.queue_depth() {
            Ok(depths) => {
                for s in &self.sinks {
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

    async fn dispatch_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            self.dispatch().await;
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = stop.changed() => {
                    // One last pass so the final cycle's notifications go out before exit.
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

fn job(wd: &Arc<Watchdog>, group: &'static str, schedule: &Schedule) -> Result<Job, DaemonError> {
    let wd = Arc::clone(wd);
    let run = move |_id, _sched| {
        let wd = Arc::clone(&wd);
        Box::pin(async move { wd.run_group(group).await })
            as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
    };
    match schedule {
        Schedule::Every(d) => Job::new_repeated_async(d.0, run),
        Schedule::Cron(c) => Job::new_async(c.as_str(), run),
    }
    .map_err(|e| DaemonError::Scheduler(format!("{group}: {e}")))
}

/// Run the daemon until `shutdown` completes.
pub async fn run(rt: Runtime, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let state = State::open(&rt.state_path)?;
    let metrics = Metrics::new();
    let listen = rt.config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: listen,
            source,
        })?;
    let bound = listener.local_addr().unwrap_or(listen);
    let wd = Arc::new(Watchdog::new(rt, state, metrics)?);
    log_start(&wd, bound);
    wd.metrics.set_findings(&wd.state.finding_counts()?);
    wd.update_queue_metric();

    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(server::serve(
        listener,
        wd.metrics.clone(),
        Arc::clone(&wd.ready),
        stop_rx.clone(),
    ));
    let dispatcher = tokio::spawn(Arc::clone(&wd).dispatch_loop(stop_rx.clone()));

    let active = wd.active_groups();
    // First runs at start, then on schedule.
    let first = {
        let wd = Arc::clone(&wd);
        let active = active.clone();
        tokio::spawn(async move {
            for g in active {
                wd.run_group(g).await;
            }
            wd.ready.store(true, Ordering::SeqCst);
            tracing::info!("first cycle done; ready");
        })
    };
    let mut sched = JobScheduler::new()
        .await
        .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
    for group in active {
        let schedule = wd.schedule_of(group);
        sched
            .add(job(&wd, group, schedule)?)
            .await
            .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
    }
    let heartbeat = crate::systemd::Heartbeat::default();
    heartbeat.beat();
    let pinger = match crate::systemd::watchdog_interval() {
        Some(interval) => {
            let period = (interval / 4).max(Duration::from_millis(500));
            let beat = heartbeat.clone();
            let job = Job::new_repeated_async(period, move |_id, _sched| {
                let beat = beat.clone();
                Box::pin(async move { beat.beat() })
                    as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
            })
            .map_err(|e| DaemonError::Scheduler(format!("watchdog heartbeat: {e}")))?;
            sched
                .add(job)
                .await
                .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
            tracing::info!(
                interval_s = interval.as_secs_f64(),
                "systemd watchdog enabled"
            );
            Some(tokio::spawn(crate::systemd::pinger(
                interval,
                heartbeat,
                stop_rx.clone(),
            )))
        }
        None => None,
    };
    sched
        .start()
        .await
        .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
    crate::systemd::ready();

    shutdown.await;
    crate::systemd::stopping();
    tracing::info!("stopping: finishing running checks and deliveries");
    let deadline = Instant::now() + STOP_BUDGET;
    if let Err(e) = sched.shutdown().await {
        tracing::warn!(error = %e, "scheduler did not stop cleanly");
    }
    let in_flight = async {
        let _ = first.await;
        for lock in wd.locks.values() {
            let _held = lock.lock().await;
        }
    };
    if tokio::time::timeout(STOP_BUDGET / 2, in_flight)
        .await
        .is_err()
    {
        tracing::warn!("a check run did not finish in time; its results are discarded and will be redone at next start");
    }
    let _ = stop_tx.send(true);
    let remaining = deadline.saturating_duration_since(Instant::now());
    if tokio::time::timeout(remaining, dispatcher).await.is_err() {
        tracing::warn!("undelivered notifications stay in the outbox and are sent at next start");
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
    if let Some(p) = pinger {
        p.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

fn log_start(wd: &Watchdog, bound: SocketAddr) {
    let rt = &wd.rt;
    let sinks: Vec<&str> = wd.sinks.iter().map(|s| s.name()).collect();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        registry = %rt.registry,
        registry_origin = %rt.registry_origin,
        state = %rt.state_path.display(),
        state_origin = %rt.state_origin,
        listen = %bound,
        sinks = ?sinks,
        tokens_schedule = %rt.config.schedule.tokens,
        "npm-watchdog starting"
    );
    match rt.credential() {
        Ok(c) => tracing::info!(credential = %c.source, "using credential"),
        Err(e) => {
            tracing::warn!(error = %e, "no usable credential yet; checks will fail until one is provided")
        }
    }
    if sinks == ["log"] && rt.config.alerts.email.is_empty() && rt.config.alerts.webhook.is_empty()
    {
        tracing::info!("no email or webhook sink configured; alerts go to this log");
    }
}
