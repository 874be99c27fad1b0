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

/// The meta key of [`State::unfinished_harden`].
const UNFINISHED_HARDEN: &str = "harden_unfinished_since";

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

    /// When the `harden` run that left work undone started, if the last one did: the packages it
    /// recorded since then are done, and the next run skips them.
    pub fn unfinished_harden(&self) -> Result<Option<DateTime<Utc>>, StateError> {
        Ok(self
            .meta(UNFINISHED_HARDEN)?
            .and_then(|v| v.parse::<i64>().ok())
            .map(from_ts))
    }

    /// Mark (with the time the unfinished run started) or clear the unfinished `harden` run.
    pub fn set_unfinished_harden(&self, since: Option<DateTime<Utc>>) -> Result<(), StateError> {
        match since {
            Some(t) => self.set_meta(UNFINISHED_HARDEN, &ts(t).to_string()),
            None => self.with(|c| {
                c.execute("DELETE FROM meta WHERE key = ?1", [UNFINISHED_HARDEN])
                    .map(|_| ())
            }),
        }
    }

    pub fn hardened(&self) -> Result<BTreeMap<String, DateTime<Utc>>, StateError> {
        Ok(self
            .rows::<(String, i64)>("SELECT package, at FROM hardened")?
            .into_iter()
            .map(|(package, at)| (package, from_ts(at)))
            .collect())
    }
}
