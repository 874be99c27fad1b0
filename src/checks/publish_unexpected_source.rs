//! `publish-unexpected-source`: a trusted-publishing release that did not come from where the package
//! is expected to be published from (`policy.expected_publishers`, box D2).
//!
//! Why: a trusted publisher proves a version came from *some* CI identity the package trusts, not
//! from the one you hardened. A release through another provider, another repository or another
//! workflow means there is a publishing path outside the branch-protected environment: a second trust
//! configuration, a fork's workflow, a manual "publish" workflow anyone with push access can start.
//!
//! What can be compared, and what cannot:
//! - The provider: `_npmUser.trustedPublisher.id` against the expected provider, for every version.
//! - For GitHub only, and only when the provenance statement was read
//!   (`PackageSet::provenance["<pkg>@<version>"]`): the statement's repository against
//!   `https://github.com/<owner/repo>` (case-insensitive, a trailing `.git` or `/` tolerated) and, when
//!   the policy names a workflow, the basename of the statement's workflow path.
//! - When there is no provenance (private repository, CircleCI, GitLab without a Sigstore token, or
//!   not read yet), only the provider is compared: the packument itself does not name the repository.
//!   A statement field that is missing is not compared either. GitLab and CircleCI statements are not
//!   parsed, so for those providers the provider is all that is checked.
//!
//! Versions without a trusted publisher are `publish-untrusted`'s business; like that check, this one
//! skips versions at or before the cutoff, versions without a publish time, and deprecated versions
//! (deprecating is the response, so it resolves the finding).

use chrono::SecondsFormat;

use super::command::{npm_or_withheld, Word};
use super::{CheckDef, Dod, Finding, Group, Severity, Snapshot, Source};
use crate::config::{ExpectedSource, PolicyConfig};
use crate::registry::{ProvenanceSource, TrustedPublisher};

pub const CHECK: CheckDef = CheckDef {
    id: "publish-unexpected-source",
    group: Group::Packages,
    source: Source::Packages,
    dod: &[Dod::D2],
    event: false,
    subject: Some("package"),
    evaluate,
};

fn evaluate(snap: &Snapshot, policy: &PolicyConfig) -> Vec<Finding> {
    let Some(set) = snap.packages else {
        return Vec::new();
    };
    let cutoff = policy.trusted_publishing_since;
    let mut out = Vec::new();
    for (name, expected) in &policy.expected_publishers {
        let Some(p) = set.packuments.get(name) else {
            continue;
        };
        for v in &p.versions {
            let (Some(published), Some(tp)) = (v.published, v.trusted_publisher.as_ref()) else {
                continue;
            };
            if published <= cutoff || v.deprecated {
                continue;
            }
            let spec = format!("{name}@{}", v.version);
            let mismatches = mismatches(expected, tp, set.provenance.get(&spec));
            if mismatches.is_empty() {
                continue;
            }
            out.push(Finding {
                check: CHECK.id.into(),
                subject_key: spec.clone(),
                subject: format!("version {spec}"),
                severity: Severity::Critical,
                summary: format!(
                    "{spec} was published at {} through trusted publishing, but not from the expected source \
                     {expected}: {}.",
                    published.to_rfc3339_opts(SecondsFormat::Secs, true),
                    mismatches.join("; ")
                ),
                why: "Trusted publishing only proves that some CI identity the package trusts published it. A \
                      release from another provider, repository or workflow means a publishing path exists \
                      outside the branch-protected release environment (a second trust configuration, a fork, \
                      a manual workflow), and anyone who can run it can ship code."
                    .into(),
                fix: format!(
                    "Check the version's contents and the CI run that built it. If it is not yours, deprecate it: \
                     {}. Then list the package's trusted publisher ({}); if it does not point at {expected}, \
                     remove it with {} and create the right one, bound to a protected environment. If the new \
                     source is intended, update policy.expected_publishers.\"{name}\".",
                    npm_or_withheld(&[
                        Word::Lit("deprecate"),
                        Word::Spec(&spec),
                        Word::Lit(super::publish_untrusted::DEPRECATE_WHY),
                    ]),
                    npm_or_withheld(&[Word::Lit("trust"), Word::Lit("list"), Word::Package(name)]),
                    npm_or_withheld(&[
                        Word::Lit("trust"),
                        Word::Lit("revoke"),
                        Word::Lit("--id"),
                        Word::Lit("<id>"),
                        Word::Package(name),
                    ]),
                ),
                dod: CHECK.dod_box(),
            });
        }
    }
    out
}

/// What differs from the expectation, in words; empty when everything that can be compared matches.
fn mismatches(
    expected: &ExpectedSource,
    tp: &TrustedPublisher,
    provenance: Option<&ProvenanceSource>,
) -> Vec<String> {
    let mut out = Vec::new();
    if !tp.id.eq_ignore_ascii_case(&expected.provider) {
        out.push(format!(
            "the trusted publisher is `{}`, expected `{}`",
            tp.id, expected.provider
        ));
    }
    if expected.provider != "github" {
        return out;
    }
    let Some(prov) = provenance else {
        return out;
    };
    let want_repo = format!("https://github.com/{}", expected.path);
    if let Some(repo) = &prov.repository {
        if normalize_repo(repo) != normalize_repo(&want_repo) {
            out.push(format!(
                "provenance names repository {repo}, expected {want_repo}"
            ));
        }
    }
    if let (Some(want), Some(path)) = (&expected.workflow, &prov.workflow_path) {
        let file = path.rsplit('/').next().unwrap_or(path);
        if file != want {
            out.push(format!("provenance names workflow {path}, expected {want}"));
        }
    }
    out
}

/// `https://GitHub.com/Acme/Core.git/` → `https://github.com/acme/core`.
fn normalize_repo(url: &str) -> String {
    let lower = url.trim().to_ascii_lowercase();
    let trimmed = lower.trim_end_matches('/');
    trimmed
        .strip_suffix(".git")
        .unwrap_or(trimmed)
        .trim_end_matches('/')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{keys, packages, run_on, subjects, watch_policy, Inputs};
    use super::*;
    use crate::checks::PackageSet;

    fn run(set: &PackageSet, policy: &PolicyConfig) -> Vec<Finding> {
        run_on(
            &CHECK,
            Inputs {
                packages: Some(set),
                ..Inputs::default()
            },
            policy,
        )
    }

    #[test]
    fn provider_repository_and_workflow_mismatches() {
        let got = run(&packages(), &watch_policy());
        assert_eq!(
            subjects(&got),
            vec![
                ("version @acme/cli@3.1.0".into(), Severity::Critical),
                ("version @acme/core@1.3.0".into(), Severity::Critical),
                ("version @acme/core@1.3.1".into(), Severity::Critical),
            ]
        );
        assert_eq!(
            got[0].summary,
            "@acme/cli@3.1.0 was published at 2026-02-01T10:00:00Z through trusted publishing, but not from \
             the expected source gitlab:acme/tools/cli: the trusted publisher is `github`, expected `gitlab`."
        );
        // GitLab expected: the GitHub provenance of 3.1.0 is not compared, only the provider.
        assert!(!got[0].summary.contains("provenance"), "{}", got[0].summary);
        assert!(
            got[1].summary.ends_with(
                "provenance names repository https://github.com/mallory/core, expected https://github.com/acme/core."
            ),
            "{}",
            got[1].summary
        );
        // 1.3.1: `https://GitHub.com/Acme/Core.git` is the right repository; only the workflow differs.
        assert!(
            got[2].summary.ends_with(
                "provenance names workflow .github/workflows/manual.yml, expected release.yml."
            ),
            "{}",
            got[2].summary
        );
        assert!(got[1].fix.contains("`npm deprecate @acme/core@1.3.0 \""));
        assert!(got[1]
            .fix
            .contains("`npm trust revoke --id <id> @acme/core`"));
        assert_eq!(got[1].dod, Some(Dod::D2));
    }

    #[test]
    fn matching_provenance_and_missing_provenance_pass() {
        let k = keys(&run(&packages(), &watch_policy()));
        // 1.2.0 matches exactly, 1.4.0 with a trailing slash, 1.3.2 has no provenance (provider only),
        // 1.3.3 is deprecated, 3.1.1 came from GitLab as expected.
        for ok in [
            "@acme/core@1.2.0",
            "@acme/core@1.4.0",
            "@acme/core@1.3.2",
            "@acme/core@1.3.3",
            "@acme/cli@3.1.1",
        ] {
            assert!(!k.contains(&ok.to_string()), "{ok} in {k:?}");
        }
    }

    #[test]
    fn without_provenance_only_the_provider_counts() {
        let mut set = packages();
        set.provenance.clear();
        assert_eq!(keys(&run(&set, &watch_policy())), vec!["@acme/cli@3.1.0"]);
    }

    #[test]
    fn untrusted_and_unlisted_packages_are_not_this_checks_business() {
        let got = run(&packages(), &watch_policy());
        // @acme/core@1.2.1 (token publish) and left-pad-acme (no expectation, CircleCI) are absent.
        assert!(got
            .iter()
            .all(|f| f.subject_key != "@acme/core@1.2.1"
                && !f.subject_key.starts_with("left-pad-acme")));
        let mut p = watch_policy();
        p.expected_publishers.clear();
        assert!(run(&packages(), &p).is_empty());
    }

    #[test]
    fn without_a_workflow_in_policy_the_workflow_is_not_compared() {
        let mut p = watch_policy();
        p.expected_publishers.insert(
            "@acme/core".into(),
            "github:acme/core".parse().expect("source"),
        );
        assert_eq!(
            keys(&run(&packages(), &p)),
            vec!["@acme/cli@3.1.0", "@acme/core@1.3.0"]
        );
    }

    #[test]
    fn repositories_compare_loosely() {
        let want = normalize_repo("https://github.com/acme/core");
        for same in [
            "https://github.com/acme/core",
            "https://GitHub.com/Acme/Core",
            "https://github.com/acme/core.git",
            "https://github.com/acme/core/",
            "https://github.com/acme/core.git/",
        ] {
            assert_eq!(normalize_repo(same), want, "{same}");
        }
        assert_ne!(normalize_repo("https://github.com/acme/core-fork"), want);
        assert_ne!(normalize_repo("https://github.com/acme/cor"), want);
    }
}
