//! `trusted-publisher-unbound`: a trusted-publisher configuration not bound to a branch-restricted
//! place (box D2): CircleCI without `oidc.circleci.com/context-ids`, GitHub or GitLab without an
//! `environment`.
//!
//! Why: a configuration that names only the repository and workflow file accepts any run of that
//! workflow, from any branch. Whoever can push a branch (or get a workflow run on one) can then publish
//! the package. A CircleCI context restricted to the release branch, or a protected GitHub/GitLab
//! environment, is what ties publishing to the reviewed release path.
//!
//! A configuration this code does not understand (a type it does not know, such as `buildkite`, or
//! claims of another shape) gives no finding, because nothing can be said about its binding; it is
//! not passed silently either: the scorecard's D2 is UNVERIFIED and names it
//! ([`TrustConfig::not_understood`]). Packages whose trust list could not be read give no finding.

use serde_json::Value;

use super::{CheckDef, Dod, Finding, Group, Severity, Snapshot, Source, TrustStatus};
use crate::config::PolicyConfig;
use crate::registry::TrustConfig;

pub const CHECK: CheckDef = CheckDef {
    id: "trusted-publisher-unbound",
    group: Group::Trust,
    source: Source::Trust,
    dod: &[Dod::D2],
    event: false,
    subject: Some("package"),
    evaluate,
};

const CONTEXT_IDS: &str = "oidc.circleci.com/context-ids";

fn evaluate(snap: &Snapshot, _policy: &PolicyConfig) -> Vec<Finding> {
    let Some(trust) = snap.trust else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, status) in trust {
        let TrustStatus::Read(configs) = status else {
            continue;
        };
        for (i, cfg) in configs.iter().enumerate() {
            let Some(missing) = missing_binding(cfg) else {
                continue;
            };
            let handle = cfg.id.clone().unwrap_or_else(|| i.to_string());
            let id_note = cfg
                .id
                .as_deref()
                .map(|id| format!(" (id {id})"))
                .unwrap_or_default();
            out.push(Finding {
                check: CHECK.id.into(),
                subject_key: format!("{name}:{handle}"),
                subject: format!("{} trusted publisher of {name}", cfg.kind),
                severity: Severity::Warning,
                summary: format!(
                    "The trusted publisher of {name}{id_note}, {}, is not bound to {missing}.",
                    cfg.describe()
                ),
                why: why(&cfg.kind).into(),
                fix: fix(name, cfg),
                dod: CHECK.dod_box(),
            });
        }
    }
    out
}

/// What the configuration lacks, or `None` when it is bound (or of a type not understood here).
fn missing_binding(cfg: &TrustConfig) -> Option<&'static str> {
    if cfg.not_understood().is_some() {
        return None;
    }
    let c = &cfg.claims;
    match cfg.kind.as_str() {
        "circleci" => {
            let bound = c[CONTEXT_IDS].as_array().is_some_and(|ids| {
                ids.iter()
                    .any(|v| v.as_str().is_some_and(|s| !s.trim().is_empty()))
            });
            (!bound).then_some("a CircleCI context (no context-ids claim)")
        }
        "github" | "gitlab" => {
            let bound = c["environment"]
                .as_str()
                .is_some_and(|e| !e.trim().is_empty());
            (!bound).then_some("an environment")
        }
        _ => None,
    }
}

fn why(kind: &str) -> String {
    let binding = if kind == "circleci" {
        "a CircleCI context restricted to the release branch"
    } else {
        "a protected environment that only the release branch can deploy to"
    };
    format!(
        "Without {binding}, the configuration accepts any run of the workflow from any branch: anyone who can \
         push a branch that runs it can publish the package."
    )
}

fn fix(name: &str, cfg: &TrustConfig) -> String {
    let c = &cfg.claims;
    let claim = |v: &Value| v.as_str().map_or_else(|| "?".to_string(), str::to_string);
    let revoke = match &cfg.id {
        Some(id) => format!("`npm trust revoke --id {id} {name}`"),
        None => {
            format!("`npm trust revoke --id <id> {name}` (the id is in `npm trust list {name}`)")
        }
    };
    let replace = format!(
        "The registry holds one configuration per package, so replace it between releases: {revoke}, then"
    );
    let page = format!(
        "or do both on the package's settings page, https://www.npmjs.com/package/{name}/access."
    );
    match cfg.kind.as_str() {
        "github" => format!(
            "In the GitHub repository {repo}, create an environment (for example `npm-publish`) whose deployment \
             branches are limited to the release branch, with required reviewers if you can, and run the publish \
             job in it (`environment: npm-publish`). {replace} `npm trust github {name} --repository {repo} --file \
             {file} --environment npm-publish --allow-publish`; {page}",
            repo = claim(&c["repository"]),
            file = claim(&c["workflow_ref"]["file"]),
        ),
        "gitlab" => format!(
            "In the GitLab project {project}, create a protected environment (for example `npm-publish`) that only \
             the release branch can deploy to, and set `environment: npm-publish` on the publish job. {replace} \
             `npm trust gitlab {name} --project {project} --file {file} --environment npm-publish --allow-publish`; \
             {page}",
            project = claim(&c["project_path"]),
            file = claim(&c["ci_config_ref_uri"]["file"]),
        ),
        _ => format!(
            "Create a CircleCI context restricted to the release branch and run the publish job with it. {replace} \
             `npm trust circleci {name}` with the same org, project, pipeline definition and VCS origin plus that \
             context's id (`npm trust circleci --help` lists the flags); {page}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{keys, run_on, subjects, trust, watch_policy, Inputs};
    use super::*;
    use std::collections::BTreeMap;

    fn run(trust: &BTreeMap<String, TrustStatus>) -> Vec<Finding> {
        run_on(
            &CHECK,
            Inputs {
                trust: Some(trust),
                ..Inputs::default()
            },
            &watch_policy(),
        )
    }

    #[test]
    fn unbound_configs_of_each_kind() {
        let got = run(&trust());
        assert_eq!(
            subjects(&got),
            vec![
                (
                    "circleci trusted publisher of @acme/ci-empty".into(),
                    Severity::Warning
                ),
                (
                    "circleci trusted publisher of @acme/ci-tool".into(),
                    Severity::Warning
                ),
                (
                    "gitlab trusted publisher of @acme/cli".into(),
                    Severity::Warning
                ),
                (
                    "github trusted publisher of @acme/misc".into(),
                    Severity::Warning
                ),
            ]
        );
        // A config without an id is keyed by its index; the buildkite one next to it gives nothing.
        assert_eq!(
            keys(&got),
            vec![
                "@acme/ci-empty:tp-ce",
                "@acme/ci-tool:tp-ci",
                "@acme/cli:tp-cli",
                "@acme/misc:0"
            ]
        );
        assert_eq!(
            got[1].summary,
            "The trusted publisher of @acme/ci-tool (id tp-ci), circleci org 6a2b3c4d-0000-4000-8000-000000000001 \
             project 6a2b3c4d-0000-4000-8000-000000000002, is not bound to a CircleCI context (no context-ids claim)."
        );
        assert_eq!(
            got[2].summary,
            "The trusted publisher of @acme/cli (id tp-cli), gitlab acme/tools/cli .gitlab-ci.yml, is not bound to \
             an environment."
        );
        assert!(
            got[2]
                .fix
                .contains("`npm trust revoke --id tp-cli @acme/cli`"),
            "{}",
            got[2].fix
        );
        assert!(
            got[2].fix.contains(
                "`npm trust gitlab @acme/cli --project acme/tools/cli --file .gitlab-ci.yml --environment npm-publish \
                 --allow-publish`"
            ),
            "{}",
            got[2].fix
        );
        // An empty environment string is no environment.
        assert!(
            got[3]
                .summary
                .contains("github acme/misc publish.yml environment="),
            "{}",
            got[3].summary
        );
        assert!(
            got[3].fix.contains("`npm trust list @acme/misc`"),
            "{}",
            got[3].fix
        );
        assert!(
            got[3]
                .fix
                .contains("--repository acme/misc --file publish.yml --environment npm-publish"),
            "{}",
            got[3].fix
        );
        assert!(
            got[0].fix.contains("npm trust circleci --help"),
            "{}",
            got[0].fix
        );
        assert!(got.iter().all(|f| f.dod == Some(Dod::D2)));
        assert!(
            got[0]
                .why
                .starts_with("Without a CircleCI context restricted"),
            "{}",
            got[0].why
        );
        assert!(
            got[2].why.starts_with("Without a protected environment"),
            "{}",
            got[2].why
        );
    }

    #[test]
    fn bound_unknown_and_unread_configs_pass() {
        let k = keys(&run(&trust()));
        // @acme/core has an environment, @acme/ci-bound a context; @acme/misc's buildkite config,
        // NeedsOtp (@acme-labs/tool) and Failed (@acme/legacy) give nothing.
        for quiet in [
            "@acme/core",
            "@acme/ci-bound",
            "@acme/misc:tp-bk",
            "@acme-labs/tool",
            "@acme/legacy",
        ] {
            assert!(!k.iter().any(|k| k.starts_with(quiet)), "{quiet} in {k:?}");
        }
    }

    #[test]
    fn blank_context_ids_are_not_a_binding() {
        let cfg = |claims: Value| TrustConfig {
            id: Some("x".into()),
            kind: "circleci".into(),
            claims,
            permissions: vec![],
        };
        let circle = |ids: Value| {
            cfg(serde_json::json!({
                "oidc.circleci.com/org-id": "o-1",
                "oidc.circleci.com/project-id": "p-1",
                CONTEXT_IDS: ids,
            }))
        };
        assert!(missing_binding(&circle(serde_json::json!([""]))).is_some());
        assert!(missing_binding(&circle(serde_json::json!("c-1"))).is_some());
        assert!(missing_binding(&circle(serde_json::json!(["c-1"]))).is_none());
        // Without the ids that make it a CircleCI configuration it is not understood: no finding,
        // and the scorecard says D2 cannot be judged.
        assert!(missing_binding(&cfg(serde_json::json!({ CONTEXT_IDS: [""] }))).is_none());
        let gh = TrustConfig {
            kind: "github".into(),
            ..cfg(serde_json::json!({"repository": "o/r", "environment": null}))
        };
        assert!(missing_binding(&gh).is_some());
    }
}
