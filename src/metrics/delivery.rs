//! The outcomes a delivery attempt is counted by.

/// How a delivery attempt ended: the `outcome` label of `notifications_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// Worth retrying; it will be.
    Failed,
    /// Refused for good by the receiver; not retried.
    Rejected,
    /// Queued for a sink that is no longer configured.
    Dropped,
    /// Refused for good, then accepted in a reduced form (names cut, fewer findings listed, the
    /// counts kept).
    Reduced,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Sent => "sent",
            Delivery::Failed => "failed",
            Delivery::Rejected => "rejected",
            Delivery::Dropped => "dropped",
            Delivery::Reduced => "reduced",
        }
    }
}
