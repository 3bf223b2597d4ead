//! The PIN lifecycle of DOMAIN.md §4, end to end: each method is one citizen's or operator's
//! action, composed from the domain rules, the store and the notifier. The tonic handlers in
//! `api` only translate to and from the wire.

use crate::config::PinRules;
use crate::domain::codice_fiscale::CodiceFiscale;
use crate::domain::pin::{Pin, PinHash};
use crate::domain::pin_policy::NewPin;
use crate::domain::pin_request::{Channel, Contacts, PinRequest};
use crate::domain::residents::{LetterDecision, RegisterCheck};
use crate::error::IdentityError;
use crate::hashing::Hasher;
use crate::notifier::{Destination, Notifier};
use crate::store::{Account, Credential, NewRequest, Outcome, Store};
use sportello_platform::error::FieldViolations;
use sportello_platform::now_millis;

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

fn normalise_pin(raw: &str) -> String {
    raw.trim().to_ascii_uppercase()
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
    /// A PIN request (DOMAIN.md §4.1–4.2): issues a new initial PIN — first half by the chosen
    /// channel, second half by post — or, if the citizen already holds one, tells the contacts on
    /// file to use ripristino.
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
        if !self.store.claim_initial_pin(&cf, &full, &simplified, &req.contacts).await? {
            return self.already_has_pin(&request_id, req, by).await;
        }
        let channel = req.first_half_channel;
        let address = req.contacts.address(channel).unwrap_or_default().to_owned();
        let first_half_to = Destination::Channel(channel, address);
        let sent = self.send_halves(&request_id, &cf, first_half_to, &pin, letter).await;
        let (first, second) = match sent {
            Ok(ids) => ids,
            Err(e) => {
                self.store.release_initial_pin(&cf, &full).await?;
                return Err(e);
            }
        };
        self.store
            .record_request(&NewRequest {
                id: &request_id,
                fiscal_code: &cf,
                outcome: Outcome::Issued,
                channel: req.first_half_channel,
                first_half_message: Some(&first),
                second_half_message: Some(&second),
                filed_by: by.as_str(),
            })
            .await?;
        self.store
            .note_register_check(
                &request_id,
                &cf,
                by.actor(),
                &req.form_record(),
                RegisterCheck::OnRegister,
            )
            .await?;
        Ok((request_id, Outcome::Issued))
    }

    pub(crate) async fn send_halves(
        &self,
        request_id: &str,
        cf: &str,
        first_half_to: Destination,
        pin: &Pin,
        letter: String,
    ) -> Result<(String, String), IdentityError> {
        let first = self
            .notifier
            .send(
                format!("identity:{request_id}:first-half"),
                cf,
                &first_half_to,
                "PIN_FIRST_HALF",
                Some(("pin_half", pin.first_half())),
            )
            .await?;
        let second = self
            .notifier
            .send(
                format!("identity:{request_id}:second-half"),
                cf,
                &Destination::Post(letter),
                "PIN_SECOND_HALF_LETTER",
                Some(("pin_half", pin.second_half())),
            )
            .await?;
        Ok((first, second))
    }

    /// The contacts on file (never the ones in this request, which anyone could have typed) are
    /// told that a PIN exists and how to recover it.
    async fn already_has_pin(
        &self,
        request_id: &str,
        req: &PinRequest,
        by: FiledBy<'_>,
    ) -> Result<(String, Outcome), IdentityError> {
        let cf = req.fiscal_code.canonical();
        if let Some(credential) = self.store.credential(&cf).await? {
            let key = format!("identity:{request_id}:already");
            self.notifier.notify_all(&key, &cf, &credential.contacts, "PIN_ALREADY_ISSUED").await?;
        }
        self.store
            .record_request(&NewRequest {
                id: request_id,
                fiscal_code: &cf,
                outcome: Outcome::AlreadyHasPin,
                channel: req.first_half_channel,
                first_half_message: None,
                second_half_message: None,
                filed_by: by.as_str(),
            })
            .await?;
        Ok((request_id.to_owned(), Outcome::AlreadyHasPin))
    }

    /// Checks `pin` against the citizen's PIN with one reserved attempt (see
    /// `Store::reserve_attempt`), locking the PIN when the attempts run out. Every refusal is the
    /// same [`IdentityError::BadCredentials`]; its real reason goes to the audit trail under
    /// `action`, where operators see it.
    pub(crate) async fn verify(
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
                Some(_) => "PIN_LOCKED",
            };
            return self.refuse(action, cf, reason).await;
        };
        let hash = check(&credential).unwrap_or(&self.decoy).clone();
        if self.hasher.verify(pin.to_owned(), &hash).await? && check(&credential).is_some() {
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
        self.store.audit(SELF_SERVICE, action, cf, reason, "").await?;
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
        let initial = normalise_pin(initial);
        let halves: Vec<String> = if initial.len() == 16 {
            vec![initial.clone(), initial[..8].to_owned(), initial[8..].to_owned()]
        } else {
            vec![initial.clone()]
        };
        let previous: Vec<&str> = halves.iter().map(String::as_str).collect();
        let new = Self::new_pin(new, &previous)?;
        let credential = self
            .verify("CompleteFirstAccess", &cf, &initial, |c| {
                c.stage.awaits_first_access().then_some(&c.pin_hash)
            })
            .await?;
        let hash = self.hasher.hash(new.expose().to_owned()).await?;
        if !self.store.set_own_pin(&cf, &credential.pin_hash, &hash).await? {
            return Err(IdentityError::BadCredentials);
        }
        Ok(())
    }

    /// Modifica PIN (§4.3b): current PIN + new PIN; the change is notified to the contacts on file.
    pub async fn change_pin(
        &self,
        cf_raw: &str,
        current: &str,
        new: &str,
    ) -> Result<(), IdentityError> {
        let cf = parse_fiscal_code(cf_raw)?.canonical();
        let current = normalise_pin(current);
        let new = Self::new_pin(new, &[&current])?;
        let credential = self
            .verify("ChangePin", &cf, &current, |c| {
                (c.stage == crate::store::PinStage::Active).then_some(&c.pin_hash)
            })
            .await?;
        let hash = self.hasher.hash(new.expose().to_owned()).await?;
        if !self.store.set_own_pin(&cf, &credential.pin_hash, &hash).await? {
            return Err(IdentityError::BadCredentials);
        }
        let key = format!("identity:{}:pin-changed", new_id());
        self.notifier.notify_all(&key, &cf, &credential.contacts, "PIN_CHANGED").await
    }

    /// Ripristino, step 1 (§4.3). Whatever happens, the caller gets the same answer; the
    /// contacts on file hear of every attempt.
    pub async fn start_recovery(
        &self,
        cf_raw: &str,
        given: &Contacts,
    ) -> Result<(), IdentityError> {
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
        let attempt = new_id();
        let Some(credential) = self.store.credential(&cf).await? else {
            // Same work as a real attempt, so timing does not tell registered from unknown.
            self.hasher.hash(attempt.clone()).await?;
            return Ok(());
        };
        let key = format!("identity:{attempt}:recovery-attempt");
        self.notifier.notify_all(&key, &cf, &credential.contacts, "PIN_RECOVERY_ATTEMPT").await?;
        let on_file = &credential.contacts;
        let all_match =
            offered.iter().all(|(ch, a)| on_file.address(*ch).is_some_and(|f| same_contact(a, f)));
        let eligible = all_match
            && credential.first_access_completed
            && credential.stage != crate::store::PinStage::Revoked;
        let code = format!("{:08}", rand::random_range(0..100_000_000u32));
        let code_hash = self.hasher.hash(code.clone()).await?;
        if !eligible {
            tracing::info!(fiscal_code = %sportello_platform::mask::fiscal_code(&cf), "recovery refused");
            return Ok(());
        }
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
        self.store
            .put_recovery(&cf, &code_hash, &targets, now_millis().saturating_add(ttl))
            .await?;
        let to = match (&on_file.email, &on_file.pec) {
            (Some(email), _) => Destination::Channel(Channel::Email, email.clone()),
            (None, Some(pec)) => Destination::Channel(Channel::Pec, pec.clone()),
            (None, None) => return Ok(()),
        };
        self.notifier
            .send(
                format!("identity:{attempt}:recovery-code"),
                &cf,
                &to,
                "PIN_RECOVERY_CODE",
                Some(("code", &code)),
            )
            .await?;
        Ok(())
    }

    /// Ripristino, step 2: a valid code (once, before it expires, within the attempts allowed)
    /// restores a new 16-character PIN split over the two contacts chosen at step 1.
    pub async fn confirm_recovery(&self, cf_raw: &str, code: &str) -> Result<(), IdentityError> {
        let cf = parse_fiscal_code(cf_raw)?.canonical();
        let code = code.trim();
        if code.len() != 8 || !code.bytes().all(|b| b.is_ascii_digit()) {
            let mut v = FieldViolations::new();
            v.add("confirmation_code", "is the 8-digit code received by email");
            return Err(v.into());
        }
        let refused = IdentityError::Precondition {
            reason: "RECOVERY_CODE_NOT_VALID",
            message: "codice non valido o scaduto: ripeta la richiesta di ripristino",
        };
        let max = i64::from(self.rules.recovery_max_attempts);
        let Some(recovery) = self.store.reserve_recovery_attempt(&cf, max).await? else {
            self.hasher.verify(code.to_owned(), &self.decoy).await?;
            return Err(refused);
        };
        if !self.hasher.verify(code.to_owned(), &recovery.code_hash).await?
            || !self.store.consume_recovery(&cf, &recovery.code_hash).await?
        {
            return Err(refused);
        }
        let targets: Vec<Destination> = serde_json::from_str(&recovery.targets)
            .map_err(|e| IdentityError::Internal(e.to_string()))?;
        let [first_to, second_to] = targets.as_slice() else {
            return Err(IdentityError::Internal("a recovery needs two destinations".into()));
        };
        let pin = Pin::generate_initial();
        let hash = self.hasher.hash(pin.expose().to_owned()).await?;
        self.store.restore_pin(&cf, &hash).await?;
        let id = new_id();
        self.notifier
            .send(
                format!("identity:{id}:restored-first"),
                &cf,
                first_to,
                "PIN_RESTORED_FIRST_HALF",
                Some(("pin_half", pin.first_half())),
            )
            .await?;
        self.notifier
            .send(
                format!("identity:{id}:restored-second"),
                &cf,
                second_to,
                "PIN_RESTORED_SECOND_HALF",
                Some(("pin_half", pin.second_half())),
            )
            .await?;
        Ok(())
    }
}
