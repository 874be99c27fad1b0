//! `team-write-access`: a team outside `policy.write_teams` that holds write access on packages
//! (box D8: developer and publish teams are read-only; write stays with owners).
//!
//! Why: with trusted publishing, releases come from CI; no person needs write on a package day to
//! day. Every member of a team with write can publish (with a token, if the package still accepts one)
//! and change the package's access, so each such team widens the set of accounts whose compromise
//! ships code.
//!
//! A policy entry names a team by its bare name (`developers`, any watched org) or with its org
//! (`acme:developers` or `@acme:developers`). A permission other than `read` counts as write: a value
//! this code does not know fails closed. One finding per team lists all its write packages, so
//! removing write from the last one resolves it.

use super::{CheckDef, Dod, Finding, Group, Severity, Snapshot, Source};
use crate::config::PolicyConfig;

pub const CHECK: CheckDef = CheckDef {
    id: "team-write-access",
    group: Group::Org,
    source: Source::Orgs,
    dod: &[Dod::D8],
    event: false,
    subject: Some("team"),
    evaluate,
};

fn evaluate(snap: &Snapshot, policy: &PolicyConfig) -> Vec<Finding> {
    let Some(orgs) = snap.orgs else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for view in orgs {
        let org = view.org.trim_start_matches('@');
        for team in &view.teams {
            if allowed(&policy.write_teams, org, &team.name) {
                continue;
            }
            // `packages` is a BTreeMap, so the list comes out sorted.
            let write: Vec<(&str, &str)> = team
                .packages
                .iter()
                .filter(|(_, perm)| perm.as_str() != "read")
                .map(|(p, perm)| (p.as_str(), perm.as_str()))
                .collect();
            if write.is_empty() {
                continue;
            }
            let listed: Vec<String> = write
                .iter()
                .map(|(p, perm)| match *perm {
                    "write" => p.to_string(),
                    other => format!("{p} (permission `{other}`, counted as write)"),
                })
                .collect();
            let commands: Vec<String> = write
                .iter()
                .map(|(p, _)| format!("`npm access grant read-only @{org}:{} {p}`", team.name))
                .collect();
            let n = write.len();
            out.push(Finding {
                check: CHECK.id.into(),
                subject_key: format!("{org}:{}", team.name),
                subject: format!("team @{org}:{}", team.name),
                severity: Severity::Critical,
                summary: format!(
                    "Team @{org}:{} has write access to {n} package{}: {}; it is not in policy.write_teams.",
                    team.name,
                    if n == 1 { "" } else { "s" },
                    listed.join(", ")
                ),
                why: "Releases go through trusted publishing, so no team but the release owners needs write. \
                      Every member of a team with write can publish and change the package's access; each one \
                      is an account whose compromise ships code."
                    .into(),
                fix: format!(
                    "Make the team read-only on each package: {}. Each sets the team's permission on that package \
                     to read-only (a PUT to /-/team/{org}/{}/package with the package and `read-only`). If this \
                     team must keep write, add \"{org}:{}\" to policy.write_teams.",
                    commands.join(", "),
                    team.name,
                    team.name
                ),
                dod: CHECK.dod_box(),
            });
        }
    }
    out
}

/// Whether `policy` lets team `team` of `org` hold write: a bare team name matches in every org,
/// `org:team` and `@org:team` only in that org.
fn allowed(policy: &[String], org: &str, team: &str) -> bool {
    policy.iter().any(|entry| {
        let entry = entry.trim();
        let entry = entry.strip_prefix('@').unwrap_or(entry);
        match entry.split_once(':') {
            Some((o, t)) => o == org && t == team,
            None => entry == team,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{keys, orgs, run_on, subjects, watch_policy, Inputs};
    use super::*;

    fn run(write_teams: &[&str]) -> Vec<Finding> {
        let o = orgs();
        let mut p = watch_policy();
        p.write_teams = write_teams.iter().map(|s| s.to_string()).collect();
        run_on(
            &CHECK,
            Inputs {
                orgs: Some(&o),
                ..Inputs::default()
            },
            &p,
        )
    }

    #[test]
    fn one_finding_per_team_listing_its_write_packages() {
        let got = run(&["release-admins"]);
        assert_eq!(
            subjects(&got),
            vec![
                ("team @acme:developers".into(), Severity::Critical),
                ("team @acme:hotfix".into(), Severity::Critical),
                ("team @acme-labs:developers".into(), Severity::Critical),
                ("team @acme-labs:hotfix".into(), Severity::Critical),
            ]
        );
        assert_eq!(
            got[0].summary,
            "Team @acme:developers has write access to 2 packages: @acme/core, left-pad-acme; it is not in \
             policy.write_teams."
        );
        assert!(
            got[0].fix.starts_with(
                "Make the team read-only on each package: `npm access grant read-only @acme:developers @acme/core`, \
                 `npm access grant read-only @acme:developers left-pad-acme`."
            ),
            "{}",
            got[0].fix
        );
        assert!(
            got[0].fix.contains("/-/team/acme/developers/package"),
            "{}",
            got[0].fix
        );
        assert_eq!(got[0].dod, Some(Dod::D8));
    }

    #[test]
    fn unknown_permission_fails_closed() {
        let got = run(&["release-admins"]);
        assert_eq!(
            got[1].summary,
            "Team @acme:hotfix has write access to 1 package: @acme/cli (permission `read-write`, counted as \
             write); it is not in policy.write_teams."
        );
    }

    #[test]
    fn policy_forms() {
        // Qualified forms allow the team in that org only.
        assert_eq!(
            keys(&run(&[
                "release-admins",
                "acme:hotfix",
                "@acme-labs:developers"
            ])),
            vec!["acme:developers", "acme-labs:hotfix"]
        );
        // A bare name allows the team in every org.
        assert_eq!(
            keys(&run(&["release-admins", "developers", " hotfix "])),
            Vec::<String>::new()
        );
        // Another org's name does not match; release-admins is reported once it is not allowed.
        assert_eq!(
            keys(&run(&["other:developers", "acme-labs:release-admins"])),
            vec![
                "acme:developers",
                "acme:release-admins",
                "acme:hotfix",
                "acme-labs:developers",
                "acme-labs:hotfix"
            ]
        );
    }

    #[test]
    fn read_only_and_empty_teams_pass() {
        let k = keys(&run(&[]));
        assert!(
            !k.iter().any(|k| k == "acme:readers" || k == "acme:empty"),
            "{k:?}"
        );
    }
}
