//! Configuration reload (SIGHUP, `systemctl reload`): the file and the environment are read again the
//! way they were at start. A valid configuration takes effect from each group's next cycle: schedules,
//! watch lists, policy, the allowlist, the registry client and the sinks. State, the outbox and active
//! findings stay. An invalid one is logged with exactly the error `config check` prints and the
//! running configuration stays. `server.listen` and `state.path` are bound at start: a change to
//! either is logged as needing a restart and otherwise ignored.
//!
//! Like Prometheus and Alertmanager, the outcome is exported as `config_last_reload_successful` and
//! `config_last_reload_success_timestamp_seconds`.

use std::sync::Arc;

use chrono::Utc;

use super::{Live, Schedules, Watchdog};
use crate::runtime::{ConfigSource, Runtime};

impl Watchdog {
    /// Put `rt` in force for the next cycles: a new registry client and new sinks. Notifications
    /// queued for a sink that is gone are dropped by the next delivery pass, never sent elsewhere.
    /// Returns the changes that need a restart, for the log; on error nothing changed.
    pub fn apply(&self, rt: Runtime) -> Result<Vec<String>, String> {
        let sinks = rt
            .config
            .alerts
            .build_sinks()
            .map_err(|e| format!("alerts: {e}"))?;
        let client = rt.client(self.metrics.clone()).map_err(|e| e.to_string())?;
        let old = self.live();
        let mut restart = Vec::new();
        let (was, now) = (old.rt.config.server.listen, rt.config.server.listen);
        if was != now {
            restart.push(format!(
                "server.listen changed from {was} to {now}: still serving on {was} until a restart"
            ));
        }
        if old.rt.state_path != rt.state_path {
            restart.push(format!(
                "state.path changed from {} to {}: still using {} until a restart",
                old.rt.state_path.display(),
                rt.state_path.display(),
                old.rt.state_path.display()
            ));
        }
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Live { rt, client });
        self.outbox.set_sinks(sinks);
        Ok(restart)
    }
}

/// SIGHUP: tell systemd a reload is under way, do it, and say when it is over.
pub(super) async fn on_signal(
    wd: &Arc<Watchdog>,
    source: &ConfigSource,
    schedules: &mut Schedules,
) {
    crate::systemd::reloading();
    reload(wd, source, schedules).await;
    crate::systemd::ready();
}

/// Read the configuration again and put it in force, or keep the running one and say why.
async fn reload(wd: &Arc<Watchdog>, source: &ConfigSource, schedules: &mut Schedules) {
    let applied = match source.load() {
        Ok((_, rt)) => wd.apply(rt),
        Err(e) => Err(e.to_string()),
    };
    let restart = match applied {
        Ok(r) => r,
        Err(e) => {
            wd.metrics.config_reloaded(false, Utc::now());
            tracing::error!(error = %e, "configuration reload failed; the running configuration stays");
            return;
        }
    };
    for change in &restart {
        tracing::warn!("{change}; restart npm-watchdog to apply it");
    }
    match schedules.sync(wd).await {
        Ok(started) => {
            for group in started {
                let wd = Arc::clone(wd);
                tokio::spawn(async move { wd.run_group(group).await });
            }
        }
        Err(e) => {
            // The configuration is in force but some schedules are the old ones: a failed reload,
            // which the next reload tries again.
            wd.metrics.config_reloaded(false, Utc::now());
            tracing::error!(error = %e, "configuration reloaded but the check groups could not be rescheduled");
            return;
        }
    }
    wd.metrics.config_reloaded(true, Utc::now());
    let live = wd.live();
    tracing::info!(
        sinks = ?wd.outbox.names(),
        watching = %live.rt.config.watch.describe(),
        "configuration reloaded; it applies from each group's next cycle"
    );
}
