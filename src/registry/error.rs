//! What can go wrong talking to the registry, as one typed error whose [`label`](RegistryError::label)
//! is a fixed string safe for metric labels.

/// A failed registry call. Never turned into an empty result by anyone.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{endpoint}: the registry wants a one-time password (EOTP); an unattended run cannot give one")]
    OtpRequired { endpoint: &'static str },
    #[error("{endpoint}: refused from this IP address (EAUTHIP): the credential's CIDR list excludes this host")]
    IpBlocked { endpoint: &'static str },
    #[error("{endpoint}: unauthorized (401): the credential was rejected{detail}")]
    Unauthorized {
        endpoint: &'static str,
        detail: String,
    },
    #[error("{endpoint}: forbidden (403){detail}")]
    Forbidden {
        endpoint: &'static str,
        detail: String,
    },
    #[error("{endpoint}: not found (404){detail}")]
    NotFound {
        endpoint: &'static str,
        detail: String,
    },
    #[error("{endpoint}: rate limited ({status}) after {attempts} attempts")]
    RateLimited {
        endpoint: &'static str,
        status: u16,
        attempts: u32,
    },
    #[error("{endpoint}: server error ({status}) after {attempts} attempts{detail}")]
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
    #[error("{endpoint}: malformed response: {detail}")]
    Malformed {
        endpoint: &'static str,
        detail: String,
    },
    #[error("{endpoint}: cannot reach the registry after {attempts} attempts: {detail}")]
    Network {
        endpoint: &'static str,
        attempts: u32,
        detail: String,
    },
}

impl RegistryError {
    /// A short, fixed label for metrics (`check_errors_total{reason}`).
    pub fn label(&self) -> &'static str {
        match self {
            RegistryError::OtpRequired { .. } => "otp_required",
            RegistryError::IpBlocked { .. } => "ip_blocked",
            RegistryError::Unauthorized { .. } => "unauthorized",
            RegistryError::Forbidden { .. } => "forbidden",
            RegistryError::NotFound { .. } => "not_found",
            RegistryError::RateLimited { .. } => "rate_limited",
            RegistryError::Server { .. } => "server_error",
            RegistryError::Status { .. } => "unexpected_status",
            RegistryError::Malformed { .. } => "malformed",
            RegistryError::Network { .. } => "unreachable",
        }
    }

    pub(super) fn malformed(endpoint: &'static str, detail: impl ToString) -> Self {
        RegistryError::Malformed {
            endpoint,
            detail: detail.to_string(),
        }
    }
}

/// A field of the registry's JSON that is missing or of the wrong shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}
