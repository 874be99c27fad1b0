//! The long-running daemon: a schedule per check group, the outbox's delivery loop, the HTTP server,
//! configuration reload on SIGHUP, and an orderly stop.
//!
//! One cycle of a group (`cycle`) reads its sources, runs its checks, plans the alert lifecycle and
//! writes the outcome (findings, outbox rows, seen tokens) in one transaction; only then is the
//! [`Dispatcher`] woken to deliver. Runs of one group never overlap: a tick that finds the previous run
//! still going is skipped. A reload (`reload`) swaps the configuration between cycles: a cycle uses
//! the configuration it started with. On SIGTERM/SIGINT the scheduler stops, in-flight runs finish, the
//! outbox gets one last delivery pass, and the state file is closed, all within about ten seconds.

mod cycle;
mod fault;
mod reload;
mod signals;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Mutex};
use tokio_cron_scheduler::{Job, JobScheduler};

pub use signals::Signals;

use crate::alerts::SinkError;
use crate::checks::Group;
use crate::config::Schedule;
use crate::delivery::Dispatcher;
use crate::lock::{LockError, StateLock};
use crate::metrics::Metrics;
use crate::registry::{RegistryClient, RegistryError};
use crate::runtime::{ConfigInput, Runtime};
use crate::server;
use crate::state::{State, StateError};

/// How long an orderly stop may take in all (systemd's default stop timeout is far longer).
const STOP_BUDGET: Duration = Duration::from_secs(9);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Lock(#[from] LockError),
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
    #[error(transparent)]
    SecretsTooOpen(#[from] crate::secret::SecretsTooOpen),
    #[error("CI client: {0}")]
    Ci(#[from] crate::ci::CiError),
}

/// The configuration in force and the client built from it. Replaced whole by a reload; a cycle
/// keeps the one it started with.
pub struct Live {
    pub rt: Runtime,
    pub client: RegistryClient,
    /// For the CI providers' APIs (`[[ci.*]]`).
    pub ci_http: reqwest::Client,
}

pub struct Watchdog {
    live: RwLock<Arc<Live>>,
    state: Arc<State>,
    metrics: Metrics,
    outbox: Arc<Dispatcher>,
    ready: Arc<AtomicBool>,
    locks: BTreeMap<Group, Mutex<()>>,
    /// The account `watch.own_account` last resolved to, to log when it changes.
    own_account: std::sync::Mutex<Option<String>>,
    /// The stored packuments as the last package cycle left them, so that a cycle does not decode
    /// every stored copy again. `None` until a cycle has committed them (and while one runs): then
    /// they are read from the state.
    packuments: std::sync::Mutex<Option<BTreeMap<String, crate::collect::StoredPackument>>>,
    /// The checks that have run (their source was read) since this process started: only their
    /// stored findings are known to be current, so only those are mirrored to sinks like
    /// Alertmanager.
    confirmed: std::sync::Mutex<std::collections::BTreeSet<&'static str>>,
    /// The first runs at start are over (readiness also needs the state to be writable).
    started: AtomicBool,
    /// Set while the state database cannot be written (see `fault.rs`).
    fault: std::sync::Mutex<Option<fault::StateFault>>,
    /// What was bound at start and only a restart changes: the listen address and the state file.
    bound: (SocketAddr, std::path::PathBuf),
}

impl Watchdog {
    pub fn new(rt: Runtime, state: State, metrics: Metrics) -> Result<Self, DaemonError> {
        let client = rt.client(metrics.clone())?;
        let ci_http = rt.ci_http()?;
        let sinks = rt.build_sinks()?;
        let state = Arc::new(state);
        let bound = (rt.config.server.listen, rt.state_path.clone());
        Ok(Self {
            bound,
            outbox: Arc::new(Dispatcher::new(Arc::clone(&state), metrics.clone(), sinks)),
            live: RwLock::new(Arc::new(Live {
                rt,
                client,
                ci_http,
            })),
            state,
            metrics,
            ready: Arc::new(AtomicBool::new(false)),
            locks: Group::SCHEDULED
                .iter()
                .map(|g| (*g, Mutex::new(())))
                .collect(),
            own_account: std::sync::Mutex::new(None),
            packuments: std::sync::Mutex::new(None),
            confirmed: std::sync::Mutex::new(Default::default()),
            started: AtomicBool::new(false),
            fault: std::sync::Mutex::new(None),
        })
    }

    /// The configuration in force now.
    pub fn live(&self) -> Arc<Live> {
        Arc::clone(&self.live.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The scheduled groups the configuration gives something to read.
    pub fn active_groups(&self) -> Vec<Group> {
        let live = self.live();
        Group::SCHEDULED
            .into_iter()
            .filter(|g| g.is_watched(&live.rt.config))
            .collect()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn outbox(&self) -> &Arc<Dispatcher> {
        &self.outbox
    }

    /// Run one cycle of `group` unless one is already running.
    pub async fn run_group(&self, group: Group) {
        let Some(lock) = self.locks.get(&group) else {
            tracing::error!(%group, "not a scheduled check group");
            return;
        };
        let Ok(_guard) = lock.try_lock() else {
            tracing::info!(%group, "previous run still in progress; skipping this tick");
            return;
        };
        let started = Instant::now();
        let result = self.cycle(group).await;
        self.metrics.group_duration(group, started.elapsed());
        match result {
            Ok(()) => self.state_write_ok(),
            Err(e) => self.state_write_failed(group, &e).await,
        }
        self.outbox.wake();
    }
}

/// The scheduler with one job per active group, re-synced after a reload.
struct Schedules {
    sched: JobScheduler,
    jobs: BTreeMap<Group, (Schedule, Slot)>,
}

/// How one group is scheduled: a cron expression in tokio-cron-scheduler, or a period in a task of
/// our own (see [`every`]).
enum Slot {
    Cron(uuid::Uuid),
    /// Dropping the sender stops the task after the run in progress, if any.
    Every(watch::Sender<()>),
}

impl Schedules {
    async fn new() -> Result<Self, DaemonError> {
        Ok(Self {
            sched: JobScheduler::new().await.map_err(scheduler_error)?,
            jobs: BTreeMap::new(),
        })
    }

    /// Make the jobs match the configuration in force: a job per active group on its schedule.
    /// Returns the groups that had no job before (they get a first run at once).
    async fn sync(&mut self, wd: &Arc<Watchdog>) -> Result<Vec<Group>, DaemonError> {
        let live = wd.live();
        let active = wd.active_groups();
        let mut started = Vec::new();
        for group in Group::SCHEDULED {
            let wanted = active
                .contains(&group)
                .then(|| group.schedule(&live.rt.config.schedule).cloned())
                .flatten();
            let current = self.jobs.get(&group).map(|(s, _)| s.clone());
            if wanted == current {
                continue;
            }
            match self.jobs.remove(&group) {
                Some((_, Slot::Cron(id))) => {
                    self.sched.remove(&id).await.map_err(scheduler_error)?
                }
                Some((_, Slot::Every(stop))) => drop(stop),
                None => {}
            }
            if let Some(schedule) = wanted {
                let slot = match &schedule {
                    Schedule::Every(d) => {
                        let wd = Arc::clone(wd);
                        Slot::Every(every(d.0, move || {
                            let wd = Arc::clone(&wd);
                            async move { wd.run_group(group).await }
                        }))
                    }
                    Schedule::Cron(c) => Slot::Cron(
                        self.sched
                            .add(cron_job(wd, group, c)?)
                            .await
                            .map_err(scheduler_error)?,
                    ),
                };
                self.jobs.insert(group, (schedule, slot));
                if current.is_none() {
                    started.push(group);
                }
            }
        }
        Ok(started)
    }

    /// Stop scheduling: periodic groups stop after the run in progress, cron jobs are removed.
    async fn shutdown(&mut self) -> Result<(), DaemonError> {
        self.jobs.clear();
        self.sched.shutdown().await.map_err(scheduler_error)
    }
}

/// Run `f` every `period`, the first time one period from now, until the returned sender is dropped.
/// The next run is counted from when the last one was due or, after a stall (a suspended machine,
/// the runtime blocked), from now: the group runs once and keeps its rhythm. tokio-cron-scheduler's
/// repeated jobs count only from their previous tick and never fire again once they fall more than
/// a period behind, which would leave a group silently unchecked.
///
/// Each run is its own task, so a panic in one (a bug meeting input nobody foresaw) is logged and the
/// next run still comes, instead of the schedule ending silently.
fn every<F, Fut>(period: Duration, f: F) -> watch::Sender<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (stop, mut stopped) = watch::channel(());
    tokio::spawn(async move {
        let start = tokio::time::Instant::now() + period;
        let mut ticks = tokio::time::interval_at(start, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    if let Err(e) = tokio::spawn(f()).await {
                        tracing::error!(error = %e, "a scheduled run failed; the next one runs as planned");
                    }
                }
                // The sender was dropped: stop.
                _ = stopped.changed() => return,
            }
        }
    });
    stop
}

fn scheduler_error(e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Scheduler(e.to_string())
}

/// A cron job: its next run is computed from its expression and the clock, so a stall costs the
/// missed runs, never the schedule.
fn cron_job(wd: &Arc<Watchdog>, group: Group, cron: &str) -> Result<Job, DaemonError> {
    let wd = Arc::clone(wd);
    let run = move |_id, _sched| {
        let wd = Arc::clone(&wd);
        Box::pin(async move { wd.run_group(group).await })
            as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
    };
    Job::new_async(cron, run).map_err(|e| DaemonError::Scheduler(format!("{group}: {e}")))
}

/// Run the daemon with `rt` (loaded from `source`, which a SIGHUP reads again) until `signals` says stop.
/// `secrets` says whether a secret file that group or others may open stops the start (`--strict`).
pub async fn run(
    source: ConfigInput,
    rt: Runtime,
    signals: Signals,
    secrets: crate::secret::PermissionPolicy,
) -> Result<(), DaemonError> {
    let Signals {
        shutdown,
        reload: mut reloads,
    } = signals;
    // Before anything is opened or locked: under --strict a too-open secret file is exit 2.
    secrets.check(rt.secret_files_too_open())?;
    // Before the state is opened, and held until this function returns: a second daemon on the same
    // state file stops here (exit 2) instead of alerting twice and racing this one's outbox.
    let _state_lock = StateLock::acquire(&rt.state_path)?;
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
    wd.outbox.release_interrupted();
    wd.metrics.set_findings(&wd.state.finding_counts()?);
    wd.outbox.update_queue_metric();

    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(server::serve(
        listener,
        wd.metrics.clone(),
        Arc::clone(&wd.ready),
        stop_rx.clone(),
    ));
    let dispatcher = tokio::spawn(Arc::clone(&wd.outbox).run(stop_rx.clone()));

    let mut schedules = Schedules::new().await?;
    // First runs at start, then on schedule.
    let first = {
        let wd = Arc::clone(&wd);
        let groups = schedules.sync(&wd).await?;
        tokio::spawn(async move {
            for g in groups {
                wd.run_group(g).await;
            }
            wd.first_cycles_done();
        })
    };
    let heartbeat = crate::systemd::Heartbeat::default();
    heartbeat.beat();
    let mut heartbeat_task = None;
    let pinger = match crate::systemd::watchdog_interval() {
        Some(interval) => {
            let period = (interval / 4).max(Duration::from_millis(500));
            let beat = heartbeat.clone();
            // Held until the daemon stops: the runtime's proof of life.
            heartbeat_task = Some(every(period, move || {
                let beat = beat.clone();
                async move { beat.beat() }
            }));
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
    schedules.sched.start().await.map_err(scheduler_error)?;
    crate::systemd::ready();

    let mut shutdown = shutdown;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(()) = reloads.recv() => reload::on_signal(&wd, &source, &mut schedules).await,
        }
    }

    crate::systemd::stopping();
    tracing::info!("stopping: finishing running checks and deliveries");
    let deadline = Instant::now() + STOP_BUDGET;
    drop(heartbeat_task);
    if let Err(e) = schedules.shutdown().await {
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
    let live = wd.live();
    let rt = &live.rt;
    let sinks = wd.outbox.names();
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
    tracing::info!(watching = %rt.config.watch.describe(), "what is watched");
    for entry in rt.config.ci.entries() {
        tracing::info!(
            source = %entry.key(),
            api = %entry.config.api_url(),
            reads = %entry.config.describe(),
            schedule = %rt.config.schedule.ci,
            "CI secrets watched"
        );
    }
    crate::secret::log_too_open(&rt.secret_files_too_open());
    match rt.credential() {
        Ok(c) => tracing::info!(credential = %c.source, "using credential"),
        Err(e) => {
            tracing::warn!(error = %e, "no usable credential yet; checks will fail until one is provided")
        }
    }
    if sinks == ["log"] && rt.config.alerts.entries().is_empty() {
        tracing::info!("no alert sink configured; alerts go to this log");
    }
}
