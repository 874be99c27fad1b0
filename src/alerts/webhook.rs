//! Webhook sink. Placeholder until the webhook sink lands.
use super::{Notification, Sink, SinkError};
use crate::checks::Severity;
use crate::config::WebhookSinkConfig;

pub struct WebhookSink {
    name: String,
    min_severity: Severity,
}

impl WebhookSink {
    pub fn new(name: String, cfg: &WebhookSinkConfig) -> Result<Self, SinkError> {
        Ok(Self { name, min_severity: cfg.min_severity })
    }
}

#[async_trait::async_trait]
impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }
    fn min_severity(&self) -> Severity {
        self.min_severity
    }
    async fn send(&self, _n: &Notification) -> Result<(), SinkError> {
        Err(SinkError("webhook sink not built yet".into()))
    }
}
