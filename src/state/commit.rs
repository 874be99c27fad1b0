//! The one transaction that records a cycle. Everything a cycle changes in the state goes in it
//! together: the stored copies it read (packuments, provenance, org views, CI lists), the group's
//! health, the findings, the outbox rows for their notifications, the token keys now seen, and the
//! pruning of old delivered rows. Either all of it is kept or none of it is.
//!
//! Why the copies belong here: the next cycle compares the registry with them (`maintainers-changed`,
//! conditional requests by ETag). Kept on their own while the findings they cause were lost, they
//! would already hold the change, and the change would never be reported.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rusqlite::{params, Transaction};

use super::{outbox, ts, State, StateError};
use crate::alerts::group::Grouping;
use crate::alerts::lifecycle::Plan;
use crate::checks::GroupHealth;
use crate::ci::CiSecret;
use crate::registry::{OrgView, Packument, ProvenanceSource};

/// The stored copies a cycle read fresh, to be kept with its findings.
#[derive(Debug, Default)]
pub struct Copies {
    /// Packuments read fresh (`name`, ETag, slim document).
    pub packuments: Vec<(String, Option<String>, Arc<Packument>)>,
    /// When every listing succeeded: the watched names. Stored packuments of other packages are
    /// dropped. `None` keeps them all (a listing failed, so they may still be watched).
    pub watched: Option<BTreeSet<String>>,
    /// Provenance learned per `name@version` (`None`: checked, has none).
    pub provenance: Vec<(String, Option<ProvenanceSource>)>,
    /// Org views read fresh.
    pub orgs: Vec<OrgView>,
    /// CI lists. `None`: the CI group did not run.
    pub ci_units: Option<CiLists>,
}

/// The CI lists of a run: units in neither `fresh` nor `held` are dropped (no longer configured, or
/// the environment was deleted).
#[derive(Debug, Default)]
pub struct CiLists {
    /// Read now.
    pub fresh: Vec<(String, Vec<CiSecret>)>,
    /// Could not be read now: their stored list stands in.
    pub held: BTreeSet<String>,
}

/// What one cycle of a group writes.
pub struct CycleRecord<'a> {
    /// The group whose run this is, and why it failed (`None`: it read everything).
    pub group: &'a str,
    pub error: Option<&'a str>,
    pub copies: Copies,
    pub plan: &'a Plan,
    /// The token keys of a complete token list (`None`: the list was not read this cycle).
    pub seen_tokens: Option<&'a HashSet<String>>,
    /// How each sink groups the plan's notifications into messages.
    pub grouping: &'a Grouping,
    /// Delivered outbox rows older than this are forgotten.
    pub prune_before: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// Every group's health as it will be once `group`'s run is recorded: the stored rows with this
/// run applied. The cycle judges with it before anything is written (`watchdog-blind` counts this
/// run's failure), and [`State::commit_cycle`] records the same run.
pub fn health_after(
    mut stored: Vec<GroupHealth>,
    group: &str,
    error: Option<&str>,
) -> Vec<GroupHealth> {
    match stored.iter_mut().find(|h| h.group == group) {
        Some(h) => match error {
            None => {
                h.consecutive_failures = 0;
                h.last_error = None;
            }
            Some(e) => {
                h.consecutive_failures += 1;
                h.last_error = Some(e.to_string());
            }
        },
        None => {
            stored.push(GroupHealth {
                group: group.to_string(),
                consecutive_failures: u32::from(error.is_some()),
                last_error: error.map(str::to_string),
            });
            stored.sort_by(|a, b| a.group.cmp(&b.group));
        }
    }
    stored
}

impl State {
    /// Record a cycle in one transaction. Returns how many outbox rows were queued.
    pub fn commit_cycle(&self, r: &CycleRecord<'_>) -> Result<usize, StateError> {
        // Bodies are encoded as they are written, not all first: a first cycle over 10,000
        // packages, or with tens of thousands of findings, would otherwise hold every text at once.
        self.with(|c| {
            let tx = c.transaction()?;
            write_copies(&tx, &r.copies, r.now)?;
            record_run(&tx, r.group, r.error, r.now)?;
            let queued = write_plan(&tx, r.plan, r.grouping, r.seen_tokens, r.now)?;
            tx.execute(
                "DELETE FROM outbox WHERE delivered IS NOT NULL AND delivered < ?1",
                [ts(r.prune_before)],
            )?;
            tx.commit()?;
            Ok(queued)
        })
    }

    /// Record a plan alone (findings, outbox rows, seen token keys) in one transaction: for what
    /// is not a group's cycle (the state alert's RESOLVED, sent on its own like its FIRING) and for
    /// tests. Nothing is grouped.
    pub fn commit(
        &self,
        plan: &Plan,
        seen_tokens: Option<&HashSet<String>>,
        now: DateTime<Utc>,
    ) -> Result<usize, StateError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let queued = write_plan(&tx, plan, &Grouping::default(), seen_tokens, now)?;
            tx.commit()?;
            Ok(queued)
        })
    }

    /// Record a group run on its own and return its health afterwards (tests; the daemon records
    /// runs in [`Self::commit_cycle`]).
    #[cfg(test)]
    pub fn record_run(
        &self,
        group: &str,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<GroupHealth, StateError> {
        self.with(|c| {
            let tx = c.transaction()?;
            record_run(&tx, group, error, now)?;
            tx.commit()
        })?;
        Ok(self
            .group_health()?
            .into_iter()
            .find(|h| h.group == group)
            .unwrap_or_default())
    }
}

fn write_copies(tx: &Transaction<'_>, copies: &Copies, now: DateTime<Utc>) -> rusqlite::Result<()> {
    let now = ts(now);
    {
        let mut upsert = tx.prepare(
            "INSERT INTO packuments (name, etag, body, fetched) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO UPDATE SET etag = excluded.etag, body = excluded.body, fetched = excluded.fetched",
        )?;
        for (name, etag, p) in &copies.packuments {
            upsert.execute(params![name, etag, super::json_text(&**p)?, now])?;
        }
    }
    if let Some(watched) = &copies.watched {
        // Names only: the package cycle has just decoded every stored document once already.
        let stored: Vec<String> = {
            let mut stmt = tx.prepare("SELECT name FROM packuments")?;
            let names = stmt.query_map([], |r| r.get(0))?;
            names.collect::<rusqlite::Result<_>>()?
        };
        let mut delete = tx.prepare("DELETE FROM packuments WHERE name = ?1")?;
        for n in stored.iter().filter(|n| !watched.contains(*n)) {
            delete.execute([n])?;
        }
    }
    {
        let mut insert =
            tx.prepare("INSERT OR REPLACE INTO provenance (key, body) VALUES (?1, ?2)")?;
        for (k, v) in &copies.provenance {
            insert.execute(params![k, super::json_text(v)?])?;
        }
    }
    for view in &copies.orgs {
        tx.execute(
            "INSERT OR REPLACE INTO orgs (org, body, fetched) VALUES (?1, ?2, ?3)",
            params![view.org, super::json_text(view)?, now],
        )?;
    }
    if let Some(CiLists { fresh, held }) = &copies.ci_units {
        let stored: Vec<String> = {
            let mut stmt = tx.prepare("SELECT unit FROM ci_units")?;
            let units = stmt.query_map([], |r| r.get(0))?;
            units.collect::<rusqlite::Result<_>>()?
        };
        for unit in &stored {
            if !held.contains(unit) && !fresh.iter().any(|(u, _)| u == unit) {
                tx.execute("DELETE FROM ci_units WHERE unit = ?1", [unit])?;
            }
        }
        for (unit, secrets) in fresh {
            tx.execute(
                "INSERT OR REPLACE INTO ci_units (unit, body, fetched) VALUES (?1, ?2, ?3)",
                params![unit, super::json_text(secrets)?, now],
            )?;
        }
    }
    Ok(())
}

fn record_run(
    tx: &Transaction<'_>,
    group: &str,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> rusqlite::Result<()> {
    match error {
        None => tx.execute(
            "INSERT INTO check_runs (grp, last_run, last_success, consecutive_failures, last_error)
             VALUES (?1, ?2, ?2, 0, NULL)
             ON CONFLICT(grp) DO UPDATE SET last_run = ?2, last_success = ?2,
                 consecutive_failures = 0, last_error = NULL",
            params![group, ts(now)],
        )?,
        Some(e) => tx.execute(
            "INSERT INTO check_runs (grp, last_run, last_success, consecutive_failures, last_error)
             VALUES (?1, ?2, NULL, 1, ?3)
             ON CONFLICT(grp) DO UPDATE SET last_run = ?2,
                 consecutive_failures = consecutive_failures + 1, last_error = ?3",
            params![group, ts(now), e],
        )?,
    };
    Ok(())
}

/// Findings, outbox rows and seen token keys.
fn write_plan(
    tx: &Transaction<'_>,
    plan: &Plan,
    grouping: &Grouping,
    seen_tokens: Option<&HashSet<String>>,
    now: DateTime<Utc>,
) -> rusqlite::Result<usize> {
    for a in &plan.upserts {
        let body = super::json_text(&a.finding)?;
        tx.execute(
            "INSERT INTO findings (fingerprint, check_id, severity, body, first_seen, last_seen, last_notified)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(fingerprint) DO UPDATE SET severity = excluded.severity, body = excluded.body,
                 last_seen = excluded.last_seen, last_notified = excluded.last_notified",
            params![
                a.finding.fingerprint(),
                a.finding.check,
                a.finding.severity.as_str(),
                body,
                ts(a.first_seen),
                ts(a.last_seen),
                a.last_notified.map(ts)
            ],
        )?;
    }
    {
        let mut touch = tx.prepare("UPDATE findings SET last_seen = ?1 WHERE fingerprint = ?2")?;
        for fp in &plan.touched {
            touch.execute(params![ts(now), fp])?;
        }
    }
    for fp in &plan.resolved {
        tx.execute("DELETE FROM findings WHERE fingerprint = ?1", [fp])?;
    }
    let queued = outbox::queue(tx, &plan.notifications, grouping, now)?;
    if let Some(keys) = seen_tokens {
        // The table holds exactly the keys of the last complete list: a revoked token's key is
        // dropped (keys are never reused, so it cannot come back unannounced), which keeps the
        // table from growing with every token ever made.
        let stored: HashSet<String> = {
            let mut stmt = tx.prepare("SELECT key FROM seen_tokens")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut insert =
            tx.prepare("INSERT OR IGNORE INTO seen_tokens (key, first_seen) VALUES (?1, ?2)")?;
        for k in keys.difference(&stored) {
            insert.execute(params![k, ts(now)])?;
        }
        let mut delete = tx.prepare("DELETE FROM seen_tokens WHERE key = ?1")?;
        for k in stored.difference(keys) {
            delete.execute([k])?;
        }
        tx.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('tokens_initialized', ?1)",
            [now.to_rfc3339()],
        )?;
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(group: &str, failures: u32, error: Option<&str>) -> GroupHealth {
        GroupHealth {
            group: group.into(),
            consecutive_failures: failures,
            last_error: error.map(str::to_string),
        }
    }

    #[test]
    fn health_after_applies_this_run_as_the_commit_records_it() {
        let stored = vec![h("org", 0, None), h("tokens", 2, Some("old"))];
        assert_eq!(
            health_after(stored.clone(), "tokens", Some("new")),
            vec![h("org", 0, None), h("tokens", 3, Some("new"))]
        );
        assert_eq!(
            health_after(stored.clone(), "tokens", None),
            vec![h("org", 0, None), h("tokens", 0, None)]
        );
        assert_eq!(
            health_after(stored, "packages", Some("x")),
            vec![
                h("org", 0, None),
                h("packages", 1, Some("x")),
                h("tokens", 2, Some("old"))
            ]
        );
        // The same run recorded in the database gives the same health.
        let s = State::open_in_memory().expect("open");
        let now = Utc::now();
        s.record_run("tokens", Some("a"), now).expect("run");
        let plan = Plan::default();
        let expected = health_after(s.group_health().expect("health"), "tokens", Some("b"));
        s.commit_cycle(&CycleRecord {
            group: "tokens",
            error: Some("b"),
            copies: Copies::default(),
            plan: &plan,
            grouping: &crate::alerts::Grouping::default(),
            seen_tokens: None,
            prune_before: now,
            now,
        })
        .expect("commit");
        assert_eq!(s.group_health().expect("health"), expected);
    }
}
