//! systemd integration: `Type=notify` readiness, reload and stopping notices, and the service watchdog.
//!
//! All of it is a no-op outside systemd (no `NOTIFY_SOCKET`). The watchdog ping is sent only while the
//! scheduler is provably alive: a scheduler job stamps a heartbeat, and the pinger withholds
//! `WATCHDOG=1` when that stamp is stale, so systemd restarts a daemon whose schedule has stalled
//! even though the process still answers.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;

fn send(state: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// `READY=1`: configuration loaded, state open, HTTP server bound, schedule started.
pub fn ready() {
    send(&[NotifyState::Ready, NotifyState::Status("watching")]);
}

/// `RELOADING=1`: a configuration reload has begun; [`ready`] says it is over. The monotonic time goes
/// with it, which newer systemd versions require.
pub fn reloading() {
    let mut state = vec![
        NotifyState::Reloading,
        NotifyState::Status("reloading the configuration"),
    ];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        state.push(now);
    }
    send(&state);
}

/// `STOPPING=1`: an orderly stop has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The watchdog period systemd asked for (`WatchdogSec=`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    (std::env::var_os("NOTIFY_SOCKET").is_some() && sd_notify::watchdog_enabled(false, &mut usec))
        .then(|| Duration::from_micros(usec))
        .filter(|d| !d.is_zero())
}

/// The runtime's proof of life, stamped by a periodic task.
#[derive(Clone, Default)]
pub struct Heartbeat(Arc<AtomicI64>);

impl Heartbeat {
    pub fn beat(&self) {
        self.0
            .store(chrono::Utc::now().timestamp_millis(), Ordering::SeqCst);
    }

    fn age(&self) -> Duration {
        let last = self.0.load(Ordering::SeqCst);
        let ms = chrono::Utc::now()
            .timestamp_millis()
            .saturating_sub(last)
            .max(0);
        Duration::from_millis(ms as u64)
    }
}

/// Ping the watchdog at half its period while the heartbeat is fresher than the period.
pub async fn pinger(interval: Duration, heartbeat: Heartbeat, mut stop: watch::Receiver<bool>) {
    let every = interval / 2;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        let age = heartbeat.age();
        if age < interval {
            send(&[NotifyState::Watchdog]);
        } else {
            tracing::warn!(
                stale_s = age.as_secs(),
                "the scheduler has not ticked; withholding the systemd watchdog ping"
            );
        }
    }
}
