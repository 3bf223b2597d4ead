//! Claims: submission in one transaction (idempotency, mandate, eligibility, incompatibility,
//! ceiling reservation, protocol number, receipt), decisions, withdrawal, changes of payment
//! and reads.

use super::outbox::{queue_all, Notice};
use super::payments::payment_method;
use super::{corrupt, Store};
use crate::domain::claim::{
    after_payment_change, ClaimForm, Contacts, PaymentMethod, Refusal, Status,
};
use crate::domain::iban::Iban;
use sportello_platform::audit::{append, Entry};
use sportello_platform::auth::Level;
use sportello_platform::db::{numbered, Backend};
use sportello_platform::now_millis;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use std::collections::BTreeMap;

/// Who filed a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filer {
    Citizen(String),
    /// A patronato office, by its staff id.
    Patronato(String),
}

impl Filer {
    pub fn role(&self) -> &'static str {
        match self {
            Filer::Citizen(_) => "CITIZEN",
            Filer::Patronato(_) => "PATRONATO",
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Filer::Citizen(id) | Filer::Patronato(id) => id,
        }
    }
}

/// A claim to file: the checked form, who files it and with what credential level.
#[derive(Clone, Debug)]
pub struct Submission {
    pub form: ClaimForm,
    pub filer: Filer,
    pub level: Level,
    /// The trace of the call that filed it (set by [`Store::submit`]).
    pub traceparent: Option<String>,
}

/// How a submission went.
#[derive(Clone, Debug)]
pub enum Submitted {
    Accepted(ClaimRecord),
    /// The filer's idempotency key already filed this claim.
    Existing(ClaimRecord),
    Refused(Refusal),
}

/// A claim as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRecord {
    pub id: String,
    pub protocol_number: String,
    pub benefit_code: String,
    pub fiscal_code: String,
    pub filer_role: String,
    pub filer_id: String,
    pub status: Status,
    pub amount_cents: i64,
    /// Electronic form; `None` for cash at the post office.
    pub iban: Option<String>,
    pub child_fiscal_code: Option<String>,
    pub reasons: Vec<String>,
    pub contacts: Contacts,
    pub submitted_at: i64,
    pub updated_at: i64,
    /// Baby-sitting bonus: when it was redeemed on the Libretto Famiglia.
    pub redeemed_at: Option<i64>,
}

pub(super) const CLAIM_COLUMNS: &str =
    "id, protocol_number, benefit_code, fiscal_code, filed_by_role, \
    filed_by_id, status, amount_cents, iban, child_fiscal_code, reasons, contacts, submitted_at, \
    updated_at, redeemed_at";

pub(super) fn claim(row: &AnyRow) -> Result<ClaimRecord, sqlx::Error> {
    let reasons: String = row.try_get("reasons")?;
    let contacts: String = row.try_get("contacts")?;
    Ok(ClaimRecord {
        id: row.try_get("id")?,
        protocol_number: row.try_get("protocol_number")?,
        benefit_code: row.try_get("benefit_code")?,
        fiscal_code: row.try_get("fiscal_code")?,
        filer_role: row.try_get("filed_by_role")?,
        filer_id: row.try_get("filed_by_id")?,
        status: Status::parse(&row.try_get::<String, _>("status")?)
            .ok_or_else(|| corrupt("claim status"))?,
        amount_cents: row.try_get("amount_cents")?,
        iban: row.try_get("iban")?,
        child_fiscal_code: row.try_get("child_fiscal_code")?,
        reasons: reasons.split(',').filter(|r| !r.is_empty()).map(str::to_owned).collect(),
        contacts: serde_json::from_str(&contacts).map_err(|e| sqlx::Error::Decode(e.into()))?,
        submitted_at: row.try_get("submitted_at")?,
        updated_at: row.try_get("updated_at")?,
        redeemed_at: row.try_get("redeemed_at")?,
    })
}

/// A decision to record on a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    pub to: Status,
    pub reasons: Vec<String>,
    /// Who decided: a back-office user, or `None` for the automatic decision.
    pub by: Option<String>,
    pub note: String,
    /// The trace of the call that decided (set by [`Store::decide`]).
    pub traceparent: Option<String>,
}

/// The decision notice (CLAIM_DECISION).
fn decision_notice(record: &ClaimRecord, traceparent: Option<String>) -> Option<Notice<'_>> {
    let outcome = match record.status {
        Status::Approved => "accolta",
        Status::Rejected => "respinta",
        _ => return None,
    };
    let params = BTreeMap::from([
        ("protocol_number", record.protocol_number.clone()),
        ("outcome", outcome.to_owned()),
        ("reasons", record.reasons.join(", ")),
    ]);
    Some(Notice {
        fiscal_code: &record.fiscal_code,
        template: "CLAIM_DECISION",
        params,
        contacts: &record.contacts,
        traceparent,
    })
}

/// Moves claim `id` from one of `from` to `d.to` on `conn`, releasing its reservation and its
/// place in its group when it ends without payment; `None` when it is in none of `from`, or
/// when `on_account` is given (the account an automatic decision checked, `None` for cash) and
/// the claim is no longer paid that way.
async fn transition(
    conn: &mut AnyConnection,
    id: &str,
    from: &[Status],
    d: &Decided,
    on_account: Option<Option<&str>>,
) -> Result<Option<ClaimRecord>, sqlx::Error> {
    let ends_unpaid = matches!(d.to, Status::Rejected | Status::Withdrawn);
    let sql = format!(
        "UPDATE claims SET status = $2, reasons = $3, updated_at = $4, decide_at = NULL, \
         leased_until = NULL{} WHERE id = $1 AND status IN ({}){} RETURNING {CLAIM_COLUMNS}",
        if ends_unpaid { ", exclusive_key = NULL" } else { "" },
        numbered(5, from.len()),
        if on_account.is_some() {
            format!(" AND COALESCE(iban, '') = ${}", 5 + from.len())
        } else {
            String::new()
        },
    );
    let mut query =
        sqlx::query(&sql).bind(id).bind(d.to.as_str()).bind(d.reasons.join(",")).bind(now_millis());
    for status in from {
        query = query.bind(status.as_str());
    }
    if let Some(account) = on_account {
        query = query.bind(account.unwrap_or("").to_owned());
    }
    let Some(row) = query.fetch_optional(&mut *conn).await? else {
        return Ok(None);
    };
    let record = claim(&row)?;
    if ends_unpaid {
        sqlx::query("UPDATE benefits SET reserved_cents = reserved_cents - $1 WHERE code = $2")
            .bind(record.amount_cents)
            .bind(&record.benefit_code)
            .execute(&mut *conn)
            .await?;
    }
    if let Some(notice) = decision_notice(&record, d.traceparent.clone()) {
        queue_all(conn, &[notice]).await?;
    }
    let by = d.by.as_deref().unwrap_or("automatic");
    if d.to != Status::Withdrawn {
        let detail = format!(
            "{} -> {} {} {}",
            record.protocol_number,
            d.to.as_str(),
            d.reasons.join(","),
            d.note
        );
        let entry = Entry {
            operator_id: by,
            action: "DecideClaim",
            fiscal_code: &record.fiscal_code,
            outcome: "OK",
            detail: detail.trim_end(),
        };
        append(conn, &entry).await?;
    }
    Ok(Some(record))
}

impl Store {
    /// Files a submission once it is durably committed (or refused, writing nothing), in a
    /// batch with those submitted meanwhile (`crate::store::submit`).
    pub async fn submit(&self, s: Submission) -> Result<Submitted, sqlx::Error> {
        self.submit_admitted(s, None).await
    }

    /// [`Store::submit`] of a submission admitted with `ticket` (see [`Store::admit`]), which
    /// is given back once it is answered.
    pub async fn submit_admitted(
        &self,
        mut s: Submission,
        ticket: Option<sportello_platform::admission::Ticket>,
    ) -> Result<Submitted, sqlx::Error> {
        s.traceparent = sportello_platform::trace_context::current_traceparent();
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.submissions.send((s, reply, ticket)).await.map_err(|_| sqlx::Error::PoolClosed)?;
        answer.await.map_err(|_| sqlx::Error::PoolClosed)?
    }

    /// Records decision `d` on claim `id` if it is in one of `from`.
    pub async fn decide(
        &self,
        id: &str,
        from: &'static [Status],
        mut d: Decided,
    ) -> Result<Option<ClaimRecord>, sqlx::Error> {
        d.traceparent = sportello_platform::trace_context::current_traceparent();
        let id = id.to_owned();
        self.write(Box::new(move |conn| {
            Box::pin(async move { transition(conn, &id, from, &d, None).await })
        }))
        .await
    }

    /// Records the automatic decisions of a batch of submitted claims in one transaction, each
    /// `(claim id, the account it was decided on, decision)`; claims no longer submitted
    /// (withdrawn meanwhile), or no longer paid to that account (the citizen changed it while it
    /// was checked: it is due again), are left as they are.
    pub async fn decide_all(
        &self,
        decisions: Vec<(String, Option<String>, Decided)>,
    ) -> Result<(), sqlx::Error> {
        let traceparent = sportello_platform::trace_context::current_traceparent();
        self.write(Box::new(move |conn| {
            Box::pin(async move {
                for (id, account, mut d) in decisions {
                    d.traceparent = d.traceparent.or_else(|| traceparent.clone());
                    let on = Some(account.as_deref());
                    transition(conn, &id, &[Status::Submitted], &d, on).await?;
                }
                Ok(())
            })
        }))
        .await
    }

    /// Changes how the claim `id` of citizen `owner` is paid to `to`, with its audit row (by
    /// the citizen, the accounts masked) and the notice to the claim's contacts, in one
    /// transaction of the writer (a caller that hangs up does not stop it half-way). A claim
    /// paid to a new account is decided again at once ([`after_payment_change`]).
    pub async fn change_payment(
        &self,
        id: &str,
        owner: &str,
        to: PaymentMethod,
    ) -> Result<PaymentChange, sqlx::Error> {
        let traceparent = sportello_platform::trace_context::current_traceparent();
        let (id, owner) = (id.to_owned(), owner.to_owned());
        let lock = if self.db.backend == Backend::Postgres { " FOR UPDATE" } else { "" };
        self.write(Box::new(move |conn| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {CLAIM_COLUMNS} FROM claims WHERE id = $1 AND fiscal_code = $2{lock}"
                );
                let row = sqlx::query(&sql).bind(&id).bind(&owner).fetch_optional(&mut *conn);
                let Some(row) = row.await? else { return Ok(PaymentChange::NotFound) };
                let before = claim(&row)?;
                let status = match after_payment_change(before.status, &to) {
                    Ok(status) => status,
                    Err(status) => return Ok(PaymentChange::TooLate(status)),
                };
                if before.iban.as_deref() == to.stored() {
                    return Ok(PaymentChange::Unchanged(before));
                }
                let decide_again = status == Status::Submitted;
                let sql = format!(
                    "UPDATE claims SET iban = $2, status = $3, reasons = $4, updated_at = $5{} \
                         WHERE id = $1 RETURNING {CLAIM_COLUMNS}",
                    // Due at once, and free of the lease of a check of the old account.
                    if decide_again { ", decide_at = $5, leased_until = NULL" } else { "" }
                );
                let reasons = if decide_again { String::new() } else { before.reasons.join(",") };
                let row = sqlx::query(&sql)
                    .bind(&id)
                    .bind(to.stored().map(str::to_owned))
                    .bind(status.as_str())
                    .bind(reasons)
                    .bind(now_millis())
                    .fetch_one(&mut *conn)
                    .await?;
                let after = claim(&row)?;
                let notice = Notice {
                    fiscal_code: &after.fiscal_code,
                    template: "CLAIM_PAYMENT_DETAILS_CHANGED",
                    params: BTreeMap::from([
                        ("protocol_number", after.protocol_number.clone()),
                        ("payment_method", payment_method(after.iban.as_deref())),
                    ]),
                    contacts: &after.contacts,
                    traceparent,
                };
                queue_all(conn, &[notice]).await?;
                let masked = |iban: Option<&str>| {
                    iban.and_then(|i| Iban::parse(i).ok())
                        .map_or_else(|| "CASH".to_owned(), |i| i.masked())
                };
                let detail = format!(
                    "{}: {} -> {}, {} -> {}",
                    after.protocol_number,
                    masked(before.iban.as_deref()),
                    masked(after.iban.as_deref()),
                    before.status.as_str(),
                    after.status.as_str(),
                );
                let entry = Entry {
                    operator_id: &owner,
                    action: "UpdatePaymentDetails",
                    fiscal_code: &after.fiscal_code,
                    outcome: "OK",
                    detail: &detail,
                };
                append(conn, &entry).await?;
                Ok(PaymentChange::Changed(after))
            })
        }))
        .await
    }

    /// Claims waiting for the automatic decision, leased for `lease_ms` to this decider.
    pub async fn claim_undecided(
        &self,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<ClaimRecord>, sqlx::Error> {
        // Only a claim still submitted is decided: one withdrawn (or decided by a person) while
        // the bank check was failing is never asked about again.
        let due = (
            "claims",
            "decide_attempts = decide_attempts + 1",
            "status = 'SUBMITTED' AND decide_at <= $2",
        );
        self.lease(due, "decide_at, id", CLAIM_COLUMNS, (limit, lease_ms), claim).await
    }

    /// Records that the citizen `fiscal_code` redeemed their approved baby-sitting bonus `id`
    /// (the first time only); `None` when it is not such a claim of theirs.
    pub async fn redeem(
        &self,
        id: &str,
        fiscal_code: &str,
    ) -> Result<Option<ClaimRecord>, sqlx::Error> {
        let (id, cf) = (id.to_owned(), fiscal_code.to_owned());
        let sql = format!(
            "UPDATE claims SET redeemed_at = COALESCE(redeemed_at, $3), updated_at = $3 \
             WHERE id = $1 AND fiscal_code = $2 AND status = 'APPROVED' \
             AND benefit_code = 'BONUS_BABY_SITTING' RETURNING {CLAIM_COLUMNS}"
        );
        self.write(Box::new(move |conn| {
            Box::pin(async move {
                let row = sqlx::query(&sql)
                    .bind(&id)
                    .bind(&cf)
                    .bind(now_millis())
                    .fetch_optional(&mut *conn)
                    .await?;
                row.as_ref().map(claim).transpose()
            })
        }))
        .await
    }

    /// Puts an undecided claim back for a later attempt (the provider did not answer), if it
    /// is still submitted: a withdrawal while the bank was asked ended its wait for good.
    pub async fn decide_later(&self, id: &str, at: i64) -> Result<(), sqlx::Error> {
        let id = id.to_owned();
        self.write(Box::new(move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE claims SET decide_at = $2, leased_until = NULL \
                         WHERE id = $1 AND status = 'SUBMITTED'",
                )
                .bind(&id)
                .bind(at)
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        }))
        .await
    }

    pub async fn claim(&self, id: &str) -> Result<Option<ClaimRecord>, sqlx::Error> {
        let sql = format!("SELECT {CLAIM_COLUMNS} FROM claims WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.db.pool).await?;
        row.as_ref().map(claim).transpose()
    }

    /// Claims whose `column` (`fiscal_code` or `filed_by_id`) is `who`, newest first, after the
    /// `(submitted_at, id)` position `before`.
    pub async fn claims_where(
        &self,
        column: ClaimsOf,
        who: &str,
        before: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<ClaimRecord>, sqlx::Error> {
        let (at, id) = before.unwrap_or((i64::MAX, String::new()));
        let filter = match column {
            ClaimsOf::Citizen => "fiscal_code = $1",
            // A patronato's view of a claim ends with the mandate it was filed under (one
            // registered again later does not bring it back).
            ClaimsOf::Filer => {
                "filed_by_id = $1 AND filed_by_role = 'PATRONATO' AND EXISTS (SELECT 1 FROM \
                 mandates m WHERE m.patronato_id = claims.filed_by_id AND m.fiscal_code = \
                 claims.fiscal_code AND m.revoked_at IS NULL \
                 AND m.registered_at <= claims.submitted_at)"
            }
            ClaimsOf::Status => "status = $1",
        };
        let order = match column {
            // The review queue is worked oldest first.
            ClaimsOf::Status => "submitted_at > $2 OR (submitted_at = $2 AND id > $3)) ORDER BY submitted_at, id",
            _ => "submitted_at < $2 OR (submitted_at = $2 AND id < $3)) ORDER BY submitted_at DESC, id DESC",
        };
        let at = if matches!(column, ClaimsOf::Status) && at == i64::MAX { i64::MIN } else { at };
        let sql =
            format!("SELECT {CLAIM_COLUMNS} FROM claims WHERE {filter} AND ({order} LIMIT $4");
        let rows = sqlx::query(&sql)
            .bind(who)
            .bind(at)
            .bind(id)
            .bind(limit)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(claim).collect()
    }

    /// The benefit's reserved total and the sum of the amounts of its live claims (they agree
    /// to the cent unless something is wrong).
    pub async fn reserved(&self, code: &str) -> Result<(i64, i64), sqlx::Error> {
        let reserved: i64 =
            sqlx::query_scalar("SELECT reserved_cents FROM benefits WHERE code = $1")
                .bind(code)
                .fetch_one(&self.db.pool)
                .await?;
        let live: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(SUM(amount_cents) AS BIGINT) FROM claims WHERE benefit_code = $1 \
             AND status NOT IN ('REJECTED', 'WITHDRAWN')",
        )
        .bind(code)
        .fetch_one(&self.db.pool)
        .await?;
        Ok((reserved, live.unwrap_or(0)))
    }
}

/// How a change of a claim's payment went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentChange {
    /// Changed, audited and announced.
    Changed(ClaimRecord),
    /// The claim is already paid that way: nothing written.
    Unchanged(ClaimRecord),
    /// No such claim of this citizen.
    NotFound,
    /// Its payment can no longer change: the claim is in this status.
    TooLate(Status),
}

/// Whose claims to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimsOf {
    Citizen,
    Filer,
    /// In one status (the review queue).
    Status,
}
