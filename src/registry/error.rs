//! What can go wrong talking to the registry, as one typed error whose [`reason`](RegistryError::reason)
//! is one of the crate's read failure reasons ([`Reason`]), the metric label.

use crate::fetch::Reason;

/// A failed registry call. Never turned into an empty result by anyone.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{endpoint}: the registry wants a one-time password (EOTP); an unattended run cannot give one")]
    OtpRequired {
        endpoint: &'static str,
        /// The registry offered web-based 2FA instead of a typed code.
        web: Option<WebChallenge>,
    },
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
    /// The answer is larger than the configured cap (`key`), declared so in `Content-Length` or found
    /// while reading. It is not retried: the same answer would come again.
    #[error("{endpoint}: {}", too_large(.key, .limit, .declared))]
    TooLarge {
        endpoint: &'static str,
        /// The configuration key that sets the cap (`registry.max_body`, `registry.max_packument`).
        key: &'static str,
        limit: u64,
        /// What `Content-Length` announced, when the registry sent one.
        declared: Option<u64>,
    },
}

/// A web-2FA challenge: the body of an OTP challenge that carries `authUrl` and `doneUrl`. The user
/// opens `auth_url` in a browser; `done_url` is polled until the registry hands out a code. Both are
/// the registry's text: `auth_url` is only ever shown (escaped), and `done_url` is only polled when
/// it is on the registry's own origin (the credential goes with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebChallenge {
    pub auth_url: String,
    pub done_url: String,
}

/// The longest URL taken from a challenge; a longer one is not a web challenge we act on.
const MAX_CHALLENGE_URL: usize = 2048;

impl WebChallenge {
    /// `{authUrl, doneUrl}` from a challenge's body, when both are there, are http(s) URLs and are of
    /// a sane length.
    pub(crate) fn from_body(body: &[u8]) -> Option<Self> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Body {
            auth_url: String,
            done_url: String,
        }
        let b: Body = serde_json::from_slice(body).ok()?;
        // Kept as the URL parser writes them back: ASCII, control characters percent-encoded, so
        // printing one on a terminal cannot move the cursor or forge a line.
        let usable = |u: &str| {
            (u.len() <= MAX_CHALLENGE_URL)
                .then(|| url::Url::parse(u).ok())
                .flatten()
                .filter(|p| matches!(p.scheme(), "http" | "https"))
                .map(String::from)
        };
        Some(Self {
            auth_url: usable(&b.auth_url)?,
            done_url: usable(&b.done_url)?,
        })
    }
}

/// The message of [`RegistryError::TooLarge`]: the cap by its key and size, and what to do about it.
fn too_large(key: &str, limit: &u64, declared: &Option<u64>) -> String {
    let how = match declared {
        Some(n) => format!(
            "{}; the registry declared {}) and was not read",
            size(*limit),
            size(*n)
        ),
        None => format!("{}) and was not read past it", size(*limit)),
    };
    format!(
        "the answer is larger than {key} ({how}; raise {key} if the registry's answers are really this large"
    )
}

/// A byte count for people: whole binary units where they fit (`4 MiB`), else one decimal (`47.7 MiB`).
pub(crate) fn size(bytes: u64) -> String {
    for (unit, factor) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{} {unit}", bytes / factor);
        }
    }
    bytesize::ByteSize(bytes).display().iec().to_string()
}

impl RegistryError {
    /// Why the read failed, as the metrics count it (`check_errors_total{reason}`).
    pub fn reason(&self) -> Reason {
        match self {
            RegistryError::OtpRequired { .. } => Reason::OtpRequired,
            RegistryError::IpBlocked { .. } => Reason::IpBlocked,
            RegistryError::Unauthorized { .. } => Reason::Unauthorized,
            RegistryError::Forbidden { .. } => Reason::Forbidden,
            RegistryError::NotFound { .. } => Reason::NotFound,
            RegistryError::RateLimited { .. } => Reason::RateLimited,
            RegistryError::Server { .. } => Reason::ServerError,
            RegistryError::Status { .. } => Reason::UnexpectedStatus,
            RegistryError::Malformed { .. } => Reason::Malformed,
            RegistryError::Network { .. } => Reason::Unreachable,
            RegistryError::TooLarge { .. } => Reason::TooLarge,
        }
    }

    /// [`Self::reason`] as its label.
    pub fn label(&self) -> &'static str {
        self.reason().as_str()
    }

    /// The registry refused the credential itself (not the request): the fix is in the credential.
    pub fn refuses_credential(&self) -> bool {
        matches!(
            self,
            RegistryError::Unauthorized { .. }
                | RegistryError::Forbidden { .. }
                | RegistryError::IpBlocked { .. }
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_web_challenge_is_taken_only_whole_and_printable() {
        let ok = WebChallenge::from_body(
            br#"{"authUrl":"https://www.example.test/auth/cli/abc","doneUrl":"https://registry.example.test/-/v1/done?id=abc"}"#,
        )
        .expect("a web challenge");
        assert_eq!(ok.auth_url, "https://www.example.test/auth/cli/abc");
        assert!(WebChallenge::from_body(br#"{"authUrl":"https://a.test/x"}"#).is_none());
        assert!(WebChallenge::from_body(br#"{"error":"otp"}"#).is_none());
        assert!(WebChallenge::from_body(
            br#"{"authUrl":"javascript:alert(1)","doneUrl":"https://a.test/d"}"#
        )
        .is_none());
        let long = format!(
            r#"{{"authUrl":"https://a.test/{}","doneUrl":"https://a.test/d"}}"#,
            "x".repeat(3000)
        );
        assert!(WebChallenge::from_body(long.as_bytes()).is_none());
        let hostile = WebChallenge::from_body(
            br#"{"authUrl":"https://a.test/\u001b[2Jfake\u0007","doneUrl":"https://a.test/d"}"#,
        )
        .expect("still a URL");
        assert!(
            !hostile.auth_url.chars().any(char::is_control),
            "{hostile:?}"
        );
    }

    #[test]
    fn too_large_names_the_key_and_the_sizes() {
        let declared = RegistryError::TooLarge {
            endpoint: "tokens",
            key: "registry.max_body",
            limit: 4 << 20,
            declared: Some(50_000_000),
        };
        assert_eq!(
            declared.to_string(),
            "tokens: the answer is larger than registry.max_body (4 MiB; the registry declared \
             47.7 MiB) and was not read; raise registry.max_body if the registry's answers are \
             really this large"
        );
        assert_eq!(declared.label(), "too_large");
        let streamed = RegistryError::TooLarge {
            endpoint: "packument",
            key: "registry.max_packument",
            limit: 1536,
            declared: None,
        };
        assert_eq!(
            streamed.to_string(),
            "packument: the answer is larger than registry.max_packument (1.5 KiB) and was not \
             read past it; raise registry.max_packument if the registry's answers are really this \
             large"
        );
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(128 << 20), "128 MiB");
        assert_eq!(size(512 << 10), "512 KiB");
        assert_eq!(size(2 << 30), "2 GiB");
        assert_eq!(size(1000), "1000 B");
        assert_eq!(size(4_000_000), "3.8 MiB");
    }
}
