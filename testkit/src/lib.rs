//! What npm-watchdog's integration tests share, compiled once for all of them.
//!
//! - [`fake_registry`]: an in-process fake of the npm registry as npmjs.com behaves, with faults.
//! - [`fake_ci`]: in-process fakes of the GitHub, CircleCI and GitLab secrets APIs.
//! - [`receiver`]: an HTTP endpoint that records what sinks post and answers as scripted.
//! - [`peers`]: the real third-party servers (Verdaccio with the npm CLI, aiosmtpd, promtool,
//!   Prometheus, Alertmanager) and the daemon binary, started and driven as a user would.
//! - [`test_config`]: the one builder for the config file of a daemon under test.
//! - [`secrets`]: the one assertion that a secret appears nowhere a user or an attacker could read.
//!
//! A test uses it as `use testkit::{fake_registry, peers};`. Code that needs npm-watchdog's own
//! types (the in-process daemon, the outbox harness) stays under `tests/`, beside the tests.

pub mod fake_ci;
pub mod fake_registry;
pub mod peers;
pub mod receiver;
pub mod secrets;
pub mod test_config;
