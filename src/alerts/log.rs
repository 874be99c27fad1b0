//! The log sink: notifications as structured log lines. Used when no other sink is configured, so a
//! finding is never dropped for want of somewhere to send it.

use super::{message, Notification, Sink, SinkError};

pub struct LogSink;

#[async_trait::async_trait]
impl Sink for LogSink {
    fn name(&self) -> &str {
        "log"
    }

    async fn send(&self, n: &Notification) -> Result<(), SinkError> {
        let f = &n.finding;
        tracing::warn!(
            target: "npm_watchdog::alert",
            status = n.status.as_str(),
            check = %f.check,
            severity = %f.severity,
            subject = %f.subject,
            fix = %f.fix,
            "{}: {}",
            message::subject(n),
            f.summary
        );
        Ok(())
    }
}
