//! What a message is, checked: the rules that hold before anything is stored.

use crate::error::NotifyError;
use sportello_domain::{Email, PhoneNumber};
use sportello_platform::error::FieldViolations;
use sportello_proto::notify::v1::{
    BatchGetMessagesRequest, Channel, EnqueueMessageRequest, ResendMessageRequest,
};
use std::collections::BTreeMap;

/// The most ids one `BatchGetMessages` call may ask for.
pub const MAX_BATCH_IDS: usize = 100;

/// The longest idempotency key a caller may choose.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;

/// A message accepted for delivery.
#[derive(Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub idempotency_key: String,
    pub fiscal_code: String,
    pub channel: Channel,
    pub address: String,
    pub template: String,
    pub params: BTreeMap<String, String>,
    pub secret_params: BTreeMap<String, String>,
    /// Where the same message goes if its channel refuses it for good.
    pub fallback: Option<Fallback>,
}

/// A courtesy channel and address: SMS, email or PEC.
#[derive(Clone, PartialEq, Eq)]
pub struct Fallback {
    pub channel: Channel,
    pub address: String,
}

// Addresses and secrets stay out of logs.
impl std::fmt::Debug for NewMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewMessage")
            .field("idempotency_key", &self.idempotency_key)
            .field("channel", &self.channel)
            .field("template", &self.template)
            .finish_non_exhaustive()
    }
}

/// The stored name of a channel.
pub fn channel_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Sms => "SMS",
        Channel::Email => "EMAIL",
        Channel::Pec => "PEC",
        Channel::Post => "POST",
        Channel::Unspecified => "UNSPECIFIED",
    }
}

/// The channel whose stored name is `name`, if any.
pub fn channel_from_name(name: &str) -> Option<Channel> {
    Channel::from_str_name(&format!("CHANNEL_{name}")).filter(|c| *c != Channel::Unspecified)
}

fn required(violations: &mut FieldViolations, field: &str, value: &str) -> String {
    let value = value.trim();
    if value.is_empty() {
        violations.add(field, "is required");
    }
    value.to_owned()
}

fn idempotency_key(violations: &mut FieldViolations, value: &str) -> String {
    let key = required(violations, "idempotency_key", value);
    if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        violations.add(
            "idempotency_key",
            format!("must be at most {MAX_IDEMPOTENCY_KEY_LEN} characters"),
        );
    }
    key
}

impl TryFrom<EnqueueMessageRequest> for NewMessage {
    type Error = FieldViolations;

    fn try_from(req: EnqueueMessageRequest) -> Result<Self, Self::Error> {
        let mut violations = FieldViolations::new();
        let idempotency_key = idempotency_key(&mut violations, &req.idempotency_key);
        let fiscal_code = required(&mut violations, "fiscal_code", &req.fiscal_code);
        let channel = match Channel::try_from(req.channel) {
            Ok(Channel::Unspecified) | Err(_) => {
                violations.add("channel", "must be SMS, EMAIL, PEC or POST");
                Channel::Unspecified
            }
            Ok(channel) => channel,
        };
        let address = address(&mut violations, "address", channel, &req.address);
        let template = required(&mut violations, "template", &req.template);
        let fallback = req.fallback.and_then(|f| fallback(&mut violations, f));
        printable_params(&mut violations, "params", &req.params);
        printable_params(&mut violations, "secret_params", &req.secret_params);
        violations.into_result(NewMessage {
            idempotency_key,
            fiscal_code,
            channel,
            address,
            template,
            params: req.params.into_iter().collect(),
            secret_params: req.secret_params.into_iter().collect(),
            fallback,
        })
    }
}

/// The longest postal address block a letter carries (the addressee's name and up to five
/// address lines).
const POST_MAX_CHARS: usize = 600;
const POST_MAX_LINES: usize = 8;

/// The address a message on `channel` goes to, as delivery will use it: a mobile number in
/// E.164 form for SMS, a deliverable email address for email and PEC (the same rules as where
/// identity and claims took it, so that nothing accepted here fails for good when sent), a
/// printable address block of a few lines for post.
fn address(violations: &mut FieldViolations, field: &str, channel: Channel, text: &str) -> String {
    let text = required(violations, field, text);
    if text.is_empty() {
        return text;
    }
    let parsed = match channel {
        Channel::Sms => {
            PhoneNumber::parse_mobile(&text).map(String::from).map_err(|e| e.to_string())
        }
        Channel::Email | Channel::Pec => {
            Email::parse(&text).map(String::from).map_err(|e| e.to_string())
        }
        Channel::Post => post_address(&text),
        // The channel's own violation says what is wrong.
        Channel::Unspecified => Ok(text.clone()),
    };
    parsed.unwrap_or_else(|why| {
        violations.add(field, why);
        text
    })
}

fn post_address(text: &str) -> Result<String, String> {
    sportello_domain::text::printable(text, true).map_err(|e| e.to_string())?;
    if text.chars().count() > POST_MAX_CHARS {
        Err(format!("must be at most {POST_MAX_CHARS} characters"))
    } else if text.lines().count() > POST_MAX_LINES {
        Err(format!("must be at most {POST_MAX_LINES} lines"))
    } else {
        Ok(text.to_owned())
    }
}

/// Template parameters are printed in messages: no control or invisible characters (newlines
/// aside).
fn printable_params<'a>(
    violations: &mut FieldViolations,
    field: &str,
    params: impl IntoIterator<Item = (&'a String, &'a String)>,
) {
    for (key, value) in params {
        if let Err(e) = sportello_domain::text::printable(value, true)
            .and_then(|()| sportello_domain::text::printable(key, false))
        {
            violations.add(format!("{field}[{key:?}]"), e.to_string());
        }
    }
}

/// A fallback as asked: absent when both fields are empty, refused when half given or on post (a
/// letter is no courtesy channel: it is slow and costs money).
fn fallback(
    violations: &mut FieldViolations,
    f: sportello_proto::notify::v1::Fallback,
) -> Option<Fallback> {
    let channel = Channel::try_from(f.channel).unwrap_or(Channel::Unspecified);
    if f.channel == Channel::Unspecified as i32 && f.address.trim().is_empty() {
        return None;
    }
    if !matches!(channel, Channel::Sms | Channel::Email | Channel::Pec) {
        violations.add("fallback.channel", "must be SMS, EMAIL or PEC");
    }
    let address = if f.address.trim().is_empty() {
        violations.add("fallback.address", "is required with a fallback channel");
        String::new()
    } else if channel == Channel::Post {
        f.address.trim().to_owned()
    } else {
        address(violations, "fallback.address", channel, &f.address)
    };
    Some(Fallback { channel, address })
}

/// The ids of a `BatchGetMessages` call: one to a hundred, none blank, in the order asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageIds(Vec<String>);

impl MessageIds {
    /// The ids in the order they were asked (a repeated id appears each time it was asked).
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// Each id once, in the order first asked: what to look up.
    pub fn distinct(&self) -> Vec<&str> {
        let mut seen = std::collections::HashSet::new();
        self.0.iter().map(String::as_str).filter(|id| seen.insert(*id)).collect()
    }
}

impl TryFrom<BatchGetMessagesRequest> for MessageIds {
    type Error = FieldViolations;

    fn try_from(req: BatchGetMessagesRequest) -> Result<Self, Self::Error> {
        let mut violations = FieldViolations::new();
        if req.message_ids.is_empty() || req.message_ids.len() > MAX_BATCH_IDS {
            violations.add("message_ids", format!("must hold between 1 and {MAX_BATCH_IDS} ids"));
        }
        let ids = req
            .message_ids
            .iter()
            .enumerate()
            .map(|(i, id)| required(&mut violations, &format!("message_ids[{i}]"), id))
            .collect();
        violations.into_result(MessageIds(ids))
    }
}

/// A checked `ResendMessage` call.
#[derive(Clone, PartialEq, Eq)]
pub struct Resend {
    pub message_id: String,
    pub idempotency_key: String,
    /// `None`: the original's channel.
    pub channel: Option<Channel>,
    /// `None`: the original's address.
    pub address: Option<String>,
}

// The address stays out of logs.
impl std::fmt::Debug for Resend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resend")
            .field("message_id", &self.message_id)
            .field("idempotency_key", &self.idempotency_key)
            .field("channel", &self.channel)
            .field("new_address", &self.address.is_some())
            .finish()
    }
}

impl TryFrom<ResendMessageRequest> for Resend {
    type Error = FieldViolations;

    fn try_from(req: ResendMessageRequest) -> Result<Self, Self::Error> {
        let mut violations = FieldViolations::new();
        let message_id = required(&mut violations, "message_id", &req.message_id);
        let idempotency_key = idempotency_key(&mut violations, &req.idempotency_key);
        let channel = match Channel::try_from(req.channel) {
            Ok(Channel::Unspecified) => None,
            Ok(channel) => Some(channel),
            Err(_) => {
                violations.add(
                    "channel",
                    "must be SMS, EMAIL, PEC or POST, or unspecified to keep the original's",
                );
                None
            }
        };
        let address = Some(req.address.trim().to_owned()).filter(|a| !a.is_empty());
        violations.into_result(Resend { message_id, idempotency_key, channel, address })
    }
}

/// The secret parameters of a stored message.
#[derive(Clone, PartialEq, Eq)]
pub enum Secrets {
    /// Still stored (possibly none at all).
    Kept(BTreeMap<String, String>),
    /// Purged by the dispatcher: gone for good.
    Purged,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secrets::Kept(secrets) => write!(f, "Kept({} secret params)", secrets.len()),
            Secrets::Purged => f.write_str("Purged"),
        }
    }
}

/// A stored message, as much of it as a resend copies.
#[derive(Clone, PartialEq, Eq)]
pub struct Original {
    pub id: String,
    pub fiscal_code: String,
    pub channel: Channel,
    pub address: String,
    pub template: String,
    pub params: BTreeMap<String, String>,
    pub secrets: Secrets,
}

// Addresses and secrets stay out of logs.
impl std::fmt::Debug for Original {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Original")
            .field("id", &self.id)
            .field("channel", &self.channel)
            .field("template", &self.template)
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

impl Resend {
    /// The new message that resends `original`: the same citizen, template and parameters
    /// (secret ones included), on the requested channel and address where given.
    ///
    /// Refused when the original's secrets are purged (they cannot be recovered), and when the
    /// channel changes without a new address (the old one would not fit the new channel).
    pub fn copy_of(self, original: Original) -> Result<NewMessage, NotifyError> {
        let Secrets::Kept(secret_params) = original.secrets else {
            return Err(NotifyError::SecretsPurged);
        };
        let channel = self.channel.unwrap_or(original.channel);
        let address = match self.address {
            Some(given) => {
                let mut violations = FieldViolations::new();
                let address = address(&mut violations, "address", channel, &given);
                violations.into_result(address)?
            }
            None if channel != original.channel => {
                let mut violations = FieldViolations::new();
                violations.add("address", "is required when the channel changes");
                return Err(violations.into());
            }
            None => original.address,
        };
        Ok(NewMessage {
            idempotency_key: self.idempotency_key,
            fiscal_code: original.fiscal_code,
            channel,
            address,
            template: original.template,
            params: original.params,
            secret_params,
            // The contact center chose where the resend goes.
            fallback: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> EnqueueMessageRequest {
        EnqueueMessageRequest {
            idempotency_key: "identity:pin-request:1".into(),
            fiscal_code: "RSSMRA85T10A562S".into(),
            channel: Channel::Sms as i32,
            address: "+393331234567".into(),
            template: "PIN_FIRST_HALF".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_complete_message_is_accepted() {
        let message = NewMessage::try_from(valid()).expect("valid");
        assert_eq!(message.channel, Channel::Sms);
    }

    #[test]
    fn every_missing_field_is_reported_at_once() {
        let err = NewMessage::try_from(EnqueueMessageRequest::default()).unwrap_err();
        let fields: Vec<&str> = err.iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["idempotency_key", "fiscal_code", "channel", "address", "template"]);
    }

    #[test]
    fn a_fallback_is_an_sms_email_or_pec_address() {
        let mut req = valid();
        req.fallback = Some(sportello_proto::notify::v1::Fallback {
            channel: Channel::Email as i32,
            address: " mario@example.it ".into(),
        });
        let message = NewMessage::try_from(req.clone()).expect("valid");
        let fallback = message.fallback.expect("kept");
        assert_eq!(
            (fallback.channel, fallback.address.as_str()),
            (Channel::Email, "mario@example.it")
        );

        req.fallback = Some(sportello_proto::notify::v1::Fallback {
            channel: Channel::Post as i32,
            address: String::new(),
        });
        let err = NewMessage::try_from(req).unwrap_err();
        let fields: Vec<&str> = err.iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["fallback.channel", "fallback.address"]);
    }

    #[test]
    fn an_empty_fallback_is_no_fallback() {
        let mut req = valid();
        req.fallback = Some(Default::default());
        assert!(NewMessage::try_from(req).expect("valid").fallback.is_none());
    }

    #[test]
    fn debug_output_hides_address_and_secrets() {
        let mut req = valid();
        req.secret_params.insert("pin_half".into(), "ABCDEFGH".into());
        let shown = format!("{:?}", NewMessage::try_from(req).expect("valid"));
        assert!(!shown.contains("+39333"));
        assert!(!shown.contains("ABCDEFGH"));
    }

    fn ids(n: usize) -> BatchGetMessagesRequest {
        BatchGetMessagesRequest { message_ids: (0..n).map(|i| format!("id-{i}")).collect() }
    }

    fn fields(err: &FieldViolations) -> Vec<&str> {
        err.iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn one_to_a_hundred_ids_are_accepted_in_the_order_asked() {
        for n in [1, 2, MAX_BATCH_IDS] {
            let asked = ids(n);
            let parsed = MessageIds::try_from(asked.clone()).expect("accepted");
            assert_eq!(parsed.as_slice(), asked.message_ids.as_slice());
        }
    }

    #[test]
    fn no_ids_at_all_is_refused() {
        let err = MessageIds::try_from(ids(0)).unwrap_err();
        assert_eq!(fields(&err), ["message_ids"]);
    }

    #[test]
    fn more_than_a_hundred_ids_is_refused() {
        let err = MessageIds::try_from(ids(MAX_BATCH_IDS + 1)).unwrap_err();
        assert_eq!(fields(&err), ["message_ids"]);
    }

    #[test]
    fn a_blank_id_is_refused_by_its_position() {
        let req = BatchGetMessagesRequest { message_ids: vec!["a".into(), " ".into(), "c".into()] };
        let err = MessageIds::try_from(req).unwrap_err();
        assert_eq!(fields(&err), ["message_ids[1]"]);
    }

    #[test]
    fn a_repeated_id_is_looked_up_once() {
        let req = BatchGetMessagesRequest { message_ids: vec!["b".into(), "a".into(), "b".into()] };
        let parsed = MessageIds::try_from(req).expect("accepted");
        assert_eq!(parsed.distinct(), ["b", "a"]);
        assert_eq!(parsed.as_slice(), ["b", "a", "b"]);
    }

    fn resend_request() -> ResendMessageRequest {
        ResendMessageRequest {
            message_id: "0190-original".into(),
            idempotency_key: "contact-center:resend:1".into(),
            ..Default::default()
        }
    }

    fn original() -> Original {
        Original {
            id: "0190-original".into(),
            fiscal_code: "RSSMRA85T10A562S".into(),
            channel: Channel::Sms,
            address: "+393331234567".into(),
            template: "PIN_FIRST_HALF".into(),
            params: BTreeMap::from([("name".into(), "Mario".into())]),
            secrets: Secrets::Kept(BTreeMap::from([("pin_half".into(), "ABCDEFGH".into())])),
        }
    }

    #[test]
    fn a_resend_without_channel_or_address_keeps_the_originals() {
        let resend = Resend::try_from(resend_request()).expect("valid");
        assert_eq!(resend.channel, None);
        assert_eq!(resend.address, None);
        let copy = resend.copy_of(original()).expect("copied");
        assert_eq!(copy.channel, Channel::Sms);
        assert_eq!(copy.address, "+393331234567");
        assert_eq!(copy.idempotency_key, "contact-center:resend:1");
    }

    #[test]
    fn a_resend_copies_citizen_template_and_every_parameter_secrets_included() {
        let copy =
            Resend::try_from(resend_request()).expect("valid").copy_of(original()).expect("copied");
        assert_eq!(copy.fiscal_code, "RSSMRA85T10A562S");
        assert_eq!(copy.template, "PIN_FIRST_HALF");
        assert_eq!(copy.params["name"], "Mario");
        assert_eq!(copy.secret_params["pin_half"], "ABCDEFGH");
    }

    #[test]
    fn a_resend_goes_to_the_corrected_address_on_the_requested_channel() {
        let mut req = resend_request();
        req.channel = Channel::Email as i32;
        req.address = " mario.rossi@example.it ".into();
        let copy = Resend::try_from(req).expect("valid").copy_of(original()).expect("copied");
        assert_eq!(copy.channel, Channel::Email);
        assert_eq!(copy.address, "mario.rossi@example.it");
    }

    #[test]
    fn changing_the_channel_without_a_new_address_is_refused() {
        let mut req = resend_request();
        req.channel = Channel::Pec as i32;
        let err = Resend::try_from(req).expect("valid").copy_of(original()).unwrap_err();
        let NotifyError::Invalid(violations) = err else {
            panic!("expected a field violation, got {err:?}");
        };
        assert_eq!(fields(&violations), ["address"]);
    }

    #[test]
    fn the_same_channel_again_needs_no_new_address() {
        let mut req = resend_request();
        req.channel = Channel::Sms as i32;
        let copy = Resend::try_from(req).expect("valid").copy_of(original()).expect("copied");
        assert_eq!(copy.address, "+393331234567");
    }

    #[test]
    fn a_message_whose_secrets_are_purged_cannot_be_resent() {
        let mut purged = original();
        purged.secrets = Secrets::Purged;
        let err = Resend::try_from(resend_request()).expect("valid").copy_of(purged).unwrap_err();
        assert!(matches!(err, NotifyError::SecretsPurged), "{err:?}");
    }

    #[test]
    fn a_message_that_never_had_secrets_can_be_resent() {
        let mut plain = original();
        plain.secrets = Secrets::Kept(BTreeMap::new());
        let copy =
            Resend::try_from(resend_request()).expect("valid").copy_of(plain).expect("copied");
        assert!(copy.secret_params.is_empty());
    }

    #[test]
    fn a_resend_needs_a_message_id_and_an_idempotency_key() {
        let err = Resend::try_from(ResendMessageRequest::default()).unwrap_err();
        assert_eq!(fields(&err), ["message_id", "idempotency_key"]);
    }

    #[test]
    fn an_overlong_idempotency_key_is_refused() {
        let mut req = resend_request();
        req.idempotency_key = "k".repeat(201);
        let err = Resend::try_from(req).unwrap_err();
        assert_eq!(fields(&err), ["idempotency_key"]);
    }

    #[test]
    fn an_unknown_channel_number_is_refused() {
        let mut req = resend_request();
        req.channel = 42;
        let err = Resend::try_from(req).unwrap_err();
        assert_eq!(fields(&err), ["channel"]);
    }

    #[test]
    fn stored_channel_names_read_back_as_channels() {
        for channel in [Channel::Sms, Channel::Email, Channel::Pec, Channel::Post] {
            assert_eq!(channel_from_name(channel_name(channel)), Some(channel));
        }
        assert_eq!(channel_from_name("UNSPECIFIED"), None);
        assert_eq!(channel_from_name("FAX"), None);
    }

    #[test]
    fn resend_debug_output_hides_the_address_and_secrets() {
        let mut req = resend_request();
        req.channel = Channel::Email as i32;
        req.address = "mario.rossi@example.it".into();
        let resend = Resend::try_from(req).expect("valid");
        assert!(!format!("{resend:?}").contains("mario.rossi"));
        let shown = format!("{:?}", original());
        assert!(!shown.contains("+39333"));
        assert!(!shown.contains("ABCDEFGH"));
    }
}
