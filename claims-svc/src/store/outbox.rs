//! Notices to citizens (receipt, decision), written in the transaction of the change they
//! announce and handed to notify-svc by the relay (`crate::relay`). Rows are claimed with a
//! lease, so several instances may relay at once.

use super::Store;
use crate::domain::claim::Contacts;
use sportello_platform::db::Backend;
use sportello_platform::now_millis;
use sqlx::any::AnyRow;
use sqlx::Row;
use std::collections::BTreeMap;

/// A notice to queue with a change.
#[derive(Clone, Debug)]
pub struct Notice<'a> {
    pub fiscal_code: &'a str,
    pub template: &'static str,
    pub params: BTreeMap<&'static str, String>,
    pub contacts: &'a Contacts,
}

/// Queues `notice` on `conn`, in the transaction of the change it announces: by email when the
/// citizen gave one (it has room for the whole text), else by SMS.
pub(super) async fn queue(
    conn: &mut sqlx::AnyConnection,
    notice: &Notice<'_>,
) -> Result<(), sqlx::Error> {
    let (channel, address) = match (&notice.contacts.email, &notice.contacts.mobile_phone) {
        (Some(email), _) => ("EMAIL", email),
        (None, Some(phone)) => ("SMS", phone),
        (None, None) => return Ok(()),
    };
    let params =
        serde_json::to_string(&notice.params).map_err(|e| sqlx::Error::Encode(e.into()))?;
    let now = now_millis();
    sqlx::query(
        "INSERT INTO outbox (id, fiscal_code, template, channel, address, params, traceparent, \
         next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(notice.fiscal_code)
    .bind(notice.template)
    .bind(channel)
    .bind(address)
    .bind(params)
    .bind(sportello_platform::trace_context::current_traceparent())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// A notice waiting to be handed to notify-svc.
#[derive(Clone, Debug)]
pub struct Pending {
    pub id: String,
    pub fiscal_code: String,
    pub template: String,
    pub channel: String,
    pub address: String,
    pub params: BTreeMap<String, String>,
    pub traceparent: Option<String>,
    pub attempts: i64,
}

fn pending(row: &AnyRow) -> Result<Pending, sqlx::Error> {
    let params: String = row.try_get("params")?;
    Ok(Pending {
        id: row.try_get("id")?,
        fiscal_code: row.try_get("fiscal_code")?,
        template: row.try_get("template")?,
        channel: row.try_get("channel")?,
        address: row.try_get("address")?,
        params: serde_json::from_str(&params).map_err(|e| sqlx::Error::Decode(e.into()))?,
        traceparent: row.try_get("traceparent")?,
        attempts: row.try_get("attempts")?,
    })
}

impl Store {
    /// Claims up to `limit` due notices for `lease_ms`, in one statement.
    pub async fn claim_outbox(
        &self,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<Pending>, sqlx::Error> {
        let lock = match self.db.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let now = now_millis();
        let sql = format!(
            "UPDATE outbox SET leased_until = $1, attempts = attempts + 1 WHERE id IN (\
             SELECT id FROM outbox WHERE done_at IS NULL AND next_attempt_at <= $2 \
             AND (leased_until IS NULL OR leased_until <= $2) \
             ORDER BY next_attempt_at, id LIMIT $3 {lock}) \
             AND (leased_until IS NULL OR leased_until <= $2) \
             RETURNING id, fiscal_code, template, channel, address, params, traceparent, attempts"
        );
        let rows = sqlx::query(&sql)
            .bind(now.saturating_add(lease_ms))
            .bind(now)
            .bind(limit)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(pending).collect()
    }

    /// Records how handing a notice to notify-svc went: done (with notify's message id, or the
    /// permanent refusal in `error`), or to be tried again at `retry_at`.
    pub async fn outbox_settle(
        &self,
        id: &str,
        message_id: Option<&str>,
        retry_at: Option<i64>,
        error: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        let sql = match retry_at {
            Some(_) => {
                "UPDATE outbox SET next_attempt_at = $2, leased_until = NULL, last_error = $4, \
                 message_id = $3 WHERE id = $1"
            }
            None => {
                "UPDATE outbox SET done_at = $2, leased_until = NULL, last_error = $4, \
                 message_id = $3 WHERE id = $1"
            }
        };
        sqlx::query(sql)
            .bind(id)
            .bind(retry_at.unwrap_or_else(now_millis))
            .bind(message_id)
            .bind(error)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Notices not yet handed over.
    pub async fn outbox_backlog(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE done_at IS NULL")
            .fetch_one(&self.db.pool)
            .await
    }
}
