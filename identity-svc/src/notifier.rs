//! identity-svc's side of notify-svc: the messages the PIN lifecycle sends, and their delivery.

use crate::domain::pin_request::{Channel, Contacts};
use crate::error::IdentityError;
use sportello_platform::client::TracedChannel;
use sportello_proto::identity::v1::DeliveryStatus;
use sportello_proto::notify::v1::notify_service_client::NotifyServiceClient;
use sportello_proto::notify::v1::{
    BatchGetMessagesRequest, Channel as NotifyChannel, EnqueueMessageRequest, MessageStatus,
    ResendMessageRequest,
};
use std::collections::HashMap;

/// Where a message goes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Destination {
    Channel(Channel, String),
    /// A postal letter to this address block.
    Post(String),
}

impl Destination {
    fn wire(&self) -> (NotifyChannel, &str) {
        match self {
            Destination::Channel(Channel::Sms, a) => (NotifyChannel::Sms, a),
            Destination::Channel(Channel::Email, a) => (NotifyChannel::Email, a),
            Destination::Channel(Channel::Pec, a) => (NotifyChannel::Pec, a),
            Destination::Post(a) => (NotifyChannel::Post, a),
        }
    }
}

/// The contacts on file a notice to the citizen goes to: every one that can receive text.
pub fn notice_destinations(contacts: &Contacts) -> Vec<Destination> {
    [Channel::Sms, Channel::Email, Channel::Pec]
        .into_iter()
        .filter_map(|ch| contacts.address(ch).map(|a| Destination::Channel(ch, a.to_owned())))
        .collect()
}

#[derive(Clone, Debug)]
pub struct Notifier {
    client: NotifyServiceClient<TracedChannel>,
    signer: crate::keys::Signer,
}

fn failed(status: tonic::Status) -> IdentityError {
    IdentityError::Dependency { service: "notify", status }
}

impl Notifier {
    pub fn new(client: NotifyServiceClient<TracedChannel>, signer: crate::keys::Signer) -> Self {
        Self { client, signer }
    }

    /// `message` as identity-svc's own call: notify-svc's RPCs are for services only.
    fn as_service<T>(&self, message: T) -> Result<tonic::Request<T>, IdentityError> {
        let token = self
            .signer
            .service_token("identity-svc")
            .map_err(|e| IdentityError::Internal(e.to_string()))?;
        let mut request = tonic::Request::new(message);
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| IdentityError::Internal("a token is not a header value".into()))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }

    /// Enqueues one message; `key` makes a retry of the same message send it once.
    pub async fn enqueue(
        &self,
        key: String,
        fiscal_code: &str,
        to: &Destination,
        template: &str,
        secret_params: HashMap<String, String>,
    ) -> Result<String, IdentityError> {
        let (channel, address) = to.wire();
        let reply = self
            .client
            .clone()
            .enqueue_message(self.as_service(EnqueueMessageRequest {
                idempotency_key: key,
                fiscal_code: fiscal_code.to_owned(),
                channel: channel as i32,
                address: address.to_owned(),
                template: template.to_owned(),
                params: HashMap::new(),
                secret_params,
            })?)
            .await
            .map_err(failed)?;
        Ok(reply.into_inner().message_id)
    }

    /// The delivery status of each message id (unknown ids are absent).
    pub async fn statuses(
        &self,
        ids: Vec<String>,
    ) -> Result<HashMap<String, DeliveryStatus>, IdentityError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut out = HashMap::new();
        for chunk in ids.chunks(100) {
            let reply = self
                .client
                .clone()
                .batch_get_messages(
                    self.as_service(BatchGetMessagesRequest { message_ids: chunk.to_vec() })?,
                )
                .await
                .map_err(failed)?;
            for m in reply.into_inner().messages {
                out.insert(m.message_id, delivery(m.status));
            }
        }
        Ok(out)
    }

    /// Sends a stored message again (same secret), optionally elsewhere.
    pub async fn resend(
        &self,
        key: String,
        message_id: &str,
        to: Option<&Destination>,
    ) -> Result<String, IdentityError> {
        let (channel, address) =
            to.map(Destination::wire).unwrap_or((NotifyChannel::Unspecified, ""));
        let reply = self
            .client
            .clone()
            .resend_message(self.as_service(ResendMessageRequest {
                message_id: message_id.to_owned(),
                idempotency_key: key,
                channel: channel as i32,
                address: address.to_owned(),
            })?)
            .await;
        match reply {
            Ok(r) => Ok(r.into_inner().message_id),
            Err(s) if s.code() == tonic::Code::FailedPrecondition || s.code() == tonic::Code::NotFound => {
                Err(IdentityError::Precondition {
                    reason: "FIRST_HALF_NO_LONGER_AVAILABLE",
                    message: "the first half can no longer be re-sent: revoke the PIN and file a new request",
                })
            }
            Err(s) => Err(failed(s)),
        }
    }
}

/// notify-svc's status as identity's contract says it.
pub fn delivery(status: i32) -> DeliveryStatus {
    match MessageStatus::try_from(status) {
        Ok(MessageStatus::Queued) => DeliveryStatus::Queued,
        Ok(MessageStatus::Sent) => DeliveryStatus::Sent,
        Ok(MessageStatus::Delivered) => DeliveryStatus::Delivered,
        Ok(MessageStatus::Failed) => DeliveryStatus::Failed,
        _ => DeliveryStatus::Unspecified,
    }
}
