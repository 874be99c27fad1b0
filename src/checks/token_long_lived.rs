//! `token-long-lived`: a token with no expiry, or one that lives longer than `policy.token_max_lifetime`.

use super::{CheckDef, Dod, Finding, Group, Severity, Snapshot, Source};
use crate::config::PolicyConfig;

pub const CHECK: CheckDef = CheckDef {
    id: "token-long-lived",
    group: Group::Tokens,
    source: Source::Tokens,
    dod: &[Dod::D5],
    event: false,
    subject: Some("token"),
    evaluate,
};

fn evaluate(snap: &Snapshot, policy: &PolicyConfig) -> Vec<Finding> {
    let max = policy.token_max_lifetime.as_chrono();
    super::others_not_allowlisted(snap, policy)
        .filter_map(|t| {
            let summary = match (t.expires, t.created) {
                (None, _) => "The token never expires.".to_string(),
                (Some(e), Some(c)) if e - c > max => format!(
                    "The token lives {} (until {}), longer than the {} allowed.",
                    super::age(c, e),
                    e.format("%Y-%m-%d"),
                    policy.token_max_lifetime
                ),
                (Some(e), None) if e - snap.now > max => format!(
                    "The token is valid until {}, longer than the {} allowed from now.",
                    e.format("%Y-%m-%d"),
                    policy.token_max_lifetime
                ),
                _ => return None,
            };
            Some(Finding {
                check: CHECK.id.into(),
                subject_key: t.key.clone(),
                subject: t.label(),
                severity: Severity::Warning,
                summary,
                why: "The longer a token lives, the longer a stolen copy works.".into(),
                fix: format!(
                    "Revoke it (`{}`); if a token is truly needed, create one with an expiry of at most {}.",
                    snap.revoke_command(t),
                    policy.token_max_lifetime
                ),
                dod: CHECK.dod_box(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{run, subjects};
    use super::*;

    #[test]
    fn no_expiry_and_a_year_long_token_fire() {
        let got = run(&CHECK, None);
        assert_eq!(
            subjects(&got),
            vec![
                ("token b5c1d2 (bulk-hardening)".into(), Severity::Warning),
                ("token c1a55c (ci-legacy)".into(), Severity::Warning),
            ]
        );
        assert_eq!(got[1].summary, "The token never expires.");
        assert!(
            got[0].summary.contains("until 2027-11-20"),
            "{}",
            got[0].summary
        );
    }
}
