//! PIN dispositivo requests: each change of state commits with its notice to the citizen and its
//! audit row, and the PIN's level changes in the same transaction as the approval.

use super::audit::{audit, Entry};
use super::Store;
use crate::domain::conversion::{
    request_number, Document, DocumentCheck, Outcome, Status, NOT_CONFIRMED,
};
use sportello_platform::auth::{name_of, Amr, Level};
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
    /// What the identity-document registry said (MATCH, NO_MATCH, UNKNOWN, UNAVAILABLE).
    pub document_check: Option<String>,
}

const COLUMNS: &str = "id, request_number, fiscal_code, guardian_fiscal_code, status, document, \
    signed_form_blob, signed_form_type, document_blob, document_type, failed_checks, \
    rejection_reason, requested_at, uploaded_at, decided_at, document_check";

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
        document_check: row.try_get("document_check")?,
    })
}

/// What the documents' upload found.
pub struct Uploaded<'a> {
    /// The upload in progress whose files the request now names.
    pub upload_id: &'a str,
    pub document: &'a Document,
    pub signed_form: (&'a str, &'a str),
    pub scan: (&'a str, &'a str),
    pub outcome: &'a Outcome,
    pub document_check: DocumentCheck,
    /// A guardian asks: the notice says such requests always go to a person.
    pub guardian: bool,
}

/// What opening a request came to.
#[derive(Debug)]
pub enum Opened {
    Opened(Box<Conversion>),
    AlreadyOpen,
    /// The citizen's notices of this hour are used up: no request opens without its notice.
    NoticesUsedUp,
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
        notices_per_hour: u32,
    ) -> Result<Opened, sqlx::Error> {
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
                return Ok(Opened::AlreadyOpen)
            }
            other => other?,
        };
        // Told at once, before any decision: a PIN dispositivo asked for by someone else is a
        // stolen PIN. The notice counts against the citizen's notices of the hour, so that
        // opening and withdrawing in a loop cannot flood their phone and mailbox.
        let max = i64::from(notices_per_hour);
        let allowed = crate::pins::NOTICES;
        if !super::take_allowance(&mut tx, fiscal_code, allowed, max, crate::pins::HOUR_MS).await? {
            return Ok(Opened::NoticesUsedUp);
        }
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
        match self.conversion(&id).await? {
            Some(c) => Ok(Opened::Opened(Box::new(c))),
            None => Err(sqlx::Error::RowNotFound),
        }
    }

    /// Whether a notice of `fiscal_code`'s conversion requests has not been taken by notify-svc
    /// as a message (still in the outbox, or refused for good).
    pub async fn start_notice_pending(&self, fiscal_code: &str) -> Result<bool, sqlx::Error> {
        let pending: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM outbox WHERE fiscal_code = $1 AND template = 'PIN_CONVERSION_STARTED' \
             AND (done_at IS NULL OR message_id IS NULL) LIMIT 1",
        )
        .bind(fiscal_code)
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(pending.is_some())
    }

    /// Whether a grant to `fiscal_code` was ever revoked at their request.
    pub async fn conversion_revoked(&self, fiscal_code: &str) -> Result<bool, sqlx::Error> {
        let revoked: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM pin_conversions WHERE fiscal_code = $1 AND status = 'REVOKED' LIMIT 1",
        )
        .bind(fiscal_code)
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(revoked.is_some())
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

    /// Records the upload of request `id` (still awaiting its documents) and its outcome: the
    /// request names the upload's files from now on, and the upload ends. False when the request
    /// was no longer awaiting documents.
    pub async fn record_upload(&self, id: &str, u: &Uploaded<'_>) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin().await?;
        let document =
            serde_json::to_string(u.document).map_err(|e| sqlx::Error::Encode(e.into()))?;
        let now = now_millis();
        let (status, failed, reason) = match u.outcome {
            Outcome::Instant => (Status::Approved, String::new(), ""),
            Outcome::Reject => (Status::Rejected, String::new(), NOT_CONFIRMED),
            Outcome::Review(failed) => {
                let names: Vec<&str> = failed.iter().map(|f| f.as_str()).collect();
                (Status::InReview, names.join(","), "")
            }
        };
        let fiscal_code: Option<String> = sqlx::query_scalar(
            "UPDATE pin_conversions SET status = $2, document = $3, signed_form_blob = $4, \
             signed_form_type = $5, document_blob = $6, document_type = $7, failed_checks = $8, \
             uploaded_at = $9, decided_at = $10, rejection_reason = $11, document_check = $12 \
             WHERE id = $1 AND status = 'AWAITING_DOCUMENTS' RETURNING fiscal_code",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(document)
        .bind(u.signed_form.0)
        .bind(u.signed_form.1)
        .bind(u.scan.0)
        .bind(u.scan.1)
        .bind(&failed)
        .bind(now)
        .bind((status != Status::InReview).then_some(now))
        .bind(reason)
        .bind(u.document_check.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(cf) = fiscal_code else { return Ok(false) };
        // The request names the files now; the upload that claimed them is over. An upload the
        // sweep has ended meanwhile may have lost its files: nothing is recorded then.
        let ended = sqlx::query("DELETE FROM conversion_uploads WHERE id = $1")
            .bind(u.upload_id)
            .execute(&mut *tx)
            .await?;
        if ended.rows_affected() != 1 {
            return Err(sqlx::Error::RowNotFound);
        }
        let (template, detail) = match u.outcome {
            Outcome::Instant => {
                set_level(&mut tx, &cf, "DISPOSITIVE").await?;
                ("PIN_DISPOSITIVO_GRANTED", "instant: the registry confirmed the document".into())
            }
            Outcome::Reject => {
                ("PIN_CONVERSION_REJECTED", "rejected: the registry does not confirm it".into())
            }
            Outcome::Review(_) => (
                if u.guardian {
                    "PIN_CONVERSION_GUARDIAN_REVIEW"
                } else {
                    "PIN_CONVERSION_IN_REVIEW"
                },
                format!("to the back office: {}", failed.replace(',', ", ")),
            ),
        };
        notify_citizen(&mut tx, &cf, template).await?;
        let detail =
            format!("{}; registry {}; {detail}", u.document.describe(), u.document_check.as_str());
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
            set_level(&mut tx, &cf, "DISPOSITIVE").await?;
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

    /// The citizen's withdrawal of their open request; `None` when it was not open, else the
    /// files it named, which it names no more.
    pub async fn withdraw_conversion(
        &self,
        id: &str,
        fiscal_code: &str,
    ) -> Result<Option<Vec<String>>, sqlx::Error> {
        let mut tx = self.begin().await?;
        // A write first (SQLite's lock, PostgreSQL's row lock), returning the files it names.
        let files: Option<(Option<String>, Option<String>)> = sqlx::query_as(
            "UPDATE pin_conversions SET status = status WHERE id = $1 AND fiscal_code = $2 \
             AND status IN ('AWAITING_DOCUMENTS', 'IN_REVIEW') \
             RETURNING signed_form_blob, document_blob",
        )
        .bind(id)
        .bind(fiscal_code)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((form, scan)) = files else { return Ok(None) };
        sqlx::query(
            "UPDATE pin_conversions SET status = 'WITHDRAWN', decided_at = $2, \
             signed_form_blob = NULL, signed_form_type = NULL, document_blob = NULL, \
             document_type = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(now_millis())
        .execute(&mut *tx)
        .await?;
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
        Ok(Some([form, scan].into_iter().flatten().collect()))
    }

    /// Revokes, at the citizen's request through the contact center, the conversion granted at or
    /// after `since` (the hold): the PIN is ordinary again and its dispositive sessions end, with
    /// the notice and the audit row, in one transaction. The revoked request, or `None` when no
    /// conversion was granted within the hold.
    pub async fn revoke_conversion(
        &self,
        fiscal_code: &str,
        operator: &str,
        reason: &str,
        since: i64,
    ) -> Result<Option<String>, sqlx::Error> {
        let mut tx = self.begin().await?;
        let now = now_millis();
        let revoked: Option<String> = sqlx::query_scalar(
            "UPDATE pin_conversions SET status = 'REVOKED', revoked_at = $3, revoked_by = $4, \
             rejection_reason = $5 WHERE fiscal_code = $1 AND status = 'APPROVED' \
             AND decided_at >= $2 RETURNING request_number",
        )
        .bind(fiscal_code)
        .bind(since)
        .bind(now)
        .bind(operator)
        .bind(reason)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(number) = revoked else { return Ok(None) };
        set_level(&mut tx, fiscal_code, "ORDINARY").await?;
        // Sessions store the names of their level and method as the tokens spell them.
        sqlx::query(
            "UPDATE sessions SET revoked_at = $2 WHERE subject = $1 AND revoked_at IS NULL \
             AND level = $3 AND amr = $4",
        )
        .bind(fiscal_code)
        .bind(now)
        .bind(name_of(Level::Dispositive))
        .bind(name_of(Amr::Pin))
        .execute(&mut *tx)
        .await?;
        notify_citizen(&mut tx, fiscal_code, "PIN_DISPOSITIVO_REVOKED").await?;
        let detail = format!("request {number}: {reason}");
        let entry = Entry {
            operator_id: operator,
            action: "RevokeConversion",
            fiscal_code,
            outcome: "OK",
            detail: &detail,
        };
        audit(&mut tx, &entry).await?;
        tx.commit().await?;
        Ok(Some(number))
    }
}

/// The PIN is ordinary again and no conversion request stays open, on the caller's transaction:
/// the dispositive level belongs to the PIN, so a revoked, restored or new PIN starts ordinary,
/// and a request made under the old PIN must not convert the new one.
pub async fn reset_level(
    conn: &mut sqlx::AnyConnection,
    fiscal_code: &str,
) -> Result<(), sqlx::Error> {
    set_level(&mut *conn, fiscal_code, "ORDINARY").await?;
    withdraw_open(conn, fiscal_code).await
}

/// Withdraws the citizen's open conversion request, if any, on the caller's transaction: its
/// PIN changed. (Its files stay for the back office's sweep of unnamed files once it names none.)
pub async fn withdraw_open(
    conn: &mut sqlx::AnyConnection,
    fiscal_code: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE pin_conversions SET status = 'WITHDRAWN', decided_at = $2, \
         rejection_reason = 'PIN changed', signed_form_blob = NULL, signed_form_type = NULL, \
         document_blob = NULL, document_type = NULL WHERE fiscal_code = $1 \
         AND status IN ('AWAITING_DOCUMENTS', 'IN_REVIEW')",
    )
    .bind(fiscal_code)
    .bind(now_millis())
    .execute(conn)
    .await?;
    Ok(())
}

async fn set_level(
    conn: &mut sqlx::AnyConnection,
    fiscal_code: &str,
    level: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE citizens SET pin_level = $2, updated_at = $3 WHERE fiscal_code = $1")
        .bind(fiscal_code)
        .bind(level)
        .bind(now_millis())
        .execute(conn)
        .await?;
    Ok(())
}
