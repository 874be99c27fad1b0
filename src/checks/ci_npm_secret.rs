//! `ci-npm-secret`: a CI secret that holds, or is named like, an npm token (box D3).
//!
//! Once releases go through trusted publishing, no CI job needs an npm token: the publish job gets a
//! short-lived OIDC credential at run time. A token left in CI (as a repository, environment or org
//! secret, a context or project variable) can publish from any job that reads it, and often from
//! branches and forks nobody reviews. The names are matched against `policy.ci_secret_names`; on
//! GitLab, whose API returns values, a value that looks like an npm token counts too (the provider
//! file keeps only that verdict, never the value).
//!
//! One finding per secret, wherever it is listed: an org secret shown for each repository that can
//! use it is one finding. `policy.allow_ci_secrets` accepts a secret by place and name, until its
//! expiry.

use std::collections::HashSet;

use chrono::SecondsFormat;

use super::{CheckDef, Dod, Finding, Group, Severity, Snapshot, Source};
use crate::ci::CiSecret;
use crate::config::PolicyConfig;

pub const CHECK: CheckDef = CheckDef {
    id: "ci-npm-secret",
    group: Group::Ci,
    source: Source::Ci,
    dod: &[Dod::D3],
    event: false,
    subject: Some("secret"),
    evaluate,
};

fn evaluate(snap: &Snapshot, policy: &PolicyConfig) -> Vec<Finding> {
    let Some(inventory) = snap.ci else {
        return Vec::new();
    };
    let patterns = policy.ci_secret_patterns();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for s in &inventory.secrets {
        let by_name = patterns.iter().any(|p| p.is_match(&s.name));
        if !(by_name || s.value_is_npm_token)
            || policy.ci_allowlisted(&s.place, &s.name, snap.now)
            || !seen.insert(s.key())
        {
            continue;
        }
        out.push(finding(s, by_name));
    }
    out
}

fn finding(s: &CiSecret, by_name: bool) -> Finding {
    let scope = s
        .environment_scope
        .as_ref()
        .map(|e| format!(" (environment scope `{e}`)"))
        .unwrap_or_default();
    let updated = s
        .updated_at
        .map(|t| {
            format!(
                ", last updated {}",
                t.to_rfc3339_opts(SecondsFormat::Secs, true)
            )
        })
        .unwrap_or_default();
    let because = match (by_name, s.value_is_npm_token) {
        (true, true) => {
            "its name matches policy.ci_secret_names and its value looks like an npm token"
        }
        (true, false) => "its name matches policy.ci_secret_names",
        _ => "its value looks like an npm token or an npmrc `_authToken` line",
    };
    Finding {
        check: CHECK.id.into(),
        subject_key: s.key(),
        subject: format!("CI secret {}{scope} in {}", s.name, s.place_desc),
        severity: Severity::Critical,
        summary: format!(
            "{} holds `{}`{scope}{updated}: {because}.",
            s.place_desc, s.name
        ),
        why: "With trusted publishing no CI job needs an npm token: the publish job gets a short-lived \
              OIDC credential when it runs. A token kept in CI can publish from any job that can read \
              it, on branches and in pull requests nobody reviewed, and it outlives every job it was \
              made for. Breaks box D3 (no npm token in CI)."
            .into(),
        fix: format!(
            "Delete the secret: {}. Then revoke the npm token it held (`npm token list`, then \
             `npm token revoke <id>`) and publish through the trusted publisher. If it must stay for \
             now, accept it until a date: `[[policy.allow_ci_secrets]]` with place = \"{}\", name = \
             \"{}\", a reason and expires.",
            delete_hint(s),
            s.place,
            s.name
        ),
        dod: CHECK.dod_box(),
    }
}

/// How to delete the secret where it lives: the provider's CLI where it has one, else where to
/// click.
fn delete_hint(s: &CiSecret) -> String {
    let name = &s.name;
    let parts: Vec<&str> = s.place.splitn(3, ':').collect();
    match parts.as_slice() {
        ["github", "org", rest] => {
            let (org, list) = rest.rsplit_once(':').unwrap_or((rest, "actions"));
            let app = if list == "dependabot" {
                " --app dependabot"
            } else {
                ""
            };
            format!("`gh secret delete {name} --org {org}{app}`")
        }
        ["github", repo, list] => {
            let how = match list.split_once(':') {
                Some(("env", env)) => format!(" --env \"{env}\""),
                _ if *list == "dependabot" => " --app dependabot".into(),
                _ => String::new(),
            };
            format!("`gh secret delete {name} --repo {repo}{how}`")
        }
        ["circleci", "context", rest] => {
            let (org, context) = rest.rsplit_once(':').unwrap_or((rest, "?"));
            format!(
                "in CircleCI, Organization Settings → Contexts → {context} (of {org}), remove `{name}`"
            )
        }
        ["circleci", "project", slug] => format!(
            "in CircleCI, Project Settings → Environment Variables of {slug}, or the API: `DELETE \
             /project/{slug}/envvar/{name}`"
        ),
        ["gitlab", kind, path] => {
            let target = if *kind == "group" {
                "--group"
            } else {
                "--repo"
            };
            let scope = s
                .environment_scope
                .as_ref()
                .map(|e| format!(" --scope \"{e}\""))
                .unwrap_or_default();
            format!("`glab variable delete {name} {target} {path}{scope}`")
        }
        _ => format!("remove `{name}` from {}", s.place_desc),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{ci, policy, run_group_on, run_on, subjects, Inputs};
    use super::*;
    use crate::config::AllowCiSecret;

    fn run(policy: &PolicyConfig) -> Vec<Finding> {
        let inventory = ci();
        run_on(
            &CHECK,
            Inputs {
                ci: Some(&inventory),
                ..Inputs::default()
            },
            policy,
        )
    }

    #[test]
    fn npm_tokens_are_found_by_name_and_by_value_once_each() {
        let got = run(&policy());
        assert_eq!(
            subjects(&got),
            vec![
                (
                    "CI secret NPM_TOKEN in GitHub Actions secrets of repository acme/widget".into(),
                    Severity::Critical
                ),
                (
                    "CI secret NODE_AUTH_TOKEN in GitHub secrets of environment npm publish in repository acme/widget".into(),
                    Severity::Critical
                ),
                (
                    "CI secret ORG_NPM_PUBLISH_TOKEN in GitHub Actions secrets of organisation acme".into(),
                    Severity::Critical
                ),
                (
                    "CI secret npm_token in CircleCI context release of gh/acme".into(),
                    Severity::Critical
                ),
                (
                    "CI secret RELEASE_CREDENTIAL (environment scope `production`) in GitLab CI/CD variables of project acme/widget".into(),
                    Severity::Critical
                ),
                (
                    "CI secret NPM_TOKEN in GitLab CI/CD variables of group acme".into(),
                    Severity::Critical
                ),
            ]
        );
        let first = &got[0];
        assert_eq!(first.subject_key, "github:acme/widget:actions#NPM_TOKEN");
        assert_eq!(
            first.summary,
            "GitHub Actions secrets of repository acme/widget holds `NPM_TOKEN`, last updated \
             2026-11-20T09:15:00Z: its name matches policy.ci_secret_names."
        );
        assert_eq!(first.dod, Some(Dod::D3));
        let by_value = &got[4];
        assert_eq!(
            by_value.subject_key,
            "gitlab:project:acme/widget#RELEASE_CREDENTIAL@production"
        );
        assert!(
            by_value
                .summary
                .ends_with("its value looks like an npm token or an npmrc `_authToken` line."),
            "{}",
            by_value.summary
        );
    }

    #[test]
    fn each_fix_deletes_the_secret_where_it_lives() {
        let got = run(&policy());
        let fixes: Vec<&str> = got.iter().map(|f| f.fix.as_str()).collect();
        for (i, wanted) in [
            "`gh secret delete NPM_TOKEN --repo acme/widget`",
            "`gh secret delete NODE_AUTH_TOKEN --repo acme/widget --env \"npm publish\"`",
            "`gh secret delete ORG_NPM_PUBLISH_TOKEN --org acme`",
            "Organization Settings → Contexts → release (of gh/acme), remove `npm_token`",
            "`glab variable delete RELEASE_CREDENTIAL --repo acme/widget --scope \"production\"`",
            "`glab variable delete NPM_TOKEN --group acme`",
        ]
        .into_iter()
        .enumerate()
        {
            assert!(fixes[i].contains(wanted), "{}", fixes[i]);
            assert!(fixes[i].contains("npm token revoke"), "{}", fixes[i]);
        }
        assert!(fixes[0].contains("place = \"github:acme/widget:actions\", name = \"NPM_TOKEN\""));
    }

    #[test]
    fn an_allowlisted_secret_is_quiet_until_its_entry_expires() {
        let mut p = policy();
        p.allow_ci_secrets.push(AllowCiSecret {
            place: "GitLab:group:acme".into(),
            name: "NPM_TOKEN".into(),
            reason: "mirror job, moving to OIDC".into(),
            expires: chrono::NaiveDate::from_ymd_opt(2026, 12, 31),
        });
        let got = run(&p);
        assert_eq!(got.len(), 5);
        assert!(!got
            .iter()
            .any(|f| f.subject_key == "gitlab:group:acme#NPM_TOKEN"));
        p.allow_ci_secrets[0].expires = chrono::NaiveDate::from_ymd_opt(2026, 11, 25);
        assert_eq!(run(&p).len(), 6, "expired the day before NOW");
    }

    #[test]
    fn names_follow_the_policy_patterns() {
        let p = PolicyConfig {
            ci_secret_names: vec!["^DEPLOY_KEY$".into()],
            ..policy()
        };
        let keys: Vec<String> = run(&p).into_iter().map(|f| f.subject_key).collect();
        // Only the exact name, plus the one GitLab variable whose value gave it away.
        assert_eq!(
            keys,
            [
                "github:acme/widget:actions#DEPLOY_KEY",
                "gitlab:project:acme/widget#RELEASE_CREDENTIAL@production"
            ]
        );
    }

    #[test]
    fn without_a_ci_read_the_check_does_not_run() {
        let (findings, ran) = run_group_on(Group::Ci, Inputs::default(), &policy());
        assert!(findings.is_empty());
        assert!(!ran.contains(&CHECK.id));
    }
}
