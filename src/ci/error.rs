//! Why a CI list could not be read: one variant per kind of failure, each with a fixed label for
//! `check_errors_total{check="ci",reason}`. Messages carry the provider's own `message` at most,
//! never a body (GitLab's answers hold variable values) and never the token.

/// Why a CI list could not be read. The label is the `reason` of `check_errors_total{check="ci"}`.
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
    pub fn label(&self) -> &'static str {
        match self {
            CiError::Credential(_) => "credential",
            CiError::Unauthorized { .. } => "unauthorized",
            CiError::Forbidden { .. } => "forbidden",
            CiError::NotFound { .. } => "not_found",
            CiError::RateLimited { .. } => "rate_limited",
            CiError::Server { .. } => "server_error",
            CiError::Status { .. } => "unexpected_status",
            CiError::Network { .. } => "network",
            CiError::TooLarge { .. } => "too_large",
            CiError::Malformed { .. } => "malformed",
            CiError::Pagination { .. } => "pagination",
        }
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
