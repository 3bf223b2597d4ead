//! The `sportello.notify.v1.NotifyService` handlers: parse, store, answer.

use crate::domain::NewMessage;
use crate::error::NotifyError;
use crate::store::Store;
use sportello_proto::notify::v1::notify_service_server::NotifyService;
use sportello_proto::notify::v1::{EnqueueMessageRequest, EnqueueMessageResponse, MessageStatus};
use tonic::{Request, Response, Status};

#[derive(Clone, Debug)]
pub struct Notify {
    store: Store,
}

impl Notify {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

fn wire_status(stored: &str) -> MessageStatus {
    MessageStatus::from_str_name(&format!("MESSAGE_STATUS_{stored}"))
        .unwrap_or(MessageStatus::Unspecified)
}

#[tonic::async_trait]
impl NotifyService for Notify {
    async fn enqueue_message(
        &self,
        request: Request<EnqueueMessageRequest>,
    ) -> Result<Response<EnqueueMessageResponse>, Status> {
        let message = NewMessage::try_from(request.into_inner()).map_err(NotifyError::from)?;
        let stored = self
            .store
            .enqueue(&message)
            .await
            .map_err(NotifyError::from)?;
        tracing::info!(message_id = %stored.id, template = %message.template, "message accepted");
        Ok(Response::new(EnqueueMessageResponse {
            status: wire_status(&stored.status) as i32,
            message_id: stored.id,
        }))
    }
}
