//! `token-unused`: a token last used longer ago than `policy.token_unused_after`.
//!
//! Only registries that report `accessed` can tell; a token without that field is not judged.

use super::{CheckDef, Dod, Finding, Group, Severity, Snapshot, Source};
use crate::config::PolicyConfig;

pub const CHECK: CheckDef = CheckDef {
    id: "token-unused",
    group: Group::Tokens,
    source: Source::Tokens,
    dod: &[Dod::D5],
    event: false,
    subject: Some("token"),
    evaluate,
};

fn evaluate(snap: &Snapshot, policy: &PolicyConfig) -> Vec<Finding> {
    let limit = policy.token_unused_after.as_chrono();
    super::others_not_allowlisted(snap, policy)
        .filter_map(|t| {
            let last = t.accessed?;
            (snap.now - last >= limit).then(|| Finding {
                check: CHECK.id.into(),
                subject_key: t.key.clone(),
                subject: t.label(),
                severity: Severity::Info,
                summary: format!(
                    "The token was last used {} ({} ago).",
                    last.format("%Y-%m-%d"),
                    super::age(last, snap.now)
                ),
                why: "An unused token does no work but can still be stolen and used.".into(),
                fix: format!("Revoke it: `{}`.", snap.revoke_command(t)),
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
    fn only_the_token_idle_since_2025_fires() {
        let got = run(&CHECK, None);
        assert_eq!(
            subjects(&got),
            vec![("token c1a55c (ci-legacy)".into(), Severity::Info)]
        );
        assert!(got[0]
            .summary
            .starts_with("The token was last used 2025-06-01"));
    }
}
