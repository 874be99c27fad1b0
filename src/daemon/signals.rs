//! The signals a daemon answers: SIGTERM and SIGINT stop it in order, SIGHUP reloads its configuration.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::mpsc;

/// What the running daemon listens to: a future that completes when it must stop, and one message per
/// reload request.
pub struct Signals {
    pub(super) shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    pub(super) reload: mpsc::Receiver<()>,
}

impl Signals {
    /// Stop when `shutdown` completes; reload on every message of `reload` (for tests and embedding).
    pub fn new(
        shutdown: impl Future<Output = ()> + Send + 'static,
        reload: mpsc::Receiver<()>,
    ) -> Self {
        Self {
            shutdown: Box::pin(shutdown),
            reload,
        }
    }

    /// The process's SIGTERM, SIGINT and SIGHUP. The handlers are registered now, so that a signal
    /// that arrives while the daemon starts is not lost (nor kills it, for SIGHUP).
    pub fn install() -> Self {
        let (tx, rx) = mpsc::channel(4);
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::hangup()) {
                Ok(mut hup) => {
                    tokio::spawn(async move {
                        while hup.recv().await.is_some() {
                            tracing::info!("SIGHUP received: reloading the configuration");
                            // A full queue already holds a reload that will read the newest file.
                            let _ = tx.try_send(());
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGHUP; reloading needs a restart")
                }
            }
        }
        #[cfg(not(unix))]
        drop(tx);
        Self::new(stop_signal(), rx)
    }
}

/// Completes on the first SIGTERM or SIGINT.
fn stop_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => tracing::info!("SIGTERM received"),
                        _ = int.recv() => tracing::info!("SIGINT received"),
                    }
                }
                (term, int) => {
                    let e = term
                        .err()
                        .or(int.err())
                        .map(|e| e.to_string())
                        .unwrap_or_default();
                    tracing::warn!(error = %e, "cannot watch SIGTERM/SIGINT; stopping on Ctrl-C only");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
