//! Reading what the package and org checks look at: which packages are watched, their packuments (with
//! conditional requests and bounded concurrency), the provenance of recent versions, and org rosters
//! and teams. Shared by the daemon, `audit` and `harden`.
//!
//! Nothing here touches the state database: the caller hands in what it has stored (packuments with
//! their ETags, provenance already read, orgs) and gets back what was read fresh, to store as it sees
//! fit. Failures are collected, not hidden: a package or org that could not be read is reported in
//! `errors`, and when a stored copy exists the result holds that copy instead, so a registry error can
//! neither resolve a finding nor make one up.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;

use crate::checks::PackageSet;
use crate::config::WatchConfig;
use crate::credential::Credential;
use crate::registry::{
    Fetched, OrgView, Packument, ProvenanceSource, RegistryClient, RegistryError, TeamView,
};

/// A source that could not be read: what it was, a fixed reason for the `check_errors_total` metric,
/// and the message for the log and the `watchdog-blind` finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError {
    /// `packument @acme/widget`, `org acme`; empty when the message says it all.
    pub what: String,
    /// A [`RegistryError::label`], or `credential`.
    pub reason: &'static str,
    pub detail: String,
}

impl ReadError {
    pub fn registry(what: impl Into<String>, e: &RegistryError) -> Self {
        Self {
            what: what.into(),
            reason: e.label(),
            detail: e.to_string(),
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.what.is_empty() {
            f.write_str(&self.detail)
        } else {
            write!(f, "{}: {}", self.what, self.detail)
        }
    }
}

/// The watched package names, and what could not be listed.
#[derive(Debug, Default)]
pub struct Discovery {
    pub packages: BTreeSet<String>,
    /// The account the credential belongs to, when `watch.own_account` asked for it and it was read.
    pub own_account: Option<String>,
    pub errors: Vec<ReadError>,
}

/// The union of `watch.packages`, the packages of `watch.users` and `watch.orgs`, and (with
/// `watch.own_account`) the packages of the account `/-/whoami` names.
pub async fn discover(
    client: &RegistryClient,
    watch: &WatchConfig,
    cred: &Credential,
) -> Discovery {
    let mut d = Discovery {
        packages: watch.packages.iter().cloned().collect(),
        ..Discovery::default()
    };
    let mut users: Vec<String> = watch.users.clone();
    if watch.own_account {
        match client.whoami(cred).await {
            Ok(name) => {
                if !users.contains(&name) {
                    users.push(name.clone());
                }
                d.own_account = Some(name);
            }
            Err(e) => d.errors.push(ReadError::registry(
                "the credential's own account (watch.own_account)",
                &e,
            )),
        }
    }
    for user in &users {
        match client.user_packages(user, cred).await {
            Ok(m) => d.packages.extend(m.into_keys()),
            Err(e) => {
                let own = d.own_account.as_deref() == Some(user.as_str());
                let what = if own && matches!(e, RegistryError::NotFound { .. }) {
                    // Verdaccio, for one, has no such route: say which key to change.
                    format!(
                        "packages of user {user} (the credential's own account; if this registry \
                         cannot list a user's packages, set watch.own_account = false and name them \
                         in watch.packages)"
                    )
                } else {
                    format!("packages of user {user}")
                };
                d.errors.push(ReadError::registry(what, &e));
            }
        }
    }
    for org in &watch.orgs {
        match client.org_packages(org, cred).await {
            Ok(m) => d.packages.extend(m.into_keys()),
            Err(e) => d
                .errors
                .push(ReadError::registry(format!("packages of org {org}"), &e)),
        }
    }
    d
}

/// A stored slim packument with the ETag it was served with.
pub type StoredPackument = (Option<String>, Packument);

/// What reading the packuments gave.
#[derive(Debug, Default)]
pub struct PackagesRead {
    pub set: PackageSet,
    /// Maintainers per package as stored before this read (only packages that had a stored copy).
    pub previous_maintainers: BTreeMap<String, Vec<String>>,
    /// Documents that changed (or were new), with their ETags: what the caller should store.
    pub fresh: Vec<(String, Option<String>, Packument)>,
    /// Provenance read for the first time per `name@version` (`None`: the version has none).
    pub learned_provenance: Vec<(String, Option<ProvenanceSource>)>,
    pub errors: Vec<ReadError>,
    pub not_modified: usize,
    /// Bytes of the fresh documents as received.
    pub bytes: usize,
}

/// Read the packuments of `names`, at most `concurrency` at a time. A stored copy's ETag makes the
/// request conditional and a 304 reuses the copy; provenance is read for versions published after
/// `since` that claim it, unless `provenance_cache` already has it.
pub async fn read_packages(
    client: &RegistryClient,
    names: &BTreeSet<String>,
    cred: &Credential,
    stored: &BTreeMap<String, StoredPackument>,
    provenance_cache: &BTreeMap<String, Option<ProvenanceSource>>,
    concurrency: usize,
    since: DateTime<Utc>,
) -> PackagesRead {
    let mut out = PackagesRead::default();
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for name in names {
        let client = client.clone();
        let name = name.clone();
        let etag = stored.get(&name).and_then(|(e, _)| e.clone());
        let limit = Arc::clone(&limit);
        let cred = cred.clone();
        tasks.spawn(async move {
            // The semaphore is never closed, so acquiring cannot fail.
            let _permit = limit.acquire_owned().await.ok();
            let r = client.packument(&name, Some(&cred), etag.as_deref()).await;
            (name, r)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let Ok((name, result)) = joined else {
            out.errors.push(ReadError {
                what: "packuments".into(),
                reason: "task_failed",
                detail: "a packument task failed".into(),
            });
            continue;
        };
        let previous = stored.get(&name);
        if let Some((_, p)) = previous {
            out.previous_maintainers
                .insert(name.clone(), p.maintainer_names());
        }
        match result {
            Ok(Fetched::NotModified) => match previous {
                Some((_, p)) => {
                    out.not_modified += 1;
                    out.set.packuments.insert(name, p.clone());
                }
                None => out.errors.push(ReadError {
                    what: format!("packument {name}"),
                    reason: "unexpected_status",
                    detail: "304 without a stored copy".into(),
                }),
            },
            Ok(Fetched::Fresh {
                packument,
                etag,
                bytes,
            }) => {
                out.bytes += bytes;
                out.fresh.push((name.clone(), etag, packument.clone()));
                out.set.packuments.insert(name, packument);
            }
            Err(e) => {
                out.errors
                    .push(ReadError::registry(format!("packument {name}"), &e));
                if let Some((_, p)) = previous {
                    out.set.packuments.insert(name, p.clone());
                }
            }
        }
    }
    read_provenance(client, cred, provenance_cache, since, &mut out).await;
    out
}

async fn read_provenance(
    client: &RegistryClient,
    cred: &Credential,
    cached: &BTreeMap<String, Option<ProvenanceSource>>,
    since: DateTime<Utc>,
    out: &mut PackagesRead,
) {
    let mut learned = Vec::new();
    for p in out.set.packuments.values() {
        for v in &p.versions {
            let wanted = v.provenance.is_some() && v.published.is_some_and(|t| t > since);
            if !wanted {
                continue;
            }
            let key = format!("{}@{}", p.name, v.version);
            match cached.get(&key) {
                Some(Some(src)) => {
                    out.set.provenance.insert(key, src.clone());
                }
                Some(None) => {}
                None => match client
                    .provenance_source(&p.name, &v.version, Some(cred))
                    .await
                {
                    Ok(src) => {
                        if let Some(src) = &src {
                            out.set.provenance.insert(key.clone(), src.clone());
                        }
                        learned.push((key, src));
                    }
                    Err(e) => out
                        .errors
                        .push(ReadError::registry(format!("provenance of {key}"), &e)),
                },
            }
        }
    }
    out.learned_provenance = learned;
}

/// Read one org's roster, teams and team packages.
pub async fn read_org(
    client: &RegistryClient,
    org: &str,
    cred: &Credential,
) -> Result<OrgView, RegistryError> {
    let roster = client.org_roster(org, cred).await?;
    let mut teams = Vec::new();
    for team in client.org_teams(org, cred).await? {
        let packages = client.team_packages(org, &team, cred).await?;
        teams.push(TeamView {
            name: team,
            packages,
        });
    }
    Ok(OrgView {
        org: org.trim_start_matches('@').to_string(),
        roster,
        teams,
    })
}

/// What reading the watched orgs gave.
#[derive(Debug, Default)]
pub struct OrgsRead {
    /// Every watched org: read now, or its stored copy when the read failed.
    pub views: Vec<OrgView>,
    /// The orgs read now: what the caller should store.
    pub fresh: Vec<OrgView>,
    pub errors: Vec<ReadError>,
}

/// Read every watched org; a failed org falls back to its stored copy, if `stored` has one.
pub async fn read_orgs(
    client: &RegistryClient,
    orgs: &[String],
    cred: &Credential,
    stored: &BTreeMap<String, OrgView>,
) -> OrgsRead {
    let mut out = OrgsRead::default();
    for org in orgs {
        let key = org.trim_start_matches('@');
        match read_org(client, org, cred).await {
            Ok(v) => {
                out.fresh.push(v.clone());
                out.views.push(v);
            }
            Err(e) => {
                out.errors
                    .push(ReadError::registry(format!("org {key}"), &e));
                if let Some(v) = stored.get(key) {
                    out.views.push(v.clone());
                }
            }
        }
    }
    out
}
