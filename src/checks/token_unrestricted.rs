//! `token-unrestricted`: a token that can write and works from any IP address.

use super::{CheckDef, Dod, Finding, Group, Severity, Snapshot, Source};
use crate::config::PolicyConfig;

pub const CHECK: CheckDef = CheckDef {
    id: "token-unrestricted",
    group: Group::Tokens,
    source: Source::Tokens,
    dod: &[Dod::D5],
    event: false,
    subject: Some("token"),
    evaluate,
};

fn evaluate(snap: &Snapshot, policy: &PolicyConfig) -> Vec<Finding> {
    super::others_not_allowlisted(snap, policy)
        .filter(|t| t.access.can_write() && t.cidr.is_empty())
        .map(|t| Finding {
            check: CHECK.id.into(),
            subject_key: t.key.clone(),
            subject: t.label(),
            severity: Severity::Warning,
            summary: format!("A {} token has no CIDR restriction.", t.access.as_str()),
            why: "A stolen write token with no IP allowlist publishes from anywhere in the world.".into(),
            fix: format!(
                "Revoke it (`{}`); if one is truly needed, create it with `--cidr` set to the hosts that use it.",
                snap.revoke_command(t)
            ),
            dod: CHECK.dod_box(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{run, subjects};
    use super::*;

    #[test]
    fn write_tokens_without_cidr_fire() {
        assert_eq!(
            subjects(&run(&CHECK, None)),
            vec![
                ("token b5c1d2 (bulk-hardening)".into(), Severity::Warning),
                ("token c1a55c (ci-legacy)".into(), Severity::Warning),
            ]
        );
    }
}
