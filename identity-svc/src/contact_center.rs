//! The contact center's actions on credentials (DOMAIN.md §4.2, §4.5): look a citizen up,
//! find stuck requests, validate and re-send, change a contact, revoke, unlock. Each change
//! commits with its messages and its audit row; refusals and reads are audited in `api`.

use crate::domain::pin_request::Channel;
use crate::error::IdentityError;
use crate::notifier::{Delivery, Destination};
use crate::pins::{parse_fiscal_code, queue_notice, Pins};
use crate::store::{self, Credential, Half, NewMessage, Outcome, RequestRow, Trail};
use sportello_domain::{Email, PhoneNumber};
use sportello_platform::error::FieldViolations;
use sportello_platform::mask;
use sportello_platform::now_millis;
use sportello_proto::identity::v1::DeliveryStatus;
use std::collections::HashMap;

/// A request with the delivery status of each half.
#[derive(Clone, Debug)]
pub struct RequestView {
    pub row: RequestRow,
    pub first_half: DeliveryStatus,
    pub second_half: DeliveryStatus,
    /// The channel the first half fell back to, and its delivery there.
    pub first_half_fallback: Option<(Channel, DeliveryStatus)>,
}

impl RequestView {
    /// Whether the first half reached the citizen, on its channel or its fallback.
    fn first_half_delivered(&self) -> bool {
        self.first_half == DeliveryStatus::Delivered
            || self.first_half_fallback.is_some_and(|(_, s)| s == DeliveryStatus::Delivered)
    }
}

/// What an operator sees of a citizen.
#[derive(Clone, Debug)]
pub struct CredentialView {
    pub credential: Option<Credential>,
    pub requests: Vec<RequestView>,
}

/// One page of stuck requests.
#[derive(Clone, Debug)]
pub struct UndeliveredPage {
    pub requests: Vec<RequestView>,
    pub next_page_token: String,
}

/// A half with no message id yet is still in the outbox: queued, from the citizen's view.
fn status_of(
    statuses: &HashMap<String, Delivery>,
    outcome: Outcome,
    id: &Option<String>,
) -> DeliveryStatus {
    match id {
        None if outcome == Outcome::Issued => DeliveryStatus::Queued,
        None => DeliveryStatus::NotSent,
        Some(id) => statuses.get(id).map_or(DeliveryStatus::Unspecified, |d| d.status),
    }
}

fn page_size(requested: i32) -> i64 {
    match requested {
        n if n <= 0 => 50,
        n => i64::from(n.min(500)),
    }
}

fn bad_token() -> IdentityError {
    let mut v = FieldViolations::new();
    v.add("page_token", "is not a token this service returned");
    IdentityError::Invalid(v)
}

/// `created_at:id` of the last request a page looked at.
fn parse_cursor(token: &str) -> Result<Option<(i64, String)>, IdentityError> {
    if token.is_empty() {
        return Ok(None);
    }
    let (at, id) = token.split_once(':').ok_or_else(bad_token)?;
    Ok(Some((at.parse().map_err(|_| bad_token())?, id.to_owned())))
}

impl Pins {
    pub(crate) async fn with_statuses(
        &self,
        rows: Vec<RequestRow>,
    ) -> Result<Vec<RequestView>, IdentityError> {
        let ids = rows
            .iter()
            .flat_map(|r| [r.first_half_message.clone(), r.second_half_message.clone()])
            .flatten()
            .collect();
        let statuses = self.notifier.statuses(ids).await?;
        Ok(rows
            .into_iter()
            .map(|row| RequestView {
                first_half: status_of(&statuses, row.outcome, &row.first_half_message),
                second_half: status_of(&statuses, row.outcome, &row.second_half_message),
                first_half_fallback: row
                    .first_half_message
                    .as_ref()
                    .and_then(|id| statuses.get(id)?.fallback),
                row,
            })
            .collect())
    }

    /// A citizen's credential and latest requests, with delivery of each half.
    pub async fn lookup(&self, cf_raw: &str) -> Result<CredentialView, IdentityError> {
        let cf = parse_fiscal_code(cf_raw)?.canonical();
        let credential = self.store.credential(&cf).await?;
        let rows = self.store.requests_of(&cf, 20).await?;
        Ok(CredentialView { credential, requests: self.with_statuses(rows).await? })
    }

    /// Issued requests older than the grace period whose first half is not delivered and that
    /// no operator has validated yet, oldest first.
    pub async fn undelivered(
        &self,
        requested_size: i32,
        token: &str,
    ) -> Result<UndeliveredPage, IdentityError> {
        let size = page_size(requested_size);
        let grace = i64::try_from(self.rules.first_half_grace.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_millis().saturating_sub(grace);
        let mut cursor = parse_cursor(token)?;
        let mut found = Vec::new();
        // Delivered requests are filtered after asking notify-svc, so a page may need several
        // scans; each scan reads at most a page's worth of rows, and the loop is bounded.
        for _ in 0..20 {
            let after = cursor.as_ref().map(|(at, id)| (*at, id.as_str()));
            let rows = self.store.unvalidated_requests(cutoff, after, size).await?;
            let exhausted = (rows.len() as i64) < size;
            for view in self.with_statuses(rows).await? {
                cursor = Some((view.row.created_at, view.row.id.clone()));
                if !view.first_half_delivered() {
                    found.push(view);
                }
                if found.len() as i64 == size {
                    break;
                }
            }
            if exhausted && (found.len() as i64) < size {
                return Ok(UndeliveredPage { requests: found, next_page_token: String::new() });
            }
            if found.len() as i64 == size {
                break;
            }
        }
        let next_page_token = cursor.map(|(at, id)| format!("{at}:{id}")).unwrap_or_default();
        Ok(UndeliveredPage { requests: found, next_page_token })
    }

    /// Whether `request` is stuck: it issued the PIN still awaiting first access, no operator
    /// validated it, and its first half is undelivered past the grace period. Only such a
    /// request may be re-sent; the original message is returned.
    async fn stuck(&self, request: &RequestRow) -> Result<String, IdentityError> {
        let not_stuck = IdentityError::Precondition {
            reason: "REQUEST_NOT_STUCK",
            message: "only a request undelivered past the grace period, not yet validated and \
                      still awaiting first access can be re-sent",
        };
        let grace = i64::try_from(self.rules.first_half_grace.as_millis()).unwrap_or(i64::MAX);
        let overdue = request.created_at <= now_millis().saturating_sub(grace);
        let (Some(original), true, None, true) = (
            request.first_half_message.clone(),
            request.outcome == Outcome::Issued,
            &request.validated_by,
            overdue,
        ) else {
            return Err(not_stuck);
        };
        let awaiting = self
            .store
            .credential(&request.fiscal_code)
            .await?
            .is_some_and(|c| c.stage.awaits_first_access());
        // Only the latest PIN issued is the one awaiting first access.
        let latest = self
            .store
            .requests_of(&request.fiscal_code, 20)
            .await?
            .into_iter()
            .find(|r| r.outcome == Outcome::Issued)
            .is_some_and(|r| r.id == request.id);
        let view = self.with_statuses(vec![request.clone()]).await?;
        let delivered = view.first().is_some_and(|v| v.first_half == DeliveryStatus::Delivered);
        if !awaiting || !latest || delivered {
            return Err(not_stuck);
        }
        Ok(original)
    }

    /// Validates a stuck request and re-sends its first half, optionally to a corrected contact
    /// used for this re-send only (changing the contacts on file is [`Pins::update_contact`]).
    /// Returns the fiscal code and where the half went.
    pub async fn resend_first_half(
        &self,
        operator: &str,
        request_id: &str,
        identity_verified: bool,
        channel: Option<Channel>,
        address: &str,
    ) -> Result<(String, Destination), IdentityError> {
        let mut v = FieldViolations::new();
        if !identity_verified {
            v.add("identity_verified", "check the caller's identity by phone first");
        }
        let address = match address.trim() {
            "" => String::new(),
            given => check_address(&mut v, channel, given),
        };
        if !v.is_empty() {
            return Err(v.into());
        }
        let request =
            self.store.request(request_id).await?.ok_or(IdentityError::NotFound("PIN request"))?;
        let original = self.stuck(&request).await?;
        let cf = request.fiscal_code.clone();
        let channel = channel.unwrap_or(request.first_half_channel);
        let address = match address.as_str() {
            "" => self
                .store
                .credential(&cf)
                .await?
                .and_then(|c| c.contacts.address(channel).map(str::to_owned))
                .ok_or(IdentityError::Precondition {
                    reason: "NO_CONTACT_FOR_CHANNEL",
                    message: "no contact on file for that channel: give a corrected address",
                })?,
            _ => address,
        };
        let to = Destination::Channel(channel, address);
        let mut tx = self.store.begin().await?;
        if !store::validate_request(&mut tx, request_id, operator).await? {
            return Err(IdentityError::Precondition {
                reason: "REQUEST_NOT_STUCK",
                message: "another operator has just validated this request",
            });
        }
        let message = NewMessage {
            fiscal_code: &cf,
            template: "PIN_FIRST_HALF",
            to: &to,
            secret: None,
            resend_of: Some(&original),
            request: Some((request_id, Half::First)),
            fallback: None,
        };
        store::enqueue(&mut tx, &message).await?;
        let detail = format!("request {request_id}; {}", describe(&to));
        self.commit_done(tx, operator, "ResendFirstHalf", &cf, &detail).await?;
        Ok((cf, to))
    }

    /// Changes one contact on file, after the operator checked the caller's identity: the
    /// contacts on file before the change are told, and the audit row names the channel and the
    /// masked new address.
    pub async fn update_contact(
        &self,
        operator: &str,
        cf_raw: &str,
        identity_verified: bool,
        channel: Option<Channel>,
        address: &str,
    ) -> Result<Destination, IdentityError> {
        let mut v = FieldViolations::new();
        let cf = match parse_fiscal_code(cf_raw) {
            Ok(cf) => Some(cf.canonical()),
            Err(IdentityError::Invalid(inner)) => {
                inner.iter().for_each(|(field, why)| v.add(field, why));
                None
            }
            Err(e) => return Err(e),
        };
        if !identity_verified {
            v.add("identity_verified", "check the caller's identity by phone first");
        }
        let address = check_address(&mut v, channel, address.trim());
        let (Some(cf), Some(channel), true) = (cf, channel, v.is_empty()) else {
            return Err(v.into());
        };
        let credential = self.store.credential(&cf).await?.ok_or(IdentityError::NotFound("PIN"))?;
        let mut contacts = credential.contacts.clone();
        contacts.set(channel, address.clone());
        let to = Destination::Channel(channel, address);
        let mut tx = self.store.begin().await?;
        store::set_contacts(&mut tx, &cf, &contacts).await?;
        queue_notice(&mut tx, &cf, &credential.contacts, "PIN_CONTACTS_CHANGED").await?;
        let detail = describe(&to);
        self.commit_done(tx, operator, "UpdateContacts", &cf, &detail).await?;
        Ok(to)
    }

    /// Revokes a citizen's PIN and tells them; any pending recovery is cancelled and every
    /// session of the citizen ends, in the same transaction.
    pub async fn revoke(
        &self,
        operator: &str,
        cf_raw: &str,
        reason: &str,
    ) -> Result<(), IdentityError> {
        let cf = parse_fiscal_code(cf_raw)?.canonical();
        require_reason(reason)?;
        let credential = self.store.credential(&cf).await?.ok_or(IdentityError::NotFound("PIN"))?;
        let mut tx = self.store.begin().await?;
        if !store::revoke(&mut tx, &cf, reason.trim()).await? {
            return Err(IdentityError::Precondition {
                reason: "ALREADY_REVOKED",
                message: "the PIN is already revoked",
            });
        }
        store::cancel_recoveries(&mut tx, &cf).await?;
        store::end_sessions_of(&mut tx, &cf, None).await?;
        queue_notice(&mut tx, &cf, &credential.contacts, "PIN_REVOKED").await?;
        self.commit_done(tx, operator, "RevokePin", &cf, reason.trim()).await
    }

    /// Takes back, at the citizen's request, a PIN dispositivo granted within the hold; the
    /// revoked request's number.
    pub async fn revoke_conversion(
        &self,
        operator: &str,
        cf_raw: &str,
        reason: &str,
    ) -> Result<String, IdentityError> {
        let cf = parse_fiscal_code(cf_raw)?.canonical();
        require_reason(reason)?;
        let hold = i64::try_from(self.conversion_hold.as_millis()).unwrap_or(i64::MAX);
        let since = sportello_platform::now_millis().saturating_sub(hold);
        let revoked = self.store.revoke_conversion(&cf, operator, reason.trim(), since).await?;
        let number = revoked.ok_or(IdentityError::Precondition {
            reason: "NO_RECENT_CONVERSION",
            message: "no PIN dispositivo was granted within the hold: revoke the PIN instead",
        })?;
        self.relay.notify_one();
        Ok(number)
    }

    /// Unlocks a PIN locked by failed attempts and tells the citizen.
    pub async fn unlock(
        &self,
        operator: &str,
        cf_raw: &str,
        reason: &str,
    ) -> Result<(), IdentityError> {
        let cf = parse_fiscal_code(cf_raw)?.canonical();
        require_reason(reason)?;
        let credential = self.store.credential(&cf).await?.ok_or(IdentityError::NotFound("PIN"))?;
        let mut tx = self.store.begin().await?;
        if !store::unlock(&mut tx, &cf, reason.trim()).await? {
            return Err(IdentityError::Precondition {
                reason: "NOT_LOCKED",
                message: "the PIN is not locked",
            });
        }
        queue_notice(&mut tx, &cf, &credential.contacts, "PIN_UNLOCKED").await?;
        self.commit_done(tx, operator, "UnlockPin", &cf, reason.trim()).await
    }
}

/// Checks a phone or address given for `channel`: the address as kept (a mobile number in
/// E.164 form, an email address lower-cased), or a violation on `address`.
fn check_address(v: &mut FieldViolations, channel: Option<Channel>, address: &str) -> String {
    let parsed = match channel {
        Some(Channel::Sms) => PhoneNumber::parse_mobile(address).map(String::from).ok(),
        Some(Channel::Email | Channel::Pec) => Email::parse(address).map(String::from).ok(),
        None => None,
    };
    parsed.unwrap_or_else(|| {
        v.add("address", "give a channel and a mobile number or an email address");
        String::new()
    })
}

/// A destination as the audit trail shows it: the channel and the masked address.
pub fn describe(to: &Destination) -> String {
    match to {
        Destination::Channel(ch, address) => format!("{} {}", ch.as_str(), mask::any(address)),
        Destination::Post(block) => format!("POST {}", mask::postal(block)),
    }
}

fn require_reason(reason: &str) -> Result<(), IdentityError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        let mut v = FieldViolations::new();
        v.add("reason", "give a reason of 1 to 500 characters");
        return Err(v.into());
    }
    Ok(())
}

impl Pins {
    /// The audit trail of a fiscal code (or, given `operator_id` instead, everything that
    /// operator did), newest first; the page token is the last event's id.
    pub async fn audit_trail(
        &self,
        cf_raw: &str,
        operator_id: &str,
        requested_size: i32,
        token: &str,
    ) -> Result<(Vec<crate::store::AuditEvent>, String), IdentityError> {
        let cf;
        let trail = match (cf_raw.trim(), operator_id.trim()) {
            (raw, "") => {
                cf = parse_fiscal_code(raw)?.canonical();
                Trail::Citizen(&cf)
            }
            ("", operator) => Trail::Operator(operator),
            _ => {
                let mut v = FieldViolations::new();
                v.add("operator_id", "give either a fiscal code or an operator, not both");
                return Err(v.into());
            }
        };
        let before = match token {
            "" => None,
            t => Some(t.parse::<i64>().map_err(|_| bad_token())?),
        };
        let size = page_size(requested_size);
        let events = self.store.audit_events(trail, before, size).await?;
        let next = match events.last() {
            Some(last) if events.len() as i64 == size => last.id.to_string(),
            _ => String::new(),
        };
        Ok((events, next))
    }

    /// The progress of one's own request: found only with the fiscal code it was filed for.
    pub async fn request_status(
        &self,
        cf_raw: &str,
        request_id: &str,
    ) -> Result<RequestView, IdentityError> {
        let cf = parse_fiscal_code(cf_raw)?.canonical();
        let row = self
            .store
            .request(request_id.trim())
            .await?
            .filter(|r| r.fiscal_code == cf)
            .ok_or(IdentityError::NotFound("PIN request"))?;
        let mut views = self.with_statuses(vec![row]).await?;
        views.pop().ok_or(IdentityError::NotFound("PIN request"))
    }
}
