//! How answers print: as aligned text an operator reads on the phone, or with `--json` as the
//! response message in the canonical proto3 JSON mapping, made from the contract's own
//! descriptors (so a field added to the contract shows up without a change here).
//!
//! The text shows only what the RPC returned: contacts come masked from identity-svc, and the
//! session's tokens are never printed.

use super::session::{Saved, TokenFile};
use crate::stdout::outln;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use sportello_proto::identity::v1 as id;
use sportello_proto::privacy::v1 as pv;
use std::sync::OnceLock;

/// The contract's descriptors (with google.rpc's error details), decoded once.
fn descriptors() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(sportello_proto::FILE_DESCRIPTOR_SET)
            .expect("the contract's own descriptor set decodes")
    })
}

/// An encoded message of type `full_name`, readable field by field through its descriptor.
fn dynamic(encoded: &[u8], full_name: &str) -> anyhow::Result<DynamicMessage> {
    let descriptor = descriptors()
        .get_message_by_name(full_name)
        .ok_or_else(|| anyhow::anyhow!("{full_name} is not in the contract"))?;
    Ok(DynamicMessage::decode(descriptor, encoded)?)
}

/// The proto3 JSON mapping (enums by name, timestamps in RFC 3339, 64-bit integers as
/// strings), with every field present, so that scripts need not know the defaults.
const EVERY_FIELD: SerializeOptions = SerializeOptions::new().skip_default_fields(false);

/// The message as a JSON value, to take apart.
pub fn json_of_bytes(encoded: &[u8], full_name: &str) -> anyhow::Result<serde_json::Value> {
    let message = dynamic(encoded, full_name)?;
    Ok(message.serialize_with_options(serde_json::value::Serializer, &EVERY_FIELD)?)
}

/// The message as indented JSON, its fields in the contract's order.
fn json_text(message: &impl prost::Message, full_name: &str) -> anyhow::Result<String> {
    let message = dynamic(&message.encode_to_vec(), full_name)?;
    let mut text = Vec::new();
    message.serialize_with_options(&mut serde_json::Serializer::pretty(&mut text), &EVERY_FIELD)?;
    Ok(String::from_utf8(text)?)
}

/// A response message of the contract: `sportello.identity.v1` unless said.
pub trait Named: prost::Message + Sized {
    const NAME: &'static str;
    const PACKAGE: &'static str = "sportello.identity.v1";
}

/// A response with a text form of its own.
pub trait Reply: Named {
    fn show(&self);
}

#[derive(Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    pub fn reply<R: Reply>(self, reply: &R) -> anyhow::Result<()> {
        if self.json {
            return print_json(reply);
        }
        reply.show();
        Ok(())
    }

    /// For a response with nothing in it: `said` tells what was done.
    pub fn reply_saying<R: Named>(self, reply: &R, said: &str) -> anyhow::Result<()> {
        if self.json {
            return print_json(reply);
        }
        outln!("{said}");
        Ok(())
    }

    pub fn logged_in(self, saved: &Saved) -> anyhow::Result<()> {
        let until = time_of_secs(saved.refresh_token_expires_at);
        if self.json {
            // Not the LoginStaff response: that holds the tokens.
            let json = serde_json::json!({
                "username": saved.username,
                "gateway": saved.gateway,
                "sessionEndsAt": rfc3339(saved.refresh_token_expires_at),
            });
            outln!("{json}");
        } else {
            outln!(
                "Logged in as {} at {}; the session lasts until {until}.",
                saved.username,
                saved.gateway
            );
        }
        Ok(())
    }

    pub fn logged_out(self, file: &TokenFile, ended: bool) -> anyhow::Result<()> {
        if self.json {
            outln!("{}", serde_json::json!({ "sessionEnded": ended }));
        } else if ended {
            outln!("Logged out; {} removed.", file.path().display());
        } else {
            outln!("No session was going on; {} removed.", file.path().display());
        }
        Ok(())
    }
}

fn print_json<R: Named>(reply: &R) -> anyhow::Result<()> {
    outln!("{}", json_text(reply, &format!("{}.{}", R::PACKAGE, R::NAME))?);
    Ok(())
}

/// An enum value without its type prefix (`DELIVERY_STATUS_QUEUED` → `QUEUED`), `-` when
/// unspecified. The prefix is the zero value's name less `UNSPECIFIED`, as buf lint requires.
fn label<E: TryFrom<i32>>(value: i32, name: fn(&E) -> &'static str) -> String {
    let zero = E::try_from(0).map(|zero| name(&zero));
    let prefix = zero.ok().and_then(|zero| zero.strip_suffix("UNSPECIFIED")).unwrap_or("");
    match E::try_from(value) {
        Ok(_) if value == 0 => "-".into(),
        Ok(e) => {
            let full = name(&e);
            full.strip_prefix(prefix).unwrap_or(full).into()
        }
        Err(_) => value.to_string(),
    }
}

fn time_of_secs(secs: i64) -> String {
    match chrono::DateTime::from_timestamp(secs, 0) {
        Some(at) => at.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M").to_string(),
        None => "-".into(),
    }
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).map(|t| t.to_rfc3339()).unwrap_or_default()
}

/// A timestamp in local time, to the minute.
fn time(at: &Option<prost_types::Timestamp>) -> String {
    at.as_ref().map_or_else(|| "-".into(), |t| time_of_secs(t.seconds))
}

fn or_dash(text: &str) -> String {
    match text.trim() {
        "" => "-".into(),
        // A residence comes in lines; a table cell holds one.
        text => text.replace('\n', ", "),
    }
}

/// `label  value` lines, the values aligned; empty values left out.
fn fields(pairs: &[(&str, String)]) {
    let shown: Vec<&(&str, String)> =
        pairs.iter().filter(|(_, v)| !v.is_empty() && v != "-").collect();
    let width = shown.iter().map(|(label, _)| label.chars().count()).max().unwrap_or(0);
    for (label, value) in shown {
        outln!("{label:<width$}  {}", printable(value));
    }
}

/// `text` safe for a terminal: control characters and bidirectional overrides (which a value
/// from a form or an audit detail may carry, to move the cursor or reverse what follows) shown
/// escaped, as `\u{1b}`.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            c if c.is_control()
                || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}') =>
            {
                c.escape_default().to_string()
            }
            c => c.to_string(),
        })
        .collect()
}

/// A table: a header row and aligned columns, two spaces apart.
fn table(headers: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> =
        rows.iter().map(|row| row.iter().map(|cell| printable(cell)).collect()).collect();
    let rows = rows.as_slice();
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, header)| {
            let cells = rows.iter().map(|row| row[i].chars().count());
            cells.chain([header.chars().count()]).max().unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(cell, &width)| format!("{cell:<width$}")).collect();
        outln!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A request's first half: its channel and delivery, and its fallback's if it had one.
fn first_half(r: &id::PinRequestSummary) -> String {
    let own = format!(
        "{} {}",
        label(r.first_half_channel, id::DeliveryChannel::as_str_name),
        label(r.first_half, id::DeliveryStatus::as_str_name)
    );
    match r.first_half_fallback_channel {
        0 => own,
        fallback => format!(
            "{own} -> {} {}",
            label(fallback, id::DeliveryChannel::as_str_name),
            label(r.first_half_fallback, id::DeliveryStatus::as_str_name)
        ),
    }
}

/// Why a request of the queue waits: the reason identity-svc gave for holding it for
/// validation, else the first half not delivered within the grace period.
fn waits_because(r: &id::PinRequestSummary) -> String {
    match r.pending_reason.trim() {
        "" => {
            "first half undelivered past the grace period: verify the caller, then `resend`".into()
        }
        reason => reason.to_owned(),
    }
}

fn name_on(form: Option<&id::RequestForm>) -> String {
    form.map_or_else(|| "-".into(), |f| or_dash(&format!("{} {}", f.given_name, f.surname)))
}

fn next_page(token: &str) {
    if !token.is_empty() {
        outln!("More: --page-token {token} (or --all)");
    }
}

impl Named for id::RequestPinForCallerResponse {
    const NAME: &'static str = "RequestPinForCallerResponse";
}

impl Reply for id::RequestPinForCallerResponse {
    fn show(&self) {
        use id::PinRequestOutcome as O;
        let meaning = match O::try_from(self.outcome) {
            Ok(O::Issued) => {
                "a new PIN was issued: first half by SMS, email or PEC, second by post"
            }
            Ok(O::AlreadyHasPin) => {
                "the citizen already holds a PIN: the contacts on file were told to use ripristino"
            }
            Ok(O::PendingValidation) => {
                "nothing issued yet: check the caller's identity and residence, then \
                 `sportello operator validate`"
            }
            Ok(O::RegisterMismatch) => {
                "nothing issued: the anagrafica disagrees with the register of residents"
            }
            _ => "",
        };
        fields(&[
            ("request", self.request_id.clone()),
            ("outcome", label(self.outcome, O::as_str_name)),
            ("", meaning.into()),
        ]);
    }
}

impl Named for id::LookupCredentialResponse {
    const NAME: &'static str = "LookupCredentialResponse";
}

impl Reply for id::LookupCredentialResponse {
    fn show(&self) {
        let contacts = self.contacts.clone().unwrap_or_default();
        fields(&[
            ("PIN", label(self.pin_state, id::PinState::as_str_name)),
            ("failed attempts", self.failed_attempts.to_string()),
            ("mobile phone", contacts.mobile_phone),
            ("home phone", contacts.home_phone),
            ("email", contacts.email),
            ("PEC", contacts.pec),
        ]);
        if self.requests.is_empty() {
            outln!("\nNo PIN request.");
            return;
        }
        // The form of the newest request: what to check with the caller on the line.
        if let Some(form) = self.requests[0].form.as_ref() {
            outln!("\nLatest form:");
            let born = form
                .birth_date
                .as_ref()
                .map_or_else(String::new, |d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day));
            fields(&[
                ("name", name_on(Some(form))),
                ("sex", label(form.sex, id::Sex::as_str_name)),
                ("born", format!("{born} {}", form.birthplace).trim().to_owned()),
                ("residence", or_dash(&form.residence)),
                ("callback", or_dash(&form.callback_phone)),
                ("time slot", label(form.preferred_time_slot, id::TimeSlot::as_str_name)),
            ]);
        }
        outln!();
        let rows: Vec<Vec<String>> = self
            .requests
            .iter()
            .map(|r| {
                vec![
                    r.request_id.clone(),
                    time(&r.requested_at),
                    label(r.outcome, id::PinRequestOutcome::as_str_name),
                    label(r.register_check, id::RegisterCheck::as_str_name),
                    first_half(r),
                    label(r.second_half, id::DeliveryStatus::as_str_name),
                    or_dash(&r.validated_by),
                ]
            })
            .collect();
        table(
            &[
                "REQUEST",
                "FILED",
                "OUTCOME",
                "REGISTER",
                "FIRST HALF",
                "SECOND HALF",
                "VALIDATED BY",
            ],
            &rows,
        );
        for r in self.requests.iter().filter(|r| !r.pending_reason.is_empty()) {
            outln!("{} waits for validation: {}", r.request_id, r.pending_reason);
        }
    }
}

impl Named for id::ListUndeliveredPinRequestsResponse {
    const NAME: &'static str = "ListUndeliveredPinRequestsResponse";
}

impl Reply for id::ListUndeliveredPinRequestsResponse {
    fn show(&self) {
        if self.requests.is_empty() {
            outln!("No request is waiting past the grace period.");
            return next_page(&self.next_page_token);
        }
        let rows: Vec<Vec<String>> = self
            .requests
            .iter()
            .map(|r| {
                let form = r.form.as_ref();
                vec![
                    r.request_id.clone(),
                    time(&r.requested_at),
                    r.fiscal_code.clone(),
                    name_on(form),
                    form.map_or_else(|| "-".into(), |f| or_dash(&f.callback_phone)),
                    label(form.map_or(0, |f| f.preferred_time_slot), id::TimeSlot::as_str_name),
                    first_half(r),
                    waits_because(r),
                ]
            })
            .collect();
        table(
            &["REQUEST", "FILED", "FISCAL CODE", "NAME", "CALL", "WHEN", "FIRST HALF", "WHY"],
            &rows,
        );
        next_page(&self.next_page_token);
    }
}

impl Named for id::ResendFirstHalfResponse {
    const NAME: &'static str = "ResendFirstHalfResponse";
}

impl Reply for id::ResendFirstHalfResponse {
    fn show(&self) {
        let channel = label(self.channel, id::DeliveryChannel::as_str_name);
        outln!("Validated; first half sent again by {channel} to {}.", self.masked_address);
    }
}

impl Named for id::UpdateContactsResponse {
    const NAME: &'static str = "UpdateContactsResponse";
}

impl Reply for id::UpdateContactsResponse {
    fn show(&self) {
        let channel = label(self.channel, id::DeliveryChannel::as_str_name);
        outln!(
            "{channel} contact now {}; the contacts on file before were told.",
            self.masked_address
        );
    }
}

impl Named for id::ValidatePendingPinRequestResponse {
    const NAME: &'static str = "ValidatePendingPinRequestResponse";
}

impl Reply for id::ValidatePendingPinRequestResponse {
    fn show(&self) {
        outln!(
            "Validated; PIN issued: first half sent to {}, the letter to the residence on the form.",
            self.masked_address
        );
    }
}

impl Named for id::RevokePinResponse {
    const NAME: &'static str = "RevokePinResponse";
}

impl Named for id::UnlockPinResponse {
    const NAME: &'static str = "UnlockPinResponse";
}

impl Named for id::ListAuditEventsResponse {
    const NAME: &'static str = "ListAuditEventsResponse";
}

impl Reply for id::ListAuditEventsResponse {
    fn show(&self) {
        if self.events.is_empty() {
            outln!("No audit event.");
            return next_page(&self.next_page_token);
        }
        let rows: Vec<Vec<String>> = self
            .events
            .iter()
            .map(|e| {
                vec![
                    time(&e.time),
                    e.operator_id.clone(),
                    e.action.clone(),
                    or_dash(&e.fiscal_code),
                    e.outcome.clone(),
                    or_dash(&e.detail),
                ]
            })
            .collect();
        table(&["TIME", "WHO", "ACTION", "FISCAL CODE", "OUTCOME", "DETAIL"], &rows);
        next_page(&self.next_page_token);
    }
}

impl Named for pv::ListMyDataAccessResponse {
    const NAME: &'static str = "ListMyDataAccessResponse";
    const PACKAGE: &'static str = "sportello.privacy.v1";
}

impl Reply for pv::ListMyDataAccessResponse {
    fn show(&self) {
        if self.entries.is_empty() {
            outln!("Nessun accesso ai suoi dati.");
            return next_page(&self.next_page_token);
        }
        let rows: Vec<Vec<String>> = self
            .entries
            .iter()
            .map(|e| {
                vec![
                    time(&e.at),
                    label(e.source, pv::Source::as_str_name),
                    e.actor_role_label.clone(),
                    e.office.clone(),
                    or_dash(&e.operator_pseudonym),
                    e.action_label.clone(),
                    or_dash(&e.reason),
                    e.outcome_label.clone(),
                ]
            })
            .collect();
        let headers =
            ["QUANDO", "SERVIZIO", "CHI", "UFFICIO", "OPERATORE", "COSA", "PERCHÉ", "ESITO"];
        table(&headers, &rows);
        next_page(&self.next_page_token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_bidi_overrides_print_escaped() {
        assert_eq!(printable("ok\u{1b}[2J\u{202E}x\ty"), "ok\\u{1b}[2J\\u{202e}x\\ty");
        assert_eq!(printable("Nicolò D'Amico"), "Nicolò D'Amico");
    }

    #[test]
    fn every_reply_is_named_as_in_the_contract() {
        fn check<R: Named + Default>() {
            let name = format!("{}.{}", R::PACKAGE, R::NAME);
            assert!(json_text(&R::default(), &name).is_ok(), "{name}");
        }
        check::<id::RequestPinForCallerResponse>();
        check::<id::LookupCredentialResponse>();
        check::<id::ListUndeliveredPinRequestsResponse>();
        check::<id::ResendFirstHalfResponse>();
        check::<id::UpdateContactsResponse>();
        check::<id::ValidatePendingPinRequestResponse>();
        check::<id::RevokePinResponse>();
        check::<id::UnlockPinResponse>();
        check::<id::ListAuditEventsResponse>();
        check::<pv::ListMyDataAccessResponse>();
    }

    #[test]
    fn enum_values_show_without_their_type_prefix() {
        let status = |s: id::DeliveryStatus| label(s as i32, id::DeliveryStatus::as_str_name);
        assert_eq!(status(id::DeliveryStatus::NotSent), "NOT_SENT");
        assert_eq!(status(id::DeliveryStatus::Unspecified), "-");
        assert_eq!(label(99, id::DeliveryStatus::as_str_name), "99");
    }
}
