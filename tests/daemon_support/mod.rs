#![allow(dead_code)]
//! What the in-process daemon tests share: a metric's value from `/metrics`, and the daemon's log
//! captured in memory so that a test can read it (and search it for secrets).
//!
//! Include it from an integration test file with `mod daemon_support;`.

use std::sync::{Arc, Mutex};

use npm_watchdog::daemon::Watchdog;

/// The value of the first series whose line starts with `line_start` (name and labels).
pub fn metric(wd: &Watchdog, line_start: &str) -> Option<String> {
    wd.metrics()
        .render()
        .lines()
        .find(|l| l.starts_with(line_start))
        .map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
}

/// Everything the daemon logs (debug and up) while the guard lives, on this thread: the tests run
/// on tokio's current-thread runtime, so the cycle's tasks log here too.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || logs.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}
