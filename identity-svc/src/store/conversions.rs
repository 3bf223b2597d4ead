//! PIN dispositivo requests: each change of state commits with its notice to the citizen and its
//! audit row, and the PIN's level changes in the same transaction as the approval.

use super::audit::{audit, Entry};
use super::Store;
use crate::domain::conversion::{request_number, Document, Status};
use sportello_platform::now_millis;
use sqlx::any::AnyRow;
use sqlx::Row;

/// A request as stored.
#[derive(Clone, Debug)]
pub struct Conversion {
    pub id: String,
    pub request_number: String,
    pub fiscal_code: String,
    pub guardian_fiscal_code: Option<String>,
    pub status: Status,
    pub document: Option<Document>,
    /// (digest, MIME type) of the signed form and of the document's scan.
    pub signed_form: Option<(String, String)>,
    pub scan: Option<(String, String)>,
    pub failed_checks: Vec<String>,
    pub rejection_reason: String,
    pub requested_at: i64,
    pub uploaded_at: Option<i64>,
    pub decided_at: Option<i64>,
}

const COLUMNS: &str = "id, request_number, fiscal_code, guardian_fiscal_code, status, document, \
    signed_form_blob, signed_form_type, document_blob, document_type, failed_checks, \
    rejection_reason, requested_at, uploaded_at, decided_at";

fn conversion(row: &AnyRow) -> Result<Conversion, sqlx::Error> {
    let corrupt = |what: &str| sqlx::Error::Decode(format!("pin_conversions: bad {what}").into());
    let status =
        Status::parse(&row.try_get::<String, _>("status")?).ok_or_else(|| corrupt("status"))?;
    let document = match row.try_get::<Option<String>, _>("document")? {
        Some(json) => Some(serde_json::from_str(&json).map_err(|_| corrupt("document"))?),
        None => None,
    };
    let pair = |blob: &str, kind: &str| -> Result<Option<(String, String)>, sqlx::Error> {
        Ok(
            match (row.try_get::<Option<String>, _>(blob)?, row.try_get::<Option<String>, _>(kind)?)
            {
                (Some(b), Some(k)) => Some((b, k)),
                _ => None,
            },
        )
    };
    let failed: String = row.try_get("failed_checks")?;
    Ok(Conversion {
        id: row.try_get("id")?,
        request_number: row.try_get("request_number")?,
        fiscal_code: row.try_get("fiscal_code")?,
        guardian_fiscal_code: row.try_get("guardian_fiscal_code")?,
        status,
        document,
        signed_form: pair("signed_form_blob", "signed_form_type")?,
        scan: pair("document_blob", "document_type")?,
        failed_checks: failed.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        rejection_reason: row.try_get("rejection_reason")?,
        requested_at: row.try_get("requested_at")?,
        uploaded_at: row.try_get("uploaded_at")?,
        decided_at: row.try_get("decided_at")?,
    })
}

/// What the documents' upload found.
pub struct Uploaded<'a> {
    pub document: &'a Document,
    pub signed_form: (&'a str, &'a str),
    pub scan: (&'a str, &'a str),
    pub failed_checks: &'a [&'static str],
    /// A guardian asks: the notice says such requests always go to a person.
    pub guardian: bool,
}

/// A decision: by whom (the back office, or `None` for the automatic checks), and the reason of
/// a rejection.
pub struct Decision<'a> {
    pub by: Option<&'a str>,
    pub approve: bool,
    pub reason: &'a str,
}

/// The notice of a conversion's outcome to every contact the citizen has on file.
async fn notify_citizen(
    conn: &mut sqlx::AnyConnection,
    fiscal_code: &str,
    template: &str,
) -> Result<(), sqlx::Error> {
    match super::credentials::credential_on(conn, fiscal_code).await? {
        Some(credential) => {
            crate::pins::queue_notice(conn, fiscal_code, &credential.contacts, template).await
        }
        None => Ok(()),
    }
}

impl Store {
    /// Opens a request for `fiscal_code`; `None` when one is already open.
    pub async fn open_conversion(
        &self,
        fiscal_code: &str,
        guardian: Option<&str>,
        year: i32,
    ) -> Result<Option<Conversion>, sqlx::Error> {
        // Writes first, so that SQLite takes the write lock before anything is read; the
        // one-open-request index refuses a second open request, also a concurrent one.
        let mut tx = self.begin().await?;
        // One statement, so that two first requests of a year cannot both insert the counter.
        let n: i64 = sqlx::query_scalar(
            "INSERT INTO conversion_counters (year, last) VALUES ($1, 1) ON CONFLICT (year) \
             DO UPDATE SET last = conversion_counters.last + 1 RETURNING last",
        )
        .bind(i64::from(year))
        .fetch_one(&mut *tx)
        .await?;
        let id = uuid::Uuid::now_v7().to_string();
        let inserted = sqlx::query(
            "INSERT INTO pin_conversions (id, request_number, fiscal_code, guardian_fiscal_code, \
             status, requested_at) VALUES ($1, $2, $3, $4, 'AWAITING_DOCUMENTS', $5)",
        )
        .bind(&id)
        .bind(request_number(year, n))
        .bind(fiscal_code)
        .bind(guardian)
        .bind(now_millis())
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if e.as_database_error().is_some_and(|d| d.is_unique_violation()) => {
                return Ok(None)
            }
            other => other?,
        };
        // Told at once: a PIN dispositivo asked for by someone else is a stolen PIN.
        notify_citizen(&mut tx, fiscal_code, "PIN_CONVERSION_STARTED").await?;
        let detail = format!("request {}", request_number(year, n));
        let entry = Entry {
            operator_id: fiscal_code,
            action: "StartPinConversion",
            fiscal_code,
            outcome: "OK",
            detail: &detail,
        };
        audit(&mut tx, &entry).await?;
        tx.commit().await?;
        self.conversion(&id).await
    }

    pub async fn conversion(&self, id: &str) -> Result<Option<Conversion>, sqlx::Error> {
        self.one_conversion("WHERE id = $1", id).await
    }

    /// The first request `filter` (binding `key` as `$1`) finds.
    async fn one_conversion(
        &self,
        filter: &str,
        key: &str,
    ) -> Result<Option<Conversion>, sqlx::Error> {
        let sql = format!("SELECT {COLUMNS} FROM pin_conversions {filter}");
        sqlx::query(&sql)
            .bind(key)
            .fetch_optional(&self.db.pool)
            .await?
            .map(|r| conversion(&r))
            .transpose()
    }

    /// The citizen's latest request.
    pub async fn latest_conversion(
        &self,
        fiscal_code: &str,
    ) -> Result<Option<Conversion>, sqlx::Error> {
        let latest = "WHERE fiscal_code = $1 ORDER BY requested_at DESC, id DESC LIMIT 1";
        self.one_conversion(latest, fiscal_code).await
    }

    /// Requests waiting for the back office, oldest upload first, after `after` (uploaded_at, id).
    pub async fn pending_conversions(
        &self,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<Conversion>, sqlx::Error> {
        let (at, id) = after.unwrap_or((i64::MIN, String::new()));
        let sql = format!(
            "SELECT {COLUMNS} FROM pin_conversions WHERE status = 'IN_REVIEW' \
             AND (uploaded_at > $1 OR (uploaded_at = $1 AND id > $2)) \
             ORDER BY uploaded_at, id LIMIT $3"
        );
        let rows = sqlx::query(&sql).bind(at).bind(id).bind(limit).fetch_all(&self.db.pool).await?;
        rows.iter().map(conversion).collect()
    }

    /// Records the upload of request `id` (still awaiting its documents) and, when no check
    /// failed, approves it at once; false when the request was no longer awaiting documents.
    pub async fn record_upload(&self, id: &str, u: &Uploaded<'_>) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin().await?;
        let document =
            serde_json::to_string(u.document).map_err(|e| sqlx::Error::Encode(e.into()))?;
        let instant = u.failed_checks.is_empty();
        let now = now_millis();
        let fiscal_code: Option<String> = sqlx::query_scalar(
            "UPDATE pin_conversions SET status = $2, document = $3, signed_form_blob = $4, \
             signed_form_type = $5, document_blob = $6, document_type = $7, failed_checks = $8, \
             uploaded_at = $9, decided_at = $10 \
             WHERE id = $1 AND status = 'AWAITING_DOCUMENTS' RETURNING fiscal_code",
        )
        .bind(id)
        .bind(if instant { Status::Approved } else { Status::InReview }.as_str())
        .bind(document)
        .bind(u.signed_form.0)
        .bind(u.signed_form.1)
        .bind(u.scan.0)
        .bind(u.scan.1)
        .bind(u.failed_checks.join(","))
        .bind(now)
        .bind(instant.then_some(now))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(cf) = fiscal_code else { return Ok(false) };
        let (template, detail) = if instant {
            set_dispositive(&mut tx, &cf).await?;
            ("PIN_DISPOSITIVO_GRANTED", "instant: every check passed".to_owned())
        } else {
            (
                if u.guardian {
                    "PIN_CONVERSION_GUARDIAN_REVIEW"
                } else {
                    "PIN_CONVERSION_IN_REVIEW"
                },
                format!("to the back office: {}", u.failed_checks.join(", ")),
            )
        };
        notify_citizen(&mut tx, &cf, template).await?;
        let detail = format!("{}; {detail}", u.document.describe());
        let entry = Entry {
            operator_id: &cf,
            action: "UploadConversionDocuments",
            fiscal_code: &cf,
            outcome: "OK",
            detail: &detail,
        };
        audit(&mut tx, &entry).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The back office's decision on a request in review; false when it was not in review.
    pub async fn decide_conversion(&self, id: &str, d: &Decision<'_>) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin().await?;
        let to = if d.approve { Status::Approved } else { Status::Rejected };
        let fiscal_code: Option<String> = sqlx::query_scalar(
            "UPDATE pin_conversions SET status = $2, rejection_reason = $3, decided_by = $4, \
             decided_at = $5 WHERE id = $1 AND status = 'IN_REVIEW' RETURNING fiscal_code",
        )
        .bind(id)
        .bind(to.as_str())
        .bind(d.reason)
        .bind(d.by)
        .bind(now_millis())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(cf) = fiscal_code else { return Ok(false) };
        let (action, template) = if d.approve {
            set_dispositive(&mut tx, &cf).await?;
            ("ApproveConversion", "PIN_DISPOSITIVO_GRANTED")
        } else {
            ("RejectConversion", "PIN_CONVERSION_REJECTED")
        };
        notify_citizen(&mut tx, &cf, template).await?;
        let detail = format!(
            "request {id}{}",
            if d.approve { String::new() } else { format!(": {}", d.reason) }
        );
        let entry = Entry {
            operator_id: d.by.unwrap_or("automatic"),
            action,
            fiscal_code: &cf,
            outcome: "OK",
            detail: &detail,
        };
        audit(&mut tx, &entry).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Those of `digests` that some request refers to.
    pub async fn referenced_blobs(
        &self,
        digests: &[String],
    ) -> Result<std::collections::HashSet<String>, sqlx::Error> {
        let mut found = std::collections::HashSet::new();
        for chunk in digests.chunks(500) {
            let list = sportello_platform::db::numbered(1, chunk.len());
            let sql = format!(
                "SELECT signed_form_blob, document_blob FROM pin_conversions \
                 WHERE signed_form_blob IN ({list}) OR document_blob IN ({list})"
            );
            let mut query = sqlx::query(&sql);
            for d in chunk {
                query = query.bind(d);
            }
            for row in query.fetch_all(&self.db.pool).await? {
                found.extend(row.try_get::<Option<String>, _>("signed_form_blob")?);
                found.extend(row.try_get::<Option<String>, _>("document_blob")?);
            }
        }
        Ok(found)
    }

    /// The citizen's withdrawal of their open request; false when it was not open.
    pub async fn withdraw_conversion(
        &self,
        id: &str,
        fiscal_code: &str,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE pin_conversions SET status = 'WITHDRAWN', decided_at = $3 WHERE id = $1 \
             AND fiscal_code = $2 AND status IN ('AWAITING_DOCUMENTS', 'IN_REVIEW')",
        )
        .bind(id)
        .bind(fiscal_code)
        .bind(now_millis())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        let detail = format!("request {id}");
        let entry = Entry {
            operator_id: fiscal_code,
            action: "WithdrawPinConversion",
            fiscal_code,
            outcome: "OK",
            detail: &detail,
        };
        audit(&mut tx, &entry).await?;
        tx.commit().await?;
        Ok(true)
    }
}

async fn set_dispositive(
    conn: &mut sqlx::AnyConnection,
    fiscal_code: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE citizens SET pin_level = 'DISPOSITIVE', updated_at = $2 WHERE fiscal_code = $1",
    )
    .bind(fiscal_code)
    .bind(now_millis())
    .execute(conn)
    .await?;
    Ok(())
}
