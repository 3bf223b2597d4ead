//! Patronato mandates: registered by the office holding the signed form, revoked by the citizen.

use super::Store;
use sportello_platform::audit::{append, Entry};
use sportello_platform::now_millis;
use sqlx::any::AnyRow;
use sqlx::Row;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MandateRecord {
    pub id: String,
    pub patronato_id: String,
    pub fiscal_code: String,
    pub signed_form_reference: String,
    pub registered_at: i64,
    pub revoked_at: Option<i64>,
}

const COLUMNS: &str =
    "id, patronato_id, fiscal_code, signed_form_reference, registered_at, revoked_at";

fn mandate(row: &AnyRow) -> Result<MandateRecord, sqlx::Error> {
    Ok(MandateRecord {
        id: row.try_get("id")?,
        patronato_id: row.try_get("patronato_id")?,
        fiscal_code: row.try_get("fiscal_code")?,
        signed_form_reference: row.try_get("signed_form_reference")?,
        registered_at: row.try_get("registered_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

impl Store {
    /// Registers a mandate (audited as the patronato's action); a live mandate of the same
    /// office for the same citizen is returned as it is.
    pub async fn register_mandate(
        &self,
        patronato_id: &str,
        fiscal_code: &str,
        form_reference: &str,
    ) -> Result<MandateRecord, sqlx::Error> {
        let (office, cf, form) =
            (patronato_id.to_owned(), fiscal_code.to_owned(), form_reference.to_owned());
        self.writer
            .run(Box::new(move |conn| {
                Box::pin(async move {
                    let sql = format!(
                        "SELECT {COLUMNS} FROM mandates WHERE patronato_id = $1 \
                         AND fiscal_code = $2 AND revoked_at IS NULL"
                    );
                    let live = sqlx::query(&sql)
                        .bind(&office)
                        .bind(&cf)
                        .fetch_optional(&mut *conn)
                        .await?;
                    if let Some(row) = live {
                        return mandate(&row);
                    }
                    let record = MandateRecord {
                        id: uuid::Uuid::now_v7().to_string(),
                        patronato_id: office.clone(),
                        fiscal_code: cf.clone(),
                        signed_form_reference: form.clone(),
                        registered_at: now_millis(),
                        revoked_at: None,
                    };
                    sqlx::query(
                        "INSERT INTO mandates (id, patronato_id, fiscal_code, \
                         signed_form_reference, registered_at) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(&record.id)
                    .bind(&office)
                    .bind(&cf)
                    .bind(&form)
                    .bind(record.registered_at)
                    .execute(&mut *conn)
                    .await?;
                    let detail = format!("mandate {} form {form}", record.id);
                    let entry = Entry {
                        operator_id: &office,
                        action: "RegisterMandate",
                        fiscal_code: &cf,
                        outcome: "OK",
                        detail: &detail,
                    };
                    append(conn, &entry).await?;
                    Ok(record)
                })
            }))
            .await
    }

    /// Whether office `patronato_id` holds a live mandate of `fiscal_code` registered by `since`
    /// (milliseconds): the one a claim filed then was filed under.
    pub async fn holds_mandate(
        &self,
        patronato_id: &str,
        fiscal_code: &str,
        since: i64,
    ) -> Result<bool, sqlx::Error> {
        let live: Option<String> = sqlx::query_scalar(
            "SELECT id FROM mandates WHERE patronato_id = $1 AND fiscal_code = $2 \
             AND revoked_at IS NULL AND registered_at <= $3 LIMIT 1",
        )
        .bind(patronato_id)
        .bind(fiscal_code)
        .bind(since)
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(live.is_some())
    }

    /// Mandates of a citizen (`of_citizen`) or registered by an office, newest first.
    pub async fn mandates(
        &self,
        who: &str,
        of_citizen: bool,
    ) -> Result<Vec<MandateRecord>, sqlx::Error> {
        let column = if of_citizen { "fiscal_code" } else { "patronato_id" };
        let sql = format!("SELECT {COLUMNS} FROM mandates WHERE {column} = $1 ORDER BY registered_at DESC, id DESC");
        let rows = sqlx::query(&sql).bind(who).fetch_all(&self.db.pool).await?;
        rows.iter().map(mandate).collect()
    }

    /// The citizen `fiscal_code` revokes mandate `id`; `None` when it is not theirs.
    pub async fn revoke_mandate(
        &self,
        id: &str,
        fiscal_code: &str,
    ) -> Result<Option<MandateRecord>, sqlx::Error> {
        let (id, cf) = (id.to_owned(), fiscal_code.to_owned());
        self.writer
            .run(Box::new(move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE mandates SET revoked_at = $3 WHERE id = $1 AND fiscal_code = $2 \
                         AND revoked_at IS NULL",
                    )
                    .bind(&id)
                    .bind(&cf)
                    .bind(now_millis())
                    .execute(&mut *conn)
                    .await?;
                    let sql = format!(
                        "SELECT {COLUMNS} FROM mandates WHERE id = $1 AND fiscal_code = $2"
                    );
                    let row =
                        sqlx::query(&sql).bind(&id).bind(&cf).fetch_optional(&mut *conn).await?;
                    row.as_ref().map(mandate).transpose()
                })
            }))
            .await
    }
}
