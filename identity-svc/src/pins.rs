//! The PIN lifecycle of DOMAIN.md §4, end to end: each method is one citizen's or operator's
//! action, composed from the domain rules, the store and the notifier. The tonic handlers in
//! `api` only translate to and from the wire.

use crate::config::PinRules;
use crate::domain::codice_fiscale::CodiceFiscale;
use crate::domain::pin::{Pin, PinAttempt, PinHash};
use crate::domain::pin_policy::NewPin;
use crate::domain::pin_request::{Channel, Contacts, PinRequest};
use crate::domain::residents::{LetterDecision, RegisterCheck};
use crate::error::IdentityError;
use crate::hashing::Hasher;
use crate::notifier::{first_half_destinations, notice_destinations, Destination, Notifier};
use crate::store::{
    self, Account, Credential, Entry, Half, NewMessage, NewRequest, Outcome, PinStage, Secret,
    Store,
};
use sportello_platform::error::FieldViolations;
use sportello_platform::now_millis;
use std::sync::Arc;
use tokio::sync::Notify;

/// The "operator" of actions citizens take themselves, in the audit trail.
pub const SELF_SERVICE: &str = "citizen";

/// Who filed a PIN request.
#[derive(Clone, Copy, Debug)]
pub enum FiledBy<'a> {
    Portal,
    Operator(&'a str),
}

impl FiledBy<'_> {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            FiledBy::Portal => "PORTAL",
            FiledBy::Operator(id) => id,
        }
    }

    /// Who the audit trail names for the request.
    pub(crate) fn actor(&self) -> &str {
        match self {
            FiledBy::Portal => SELF_SERVICE,
            FiledBy::Operator(id) => id,
        }
    }

    /// Who the audit trail names, and the action it records.
    fn audit_as(&self) -> (&str, &'static str) {
        match self {
            FiledBy::Portal => (SELF_SERVICE, "RequestPin"),
            FiledBy::Operator(id) => (id, "RequestPinForCaller"),
        }
    }
}

/// An audit row of an action a citizen took (or someone took anonymously in their name).
pub fn citizen_action<'a>(
    action: &'a str,
    fiscal_code: &'a str,
    outcome: &'a str,
    detail: &'a str,
) -> Entry<'a> {
    Entry { operator_id: SELF_SERVICE, action, fiscal_code, outcome, detail }
}

/// Rate-limit kinds (see [`store::take_allowance`]).
pub(crate) const NOTICES: &str = "NOTICES";
const RECOVERY_STARTS: &str = "RECOVERY_STARTS";
pub(crate) const EXPORTS: &str = "EXPORTS";
pub(crate) const HOUR_MS: i64 = 3_600_000;

/// Queues `template` (a notice, no secret) to every contact in `contacts`, on the caller's
/// transaction.
pub async fn queue_notice(
    conn: &mut sqlx::AnyConnection,
    fiscal_code: &str,
    contacts: &Contacts,
    template: &str,
) -> Result<(), sqlx::Error> {
    for to in notice_destinations(contacts) {
        let message = NewMessage {
            fiscal_code,
            template,
            to: &to,
            secret: None,
            resend_of: None,
            request: None,
            fallback: None,
        };
        store::enqueue(conn, &message).await?;
    }
    Ok(())
}

/// Queues a message carrying one secret (a PIN half, a code), on the caller's transaction.
async fn queue_secret(
    conn: &mut sqlx::AnyConnection,
    fiscal_code: &str,
    to: &Destination,
    template: &str,
    secret: Secret<'_>,
    request: Option<(&str, Half)>,
) -> Result<(), sqlx::Error> {
    queue_secret_or(conn, fiscal_code, (to, None), template, secret, request).await
}

/// As [`queue_secret`], with a fallback destination.
async fn queue_secret_or(
    conn: &mut sqlx::AnyConnection,
    fiscal_code: &str,
    (to, fallback): (&Destination, Option<&Destination>),
    template: &str,
    secret: Secret<'_>,
    request: Option<(&str, Half)>,
) -> Result<(), sqlx::Error> {
    let message = NewMessage {
        fiscal_code,
        template,
        to,
        secret: Some(secret),
        resend_of: None,
        request,
        fallback,
    };
    store::enqueue(conn, &message).await?;
    Ok(())
}

/// Queues the two halves of a newly issued PIN, sealed under `store`'s keys, on the transaction
/// that issues it: the first to the contact of `channel` (falling back to the email on file, see
/// [`first_half_destinations`]), the second by post to `letter`. Returns where the first goes.
pub(crate) async fn queue_halves(
    conn: &mut sqlx::AnyConnection,
    store: &Store,
    request_id: &str,
    cf: &str,
    (contacts, channel): (&Contacts, Channel),
    pin: &Pin,
    letter: String,
) -> Result<Destination, sqlx::Error> {
    let (first_to, fallback) = first_half_destinations(contacts, channel);
    let first = (request_id, Half::First);
    let half = pin_half(store, pin.first_half());
    let to = (&first_to, fallback.as_ref());
    queue_secret_or(conn, cf, to, "PIN_FIRST_HALF", half, Some(first)).await?;
    let second = (request_id, Half::Second);
    let half = pin_half(store, pin.second_half());
    let letter = Destination::Post(letter);
    queue_secret(conn, cf, &letter, "PIN_SECOND_HALF_LETTER", half, Some(second)).await?;
    Ok(first_to)
}

/// A PIN half as a message's secret parameter, sealed under `store`'s keys.
fn pin_half<'a>(store: &'a Store, half: &'a str) -> Secret<'a> {
    Secret { keys: store.keys(), name: "pin_half", value: half }
}

/// The PIN lifecycle, shared by the citizens' and the contact center's RPCs.
#[derive(Clone, Debug)]
pub struct Pins {
    pub store: Store,
    pub hasher: Hasher,
    pub notifier: Notifier,
    pub rules: PinRules,
    /// A hash of nothing anyone knows: checked against when a fiscal code has no PIN, so that a
    /// wrong fiscal code takes as long to refuse as a wrong PIN.
    pub decoy: PinHash,
    /// Tells the outbox relay that a transaction committed messages (it also polls, so a missed
    /// nudge only delays them).
    pub relay: Arc<Notify>,
    /// How long a granted conversion stays revocable through the contact center.
    pub conversion_hold: std::time::Duration,
}

fn today() -> chrono::NaiveDate {
    chrono::Utc::now().date_naive()
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Parses a fiscal code given on its own, as field `fiscal_code`.
pub fn parse_fiscal_code(raw: &str) -> Result<CodiceFiscale, IdentityError> {
    CodiceFiscale::parse(raw, today()).map_err(|e| {
        let mut v = FieldViolations::new();
        v.add("fiscal_code", e.to_string());
        IdentityError::Invalid(v)
    })
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// Whether a contact the caller typed is the one on file (phones by digits, emails by case).
fn same_contact(given: &str, on_file: &str) -> bool {
    if given.contains('@') {
        given.trim().eq_ignore_ascii_case(on_file.trim())
    } else {
        !digits(given).is_empty() && digits(given) == digits(on_file)
    }
}

impl Pins {
    /// Commits `tx` and nudges the relay: its messages go out after the caller has its answer.
    pub(crate) async fn commit(&self, tx: store::Tx) -> Result<(), IdentityError> {
        tx.commit().await?;
        self.relay.notify_one();
        Ok(())
    }

    /// Commits an action `operator` completed on `cf`, with its audit row: the change, its
    /// messages and the row that records it stand or fall together.
    pub(crate) async fn commit_done(
        &self,
        mut tx: store::Tx,
        operator: &str,
        action: &str,
        cf: &str,
        detail: &str,
    ) -> Result<(), IdentityError> {
        let entry = Entry { operator_id: operator, action, fiscal_code: cf, outcome: "OK", detail };
        store::audit(&mut tx, &entry).await?;
        self.commit(tx).await
    }

    /// Whether one more notice may go to this fiscal code's contacts this hour (notices that
    /// anonymous calls cause, so that no one can bomb a citizen's phone and mailbox).
    async fn notice_allowed(
        &self,
        conn: &mut sqlx::AnyConnection,
        cf: &str,
    ) -> Result<bool, sqlx::Error> {
        let max = i64::from(self.rules.notices_per_hour);
        store::take_allowance(conn, cf, NOTICES, max, HOUR_MS).await
    }

    /// A PIN request (DOMAIN.md §4.1–4.2): issues a new initial PIN — first half by the chosen
    /// channel, second half by post — or, if the citizen already holds one, tells the contacts on
    /// file to use ripristino. The PIN, the request, its messages and its audit row commit
    /// together: a caller hanging up leaves either all of them or none.
    pub async fn request_pin(
        &self,
        req: &PinRequest,
        by: FiledBy<'_>,
    ) -> Result<(String, Outcome), IdentityError> {
        let request_id = new_id();
        let cf = req.fiscal_code.canonical();
        let pin = Pin::generate_initial();
        // Hashing happens whether or not a PIN exists, so the two answers take as long.
        let (full, simplified) = tokio::try_join!(
            self.hasher.hash(pin.expose().to_owned()),
            self.hasher.hash(pin.first_half().to_owned()),
        )?;
        // The register of residents decides where the letter goes, or that nothing goes yet.
        let letter = match self.letter_decision(&cf, req).await? {
            LetterDecision::SendTo(letter) => letter,
            held => return self.hold(&request_id, req, by, held.check()).await,
        };
        let mut tx = self.store.begin().await?;
        let outcome =
            if store::claim_initial_pin(&mut tx, &cf, &full, &simplified, &req.contacts).await? {
                let first = (&req.contacts, req.first_half_channel);
                queue_halves(&mut tx, &self.store, &request_id, &cf, first, &pin, letter).await?;
                Outcome::Issued
            } else {
                self.already_has_pin(&mut tx, &cf).await?;
                Outcome::AlreadyHasPin
            };
        store::record_request(
            &mut tx,
            &NewRequest {
                id: &request_id,
                fiscal_code: &cf,
                outcome,
                channel: req.first_half_channel,
                filed_by: by.as_str(),
            },
        )
        .await?;
        let (who, action) = by.audit_as();
        let detail = format!("request {request_id}: {}", outcome.as_str());
        let entry =
            Entry { operator_id: who, action, fiscal_code: &cf, outcome: "OK", detail: &detail };
        let form = req.form_record();
        store::note_register_check(
            &mut tx,
            &request_id,
            &cf,
            who,
            &form,
            RegisterCheck::OnRegister,
        )
        .await?;
        store::audit(&mut tx, &entry).await?;
        self.commit(tx).await?;
        Ok((request_id, outcome))
    }

    /// The contacts on file (never the ones in this request, which anyone could have typed) are
    /// told that a PIN exists and how to recover it — at most a few times an hour.
    async fn already_has_pin(
        &self,
        conn: &mut sqlx::AnyConnection,
        cf: &str,
    ) -> Result<(), IdentityError> {
        if !self.notice_allowed(conn, cf).await? {
            return Ok(());
        }
        if let Some(credential) = store::credential_on(conn, cf).await? {
            queue_notice(conn, cf, &credential.contacts, "PIN_ALREADY_ISSUED").await?;
        }
        Ok(())
    }

    /// Checks `pin` against the citizen's PIN with one reserved attempt (see
    /// `Store::reserve_attempt`), locking the PIN when the attempts run out. Every refusal is the
    /// same [`IdentityError::BadCredentials`]; its real reason goes to the audit trail under
    /// `action`, where operators see it.
    ///
    /// A caller with `deadline` left is admitted first (see [`Hasher::admit`]): a check refused
    /// for load counts nothing against the citizen. Once admitted, the attempt is decided in a
    /// task of its own: tonic drops a handler's future when its caller hangs up (or its
    /// deadline passes), and an attempt reserved and then never decided would count as a wrong
    /// PIN, until an honest citizen retrying under load locked themselves out.
    pub(crate) async fn verify(
        &self,
        action: &'static str,
        cf: &str,
        pin: &str,
        deadline: Option<std::time::Duration>,
        check: impl Fn(&Credential) -> Option<&PinHash> + Send + 'static,
    ) -> Result<Credential, IdentityError> {
        let ticket = self.hasher.admit(deadline)?;
        let (this, cf, pin) = (self.clone(), cf.to_owned(), pin.to_owned());
        let decided = tokio::spawn(async move {
            let verdict = this.decide(action, &cf, &pin, check).await;
            drop(ticket);
            verdict
        });
        decided.await.map_err(|e| IdentityError::Internal(format!("a PIN check failed: {e}")))?
    }

    async fn decide(
        &self,
        action: &str,
        cf: &str,
        pin: &str,
        check: impl Fn(&Credential) -> Option<&PinHash>,
    ) -> Result<Credential, IdentityError> {
        let max = i64::from(self.rules.max_failed_attempts);
        let Some(credential) = self.store.reserve_attempt(cf, max).await? else {
            // As slow as a real check, so that timing does not tell why.
            self.hasher.verify(pin.to_owned(), &self.decoy).await?;
            let reason = match self.store.credential(cf).await? {
                None => "NO_PIN",
                Some(c) if c.stage == crate::store::PinStage::Revoked => "PIN_REVOKED",
                Some(c) if c.locked => "PIN_LOCKED",
                // Every attempt left is being checked right now: the same answer to the caller
                // (it must not tell a registered code from another), the truth to operators.
                Some(_) => "ATTEMPTS_IN_PROGRESS",
            };
            return self.refuse(action, cf, reason).await;
        };
        let hash = check(&credential).unwrap_or(&self.decoy).clone();
        let matches = match self.hasher.verify(pin.to_owned(), &hash).await {
            Ok(matches) => matches,
            Err(e) => {
                // No verdict: the attempt is not the citizen's to lose.
                self.store.attempt_released(Account::Citizen(cf)).await?;
                return Err(e.into());
            }
        };
        if matches && check(&credential).is_some() {
            self.store.attempt_succeeded(Account::Citizen(cf)).await?;
            Ok(credential)
        } else {
            self.store.attempt_failed(Account::Citizen(cf), max).await?;
            let reason =
                if check(&credential).is_some() { "WRONG_PIN" } else { "PIN_NOT_USABLE_HERE" };
            self.refuse(action, cf, reason).await
        }
    }

    async fn refuse<T>(&self, action: &str, cf: &str, reason: &str) -> Result<T, IdentityError> {
        tracing::info!(fiscal_code = %sportello_platform::mask::fiscal_code(cf), reason, "{action} refused");
        self.store.audit(&citizen_action(action, cf, reason, "")).await?;
        Err(IdentityError::BadCredentials)
    }

    fn new_pin(candidate: &str, previous: &[&str]) -> Result<NewPin, IdentityError> {
        NewPin::parse(candidate, previous).map_err(|e| {
            let mut v = FieldViolations::new();
            v.add("new_pin", e.to_string());
            IdentityError::Invalid(v)
        })
    }

    /// First access (§4.2): the full initial PIN is replaced by the citizen's own 8-character PIN.
    pub async fn complete_first_access(
        &self,
        cf_raw: &str,
        initial: &str,
        new: &str,
    ) -> Result<(), IdentityError> {
        let cf = parse_fiscal_code(cf_raw)?.canonical();
        let initial = PinAttempt::new(initial);
        let mut previous = vec![initial.expose()];
        previous
            .extend(initial.halves().map(|(first, second)| [first, second]).into_iter().flatten());
        let new = Self::new_pin(new, &previous)?;
        let credential = self
            .verify("CompleteFirstAccess", &cf, initial.expose(), None, |c| {
                c.stage.awaits_first_access().then_some(&c.pin_hash)
            })
            .await?;
        let hash = self.hasher.hash(new.expose().to_owned()).await?;
        let mut tx = self.store.begin().await?;
        if !store::set_own_pin(&mut tx, &cf, &credential.pin_hash, &hash).await? {
            return Err(IdentityError::BadCredentials);
        }
        store::audit(&mut tx, &citizen_action("CompleteFirstAccess", &cf, "OK", "")).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Modifica PIN (§4.3b): current PIN + new PIN; the change is notified to the contacts on
    /// file, and every other session of the citizen ends (`keep` is the one making the change).
    pub async fn change_pin(
        &self,
        cf_raw: &str,
        current: &str,
        new: &str,
        keep: Option<&str>,
    ) -> Result<(), IdentityError> {
        let cf = parse_fiscal_code(cf_raw)?.canonical();
        let current = PinAttempt::new(current);
        let new = Self::new_pin(new, &[current.expose()])?;
        let credential = self
            .verify("ChangePin", &cf, current.expose(), None, |c| {
                (c.stage == PinStage::Active).then_some(&c.pin_hash)
            })
            .await?;
        let hash = self.hasher.hash(new.expose().to_owned()).await?;
        let mut tx = self.store.begin().await?;
        if !store::set_own_pin(&mut tx, &cf, &credential.pin_hash, &hash).await? {
            return Err(IdentityError::BadCredentials);
        }
        store::end_sessions_of(&mut tx, &cf, keep).await?;
        queue_notice(&mut tx, &cf, &credential.contacts, "PIN_CHANGED").await?;
        store::audit(&mut tx, &citizen_action("ChangePin", &cf, "OK", "")).await?;
        self.commit(tx).await
    }

    /// Ripristino, step 1 (§4.3). Whatever happens, the caller gets the same answer after the
    /// same work (one hash, one transaction) and no sooner than `recovery_answer_time`; the
    /// contacts on file hear of the attempt, and the code goes out, through the outbox once the
    /// answer is given.
    pub async fn start_recovery(
        &self,
        cf_raw: &str,
        given: &Contacts,
    ) -> Result<(), IdentityError> {
        let answer_at = tokio::time::Instant::now() + self.rules.recovery_answer_time;
        let cf = parse_fiscal_code(cf_raw)?.canonical();
        let offered: Vec<(Channel, &str)> = [Channel::Sms, Channel::Email, Channel::Pec]
            .into_iter()
            .filter_map(|ch| given.address(ch).map(|a| (ch, a)))
            .collect();
        if offered.len() < 2 {
            let mut v = FieldViolations::new();
            v.add("contacts", "give at least two of mobile phone, email and PEC, as on file");
            return Err(v.into());
        }
        let code = format!("{:08}", rand::random_range(0..100_000_000u32));
        let code_hash = self.hasher.hash(code.clone()).await?;
        let credential = self.store.credential(&cf).await?;
        let mut tx = self.store.begin().await?;
        let max_starts = i64::from(self.rules.recovery_starts_per_hour);
        let allowed =
            store::take_allowance(&mut tx, &cf, RECOVERY_STARTS, max_starts, HOUR_MS).await?;
        let notice = self.notice_allowed(&mut tx, &cf).await?;
        let outcome = match &credential {
            _ if !allowed => "TOO_MANY_STARTS",
            None => "NO_PIN",
            Some(credential) => {
                if notice {
                    queue_notice(&mut tx, &cf, &credential.contacts, "PIN_RECOVERY_ATTEMPT")
                        .await?;
                }
                self.start_if_eligible(&mut tx, &cf, credential, &offered, &code, &code_hash)
                    .await?
            }
        };
        store::audit(&mut tx, &citizen_action("StartPinRecovery", &cf, outcome, "")).await?;
        self.commit(tx).await?;
        tokio::time::sleep_until(answer_at).await;
        Ok(())
    }

    /// Starts the recovery when the contacts given are those on file and the PIN may be
    /// recovered; returns the audit outcome.
    async fn start_if_eligible(
        &self,
        conn: &mut sqlx::AnyConnection,
        cf: &str,
        credential: &Credential,
        offered: &[(Channel, &str)],
        code: &str,
        code_hash: &PinHash,
    ) -> Result<&'static str, IdentityError> {
        let on_file = &credential.contacts;
        let all_match =
            offered.iter().all(|(ch, a)| on_file.address(*ch).is_some_and(|f| same_contact(a, f)));
        if !all_match {
            return Ok("CONTACTS_DO_NOT_MATCH");
        }
        if !credential.first_access_completed || credential.stage == PinStage::Revoked {
            return Ok("NOT_RECOVERABLE");
        }
        let Some(code_to) = (match (&on_file.email, &on_file.pec) {
            (Some(email), _) => Some(Destination::Channel(Channel::Email, email.clone())),
            (None, Some(pec)) => Some(Destination::Channel(Channel::Pec, pec.clone())),
            (None, None) => None,
        }) else {
            return Ok("NO_EMAIL_ON_FILE");
        };
        // The new PIN's halves go to two different contacts: SMS first when possible (the seed:
        // first half by SMS, second by email).
        let targets: Vec<Destination> = offered
            .iter()
            .take(2)
            .map(|(ch, _)| {
                Destination::Channel(*ch, on_file.address(*ch).unwrap_or_default().to_owned())
            })
            .collect();
        let targets = serde_json::to_string(&targets).expect("destinations serialise");
        let ttl = i64::try_from(self.rules.recovery_code_ttl.as_millis()).unwrap_or(i64::MAX);
        let expires = now_millis().saturating_add(ttl);
        store::put_recovery(conn, cf, code_hash, &targets, expires).await?;
        let code = Secret { keys: self.store.keys(), name: "code", value: code };
        queue_secret(conn, cf, &code_to, "PIN_RECOVERY_CODE", code, None).await?;
        Ok("CODE_SENT")
    }

    /// Ripristino, step 2: a valid code (once, before it expires, within the attempts allowed)
    /// restores a new 16-character PIN split over the two contacts chosen at step 1 — unless the
    /// PIN was revoked meanwhile. Every outcome is audited; a restore ends the citizen's sessions.
    pub async fn confirm_recovery(&self, cf_raw: &str, code: &str) -> Result<(), IdentityError> {
        let cf = parse_fiscal_code(cf_raw)?.canonical();
        let code = code.trim();
        if code.len() != 8 || !code.bytes().all(|b| b.is_ascii_digit()) {
            let mut v = FieldViolations::new();
            v.add("confirmation_code", "is the 8-digit code received by email");
            return Err(v.into());
        }
        let max = i64::from(self.rules.recovery_max_attempts);
        let Some(recovery) = self.store.reserve_recovery_attempt(&cf, max).await? else {
            self.hasher.verify(code.to_owned(), &self.decoy).await?;
            return self.recovery_refused(&cf, "NO_LIVE_RECOVERY").await;
        };
        if !self.hasher.verify(code.to_owned(), &recovery.code_hash).await? {
            return self.recovery_refused(&cf, "WRONG_CODE").await;
        }
        let targets: Vec<Destination> = serde_json::from_str(&recovery.targets)
            .map_err(|e| IdentityError::Internal(e.to_string()))?;
        let [first_to, second_to] = targets.as_slice() else {
            return Err(IdentityError::Internal("a recovery needs two destinations".into()));
        };
        let pin = Pin::generate_initial();
        let hash = self.hasher.hash(pin.expose().to_owned()).await?;
        let mut tx = self.store.begin().await?;
        if !store::consume_recovery(&mut tx, &cf, &recovery.code_hash).await? {
            drop(tx);
            return self.recovery_refused(&cf, "CODE_ALREADY_USED").await;
        }
        if !store::restore_pin(&mut tx, &cf, &hash).await? {
            // The code is spent either way: a revoked PIN stays revoked.
            store::audit(&mut tx, &citizen_action("ConfirmPinRecovery", &cf, "PIN_REVOKED", ""))
                .await?;
            tx.commit().await?;
            return Err(recovery_code_not_valid());
        }
        store::end_sessions_of(&mut tx, &cf, None).await?;
        let first = pin_half(&self.store, pin.first_half());
        queue_secret(&mut tx, &cf, first_to, "PIN_RESTORED_FIRST_HALF", first, None).await?;
        let second = pin_half(&self.store, pin.second_half());
        queue_secret(&mut tx, &cf, second_to, "PIN_RESTORED_SECOND_HALF", second, None).await?;
        store::audit(&mut tx, &citizen_action("ConfirmPinRecovery", &cf, "OK", "")).await?;
        self.commit(tx).await
    }

    async fn recovery_refused(&self, cf: &str, reason: &str) -> Result<(), IdentityError> {
        self.store.audit(&citizen_action("ConfirmPinRecovery", cf, reason, "")).await?;
        Err(recovery_code_not_valid())
    }
}

fn recovery_code_not_valid() -> IdentityError {
    IdentityError::Precondition {
        reason: "RECOVERY_CODE_NOT_VALID",
        message: "codice non valido o scaduto: ripeta la richiesta di ripristino",
    }
}
