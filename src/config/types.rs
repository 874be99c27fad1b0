//! Building blocks of every configuration section, the daemon's own and the sinks' alike: durations
//! written the human way, and the typed error a section's validation returns.
//!
//! It depends on nothing else in the crate and is the bottom of the configuration: the sinks' and
//! the CI providers' sections are built from it, and `config`'s root embeds those sections. So
//! `alerts` and `ci` import `config::types` only, never the rest of `config`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written the human way (`"30s"`, `"24h"`, `"90d"`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }

    pub fn as_chrono(self) -> chrono::Duration {
        chrono::Duration::from_std(self.0).unwrap_or(chrono::Duration::MAX)
    }
}

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for HumanDuration {
    /// The largest unit that divides the value exactly (`90d`, `36h`, `90s`), so that what
    /// `config check` prints reads like what a user writes and parses back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        for (unit, size) in [
            ("d", 86_400_000u128),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1000),
        ] {
            if ms >= size && ms.is_multiple_of(size) {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

pub fn parse_duration(text: &str) -> Result<HumanDuration, String> {
    let d = parse_zero_or_duration(text)?;
    if d.0.is_zero() {
        return Err(format!("`{text}`: the duration must be greater than zero"));
    }
    Ok(d)
}

/// A duration that may be `"0s"`, for the keys where none at all is a choice (`group_wait`).
pub fn parse_zero_or_duration(text: &str) -> Result<HumanDuration, String> {
    humantime::parse_duration(text.trim())
        .map(HumanDuration)
        .map_err(|e| format!("`{text}` is not a duration like \"30s\", \"24h\" or \"90d\" ({e})"))
}

/// `deserialize_with` for a duration key that may be zero.
pub fn zero_or_duration<'de, D: Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
    let text = String::deserialize(d)?;
    parse_zero_or_duration(&text).map_err(serde::de::Error::custom)
}

/// `deserialize_with` for an optional duration key that may be zero (absent: `None`, with
/// `#[serde(default)]`).
pub fn opt_zero_or_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<HumanDuration>, D::Error> {
    zero_or_duration(d).map(Some)
}

/// A value that breaks a rule the types alone cannot express. `key` is the path of the offending key
/// as a user writes it (`alerts.email[0].to`); a section's own validation names keys relative to
/// the section and its caller puts the section's path in front with [`Invalid::under`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct Invalid {
    pub key: String,
    pub problem: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }

    /// The same problem, with `prefix` put in front of the key (`alerts.email[0]` + `to`).
    pub fn under(self, prefix: &str) -> Self {
        let key = if self.key.starts_with('[') {
            format!("{prefix}{}", self.key)
        } else {
            format!("{prefix}.{}", self.key)
        };
        Self { key, ..self }
    }
}

/// One rule of a section: the key it is about, whether the configured value breaks it, and what the
/// user must do. Each section states its rules as one table, in the order they are checked, and
/// [`check`] reports the first one broken, so a section's rules read in one place as its tests do.
pub struct Rule {
    key: String,
    broken: bool,
    must: String,
}

/// A [`Rule`]: `key` is relative to the section (`smtp_url`, `repos[1]`).
pub fn rule(key: impl Into<String>, broken: bool, must: impl Into<String>) -> Rule {
    Rule {
        key: key.into(),
        broken,
        must: must.into(),
    }
}

/// The first broken rule of a section's table, as an [`Invalid`].
pub fn check(rules: impl IntoIterator<Item = Rule>) -> Result<(), Invalid> {
    match rules.into_iter().find(|r| r.broken) {
        Some(r) => Err(Invalid::new(r.key, r.must)),
        None => Ok(()),
    }
}

/// Accept `"a"` as well as `["a", "b"]` for a list of strings.
pub fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_of_rules_reports_the_first_broken_one() {
        assert_eq!(
            check([rule("a", false, "x"), rule("b", false, "y")]),
            Ok(())
        );
        assert_eq!(
            check([
                rule("a", false, "x"),
                rule("b", true, "y"),
                rule("c", true, "z")
            ]),
            Err(Invalid::new("b", "y"))
        );
        assert_eq!(check(std::iter::empty()), Ok(()));
    }

    #[test]
    fn durations_print_in_their_largest_exact_unit() {
        assert_eq!(HumanDuration::secs(90 * 86400).to_string(), "90d");
        assert_eq!(HumanDuration::secs(5400).to_string(), "90m");
        assert_eq!(
            HumanDuration(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn invalid_keys_nest_under_their_section() {
        let e = Invalid::new("to", "needs at least one address").under("alerts.email[0]");
        assert_eq!(
            e.to_string(),
            "alerts.email[0].to: needs at least one address"
        );
    }
}
