//! Stored copies of what the registry showed, so that a read that fails keeps the last good copy and
//! an unchanged document costs a 304: slim packuments with their ETags, provenance per version, org
//! views, the CI providers' secret lists (names and dates only), and when `harden` set each
//! package's publishing access. A cycle writes its copies in its one transaction (`commit.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::{from_ts, ts, State, StateError};
use crate::ci::CiSecret;
use crate::collect::StoredPackument;
use crate::registry::{OrgView, ProvenanceSource};

impl State {
    /// Stored slim packuments with their ETags.
    pub fn packuments(&self) -> Result<BTreeMap<String, StoredPackument>, StateError> {
        self.json_rows(
            "SELECT name, body, etag FROM packuments",
            "packument",
            |r, p| Ok((r.get(2)?, Arc::new(p))),
        )
    }

    /// Provenance per `name@version`: `None` means the version was checked and has none. Versions
    /// are immutable, so entries never expire.
    pub fn provenance_cache(
        &self,
    ) -> Result<BTreeMap<String, Option<ProvenanceSource>>, StateError> {
        self.json_map("SELECT key, body FROM provenance", "provenance")
    }

    pub fn orgs(&self) -> Result<BTreeMap<String, OrgView>, StateError> {
        self.json_map("SELECT org, body FROM orgs", "org")
    }

    /// The last complete list of each CI unit (`github:acme/widget:actions`).
    pub fn ci_units(&self) -> Result<BTreeMap<String, Vec<CiSecret>>, StateError> {
        self.json_map("SELECT unit, body FROM ci_units", "CI secret list")
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
