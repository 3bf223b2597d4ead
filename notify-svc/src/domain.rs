//! What a message is, checked: the rules that hold before anything is stored.

use sportello_platform::error::FieldViolations;
use sportello_proto::notify::v1::{Channel, EnqueueMessageRequest};
use std::collections::BTreeMap;

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

fn required(violations: &mut FieldViolations, field: &str, value: &str) -> String {
    let value = value.trim();
    if value.is_empty() {
        violations.add(field, "is required");
    }
    value.to_owned()
}

impl TryFrom<EnqueueMessageRequest> for NewMessage {
    type Error = FieldViolations;

    fn try_from(req: EnqueueMessageRequest) -> Result<Self, Self::Error> {
        let mut violations = FieldViolations::new();
        let idempotency_key = required(&mut violations, "idempotency_key", &req.idempotency_key);
        if idempotency_key.len() > 200 {
            violations.add("idempotency_key", "must be at most 200 characters");
        }
        let fiscal_code = required(&mut violations, "fiscal_code", &req.fiscal_code);
        let channel = match Channel::try_from(req.channel) {
            Ok(Channel::Unspecified) | Err(_) => {
                violations.add("channel", "must be SMS, EMAIL, PEC or POST");
                Channel::Unspecified
            }
            Ok(channel) => channel,
        };
        let address = required(&mut violations, "address", &req.address);
        let template = required(&mut violations, "template", &req.template);
        violations.into_result(NewMessage {
            idempotency_key,
            fiscal_code,
            channel,
            address,
            template,
            params: req.params.into_iter().collect(),
            secret_params: req.secret_params.into_iter().collect(),
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
        assert_eq!(
            fields,
            [
                "idempotency_key",
                "fiscal_code",
                "channel",
                "address",
                "template"
            ]
        );
    }

    #[test]
    fn debug_output_hides_address_and_secrets() {
        let mut req = valid();
        req.secret_params
            .insert("pin_half".into(), "ABCDEFGH".into());
        let shown = format!("{:?}", NewMessage::try_from(req).expect("valid"));
        assert!(!shown.contains("+39333"));
        assert!(!shown.contains("ABCDEFGH"));
    }
}
