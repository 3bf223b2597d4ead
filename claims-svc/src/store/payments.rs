//! Payment batches: approved claims ordered for payment together (the SEPA file for the bank,
//! the list for the post office), then confirmed paid, each step in one transaction with its
//! audit row and, at confirmation, the citizens' notices.

use super::claims::{claim, ClaimRecord, CLAIM_COLUMNS};
use super::outbox::{queue_all, Notice};
use super::Store;
use crate::domain::iban::Iban;
use crate::domain::sepa::{CreditTransfer, Transfer};
use chrono::NaiveDate;
use sportello_platform::audit::{append, Entry};
use sportello_platform::db::numbered;
use sportello_platform::now_millis;
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};

/// Who pays: the institute's account the transfers leave from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Debtor {
    pub name: String,
    pub iban: String,
    pub bic: Option<String>,
}

/// A batch just ordered.
#[derive(Clone, Debug)]
pub struct OrderedBatch {
    pub id: String,
    pub transfers: Vec<ClaimRecord>,
    pub cash: Vec<ClaimRecord>,
    /// The pain.001.001.03 document, when there are transfers.
    pub sepa_xml: Option<String>,
}

fn euro(cents: i64) -> String {
    format!("{},{:02}", cents / 100, cents % 100)
}

/// How a claim paid to the stored account `iban` is paid, as the citizen's notices say it (the
/// account masked).
pub(super) fn payment_method(iban: Option<&str>) -> String {
    match iban.and_then(|i| Iban::parse(i).ok()) {
        Some(iban) => format!("bonifico sul conto {}", iban.masked()),
        None => "in contanti presso gli uffici postali".to_owned(),
    }
}

/// The payment notice (CLAIM_PAYMENT).
fn payment_notice<'a>(record: &'a ClaimRecord, paid_on: &str) -> Notice<'a> {
    let params = BTreeMap::from([
        ("protocol_number", record.protocol_number.clone()),
        ("amount", euro(record.amount_cents)),
        ("payment_date", paid_on.to_owned()),
        ("payment_method", payment_method(record.iban.as_deref())),
    ]);
    Notice {
        fiscal_code: &record.fiscal_code,
        template: "CLAIM_PAYMENT",
        params,
        contacts: &record.contacts,
        traceparent: sportello_platform::trace_context::current_traceparent(),
    }
}

/// The claims a payment batch takes, oldest first: approved, and a baby-sitting bonus only
/// once redeemed.
const PAYABLE: &str = "FROM claims WHERE status = 'APPROVED' \
     AND (benefit_code <> 'BONUS_BABY_SITTING' OR redeemed_at IS NOT NULL) \
     ORDER BY submitted_at, id LIMIT $1";

impl Store {
    /// The applicants of the bank transfers among the `max` claims a batch would take now.
    pub async fn payable_by_transfer(&self, max: i64) -> Result<Vec<String>, sqlx::Error> {
        let sql = format!("SELECT fiscal_code, iban {PAYABLE}");
        let rows = sqlx::query(&sql).bind(max).fetch_all(&self.db.pool).await?;
        let mut codes = Vec::new();
        for row in rows {
            if row.try_get::<Option<String>, _>("iban")?.is_some() {
                codes.push(row.try_get("fiscal_code")?);
            }
        }
        codes.sort();
        codes.dedup();
        Ok(codes)
    }

    /// Orders up to `max` payable claims for payment, the transfers to the creditors `names`
    /// gives by fiscal code; `None` when no claim is waiting.
    pub async fn create_payment_batch(
        &self,
        by: &str,
        max: i64,
        execution_date: NaiveDate,
        debtor: Debtor,
        names: HashMap<String, String>,
    ) -> Result<Option<OrderedBatch>, sqlx::Error> {
        let by = by.to_owned();
        self.write(Box::new(move |conn| {
                Box::pin(async move {
                    let sql = format!("SELECT {CLAIM_COLUMNS} {PAYABLE}");
                    let rows = sqlx::query(&sql).bind(max).fetch_all(&mut *conn).await?;
                    let claims: Vec<ClaimRecord> = rows.iter().map(claim).collect::<Result<_, _>>()?;
                    if claims.is_empty() {
                        return Ok(None);
                    }
                    let id = uuid::Uuid::now_v7().simple().to_string();
                    let now = now_millis();
                    for chunk in claims.chunks(500) {
                        let sql = format!(
                            "UPDATE claims SET status = 'PAYMENT_ORDERED', payment_batch_id = $1, \
                             updated_at = $2 WHERE status = 'APPROVED' AND id IN ({})",
                            numbered(3, chunk.len())
                        );
                        let mut query = sqlx::query(&sql).bind(&id).bind(now);
                        for c in chunk {
                            query = query.bind(&c.id);
                        }
                        query.execute(&mut *conn).await?;
                    }
                    let (transfers, cash): (Vec<ClaimRecord>, Vec<ClaimRecord>) =
                        claims.into_iter().partition(|c| c.iban.is_some());
                    let file = CreditTransfer {
                        // A pain.001 message id holds 35 characters at most: the batch id's 32.
                        message_id: id.clone(),
                        created_at: chrono::DateTime::from_timestamp_millis(now).unwrap_or_default(),
                        debtor_name: debtor.name.clone(),
                        debtor_iban: debtor.iban.clone(),
                        debtor_bic: debtor.bic.clone(),
                        execution_date,
                        transfers: transfers
                            .iter()
                            .map(|c| Transfer {
                                end_to_end_id: c.protocol_number.clone(),
                                amount_cents: c.amount_cents,
                                // The holder is the applicant (checked at submission and by the
                                // bank's ownership check), named as on the register.
                                creditor_name: names
                                    .get(&c.fiscal_code)
                                    .cloned()
                                    .unwrap_or_else(|| c.fiscal_code.clone()),
                                creditor_iban: c.iban.clone().unwrap_or_default(),
                                remittance: format!("INPS {} {}", c.benefit_code, c.protocol_number),
                            })
                            .collect(),
                    };
                    let sepa_xml = (!transfers.is_empty()).then(|| file.to_xml());
                    let total: i64 = transfers.iter().chain(&cash).map(|c| c.amount_cents).sum();
                    sqlx::query(
                        "INSERT INTO payment_batches (id, created_at, created_by, execution_date, \
                         transfers, cash, total_cents, sepa_xml) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(&id)
                    .bind(now)
                    .bind(&by)
                    .bind(execution_date.to_string())
                    .bind(transfers.len() as i64)
                    .bind(cash.len() as i64)
                    .bind(total)
                    .bind(sepa_xml.clone().unwrap_or_default())
                    .execute(&mut *conn)
                    .await?;
                    let detail = format!(
                        "batch {id}: {} transfers, {} cash, {total} cents",
                        transfers.len(),
                        cash.len()
                    );
                    let entry = Entry {
                        operator_id: &by,
                        action: "CreatePaymentBatch",
                        fiscal_code: "",
                        outcome: "OK",
                        detail: &detail,
                    };
                    append(conn, &entry).await?;
                    Ok(Some(OrderedBatch { id, transfers, cash, sepa_xml }))
                })
            }))
            .await
    }

    /// Marks batch `id` paid and tells its citizens; the number of its claims paid. Confirming
    /// again changes nothing; a batch taken back is not confirmed.
    pub async fn confirm_payment_batch(
        &self,
        id: &str,
        by: &str,
    ) -> Result<BatchAnswer, sqlx::Error> {
        let (id, by) = (id.to_owned(), by.to_owned());
        self.write(Box::new(move |conn| {
            Box::pin(async move {
                let now = now_millis();
                if !settle(conn, &id, "confirmed_at = $2", now).await? {
                    match batch_state(conn, &id).await? {
                        None => return Ok(BatchAnswer::NotFound),
                        Some(BatchState::Confirmed) => {}
                        Some(state) => return Ok(BatchAnswer::Refused(state)),
                    }
                } else {
                    let sql = format!(
                        "UPDATE claims SET status = 'PAID', updated_at = $2 \
                             WHERE payment_batch_id = $1 AND status = 'PAYMENT_ORDERED' \
                             RETURNING {CLAIM_COLUMNS}"
                    );
                    let rows = sqlx::query(&sql).bind(&id).bind(now).fetch_all(&mut *conn).await?;
                    let paid: Vec<ClaimRecord> =
                        rows.iter().map(claim).collect::<Result<_, _>>()?;
                    let day = chrono::DateTime::from_timestamp_millis(now)
                        .unwrap_or_default()
                        .format("%d/%m/%Y")
                        .to_string();
                    let notices: Vec<Notice<'_>> =
                        paid.iter().map(|c| payment_notice(c, &day)).collect();
                    queue_all(conn, &notices).await?;
                    let detail = format!("batch {id}: {} claims paid", paid.len());
                    let entry = Entry {
                        operator_id: &by,
                        action: "ConfirmPaymentBatch",
                        fiscal_code: "",
                        outcome: "OK",
                        detail: &detail,
                    };
                    append(conn, &entry).await?;
                }
                let paid: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM claims WHERE payment_batch_id = $1 AND status = 'PAID'",
                )
                .bind(&id)
                .fetch_one(&mut *conn)
                .await?;
                Ok(BatchAnswer::Done(paid))
            })
        }))
        .await
    }

    /// Takes back batch `id`, not yet confirmed, for `reason`: its claims return to APPROVED
    /// and leave it, with the audit row, in one transaction of the writer. The number of
    /// claims returned.
    pub async fn cancel_payment_batch(
        &self,
        id: &str,
        by: &str,
        reason: &str,
    ) -> Result<BatchAnswer, sqlx::Error> {
        let (id, by, reason) = (id.to_owned(), by.to_owned(), reason.to_owned());
        self.write(Box::new(move |conn| {
                Box::pin(async move {
                    let now = now_millis();
                    let cancelled = "cancelled_at = $2, cancelled_by = $3, cancel_reason = $4";
                    let settled = sqlx::query(&settle_sql(cancelled))
                        .bind(&id)
                        .bind(now)
                        .bind(&by)
                        .bind(&reason)
                        .execute(&mut *conn)
                        .await?;
                    if settled.rows_affected() == 0 {
                        return Ok(match batch_state(conn, &id).await? {
                            None => BatchAnswer::NotFound,
                            Some(state) => BatchAnswer::Refused(state),
                        });
                    }
                    let returned = sqlx::query(
                        "UPDATE claims SET status = 'APPROVED', payment_batch_id = NULL, \
                         updated_at = $2 WHERE payment_batch_id = $1 AND status = 'PAYMENT_ORDERED'",
                    )
                    .bind(&id)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected() as i64;
                    let detail = format!("batch {id}: {returned} claims back to APPROVED; {reason}");
                    let entry = Entry {
                        operator_id: &by,
                        action: "CancelPaymentBatch",
                        fiscal_code: "",
                        outcome: "OK",
                        detail: &detail,
                    };
                    append(conn, &entry).await?;
                    Ok(BatchAnswer::Done(returned))
                })
            }))
            .await
    }
}

/// Where a payment batch stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchState {
    /// Ordered, neither confirmed nor taken back.
    Ordered,
    Confirmed,
    Cancelled,
}

/// What confirming or taking back a batch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchAnswer {
    /// The claims it paid, or returned.
    Done(i64),
    NotFound,
    /// The batch's state allows no such step.
    Refused(BatchState),
}

/// Ends an ordered batch's wait (`set` its confirmation or cancellation) only if it is still
/// neither: the one conditional update that also locks the batch, so a confirmation and a
/// cancellation racing on two instances cannot both happen.
fn settle_sql(set: &str) -> String {
    format!(
        "UPDATE payment_batches SET {set} WHERE id = $1 \
         AND confirmed_at IS NULL AND cancelled_at IS NULL"
    )
}

/// [`settle_sql`] for a confirmation at `now`; whether this call settled the batch.
async fn settle(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    set: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(&settle_sql(set)).bind(id).bind(now).execute(conn).await?;
    Ok(done.rows_affected() == 1)
}

/// The state of batch `id`, read on the writer's transaction; `None` when there is none.
async fn batch_state(
    conn: &mut sqlx::AnyConnection,
    id: &str,
) -> Result<Option<BatchState>, sqlx::Error> {
    let row = sqlx::query("SELECT confirmed_at, cancelled_at FROM payment_batches WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let confirmed: Option<i64> = row.try_get("confirmed_at")?;
    let cancelled: Option<i64> = row.try_get("cancelled_at")?;
    Ok(Some(match (confirmed, cancelled) {
        (Some(_), _) => BatchState::Confirmed,
        (None, Some(_)) => BatchState::Cancelled,
        (None, None) => BatchState::Ordered,
    }))
}
