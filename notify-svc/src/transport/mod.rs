//! Where messages leave the institute. Each channel (SMS, email, PEC, post) is reached through a
//! [`Transport`], chosen by configuration, so a provider can be swapped without touching dispatch.

pub mod letter;
pub mod mail;
pub mod sink_receipts;
pub mod sms;

use crate::templates::Rendered;
use futures::future::BoxFuture;
use sportello_proto::notify::v1::Channel;
use std::sync::Arc;

/// One message, rendered, on its way to one address.
pub struct Outgoing<'a> {
    /// The stored message id. Transports derive what makes a retry harmless from it: the email
    /// `Message-ID`, the SMS provider's idempotency key, the letter's file name.
    pub message_id: &'a str,
    pub channel: Channel,
    /// The full address (phone number, email, PEC or postal address). Never logged.
    pub address: &'a str,
    pub fiscal_code: &'a str,
    pub content: &'a Rendered,
}

// The address and content stay out of logs.
impl std::fmt::Debug for Outgoing<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("message_id", &self.message_id)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// What a transport answers once the message has left.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Which provider took it (`smtp`, `sms:primary`, `spool`, …).
    pub provider: String,
    /// The provider's own id for the message, which delivery receipts refer to.
    pub provider_message_id: Option<String>,
}

/// Why a send failed. The reason is shown to operators: it never holds the address or content.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying later (time-out, 5xx, connection refused, 4xx SMTP).
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// Retrying cannot help (invalid number, 5xx SMTP on the recipient, 4xx from an API).
    #[error("permanent failure: {0}")]
    Permanent(String),
}

/// One way out for messages of a channel.
pub trait Transport: Send + Sync + 'static {
    /// Sends `message`. Must be safe to call again for the same `message_id` after a crash: the
    /// receiver sees the same Message-ID / idempotency key and can drop the duplicate.
    fn send<'a>(&'a self, message: &'a Outgoing<'a>) -> BoxFuture<'a, Result<Accepted, SendError>>;
}

/// The transport of each channel.
#[derive(Clone)]
pub struct Transports {
    pub sms: Arc<dyn Transport>,
    pub email: Arc<dyn Transport>,
    pub pec: Arc<dyn Transport>,
    pub post: Arc<dyn Transport>,
}

impl std::fmt::Debug for Transports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transports").finish_non_exhaustive()
    }
}

impl Transports {
    /// The transport for `channel`; `None` for `CHANNEL_UNSPECIFIED`.
    pub fn for_channel(&self, channel: Channel) -> Option<&Arc<dyn Transport>> {
        match channel {
            Channel::Sms => Some(&self.sms),
            Channel::Email => Some(&self.email),
            Channel::Pec => Some(&self.pec),
            Channel::Post => Some(&self.post),
            Channel::Unspecified => None,
        }
    }
}

/// Writes `bytes` to `path` so that a reader never sees half a file, and a second write of the
/// same message replaces the first. A local disk that fails is worth retrying. Sinks hold PIN
/// halves: their files are the owner's alone (`sportello_platform::files`).
pub(crate) async fn write_atomically(
    path: &std::path::Path,
    bytes: &[u8],
) -> Result<(), SendError> {
    let failed =
        |e: std::io::Error| SendError::Temporary(format!("writing to the sink: {}", e.kind()));
    let partial = path.with_extension("partial");
    sportello_platform::files::write(&partial, bytes).await.map_err(failed)?;
    tokio::fs::rename(&partial, path).await.map_err(failed)
}

/// Appends `bytes` to `path` (a JSON-lines file of a local sink, created 0600).
pub(crate) async fn append(path: &std::path::Path, bytes: &[u8]) -> Result<(), SendError> {
    use tokio::io::AsyncWriteExt;
    let failed =
        |e: std::io::Error| SendError::Temporary(format!("writing to the sink: {}", e.kind()));
    let mut file = sportello_platform::files::async_options()
        .create(true)
        .append(true)
        .open(path)
        .await
        .map_err(failed)?;
    file.write_all(bytes).await.map_err(failed)?;
    file.flush().await.map_err(failed)
}

/// The transports the configuration asks for: relays and providers where configured, local
/// sinks under the data directory otherwise (said once at start, paths only); and the receipts
/// the SMS and email sinks will owe, for [`sink_receipts::report`].
pub fn build(config: &crate::Config) -> anyhow::Result<(Transports, Option<sink_receipts::Owing>)> {
    use secrecy::ExposeSecret;
    let (as_providers, owing) = sink_receipts::AsProviders::new(&config.sinks)?;
    let sender = mail::Sender {
        from: config.mail_from.parse().map_err(|e| anyhow::anyhow!("notify.mail_from: {e}"))?,
        message_id_domain: config.message_id_domain.clone(),
    };
    let outbox = config.outbox_dir();
    let timeout = config.dispatch.send_timeout;
    let email: Arc<dyn Transport> = match &config.email {
        Some(smtp) => Arc::new(mail::Smtp::new(
            "smtp:email",
            smtp.relay.expose_secret(),
            sender.clone(),
            timeout,
            false,
        )?),
        None => {
            tracing::info!(dir = %outbox.join("email").display(), "emails go to local .eml files");
            as_providers.wrap(mail::MailSink::new(
                "sink:email",
                outbox.join("email"),
                sender.clone(),
            )?)
        }
    };
    let pec: Arc<dyn Transport> = match &config.pec {
        Some(smtp) => Arc::new(mail::Smtp::new(
            "smtp:pec",
            smtp.relay.expose_secret(),
            sender.clone(),
            timeout,
            true,
        )?),
        None => {
            tracing::info!(dir = %outbox.join("pec").display(), "PEC messages go to local .eml files");
            Arc::new(mail::MailSink::new("sink:pec", outbox.join("pec"), sender)?)
        }
    };
    let sms: Arc<dyn Transport> = match &config.sms {
        Some(sms) => {
            let provider = |name: &str,
                            p: &crate::config::SmsProvider|
             -> anyhow::Result<Box<dyn Transport>> {
                Ok(Box::new(sms::HttpSms::new(
                    name,
                    &p.url,
                    p.token.clone(),
                    &sms.sender,
                    timeout,
                )?))
            };
            let secondary =
                sms.secondary.as_ref().map(|p| provider("sms:secondary", p)).transpose()?;
            Arc::new(sms::FailoverSms::new(provider("sms:primary", &sms.primary)?, secondary))
        }
        None => {
            tracing::info!(file = %outbox.join("sms.jsonl").display(), "SMS go to a local JSON-lines file");
            as_providers.wrap(sms::SmsSink::new(outbox.clone())?)
        }
    };
    tracing::info!(dir = %config.spool_dir().display(), "letters go to the print spool");
    let post: Arc<dyn Transport> = Arc::new(letter::LetterSpool::new(config.spool_dir())?);
    // Receipts owed only by sinks in use.
    let owing = owing.filter(|_| config.sms.is_none() || config.email.is_none());
    Ok((Transports { sms, email, pec, post }, owing))
}
