//! Checks: pure functions from a snapshot of what the registry showed (plus policy and the time) to
//! findings.
//!
//! Each check lives in its own file and is registered once, in [`all`]. A check names its [`Group`]
//! (which schedule runs it), the [`Source`] it reads and the Definition-of-Done boxes it feeds. When
//! its source could not be fetched the runner does not call it and keeps its previous findings, so a
//! registry error can never look like "all clear". Nothing here does I/O.
//!
//! Adding a check: write `src/checks/<id>.rs` with a `pub const CHECK: CheckDef` and its unit tests
//! on the fixtures below, then add `mod <id>;` and `<id>::CHECK` to [`all`]. The daemon, `audit`, the
//! `findings` metric and the scorecard pick it up from there.

pub(crate) mod command;
mod group;

mod account_2fa;
mod allowlist_expired;
mod ci_allowlist_expired;
mod ci_npm_secret;
mod maintainers_changed;
mod org_owner_unexpected;
mod publish_unexpected_source;
mod publish_untrusted;
mod retired_account_active;
mod team_write_access;
mod token_bypass_2fa;
mod token_created;
mod token_long_lived;
mod token_present;
mod token_unrestricted;
mod token_unused;
mod trusted_publisher_missing;
mod trusted_publisher_unbound;
mod watchdog_blind;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use url::Url;

pub use group::Group;

use crate::ci::CiInventory;
use crate::config::{PolicyConfig, DEFAULT_REGISTRY};
use crate::finding::{Dod, Finding, Severity};
use crate::registry::{OrgView, Packument, Profile, ProvenanceSource, Token, TrustConfig};

/// What a check reads. The runner calls a check only when its source was fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Tokens,
    Profile,
    /// Only the configuration: always available.
    Config,
    /// The daemon's own record of failed runs: always available.
    Health,
    /// Packuments of the watched packages.
    Packages,
    /// Rosters, teams and team packages of the watched orgs.
    Orgs,
    /// Trusted-publisher configurations: readable only in an attended run with an OTP.
    Trust,
    /// The secrets the configured CI providers hold.
    Ci,
}

/// The watched packages as last read. A package whose fetch failed this cycle is represented by its
/// last stored copy, so a registry error can neither resolve nor invent a finding.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PackageSet {
    /// Shared with the stored copies and the cycle's fresh list: a document is held once, however
    /// many of those name it.
    pub packuments: BTreeMap<String, Arc<Packument>>,
    /// The provenance statement's source per `name@version`, for versions that have one and were read.
    pub provenance: BTreeMap<String, ProvenanceSource>,
}

/// What reading one package's trust configuration gave.
#[derive(Debug, Clone, PartialEq)]
pub enum TrustStatus {
    Read(Vec<TrustConfig>),
    /// The registry asked for a one-time password: unknown, never "none configured".
    NeedsOtp,
    Failed(String),
}

/// Health of one check group as the daemon records it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupHealth {
    pub group: String,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
}

/// Everything a check may look at.
pub struct Snapshot<'a> {
    pub now: DateTime<Utc>,
    pub registry: &'a Url,
    pub tokens: Option<&'a [Token]>,
    pub profile: Option<&'a Profile>,
    /// The key under which the registry lists the daemon's own credential, when it can be derived
    /// (npmjs.com lists a token under the SHA-512 of its value).
    pub own_key: Option<&'a str>,
    /// Keys seen in earlier runs; `None` before the first successful token run.
    pub seen_tokens: Option<&'a HashSet<String>>,
    pub health: &'a [GroupHealth],
    pub packages: Option<&'a PackageSet>,
    pub orgs: Option<&'a [OrgView]>,
    /// Per package; only in attended runs (`audit --otp`).
    pub trust: Option<&'a BTreeMap<String, TrustStatus>>,
    /// Maintainer names per package at the previous read (for `maintainers-changed`); `None` when
    /// there was no previous read.
    pub previous_maintainers: Option<&'a BTreeMap<String, Vec<String>>>,
    /// The CI providers' secrets; lists that could not be read now are their last stored copies.
    pub ci: Option<&'a CiInventory>,
}

impl<'a> Snapshot<'a> {
    /// A snapshot in which no source was read; set the ones that were.
    pub fn new(now: DateTime<Utc>, registry: &'a Url) -> Self {
        Snapshot {
            now,
            registry,
            tokens: None,
            profile: None,
            own_key: None,
            seen_tokens: None,
            health: &[],
            packages: None,
            orgs: None,
            trust: None,
            previous_maintainers: None,
            ci: None,
        }
    }

    pub fn has(&self, source: Source) -> bool {
        match source {
            Source::Tokens => self.tokens.is_some(),
            Source::Profile => self.profile.is_some(),
            Source::Config | Source::Health => true,
            Source::Packages => self.packages.is_some(),
            Source::Orgs => self.orgs.is_some(),
            Source::Trust => self.trust.is_some(),
            Source::Ci => self.ci.is_some(),
        }
    }

    /// `npm token revoke <id>`, with `--registry` when it is not the public one.
    pub fn revoke_command(&self, token: &Token) -> String {
        if self.registry.as_str() == DEFAULT_REGISTRY {
            format!("npm token revoke {}", token.id)
        } else {
            format!("npm token revoke {} --registry {}", token.id, self.registry)
        }
    }
}

/// One registered check.
pub struct CheckDef {
    pub id: &'static str,
    /// The group whose schedule runs it.
    pub group: Group,
    pub source: Source,
    /// The Definition-of-Done boxes its findings are evidence for, the box each finding breaks first.
    /// The scorecard reads its FAIL evidence from here.
    pub dod: &'static [Dod],
    /// Events fire once and never resolve (a token was created); conditions stay active until gone.
    pub event: bool,
    /// The label that names a finding's subject for sinks that label alerts (Alertmanager's `token`,
    /// `package`, `team`, `user`, `secret`); its value is the finding's subject key. `None`: none.
    pub subject: Option<&'static str>,
    pub evaluate: fn(&Snapshot, &PolicyConfig) -> Vec<Finding>,
}

impl CheckDef {
    /// The box a finding of this check names in alerts (`DoD box: D5`).
    pub fn dod_box(&self) -> Option<Dod> {
        self.dod.first().copied()
    }
}

/// The tokens the token checks judge: those listed and not past their expiry at `now`. An expired
/// token stays in the registry's list (npmjs.com keeps it) but can do nothing, so no token finding
/// is raised for it, and one that fired resolves when it expires.
pub fn live_tokens(listed: &[Token], now: DateTime<Utc>) -> Vec<Token> {
    listed
        .iter()
        .filter(|t| !t.is_expired(now))
        .cloned()
        .collect()
}

/// Every check's id, in the order reports list them: what a sink's route may name.
pub fn ids() -> Vec<&'static str> {
    all().iter().map(|c| c.id).collect()
}

/// Every check, in the order reports list them.
pub fn all() -> &'static [CheckDef] {
    const ALL: &[CheckDef] = &[
        token_created::CHECK,
        token_present::CHECK,
        token_bypass_2fa::CHECK,
        token_long_lived::CHECK,
        token_unrestricted::CHECK,
        token_unused::CHECK,
        allowlist_expired::CHECK,
        account_2fa::CHECK,
        publish_untrusted::CHECK,
        publish_unexpected_source::CHECK,
        maintainers_changed::CHECK,
        org_owner_unexpected::CHECK,
        retired_account_active::CHECK,
        team_write_access::CHECK,
        trusted_publisher_missing::CHECK,
        trusted_publisher_unbound::CHECK,
        ci_npm_secret::CHECK,
        ci_allowlist_expired::CHECK,
        watchdog_blind::CHECK,
    ];
    ALL
}

/// The check whose findings are npm tokens kept in CI (the scorecard tells them from publishes).
pub const CI_NPM_SECRET: &str = ci_npm_secret::CHECK.id;

/// The ids of the event checks (they fire once and are never kept as active).
pub fn events() -> HashSet<&'static str> {
    all().iter().filter(|c| c.event).map(|c| c.id).collect()
}

/// The checks whose findings are evidence for `dod`.
pub fn feeding(dod: Dod) -> impl Iterator<Item = &'static CheckDef> {
    all().iter().filter(move |c| c.dod.contains(&dod))
}

/// Whether `token` is the daemon's own credential: listed under the credential's registry key
/// (`own_key`), or named by an allowlist entry marked `self = true`.
pub fn is_own_token(token: &Token, own_key: Option<&str>, policy: &PolicyConfig) -> bool {
    own_key.is_some_and(|k| k.eq_ignore_ascii_case(&token.key))
        || policy
            .allow_tokens
            .iter()
            .any(|a| a.own && a.matches(&token.key))
}

/// Tokens that no (unexpired) allowlist entry covers.
pub fn not_allowlisted<'t>(
    tokens: &'t [Token],
    policy: &'t PolicyConfig,
    now: DateTime<Utc>,
) -> impl Iterator<Item = &'t Token> {
    tokens
        .iter()
        .filter(move |t| !policy.is_allowlisted(&t.key, now))
}

/// Tokens not allowlisted, without the daemon's own credential: `token-present` gives that one a
/// single finding of its own, so the other token checks leave it alone.
pub fn others_not_allowlisted<'t>(
    snap: &Snapshot<'t>,
    policy: &'t PolicyConfig,
) -> impl Iterator<Item = &'t Token> {
    let own_key = snap.own_key;
    not_allowlisted(snap.tokens.unwrap_or_default(), policy, snap.now)
        .filter(move |t| !is_own_token(t, own_key, policy))
}

/// Run every check of `group` whose source is in the snapshot. Returns the findings and the ids of the
/// checks that ran (only those may resolve earlier findings).
pub fn run_group(
    group: Group,
    snap: &Snapshot,
    policy: &PolicyConfig,
) -> (Vec<Finding>, Vec<&'static str>) {
    let mut findings = Vec::new();
    let mut ran = Vec::new();
    for def in all().iter().filter(|c| c.group == group) {
        if snap.has(def.source) {
            let mut found = (def.evaluate)(snap, policy);
            // The first check's list is kept rather than copied: one check can find a finding per
            // version of every package (90,000 at 10,000 packages).
            if findings.is_empty() {
                findings = found;
            } else {
                findings.append(&mut found);
            }
            ran.push(def.id);
        }
    }
    findings.shrink_to_fit();
    // A finding's text embeds names the registry or a CI API chose: it is made inert here, once,
    // for every output (email, Slack, PagerDuty, terminal tables, logs, JSON). The machine keys
    // (`subject_key`, the fingerprint) keep the full value.
    for f in &mut findings {
        inert_text(f);
    }
    if snap.registry.as_str() != DEFAULT_REGISTRY {
        // npm commands in a fix act on the public registry unless told otherwise.
        let add = format!(" (Add `--registry {}` to the npm commands.)", snap.registry);
        for f in &mut findings {
            if f.fix.contains("`npm ") && !f.fix.contains("--registry") {
                // Exactly: growing by doubling would leave most of each fix's buffer empty.
                f.fix.reserve_exact(add.len());
                f.fix.push_str(&add);
            }
        }
    }
    (findings, ran)
}

/// Escape and bound a finding's text (see [`crate::inert`]): the subject to a name's length, the
/// sentences to a paragraph's. Nothing is copied when nothing needs it.
fn inert_text(f: &mut Finding) {
    use crate::inert::{show, show_at_most, TEXT_CHARS};
    if let Cow::Owned(s) = show(&f.subject) {
        f.subject = s;
    }
    if let Cow::Owned(s) = show_at_most(&f.summary, TEXT_CHARS) {
        f.summary = s;
    }
    if let Cow::Owned(s) = show_at_most(&f.fix, TEXT_CHARS) {
        f.fix = s;
    }
    if let Cow::Owned(s) = show_at_most(&f.why, TEXT_CHARS) {
        f.why = Cow::Owned(s);
    }
}

/// A compact age: `6d 2h`, `5h 12m`, `42m`, `30s` (the two largest units).
pub(crate) fn age(from: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - from).num_seconds().max(0);
    let (d, h, m, s) = (
        secs / 86400,
        secs % 86400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h {m}m"),
        (_, 0, _) => format!("{d}d"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Shared fixtures: a token list page with one token of each interesting kind.
    use super::*;
    use crate::config::AllowToken;

    pub const NOW: &str = "2026-11-26T12:00:00Z";

    pub fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(NOW)
            .expect("fixture time")
            .with_timezone(&Utc)
    }

    pub fn registry() -> Url {
        Url::parse(DEFAULT_REGISTRY).expect("url")
    }

    /// watchdog (read-only, allowlisted), bulk-hardening (bypass, 6 days), ci-legacy (classic write,
    /// no expiry, unused since 2025-06), fresh-bypass (bypass, 6 hours, CIDR), laptop-read (read-only).
    pub fn tokens() -> Vec<Token> {
        let page: serde_json::Value =
            serde_json::from_str(include_str!("fixtures/tokens.json")).expect("fixture json");
        let objects = page["objects"].as_array().expect("objects");
        let mut t = crate::registry::parse_tokens(objects, 0).expect("fixture parses");
        crate::registry::assign_ids(&mut t);
        t
    }

    pub fn policy() -> PolicyConfig {
        PolicyConfig {
            allow_tokens: vec![AllowToken {
                key_prefix: "82e393".into(),
                reason: "watchdog read-only credential".into(),
                expires: chrono::NaiveDate::from_ymd_opt(2027, 1, 31),
                own: true,
            }],
            ..PolicyConfig::default()
        }
    }

    /// Run one check over the fixture tokens with the given seen set.
    pub fn run(check: &CheckDef, seen: Option<&HashSet<String>>) -> Vec<Finding> {
        let tokens = tokens();
        let reg = registry();
        let snap = Snapshot {
            tokens: Some(&tokens),
            seen_tokens: seen,
            ..Snapshot::new(now(), &reg)
        };
        (check.evaluate)(&snap, &policy())
    }

    pub fn subjects(findings: &[Finding]) -> Vec<(String, Severity)> {
        findings
            .iter()
            .map(|f| (f.subject.clone(), f.severity))
            .collect()
    }

    pub fn keys(findings: &[Finding]) -> Vec<String> {
        findings.iter().map(|f| f.subject_key.clone()).collect()
    }

    /// `@acme/core` (expected from GitHub `acme/core`, `release.yml`; versions on both sides of the
    /// cutoff, one exactly at it, deprecated ones, one without a publish time, provenance that matches
    /// and that does not), `@acme/cli` (expected from GitLab; a GitHub publish, a publish without
    /// `_npmUser`; maintained by the retired `old-ci`) and `left-pad-acme` (no expectation; a CircleCI
    /// publish and a fresh token publish three hours before [`NOW`]).
    pub fn packages() -> PackageSet {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("fixtures/packuments.json")).expect("fixture json");
        let mut set = PackageSet::default();
        for raw in doc["packuments"].as_array().expect("packuments") {
            let name = raw["name"].as_str().expect("name");
            let p = crate::registry::parse_packument(raw.to_string().as_bytes(), name)
                .expect("fixture packument parses");
            set.packuments.insert(p.name.clone(), Arc::new(p));
        }
        set.provenance =
            serde_json::from_value(doc["provenance"].clone()).expect("fixture provenance");
        set
    }

    /// `acme` (owners alice and dave, admin bob, developers carol and old-ci; teams developers,
    /// release-admins, readers, hotfix with a `read-write` value, empty) and `acme-labs` (owner
    /// alice, admin old-ci; teams developers and hotfix, both with write).
    pub fn orgs() -> Vec<OrgView> {
        serde_json::from_str(include_str!("fixtures/orgs.json")).expect("fixture orgs")
    }

    /// Trust read results per package: `{"configs": [...]}` is a registry reply, `{"needs_otp": true}`
    /// an EOTP, `{"failed": "..."}` a failed read.
    pub fn trust() -> BTreeMap<String, TrustStatus> {
        let doc: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(include_str!("fixtures/trust.json")).expect("fixture trust");
        doc.into_iter()
            .map(|(pkg, v)| {
                let status = if v["needs_otp"] == serde_json::Value::Bool(true) {
                    TrustStatus::NeedsOtp
                } else if let Some(e) = v["failed"].as_str() {
                    TrustStatus::Failed(e.to_string())
                } else {
                    TrustStatus::Read(
                        crate::registry::parse_trust(&v["configs"]).expect("fixture trust parses"),
                    )
                };
                (pkg, status)
            })
            .collect()
    }

    /// The fixture policy plus what the package and org checks look at.
    pub fn watch_policy() -> PolicyConfig {
        let src = |s: &str| s.parse().expect("expected source");
        PolicyConfig {
            write_teams: vec!["release-admins".into()],
            expected_owners: vec!["alice".into()],
            retired_accounts: vec!["old-ci".into(), "ghost".into()],
            expected_publishers: BTreeMap::from([
                (
                    "@acme/core".to_string(),
                    src("github:acme/core:release.yml"),
                ),
                ("@acme/cli".to_string(), src("gitlab:acme/tools/cli")),
            ]),
            ..policy()
        }
    }

    /// What a check reads besides the time and the registry.
    #[derive(Default, Clone, Copy)]
    pub struct Inputs<'a> {
        pub packages: Option<&'a PackageSet>,
        pub orgs: Option<&'a [OrgView]>,
        pub trust: Option<&'a BTreeMap<String, TrustStatus>>,
        pub previous_maintainers: Option<&'a BTreeMap<String, Vec<String>>>,
        pub ci: Option<&'a CiInventory>,
    }

    /// Secrets of every provider and place kind: npm tokens by name (`NPM_TOKEN` in a repository,
    /// `NODE_AUTH_TOKEN` in an environment, an org secret listed twice, a lower-case CircleCI
    /// context variable, a GitLab group variable) and by value (a GitLab variable scoped to
    /// `production`), and innocuous names beside them.
    pub fn ci() -> CiInventory {
        CiInventory {
            secrets: serde_json::from_str(include_str!("fixtures/ci.json")).expect("fixture ci"),
            ..CiInventory::default()
        }
    }

    fn snapshot<'a>(reg: &'a Url, inputs: Inputs<'a>) -> Snapshot<'a> {
        Snapshot {
            packages: inputs.packages,
            orgs: inputs.orgs,
            trust: inputs.trust,
            previous_maintainers: inputs.previous_maintainers,
            ci: inputs.ci,
            ..Snapshot::new(now(), reg)
        }
    }

    /// Run one check on the given inputs at [`NOW`].
    pub fn run_on(check: &CheckDef, inputs: Inputs, policy: &PolicyConfig) -> Vec<Finding> {
        let reg = registry();
        (check.evaluate)(&snapshot(&reg, inputs), policy)
    }

    /// Run a whole schedule group on the given inputs: the findings and the checks that ran.
    pub fn run_group_on(
        group: Group,
        inputs: Inputs,
        policy: &PolicyConfig,
    ) -> (Vec<Finding>, Vec<&'static str>) {
        let reg = registry();
        run_group(group, &snapshot(&reg, inputs), policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token is live until its expiry instant, expired from it on; one without an expiry never
    /// expires. The fixtures' fresh-bypass token expires first, at 2026-11-27T06:00Z.
    #[test]
    fn live_tokens_leave_out_those_past_their_expiry() {
        let all = fixtures::tokens();
        let names =
            |ts: &[Token]| -> Vec<String> { ts.iter().filter_map(|t| t.name.clone()).collect() };
        let expiry = all
            .iter()
            .find(|t| t.name.as_deref() == Some("fresh-bypass"))
            .and_then(|t| t.expires)
            .expect("fixture expiry");
        let before = live_tokens(&all, expiry - chrono::Duration::milliseconds(1));
        assert_eq!(names(&before), names(&all));
        let at = live_tokens(&all, expiry);
        assert_eq!(
            names(&at),
            ["watchdog", "bulk-hardening", "ci-legacy", "laptop-read"],
            "ci-legacy and watchdog have no expiry: always live"
        );
        let later = expiry + chrono::Duration::days(3650);
        assert_eq!(names(&live_tokens(&all, later)), ["watchdog", "ci-legacy"]);
    }

    #[test]
    fn ids_are_unique_and_kebab_case() {
        let mut seen = HashSet::new();
        for c in all() {
            assert!(seen.insert(c.id), "duplicate {}", c.id);
            assert!(c
                .id
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch == '-' || ch.is_ascii_digit()));
        }
    }

    /// A finding names the first box its check feeds, and every box but D5 (judged from the token
    /// list itself) is fed by some check, so the scorecard has evidence to read for it.
    #[test]
    fn findings_name_their_checks_dod_box_and_every_box_is_fed() {
        use fixtures::{run_group_on, Inputs};
        let packages = fixtures::packages();
        let orgs = fixtures::orgs();
        let trust = fixtures::trust();
        let inputs = Inputs {
            packages: Some(&packages),
            orgs: Some(&orgs),
            trust: Some(&trust),
            previous_maintainers: None,
            ci: None,
        };
        let tokens = fixtures::tokens();
        let reg = fixtures::registry();
        let snap = Snapshot {
            tokens: Some(&tokens),
            ..Snapshot::new(fixtures::now(), &reg)
        };
        let mut findings = run_group(Group::Tokens, &snap, &fixtures::policy()).0;
        for g in [Group::Packages, Group::Org, Group::Trust] {
            findings.extend(run_group_on(g, inputs, &fixtures::watch_policy()).0);
        }
        assert!(findings.len() > 10);
        for f in &findings {
            let def = all().iter().find(|c| c.id == f.check).expect("registered");
            assert_eq!(f.dod, def.dod_box(), "{}", f.check);
        }
        for d in Dod::ALL {
            assert!(feeding(d).next().is_some(), "no check feeds {d}");
        }
    }

    #[test]
    fn a_check_without_its_source_does_not_run() {
        let reg = fixtures::registry();
        let snap = Snapshot {
            ..Snapshot::new(fixtures::now(), &reg)
        };
        let (findings, ran) = run_group(Group::Tokens, &snap, &fixtures::policy());
        assert!(findings.is_empty());
        assert!(!ran.contains(&"token-present"));
        assert!(ran.contains(&"allowlist-expired"));
        let (_, ran) = run_group(Group::Health, &snap, &fixtures::policy());
        assert_eq!(ran, vec!["watchdog-blind"]);
    }

    #[test]
    fn ages_are_compact() {
        let now = fixtures::now();
        let ago = |s: i64| age(now - chrono::Duration::seconds(s), now);
        assert_eq!(ago(30), "30s");
        assert_eq!(ago(42 * 60), "42m");
        assert_eq!(ago(5 * 3600 + 12 * 60), "5h 12m");
        assert_eq!(ago(6 * 86400 + 2 * 3600 + 59), "6d 2h");
        assert_eq!(ago(2 * 86400 + 30), "2d");
    }

    #[test]
    fn fixes_name_a_non_default_registry_once() {
        use fixtures::{run_group_on, Inputs};
        let packages = fixtures::packages();
        let inputs = Inputs {
            packages: Some(&packages),
            ..Inputs::default()
        };
        let (findings, _) = run_group_on(Group::Packages, inputs, &fixtures::watch_policy());
        assert!(!findings.is_empty());
        assert!(
            findings.iter().all(|f| !f.fix.contains("--registry")),
            "public registry: no flag"
        );
        let reg = Url::parse("http://127.0.0.1:4873/").expect("url");
        let tokens = fixtures::tokens();
        let snap = Snapshot {
            tokens: Some(&tokens),
            packages: Some(&packages),
            ..Snapshot::new(fixtures::now(), &reg)
        };
        for group in [Group::Packages, Group::Tokens] {
            for f in run_group(group, &snap, &fixtures::watch_policy()).0 {
                if f.fix.contains("`npm ") {
                    assert_eq!(
                        f.fix.matches("--registry http://127.0.0.1:4873/").count(),
                        1,
                        "{}",
                        f.fix
                    );
                }
            }
        }
    }

    #[test]
    fn revoke_command_names_non_default_registry() {
        let tokens = fixtures::tokens();
        let reg = Url::parse("http://127.0.0.1:4873/").expect("url");
        let snap = Snapshot {
            tokens: Some(&tokens),
            ..Snapshot::new(fixtures::now(), &reg)
        };
        assert_eq!(
            snap.revoke_command(&tokens[2]),
            "npm token revoke c1a55c --registry http://127.0.0.1:4873/"
        );
    }
}
