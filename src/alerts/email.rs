//! Email sink (lettre, rustls). Placeholder until the email sink lands.
use super::{Notification, Sink, SinkError};
use crate::checks::Severity;
use crate::config::EmailSinkConfig;

pub struct EmailSink {
    name: String,
    min_severity: Severity,
}

impl EmailSink {
    pub fn new(name: String, cfg: &EmailSinkConfig) -> Result<Self, SinkError> {
        Ok(Self { name, min_severity: cfg.min_severity })
    }
}

#[async_trait::async_trait]
impl Sink for EmailSink {
    fn name(&self) -> &str {
        &self.name
    }
    fn min_severity(&self) -> Severity {
        self.min_severity
    }
    async fn send(&self, _n: &Notification) -> Result<(), SinkError> {
        Err(SinkError("email sink not built yet".into()))
    }
}
