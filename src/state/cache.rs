//! Stored copies of what the registry showed, so that a read that fails keeps the last good copy and
//! an unchanged document costs a 304: slim packuments with their ETags, provenance per version, org
//! views, the CI providers' secret lists (names and dates only), and when `harden` set each
//! package's publishing access.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::{from_ts, ts, State, StateError};
use crate::ci::CiSecret;
use crate::collect::StoredPackument;
use crate::registry::{OrgView, Packument, ProvenanceSource};

impl State {
    /// Stored slim packuments with their ETags.
    pub fn packuments(&self) -> Result<BTreeMap<String, StoredPackument>, StateError> {
        self.json_rows(
            "SELECT name, body, etag FROM packuments",
            "packument",
            |r, p| Ok((r.get(2)?, Arc::new(p))),
        )
    }

    pub fn store_packuments(
        &self,
        fresh: &[(String, Option<String>, Arc<Packument>)],
    ) -> Result<(), StateError> {
        let now = ts(chrono::Utc::now());
        let mut c = self.lock();
        let tx = c.transaction().map_err(|e| self.sqlite(e))?;
        {
            let mut upsert = tx
                .prepare(
                    "INSERT INTO packuments (name, etag, body, fetched) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(name) DO UPDATE SET etag = excluded.etag, body = excluded.body, fetched = excluded.fetched",
                )
                .map_err(|e| self.sqlite(e))?;
            // One document's text at a time: a first cycle over 10,000 packages stores them all.
            for (name, etag, p) in fresh {
                let body = self.encode(&**p)?;
                upsert
                    .execute(params![name, etag, body, now])
                    .map_err(|e| self.sqlite(e))?;
            }
        }
        tx.commit().map_err(|e| self.sqlite(e))
    }

    /// Drop stored packuments of packages no longer watched.
    pub fn retain_packuments(&self, names: &BTreeSet<String>) -> Result<(), StateError> {
        // Names only: the package cycle has just decoded every stored document once already.
        let stored = self.rows::<(String,)>("SELECT name FROM packuments")?;
        self.with(|c| {
            for (n,) in stored.iter().filter(|(n,)| !names.contains(n)) {
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

    /// The last complete list of each CI unit (`github:acme/widget:actions`).
    pub fn ci_units(&self) -> Result<BTreeMap<String, Vec<CiSecret>>, StateError> {
        self.json_map("SELECT unit, body FROM ci_units", "CI secret list")
    }

    /// Store the units read now and keep only those and `held` (stand-ins for units that could not
    /// be read now), in one transaction: a unit no longer configured, or an environment deleted,
    /// is dropped.
    pub fn replace_ci_units(
        &self,
        fresh: &[(String, Vec<CiSecret>)],
        held: &BTreeSet<String>,
    ) -> Result<(), StateError> {
        let bodies = fresh
            .iter()
            .map(|(unit, secrets)| Ok((unit.as_str(), self.encode(secrets)?)))
            .collect::<Result<Vec<_>, StateError>>()?;
        let now = ts(chrono::Utc::now());
        let stored = self.rows::<(String,)>("SELECT unit FROM ci_units")?;
        self.with(|c| {
            let tx = c.transaction()?;
            for (unit,) in &stored {
                if !held.contains(unit) && !fresh.iter().any(|(u, _)| u == unit) {
                    tx.execute("DELETE FROM ci_units WHERE unit = ?1", [unit])?;
                }
            }
            for (unit, body) in &bodies {
                tx.execute(
                    "INSERT OR REPLACE INTO ci_units (unit, body, fetched) VALUES (?1, ?2, ?3)",
                    params![unit, body, now],
                )?;
            }
            tx.commit()
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
        Ok(self
            .rows::<(String, i64)>("SELECT package, at FROM hardened")?
            .into_iter()
            .map(|(package, at)| (package, from_ts(at)))
            .collect())
    }
}
