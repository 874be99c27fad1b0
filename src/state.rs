//! Durable state in SQLite: seen token keys, active findings, the notification outbox, per-group health
//! and small facts (when `harden` last ran).
//!
//! One cycle's outcome (new findings, resolved ones, the notifications they cause and the token keys now
//! seen) is written in a single transaction, so a crash either keeps the whole cycle or none of it: a
//! notification is never lost and never queued twice for one state change. The connection sits behind
//! a mutex; every statement is small, so holding it briefly from async code is fine.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use crate::alerts::lifecycle::{Active, Plan};
use crate::alerts::Notification;
use crate::checks::{Finding, GroupHealth, Severity};
use crate::registry::package::{OrgView, Packument, ProvenanceSource};

const SCHEMA_VERSION: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state database {}: {source}", .path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state database {}: cannot create its folder: {source}", .path.display())]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state database {}: {detail}", .path.display())]
    Corrupt { path: PathBuf, detail: String },
}

pub struct State {
    conn: Mutex<Connection>,
    path: PathBuf,
}

/// One undelivered notification for one sink.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub id: i64,
    pub sink: String,
    pub notification: Notification,
    pub attempts: u32,
    pub next_attempt: DateTime<Utc>,
}

fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ts(ms: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default()
}

impl State {
    /// Open (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StateError::Folder {
                path: path.into(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|source| StateError::Sqlite {
            path: path.into(),
            source,
        })?;
        Self::init(conn, path.into())
    }

    /// Open the database only if the file exists (one-shot commands read the daemon's state but do
    /// not create one).
    pub fn open_existing(path: &Path) -> Option<Result<Self, StateError>> {
        path.exists().then(|| Self::open(path))
    }

    pub fn open_in_memory() -> Result<Self, StateError> {
        let conn = Connection::open_in_memory().map_err(|source| StateError::Sqlite {
            path: ":memory:".into(),
            source,
        })?;
        Self::init(conn, ":memory:".into())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn init(conn: Connection, path: PathBuf) -> Result<Self, StateError> {
        let s = Self {
            conn: Mutex::new(conn),
            path,
        };
        s.with(|c| {
            c.busy_timeout(std::time::Duration::from_secs(5))?;
            c.pragma_update(None, "journal_mode", "WAL")?;
            c.pragma_update(None, "synchronous", "FULL")?;
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS seen_tokens (key TEXT PRIMARY KEY, first_seen INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS findings (
                     fingerprint TEXT PRIMARY KEY,
                     check_id TEXT NOT NULL,
                     severity TEXT NOT NULL,
                     body TEXT NOT NULL,
                     first_seen INTEGER NOT NULL,
                     last_seen INTEGER NOT NULL,
                     last_notified INTEGER
                 );
                 CREATE TABLE IF NOT EXISTS outbox (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     sink TEXT NOT NULL,
                     fingerprint TEXT NOT NULL,
                     body TEXT NOT NULL,
                     created INTEGER NOT NULL,
                     attempts INTEGER NOT NULL DEFAULT 0,
                     next_attempt INTEGER NOT NULL,
                     delivered INTEGER,
                     last_error TEXT
                 );
                 CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (delivered, id);
                 CREATE TABLE IF NOT EXISTS packuments (
                     name TEXT PRIMARY KEY,
                     etag TEXT,
                     body TEXT NOT NULL,
                     fetched INTEGER NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS provenance (key TEXT PRIMARY KEY, body TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS orgs (org TEXT PRIMARY KEY, body TEXT NOT NULL, fetched INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS hardened (package TEXT PRIMARY KEY, at INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS check_runs (
                     grp TEXT PRIMARY KEY,
                     last_run INTEGER NOT NULL,
                     last_success INTEGER,
                     consecutive_failures INTEGER NOT NULL,
                     last_error TEXT
                 );",
            )?;
            Ok(())
        })?;
        match s.meta("schema_version")? {
            None => s.set_meta("schema_version", &SCHEMA_VERSION.to_string())?,
            Some(v) if v == SCHEMA_VERSION.to_string() => {}
            Some(v) => {
                return Err(StateError::Corrupt {
                    path: s.path.clone(),
                    detail: format!(
                    "schema version {v} is newer than this build understands ({SCHEMA_VERSION}); \
                         run the newer npm-watchdog or move the file away"
                ),
                })
            }
        }
        Ok(s)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll back), so a
        // poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        let mut c = self.lock();
        f(&mut c).map_err(|source| StateError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StateError> {
        self.with(|c| {
            c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
        })
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StateError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(|_| ())
        })
    }

    /// Token keys seen so far; `None` until the first successful token run has been recorded.
    pub fn seen_tokens(&self) -> Result<Option<HashSet<String>>, StateError> {
        if self.meta("tokens_initialized")?.is_none() {
            return Ok(None);
        }
        self.with(|c| {
            let mut stmt = c.prepare("SELECT key FROM seen_tokens")?;
            let keys = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<HashSet<_>>>()?;
            Ok(Some(keys))
        })
    }

    /// Record a group run and return its health afterwards.
    pub fn record_run(
        &self,
        group: &str,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<GroupHealth, StateError> {
        self.with(|c| {
            match error {
                None => c.execute(
                    "INSERT INTO check_runs (grp, last_run, last_success, consecutive_failures, last_error)
                     VALUES (?1, ?2, ?2, 0, NULL)
                     ON CONFLICT(grp) DO UPDATE SET last_run = ?2, last_success = ?2,
                         consecutive_failures = 0, last_error = NULL",
                    params![group, ts(now)],
                )?,
                Some(e) => c.execute(
                    "INSERT INTO check_runs (grp, last_run, last_success, consecutive_failures, last_error)
                     VALUES (?1, ?2, NULL, 1, ?3)
                     ON CONFLICT(grp) DO UPDATE SET last_run = ?2,
                         consecutive_failures = consecutive_failures + 1, last_error = ?3",
                    params![group, ts(now), e],
                )?,
            };
            Ok(())
        })?;
        Ok(self
            .group_health()?
            .into_iter()
            .find(|h| h.group == group)
            .unwrap_or_default())
    }

    pub fn group_health(&self) -> Result<Vec<GroupHealth>, StateError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT grp, consecutive_failures, last_error FROM check_runs ORDER BY grp",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(GroupHealth {
                        group: r.get(0)?,
                        consecutive_failures: r.get(1)?,
                        last_error: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// When each group last succeeded.
    pub fn last_success(&self, group: &str) -> Result<Option<DateTime<Utc>>, StateError> {
        self.with(|c| {
            c.query_row(
                "SELECT last_success FROM check_runs WHERE grp = ?1",
                [group],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()
            .map(|v| v.flatten().map(from_ts))
        })
    }

    /// Active findings of the given checks (all checks when `checks` is `None`).
    pub fn active(&self, checks: Option<&[&str]>) -> Result<Vec<Active>, StateError> {
        let rows: Vec<(String, String, i64, i64, Option<i64>)> = self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT check_id, body, first_seen, last_seen, last_notified FROM findings ORDER BY first_seen, fingerprint",
            )?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })?;
        let mut out = Vec::new();
        for (check, body, first, last, notified) in rows {
            if checks.is_some_and(|cs| !cs.contains(&check.as_str())) {
                continue;
            }
            let finding: Finding =
                serde_json::from_str(&body).map_err(|e| StateError::Corrupt {
                    path: self.path.clone(),
                    detail: format!("finding of check {check}: {e}"),
                })?;
            out.push(Active {
                finding,
                first_seen: from_ts(first),
                last_seen: from_ts(last),
                last_notified: notified.map(from_ts),
            });
        }
        Ok(out)
    }

    /// Active findings counted by check and severity, for the `findings` metric.
    pub fn finding_counts(&self) -> Result<Vec<(String, Severity, i64)>, StateError> {
        let rows: Vec<(String, String, i64)> = self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT check_id, severity, COUNT(*) FROM findings GROUP BY check_id, severity",
            )?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(c, s, n)| Severity::parse(&s).map(|s| (c, s, n)))
            .collect())
    }

    /// Write one cycle's outcome in one transaction: findings, outbox rows for every sink that wants each
    /// notification, and the token keys now seen (`None`: the token list was not read this cycle).
    pub fn commit(
        &self,
        plan: &Plan,
        sinks: &[(String, Severity)],
        seen_tokens: Option<&HashSet<String>>,
        now: DateTime<Utc>,
    ) -> Result<usize, StateError> {
        let mut encoded = Vec::new();
        for a in &plan.upserts {
            let body = serde_json::to_string(&a.finding).map_err(|e| StateError::Corrupt {
                path: self.path.clone(),
                detail: e.to_string(),
            })?;
            encoded.push((a, body));
        }
        let mut notes = Vec::new();
        for n in &plan.notifications {
            let body = serde_json::to_string(n).map_err(|e| StateError::Corrupt {
                path: self.path.clone(),
                detail: e.to_string(),
            })?;
            notes.push((n, body));
        }
        self.with(|c| {
            let tx = c.transaction()?;
            for (a, body) in &encoded {
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
            for fp in &plan.resolved {
                tx.execute("DELETE FROM findings WHERE fingerprint = ?1", [fp])?;
            }
            let mut queued = 0;
            for (n, body) in &notes {
                for (sink, min) in sinks {
                    if n.finding.severity < *min {
                        continue;
                    }
                    tx.execute(
                        "INSERT INTO outbox (sink, fingerprint, body, created, next_attempt) VALUES (?1, ?2, ?3, ?4, ?4)",
                        params![sink, n.fingerprint(), body, ts(now)],
                    )?;
                    queued += 1;
                }
            }
            if let Some(keys) = seen_tokens {
                for k in keys {
                    tx.execute(
                        "INSERT OR IGNORE INTO seen_tokens (key, first_seen) VALUES (?1, ?2)",
                        params![k, ts(now)],
                    )?;
                }
                tx.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('tokens_initialized', ?1)",
                    [now.to_rfc3339()],
                )?;
            }
            tx.commit()?;
            Ok(queued)
        })
    }

    /// Every undelivered outbox row, oldest first.
    pub fn pending(&self) -> Result<Vec<OutboxItem>, StateError> {
        let rows: Vec<(i64, String, String, u32, i64)> = self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, sink, body, attempts, next_attempt FROM outbox WHERE delivered IS NULL ORDER BY id",
            )?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })?;
        rows.into_iter()
            .map(|(id, sink, body, attempts, next)| {
                let notification =
                    serde_json::from_str(&body).map_err(|e| StateError::Corrupt {
                        path: self.path.clone(),
                        detail: format!("outbox row {id}: {e}"),
                    })?;
                Ok(OutboxItem {
                    id,
                    sink,
                    notification,
                    attempts,
                    next_attempt: from_ts(next),
                })
            })
            .collect()
    }

    pub fn mark_delivered(
        &self,
        id: i64,
        now: DateTime<Utc>,
        note: Option<&str>,
    ) -> Result<(), StateError> {
        self.with(|c| {
            c.execute(
                "UPDATE outbox SET delivered = ?2, attempts = attempts + 1, last_error = ?3 WHERE id = ?1",
                params![id, ts(now), note],
            )
            .map(|_| ())
        })
    }

    pub fn mark_failed(
        &self,
        id: i64,
        error: &str,
        next_attempt: DateTime<Utc>,
    ) -> Result<(), StateError> {
        self.with(|c| {
            c.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt = ?3 WHERE id = ?1",
                params![id, error, ts(next_attempt)],
            )
            .map(|_| ())
        })
    }

    /// Undelivered rows per sink.
    pub fn queue_depth(&self) -> Result<Vec<(String, i64)>, StateError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT sink, COUNT(*) FROM outbox WHERE delivered IS NULL GROUP BY sink",
            )?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        body: &str,
    ) -> Result<T, StateError> {
        serde_json::from_str(body).map_err(|e| StateError::Corrupt {
            path: self.path.clone(),
            detail: format!("{what}: {e}"),
        })
    }

    fn encode<T: serde::Serialize>(&self, value: &T) -> Result<String, StateError> {
        serde_json::to_string(value).map_err(|e| StateError::Corrupt {
            path: self.path.clone(),
            detail: e.to_string(),
        })
    }

    /// A `key → JSON body` table, decoded; `what` names a row in an error.
    fn json_map<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        what: &str,
    ) -> Result<BTreeMap<String, T>, StateError> {
        let rows: Vec<(String, String)> = self.with(|c| {
            let mut stmt = c.prepare(sql)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })?;
        rows.into_iter()
            .map(|(k, b)| {
                let v = self.decode(&format!("{what} {k}"), &b)?;
                Ok((k, v))
            })
            .collect()
    }

    /// Stored slim packuments with their ETags.
    pub fn packuments(&self) -> Result<BTreeMap<String, (Option<String>, Packument)>, StateError> {
        let rows: Vec<(String, Option<String>, String)> = self.with(|c| {
            let mut stmt = c.prepare("SELECT name, etag, body FROM packuments")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })?;
        rows.into_iter()
            .map(|(name, etag, body)| {
                let p = self.decode(&format!("packument {name}"), &body)?;
                Ok((name, (etag, p)))
            })
            .collect()
    }

    pub fn store_packuments(
        &self,
        fresh: &[(String, Option<String>, Packument)],
    ) -> Result<(), StateError> {
        let encoded = fresh
            .iter()
            .map(|(n, e, p)| Ok((n, e, self.encode(p)?)))
            .collect::<Result<Vec<_>, StateError>>()?;
        let now = ts(chrono::Utc::now());
        self.with(|c| {
            let tx = c.transaction()?;
            for (name, etag, body) in &encoded {
                tx.execute(
                    "INSERT INTO packuments (name, etag, body, fetched) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(name) DO UPDATE SET etag = excluded.etag, body = excluded.body, fetched = excluded.fetched",
                    params![name, etag, body, now],
                )?;
            }
            tx.commit()
        })
    }

    /// Drop stored packuments of packages no longer watched.
    pub fn retain_packuments(
        &self,
        names: &std::collections::BTreeSet<String>,
    ) -> Result<(), StateError> {
        let stored: Vec<String> = self.packuments()?.into_keys().collect();
        self.with(|c| {
            for n in stored.iter().filter(|n| !names.contains(*n)) {
                c.execute("DELETE FROM packuments WHERE name = ?1", [n])?;
            }
            Ok(())
        })
    }

    /// Provenance per `name@version`: `None` means the version was checked and has none. Versions
    /// are immutable, so entries never expire.
    pub fn provenance_cache(
        &self,
    ) -> Result<BTreeMap<String, Option<ProvenanceSource>>, StateError> {
        self.json_map("SELECT key, body FROM provenance", "provenance")
    }

    pub fn store_provenance(
        &self,
        learned: &[(String, Option<ProvenanceSource>)],
    ) -> Result<(), StateError> {
        let encoded = learned
            .iter()
            .map(|(k, v)| Ok((k, self.encode(v)?)))
            .collect::<Result<Vec<_>, StateError>>()?;
        self.with(|c| {
            for (k, body) in &encoded {
                c.execute(
                    "INSERT OR REPLACE INTO provenance (key, body) VALUES (?1, ?2)",
                    params![k, body],
                )?;
            }
            Ok(())
        })
    }

    pub fn orgs(&self) -> Result<BTreeMap<String, OrgView>, StateError> {
        self.json_map("SELECT org, body FROM orgs", "org")
    }

    pub fn store_org(&self, view: &OrgView) -> Result<(), StateError> {
        let body = self.encode(view)?;
        let now = ts(chrono::Utc::now());
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO orgs (org, body, fetched) VALUES (?1, ?2, ?3)",
                params![view.org, body, now],
            )
            .map(|_| ())
        })
    }

    /// `harden` set "Require 2FA and disallow tokens" on this package at this time.
    pub fn record_hardened(&self, package: &str, at: DateTime<Utc>) -> Result<(), StateError> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO hardened (package, at) VALUES (?1, ?2)",
                params![package, ts(at)],
            )
            .map(|_| ())
        })
    }

    pub fn hardened(&self) -> Result<BTreeMap<String, DateTime<Utc>>, StateError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT package, at FROM hardened")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, from_ts(r.get(1)?))))?
                .collect::<rusqlite::Result<BTreeMap<_, _>>>()?;
            Ok(rows)
        })
    }

    /// Forget delivered outbox rows older than `before`, so the file does not grow forever.
    pub fn prune_delivered(&self, before: DateTime<Utc>) -> Result<usize, StateError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM outbox WHERE delivered IS NOT NULL AND delivered < ?1",
                [ts(before)],
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::lifecycle::Plan;
    use crate::alerts::Status;

    fn finding(key: &str, sev: Severity) -> Finding {
        Finding {
            check: "token-present".into(),
            subject_key: key.into(),
            subject: format!("token {key}"),
            severity: sev,
            summary: "s".into(),
            why: "w".into(),
            fix: "f".into(),
            dod: None,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-26T12:00:00Z")
            .expect("t")
            .with_timezone(&Utc)
    }

    #[test]
    fn cycle_commit_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/state.db");
        {
            let s = State::open(&path).expect("open");
            assert_eq!(s.seen_tokens().expect("seen"), None);
            let f = finding("aaaaaa", Severity::Warning);
            let plan = Plan {
                upserts: vec![Active {
                    finding: f.clone(),
                    first_seen: now(),
                    last_seen: now(),
                    last_notified: Some(now()),
                }],
                resolved: vec![],
                notifications: vec![Notification {
                    status: Status::Firing,
                    reminder: false,
                    event: false,
                    test: false,
                    finding: f,
                    first_seen: now(),
                    at: now(),
                }],
            };
            let keys: HashSet<String> = ["aaaaaa".to_string()].into();
            let sinks = vec![
                ("email".to_string(), Severity::Info),
                ("pager".to_string(), Severity::Critical),
            ];
            assert_eq!(
                s.commit(&plan, &sinks, Some(&keys), now()).expect("commit"),
                1
            );
        }
        let s = State::open(&path).expect("reopen");
        assert_eq!(
            s.seen_tokens().expect("seen"),
            Some(["aaaaaa".to_string()].into())
        );
        assert_eq!(s.active(None).expect("active").len(), 1);
        let pending = s.pending().expect("pending");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].sink, "email");
        s.mark_delivered(pending[0].id, now(), None)
            .expect("deliver");
        assert!(s.pending().expect("pending").is_empty());
        assert_eq!(
            s.finding_counts().expect("counts"),
            vec![("token-present".into(), Severity::Warning, 1)]
        );
    }

    #[test]
    fn health_counts_consecutive_failures() {
        let s = State::open_in_memory().expect("open");
        assert_eq!(
            s.record_run("tokens", Some("x"), now())
                .expect("run")
                .consecutive_failures,
            1
        );
        assert_eq!(
            s.record_run("tokens", Some("y"), now())
                .expect("run")
                .consecutive_failures,
            2
        );
        let h = s.record_run("tokens", None, now()).expect("run");
        assert_eq!((h.consecutive_failures, h.last_error), (0, None));
        assert_eq!(s.last_success("tokens").expect("last"), Some(now()));
    }

    #[test]
    fn newer_schema_is_refused_without_touching_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        State::open(&path)
            .expect("open")
            .set_meta("schema_version", "99")
            .expect("set");
        let err = State::open(&path).err().expect("refused").to_string();
        assert!(err.contains("schema version 99 is newer"), "{err}");
    }
}
