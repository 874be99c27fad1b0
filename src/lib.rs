//! npm-watchdog keeps an npm account at its hardened state: no static tokens, no stale bypass-2FA
//! token, 2FA on the account, every release through trusted publishing, teams read-only. It reads the
//! registry on a schedule, turns what it sees into findings, alerts through a persistent outbox and
//! exports Prometheus metrics.
//!
//! A map of the crate for a newcomer:
//! - [`config`]: the TOML/env configuration, strict about unknown keys, validated at load.
//! - [`runtime`]: what the config leaves open (registry, state path), settled once at start.
//! - [`credential`]: finding and re-reading the daemon's own npm token (never logged).
//! - [`registry`]: the only code that talks to npm; typed results and typed errors.
//! - [`checks`]: pure functions from a snapshot to findings, one file per check, listed in `checks::all()`.
//! - [`collect`]: reading packages and orgs for the package, org and trust checks (shared by the
//!   daemon, `audit` and `harden`).
//! - [`state`]: SQLite: seen tokens, active findings, the notification outbox, per-group health.
//! - [`alerts`]: finding lifecycle (FIRING, reminders, RESOLVED) and the sinks behind the `Sink` trait.
//! - [`dod`]: the Definition-of-Done scorecard (D1-D9) that `audit` prints.
//! - [`metrics`]: every exported metric in one struct.
//! - [`daemon`]: the scheduler, one cycle per check group (`tokens`, `packages`, `org`), the
//!   notification dispatcher and shutdown; [`server`] serves `/metrics`, `/healthz`, `/readyz`.
//! - [`systemd`]: `Type=notify` readiness, the service watchdog, the stopping notice.
//! - [`commands`]: the one-shot CLI verbs (`tokens`, `audit`, `harden`, `config check`,
//!   `notify-test`, `healthcheck`).

pub mod alerts;
pub mod checks;
pub mod collect;
pub mod commands;
pub mod config;
pub mod credential;
pub mod daemon;
pub mod dod;
pub mod metrics;
pub mod registry;
pub mod runtime;
pub mod server;
pub mod state;
pub mod systemd;
