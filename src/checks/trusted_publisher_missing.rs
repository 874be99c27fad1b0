//! `trusted-publisher-missing`: a package with no trusted-publisher configuration (box D1).
//!
//! Why: without a trusted publisher, the only way to publish is a token or a person at a terminal, so
//! the token can never be deleted and the "Require 2FA and disallow tokens" mode cannot be set
//! without stopping releases. Configuring one is the first step of the hardening.
//!
//! The trust list is behind 2FA: an unattended daemon gets EOTP and the snapshot says `NeedsOtp`; a
//! read can also fail outright. Neither is reported here: "could not read" is not "none configured",
//! and calling it missing would send people to create a second configuration the registry refuses.
//! Only a successful read that returned no configuration counts.
//!
//! The suggested command uses npm 11's `npm trust <provider>` (npm 11.10 or later), filled in from
//! `policy.expected_publishers` when the package has an entry there.

use super::{CheckDef, Dod, Finding, Group, Severity, Snapshot, Source, TrustStatus};
use crate::config::{ExpectedSource, PolicyConfig};

pub const CHECK: CheckDef = CheckDef {
    id: "trusted-publisher-missing",
    group: Group::Trust,
    source: Source::Trust,
    dod: &[Dod::D1],
    event: false,
    subject: Some("package"),
    evaluate,
};

fn evaluate(snap: &Snapshot, policy: &PolicyConfig) -> Vec<Finding> {
    let Some(trust) = snap.trust else {
        return Vec::new();
    };
    trust
        .iter()
        .filter_map(|(name, status)| match status {
            TrustStatus::Read(configs) if configs.is_empty() => Some(name),
            // NeedsOtp / Failed: unknown, not missing (see the module doc).
            _ => None,
        })
        .map(|name| Finding {
            check: CHECK.id.into(),
            subject_key: name.clone(),
            subject: format!("package {name}"),
            severity: Severity::Warning,
            summary: format!("{name} has no trusted publisher configured."),
            why: "Without a trusted publisher a release needs a token or a person at a terminal, so publish \
                  tokens cannot be deleted and the package cannot be set to \"Require 2FA and disallow tokens\" \
                  without stopping releases."
                .into(),
            fix: format!(
                "Configure one (an attended run with 2FA; trust commands refuse bypass-2FA tokens): {}. Or use the \
                 package's settings page, https://www.npmjs.com/package/{name}/access. The publish job must then \
                 request an OIDC token at runtime and reference no NPM_TOKEN.",
                command(name, policy.expected_publishers.get(name))
            ),
            dod: CHECK.dod_box(),
        })
        .collect()
}

/// The `npm trust` command for `name`, concrete where the policy says where it publishes from.
fn command(name: &str, expected: Option<&ExpectedSource>) -> String {
    match expected {
        Some(e) if e.provider == "github" => format!(
            "`npm trust github {name} --repository {} --file {} --environment <environment> --allow-publish`, \
             where the environment only allows the release branch",
            e.path,
            e.workflow.as_deref().unwrap_or("<workflow.yml>")
        ),
        Some(e) if e.provider == "gitlab" => format!(
            "`npm trust gitlab {name} --project {} --file .gitlab-ci.yml --environment <environment> \
             --allow-publish`, where the environment is protected to the release branch",
            e.path
        ),
        Some(e) if e.provider == "circleci" => {
            let (org, project) = e.path.split_once('/').unwrap_or((e.path.as_str(), "?"));
            format!(
                "`npm trust circleci {name}` with org id {org}, project id {project}, the pipeline definition \
                 id, the VCS origin and the id of a branch-restricted context (`npm trust circleci --help` lists \
                 the flags)"
            )
        }
        _ => format!(
            "`npm trust github {name} --repository <owner/repo> --file <workflow.yml> --environment <environment> \
             --allow-publish` (GitHub Actions; `npm trust gitlab` and `npm trust circleci` for the others), and \
             add the package to policy.expected_publishers"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{
        keys, run_group_on, run_on, subjects, trust, watch_policy, Inputs,
    };
    use super::*;
    use std::collections::BTreeMap;

    fn run(trust: &BTreeMap<String, TrustStatus>, policy: &PolicyConfig) -> Vec<Finding> {
        run_on(
            &CHECK,
            Inputs {
                trust: Some(trust),
                ..Inputs::default()
            },
            policy,
        )
    }

    #[test]
    fn only_an_empty_read_is_missing() {
        let t = trust();
        // The fixture also holds @acme-labs/tool (NeedsOtp) and @acme/legacy (Failed).
        assert_eq!(t.get("@acme-labs/tool"), Some(&TrustStatus::NeedsOtp));
        assert!(matches!(
            t.get("@acme/legacy"),
            Some(TrustStatus::Failed(_))
        ));
        let got = run(&t, &watch_policy());
        assert_eq!(
            subjects(&got),
            vec![("package left-pad-acme".into(), Severity::Warning)]
        );
        assert_eq!(
            got[0].summary,
            "left-pad-acme has no trusted publisher configured."
        );
        assert!(
            got[0].fix.contains(
                "`npm trust github left-pad-acme --repository <owner/repo> --file <workflow.yml> --environment \
                 <environment> --allow-publish`"
            ),
            "{}",
            got[0].fix
        );
        assert!(got[0]
            .fix
            .contains("https://www.npmjs.com/package/left-pad-acme/access"));
        assert_eq!(got[0].dod, Some(Dod::D1));
    }

    #[test]
    fn needs_otp_and_failed_reads_yield_nothing() {
        let t: BTreeMap<String, TrustStatus> = BTreeMap::from([
            ("a".to_string(), TrustStatus::NeedsOtp),
            ("b".to_string(), TrustStatus::Failed("HTTP 500".into())),
        ]);
        assert!(run(&t, &watch_policy()).is_empty());
    }

    #[test]
    fn the_command_follows_the_expected_publisher() {
        let empty = TrustStatus::Read(Vec::new());
        let t: BTreeMap<String, TrustStatus> = BTreeMap::from([
            ("@acme/cli".to_string(), empty.clone()),
            ("@acme/core".to_string(), empty.clone()),
            ("@acme/ci".to_string(), empty),
        ]);
        let mut p = watch_policy();
        p.expected_publishers.insert(
            "@acme/ci".into(),
            "circleci:org-1/proj-2".parse().expect("source"),
        );
        let got = run(&t, &p);
        assert_eq!(keys(&got), vec!["@acme/ci", "@acme/cli", "@acme/core"]);
        assert!(got[0]
            .fix
            .contains("`npm trust circleci @acme/ci` with org id org-1, project id proj-2"));
        assert!(got[1].fix.contains(
            "`npm trust gitlab @acme/cli --project acme/tools/cli --file .gitlab-ci.yml"
        ));
        assert!(got[2].fix.contains(
            "`npm trust github @acme/core --repository acme/core --file release.yml --environment"
        ));
    }

    #[test]
    fn trust_group_runs_only_with_trust_data() {
        let (findings, ran) = run_group_on(Group::Trust, Inputs::default(), &watch_policy());
        assert!(findings.is_empty() && ran.is_empty(), "{ran:?}");
        let t = trust();
        let (_, ran) = run_group_on(
            Group::Trust,
            Inputs {
                trust: Some(&t),
                ..Inputs::default()
            },
            &watch_policy(),
        );
        assert_eq!(
            ran,
            vec!["trusted-publisher-missing", "trusted-publisher-unbound"]
        );
    }
}
