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
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::checks::PackageSet;
use crate::config::WatchConfig;
use crate::credential::Credential;
use crate::fetch::Reason;
use crate::registry::{
    Fetched, OrgView, Packument, ProvenanceSource, RegistryClient, RegistryError, TeamView,
};

/// A source that could not be read: what it was, a fixed reason for the `check_errors_total` metric,
/// and the message for the log and the `watchdog-blind` finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError {
    /// `packument @acme/widget`, `org acme`; empty when the message says it all.
    pub what: String,
    /// Why: the `reason` label of `check_errors_total`.
    pub reason: Reason,
    pub detail: String,
}

impl ReadError {
    /// A registry read made with the read credential (the daemon's own) that failed. A refusal
    /// says which credential it was and what it lacks, since that is what the operator must change.
    pub fn registry(what: impl Into<String>, e: &RegistryError) -> Self {
        let mut detail = e.to_string();
        let hint = match e {
            RegistryError::Forbidden { .. } => Some(
                "the read credential may not read this: give its granular token read-only \
                 access to the package or org (npm token create --packages-all or --packages, \
                 --orgs ORG --orgs-permission=read-only)",
            ),
            RegistryError::Unauthorized { .. } => Some(
                "the registry refused the read credential itself (expired, revoked or mistyped): \
                 replace it",
            ),
            _ => None,
        };
        if let Some(hint) = hint {
            detail.push_str("; ");
            detail.push_str(hint);
        }
        // `what` names a package, org or user, perhaps from a registry listing: shown inert.
        let what: String = what.into();
        Self {
            what: crate::inert::show_at_most(&what, 400).into_owned(),
            reason: e.reason(),
            detail,
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
pub type StoredPackument = (Option<String>, Arc<Packument>);

/// What reading the packuments gave.
#[derive(Debug, Default)]
pub struct PackagesRead {
    pub set: PackageSet,
    /// Maintainers per package as stored before this read, for the documents that changed and had a
    /// stored copy (an unchanged document's maintainers are the stored ones).
    pub previous_maintainers: BTreeMap<String, Vec<String>>,
    /// Documents that changed (or were new), with their ETags: what the caller should store.
    pub fresh: Vec<(String, Option<String>, Arc<Packument>)>,
    /// Every copy now held, with its ETag: the `stored` argument of the next read.
    pub stored: BTreeMap<String, StoredPackument>,
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
    // Names are cloned as they are taken (a closure over `&String` here trips the compiler's
    // higher-ranked `Send` check on the daemon's spawned cycle).
    let reads = names.iter().cloned().map(|name| {
        let client = client.clone();
        // A stored copy slimmed with a later cutoff lacks versions the checks now want: read the
        // whole document again rather than accept a 304 for it.
        let etag = stored
            .get(&name)
            .filter(|(_, p)| p.covers(since))
            .and_then(|(e, _)| e.clone());
        let cred = cred.clone();
        async move {
            let r = client
                .packument_since(&name, Some(&cred), etag.as_deref(), Some(since))
                .await;
            (name, r)
        }
    });
    bounded(reads, concurrency, |joined| {
        let Ok((name, result)) = joined else {
            out.errors.push(ReadError {
                what: "packuments".into(),
                reason: Reason::TaskFailed,
                detail: "a packument task failed".into(),
            });
            return;
        };
        let previous = stored.get(&name);
        match result {
            Ok(Fetched::NotModified) => match previous {
                Some(kept @ (_, p)) => {
                    out.not_modified += 1;
                    out.stored.insert(name.clone(), kept.clone());
                    out.set.packuments.insert(name, Arc::clone(p));
                }
                None => out.errors.push(ReadError {
                    what: format!("packument {name}"),
                    reason: Reason::UnexpectedStatus,
                    detail: "304 without a stored copy".into(),
                }),
            },
            Ok(Fetched::Fresh {
                packument,
                etag,
                bytes,
            }) => {
                out.bytes += bytes;
                // Maintainers can only have changed in a document that changed.
                if let Some((_, p)) = previous {
                    out.previous_maintainers
                        .insert(name.clone(), p.maintainer_names());
                }
                let packument = Arc::new(packument);
                out.stored
                    .insert(name.clone(), (etag.clone(), Arc::clone(&packument)));
                out.fresh.push((name.clone(), etag, Arc::clone(&packument)));
                out.set.packuments.insert(name, packument);
            }
            Err(e) => {
                out.errors
                    .push(ReadError::registry(format!("packument {name}"), &e));
                if let Some(kept @ (_, p)) = previous {
                    out.stored.insert(name.clone(), kept.clone());
                    out.set.packuments.insert(name, Arc::clone(p));
                }
            }
        }
    })
    .await;
    read_provenance(client, cred, provenance_cache, since, concurrency, &mut out).await;
    out
}

/// Run each of `tasks` on the runtime, at most `limit` at a time, handing each outcome to `done` as
/// it completes. A task spawned per item up front would hold its request's state until its turn:
/// about 2 KB each, 20 MB for 10,000 packages.
pub(crate) async fn bounded<T: Send + 'static>(
    tasks: impl IntoIterator<Item = impl Future<Output = T> + Send + 'static>,
    limit: usize,
    mut done: impl FnMut(Result<T, tokio::task::JoinError>),
) {
    let mut pending = tasks.into_iter();
    let mut running = tokio::task::JoinSet::new();
    loop {
        while running.len() < limit.max(1) {
            let Some(task) = pending.next() else { break };
            running.spawn(task);
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        done(joined);
    }
}

async fn read_provenance(
    client: &RegistryClient,
    cred: &Credential,
    cached: &BTreeMap<String, Option<ProvenanceSource>>,
    since: DateTime<Utc>,
    concurrency: usize,
    out: &mut PackagesRead,
) {
    let mut to_read = Vec::new();
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
                None => to_read.push((key, p.name.clone(), v.version.clone())),
            }
        }
    }
    let reads = to_read.into_iter().map(|(key, name, version)| {
        let client = client.clone();
        let cred = cred.clone();
        async move {
            let r = client.provenance_source(&name, &version, Some(&cred)).await;
            (key, r)
        }
    });
    let mut learned = Vec::new();
    bounded(reads, concurrency, |joined| match joined {
        Ok((key, Ok(src))) => {
            if let Some(src) = &src {
                out.set.provenance.insert(key.clone(), src.clone());
            }
            learned.push((key, src));
        }
        Ok((key, Err(e))) => out
            .errors
            .push(ReadError::registry(format!("provenance of {key}"), &e)),
        Err(_) => out.errors.push(ReadError {
            what: "provenance".into(),
            reason: Reason::TaskFailed,
            detail: "a provenance task failed".into(),
        }),
    })
    .await;
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
