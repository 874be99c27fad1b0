//! `token-present`: any token that no allowlist entry covers (Definition of Done, box D5).

use super::{CheckDef, Finding, Severity, Snapshot, Source};
use crate::config::PolicyConfig;

pub const CHECK: CheckDef = CheckDef {
    id: "token-present",
    group: "tokens",
    source: Source::Tokens,
    event: false,
    evaluate,
};

fn evaluate(snap: &Snapshot, policy: &PolicyConfig) -> Vec<Finding> {
    let Some(tokens) = snap.tokens else {
        return Vec::new();
    };
    super::not_allowlisted(tokens, policy, snap.now)
        .map(|t| Finding {
            check: CHECK.id.into(),
            subject_key: t.key.clone(),
            subject: t.label(),
            severity: Severity::Warning,
            summary: format!(
                "A static {} {} token is on the account{}.",
                t.kind.as_str(),
                t.access.as_str(),
                t.created
                    .map(|c| format!(", created {}", c.format("%Y-%m-%d")))
                    .unwrap_or_default()
            ),
            why: "Any persistent token can be stolen from wherever it sits; rotating it only moves the \
                  window. Deleting it closes it."
                .into(),
            fix: format!(
                "Revoke it: `{}`. If it must stay, add its key prefix to policy.allow_tokens with a reason and an expiry.",
                snap.revoke_command(t)
            ),
            dod: Some("D5".into()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{run, subjects};
    use super::*;

    #[test]
    fn every_token_but_the_allowlisted_one() {
        let got = run(&CHECK, None);
        assert_eq!(
            subjects(&got),
            vec![
                ("token b5c1d2 (bulk-hardening)".into(), Severity::Warning),
                ("token c1a55c (ci-legacy)".into(), Severity::Warning),
                ("token f7e5b9 (fresh-bypass)".into(), Severity::Warning),
                ("token 0dd0dd (laptop-read)".into(), Severity::Warning),
            ]
        );
        assert_eq!(
            got[1].fix.split('`').nth(1),
            Some("npm token revoke c1a55c")
        );
    }

    #[test]
    fn an_expired_allowlist_entry_no_longer_hides_the_token() {
        let tokens = super::super::fixtures::tokens();
        let reg = super::super::fixtures::registry();
        let later = chrono::DateTime::parse_from_rfc3339("2027-02-01T00:00:00Z")
            .expect("t")
            .with_timezone(&chrono::Utc);
        let snap = Snapshot {
            tokens: Some(&tokens),
            ..Snapshot::new(later, &reg)
        };
        let got = evaluate(&snap, &super::super::fixtures::policy());
        assert!(got.iter().any(|f| f.subject == "token 82e393 (watchdog)"));
    }
}
