//! The Definition-of-Done scorecard (D1-D9): a pure function from what an audit read, and the findings
//! the checks made of it, to one verdict per box with its evidence.
//!
//! A box is PASS only when what was read shows it; what cannot be read (CI secrets for D3 when no CI
//! source is configured or one could not be read, the publishing-access setting for D7, trust configs
//! without an OTP) is UNVERIFIED with the reason, never a silent PASS.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::checks::{self, PackageSet, TrustStatus};
use crate::ci::CiInventory;
use crate::config::PolicyConfig;
use crate::finding::{Dod, Finding};
use crate::registry::{OrgView, Token};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Pass,
    Fail,
    Unverified,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Unverified => "UNVERIFIED",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DodRow {
    pub id: &'static str,
    pub title: &'static str,
    pub status: Verdict,
    pub evidence: Vec<String>,
}

/// Everything the scorecard looks at.
pub struct Input<'a> {
    pub now: DateTime<Utc>,
    pub policy: &'a PolicyConfig,
    pub tokens: &'a [Token],
    /// The registry key of the daemon's own credential, when it can be derived.
    pub own_key: Option<&'a str>,
    /// Every finding of this audit, of every check that ran.
    pub findings: &'a [Finding],
    /// `None` when no package is watched.
    pub packages: Option<&'a PackageSet>,
    /// `None` when no org is watched.
    pub orgs: Option<&'a [OrgView]>,
    /// `None` when trust configs were not read (no `--otp`, or nothing watched).
    pub trust: Option<&'a BTreeMap<String, TrustStatus>>,
    /// When `harden` last set "Require 2FA and disallow tokens", per package.
    pub hardened: &'a BTreeMap<String, DateTime<Utc>>,
    /// `None` when no CI provider is configured.
    pub ci: Option<&'a CiInventory>,
}

/// The findings that are evidence against `dod`: those of the checks that say they feed it.
fn against(findings: &[Finding], dod: Dod) -> Vec<&Finding> {
    let checks: Vec<&str> = checks::feeding(dod).map(|c| c.id).collect();
    findings
        .iter()
        .filter(|f| checks.contains(&&*f.check))
        .collect()
}

fn lines(findings: &[&Finding]) -> Vec<String> {
    findings
        .iter()
        .map(|f| format!("{}: {}", f.subject, f.summary))
        .collect()
}

fn row(dod: Dod, title: &'static str, status: Verdict, evidence: Vec<String>) -> DodRow {
    DodRow {
        id: dod.as_str(),
        title,
        status,
        evidence,
    }
}

/// FAIL, with the findings against `dod` as its evidence, when there are any.
fn failing(i: &Input, dod: Dod, title: &'static str) -> Option<DodRow> {
    let bad = against(i.findings, dod);
    (!bad.is_empty()).then(|| row(dod, title, Verdict::Fail, lines(&bad)))
}

const NO_PACKAGES: &str =
    "no package is watched (set watch.own_account, watch.users, watch.orgs or watch.packages)";
const NEEDS_OTP: &str = "unverified: needs --otp, or a terminal to ask for a one-time password \
     (trust configurations are behind 2FA)";

pub fn scorecard(i: &Input) -> Vec<DodRow> {
    vec![
        d1(i),
        d2(i),
        d3(i),
        d4(i),
        d5(i),
        d6(i),
        d7(i),
        d8(i),
        d9(i),
    ]
}

fn watched<'a>(i: &Input<'a>) -> Option<&'a PackageSet> {
    i.packages.filter(|p| !p.packuments.is_empty())
}

fn d1(i: &Input) -> DodRow {
    const T: &str = "every publishing package has a trusted publisher configured";
    let Some(pkgs) = watched(i) else {
        return row(Dod::D1, T, Verdict::Unverified, vec![NO_PACKAGES.into()]);
    };
    let Some(trust) = i.trust else {
        return row(Dod::D1, T, Verdict::Unverified, vec![NEEDS_OTP.into()]);
    };
    if let Some(fail) = failing(i, Dod::D1, T) {
        return fail;
    }
    let mut evidence = Vec::new();
    let mut unknown = false;
    for name in pkgs.packuments.keys() {
        match trust.get(name) {
            Some(TrustStatus::Read(cfgs)) => {
                let shown: Vec<String> = cfgs.iter().map(|c| c.describe()).collect();
                evidence.push(format!("{name}: {}", shown.join("; ")));
            }
            Some(TrustStatus::NeedsOtp) | None => {
                unknown = true;
                evidence.push(format!("{name}: {NEEDS_OTP}"));
            }
            Some(TrustStatus::Failed(e)) => {
                unknown = true;
                evidence.push(format!("{name}: could not be read: {e}"));
            }
        }
    }
    row(
        Dod::D1,
        T,
        if unknown {
            Verdict::Unverified
        } else {
            Verdict::Pass
        },
        evidence,
    )
}

fn d2(i: &Input) -> DodRow {
    const T: &str =
        "every trusted publisher is bound to a branch-restricted context or environment";
    if let Some(fail) = failing(i, Dod::D2, T) {
        return fail;
    }
    if watched(i).is_none() {
        return row(Dod::D2, T, Verdict::Unverified, vec![NO_PACKAGES.into()]);
    }
    match i.trust {
        None => row(Dod::D2, T, Verdict::Unverified, vec![NEEDS_OTP.into()]),
        Some(t) if t.values().any(|s| !matches!(s, TrustStatus::Read(_))) => row(
            Dod::D2,
            T,
            Verdict::Unverified,
            vec!["some trust configurations could not be read (see D1)".into()],
        ),
        Some(t) => {
            // A configuration this version cannot read the claims of is not bound as far as anyone
            // here can tell: never a pass.
            let unknown: Vec<String> = t
                .iter()
                .filter_map(|(name, s)| match s {
                    TrustStatus::Read(cfgs) => Some((name, cfgs)),
                    _ => None,
                })
                .flat_map(|(name, cfgs)| {
                    cfgs.iter().filter_map(move |c| {
                        c.not_understood()
                            .map(|why| format!("{name}: {why}; its binding cannot be judged"))
                    })
                })
                .collect();
            if unknown.is_empty() {
                row(
                    Dod::D2,
                    T,
                    Verdict::Pass,
                    vec!["every trust configuration names a context (CircleCI) or an environment (GitHub, GitLab)".into()],
                )
            } else {
                row(Dod::D2, T, Verdict::Unverified, unknown)
            }
        }
    }
}

fn d3(i: &Input) -> DodRow {
    const T: &str = "publish jobs fetch an OIDC token at runtime; no NPM_TOKEN is referenced";
    let in_ci: Vec<&Finding> = i
        .findings
        .iter()
        .filter(|f| f.check == checks::CI_NPM_SECRET)
        .collect();
    let published: Vec<&Finding> = against(i.findings, Dod::D3)
        .into_iter()
        .filter(|f| f.check != checks::CI_NPM_SECRET)
        .collect();
    if !in_ci.is_empty() || !published.is_empty() {
        let mut ev = Vec::new();
        if !in_ci.is_empty() {
            ev.push("npm tokens kept in CI:".to_string());
            ev.extend(lines(&in_ci));
        }
        if !published.is_empty() {
            ev.push("versions published with a token after the cutoff:".into());
            ev.extend(lines(&published));
        }
        return row(Dod::D3, T, Verdict::Fail, ev);
    }
    let mut ev = Vec::new();
    if let Some(pkgs) = watched(i) {
        let trusted = pkgs
            .packuments
            .values()
            .filter(|p| p.latest().is_some_and(|v| v.trusted_publisher.is_some()))
            .count();
        ev.push(format!(
            "{trusted} of {} watched packages' latest versions were published through trusted publishing",
            pkgs.packuments.len()
        ));
    }
    let Some(ci) = i.ci else {
        ev.insert(
            0,
            "no CI provider is configured ([[ci.github]], [[ci.circleci]], [[ci.gitlab]]): the registry \
             cannot show CI"
                .into(),
        );
        return row(Dod::D3, T, Verdict::Unverified, ev);
    };
    let mut read: Vec<String> = ci
        .units_read
        .iter()
        .map(|(kind, units)| {
            let secrets = ci.secrets.iter().filter(|s| &s.provider == kind).count();
            format!("{kind}: {units} secret list(s) read, {secrets} secret(s), none an npm token")
        })
        .collect();
    if !ci.complete() {
        let mut unverified = vec!["some CI secret lists could not be read:".to_string()];
        unverified.extend(ci.unread.iter().cloned());
        unverified.append(&mut read);
        unverified.append(&mut ev);
        return row(Dod::D3, T, Verdict::Unverified, unverified);
    }
    read.push(
        "judged by name (policy.ci_secret_names) and, on GitLab, by value: a token kept under an \
         innocuous name on GitHub or CircleCI cannot be seen"
            .into(),
    );
    read.append(&mut ev);
    row(Dod::D3, T, Verdict::Pass, read)
}

fn d4(i: &Input) -> DodRow {
    const T: &str = "a release has succeeded end to end under trusted publishing";
    let Some(pkgs) = watched(i) else {
        return row(Dod::D4, T, Verdict::Unverified, vec![NO_PACKAGES.into()]);
    };
    let mut fail = Vec::new();
    let mut pass = Vec::new();
    for p in pkgs.packuments.values() {
        match p.latest() {
            Some(v) => {
                let when = v.published.map_or("an unknown time".into(), |t| {
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                });
                match &v.trusted_publisher {
                    Some(tp) => pass.push(format!("{}@{}: trusted publisher {} at {when}", p.name, v.version, tp.id)),
                    None => fail.push(format!(
                        "{}@{}: latest version published by {} at {when} without a trusted publisher",
                        p.name,
                        v.version,
                        v.publisher.as_deref().unwrap_or("an unknown account")
                    )),
                }
            }
            None => fail.push(format!("{}: no latest version", p.name)),
        }
    }
    // Untrusted publishes that are not already listed as a package's latest version.
    let latest: Vec<String> = pkgs
        .packuments
        .values()
        .filter_map(|p| p.latest().map(|v| format!("{}@{}", p.name, v.version)))
        .collect();
    let bad: Vec<&Finding> = against(i.findings, Dod::D4)
        .into_iter()
        .filter(|f| !latest.contains(&f.subject_key))
        .collect();
    if !fail.is_empty() || !bad.is_empty() {
        fail.extend(lines(&bad));
        return row(Dod::D4, T, Verdict::Fail, fail);
    }
    row(Dod::D4, T, Verdict::Pass, pass)
}

fn d5(i: &Input) -> DodRow {
    const T: &str = "every static npm token on the account is deleted";
    let present: Vec<String> = checks::not_allowlisted(i.tokens, i.policy, i.now)
        .map(|t| {
            let own = if checks::is_own_token(t, i.own_key, i.policy) {
                "; npm-watchdog's own credential: allowlist it with an expiry"
            } else {
                ""
            };
            format!(
                "{} ({} {}, created {}{own})",
                t.label(),
                t.kind.as_str(),
                t.access.as_str(),
                t.created
                    .map_or("-".into(), |c| c.format("%Y-%m-%d").to_string())
            )
        })
        .collect();
    if present.is_empty() {
        row(
            Dod::D5,
            T,
            Verdict::Pass,
            vec![format!(
                "{} token(s) listed, all allowlisted",
                i.tokens.len()
            )],
        )
    } else {
        row(Dod::D5, T, Verdict::Fail, present)
    }
}

fn d6(i: &Input) -> DodRow {
    const T: &str = "every service account that only held a publish token is retired";
    if let Some(fail) = failing(i, Dod::D6, T) {
        return fail;
    }
    if i.policy.retired_accounts.is_empty() {
        return row(
            Dod::D6,
            T,
            Verdict::Unverified,
            vec!["no account is listed in policy.retired_accounts".into()],
        );
    }
    if i.orgs.is_none() {
        return row(
            Dod::D6,
            T,
            Verdict::Unverified,
            vec!["no org is watched, so membership cannot be read (set watch.orgs)".into()],
        );
    }
    row(
        Dod::D6,
        T,
        Verdict::Pass,
        vec![format!(
            "{} retired account(s) ({}) are neither org members nor maintainers of a watched package",
            i.policy.retired_accounts.len(),
            i.policy.retired_accounts.join(", ")
        )],
    )
}

fn d7(i: &Input) -> DodRow {
    const T: &str = "every package's publishing access is \"Require 2FA and disallow tokens\"";
    let mut ev =
        vec!["the setting is not readable through npm's API (write-only by design)".to_string()];
    let Some(pkgs) = watched(i) else {
        ev.push(NO_PACKAGES.into());
        return row(Dod::D7, T, Verdict::Unverified, ev);
    };
    let bad = against(i.findings, Dod::D7);
    if !bad.is_empty() {
        ev.push(
            "versions published with a token after the cutoff prove tokens are still accepted:"
                .into(),
        );
        ev.extend(lines(&bad));
        return row(Dod::D7, T, Verdict::Fail, ev);
    }
    let never: Vec<&String> = pkgs
        .packuments
        .keys()
        .filter(|n| !i.hardened.contains_key(*n))
        .collect();
    if never.is_empty() {
        let oldest = pkgs
            .packuments
            .keys()
            .filter_map(|n| i.hardened.get(n))
            .min();
        if let Some(t) = oldest {
            ev.push(format!(
                "enforced by `npm-watchdog harden` on every watched package, the oldest at {}",
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
        ev.push("no version was published with a token since the cutoff".into());
        return row(Dod::D7, T, Verdict::Pass, ev);
    }
    ev.push(format!(
        "never enforced by `npm-watchdog harden` on: {}",
        never
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    ev.push("no version was published with a token since the cutoff".into());
    row(Dod::D7, T, Verdict::Unverified, ev)
}

fn d8(i: &Input) -> DodRow {
    const T: &str = "developer and publish teams are read-only; write stays with owners";
    if let Some(fail) = failing(i, Dod::D8, T) {
        return fail;
    }
    let Some(orgs) = i.orgs.filter(|o| !o.is_empty()) else {
        return row(
            Dod::D8,
            T,
            Verdict::Unverified,
            vec!["no org is watched (set watch.orgs)".into()],
        );
    };
    let teams: usize = orgs.iter().map(|o| o.teams.len()).sum();
    row(
        Dod::D8,
        T,
        Verdict::Pass,
        vec![format!(
            "{teams} team(s) in {} org(s): only policy.write_teams ({}) hold write",
            orgs.len(),
            if i.policy.write_teams.is_empty() {
                "none".to_string()
            } else {
                i.policy.write_teams.join(", ")
            }
        )],
    )
}

fn d9(i: &Input) -> DodRow {
    const T: &str = "the temporary bypass-2FA bulk-hardening token has been deleted";
    failing(i, Dod::D9, T).unwrap_or_else(|| {
        row(
            Dod::D9,
            T,
            Verdict::Pass,
            vec!["no bypass-2FA token on the account".into()],
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::{fixtures, Group, Snapshot};

    fn token_findings() -> Vec<Finding> {
        let tokens = fixtures::tokens();
        let reg = fixtures::registry();
        let snap = Snapshot {
            tokens: Some(&tokens),
            ..Snapshot::new(fixtures::now(), &reg)
        };
        checks::run_group(Group::Tokens, &snap, &fixtures::policy()).0
    }

    fn status(rows: &[DodRow], id: &str) -> Verdict {
        rows.iter()
            .find(|r| r.id == id)
            .map(|r| r.status)
            .unwrap_or(Verdict::Unverified)
    }

    /// A trust configuration this version does not understand satisfies D1 (a trusted publisher is
    /// configured) but leaves D2 UNVERIFIED, naming the package and the type: never a pass.
    #[test]
    fn an_unknown_trust_type_is_d1_but_never_a_d2_pass() {
        use crate::checks::TrustStatus;
        use crate::registry::parse_trust;
        let packages = fixtures::packages();
        let bound = serde_json::json!([{"id": "g", "type": "github", "environment": "release",
            "claims": {"repository": "acme/a", "workflow_ref": {"file": "release.yml"}}}]);
        let trust: BTreeMap<String, TrustStatus> = packages
            .packuments
            .keys()
            .map(|name| {
                let configs = if name == "@acme/cli" {
                    serde_json::json!([{"id": "b", "type": "buildkite", "claims": {"organization_slug": "acme"}}])
                } else {
                    bound.clone()
                };
                (name.clone(), TrustStatus::Read(parse_trust(&configs).expect("parses")))
            })
            .collect();
        let policy = fixtures::policy();
        let hardened = BTreeMap::new();
        let rows = scorecard(&Input {
            now: fixtures::now(),
            policy: &policy,
            tokens: &[],
            own_key: None,
            findings: &[],
            packages: Some(&packages),
            orgs: None,
            trust: Some(&trust),
            hardened: &hardened,
            ci: None,
        });
        assert_eq!(status(&rows, "D1"), Verdict::Pass);
        assert_eq!(status(&rows, "D2"), Verdict::Unverified);
        let d2 = rows.iter().find(|r| r.id == "D2").expect("D2");
        assert_eq!(
            d2.evidence,
            ["@acme/cli: a trusted publisher of type `buildkite`, which this version of npm-watchdog \
              does not know; its binding cannot be judged"]
        );
    }

    #[test]
    fn tokens_only_account_fails_d5_d9_and_leaves_the_rest_unverified() {
        let tokens = fixtures::tokens();
        let findings = token_findings();
        let policy = fixtures::policy();
        let hardened = BTreeMap::new();
        let rows = scorecard(&Input {
            now: fixtures::now(),
            policy: &policy,
            tokens: &tokens,
            own_key: None,
            findings: &findings,
            packages: None,
            orgs: None,
            trust: None,
            hardened: &hardened,
            ci: None,
        });
        assert_eq!(
            rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            ["D1", "D2", "D3", "D4", "D5", "D6", "D7", "D8", "D9"]
        );
        assert_eq!(status(&rows, "D5"), Verdict::Fail);
        assert_eq!(rows[4].evidence.len(), 4);
        assert!(
            rows[4].evidence[0].starts_with("token b5c1d2 (bulk-hardening) (granular read-write")
        );
        assert_eq!(status(&rows, "D9"), Verdict::Fail);
        for id in ["D1", "D2", "D3", "D4", "D6", "D7", "D8"] {
            assert_eq!(status(&rows, id), Verdict::Unverified, "{id}");
        }
        assert_eq!(
            rows[6].evidence[0],
            "the setting is not readable through npm's API (write-only by design)"
        );
    }

    #[test]
    fn only_allowlisted_tokens_pass_d5_and_d9() {
        let tokens = fixtures::tokens()[..1].to_vec();
        let policy = fixtures::policy();
        let hardened = BTreeMap::new();
        let rows = scorecard(&Input {
            now: fixtures::now(),
            policy: &policy,
            tokens: &tokens,
            own_key: None,
            findings: &[],
            packages: None,
            orgs: None,
            trust: None,
            hardened: &hardened,
            ci: None,
        });
        assert_eq!(status(&rows, "D5"), Verdict::Pass);
        assert_eq!(
            rows[4].evidence,
            vec!["1 token(s) listed, all allowlisted".to_string()]
        );
        assert_eq!(status(&rows, "D9"), Verdict::Pass);
    }

    /// Everything watched, trust read: each box is judged from the fixtures' own problems.
    #[test]
    fn packages_orgs_and_trust_fixtures() {
        use crate::checks::fixtures::{run_group_on, Inputs};
        let packages = fixtures::packages();
        let orgs = fixtures::orgs();
        let trust = fixtures::trust();
        let policy = fixtures::watch_policy();
        let inputs = Inputs {
            packages: Some(&packages),
            orgs: Some(&orgs),
            trust: Some(&trust),
            previous_maintainers: None,
            ci: None,
        };
        let mut findings = token_findings();
        for g in [Group::Packages, Group::Org, Group::Trust] {
            findings.extend(run_group_on(g, inputs, &policy).0);
        }
        let tokens = fixtures::tokens();
        let hardened = BTreeMap::new();
        let input = Input {
            now: fixtures::now(),
            policy: &policy,
            tokens: &tokens,
            own_key: None,
            findings: &findings,
            packages: Some(&packages),
            orgs: Some(&orgs),
            trust: Some(&trust),
            hardened: &hardened,
            ci: None,
        };
        let rows = scorecard(&input);
        let has = |check: &str| findings.iter().any(|f| f.check == check);
        // Each FAIL is backed by the finding that proves it, and its evidence names the subject.
        for (id, check) in [
            ("D1", "trusted-publisher-missing"),
            ("D2", "trusted-publisher-unbound"),
            ("D6", "retired-account-active"),
            ("D8", "team-write-access"),
            ("D9", "token-bypass-2fa"),
        ] {
            assert!(has(check), "fixtures should raise {check}");
            assert_eq!(status(&rows, id), Verdict::Fail, "{id}");
            let row = rows.iter().find(|r| r.id == id).expect("row");
            let subject = &findings
                .iter()
                .find(|f| f.check == check)
                .expect("finding")
                .subject;
            assert!(
                row.evidence.iter().any(|e| e.starts_with(subject.as_str())),
                "{id}: {:?}",
                row.evidence
            );
        }
        assert!(has("publish-untrusted"));
        for id in ["D3", "D4", "D7"] {
            assert_eq!(status(&rows, id), Verdict::Fail, "{id}");
        }
        let d7 = &rows[6];
        assert_eq!(
            d7.evidence[0],
            "the setting is not readable through npm's API (write-only by design)"
        );
    }

    #[test]
    fn d7_passes_only_when_hardened_everywhere_and_no_token_publish() {
        let doc = serde_json::json!({
            "name": "@acme/clean", "dist-tags": {"latest": "2.0.0"},
            "time": {"2.0.0": "2026-06-01T00:00:00Z"},
            "versions": {"2.0.0": {"_npmUser": {"name": "GitHub Actions", "trustedPublisher": {"id": "github"}}}}
        });
        let clean = crate::registry::parse_packument(doc.to_string().as_bytes(), "@acme/clean")
            .expect("parse");
        let packages = PackageSet {
            packuments: BTreeMap::from([("@acme/clean".to_string(), std::sync::Arc::new(clean))]),
            provenance: BTreeMap::new(),
        };
        let policy = fixtures::policy();
        let at = fixtures::now() - chrono::Duration::days(2);
        let mut hardened: BTreeMap<String, DateTime<Utc>> = packages
            .packuments
            .keys()
            .map(|k| (k.clone(), at))
            .collect();
        let rows = |hardened: &BTreeMap<String, DateTime<Utc>>| {
            scorecard(&Input {
                now: fixtures::now(),
                policy: &policy,
                tokens: &[],
                own_key: None,
                findings: &[],
                packages: Some(&packages),
                orgs: None,
                trust: None,
                hardened,
                ci: None,
            })
        };
        let r = rows(&hardened);
        assert_eq!(status(&r, "D7"), Verdict::Pass);
        assert!(
            r[6].evidence
                .iter()
                .any(|e| e.contains("the oldest at 2026-11-24T12:00:00Z")),
            "{:?}",
            r[6].evidence
        );
        let first = packages.packuments.keys().next().cloned().expect("one");
        hardened.remove(&first);
        let r = rows(&hardened);
        assert_eq!(status(&r, "D7"), Verdict::Unverified);
        assert!(r[6].evidence.iter().any(|e| e.contains(&format!(
            "never enforced by `npm-watchdog harden` on: {first}"
        ))));
    }

    /// D3 from the CI inventory: UNVERIFIED without a CI provider or with a list unread, FAIL with each
    /// npm token found, PASS only on a complete read that found none.
    #[test]
    fn d3_is_judged_from_the_ci_secrets() {
        use crate::checks::fixtures::{run_group_on, Inputs};
        use crate::ci::CiInventory;
        let policy = fixtures::policy();
        let hardened = BTreeMap::new();
        let d3 = |ci: Option<&CiInventory>, findings: &[Finding]| {
            let rows = scorecard(&Input {
                now: fixtures::now(),
                policy: &policy,
                tokens: &[],
                own_key: None,
                findings,
                packages: None,
                orgs: None,
                trust: None,
                hardened: &hardened,
                ci,
            });
            rows.into_iter().find(|r| r.id == "D3").expect("D3")
        };

        let none = d3(None, &[]);
        assert_eq!(none.status, Verdict::Unverified);
        assert!(
            none.evidence[0].starts_with("no CI provider is configured"),
            "{:?}",
            none.evidence
        );

        let mut clean = CiInventory::default();
        clean.units_read.insert("github".into(), 4);
        clean.units_read.insert("gitlab".into(), 1);
        let pass = d3(Some(&clean), &[]);
        assert_eq!(pass.status, Verdict::Pass, "{:?}", pass.evidence);
        assert_eq!(
            pass.evidence[..2],
            [
                "github: 4 secret list(s) read, 0 secret(s), none an npm token",
                "gitlab: 1 secret list(s) read, 0 secret(s), none an npm token"
            ]
        );
        assert!(pass.evidence[2].contains("cannot be seen"));

        let mut partial = clean.clone();
        partial
            .unread
            .push("ci.github[0]: GitHub environments of repository acme/widget: environments: 403 forbidden".into());
        let unverified = d3(Some(&partial), &[]);
        assert_eq!(unverified.status, Verdict::Unverified);
        assert_eq!(
            unverified.evidence[..2],
            [
                "some CI secret lists could not be read:",
                "ci.github[0]: GitHub environments of repository acme/widget: environments: 403 forbidden"
            ]
        );

        // A token found is a FAIL even when another list could not be read.
        let found = fixtures::ci();
        let findings = run_group_on(
            Group::Ci,
            Inputs {
                ci: Some(&found),
                ..Inputs::default()
            },
            &policy,
        )
        .0;
        let fail = d3(Some(&partial), &findings);
        assert_eq!(fail.status, Verdict::Fail);
        assert_eq!(fail.evidence[0], "npm tokens kept in CI:");
        assert_eq!(fail.evidence.len(), 1 + findings.len());
        assert!(fail.evidence[1].starts_with(
            "CI secret NPM_TOKEN in GitHub Actions secrets of repository acme/widget: "
        ));
    }
}
