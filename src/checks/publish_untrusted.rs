//! `publish-untrusted`: a version published after `policy.trusted_publishing_since` without a trusted
//! publisher (evidence for boxes D4 and D7).
//!
//! Why this check exists: the publishing-2FA mode of a package ("Require 2FA and disallow tokens") is
//! write-only, so the daemon cannot read whether tokens are still accepted. The packument shows the
//! consequence instead: once every release goes through trusted publishing (OIDC), a version whose
//! `_npmUser` has no `trustedPublisher` was published with a token or by hand. That proves tokens are
//! still accepted for the package, or that a bypass-2FA token was used.
//!
//! A version published exactly at the cutoff is not "after" it. Deprecated versions are skipped:
//! deprecating is the response this check asks for, so doing it resolves the finding. Versions with
//! no publish time in the packument cannot be placed before or after the cutoff and are skipped too
//! (reporting them would flag every old version of a document with a thin `time` map).

use chrono::{DateTime, SecondsFormat, Utc};

use super::command::{npm_or_withheld, Word};
use super::{CheckDef, Dod, Finding, Group, Severity, Snapshot, Source};
use crate::config::PolicyConfig;

pub const CHECK: CheckDef = CheckDef {
    id: "publish-untrusted",
    group: Group::Packages,
    source: Source::Packages,
    dod: &[Dod::D7, Dod::D3, Dod::D4],
    event: false,
    subject: Some("package"),
    evaluate,
};

/// npm lets a version be unpublished for this long after it was published (npm's unpublish policy;
/// other conditions apply, so the fix only mentions it as an option).
const UNPUBLISH_WINDOW_HOURS: i64 = 72;

/// The placeholder a suggested `npm deprecate` leaves for its message.
pub(super) const DEPRECATE_WHY: &str = "\"<why, and which version to use>\"";

fn evaluate(snap: &Snapshot, policy: &PolicyConfig) -> Vec<Finding> {
    let Some(set) = snap.packages else {
        return Vec::new();
    };
    let cutoff = policy.trusted_publishing_since;
    let mut out = Vec::new();
    for (name, p) in &set.packuments {
        for v in &p.versions {
            // No publish time: cannot judge it against the cutoff (see the module doc).
            let Some(published) = v.published else {
                continue;
            };
            if published <= cutoff || v.trusted_publisher.is_some() || v.deprecated {
                continue;
            }
            out.push(finding(
                name,
                &v.version,
                v.publisher.as_deref(),
                published,
                cutoff,
                snap.now,
            ));
        }
    }
    out
}

fn finding(
    name: &str,
    version: &str,
    publisher: Option<&str>,
    published: DateTime<Utc>,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Finding {
    // A first run can hold one of these per version of every package (90,000 at 10,000 packages):
    // what is the same for every version is said once, in `WHY`, and the fix keeps only what names
    // this version.
    let spec = format!("{name}@{version}");
    let account = publisher.map_or_else(
        || "an unknown account".to_string(),
        |a| format!("account `{a}`"),
    );
    let check_account = publisher.map_or_else(
        || "find out which account published it (the packument does not say)".to_string(),
        |a| format!("check the account `{a}`"),
    );
    let unpublish = if now - published < chrono::Duration::hours(UNPUBLISH_WINDOW_HOURS) {
        format!(
            " Still inside npm's {UNPUBLISH_WINDOW_HOURS}-hour unpublish window: {} is possible if \
             nothing depends on it yet.",
            npm_or_withheld(&[Word::Lit("unpublish"), Word::Spec(&spec)])
        )
    } else {
        String::new()
    };
    Finding {
        check: CHECK.id.into(),
        subject_key: spec.clone(),
        subject: format!("version {spec}"),
        severity: Severity::Critical,
        summary: format!(
            "Published by {account} at {} without a trusted publisher (cutoff {}).",
            published.to_rfc3339_opts(SecondsFormat::Secs, true),
            cutoff.to_rfc3339_opts(SecondsFormat::Secs, true),
        ),
        why: WHY.into(),
        fix: format!(
            "Once inspected, {}.{unpublish} Revoke the tokens that could publish and {check_account}.",
            npm_or_withheld(&[Word::Lit("deprecate"), Word::Spec(&spec), Word::Lit(DEPRECATE_WHY)]),
        ),
        dod: CHECK.dod_box(),
    }
}

/// Why it matters and what the fix's steps mean, the same for every version.
const WHY: &str = "After the cutoff every release is meant to come from trusted publishing (OIDC). A version \
    published without it proves the registry still accepts a token for this package (its publishing access \
    is not \"Require 2FA and disallow tokens\"), or that a bypass-2FA token was used: anyone holding such a \
    token can ship malicious code the same way. Evidence against boxes D4 and D7. Inspect the version first: \
    compare what `npm pack <name>@<version>` gives with the tagged source. Deprecate at once a version you \
    did not release, and one you did once it is released again through trusted publishing: deprecating \
    resolves the finding. `npm token list` and `npm token revoke <id>` find and revoke tokens; check the \
    publishing account's sessions and 2FA devices too. `npm-watchdog harden` sets every package to \"Require 2FA and disallow tokens\".";

#[cfg(test)]
mod tests {
    use super::super::fixtures::{
        keys, packages, policy, run_group_on, run_on, subjects, watch_policy, Inputs,
    };
    use super::*;

    fn run(policy: &PolicyConfig) -> Vec<Finding> {
        let set = packages();
        run_on(
            &CHECK,
            Inputs {
                packages: Some(&set),
                ..Inputs::default()
            },
            policy,
        )
    }

    #[test]
    fn token_publishes_after_the_cutoff_are_critical() {
        let got = run(&watch_policy());
        assert_eq!(
            subjects(&got),
            vec![
                ("version @acme/cli@3.1.2".into(), Severity::Critical),
                ("version @acme/core@1.2.1".into(), Severity::Critical),
                ("version left-pad-acme@0.2.1".into(), Severity::Critical),
            ]
        );
        assert_eq!(
            keys(&got),
            vec!["@acme/cli@3.1.2", "@acme/core@1.2.1", "left-pad-acme@0.2.1"]
        );
        let core = &got[1];
        assert_eq!(
            core.summary,
            "Published by account `bob` at 2026-03-03T14:25:00Z without a trusted publisher (cutoff \
             2026-01-01T00:00:00Z)."
        );
        assert!(
            core.fix.contains("`npm deprecate @acme/core@1.2.1 \""),
            "{}",
            core.fix
        );
        assert!(core.why.contains("`npm token list`"), "{}", core.why);
        assert!(core.why.contains("`npm-watchdog harden`"), "{}", core.why);
        assert!(core.fix.contains("check the account `bob`"), "{}", core.fix);
        assert!(
            !core.fix.contains("npm unpublish"),
            "months old: {}",
            core.fix
        );
        assert!(core.why.contains("D4") && core.why.contains("D7"));
        assert_eq!(core.dod, Some(Dod::D7));
    }

    #[test]
    fn a_publish_without_npm_user_names_an_unknown_account() {
        let got = run(&watch_policy());
        assert!(
            got[0]
                .summary
                .contains("by an unknown account at 2026-08-20T07:30:00Z"),
            "{}",
            got[0].summary
        );
    }

    #[test]
    fn a_fresh_publish_may_still_be_unpublished() {
        let got = run(&watch_policy());
        let fresh = &got[2];
        assert!(
            fresh.summary.contains("account `carol`"),
            "{}",
            fresh.summary
        );
        assert!(
            fresh.fix.contains("`npm unpublish left-pad-acme@0.2.1`"),
            "{}",
            fresh.fix
        );
    }

    #[test]
    fn cutoff_is_exclusive_and_before_is_fine() {
        // @acme/core@1.1.0 is published exactly at the cutoff, 1.0.0 before it: neither fires.
        let got = run(&watch_policy());
        assert!(!keys(&got)
            .iter()
            .any(|k| k == "@acme/core@1.1.0" || k == "@acme/core@1.0.0"));
        // One second earlier, 1.1.0 is after the cutoff.
        let mut p = watch_policy();
        p.trusted_publishing_since -= chrono::Duration::seconds(1);
        assert!(keys(&run(&p)).contains(&"@acme/core@1.1.0".to_string()));
    }

    #[test]
    fn deprecated_trusted_and_timeless_versions_are_skipped() {
        let k = keys(&run(&watch_policy()));
        // 1.2.2: deprecated token publish; 1.2.0: trusted; 2.0.0-rc.1: no publish time.
        for skipped in [
            "@acme/core@1.2.2",
            "@acme/core@1.2.0",
            "@acme/core@2.0.0-rc.1",
        ] {
            assert!(!k.contains(&skipped.to_string()), "{skipped} in {k:?}");
        }
        // Once deprecated, the finding resolves.
        let mut set = packages();
        for p in set.packuments.values_mut() {
            for v in &mut std::sync::Arc::make_mut(p).versions {
                v.deprecated = true;
            }
        }
        let got = run_on(
            &CHECK,
            Inputs {
                packages: Some(&set),
                ..Inputs::default()
            },
            &watch_policy(),
        );
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn a_later_cutoff_leaves_less() {
        let mut p = policy();
        p.trusted_publishing_since = "2026-08-01T00:00:00Z".parse().expect("time");
        assert_eq!(
            keys(&run(&p)),
            vec!["@acme/cli@3.1.2", "left-pad-acme@0.2.1"]
        );
    }

    #[test]
    fn package_group_does_not_run_without_packuments() {
        let (findings, ran) = run_group_on(Group::Packages, Inputs::default(), &watch_policy());
        assert!(findings.is_empty());
        assert!(ran.is_empty(), "{ran:?}");
        let set = packages();
        let (_, ran) = run_group_on(
            Group::Packages,
            Inputs {
                packages: Some(&set),
                ..Inputs::default()
            },
            &watch_policy(),
        );
        assert_eq!(
            ran,
            vec![
                "publish-untrusted",
                "publish-unexpected-source",
                "maintainers-changed"
            ]
        );
    }
}
