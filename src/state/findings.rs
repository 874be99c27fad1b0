//! Findings and health: which findings are active (with their history), which token keys have been
//! seen, and how each check group's runs went. The cycle's one transaction is in `commit.rs`.

use std::collections::HashSet;

use rusqlite::OptionalExtension;

use super::{from_ts, State, StateError};
use crate::alerts::lifecycle::{text_digest, Active, Previous};
use crate::checks::GroupHealth;
use crate::finding::{Finding, Severity};

impl State {
    /// Token keys seen so far; `None` until the first successful token run has been recorded.
    pub fn seen_tokens(&self) -> Result<Option<HashSet<String>>, StateError> {
        if self.meta("tokens_initialized")?.is_none() {
            return Ok(None);
        }
        let keys = self.rows::<(String,)>("SELECT key FROM seen_tokens")?;
        Ok(Some(keys.into_iter().map(|(k,)| k).collect()))
    }

    pub fn group_health(&self) -> Result<Vec<GroupHealth>, StateError> {
        let rows = self.rows::<(String, u32, Option<String>)>(
            "SELECT grp, consecutive_failures, last_error FROM check_runs ORDER BY grp",
        )?;
        Ok(rows
            .into_iter()
            .map(|(group, consecutive_failures, last_error)| GroupHealth {
                group,
                consecutive_failures,
                last_error,
            })
            .collect())
    }

    /// Active findings of the given checks (all checks when `checks` is `None`).
    pub fn active(&self, checks: Option<&[&str]>) -> Result<Vec<Active>, StateError> {
        let rows = self.rows::<(String, String, i64, i64, Option<i64>)>(
            "SELECT check_id, body, first_seen, last_seen, last_notified FROM findings ORDER BY first_seen, fingerprint",
        )?;
        let mut out = Vec::new();
        for (check, body, first, last, notified) in rows {
            if checks.is_some_and(|cs| !cs.contains(&check.as_str())) {
                continue;
            }
            let finding: Finding = self.decode(&format!("finding of check {check}"), &body)?;
            out.push(Active {
                finding: finding.into(),
                first_seen: from_ts(first),
                last_seen: from_ts(last),
                last_notified: notified.map(from_ts),
            });
        }
        Ok(out)
    }

    /// Active findings of the given checks as the lifecycle compares them: without their text, only
    /// its digest (`Previous`). Rows are read one at a time, so no body is held past its digest, and
    /// in no particular order (the plan looks them up by fingerprint): sorting would pass every body
    /// through SQLite's sorter.
    pub fn active_digests(&self, checks: &[&str]) -> Result<Vec<Previous>, StateError> {
        let c = self.lock();
        let read = || -> rusqlite::Result<Vec<Previous>> {
            let mut stmt = c.prepare(
                "SELECT fingerprint, check_id, severity, body, first_seen, last_seen, last_notified
                 FROM findings",
            )?;
            // Sized once (an upper bound: other groups' findings are counted too), rather than
            // doubled up to it from empty.
            let total: i64 = c.query_row("SELECT COUNT(*) FROM findings", [], |r| r.get(0))?;
            let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let check: String = r.get(1)?;
                if !checks.contains(&check.as_str()) {
                    continue;
                }
                let severity: String = r.get(2)?;
                let fingerprint: String = r.get(0)?;
                let Some(severity) = Severity::parse(&severity) else {
                    return Err(rusqlite::Error::InvalidColumnType(
                        2,
                        format!("severity `{severity}` of finding {fingerprint}"),
                        rusqlite::types::Type::Text,
                    ));
                };
                let body = r.get_ref(3)?.as_str()?;
                out.push(Previous {
                    fingerprint,
                    severity,
                    digest: text_digest(body),
                    first_seen: from_ts(r.get(4)?),
                    last_seen: from_ts(r.get(5)?),
                    last_notified: r.get::<_, Option<i64>>(6)?.map(from_ts),
                    finding: None,
                });
            }
            Ok(out)
        };
        read().map_err(|e| self.sqlite(e))
    }

    /// Decode the stored text of the `wanted` ones among `previous` (see
    /// `lifecycle::needs_text`).
    pub fn load_texts(
        &self,
        previous: &mut [Previous],
        wanted: &HashSet<String>,
    ) -> Result<(), StateError> {
        for p in previous
            .iter_mut()
            .filter(|p| wanted.contains(&p.fingerprint))
        {
            let body: Option<String> = self.with(|c| {
                c.prepare_cached("SELECT body FROM findings WHERE fingerprint = ?1")?
                    .query_row([&p.fingerprint], |r| r.get(0))
                    .optional()
            })?;
            if let Some(body) = body {
                p.finding = Some(Box::new(
                    self.decode(&format!("finding {}", p.fingerprint), &body)?,
                ));
            }
        }
        Ok(())
    }

    /// Active findings counted by check and severity, for the `findings` metric.
    pub fn finding_counts(&self) -> Result<Vec<(String, Severity, i64)>, StateError> {
        let rows = self.rows::<(String, String, i64)>(
            "SELECT check_id, severity, COUNT(*) FROM findings GROUP BY check_id, severity",
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|(c, s, n)| Severity::parse(&s).map(|s| (c, s, n)))
            .collect())
    }
}
