//! The audit trail every service keeps of staff actions: an `audit_events` table the database
//! itself keeps append-only (its migrations refuse updates and deletes).

use crate::db::storable;
use crate::now_millis;

/// An audit row to append. `fiscal_code` is the canonical fiscal code the action concerns, or
/// empty for an action on no one citizen (then it belongs to the operator's own trail).
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    pub operator_id: &'a str,
    pub action: &'a str,
    pub fiscal_code: &'a str,
    pub outcome: &'a str,
    pub detail: &'a str,
}

/// Appends `e` on `conn` (the transaction of the action it records). There is deliberately no
/// function to change or remove one.
pub async fn append(conn: &mut sqlx::AnyConnection, e: &Entry<'_>) -> Result<(), sqlx::Error> {
    insert(conn, e, None).await
}

/// [`append`], recording the role of whoever acted, for the citizen's list of who touched their
/// data (rows without one have their role told from the actor by the service).
pub async fn append_as(
    conn: &mut sqlx::AnyConnection,
    e: &Entry<'_>,
    role: crate::auth::Role,
) -> Result<(), sqlx::Error> {
    insert(conn, e, Some(crate::citizen_data::actor_role(role).as_str_name())).await
}

async fn insert(
    conn: &mut sqlx::AnyConnection,
    e: &Entry<'_>,
    role: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_events (at, operator_id, action, fiscal_code, outcome, detail, \
         actor_role) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(now_millis())
    .bind(storable(e.operator_id))
    .bind(e.action)
    .bind(storable(e.fiscal_code))
    .bind(e.outcome)
    .bind(storable(e.detail))
    .bind(role)
    .execute(conn)
    .await?;
    Ok(())
}
