//! `token-created`: a token key not seen before. An event: it fires once and never resolves.
//!
//! Before the first successful token run nothing has been seen, so nothing is reported as created
//! (existing tokens show up as `token-present` instead of a flood of events). After that, a token that
//! appeared while the daemon was down is still new to it, and is reported.

use super::{CheckDef, Dod, Finding, Group, Severity, Snapshot, Source};
use crate::config::PolicyConfig;

pub const CHECK: CheckDef = CheckDef {
    id: "token-created",
    group: Group::Tokens,
    source: Source::Tokens,
    dod: &[Dod::D5],
    event: true,
    subject: Some("token"),
    evaluate,
};

fn evaluate(snap: &Snapshot, policy: &PolicyConfig) -> Vec<Finding> {
    let Some(seen) = snap.seen_tokens else {
        return Vec::new();
    };
    super::others_not_allowlisted(snap, policy)
        .filter(|t| !seen.contains(&t.key))
        .map(|t| {
            let severity = if t.access.can_write() || t.bypass_2fa {
                Severity::Critical
            } else {
                Severity::Warning
            };
            let bypass = if t.bypass_2fa { ", bypasses 2FA" } else { "" };
            Finding {
                check: CHECK.id.into(),
                subject_key: t.key.clone(),
                subject: t.label(),
                severity,
                summary: format!(
                    "A new {} {} token appeared on the account ({}{bypass}).",
                    t.kind.as_str(),
                    t.access.as_str(),
                    t.created.map_or("creation time not reported".into(), |c| format!("created {}", c.to_rfc3339())),
                ),
                why: "The account is meant to hold no static tokens: releases go through trusted publishing. \
                      A new token is either someone working around that or an attacker keeping access."
                    .into(),
                fix: format!(
                    "If nobody on the team made it on purpose, revoke it now: `{}`, then check the account's \
                     sessions and 2FA devices. If it is wanted, add its key prefix to policy.allow_tokens with a reason and an expiry.",
                    snap.revoke_command(t)
                ),
                dod: CHECK.dod_box(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{run, subjects, tokens};
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn first_run_reports_nothing() {
        assert!(run(&CHECK, None).is_empty());
    }

    #[test]
    fn only_unseen_and_not_allowlisted_keys_fire() {
        let mut seen: HashSet<String> = tokens().iter().map(|t| t.key.clone()).collect();
        assert!(run(&CHECK, Some(&seen)).is_empty());
        for t in tokens() {
            if matches!(
                t.name.as_deref(),
                Some("fresh-bypass" | "laptop-read" | "watchdog")
            ) {
                seen.remove(&t.key);
            }
        }
        let got = run(&CHECK, Some(&seen));
        assert_eq!(
            subjects(&got),
            vec![
                ("token f7e5b9 (fresh-bypass)".into(), Severity::Critical),
                ("token 0dd0dd (laptop-read)".into(), Severity::Warning),
            ]
        );
        assert!(got[0].fix.contains("npm token revoke f7e5b9"));
        assert!(got[0].summary.contains("bypasses 2FA"));
    }
}
