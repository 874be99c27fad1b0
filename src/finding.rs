//! The vocabulary every part of the daemon shares: a [`Finding`], its [`Severity`], and the
//! Definition-of-Done box ([`Dod`]) it breaks.
//!
//! This module depends on nothing else in the crate, so checks, alerts, state and the scorecard can all
//! use these types without depending on each other.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 3] = [Severity::Critical, Severity::Warning, Severity::Info];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A box of the Definition of Done, the hardened end state the daemon keeps the account at.
/// Serialized as `"D5"`, as findings have always been stored and sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Dod {
    D1,
    D2,
    D3,
    D4,
    D5,
    D6,
    D7,
    D8,
    D9,
}

impl Dod {
    pub const ALL: [Dod; 9] = [
        Dod::D1,
        Dod::D2,
        Dod::D3,
        Dod::D4,
        Dod::D5,
        Dod::D6,
        Dod::D7,
        Dod::D8,
        Dod::D9,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dod::D1 => "D1",
            Dod::D2 => "D2",
            Dod::D3 => "D3",
            Dod::D4 => "D4",
            Dod::D5 => "D5",
            Dod::D6 => "D6",
            Dod::D7 => "D7",
            Dod::D8 => "D8",
            Dod::D9 => "D9",
        }
    }
}

impl fmt::Display for Dod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something wrong with the account. Identified by its fingerprint (check id + subject key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub check: Cow<'static, str>,
    /// Stable identity of the subject (a full token key, a group name); never shown as is.
    pub subject_key: String,
    /// How people see the subject: `token 82e393 (bulk-hardening)`.
    pub subject: String,
    pub severity: Severity,
    /// What was found.
    pub summary: String,
    /// Why it matters. Most checks say it in fixed words, shared rather than copied into each of
    /// what can be tens of thousands of findings (one per version published without a trusted
    /// publisher); read back from the state it is owned.
    pub why: Cow<'static, str>,
    /// The exact fix.
    pub fix: String,
    /// The Definition-of-Done box this finding breaks, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dod: Option<Dod>,
}

impl Finding {
    pub fn fingerprint(&self) -> String {
        format!("{}:{}", self.check, self.subject_key)
    }

    /// A finding of `check` about the token `key`, with no text: what tests of the lifecycle and
    /// of grouping need.
    #[cfg(test)]
    pub fn bare(check: &str, key: &str, severity: Severity) -> Finding {
        Finding {
            check: check.to_string().into(),
            subject_key: key.into(),
            subject: format!("token {key}"),
            severity,
            summary: String::new(),
            why: "".into(),
            fix: String::new(),
            dod: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dod_boxes_serialize_as_their_names() {
        for d in Dod::ALL {
            assert_eq!(
                serde_json::to_value(d).expect("json"),
                serde_json::json!(d.as_str())
            );
        }
        let back: Dod = serde_json::from_str("\"D7\"").expect("parse");
        assert_eq!(back, Dod::D7);
    }
}
