//! `watchdog-blind`: a check group failed `policy.blind_after` runs in a row, so the daemon cannot see
//! what it is meant to watch (credential rejected, EOTP, registry down).

use super::{CheckDef, Finding, Group, Severity, Snapshot, Source};
use crate::config::PolicyConfig;

pub const CHECK: CheckDef = CheckDef {
    id: "watchdog-blind",
    // Judged after every group's run, over the health of all groups.
    group: Group::Health,
    source: Source::Health,
    dod: &[],
    event: false,
    subject: None,
    evaluate,
};

fn evaluate(snap: &Snapshot, policy: &PolicyConfig) -> Vec<Finding> {
    snap.health
        .iter()
        .filter(|h| h.consecutive_failures >= policy.blind_after)
        .map(|h| Finding {
            check: CHECK.id.into(),
            subject_key: h.group.clone(),
            subject: format!("check group {}", h.group),
            severity: Severity::Critical,
            summary: format!(
                "The {} checks failed {} runs in a row; last error: {}.",
                h.group,
                h.consecutive_failures,
                h.last_error.as_deref().unwrap_or("unknown")
            ),
            why: "While the watchdog cannot read the registry, a new token or an untrusted publish goes \
                  unnoticed. Earlier findings stay open; nothing is marked resolved."
                .into(),
            fix: "Check the daemon's log and its credential (`npm-watchdog config check`, then \
                  `npm whoami --registry <url>` with the same token); replace the credential file if it was \
                  revoked or expired."
                .into(),
            dod: CHECK.dod_box(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{now, policy, registry};
    use super::super::GroupHealth;
    use super::*;

    #[test]
    fn fires_at_the_threshold() {
        let reg = registry();
        let health = |n| {
            vec![GroupHealth {
                group: "tokens".into(),
                consecutive_failures: n,
                last_error: Some("tokens: unreachable".into()),
            }]
        };
        let run = |h: &[GroupHealth]| {
            let snap = Snapshot {
                health: h,
                ..Snapshot::new(now(), &reg)
            };
            evaluate(&snap, &policy())
        };
        assert!(run(&health(2)).is_empty());
        let got = run(&health(3));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].severity, Severity::Critical);
        assert!(got[0].summary.contains("last error: tokens: unreachable"));
    }
}
