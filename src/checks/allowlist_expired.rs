//! `allowlist-expired`: an entry of `policy.allow_tokens` past its `expires` date.

use super::{CheckDef, Finding, Group, Severity, Snapshot, Source};
use crate::config::PolicyConfig;

pub const CHECK: CheckDef = CheckDef {
    id: "allowlist-expired",
    group: Group::Tokens,
    source: Source::Config,
    dod: &[],
    event: false,
    subject: Some("token"),
    evaluate,
};

fn evaluate(snap: &Snapshot, policy: &PolicyConfig) -> Vec<Finding> {
    policy
        .allow_tokens
        .iter()
        .filter(|a| a.is_expired(snap.now))
        .map(|a| Finding {
            check: CHECK.id.into(),
            subject_key: a.key_prefix.to_ascii_lowercase(),
            subject: format!("allowlist entry {}", a.key_prefix),
            severity: Severity::Warning,
            summary: format!(
                "The allowlist entry for tokens starting {} (\"{}\") expired on {}.",
                a.key_prefix,
                a.reason,
                a.expires.map(|d| d.to_string()).unwrap_or_default()
            ),
            why: "An expired exception means the token it covered is reported again, or that the \
                  exception was forgotten."
                .into(),
            fix: "Revoke the token if it is no longer needed, then remove the entry from policy.allow_tokens; \
                  or renew the entry with a new expires date."
                .into(),
            dod: CHECK.dod_box(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{policy, registry};
    use super::*;
    use chrono::{DateTime, Utc};

    #[test]
    fn fires_the_day_after_expiry() {
        let reg = registry();
        let at = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("t")
                .with_timezone(&Utc)
        };
        let snap = |now| Snapshot {
            ..Snapshot::new(now, &reg)
        };
        assert!(evaluate(&snap(at("2027-01-31T23:00:00Z")), &policy()).is_empty());
        let got = evaluate(&snap(at("2027-02-01T00:00:00Z")), &policy());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].subject, "allowlist entry 82e393");
        assert!(got[0].summary.contains("expired on 2027-01-31"));
    }
}
