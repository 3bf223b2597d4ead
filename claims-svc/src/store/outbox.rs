//! Notices to citizens (receipt, decision), written in the transaction of the change they
//! announce and handed to notify-svc by the relay (`crate::relay`). Rows are claimed with a
//! lease, so several instances may relay at once.

use super::Store;
use crate::domain::claim::Contacts;
use sportello_platform::db::params;
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
    /// The trace of the action that queued it: its delivery joins that trace.
    pub traceparent: Option<String>,
}

/// Notices per multi-row INSERT (8 parameters each).
const ROWS_PER_INSERT: usize = 400;

/// Queues `notices` on `conn`, in the transaction of the change they announce: each by email
/// when the citizen gave one (it has room for the whole text), else by SMS.
pub(super) async fn queue_all(
    conn: &mut sqlx::AnyConnection,
    notices: &[Notice<'_>],
) -> Result<(), sqlx::Error> {
    let now = now_millis();
    let addressed: Vec<(&Notice<'_>, &str, &str)> = notices
        .iter()
        .filter_map(|n| match (&n.contacts.email, &n.contacts.mobile_phone) {
            (Some(email), _) => Some((n, "EMAIL", email.as_str())),
            (None, Some(phone)) => Some((n, "SMS", phone.as_str())),
            (None, None) => None,
        })
        .collect();
    for rows in addressed.chunks(ROWS_PER_INSERT) {
        let values: Vec<String> =
            (0..rows.len()).map(|i| format!("({})", params(conn, i * 9 + 1, 9))).collect();
        let sql = format!(
            "INSERT INTO outbox (id, fiscal_code, template, channel, address, params, \
             traceparent, next_attempt_at, created_at) VALUES {}",
            values.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for (notice, channel, address) in rows {
            let params =
                serde_json::to_string(&notice.params).map_err(|e| sqlx::Error::Encode(e.into()))?;
            query = query
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(notice.fiscal_code.to_owned())
                .bind(notice.template)
                .bind(*channel)
                .bind(address.to_owned())
                .bind(params)
                .bind(notice.traceparent.clone())
                // Due at once.
                .bind(now)
                .bind(now);
        }
        query.execute(&mut *conn).await?;
    }
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

/// How handing one notice to notify-svc went: done (with notify's message id, or the permanent
/// refusal in `error`), or to be tried again at `retry_at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    pub id: String,
    pub message_id: Option<String>,
    pub retry_at: Option<i64>,
    pub error: Option<String>,
}

impl Store {
    /// Claims up to `limit` due notices for `lease_ms`, in one statement.
    pub async fn claim_outbox(
        &self,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<Pending>, sqlx::Error> {
        let due =
            ("outbox", "attempts = attempts + 1", "done_at IS NULL AND next_attempt_at <= $2");
        let columns = "id, fiscal_code, template, channel, address, params, traceparent, attempts";
        self.lease(due, "next_attempt_at, id", columns, (limit, lease_ms), pending).await
    }

    /// Records how handing each notice to notify-svc went, in one transaction of the writer.
    pub async fn outbox_settle(&self, outcomes: Vec<Settled>) -> Result<(), sqlx::Error> {
        self.writer
            .run(Box::new(move |conn| {
                Box::pin(async move {
                    let now = now_millis();
                    for o in &outcomes {
                        let sql = match o.retry_at {
                            Some(_) => {
                                "UPDATE outbox SET next_attempt_at = $2, leased_until = NULL, \
                                 last_error = $4, message_id = $3 WHERE id = $1"
                            }
                            None => {
                                "UPDATE outbox SET done_at = $2, leased_until = NULL, \
                                 last_error = $4, message_id = $3 WHERE id = $1"
                            }
                        };
                        sqlx::query(sql)
                            .bind(&o.id)
                            .bind(o.retry_at.unwrap_or(now))
                            .bind(&o.message_id)
                            .bind(&o.error)
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            }))
            .await
    }

    /// Notices not yet handed over.
    pub async fn outbox_backlog(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE done_at IS NULL")
            .fetch_one(&self.db.pool)
            .await
    }
}
