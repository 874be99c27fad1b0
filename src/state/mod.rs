//! Durable state in SQLite: seen token keys, active findings, the notification outbox, per-group health,
//! stored copies of what the registry showed, and small facts (when `harden` last ran).
//!
//! One cycle's outcome (the copies it read, the group's health, new findings, resolved ones, the
//! notifications they cause and the token keys now seen) is written in a single transaction
//! ([`State::commit_cycle`]), so a crash either keeps the whole cycle
//! or none of it: a notification is never lost and never queued twice for one state change. The
//! connection sits behind a mutex; every statement is small, so holding it briefly from async code is
//! fine.
//!
//! This file opens the database and holds the schema; `commit` (the cycle's transaction),
//! `findings` (findings, health), `outbox` (queued notifications) and `cache` (stored registry
//! copies) add the queries.

mod cache;
mod commit;
mod findings;
mod outbox;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

pub use commit::{health_after, CiLists, Copies, CycleRecord};
pub use outbox::OutboxItem;

/// 2: `outbox.claimed` (claim before send). 3: `outbox.priority` (the highest severity first).
const SCHEMA_VERSION: i64 = 3;

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

/// JSON text of a body, for use inside a transaction: a failure (which the types stored here cannot
/// produce) aborts it like any SQLite error.
fn json_text<T: serde::Serialize>(value: &T) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
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

    #[cfg(test)]
    pub fn open_in_memory() -> Result<Self, StateError> {
        let conn = Connection::open_in_memory().map_err(|source| StateError::Sqlite {
            path: ":memory:".into(),
            source,
        })?;
        Self::init(conn, ":memory:".into())
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
                     last_error TEXT,
                     claimed INTEGER,
                     priority INTEGER NOT NULL DEFAULT 0
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
                 CREATE TABLE IF NOT EXISTS ci_units (unit TEXT PRIMARY KEY, body TEXT NOT NULL, fetched INTEGER NOT NULL);
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
            // Version 1 had no claim column, version 2 no priority; everything else is kept as it
            // is (rows queued before have priority 0 and go out after new critical ones).
            Some(v) if v == "1" || v == "2" => {
                if v == "1" {
                    s.with(|c| c.execute_batch("ALTER TABLE outbox ADD COLUMN claimed INTEGER;"))?;
                }
                s.with(|c| {
                    c.execute_batch(
                        "ALTER TABLE outbox ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;",
                    )
                })?;
                s.set_meta("schema_version", &SCHEMA_VERSION.to_string())?;
            }
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
        f(&mut c).map_err(|e| self.sqlite(e))
    }

    fn sqlite(&self, source: rusqlite::Error) -> StateError {
        StateError::Sqlite {
            path: self.path.clone(),
            source,
        }
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

    /// Every row `sql` selects, each as a tuple of its columns.
    fn rows<T>(&self, sql: &str) -> Result<Vec<T>, StateError>
    where
        T: for<'r> TryFrom<&'r Row<'r>, Error = rusqlite::Error>,
    {
        self.with(|c| {
            let mut stmt = c.prepare(sql)?;
            let rows = stmt
                .query_map([], |r| T::try_from(r))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// A `key → JSON body` table (the query's first two columns), decoded; `what` names a row in an
    /// error. Each body is decoded as its row is read, straight from SQLite's buffer: a table of
    /// thousands of documents is never held as text and decoded at once.
    fn json_map<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        what: &str,
    ) -> Result<BTreeMap<String, T>, StateError> {
        self.json_rows(sql, what, |_, v| Ok(v))
    }

    /// Like [`Self::json_map`], with the row at hand to build each value from its decoded body.
    fn json_rows<B: serde::de::DeserializeOwned, T>(
        &self,
        sql: &str,
        what: &str,
        mut build: impl FnMut(&Row<'_>, B) -> rusqlite::Result<T>,
    ) -> Result<BTreeMap<String, T>, StateError> {
        let c = self.lock();
        let mut stmt = c.prepare(sql).map_err(|e| self.sqlite(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.sqlite(e))?;
        let mut out = BTreeMap::new();
        while let Some(r) = rows.next().map_err(|e| self.sqlite(e))? {
            let key: String = r.get(0).map_err(|e| self.sqlite(e))?;
            let body = r
                .get_ref(1)
                .and_then(|v| v.as_str().map_err(Into::into))
                .map_err(|e| self.sqlite(e))?;
            let decoded = self.decode(&format!("{what} {key}"), body)?;
            out.insert(key, build(r, decoded).map_err(|e| self.sqlite(e))?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    use crate::alerts::lifecycle::{Active, Outgoing, Plan};
    use crate::alerts::Notification;
    use crate::finding::{Finding, Severity};

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

    /// When `group` last succeeded, as recorded.
    fn last_success(s: &State, group: &str) -> Option<DateTime<Utc>> {
        s.with(|c| {
            c.query_row(
                "SELECT last_success FROM check_runs WHERE grp = ?1",
                [group],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()
        })
        .expect("query")
        .flatten()
        .map(from_ts)
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-26T12:00:00Z")
            .expect("t")
            .with_timezone(&Utc)
    }

    #[test]
    fn a_touched_finding_moves_only_its_last_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = State::open(&dir.path().join("state.db")).expect("open");
        let f = finding("aaaaaa", Severity::Warning);
        let first = Plan {
            upserts: vec![Active {
                finding: f.clone().into(),
                first_seen: now(),
                last_seen: now(),
                last_notified: Some(now()),
            }],
            ..Plan::default()
        };
        s.commit(&first, None, now()).expect("commit");
        let later = now() + chrono::Duration::hours(1);
        let again = Plan {
            touched: vec![f.fingerprint()],
            ..Plan::default()
        };
        s.commit(&again, None, later).expect("commit");
        let active = s.active(None).expect("active");
        assert_eq!(
            active,
            vec![Active {
                finding: f.into(),
                first_seen: now(),
                last_seen: later,
                last_notified: Some(now()),
            }]
        );
    }

    /// What the lifecycle compares is read without the text: the digest of a stored finding is the
    /// digest of the finding itself, so an unchanged one is seen as unchanged, and the text of the
    /// ones asked for is decoded on demand.
    #[test]
    fn digests_of_stored_findings_match_and_texts_load_on_demand() {
        use crate::alerts::lifecycle::{finding_digest, plan};
        let dir = tempfile::tempdir().expect("tempdir");
        let s = State::open(&dir.path().join("state.db")).expect("open");
        let kept = finding("aaaaaa", Severity::Warning);
        let gone = finding("bbbbbb", Severity::Critical);
        let first = Plan {
            upserts: [&kept, &gone]
                .into_iter()
                .map(|f| Active {
                    finding: f.clone().into(),
                    first_seen: now(),
                    last_seen: now(),
                    last_notified: Some(now()),
                })
                .collect(),
            ..Plan::default()
        };
        s.commit(&first, None, now()).expect("commit");

        let mut previous = s.active_digests(&["token-present"]).expect("digests");
        // In no particular order: the kept one first here.
        previous.sort_by_key(|p| p.fingerprint != kept.fingerprint());
        assert_eq!(previous.len(), 2);
        assert!(previous.iter().all(|p| p.finding.is_none()));
        assert_eq!(previous[0].digest, finding_digest(&kept));
        assert!(s
            .active_digests(&["token-created"])
            .expect("digests")
            .is_empty());

        let current = vec![kept.clone()];
        let wanted = crate::alerts::lifecycle::needs_text(&previous, &current);
        assert_eq!(wanted, HashSet::from([gone.fingerprint()]));
        s.load_texts(&mut previous, &wanted).expect("texts");
        assert_eq!(previous[0].finding, None);
        assert_eq!(previous[1].finding.as_deref(), Some(&gone));

        let later = now() + chrono::Duration::hours(1);
        let p = plan(
            previous,
            current,
            &HashSet::new(),
            later,
            &crate::alerts::AlertsConfig::default(),
            &[("log".to_string(), crate::alerts::Route::default())],
        );
        assert_eq!(p.touched, [kept.fingerprint()]);
        assert!(p.upserts.is_empty());
        assert_eq!(p.resolved, [gone.fingerprint()]);
        assert_eq!(p.notifications.len(), 1);
        assert_eq!(
            *p.notifications[0].note.finding, gone,
            "RESOLVED carries the stored text"
        );
    }

    #[test]
    fn seen_tokens_hold_the_last_complete_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = State::open(&dir.path().join("state.db")).expect("open");
        let set = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect::<HashSet<_>>();
        let plan = Plan::default();
        s.commit(&plan, Some(&set(&["a", "b", "c"])), now())
            .expect("commit");
        s.commit(&plan, Some(&set(&["b", "c", "d"])), now())
            .expect("commit");
        assert_eq!(s.seen_tokens().expect("seen"), Some(set(&["b", "c", "d"])));
        // A cycle that did not read the list leaves the keys alone.
        s.commit(&plan, None, now()).expect("commit");
        assert_eq!(s.seen_tokens().expect("seen"), Some(set(&["b", "c", "d"])));
        // An empty complete list is a list: nothing stays seen.
        s.commit(&plan, Some(&set(&[])), now()).expect("commit");
        assert_eq!(s.seen_tokens().expect("seen"), Some(set(&[])));
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
                    finding: f.clone().into(),
                    first_seen: now(),
                    last_seen: now(),
                    last_notified: Some(now()),
                }],
                touched: vec![],
                resolved: vec![],
                notifications: vec![Outgoing {
                    note: Notification::firing(f, now(), now()),
                    sinks: vec!["email".to_string()].into(),
                }],
            };
            let keys: HashSet<String> = ["aaaaaa".to_string()].into();
            assert_eq!(s.commit(&plan, Some(&keys), now()).expect("commit"), 1);
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
        // Claimed: no longer pending; a second claim of the same row fails.
        assert!(s.claim(pending[0].id, now()).expect("claim"));
        assert!(s.pending().expect("pending").is_empty());
        assert!(!s.claim(pending[0].id, now()).expect("claim"));
        // The process dies here. The next start releases the row, and it is pending again.
        drop(s);
        let s = State::open(&path).expect("reopen");
        assert_eq!(s.release_interrupted().expect("release"), 1);
        let pending = s.pending().expect("pending");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].attempts, 1);
        assert!(s.claim(pending[0].id, now()).expect("claim"));
        s.mark_delivered(pending[0].id, now(), None)
            .expect("deliver");
        assert!(s.pending().expect("pending").is_empty());
        assert_eq!(s.release_interrupted().expect("release"), 0);
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
        assert_eq!(last_success(&s, "tokens"), Some(now()));
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

    #[test]
    fn version_1_file_gains_the_claim_column_and_keeps_its_queue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        {
            // The outbox as version 1 wrote it, with one queued row.
            let c = Connection::open(&path).expect("open");
            c.execute_batch(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 INSERT INTO meta VALUES ('schema_version', '1');
                 CREATE TABLE outbox (
                     id INTEGER PRIMARY KEY AUTOINCREMENT, sink TEXT NOT NULL, fingerprint TEXT NOT NULL,
                     body TEXT NOT NULL, created INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
                     next_attempt INTEGER NOT NULL, delivered INTEGER, last_error TEXT);",
            )
            .expect("v1 schema");
            let body = serde_json::to_string(&Notification::test(now())).expect("json");
            c.execute(
                "INSERT INTO outbox (sink, fingerprint, body, created, next_attempt) VALUES ('email', 'f', ?1, 0, 0)",
                [body],
            )
            .expect("row");
        }
        let s = State::open(&path).expect("migrates");
        assert_eq!(s.meta("schema_version").expect("meta"), Some("3".into()));
        let pending = s.pending().expect("pending");
        assert_eq!(pending.len(), 1);
        assert!(s.claim(pending[0].id, now()).expect("claim"));
    }
}
