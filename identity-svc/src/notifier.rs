//! identity-svc's side of notify-svc: the messages the PIN lifecycle sends, and their delivery.

use crate::domain::pin_request::{Channel, Contacts};
use crate::error::IdentityError;
use sportello_platform::client::TracedChannel;
use sportello_proto::identity::v1::DeliveryStatus;
use sportello_proto::notify::v1::notify_service_client::NotifyServiceClient;
use sportello_proto::notify::v1::{
    BatchGetMessagesRequest, Channel as NotifyChannel, EnqueueMessageRequest, Fallback, Message,
    MessageStatus, ResendMessageRequest,
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

/// Where a first PIN half goes on `channel`, and where it goes instead if that channel refuses it
/// for good: an SMS falls back to the email on file (SEND's courtesy channel), if there is one.
pub fn first_half_destinations(
    contacts: &Contacts,
    channel: Channel,
) -> (Destination, Option<Destination>) {
    let to =
        Destination::Channel(channel, contacts.address(channel).unwrap_or_default().to_owned());
    let fallback = match channel {
        Channel::Sms => contacts.email.clone().map(|a| Destination::Channel(Channel::Email, a)),
        Channel::Email | Channel::Pec => None,
    };
    (to, fallback)
}

/// The contacts on file a notice to the citizen goes to: every one that can receive text.
pub fn notice_destinations(contacts: &Contacts) -> Vec<Destination> {
    [Channel::Sms, Channel::Email, Channel::Pec]
        .into_iter()
        .filter_map(|ch| contacts.address(ch).map(|a| Destination::Channel(ch, a.to_owned())))
        .collect()
}

/// A message's delivery, and that of the message sent instead on the channel it fell back to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub status: DeliveryStatus,
    pub fallback: Option<(Channel, DeliveryStatus)>,
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

    /// Enqueues one message to `to.0`, falling back to `to.1`; `key` makes a retry of the same
    /// message send it once.
    pub async fn enqueue(
        &self,
        key: String,
        fiscal_code: &str,
        (to, fallback): (&Destination, Option<&Destination>),
        template: &str,
        secret_params: HashMap<String, String>,
    ) -> Result<String, IdentityError> {
        let (channel, address) = to.wire();
        let fallback = fallback.map(Destination::wire).map(|(channel, address)| Fallback {
            channel: channel as i32,
            address: address.to_owned(),
        });
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
                fallback,
            })?)
            .await
            .map_err(failed)?;
        Ok(reply.into_inner().message_id)
    }

    /// The stored messages among `ids` (unknown ids are absent).
    async fn messages(&self, ids: Vec<String>) -> Result<HashMap<String, Message>, IdentityError> {
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
            out.extend(reply.into_inner().messages.into_iter().map(|m| (m.message_id.clone(), m)));
        }
        Ok(out)
    }

    /// The delivery of each message id (unknown ids are absent), with the delivery of the
    /// message sent instead where its channel refused it.
    pub async fn statuses(
        &self,
        ids: Vec<String>,
    ) -> Result<HashMap<String, Delivery>, IdentityError> {
        let messages = self.messages(ids).await?;
        let fallback_ids =
            messages.values().map(|m| m.fallback_message_id.clone()).filter(|id| !id.is_empty());
        let fallbacks = self.messages(fallback_ids.collect()).await?;
        Ok(messages
            .into_iter()
            .map(|(id, m)| {
                let fallback = fallbacks.get(&m.fallback_message_id).and_then(|f| {
                    let channel = match NotifyChannel::try_from(f.channel) {
                        Ok(NotifyChannel::Sms) => Channel::Sms,
                        Ok(NotifyChannel::Email) => Channel::Email,
                        Ok(NotifyChannel::Pec) => Channel::Pec,
                        _ => return None,
                    };
                    Some((channel, delivery(f.status)))
                });
                (id, Delivery { status: delivery(m.status), fallback })
            })
            .collect())
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
