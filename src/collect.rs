//! Reading what the package and org checks look at: which packages are watched, their packuments (with
//! conditional requests and bounded concurrency), the provenance of recent versions, and org rosters
//! and teams. Shared by the daemon, `audit` and `harden`.
//!
//! Failures are collected, not hidden: a package or org that could not be read is reported in
//! `errors`, and when a stored copy exists the caller gets that copy instead, so a registry error can
//! neither resolve a finding nor make one up.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;

use crate::checks::PackageSet;
use crate::config::WatchConfig;
use crate::credential::Credential;
use crate::registry::package::{OrgView, Packument, TeamView};
use crate::registry::{Fetched, RegistryClient, RegistryError};
use crate::state::{State, StateError};

/// The watched package names, and what could not be listed.
#[derive(Debug, Default)]
pub struct Discovery {
    pub packages: BTreeSet<String>,
    pub errors: Vec<String>,
}

/// The union of `watch.users`, `watch.orgs` and `watch.packages`.
pub async fn discover(
    client: &RegistryClient,
    watch: &WatchConfig,
    cred: &Credential,
) -> Discovery {
    let mut d = Discovery {
        packages: watch.packages.iter().cloned().collect(),
        errors: Vec::new(),
    };
    for user in &watch.users {
        match client.user_packages(user, cred).await {
            Ok(m) => d.packages.extend(m.into_keys()),
            Err(e) => d.errors.push(format!("packages of user {user}: {e}")),
        }
    }
    for org in &watch.orgs {
        match client.org_packages(org, cred).await {
            Ok(m) => d.packages.extend(m.into_keys()),
            Err(e) => d.errors.push(format!("packages of org {org}: {e}")),
        }
    }
    d
}

/// What reading the packuments gave.
#[derive(Debug, Default)]
pub struct PackagesRead {
    pub set: PackageSet,
    /// Maintainers per package as stored before this read (only packages that had a stored copy).
    pub previous_maintainers: BTreeMap<String, Vec<String>>,
    pub errors: Vec<String>,
    /// Fresh documents, 304s, and bytes of fresh documents received.
    pub fresh: usize,
    pub not_modified: usize,
    pub bytes: usize,
}

/// Read the packuments of `names`, at most `concurrency` at a time. With a `state`, each document's
/// ETag and slim copy are stored, a 304 reuses the stored copy, and provenance is cached per version.
/// Provenance is read for versions published after `since` that claim it.
pub async fn read_packages(
    client: &RegistryClient,
    names: &BTreeSet<String>,
    cred: &Credential,
    state: Option<&State>,
    concurrency: usize,
    since: DateTime<Utc>,
) -> Result<PackagesRead, StateError> {
    let mut out = PackagesRead::default();
    let stored: BTreeMap<String, (Option<String>, Packument)> = match state {
        Some(s) => s.packuments()?,
        None => BTreeMap::new(),
    };
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
    let mut fresh: Vec<(String, Option<String>, Packument)> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let Ok((name, result)) = joined else {
            out.errors.push("a packument task failed".into());
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
                None => out
                    .errors
                    .push(format!("packument {name}: 304 without a stored copy")),
            },
            Ok(Fetched::Fresh {
                packument,
                etag,
                bytes,
            }) => {
                out.fresh += 1;
                out.bytes += bytes;
                fresh.push((name.clone(), etag, packument.clone()));
                out.set.packuments.insert(name, packument);
            }
            Err(e) => {
                out.errors.push(format!("packument {name}: {e}"));
                if let Some((_, p)) = previous {
                    out.set.packuments.insert(name, p.clone());
                }
            }
        }
    }
    if let Some(s) = state {
        s.store_packuments(&fresh)?;
    }
    read_provenance(client, cred, state, since, &mut out).await?;
    Ok(out)
}

async fn read_provenance(
    client: &RegistryClient,
    cred: &Credential,
    state: Option<&State>,
    since: DateTime<Utc>,
    out: &mut PackagesRead,
) -> Result<(), StateError> {
    let cached = match state {
        Some(s) => s.provenance_cache()?,
        None => BTreeMap::new(),
    };
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
                    Err(e) => out.errors.push(format!("provenance of {key}: {e}")),
                },
            }
        }
    }
    if let Some(s) = state {
        s.store_provenance(&learned)?;
    }
    Ok(())
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

/// Read every watched org; a failed org falls back to its stored copy (if `state` has one).
pub async fn read_orgs(
    client: &RegistryClient,
    orgs: &[String],
    cred: &Credential,
    state: Option<&State>,
) -> Result<(Vec<OrgView>, Vec<String>), StateError> {
    let stored = match state {
        Some(s) => s.orgs()?,
        None => BTreeMap::new(),
    };
    let mut views = Vec::new();
    let mut errors = Vec::new();
    for org in orgs {
        let key = org.trim_start_matches('@');
        match read_org(client, org, cred).await {
            Ok(v) => {
                if let Some(s) = state {
                    s.store_org(&v)?;
                }
                views.push(v);
            }
            Err(e) => {
                errors.push(format!("org {key}: {e}"));
                if let Some(v) = stored.get(key) {
                    views.push(v.clone());
                }
            }
        }
    }
    Ok((views, errors))
}
