//! `token-bypass-2fa`: a token that publishes without a second factor (box D9).
//!
//! Such a token is sometimes made on purpose for a one-day bulk change; it is a warning while younger
//! than `policy.bypass_token_max_age` and critical once older ("stale"). It is reported even when
//! allowlisted: the allowlist is for known tokens, not for keeping a 2FA bypass around.

use super::{CheckDef, Dod, Finding, Group, Severity, Snapshot, Source};
use crate::config::PolicyConfig;

pub const CHECK: CheckDef = CheckDef {
    id: "token-bypass-2fa",
    group: Group::Tokens,
    source: Source::Tokens,
    dod: &[Dod::D9],
    event: false,
    subject: Some("token"),
    evaluate,
};

fn evaluate(snap: &Snapshot, policy: &PolicyConfig) -> Vec<Finding> {
    let Some(tokens) = snap.tokens else {
        return Vec::new();
    };
    let max_age = policy.bypass_token_max_age.as_chrono();
    tokens
        .iter()
        .filter(|t| t.bypass_2fa)
        .map(|t| {
            // Without a creation time the age is unknown: treat it as stale rather than young.
            let stale = t.created.is_none_or(|c| snap.now - c >= max_age);
            let age = t
                .created
                .map_or("of unknown age".to_string(), |c| format!("{} old", super::age(c, snap.now)));
            Finding {
                check: CHECK.id.into(),
                subject_key: t.key.clone(),
                subject: t.label(),
                severity: if stale { Severity::Critical } else { Severity::Warning },
                summary: if stale {
                    format!(
                        "A bypass-2FA token is {age}, past the {} it may live.",
                        policy.bypass_token_max_age
                    )
                } else {
                    format!(
                        "A bypass-2FA token is {age}; it becomes critical at {}.",
                        policy.bypass_token_max_age
                    )
                },
                why: "A bypass-2FA token publishes with no second factor, even to packages set to require \
                      2FA. Made for a one-day bulk change, it must be gone the same day."
                    .into(),
                fix: format!("Revoke it as soon as the job it was made for is done: `{}`.", snap.revoke_command(t)),
                dod: CHECK.dod_box(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{run, subjects};
    use super::*;

    #[test]
    fn young_is_warning_and_stale_is_critical() {
        let got = run(&CHECK, None);
        assert_eq!(
            subjects(&got),
            vec![
                ("token b5c1d2 (bulk-hardening)".into(), Severity::Critical),
                ("token f7e5b9 (fresh-bypass)".into(), Severity::Warning),
            ]
        );
        assert!(got[0].summary.contains("6d 2h old"), "{}", got[0].summary);
        assert!(got[1].summary.contains("6h old"), "{}", got[1].summary);
    }
}
