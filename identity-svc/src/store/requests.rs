//! PIN requests: who asked, what was issued, which messages carry the halves, and their
//! validation by the contact center.

use super::{decode_json, Store};
use crate::domain::pin_request::{Channel, FormRecord};
use crate::domain::residents::RegisterCheck;
use sportello_platform::now_millis;
use sqlx::any::AnyRow;
use sqlx::Row;

/// What happened to a PIN request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new initial PIN was issued.
    Issued,
    /// The citizen already holds a PIN; they were told so on the contacts on file.
    AlreadyHasPin,
    /// Nothing issued yet: the register cannot vouch for the residence, so the contact center
    /// validates the request first.
    PendingValidation,
    /// Nothing issued or sent: the anagrafica disagrees with the register.
    RegisterMismatch,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Issued => "ISSUED",
            Outcome::AlreadyHasPin => "ALREADY_HAS_PIN",
            Outcome::PendingValidation => "PENDING_VALIDATION",
            Outcome::RegisterMismatch => "REGISTER_MISMATCH",
        }
    }

    fn parse(s: &str) -> Self {
        [Outcome::Issued, Outcome::PendingValidation, Outcome::RegisterMismatch]
            .into_iter()
            .find(|o| o.as_str() == s)
            .unwrap_or(Outcome::AlreadyHasPin)
    }
}

#[derive(Clone, Debug)]
pub struct RequestRow {
    pub id: String,
    pub fiscal_code: String,
    pub outcome: Outcome,
    pub first_half_channel: Channel,
    pub first_half_message: Option<String>,
    pub second_half_message: Option<String>,
    pub filed_by: String,
    pub validated_by: Option<String>,
    pub created_at: i64,
    /// What the form said (requests filed before forms were kept have none).
    pub form: Option<FormRecord>,
    pub register_check: Option<RegisterCheck>,
    pub pending_reason: Option<String>,
}

/// A request row to write.
#[derive(Debug)]
pub struct NewRequest<'a> {
    pub id: &'a str,
    pub fiscal_code: &'a str,
    pub outcome: Outcome,
    pub channel: Channel,
    pub filed_by: &'a str,
}

const REQUEST_COLUMNS: &str = "id, fiscal_code, outcome, first_half_channel, first_half_message, \
    second_half_message, filed_by, validated_by, created_at, form, register_check, pending_reason";

fn request(row: &AnyRow) -> Result<RequestRow, sqlx::Error> {
    Ok(RequestRow {
        id: row.try_get("id")?,
        fiscal_code: row.try_get("fiscal_code")?,
        outcome: Outcome::parse(&row.try_get::<String, _>("outcome")?),
        first_half_channel: match row.try_get::<String, _>("first_half_channel")?.as_str() {
            "EMAIL" => Channel::Email,
            "PEC" => Channel::Pec,
            _ => Channel::Sms,
        },
        first_half_message: row.try_get("first_half_message")?,
        second_half_message: row.try_get("second_half_message")?,
        filed_by: row.try_get("filed_by")?,
        validated_by: row.try_get("validated_by")?,
        created_at: row.try_get("created_at")?,
        form: row.try_get::<Option<String>, _>("form")?.as_deref().map(decode_json).transpose()?,
        register_check: row
            .try_get::<Option<String>, _>("register_check")?
            .as_deref()
            .and_then(RegisterCheck::parse),
        pending_reason: row.try_get("pending_reason")?,
    })
}

impl Store {
    pub async fn request(&self, id: &str) -> Result<Option<RequestRow>, sqlx::Error> {
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM pin_requests WHERE id = $1");
        sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await?
            .map(|row| request(&row))
            .transpose()
    }

    /// A citizen's requests, newest first.
    pub async fn requests_of(
        &self,
        fiscal_code: &str,
        limit: i64,
    ) -> Result<Vec<RequestRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM pin_requests WHERE fiscal_code = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        let rows = sqlx::query(&sql).bind(fiscal_code).bind(limit).fetch_all(&self.db.pool).await?;
        rows.iter().map(request).collect()
    }

    /// Not yet validated requests, issued before `cutoff` or pending validation, oldest first, after the
    /// `(created_at, id)` position `after`.
    pub async fn unvalidated_requests(
        &self,
        cutoff: i64,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<RequestRow>, sqlx::Error> {
        let (after_at, after_id) = after.unwrap_or((i64::MIN, ""));
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM pin_requests \
             WHERE validated_at IS NULL \
             AND ((outcome = 'ISSUED' AND created_at <= $1) OR outcome = 'PENDING_VALIDATION') \
             AND (created_at > $2 OR (created_at = $2 AND id > $3)) \
             ORDER BY created_at, id LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(cutoff)
            .bind(after_at)
            .bind(after_id)
            .bind(limit)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(request).collect()
    }
}

/// Records a PIN request.
pub async fn record_request(
    conn: &mut sqlx::AnyConnection,
    r: &NewRequest<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO pin_requests (id, fiscal_code, outcome, first_half_channel, filed_by, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(r.id)
    .bind(r.fiscal_code)
    .bind(r.outcome.as_str())
    .bind(r.channel.as_str())
    .bind(r.filed_by)
    .bind(now_millis())
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks a request validated by an operator; false when someone already had (one re-send per
/// validation). The re-sent first half's message id is recorded by the relay.
pub async fn validate_request(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    operator: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE pin_requests SET validated_by = $2, validated_at = $3 \
         WHERE id = $1 AND validated_at IS NULL",
    )
    .bind(id)
    .bind(operator)
    .bind(now_millis())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
