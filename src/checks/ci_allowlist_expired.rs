//! `ci-allowlist-expired`: an entry of `policy.allow_ci_secrets` past its `expires` date. The secret
//! it covered is reported by `ci-npm-secret` again, if it is still there; this says the exception
//! itself ran out, as `allowlist-expired` does for tokens.

use super::{CheckDef, Finding, Group, Severity, Snapshot, Source};
use crate::config::PolicyConfig;

pub const CHECK: CheckDef = CheckDef {
    id: "ci-allowlist-expired",
    group: Group::Ci,
    source: Source::Config,
    dod: &[],
    event: false,
    subject: Some("secret"),
    evaluate,
};

fn evaluate(snap: &Snapshot, policy: &PolicyConfig) -> Vec<Finding> {
    policy
        .allow_ci_secrets
        .iter()
        .filter(|a| a.is_expired(snap.now))
        .map(|a| Finding {
            check: CHECK.id.into(),
            subject_key: format!("{}#{}", a.place.to_ascii_lowercase(), a.name),
            subject: format!("CI allowlist entry {} in {}", a.name, a.place),
            severity: Severity::Warning,
            summary: format!(
                "The allowlist entry for the CI secret {} in {} (\"{}\") expired on {}.",
                a.name,
                a.place,
                a.reason,
                a.expires.map(|d| d.to_string()).unwrap_or_default()
            ),
            why: "An expired exception means the secret it covered is reported again, or that the \
                  exception was forgotten."
                .into(),
            fix: "Delete the secret and publish through the trusted publisher, then remove the entry \
                  from policy.allow_ci_secrets; or renew the entry with a new expires date."
                .into(),
            dod: CHECK.dod_box(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{policy, registry};
    use super::*;
    use crate::config::AllowCiSecret;
    use chrono::{DateTime, NaiveDate, Utc};

    #[test]
    fn fires_the_day_after_expiry_and_runs_with_the_ci_group() {
        let reg = registry();
        let at = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("t")
                .with_timezone(&Utc)
        };
        let p = PolicyConfig {
            allow_ci_secrets: vec![AllowCiSecret {
                place: "gitlab:group:acme".into(),
                name: "NPM_TOKEN".into(),
                reason: "mirror job".into(),
                expires: NaiveDate::from_ymd_opt(2026, 12, 31),
            }],
            ..policy()
        };
        let run = |now| super::super::run_group(Group::Ci, &Snapshot::new(now, &reg), &p);
        let (none, ran) = run(at("2026-12-31T23:59:59Z"));
        assert!(none.is_empty());
        assert!(
            ran.contains(&CHECK.id),
            "a configuration check runs without a CI read"
        );
        let (got, _) = run(at("2027-01-01T00:00:00Z"));
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].subject,
            "CI allowlist entry NPM_TOKEN in gitlab:group:acme"
        );
        assert_eq!(got[0].subject_key, "gitlab:group:acme#NPM_TOKEN");
        assert_eq!(
            got[0].summary,
            "The allowlist entry for the CI secret NPM_TOKEN in gitlab:group:acme (\"mirror job\") \
             expired on 2026-12-31."
        );
        assert_eq!(got[0].severity, Severity::Warning);
    }
}
