//! The audit trail: append-only (the database refuses updates and deletes too).

use super::Store;
use sportello_platform::now_millis;
use sqlx::Row;

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

/// Appends an audit event on `conn`, so that it commits with the change it records.
pub(super) async fn append(
    conn: &mut sqlx::AnyConnection,
    operator_id: &str,
    action: &str,
    fiscal_code: &str,
    outcome: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_events (at, operator_id, action, fiscal_code, outcome, detail) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(now_millis())
    .bind(operator_id)
    .bind(action)
    .bind(fiscal_code)
    .bind(outcome)
    .bind(detail)
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// Appends an audit event. There is deliberately no function to change or remove one.
    pub async fn audit(
        &self,
        operator_id: &str,
        action: &str,
        fiscal_code: &str,
        outcome: &str,
        detail: &str,
    ) -> Result<(), sqlx::Error> {
        let mut conn = self.db.pool.acquire().await?;
        append(&mut conn, operator_id, action, fiscal_code, outcome, detail).await
    }

    /// Audit events for a fiscal code, newest first, with ids below `before`.
    pub async fn audit_events(
        &self,
        fiscal_code: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEvent>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, at, operator_id, action, fiscal_code, outcome, detail FROM audit_events \
             WHERE fiscal_code = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(fiscal_code)
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
