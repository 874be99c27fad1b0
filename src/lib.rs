//! npm-watchdog keeps an npm account at its hardened state: no static tokens, no stale bypass-2FA
//! token, 2FA on the account, every release through trusted publishing, teams read-only. It reads the
//! registry on a schedule, turns what it sees into findings, alerts through a persistent outbox and
//! exports Prometheus metrics. `docs/ARCHITECTURE.md` draws the flow and has recipes for adding a
//! check, a sink and a source.
//!
//! A map of the crate for a newcomer, from the bottom up:
//! - [`finding`], [`config::types`], [`secret`]: the shared vocabulary (findings, severities, DoD boxes),
//!   configuration building blocks (durations, the validation error) and redaction. They depend on
//!   nothing else here.
//! - [`alerts`]: what a notification says, the finding lifecycle, routing, and the sinks (email,
//!   webhook, PagerDuty, Slack, Alertmanager: one file each, listed once in `alerts/mod.rs`), each with
//!   its own `[[alerts.<kind>]]` config section.
//! - [`config`]: the TOML/env configuration, strict about unknown keys, validated per section.
//! - [`credential`]: finding and re-reading the daemon's own npm token (never logged).
//! - [`runtime`]: what the config leaves open (registry, state path), and how it was found, so a
//!   reload reads it again the same way.
//! - [`fetch`]: the one retrying GET under the registry and CI clients, and [`fetch::Reason`], the one
//!   list of why a read failed (the `reason` metric label).
//! - [`registry`]: the only code that talks to npm; typed results and typed errors, one file per area.
//! - [`checks`]: pure functions from a snapshot to findings, one file per check, listed in
//!   `checks::all()`, each in a [`checks::Group`].
//! - [`ci`]: the CI providers' secrets (GitHub Actions, CircleCI, GitLab CI: one file each, listed
//!   once in `ci/mod.rs`), each with its own `[[ci.<kind>]]` section and token; names only, never values.
//! - `collect`: reading packages and orgs for the package, org and trust checks (shared by the
//!   daemon, `audit` and `harden`); it is handed stored copies and returns fresh ones.
//! - [`state`]: SQLite: seen tokens, active findings, the outbox, per-group health, stored copies.
//! - `lock`: one npm-watchdog per state database, by an OS file lock beside it (`run`, `harden`).
//! - [`delivery`]: the dispatcher that delivers the outbox's queued notifications through the sinks
//!   (the outbox table itself is in `state`).
//! - `dod`: the Definition-of-Done scorecard (D1-D9) that `audit` prints.
//! - [`metrics`]: every exported metric in one struct.
//! - [`daemon`]: the scheduler, one cycle per check group, reload on SIGHUP, shutdown;
//!   `server` serves `/metrics`, `/healthz`, `/readyz`; `systemd` does `Type=notify`.
//! - [`commands`]: the one-shot CLI verbs, one file each.
//!
//! ## The public face
//!
//! The crate is a library only so that the binary and the integration tests can drive it. What they
//! may use is each public module's root: the types it defines or re-exports there (`alerts::Plan`,
//! `ci::Limits`, `registry::RegistryClient`, `config::Config`, `daemon::Watchdog`, …), plus each sink's
//! and CI provider's config section in its own module (`alerts::webhook::WebhookSinkConfig`,
//! `ci::github::GithubConfig`), which is how a user's TOML maps onto them. A module's own helpers
//! (`alerts::http`, `alerts::lifecycle`, `ci::http`, `registry::http`, the state's queries, `lock`,
//! `collect`, `dod`) are `pub(crate)` or private: a test that needs one of them is a unit test
//! beside it. The fakes and peers the integration tests share live under `tests/`, not here.

pub mod alerts;
pub mod checks;
pub mod ci;
mod collect;
pub mod commands;
pub mod config;
pub mod credential;
pub mod daemon;
pub mod delivery;
mod dod;
pub mod fetch;
pub mod finding;
pub mod inert;
pub(crate) mod lock;
pub mod metrics;
pub mod registry;
pub mod runtime;
pub mod secret;
mod server;
pub mod state;
mod systemd;
