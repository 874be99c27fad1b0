//! Configuration reload (SIGHUP, `systemctl reload`): the file and the environment are read again the
//! way they were at start. A valid configuration takes effect from each group's next cycle: schedules,
//! watch lists, policy, the allowlist, the registry client, the CI providers and the sinks. State, the outbox and active
//! findings stay. An invalid one is logged with exactly the error `config check` prints and the
//! running configuration stays. `server.listen` and `state.path` are bound at start: a change to
//! either is logged as needing a restart and otherwise ignored.
//!
//! Like Prometheus and Alertmanager, the outcome is exported as `config_last_reload_successful` and
//! `config_last_reload_success_timestamp_seconds`.

use std::sync::Arc;

use chrono::Utc;

use super::{Live, Schedules, Watchdog};
use crate::runtime::{ConfigInput, Runtime};

impl Watchdog {
    /// Put `rt` in force for the next cycles: a new registry client and new sinks. Notifications
    /// queued for a sink that is gone are dropped by the next delivery pass, never sent elsewhere.
    /// Returns the settings that differ from what was bound at start and so need a restart, for the
    /// log; on error nothing changed.
    pub fn apply(&self, rt: Runtime) -> Result<Vec<String>, String> {
        let sinks = rt.build_sinks().map_err(|e| format!("alerts: {e}"))?;
        let client = rt.client(self.metrics.clone()).map_err(|e| e.to_string())?;
        let ci_http = rt.ci_http().map_err(|e| e.to_string())?;
        let (listen, state_path) = &self.bound;
        let mut restart = Vec::new();
        if rt.config.server.listen != *listen {
            restart.push(format!(
                "server.listen changed from {listen} to {}: still serving on {listen} until a restart",
                rt.config.server.listen
            ));
        }
        if rt.state_path != *state_path {
            restart.push(format!(
                "state.path changed from {} to {}: still using {} until a restart",
                state_path.display(),
                rt.state_path.display(),
                state_path.display()
            ));
        }
        if !crate::checks::Group::Packages.is_watched(&rt.config) {
            // No package cycle will come to use (or replace) the held copies.
            *self.packuments.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Live {
            rt,
            client,
            ci_http,
        });
        self.outbox.set_sinks(sinks);
        Ok(restart)
    }
}

/// SIGHUP: tell systemd a reload is under way, do it, and say when it is over.
pub(super) async fn on_signal(wd: &Arc<Watchdog>, source: &ConfigInput, schedules: &mut Schedules) {
    crate::systemd::reloading();
    reload(wd, source, schedules).await;
    crate::systemd::ready();
}

/// Read the configuration again and put it in force, or keep the running one and say why.
async fn reload(wd: &Arc<Watchdog>, source: &ConfigInput, schedules: &mut Schedules) {
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
    // A reload may name new secret files: they are judged as at start (a warning; `--strict` only
    // governs the start, so a reload never stops a running watchdog).
    crate::secret::log_too_open(&live.rt.secret_files_too_open());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::credential::Environment;
    use crate::metrics::Metrics;
    use crate::state::State;

    fn runtime(adjust: impl FnOnce(&mut Config)) -> Runtime {
        let mut cfg = Config::default();
        cfg.state.path = Some("/var/lib/npm-watchdog/state.db".into());
        adjust(&mut cfg);
        Runtime::new(cfg, Environment::default()).expect("runtime")
    }

    fn watchdog() -> Watchdog {
        let state = State::open_in_memory().expect("state");
        Watchdog::new(runtime(|_| {}), state, Metrics::new()).expect("watchdog")
    }

    #[test]
    fn settings_bound_at_start_are_reported_and_the_rest_applies() {
        let wd = watchdog();
        assert_eq!(wd.outbox.names(), vec!["log"]);
        let restart = wd
            .apply(runtime(|c| {
                c.server.listen = "127.0.0.1:9999".parse().expect("addr");
                c.state.path = Some("/srv/npm-watchdog/state.db".into());
                c.alerts.log = true;
                c.watch.orgs = vec!["acme".into()];
            }))
            .expect("valid");
        assert_eq!(
            restart,
            vec![
                "server.listen changed from 127.0.0.1:9858 to 127.0.0.1:9999: still serving on 127.0.0.1:9858 until a restart".to_string(),
                "state.path changed from /var/lib/npm-watchdog/state.db to /srv/npm-watchdog/state.db: still using /var/lib/npm-watchdog/state.db until a restart".to_string(),
            ]
        );
        assert_eq!(wd.live().rt.config.watch.orgs, vec!["acme".to_string()]);
        assert!(wd.active_groups().contains(&crate::checks::Group::Org));
        // Back to what was bound at start: nothing needs a restart any more.
        assert_eq!(
            wd.apply(runtime(|_| {})).expect("valid"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_configuration_whose_sinks_cannot_be_built_changes_nothing() {
        let wd = watchdog();
        let broken = runtime(|c| {
            // Passes deserialization but not the sink's own construction (validation is skipped
            // here on purpose, as if a rule were missing): the reload must refuse it whole.
            c.alerts.email.push(
                toml::from_str(
                    "smtp_url = \"smtp://127.0.0.1:25\"\nfrom = \"w@example.com\"\nto = []\n",
                )
                .expect("email entry"),
            );
            c.watch.orgs = vec!["acme".into()];
        });
        let err = wd.apply(broken).expect_err("refused");
        assert!(err.starts_with("alerts: email sink email: "), "{err}");
        assert!(wd.live().rt.config.watch.orgs.is_empty());
        assert_eq!(wd.outbox.names(), vec!["log"]);
    }
}
