//! Submission on click day: concurrent claims are decided and committed as one set, in one
//! transaction of the writer, with a fixed number of statements per batch however many claims it
//! holds (a statement per claim cost more than the claim's share of the fsync). Within the
//! batch every rule is applied claim by claim, in arrival order, against the database's state
//! and what the batch accepted before it: idempotency, mandate, eligibility, art. 31, ceiling.
//! The ceiling still holds by one conditional `UPDATE` per benefit: if it found less room than
//! the batch counted on (an instance that does not lock first), the whole batch fails and
//! nothing of it is written.

use super::claims::{claim, ClaimRecord, Filer, Submission, Submitted, CLAIM_COLUMNS};
use super::outbox::{queue_all, Notice};
use super::registry::decode;
use super::{benefit, BENEFIT_COLUMNS};
use crate::domain::claim::{accept, exclusive_key, PaymentMethod, Refusal, Status};
use crate::domain::eligibility::BenefitCode;
use crate::domain::protocol::{ProtocolNumber, MAX_NUMBER, ONLINE_OFFICE};
use crate::domain::registry::Registered;
use crate::domain::Benefit;
use chrono::Datelike;
use sportello_platform::audit::{append, Entry};
use sportello_platform::db::{params, Backend};
use sportello_platform::now_millis;
use sqlx::{AnyConnection, Row};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Rows per multi-row INSERT (17 parameters each, well within both databases' limits).
const ROWS_PER_INSERT: usize = 200;

/// The filer's idempotency key as stored, unique per applicant: one filer's keys never meet
/// another's.
fn stored_key(s: &Submission) -> String {
    format!("{}:{}", s.filer.id(), s.form.idempotency_key)
}

/// Where a claim is found again: its applicant and its stored idempotency key.
type KeyOf = (String, String);

fn key_of(s: &Submission) -> KeyOf {
    (s.form.applicant.clone(), stored_key(s))
}

/// What the database already holds that the batch's claims depend on.
struct Known {
    /// By applicant and stored idempotency key: the claim and the digest of the request that
    /// filed it.
    by_key: HashMap<KeyOf, (ClaimRecord, String)>,
    taken: HashSet<String>,
    /// Live mandates by office and citizen: when the earliest of them was registered.
    mandates: HashMap<(String, String), i64>,
    benefits: HashMap<BenefitCode, Benefit>,
    positions: HashMap<String, Registered>,
}

async fn known(
    conn: &mut AnyConnection,
    backend: Backend,
    batch: &[Submission],
) -> Result<Known, sqlx::Error> {
    let applicants: Vec<&str> = batch.iter().map(|s| s.form.applicant.as_str()).collect();
    let mut benefits = HashMap::new();
    // Locking the catalogue's rows makes concurrent batches of other instances wait for this
    // one, so the room counted below is the room there is.
    let lock = if backend == Backend::Postgres { " FOR UPDATE" } else { "" };
    let sql = format!("SELECT {BENEFIT_COLUMNS} FROM benefits{lock}");
    for row in sqlx::query(&sql).fetch_all(&mut *conn).await? {
        let b = benefit(&row)?;
        benefits.insert(b.code, b);
    }
    let exclusive: Vec<String> = batch
        .iter()
        .filter_map(|s| benefits.get(&s.form.benefit).map(|b| exclusive_key(b.group, &s.form)))
        .collect();
    let sql = format!(
        "SELECT {CLAIM_COLUMNS}, idempotency_key, request_digest, exclusive_key FROM claims \
         WHERE fiscal_code IN ({}) OR exclusive_key IN ({})",
        params(conn, 1, applicants.len()),
        params(conn, applicants.len() + 1, exclusive.len().max(1))
    );
    let mut query = sqlx::query(&sql);
    for cf in &applicants {
        query = query.bind(*cf);
    }
    if exclusive.is_empty() {
        query = query.bind("");
    }
    for key in &exclusive {
        query = query.bind(key);
    }
    let (mut by_key, mut taken) = (HashMap::new(), HashSet::new());
    for row in query.fetch_all(&mut *conn).await? {
        if let Some(key) = row.try_get::<Option<String>, _>("exclusive_key")? {
            taken.insert(key);
        }
        let record = claim(&row)?;
        let key = (record.fiscal_code.clone(), row.try_get("idempotency_key")?);
        by_key.insert(key, (record, row.try_get("request_digest")?));
    }
    let mut mandates: HashMap<(String, String), i64> = HashMap::new();
    let represented: Vec<&str> = batch
        .iter()
        .filter(|s| matches!(s.filer, Filer::Patronato(_)))
        .map(|s| s.form.applicant.as_str())
        .collect();
    if !represented.is_empty() {
        let sql = format!(
            "SELECT patronato_id, fiscal_code, registered_at FROM mandates WHERE revoked_at IS NULL \
             AND fiscal_code IN ({})",
            params(conn, 1, represented.len())
        );
        let mut query = sqlx::query(&sql);
        for cf in &represented {
            query = query.bind(*cf);
        }
        for row in query.fetch_all(&mut *conn).await? {
            let at: i64 = row.try_get("registered_at")?;
            let since = mandates
                .entry((row.try_get("patronato_id")?, row.try_get("fiscal_code")?))
                .or_insert(at);
            *since = (*since).min(at);
        }
    }
    let sql = format!(
        "SELECT fiscal_code, position FROM insured_positions WHERE fiscal_code IN ({})",
        params(conn, 1, applicants.len())
    );
    let mut query = sqlx::query(&sql);
    for cf in &applicants {
        query = query.bind(*cf);
    }
    let mut positions = HashMap::new();
    for row in query.fetch_all(&mut *conn).await? {
        let json: String = row.try_get("position")?;
        positions.insert(row.try_get("fiscal_code")?, decode(&json)?);
    }
    Ok(Known { by_key, taken, mandates, benefits, positions })
}

/// One accepted claim of the batch, to write.
struct Accepted {
    benefit: BenefitCode,
    record: ClaimRecord,
    key: KeyOf,
    digest: String,
    exclusive_key: String,
    traceparent: Option<String>,
}

/// Decides every submission of `batch` in order and writes the accepted ones; answers in the
/// order asked.
pub(super) async fn submit_batch(
    conn: &mut AnyConnection,
    backend: Backend,
    batch: &[Submission],
) -> Result<Vec<Submitted>, sqlx::Error> {
    let mut known = known(conn, backend, batch).await?;
    let now = now_millis();
    let mut reserved: BTreeMap<BenefitCode, i64> = BTreeMap::new();
    let mut accepted: Vec<Accepted> = Vec::new();
    // Where in `accepted` a stored key of this batch went, for retries within the batch.
    let mut in_batch: HashMap<KeyOf, usize> = HashMap::new();
    let mut answers = Vec::with_capacity(batch.len());
    for s in batch {
        let key = key_of(s);
        let digest = s.form.digest();
        let earlier =
            known.by_key.get(&key).map(|(r, d)| (r, d)).or_else(|| {
                in_batch.get(&key).map(|i| (&accepted[*i].record, &accepted[*i].digest))
            });
        if let Some((record, was)) = earlier {
            // A patronato whose mandate has ended learns nothing more of the claim, not even
            // by filing it again.
            if let Err(refusal) = mandate_holds(s, &known, record.submitted_at) {
                answers.push(Submitted::Refused(refusal));
                continue;
            }
            answers.push(if *was == digest {
                Submitted::Existing(record.clone())
            } else {
                Submitted::Refused(Refusal::KeyReused)
            });
            continue;
        }
        let answer = decide_one(s, &known, &reserved, now);
        match answer {
            Ok((benefit_code, amount, exclusive)) => {
                *reserved.entry(benefit_code).or_default() += amount;
                known.taken.insert(exclusive.clone());
                let record = record_of(s, amount, now);
                in_batch.insert(key.clone(), accepted.len());
                answers.push(Submitted::Accepted(record.clone()));
                accepted.push(Accepted {
                    benefit: benefit_code,
                    record,
                    key,
                    digest,
                    exclusive_key: exclusive,
                    traceparent: s.traceparent.clone(),
                });
            }
            Err(refusal) => answers.push(Submitted::Refused(refusal)),
        }
    }
    if accepted.is_empty() {
        return Ok(answers);
    }
    for (code, amount) in &reserved {
        let room = sqlx::query(
            "UPDATE benefits SET reserved_cents = reserved_cents + $1 WHERE code = $2 \
             AND (ceiling_cents = 0 OR reserved_cents + $1 <= ceiling_cents)",
        )
        .bind(*amount)
        .bind(code.as_str())
        .execute(&mut *conn)
        .await?;
        if room.rows_affected() != 1 {
            return Err(sqlx::Error::Protocol(format!(
                "{} has less room than counted",
                code.as_str()
            )));
        }
    }
    let numbers = protocol_numbers(conn, now, accepted.len()).await?;
    for (a, number) in accepted.iter_mut().zip(numbers) {
        a.record.protocol_number = number.to_string();
    }
    insert_claims(conn, &accepted, now).await?;
    let notices: Vec<Notice<'_>> = accepted
        .iter()
        .filter_map(|a| {
            let benefit = known.benefits.get(&a.benefit)?;
            Some(receipt(&a.record, benefit, a.traceparent.clone()))
        })
        .collect();
    queue_all(conn, &notices).await?;
    for a in accepted.iter().filter(|a| a.record.filer_role == "PATRONATO") {
        let detail = format!("{} {}", a.record.benefit_code, a.record.protocol_number);
        let entry = Entry {
            operator_id: &a.record.filer_id,
            action: "SubmitClaim",
            fiscal_code: &a.record.fiscal_code,
            outcome: "OK",
            detail: &detail,
        };
        append(conn, &entry).await?;
    }
    // The protocol numbers were given after the answers were drafted.
    let numbered: HashMap<&str, &str> = accepted
        .iter()
        .map(|a| (a.record.id.as_str(), a.record.protocol_number.as_str()))
        .collect();
    for answer in &mut answers {
        if let Submitted::Accepted(r) | Submitted::Existing(r) = answer {
            if let Some(number) = numbered.get(r.id.as_str()) {
                r.protocol_number = (*number).to_owned();
            }
        }
    }
    Ok(answers)
}

/// A patronato files only for a citizen whose mandate it holds now, and sees a claim filed at
/// `filed` only under a mandate it held then.
fn mandate_holds(s: &Submission, known: &Known, filed: i64) -> Result<(), Refusal> {
    let Filer::Patronato(office) = &s.filer else { return Ok(()) };
    match known.mandates.get(&(office.clone(), s.form.applicant.clone())) {
        Some(&since) if since <= filed => Ok(()),
        _ => Err(Refusal::NoMandate),
    }
}

/// Whether `s` is accepted given what is known and what the batch reserved before it: the
/// benefit, the amount and the claim's place in its group.
fn decide_one(
    s: &Submission,
    known: &Known,
    reserved: &BTreeMap<BenefitCode, i64>,
    now: i64,
) -> Result<(BenefitCode, i64, String), Refusal> {
    mandate_holds(s, known, now)?;
    // Every code of the domain has a row (the migrations insert all six).
    let benefit = known.benefits.get(&s.form.benefit).ok_or(Refusal::NotOpenYet)?;
    let acceptance =
        accept(benefit, &s.form, s.level, now, known.positions.get(&s.form.applicant))?;
    if known.taken.contains(&acceptance.exclusive_key) {
        return Err(Refusal::AlreadyClaimed);
    }
    let counted = reserved.get(&benefit.code).copied().unwrap_or(0);
    let room = benefit.ceiling_cents - benefit.reserved_cents - counted;
    if benefit.ceiling_cents != 0 && acceptance.amount_cents > room {
        return Err(Refusal::CeilingReached);
    }
    Ok((benefit.code, acceptance.amount_cents, acceptance.exclusive_key))
}

fn record_of(s: &Submission, amount_cents: i64, now: i64) -> ClaimRecord {
    ClaimRecord {
        id: uuid::Uuid::now_v7().to_string(),
        protocol_number: String::new(),
        benefit_code: s.form.benefit.as_str().to_owned(),
        fiscal_code: s.form.applicant.clone(),
        filer_role: s.filer.role().to_owned(),
        filer_id: s.filer.id().to_owned(),
        status: Status::Submitted,
        amount_cents,
        iban: match &s.form.payment {
            PaymentMethod::Bank(iban) => Some(iban.as_str().to_owned()),
            PaymentMethod::PostOfficeCash => None,
        },
        child_fiscal_code: s.form.child.clone(),
        reasons: Vec::new(),
        contacts: s.form.contacts.clone(),
        submitted_at: now,
        updated_at: now,
        redeemed_at: None,
    }
}

/// `count` protocol numbers of the current year, in order: one counter row per year, moved
/// on by `count` in the batch's transaction.
async fn protocol_numbers(
    conn: &mut AnyConnection,
    now: i64,
    count: usize,
) -> Result<Vec<ProtocolNumber>, sqlx::Error> {
    let year = chrono::DateTime::from_timestamp_millis(now).unwrap_or_default().year();
    let year = u16::try_from(year).unwrap_or(u16::MAX);
    let count = count as i64;
    let bumped: Option<i64> = sqlx::query_scalar(
        "UPDATE protocol_counters SET last = last + $2 WHERE year = $1 RETURNING last",
    )
    .bind(i64::from(year))
    .bind(count)
    .fetch_optional(&mut *conn)
    .await?;
    let last = match bumped {
        Some(last) => last,
        None => {
            sqlx::query("INSERT INTO protocol_counters (year, last) VALUES ($1, $2)")
                .bind(i64::from(year))
                .bind(count)
                .execute(&mut *conn)
                .await?;
            count
        }
    };
    if last > i64::from(MAX_NUMBER) {
        return Err(sqlx::Error::Protocol(format!("the protocol numbers of {year} are used up")));
    }
    Ok((last - count + 1..=last)
        .map(|n| ProtocolNumber { office: ONLINE_OFFICE, year, number: n as u32 })
        .collect())
}

async fn insert_claims(
    conn: &mut AnyConnection,
    accepted: &[Accepted],
    now: i64,
) -> Result<(), sqlx::Error> {
    const COLUMNS: usize = 17;
    for rows in accepted.chunks(ROWS_PER_INSERT) {
        let values: Vec<String> = (0..rows.len())
            .map(|i| format!("({})", params(conn, i * COLUMNS + 1, COLUMNS)))
            .collect();
        let sql = format!(
            "INSERT INTO claims (id, protocol_number, idempotency_key, request_digest, \
             benefit_code, fiscal_code, filed_by_role, filed_by_id, status, amount_cents, iban, \
             child_fiscal_code, exclusive_key, contacts, submitted_at, updated_at, decide_at) \
             VALUES {}",
            values.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for a in rows {
            let r = &a.record;
            let contacts =
                serde_json::to_string(&r.contacts).map_err(|e| sqlx::Error::Encode(e.into()))?;
            query = query
                .bind(r.id.clone())
                .bind(r.protocol_number.clone())
                .bind(a.key.1.clone())
                .bind(a.digest.clone())
                .bind(r.benefit_code.clone())
                .bind(r.fiscal_code.clone())
                .bind(r.filer_role.clone())
                .bind(r.filer_id.clone())
                .bind(r.status.as_str())
                .bind(r.amount_cents)
                .bind(r.iban.clone())
                .bind(r.child_fiscal_code.clone())
                .bind(a.exclusive_key.clone())
                .bind(contacts)
                .bind(now)
                .bind(now)
                // The automatic decision is due at once.
                .bind(now);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The claim's receipt notice (CLAIM_RECEIPT).
fn receipt<'a>(
    record: &'a ClaimRecord,
    benefit: &Benefit,
    traceparent: Option<String>,
) -> Notice<'a> {
    // Italian civil time near enough for a receipt's wording (CET); the instant is stored.
    let rome = chrono::FixedOffset::east_opt(3600)
        .unwrap_or(chrono::FixedOffset::east_opt(0).expect("UTC"));
    let submitted = chrono::DateTime::from_timestamp_millis(record.submitted_at)
        .unwrap_or_default()
        .with_timezone(&rome);
    let params = BTreeMap::from([
        ("benefit_title", benefit.title.clone()),
        ("protocol_number", record.protocol_number.clone()),
        ("submitted_at", submitted.format("%d/%m/%Y %H:%M").to_string()),
    ]);
    Notice {
        fiscal_code: &record.fiscal_code,
        template: "CLAIM_RECEIPT",
        params,
        contacts: &record.contacts,
        traceparent,
    }
}
