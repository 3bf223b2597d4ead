//! The contact center's actions on credentials (DOMAIN.md §4.2, §4.5): look a citizen up,
//! find stuck requests, validate and re-send, revoke, unlock. Auditing wraps them in `api`.

use crate::domain::pin_request::{is_email, is_international_phone, Channel};
use crate::error::IdentityError;
use crate::notifier::Destination;
use crate::pins::{parse_fiscal_code, Pins};
use crate::store::{Credential, RequestRow};
use sportello_platform::error::FieldViolations;
use sportello_platform::now_millis;
use sportello_proto::identity::v1::DeliveryStatus;
use std::collections::HashMap;

/// A request with the delivery status of each half.
#[derive(Clone, Debug)]
pub struct RequestView {
    pub row: RequestRow,
    pub first_half: DeliveryStatus,
    pub second_half: DeliveryStatus,
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

fn status_of(statuses: &HashMap<String, DeliveryStatus>, id: &Option<String>) -> DeliveryStatus {
    match id {
        None => DeliveryStatus::NotSent,
        Some(id) => statuses.get(id).copied().unwrap_or(DeliveryStatus::Unspecified),
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
    async fn with_statuses(
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
                first_half: status_of(&statuses, &row.first_half_message),
                second_half: status_of(&statuses, &row.second_half_message),
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
                if view.first_half != DeliveryStatus::Delivered {
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

    /// Validates a stuck request and re-sends its first half, optionally to a corrected contact
    /// (which then replaces the one on file). Returns where it went.
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
        let address = address.trim();
        if !address.is_empty() {
            let ok = match channel {
                Some(Channel::Sms) => is_international_phone(address),
                Some(Channel::Email | Channel::Pec) => is_email(address),
                None => false,
            };
            if !ok {
                v.add(
                    "address",
                    "give a channel and a phone in international form or an email address",
                );
            }
        }
        if !v.is_empty() {
            return Err(v.into());
        }
        let request =
            self.store.request(request_id).await?.ok_or(IdentityError::NotFound("PIN request"))?;
        let (Some(original), Some(mut credential)) = (
            request.first_half_message.clone(),
            self.store.credential(&request.fiscal_code).await?,
        ) else {
            return Err(IdentityError::Precondition {
                reason: "NOTHING_TO_RESEND",
                message: "this request issued no PIN",
            });
        };
        let channel = channel.unwrap_or(request.first_half_channel);
        let address = if address.is_empty() {
            credential.contacts.address(channel).map(str::to_owned).ok_or(
                IdentityError::Precondition {
                    reason: "NO_CONTACT_FOR_CHANNEL",
                    message: "no contact on file for that channel: give a corrected address",
                },
            )?
        } else {
            credential.contacts.set(channel, address.to_owned());
            self.store.set_contacts(&request.fiscal_code, &credential.contacts).await?;
            address.to_owned()
        };
        let to = Destination::Channel(channel, address);
        let key = format!("identity:{request_id}:resend:{}", uuid::Uuid::now_v7());
        let message = self.notifier.resend(key, &original, Some(&to)).await?;
        self.store.validate_request(request_id, operator, &message).await?;
        Ok((request.fiscal_code, to))
    }

    /// Revokes a citizen's PIN and tells them.
    pub async fn revoke(&self, cf_raw: &str, reason: &str) -> Result<(), IdentityError> {
        let cf = parse_fiscal_code(cf_raw)?.canonical();
        require_reason(reason)?;
        let credential = self.store.credential(&cf).await?.ok_or(IdentityError::NotFound("PIN"))?;
        if !self.store.revoke(&cf, reason.trim()).await? {
            return Err(IdentityError::Precondition {
                reason: "ALREADY_REVOKED",
                message: "the PIN is already revoked",
            });
        }
        let key = format!("identity:{}:revoked", uuid::Uuid::now_v7());
        self.notifier.notify_all(&key, &cf, &credential.contacts, "PIN_REVOKED").await
    }

    /// Unlocks a PIN locked by failed attempts and tells the citizen.
    pub async fn unlock(&self, cf_raw: &str, reason: &str) -> Result<(), IdentityError> {
        let cf = parse_fiscal_code(cf_raw)?.canonical();
        require_reason(reason)?;
        let credential = self.store.credential(&cf).await?.ok_or(IdentityError::NotFound("PIN"))?;
        if !self.store.unlock(&cf, reason.trim()).await? {
            return Err(IdentityError::Precondition {
                reason: "NOT_LOCKED",
                message: "the PIN is not locked",
            });
        }
        let key = format!("identity:{}:unlocked", uuid::Uuid::now_v7());
        self.notifier.notify_all(&key, &cf, &credential.contacts, "PIN_UNLOCKED").await
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
    /// The audit trail of a fiscal code, newest first; the page token is the last event's id.
    pub async fn audit_trail(
        &self,
        cf_raw: &str,
        requested_size: i32,
        token: &str,
    ) -> Result<(Vec<crate::store::AuditEvent>, String), IdentityError> {
        let cf = parse_fiscal_code(cf_raw)?.canonical();
        let before = match token {
            "" => None,
            t => Some(t.parse::<i64>().map_err(|_| bad_token())?),
        };
        let size = page_size(requested_size);
        let events = self.store.audit_events(&cf, before, size).await?;
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
