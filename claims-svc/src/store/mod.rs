//! claims-svc's tables: the catalogue, the insured-positions registry, claims, mandates, the
//! outbox of notices and the audit trail. Every write of a claim goes through one group-commit
//! writer ([`GroupCommit::start_batched`]): concurrent submissions share a transaction (one
//! fsync), and the hot rows they all touch (a benefit's ceiling, the protocol counter) are
//! locked once per batch.

mod claims;
mod mandates;
mod outbox;
mod payments;
mod registry;
mod submit;

pub use claims::{ClaimRecord, ClaimsOf, Decided, Filer, PaymentChange, Submission, Submitted};
pub use mandates::MandateRecord;
pub use outbox::{Notice, Pending, Settled};
pub use payments::{BatchAnswer, BatchState, Debtor, OrderedBatch};
pub use registry::Written;

use crate::domain::eligibility::BenefitCode;
use crate::domain::{parse_level, Benefit, Group};
use sportello_platform::admission::{Admission, Ticket};
use sportello_platform::audit::Entry;
use sportello_platform::changes::{Changes, Source};
use sportello_platform::db::{Backend, Database};
use sportello_platform::group_commit::{GroupCommit, Work};
use sqlx::any::AnyRow;
use sqlx::Row;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Jobs committed together at most.
const MAX_BATCH: usize = 64;
/// Submissions decided and committed as one set at most.
const MAX_SUBMISSIONS: usize = 512;

/// A submission waiting for its batch, where its answer goes, and its admission (given back
/// when it is answered, whether or not its caller still waits).
type Queued = (Submission, oneshot::Sender<Result<Submitted, sqlx::Error>>, Option<Ticket>);

/// How long a submission may wait for its batch before new ones are refused (see
/// [`Store::admit`]): long enough for a few batches, far shorter than any caller's patience.
const MAX_WAIT: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct Store {
    db: Database,
    writer: GroupCommit,
    submissions: mpsc::Sender<Queued>,
    /// When the last batch of submissions committed (Unix ms).
    last_batch: Arc<AtomicI64>,
    /// Submissions admitted by the time they would wait for the writer.
    admission: Admission,
    /// Whose claims changed, for the citizens watching them (WatchMyClaims).
    changes: Changes,
}

/// Where the triggers of migration 0009 announce a change of a citizen's claims.
pub const CHANGES: Source = Source { channel: "sportello_claims_changes", log: "claim_changes" };

/// How recently submissions must have committed for claims to be arriving in a rush.
const RUSH_MS: i64 = 250;

/// Gathers the submissions that arrive while a batch commits into the next batch. The task
/// owns them: a caller that hangs up leaves its claim to be committed all the same.
async fn submitter(
    writer: GroupCommit,
    backend: Backend,
    mut queue: mpsc::Receiver<Queued>,
    last_batch: Arc<AtomicI64>,
    admission: Admission,
    changes: Changes,
) {
    let mut batch = Vec::with_capacity(MAX_SUBMISSIONS);
    while queue.recv_many(&mut batch, MAX_SUBMISSIONS).await > 0 {
        let mut submissions = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for (submission, reply, ticket) in batch.drain(..) {
            submissions.push(submission);
            replies.push((reply, ticket));
        }
        let started = Instant::now();
        let answers = commit(&writer, backend, submissions).await;
        admission.done(answers.len(), started.elapsed());
        last_batch.store(sportello_platform::now_millis(), Ordering::Relaxed);
        changes.committed();
        for ((reply, _ticket), answer) in replies.into_iter().zip(answers) {
            let _ = reply.send(answer);
        }
    }
}

/// Commits `submissions` as one batch and answers each, in order. A batch the database refuses
/// (a value it cannot store, a constraint) is committed again in halves, down to single claims,
/// so that only the claim at fault fails, with the database's own error (a text it cannot store
/// is then INVALID_ARGUMENT, not UNAVAILABLE); the others are committed as if it had not been
/// there. A failure that is not the database's answer (no connection) fails the batch at once.
async fn commit(
    writer: &GroupCommit,
    backend: Backend,
    submissions: Vec<Submission>,
) -> Vec<Result<Submitted, sqlx::Error>> {
    let mut answers = Vec::with_capacity(submissions.len());
    let mut groups = std::collections::VecDeque::from([Arc::new(submissions)]);
    while let Some(group) = groups.pop_front() {
        let shared = group.clone();
        let done = writer
            .run(Box::new(move |conn| {
                Box::pin(async move { submit::submit_batch(conn, backend, &shared).await })
            }))
            .await;
        match done {
            Ok(committed) => answers.extend(committed.into_iter().map(Ok)),
            Err(e) if group.len() > 1 && e.as_database_error().is_some() => {
                tracing::warn!(error = %e, submissions = group.len(), "a batch of submissions failed; committing it in halves");
                // The job is done with its copy: this takes the submissions back without cloning.
                let mut left = Arc::unwrap_or_clone(group);
                let right = left.split_off(left.len() / 2);
                groups.push_front(Arc::new(right));
                groups.push_front(Arc::new(left));
            }
            Err(e) => {
                tracing::warn!(error = %e, submissions = group.len(), "a batch of submissions failed");
                let why = e.to_string();
                answers.push(Err(e));
                let rest = (1..group.len()).map(|_| Err(sqlx::Error::Protocol(why.clone())));
                answers.extend(rest);
            }
        }
    }
    answers
}

const BENEFIT_COLUMNS: &str = "code, title, legal_basis, amount_cents, ceiling_cents, \
    reserved_cents, opens_at, min_level, incompatibility_group, conditions, \
    increased_amount_cents, increased_amount_condition";

fn corrupt(what: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("unexpected {what} in the database").into())
}

fn benefit(row: &AnyRow) -> Result<Benefit, sqlx::Error> {
    let code: String = row.try_get("code")?;
    let conditions: String = row.try_get("conditions")?;
    Ok(Benefit {
        code: BenefitCode::parse(&code).ok_or_else(|| corrupt("benefit code"))?,
        title: row.try_get("title")?,
        legal_basis: row.try_get("legal_basis")?,
        amount_cents: row.try_get("amount_cents")?,
        ceiling_cents: row.try_get("ceiling_cents")?,
        reserved_cents: row.try_get("reserved_cents")?,
        opens_at: row.try_get("opens_at")?,
        min_level: parse_level(&row.try_get::<String, _>("min_level")?)
            .ok_or_else(|| corrupt("credential level"))?,
        group: Group::parse(&row.try_get::<String, _>("incompatibility_group")?)
            .ok_or_else(|| corrupt("incompatibility group"))?,
        conditions: conditions.lines().map(str::to_owned).filter(|l| !l.is_empty()).collect(),
        increased_amount_cents: row.try_get("increased_amount_cents")?,
        increased_amount_condition: row.try_get("increased_amount_condition")?,
    })
}

/// A back-office change to a benefit: only what is `Some` changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BenefitChange {
    pub amount_cents: Option<i64>,
    pub ceiling_cents: Option<i64>,
    pub opens_at: Option<i64>,
}

impl Store {
    pub fn new(db: Database) -> Self {
        let writer = GroupCommit::start_batched(&db, MAX_BATCH);
        let (submissions, queue) = mpsc::channel(MAX_SUBMISSIONS * 8);
        let last_batch = Arc::new(AtomicI64::new(0));
        // At least one full set of submissions: small batches commit far fewer claims a second
        // than the writer can with large ones, and the rate measured on small batches would
        // otherwise refuse the very burst that makes batches large.
        let admission = Admission::new(MAX_WAIT, MAX_SUBMISSIONS, MAX_SUBMISSIONS * 8);
        let changes = Changes::default();
        tokio::spawn(submitter(
            writer.clone(),
            db.backend,
            queue,
            last_batch.clone(),
            admission.clone(),
            changes.clone(),
        ));
        Self { db, writer, submissions, last_batch, admission, changes }
    }

    /// Admission of one more submission for a caller with `deadline` left: refused (`None`)
    /// when those already waiting would not all be committed within a second (or half the
    /// caller's deadline) at the rate batches have lately been committed. Under more claims
    /// than the database can take, the excess is then refused at once, and the claims admitted
    /// are answered in about a second rather than after every caller has given up.
    pub fn admit(&self, deadline: Option<Duration>) -> Option<Ticket> {
        self.admission.admit(deadline)
    }

    /// The database's pool, for readers beside the writer.
    pub fn pool(&self) -> &sqlx::AnyPool {
        &self.db.pool
    }

    /// Whose claims changed: for watchers to subscribe to, and for [`Changes::follow`].
    pub fn changes(&self) -> &Changes {
        &self.changes
    }

    /// Runs `work` through the writer; once it has committed, the changes it made to claims
    /// are read from the change log at once (SQLite; PostgreSQL announces them itself).
    async fn write<T: Send + 'static>(&self, work: Work<T>) -> Result<T, sqlx::Error> {
        let done = self.writer.run(work).await;
        self.changes.committed();
        done
    }

    /// Whether claims are arriving in a rush (a batch committed within the last 250 ms): the
    /// background work (receipts, automatic decisions) then gives way to submissions.
    pub fn in_rush(&self) -> bool {
        sportello_platform::now_millis() - self.last_batch.load(Ordering::Relaxed) < RUSH_MS
    }

    /// The catalogue, in the order it is presented.
    pub async fn benefits(&self) -> Result<Vec<Benefit>, sqlx::Error> {
        let sql = format!("SELECT {BENEFIT_COLUMNS} FROM benefits ORDER BY position");
        let rows = sqlx::query(&sql).fetch_all(&self.db.pool).await?;
        rows.iter().map(benefit).collect()
    }

    /// Changes a benefit and audits the change, in one transaction; `None` when there is no
    /// such benefit. A ceiling is never set below what is already reserved against it.
    pub async fn update_benefit(
        &self,
        code: BenefitCode,
        change: BenefitChange,
        by: &str,
        reason: &str,
    ) -> Result<Option<Result<Benefit, i64>>, sqlx::Error> {
        let code = code.as_str();
        let (by, reason) = (by.to_owned(), reason.to_owned());
        self.writer
            .run(Box::new(move |conn| {
                Box::pin(async move {
                    let sql = format!("SELECT {BENEFIT_COLUMNS} FROM benefits WHERE code = $1");
                    let Some(row) = sqlx::query(&sql).bind(code).fetch_optional(&mut *conn).await?
                    else {
                        return Ok(None);
                    };
                    let before = benefit(&row)?;
                    if let Some(ceiling) = change.ceiling_cents {
                        if ceiling != 0 && ceiling < before.reserved_cents {
                            return Ok(Some(Err(before.reserved_cents)));
                        }
                    }
                    sqlx::query(
                        "UPDATE benefits SET amount_cents = $2, ceiling_cents = $3, opens_at = $4 \
                         WHERE code = $1",
                    )
                    .bind(code)
                    .bind(change.amount_cents.unwrap_or(before.amount_cents))
                    .bind(change.ceiling_cents.unwrap_or(before.ceiling_cents))
                    .bind(change.opens_at.unwrap_or(before.opens_at))
                    .execute(&mut *conn)
                    .await?;
                    let detail = format!(
                        "{code}: amount {} -> {}, ceiling {} -> {}, opens_at {} -> {}; {reason}",
                        before.amount_cents,
                        change.amount_cents.unwrap_or(before.amount_cents),
                        before.ceiling_cents,
                        change.ceiling_cents.unwrap_or(before.ceiling_cents),
                        before.opens_at,
                        change.opens_at.unwrap_or(before.opens_at),
                    );
                    let entry = Entry {
                        operator_id: &by,
                        action: "UpdateBenefit",
                        fiscal_code: "",
                        outcome: "OK",
                        detail: &detail,
                    };
                    sportello_platform::audit::append(conn, &entry).await?;
                    let row = sqlx::query(&sql).bind(code).fetch_one(&mut *conn).await?;
                    Ok(Some(Ok(benefit(&row)?)))
                })
            }))
            .await
    }

    /// Leases up to `limit` due rows for `lease_ms` through the writer (one statement, see
    /// [`sportello_platform::db::lease_sql`]): `(table, also set, due)`, in `order`.
    async fn lease<T: Send + 'static>(
        &self,
        (table, also, due): (&str, &str, &str),
        order: &str,
        columns: &str,
        (limit, lease_ms): (i64, i64),
        decode: fn(&AnyRow) -> Result<T, sqlx::Error>,
    ) -> Result<Vec<T>, sqlx::Error> {
        let sql =
            sportello_platform::db::lease_sql(self.db.backend, table, also, due, order, columns);
        let now = sportello_platform::now_millis();
        self.writer
            .run(Box::new(move |conn| {
                Box::pin(async move {
                    let rows = sqlx::query(&sql)
                        .bind(now.saturating_add(lease_ms))
                        .bind(now)
                        .bind(limit)
                        .fetch_all(&mut *conn)
                        .await?;
                    rows.iter().map(decode).collect()
                })
            }))
            .await
    }

    /// Appends an audit event on its own (a staff read), with the reader's role.
    pub async fn audit(
        &self,
        entry: &Entry<'_>,
        role: sportello_platform::auth::Role,
    ) -> Result<(), sqlx::Error> {
        let mut conn = self.db.pool.acquire().await?;
        sportello_platform::audit::append_as(&mut conn, entry, role).await
    }

    /// The database, for the queries [`sportello_platform`] shares between services.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// Appends audit events together (a staff read that shows several citizens' claims).
    pub async fn audit_all(&self, entries: &[Entry<'_>]) -> Result<(), sqlx::Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut tx = sportello_platform::db::begin(&self.db.pool).await?;
        for entry in entries {
            sportello_platform::audit::append(&mut tx, entry).await?;
        }
        tx.commit().await
    }

    /// Audit events concerning `fiscal_code`, oldest first (for tests and operators).
    pub async fn audit_of(&self, fiscal_code: &str) -> Result<Vec<(String, String)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT operator_id, action FROM audit_events WHERE fiscal_code = $1 ORDER BY id",
        )
        .bind(fiscal_code)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("operator_id")?, r.try_get("action")?))).collect()
    }
}
