//! The log sink: notifications as structured log lines. Used when no other sink is configured, so a
//! finding is never dropped for want of somewhere to send it.

use super::{message, Message, Sink, SinkError};

pub struct LogSink;

#[async_trait::async_trait]
impl Sink for LogSink {
    fn name(&self) -> &str {
        "log"
    }

    /// One line per notification a message carries, so each stays greppable on its own, then one
    /// line counting those it does not carry.
    async fn deliver(&self, m: &Message) -> Result<(), SinkError> {
        for n in &m.notes {
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
        }
        if m.omitted() > 0 {
            tracing::warn!(
                target: "npm_watchdog::alert",
                omitted = m.omitted(),
                total = m.total,
                group = %m.key_text(),
                "and {} more findings of this group not shown (max_items): see `npm-watchdog audit`",
                m.omitted()
            );
        }
        Ok(())
    }
}
