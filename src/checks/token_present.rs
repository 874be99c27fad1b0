//! `token-present`: any token that no allowlist entry covers (Definition of Done, box D5). The
//! daemon's own credential, when not allowlisted, is reported here once, with its own words.

use super::{CheckDef, Dod, Finding, Group, Severity, Snapshot, Source};
use crate::config::PolicyConfig;
use crate::registry::Token;

pub const CHECK: CheckDef = CheckDef {
    id: "token-present",
    group: Group::Tokens,
    source: Source::Tokens,
    dod: &[Dod::D5],
    event: false,
    subject: Some("token"),
    evaluate,
};

fn evaluate(snap: &Snapshot, policy: &PolicyConfig) -> Vec<Finding> {
    let Some(tokens) = snap.tokens else {
        return Vec::new();
    };
    super::not_allowlisted(tokens, policy, snap.now)
        .map(|t| {
            let what = format!("static {} {} token", t.kind.as_str(), t.access.as_str());
            let created = t
                .created
                .map(|c| format!(", created {}", c.format("%Y-%m-%d")))
                .unwrap_or_default();
            let (summary, why, fix) = if super::is_own_token(t, snap.own_key, policy) {
                own_credential(t, &format!("{what}{created}"))
            } else {
                (
                    format!("A {what} is on the account{created}."),
                    "Any persistent token can be stolen from wherever it sits; rotating it only moves \
                     the window. Deleting it closes it."
                        .to_string(),
                    format!(
                        "Revoke it: `{}`. If it must stay, add its key prefix to policy.allow_tokens with a reason and an expiry.",
                        snap.revoke_command(t)
                    ),
                )
            };
            Finding {
                check: CHECK.id.into(),
                subject_key: t.key.clone(),
                subject: t.label(),
                severity: Severity::Warning,
                summary,
                why: why.into(),
                fix,
                dod: CHECK.dod_box(),
            }
        })
        .collect()
}

/// Summary, why and fix for the daemon's own credential. It is a static token too, and D5 stays open
/// until it is accepted on purpose; but revoking it, the usual fix, would blind the watchdog, so the
/// fix is to allowlist it with an expiry (which then reminds to rotate it). No other token check
/// reports it, so this is the one finding about it.
fn own_credential(t: &Token, what: &str) -> (String, String, String) {
    (
        format!(
            "This is npm-watchdog's own credential, the token it uses to read the account: a {what}, \
             not allowlisted."
        ),
        "The watchdog needs a token to list the account's tokens, and that token can be stolen like \
         any other. Accepting it on purpose, with an expiry, keeps D5 honest and reminds you to \
         rotate it."
            .into(),
        format!(
            "Allowlist it with an expiry instead of revoking it (revoking blinds the watchdog): add \
             `{{ key_prefix = \"{}\", reason = \"npm-watchdog's own credential\", expires = \"YYYY-MM-DD\" }}` \
             to policy.allow_tokens. Use a read-only token restricted by CIDR to this host.",
            t.id
        ),
    )
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

    /// The daemon's own credential, not allowlisted: one finding that says what it is and how to
    /// accept it, and no other token check reports it.
    #[test]
    fn the_own_credential_gets_one_clear_finding() {
        use super::super::fixtures::{now, registry, tokens};
        use super::super::{run_group, Group};
        let tokens = tokens();
        let reg = registry();
        // ci-legacy (classic write, no expiry, no CIDR, unused): it would fire four token checks.
        let own = tokens[2].key.clone();
        let snap = Snapshot {
            tokens: Some(&tokens),
            own_key: Some(&own),
            ..Snapshot::new(now(), &reg)
        };
        let (findings, _) = run_group(Group::Tokens, &snap, &PolicyConfig::default());
        let mine: Vec<&Finding> = findings.iter().filter(|f| f.subject_key == own).collect();
        assert_eq!(mine.len(), 1, "{mine:?}");
        assert_eq!(mine[0].check, "token-present");
        assert_eq!(mine[0].subject, "token c1a55c (ci-legacy)");
        assert!(mine[0]
            .summary
            .starts_with("This is npm-watchdog's own credential"));
        assert!(mine[0]
            .fix
            .starts_with("Allowlist it with an expiry instead of revoking it"));
        assert!(
            mine[0].fix.contains("key_prefix = \"c1a55c\""),
            "{}",
            mine[0].fix
        );
        assert!(!mine[0].fix.contains("npm token revoke"));

        // Allowlisted: nothing at all.
        let policy = PolicyConfig {
            allow_tokens: vec![crate::config::AllowToken {
                key_prefix: "c1a55c".into(),
                reason: "npm-watchdog's own credential".into(),
                expires: None,
                own: false,
            }],
            ..PolicyConfig::default()
        };
        let (findings, _) = run_group(Group::Tokens, &snap, &policy);
        assert!(
            findings.iter().all(|f| f.subject_key != own),
            "{findings:?}"
        );
    }
}
