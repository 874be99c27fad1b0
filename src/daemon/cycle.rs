//! One cycle of a check group: read its sources, judge (its checks and the health checks, with the
//! group's health as this run leaves it), plan the alert lifecycle, commit it all in one transaction
//! (the copies read, the health, the findings, the outbox), then publish: metrics, the in-memory
//! copies, the mirror to Alertmanager. Nothing is written before the commit, so a cycle whose commit
//! fails leaves the state as it was and the next cycle sees the same changes again.
//!
//! A source that could not be read is `None` in the snapshot (its checks do not run, so their
//! findings can neither resolve nor fire), or for packages and orgs its last stored copy. Each failed
//! read counts in `check_errors_total{check, reason}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{Live, Watchdog};
use crate::alerts::{lifecycle, Notification, Status};
use crate::checks::{self, Group, PackageSet, Snapshot};
use crate::ci::{self, CiInventory};
use crate::collect::{self, ReadError, StoredPackument};
use crate::credential::Credential;
use crate::fetch::Reason;
use crate::registry::{OrgView, Profile, Token};
use crate::state::{self, CiLists, Copies, CycleRecord, StateError};

/// Delivered outbox rows are kept this long for inspection, then pruned.
const KEEP_DELIVERED: chrono::Duration = chrono::Duration::days(30);

/// What one cycle read.
#[derive(Default)]
struct Gathered {
    tokens: Option<Vec<Token>>,
    profile: Option<Profile>,
    /// The registry key of the daemon's own token (npmjs.com: the SHA-512 of its value).
    own_key: Option<String>,
    packages: Option<PackageSet>,
    orgs: Option<Vec<OrgView>>,
    previous_maintainers: Option<BTreeMap<String, Vec<String>>>,
    ci: Option<CiInventory>,
    errors: Vec<ReadError>,
    /// What was read fresh, to be stored in the cycle's commit.
    copies: Copies,
    /// The packuments as they will be stored once the commit succeeds (kept in memory then).
    packuments: Option<BTreeMap<String, StoredPackument>>,
}

impl Watchdog {
    /// Read what `group`'s checks look at.
    async fn gather(&self, live: &Live, group: Group) -> Result<Gathered, StateError> {
        let mut g = Gathered::default();
        if group == Group::Ci {
            // The CI providers have their own tokens: the npm credential is not needed.
            self.gather_ci(live, &mut g).await?;
            return Ok(g);
        }
        let cred = match live.rt.credential() {
            Ok(c) => c,
            Err(e) => {
                g.errors.push(ReadError {
                    what: "credential".into(),
                    reason: Reason::Credential,
                    detail: e.to_string(),
                });
                if group == Group::Org {
                    // The org checks may still look at the stored packuments for retired maintainers.
                    g.packages = Some(self.stored_packages()?);
                }
                return Ok(g);
            }
        };
        g.own_key = Some(cred.registry_key());
        match group {
            Group::Tokens => {
                let client = &live.client;
                let (t, p) = tokio::join!(client.list_tokens(&cred), client.profile(&cred));
                g.tokens = t
                    .map_err(|e| g.errors.push(ReadError::registry("", &e)))
                    .ok();
                g.profile = p
                    .map_err(|e| g.errors.push(ReadError::registry("", &e)))
                    .ok();
            }
            Group::Packages => self.gather_packages(live, &cred, &mut g).await?,
            Group::Org => {
                let stored = self.state.orgs()?;
                let read =
                    collect::read_orgs(&live.client, &live.rt.config.watch.orgs, &cred, &stored)
                        .await;
                g.copies.orgs = read.fresh;
                g.errors.extend(read.errors);
                g.orgs = Some(read.views);
                g.packages = Some(self.stored_packages()?);
            }
            Group::Ci | Group::Trust | Group::Health => {}
        }
        Ok(g)
    }

    /// Read every CI entry; a list that could not be read is represented by its last stored copy
    /// (see [`ci::assemble`]), and each failure is a `ReadError` of the group.
    async fn gather_ci(&self, live: &Live, g: &mut Gathered) -> Result<(), StateError> {
        let rt = &live.rt;
        let observer: Arc<dyn ci::CiObserver> = Arc::new(self.metrics.clone());
        let entries = ci::read_all(&rt.config.ci, &live.ci_http, rt.ci_limits(), observer).await;
        let stored = self.state.ci_units()?;
        let assembled = ci::assemble(entries, &stored);
        g.errors
            .extend(assembled.errors.iter().map(|(what, e)| ReadError {
                what: what.clone(),
                reason: e.reason(),
                detail: e.to_string(),
            }));
        let kinds: Vec<&str> = rt.config.ci.entries().iter().map(|e| e.kind).collect();
        self.metrics
            .set_ci_secrets(&kinds, &assembled.inventory.secrets);
        g.ci = Some(assembled.inventory);
        g.copies.ci_units = Some(CiLists {
            fresh: assembled.fresh,
            held: assembled.held,
        });
        Ok(())
    }

    async fn gather_packages(
        &self,
        live: &Live,
        cred: &Credential,
        g: &mut Gathered,
    ) -> Result<(), StateError> {
        let cfg = &live.rt.config;
        let found = collect::discover(&live.client, &cfg.watch, cred).await;
        self.note_own_account(found.own_account.as_deref());
        let held = self
            .packuments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let stored = match held {
            Some(stored) => stored,
            None => self.state.packuments()?,
        };
        let mut names = found.packages;
        if found.errors.is_empty() {
            g.copies.watched = Some(names.clone());
        } else {
            // A listing failed: keep watching what was known rather than dropping it.
            names.extend(stored.keys().cloned());
            g.errors.extend(found.errors);
        }
        let cache = self.state.provenance_cache()?;
        let read = collect::read_packages(
            &live.client,
            &names,
            cred,
            &stored,
            &cache,
            cfg.registry.concurrency,
            cfg.policy.trusted_publishing_since,
        )
        .await;
        tracing::debug!(
            fresh = read.fresh.len(),
            not_modified = read.not_modified,
            bytes = read.bytes,
            "packuments read"
        );
        g.copies.packuments = read.fresh;
        g.copies.provenance = read.learned_provenance;
        g.packuments = Some(read.stored);
        g.errors.extend(read.errors);
        g.previous_maintainers = Some(read.previous_maintainers);
        g.packages = Some(read.set);
        Ok(())
    }

    /// Say so when `watch.own_account` resolves to an account for the first time or to another one.
    fn note_own_account(&self, account: Option<&str>) {
        let Some(account) = account else { return };
        let mut known = self.own_account.lock().unwrap_or_else(|p| p.into_inner());
        if known.as_deref() != Some(account) {
            tracing::info!(
                %account,
                "watching the packages of the account the credential belongs to (watch.own_account)"
            );
            *known = Some(account.to_string());
        }
    }

    fn stored_packages(&self) -> Result<PackageSet, StateError> {
        let cache = self.state.provenance_cache()?;
        Ok(PackageSet {
            packuments: self
                .state
                .packuments()?
                .into_iter()
                .map(|(n, (_, p))| (n, p))
                .collect(),
            provenance: cache
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect(),
        })
    }

    /// One cycle of a group: read, record health, run its checks, plan the alerts, commit.
    pub(super) async fn cycle(&self, group: Group) -> Result<(), StateError> {
        let live = self.live();
        let rt = &live.rt;
        let now = Utc::now();
        let max_run = rt.config.schedule.max_run;
        let mut g = match tokio::time::timeout(max_run.0, self.gather(&live, group)).await {
            Ok(g) => g?,
            // A registry that answers forever (an endless `next` chain, a drip-fed body) must not
            // hold the group: the reads are dropped (between awaits, so nothing half-written) and
            // the run fails like any other, so health and `watchdog-blind` see it.
            Err(_) => Gathered {
                errors: vec![ReadError {
                    what: String::new(),
                    reason: Reason::RunTimeout,
                    detail: format!(
                        "reading took longer than schedule.max_run ({max_run}) and was stopped"
                    ),
                }],
                ..Gathered::default()
            },
        };
        for e in &g.errors {
            self.metrics.group_error(group, e.reason);
        }
        let error = (!g.errors.is_empty()).then(|| {
            g.errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        });
        let stored_health = self.state.group_health()?;
        let was_failing = stored_health
            .iter()
            .any(|h| h.group == group.as_str() && h.consecutive_failures > 0);
        // The health as this run leaves it, judged now and recorded in the commit.
        let all_health = state::health_after(stored_health, group.as_str(), error.as_deref());
        let failures = all_health
            .iter()
            .find(|h| h.group == group.as_str())
            .map_or(0, |h| h.consecutive_failures);
        match &error {
            Some(e) => tracing::warn!(
                %group,
                failures,
                error = %e,
                "check group could not read everything; keeping earlier findings for what it could not read"
            ),
            None if was_failing => tracing::info!(%group, "check group recovered"),
            None => tracing::debug!(%group, "check group ran"),
        }
        let seen = self.state.seen_tokens()?;
        // The checks judge live tokens; an expired one is still listed (and still seen), and its
        // findings resolve, saying why.
        let live_tokens = g.tokens.as_deref().map(|t| checks::live_tokens(t, now));
        let snap = Snapshot {
            tokens: live_tokens.as_deref(),
            profile: g.profile.as_ref(),
            own_key: g.own_key.as_deref(),
            seen_tokens: seen.as_ref(),
            health: &all_health,
            packages: g.packages.as_ref(),
            orgs: g.orgs.as_deref(),
            previous_maintainers: g.previous_maintainers.as_ref(),
            ci: g.ci.as_ref(),
            ..Snapshot::new(now, &rt.registry)
        };
        let policy = &rt.config.policy;
        let (mut findings, mut ran) = checks::run_group(group, &snap, policy);
        let (health_findings, health_ran) = checks::run_group(Group::Health, &snap, policy);
        findings.extend(health_findings);
        ran.extend(health_ran);
        let mut previous = self.state.active_digests(&ran)?;
        let wanted = lifecycle::needs_text(&previous, &findings);
        self.state.load_texts(&mut previous, &wanted)?;
        let mut plan = lifecycle::plan(
            previous,
            findings,
            &checks::events(),
            now,
            &rt.config.alerts,
            &self.outbox.routes(),
        );
        if let Some(listed) = &g.tokens {
            say_which_expired(&mut plan, listed, now);
        }
        for o in &plan.notifications {
            let n = &o.note;
            tracing::info!(
                status = n.status.as_str(),
                reminder = n.reminder,
                check = %n.finding.check,
                severity = %n.finding.severity,
                subject = %n.finding.subject,
                "finding {}",
                if n.status == Status::Firing { "fires" } else { "resolved" }
            );
        }
        let keys = g
            .tokens
            .as_deref()
            .map(|t| t.iter().map(|t| t.key.clone()).collect());
        let grouping = self.outbox.grouping(
            checks::all()
                .iter()
                .map(|c| (c.id.to_string(), c.group.as_str().to_string()))
                .collect(),
        );
        self.state.commit_cycle(&CycleRecord {
            group: group.as_str(),
            grouping: &grouping,
            error: error.as_deref(),
            copies: std::mem::take(&mut g.copies),
            plan: &plan,
            seen_tokens: keys.as_ref(),
            prune_before: now - KEEP_DELIVERED,
            now,
        })?;

        // Published only after the commit: a cycle whose commit failed leaves no trace, and the
        // next one starts from the state.
        if let Some(stored) = g.packuments.take() {
            *self.packuments.lock().unwrap_or_else(|p| p.into_inner()) = Some(stored);
        }
        self.mirror_firing(&ran)?;

        if let Some(t) = &g.tokens {
            self.metrics.set_tokens(t, now);
            let own = t
                .iter()
                .find(|t| checks::is_own_token(t, g.own_key.as_deref(), policy));
            self.metrics.set_own_token(own);
        }
        if group == Group::Packages {
            if let Some(p) = &g.packages {
                self.metrics
                    .set_packages(p, live.rt.config.server.package_series);
            }
        }
        self.metrics.set_findings(&self.state.finding_counts()?);
        self.metrics.group_ran(group, error.is_none(), now);
        Ok(())
    }

    /// Tell mirroring sinks (Alertmanager) what is firing, from the checks that have run since this
    /// process started. A replica that was down does not re-announce, from its old state, a finding
    /// another replica has resolved meanwhile: it waits for its own cycle to confirm it, and a check
    /// whose source could not be read confirms nothing.
    fn mirror_firing(&self, ran: &[&'static str]) -> Result<(), StateError> {
        let confirmed = {
            let mut c = self.confirmed.lock().unwrap_or_else(|p| p.into_inner());
            c.extend(ran.iter().copied());
            c.clone()
        };
        if !self.outbox.any_mirrors() {
            return Ok(());
        }
        let firing: Vec<Notification> = self
            .state
            .active(None)?
            .into_iter()
            .filter(|a| confirmed.contains(&*a.finding.check))
            .map(|a| Notification::firing(a.finding, a.first_seen, a.last_seen))
            .collect();
        self.outbox.firing(&firing);
        Ok(())
    }
}

/// A token finding that resolves because its token expired says so: the token is still listed, so
/// "no longer reported" alone would leave the reader wondering whether it was revoked.
fn say_which_expired(plan: &mut lifecycle::Plan, listed: &[Token], now: DateTime<Utc>) {
    for o in &mut plan.notifications {
        let n = &mut o.note;
        if n.status != Status::Resolved || !n.finding.check.starts_with("token-") {
            continue;
        }
        if let Some(e) = listed
            .iter()
            .find(|t| t.key == n.finding.subject_key && t.is_expired(now))
            .and_then(|t| t.expires)
        {
            n.resolution = Some(format!(
                "the token expired on {}; it is still listed but can no longer be used",
                e.format("%Y-%m-%d %H:%M UTC")
            ));
        }
    }
}
