//! `retired-account-active`: an account listed in `policy.retired_accounts` that is still a member of
//! a watched org or a maintainer of a watched package (box D6).
//!
//! Why: the accounts that existed only to hold a publish token (old CI users, bots) are retired as
//! part of the hardening. Their passwords and tokens may still sit in old CI settings, backups or a
//! former colleague's laptop, and nobody watches their login. While such an account is an org member
//! or a package maintainer, whoever holds its credentials can publish or manage access.
//!
//! One finding per account and place, so removing it from one org or package resolves exactly that
//! finding. The package side reads the packuments the snapshot carries (the daemon passes the last
//! stored copies to the org group); without packuments only memberships are checked.

use super::command::{npm_or_withheld, Word};
use super::{CheckDef, Dod, Finding, Group, Severity, Snapshot, Source};
use crate::config::PolicyConfig;

pub const CHECK: CheckDef = CheckDef {
    id: "retired-account-active",
    group: Group::Org,
    source: Source::Orgs,
    dod: &[Dod::D6],
    event: false,
    subject: Some("user"),
    evaluate,
};

const WHY: &str = "A retired account is no longer used or watched, but its password and tokens may still sit in old \
                   CI settings or backups. While it is a member or maintainer, whoever holds them can publish or \
                   change access.";

fn evaluate(snap: &Snapshot, policy: &PolicyConfig) -> Vec<Finding> {
    let Some(orgs) = snap.orgs else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for user in &policy.retired_accounts {
        for view in orgs {
            let org = view.org.trim_start_matches('@');
            let Some(role) = view.roster.get(user) else {
                continue;
            };
            out.push(Finding {
                check: CHECK.id.into(),
                subject_key: format!("{user}:org:{org}"),
                subject: format!("retired account {user} in @{org}"),
                severity: Severity::Critical,
                summary: format!(
                    "{user}, listed in policy.retired_accounts, is still a member of the npm org @{org} (role \
                     {role})."
                ),
                why: WHY.into(),
                fix: format!(
                    "Remove it from the org: {}. Then revoke the account's tokens or delete the account.",
                    npm_or_withheld(&[Word::Lit("org"), Word::Lit("rm"), Word::Name(org), Word::Name(user)])
                ),
                dod: CHECK.dod_box(),
            });
        }
        let Some(set) = snap.packages else {
            continue;
        };
        for (name, p) in &set.packuments {
            if !p.maintainers.iter().any(|m| &m.name == user) {
                continue;
            }
            out.push(Finding {
                check: CHECK.id.into(),
                subject_key: format!("{user}:package:{name}"),
                subject: format!("retired account {user} on {name}"),
                severity: Severity::Critical,
                summary: format!(
                    "{user}, listed in policy.retired_accounts, is still a maintainer of {name} and can publish it."
                ),
                why: WHY.into(),
                fix: format!(
                    "Remove it from the package's maintainers: {}. Then revoke the account's tokens or delete \
                     the account.",
                    npm_or_withheld(&[
                        Word::Lit("owner"),
                        Word::Lit("rm"),
                        Word::Name(user),
                        Word::Package(name),
                    ])
                ),
                dod: CHECK.dod_box(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{keys, orgs, packages, run_on, subjects, watch_policy, Inputs};
    use super::*;

    #[test]
    fn memberships_and_maintainerships_each_fire() {
        let (o, set) = (orgs(), packages());
        let got = run_on(
            &CHECK,
            Inputs {
                orgs: Some(&o),
                packages: Some(&set),
                ..Inputs::default()
            },
            &watch_policy(),
        );
        assert_eq!(
            subjects(&got),
            vec![
                ("retired account old-ci in @acme".into(), Severity::Critical),
                (
                    "retired account old-ci in @acme-labs".into(),
                    Severity::Critical
                ),
                (
                    "retired account old-ci on @acme/cli".into(),
                    Severity::Critical
                ),
            ]
        );
        assert_eq!(
            keys(&got),
            vec![
                "old-ci:org:acme",
                "old-ci:org:acme-labs",
                "old-ci:package:@acme/cli"
            ]
        );
        assert!(
            got[1].summary.contains("(role admin)"),
            "{}",
            got[1].summary
        );
        assert!(
            got[0].fix.contains("`npm org rm acme old-ci`"),
            "{}",
            got[0].fix
        );
        assert!(
            got[2].fix.contains("`npm owner rm old-ci @acme/cli`"),
            "{}",
            got[2].fix
        );
        assert!(got.iter().all(|f| f.dod == Some(Dod::D6)));
    }

    #[test]
    fn without_packuments_only_memberships_are_checked() {
        let o = orgs();
        let got = run_on(
            &CHECK,
            Inputs {
                orgs: Some(&o),
                ..Inputs::default()
            },
            &watch_policy(),
        );
        assert_eq!(keys(&got), vec!["old-ci:org:acme", "old-ci:org:acme-labs"]);
    }

    #[test]
    fn nothing_without_retired_accounts_or_when_they_are_gone() {
        let (o, set) = (orgs(), packages());
        let inputs = Inputs {
            orgs: Some(&o),
            packages: Some(&set),
            ..Inputs::default()
        };
        let mut p = watch_policy();
        p.retired_accounts = vec!["ghost".into(), "Old-CI".into()];
        assert!(run_on(&CHECK, inputs, &p).is_empty());
        p.retired_accounts.clear();
        assert!(run_on(&CHECK, inputs, &p).is_empty());
    }
}
