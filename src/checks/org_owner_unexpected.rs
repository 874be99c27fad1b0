//! `org-owner-unexpected`: an org member with the `owner` or `admin` role whom
//! `policy.expected_owners` does not list.
//!
//! Why: owners and admins manage an org's members and teams, and through teams can give anyone write
//! access to every org package (owners can also delete the org). An extra one is either drift
//! ("temporary" admin rights never taken back) or an attacker's foothold that survives token
//! deletion. Names are compared case-sensitively, as the policy lists them; the role is compared
//! without regard to case.
//!
//! An empty `policy.expected_owners` is not read as "no opinion": every owner and admin is reported,
//! so that a watched org never has owners nobody listed. The summary says the list is empty.
//!
//! DoD: none. The Definition of Done has no box for the org roster; D8 is about team permissions
//! ("write stays with owners" assumes the owner list is right, which this check watches separately).
//! Attaching it to D8 would fail that box for a reason the D8 fix (read-only teams) does not address.

use super::command::{npm_or_withheld, Word};
use super::{CheckDef, Finding, Group, Severity, Snapshot, Source};
use crate::config::PolicyConfig;

pub const CHECK: CheckDef = CheckDef {
    id: "org-owner-unexpected",
    group: Group::Org,
    source: Source::Orgs,
    dod: &[],
    event: false,
    subject: Some("user"),
    evaluate,
};

fn evaluate(snap: &Snapshot, policy: &PolicyConfig) -> Vec<Finding> {
    let Some(orgs) = snap.orgs else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for view in orgs {
        let org = view.org.trim_start_matches('@');
        for (user, role) in &view.roster {
            let role_lc = role.to_ascii_lowercase();
            if !matches!(role_lc.as_str(), "owner" | "admin") {
                continue;
            }
            if policy.expected_owners.iter().any(|o| o == user) {
                continue;
            }
            let empty_note = if policy.expected_owners.is_empty() {
                " (policy.expected_owners is empty: list the owners and admins you expect)"
            } else {
                ""
            };
            out.push(Finding {
                check: CHECK.id.into(),
                subject_key: format!("{org}:{user}"),
                subject: format!("owner {user} of @{org}"),
                severity: Severity::Critical,
                summary: format!(
                    "{user} is an {role_lc} of the npm org @{org}, and policy.expected_owners does not list \
                     them{empty_note}."
                ),
                why: "Owners and admins manage the org's members and teams, and through teams can give anyone \
                      write access to every org package. An unexpected one is leftover access or an attacker's \
                      foothold that outlives every deleted token."
                    .into(),
                fix: format!(
                    "If {user} should not have these rights, demote them with {} or remove them with {}, then \
                     check the org's teams and the packages' maintainers for changes they made. If they should, \
                     add \"{user}\" to policy.expected_owners.",
                    npm_or_withheld(&[
                        Word::Lit("org"),
                        Word::Lit("set"),
                        Word::Name(org),
                        Word::Name(user),
                        Word::Lit("developer"),
                    ]),
                    npm_or_withheld(&[Word::Lit("org"), Word::Lit("rm"), Word::Name(org), Word::Name(user)]),
                ),
                dod: CHECK.dod_box(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{
        keys, orgs, run_group_on, run_on, subjects, watch_policy, Inputs,
    };
    use super::*;

    fn run(policy: &PolicyConfig) -> Vec<Finding> {
        let o = orgs();
        run_on(
            &CHECK,
            Inputs {
                orgs: Some(&o),
                ..Inputs::default()
            },
            policy,
        )
    }

    #[test]
    fn owners_and_admins_outside_the_policy() {
        let got = run(&watch_policy());
        assert_eq!(
            subjects(&got),
            vec![
                ("owner bob of @acme".into(), Severity::Critical),
                ("owner dave of @acme".into(), Severity::Critical),
                ("owner old-ci of @acme-labs".into(), Severity::Critical),
            ]
        );
        assert_eq!(
            keys(&got),
            vec!["acme:bob", "acme:dave", "acme-labs:old-ci"]
        );
        assert_eq!(
            got[0].summary,
            "bob is an admin of the npm org @acme, and policy.expected_owners does not list them."
        );
        assert!(
            got[1].summary.contains("an owner of the npm org @acme"),
            "{}",
            got[1].summary
        );
        assert!(
            got[0].fix.contains("`npm org set acme bob developer`"),
            "{}",
            got[0].fix
        );
        assert!(
            got[0].fix.contains("`npm org rm acme bob`"),
            "{}",
            got[0].fix
        );
        assert!(got[0].fix.contains("policy.expected_owners"));
        assert_eq!(got[0].dod, None);
    }

    #[test]
    fn names_are_case_sensitive_and_listed_owners_pass() {
        let mut p = watch_policy();
        p.expected_owners = vec!["alice".into(), "bob".into(), "Dave".into(), "old-ci".into()];
        assert_eq!(keys(&run(&p)), vec!["acme:dave"]);
    }

    #[test]
    fn empty_policy_reports_every_owner_and_says_so() {
        let mut p = watch_policy();
        p.expected_owners.clear();
        let got = run(&p);
        assert_eq!(
            keys(&got),
            vec![
                "acme:alice",
                "acme:bob",
                "acme:dave",
                "acme-labs:alice",
                "acme-labs:old-ci"
            ]
        );
        assert!(
            got[0].summary.contains("policy.expected_owners is empty"),
            "{}",
            got[0].summary
        );
    }

    #[test]
    fn org_group_does_not_run_without_orgs() {
        let (findings, ran) = run_group_on(Group::Org, Inputs::default(), &watch_policy());
        assert!(findings.is_empty());
        assert!(ran.is_empty(), "{ran:?}");
        let o = orgs();
        let (_, ran) = run_group_on(
            Group::Org,
            Inputs {
                orgs: Some(&o),
                ..Inputs::default()
            },
            &watch_policy(),
        );
        assert_eq!(
            ran,
            vec![
                "org-owner-unexpected",
                "retired-account-active",
                "team-write-access"
            ]
        );
    }
}
