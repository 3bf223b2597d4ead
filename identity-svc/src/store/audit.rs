//! The audit trail: append-only (the database refuses updates and deletes too).

use super::Store;
use sqlx::Row;

/// Whose trail to read: what was done to a citizen, or everything an operator did.
#[derive(Clone, Copy, Debug)]
pub enum Trail<'a> {
    Citizen(&'a str),
    Operator(&'a str),
}

/// An audit row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: i64,
    pub at: i64,
    pub operator_id: String,
    pub action: String,
    pub fiscal_code: String,
    pub outcome: String,
    pub detail: String,
}

pub use sportello_platform::audit::{append as audit, Entry};

impl Store {
    /// Appends an audit event on its own, for what changed nothing (a refusal, a read).
    pub async fn audit(&self, entry: &Entry<'_>) -> Result<(), sqlx::Error> {
        let mut conn = self.db.pool.acquire().await?;
        audit(&mut conn, entry).await
    }

    /// Audit events for a fiscal code, newest first, with ids below `before`.
    pub async fn audit_events(
        &self,
        trail: Trail<'_>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEvent>, sqlx::Error> {
        let (column, key) = match trail {
            Trail::Citizen(cf) => ("fiscal_code", cf),
            Trail::Operator(id) => ("operator_id", id),
        };
        let sql = format!(
            "SELECT id, at, operator_id, action, fiscal_code, outcome, detail FROM audit_events \
             WHERE {column} = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(key)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEvent {
                    id: row.try_get("id")?,
                    at: row.try_get("at")?,
                    operator_id: row.try_get("operator_id")?,
                    action: row.try_get("action")?,
                    fiscal_code: row.try_get("fiscal_code")?,
                    outcome: row.try_get("outcome")?,
                    detail: row.try_get("detail")?,
                })
            })
            .collect()
    }
}
