//! Why a CI list could not be read: one variant per kind of failure, each with one of the crate's
//! read failure reasons ([`Reason`]), the label of `check_errors_total{check="ci",reason}`. Messages
//! carry the provider's own `message` at most, never a body (GitLab's answers hold variable values)
//! and never the token.

use crate::fetch::Reason;

/// Why a CI list could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CiError {
    /// The entry's token file could not be read (the message names the key and the file).
    #[error("{0}")]
    Credential(String),
    #[error("{endpoint}: 401 unauthorized{detail} (the token was refused: expired, revoked or mistyped)")]
    Unauthorized {
        endpoint: &'static str,
        detail: String,
    },
    #[error("{endpoint}: 403 forbidden{detail} (the token lacks the permission to read this)")]
    Forbidden {
        endpoint: &'static str,
        detail: String,
    },
    #[error("{endpoint}: 404 not found{detail} (it does not exist, or the token cannot see it)")]
    NotFound {
        endpoint: &'static str,
        detail: String,
    },
    #[error("{endpoint}: rate limited ({status}) after {attempts} attempt(s){until}")]
    RateLimited {
        endpoint: &'static str,
        status: u16,
        attempts: u32,
        /// `; the limit resets in 40m` when the provider said when.
        until: String,
    },
    #[error("{endpoint}: server error {status}{detail} after {attempts} attempt(s)")]
    Server {
        endpoint: &'static str,
        status: u16,
        attempts: u32,
        detail: String,
    },
    #[error("{endpoint}: unexpected status {status}{detail}")]
    Status {
        endpoint: &'static str,
        status: u16,
        detail: String,
    },
    #[error("{endpoint}: {detail} (after {attempts} attempt(s))")]
    Network {
        endpoint: &'static str,
        attempts: u32,
        detail: String,
    },
    #[error("{endpoint}: the answer is larger than registry.max_body ({limit} bytes)")]
    TooLarge { endpoint: &'static str, limit: u64 },
    #[error("{endpoint}: malformed answer: {detail}")]
    Malformed {
        endpoint: &'static str,
        detail: String,
    },
    #[error("{endpoint}: {detail}")]
    Pagination {
        endpoint: &'static str,
        detail: String,
    },
}

impl CiError {
    /// Why the read failed, as the metrics count it (`check_errors_total{check="ci",reason}`).
    pub fn reason(&self) -> Reason {
        match self {
            CiError::Credential(_) => Reason::Credential,
            CiError::Unauthorized { .. } => Reason::Unauthorized,
            CiError::Forbidden { .. } => Reason::Forbidden,
            CiError::NotFound { .. } => Reason::NotFound,
            CiError::RateLimited { .. } => Reason::RateLimited,
            CiError::Server { .. } => Reason::ServerError,
            CiError::Status { .. } => Reason::UnexpectedStatus,
            CiError::Network { .. } => Reason::Unreachable,
            CiError::TooLarge { .. } => Reason::TooLarge,
            CiError::Malformed { .. } => Reason::Malformed,
            CiError::Pagination { .. } => Reason::Pagination,
        }
    }

    /// [`Self::reason`] as its label.
    pub fn label(&self) -> &'static str {
        self.reason().as_str()
    }

    pub fn malformed(endpoint: &'static str, detail: impl Into<String>) -> Self {
        CiError::Malformed {
            endpoint,
            detail: detail.into(),
        }
    }

    pub fn pagination(endpoint: &'static str, detail: impl Into<String>) -> Self {
        CiError::Pagination {
            endpoint,
            detail: detail.into(),
        }
    }
}
