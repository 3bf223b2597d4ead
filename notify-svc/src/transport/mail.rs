//! Email and PEC: the message built once with lettre (a plain-text and an HTML part, and a
//! `Message-ID` derived from our message id, so that a retry after a crash is recognisably the
//! same message), then either handed to an SMTP relay or, on embedded defaults, written as an
//! `.eml` file under the data directory.

use super::{Accepted, Outgoing, SendError, Transport};
use futures::future::BoxFuture;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncTransport, Tokio1Executor};
use std::path::PathBuf;
use std::time::Duration;

/// Who the institute's messages come from, and the domain of their `Message-ID`s.
#[derive(Clone, Debug)]
pub struct Sender {
    pub from: Mailbox,
    pub message_id_domain: String,
}

impl Sender {
    /// The `Message-ID` of our message `id`: the same on every attempt.
    pub fn message_id(&self, id: &str) -> String {
        format!("<{id}@{}>", self.message_id_domain)
    }

    /// `message` as an email. A recipient that is not an email address is a permanent failure.
    pub fn build(&self, message: &Outgoing<'_>) -> Result<lettre::Message, SendError> {
        let to: Mailbox = message
            .address
            .parse()
            .map_err(|_| SendError::Permanent("the recipient is not an email address".into()))?;
        let content = message.content;
        lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(content.subject.clone())
            .message_id(Some(self.message_id(message.message_id)))
            .multipart(MultiPart::alternative_plain_html(
                content.text.clone(),
                content.html.clone(),
            ))
            // Only a malformed header can fail here; its value is not repeated.
            .map_err(|_| SendError::Permanent("the message could not be built".into()))
    }
}

/// Sends through an SMTP relay.
pub struct Smtp {
    sender: Sender,
    relay: AsyncSmtpTransport<Tokio1Executor>,
    /// Which relay this is in `Accepted.provider` (`smtp:email`, `smtp:pec`).
    provider: String,
}

impl Smtp {
    /// A relay at `url` (`smtp://host:port`, `smtps://user:pass@host:465`, or
    /// `smtp://host:587?tls=required`). With `require_tls` (PEC), a URL that would let the
    /// message travel in clear is refused.
    pub fn new(
        provider: &str,
        url: &str,
        sender: Sender,
        timeout: Duration,
        require_tls: bool,
    ) -> anyhow::Result<Self> {
        let tls = url.starts_with("smtps://") || url.contains("tls=required");
        if require_tls && !tls {
            anyhow::bail!("{provider}: the relay must use TLS (smtps:// or ?tls=required)");
        }
        let relay = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| anyhow::anyhow!("{provider}: bad relay URL: {e}"))?
            .timeout(Some(timeout))
            .build();
        Ok(Self { sender, relay, provider: provider.to_owned() })
    }
}

impl Transport for Smtp {
    fn send<'a>(&'a self, message: &'a Outgoing<'a>) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(async move {
            let email = self.sender.build(message)?;
            match self.relay.send(email).await {
                Ok(_) => Ok(Accepted {
                    provider: self.provider.clone(),
                    provider_message_id: Some(self.sender.message_id(message.message_id)),
                }),
                // A 5xx answer: the relay will never take this message (unknown mailbox…).
                Err(e) if e.is_permanent() => {
                    Err(SendError::Permanent(format!("relay refused: {}", smtp_code(&e))))
                }
                // 4xx, refused connections, time-outs: worth another attempt later.
                Err(e) => Err(SendError::Temporary(format!("relay: {}", smtp_code(&e)))),
            }
        })
    }
}

/// What to say of an SMTP error: its reply code, or its kind. The relay's text may quote the
/// recipient, so it is left out.
fn smtp_code(error: &lettre::transport::smtp::Error) -> String {
    match error.status() {
        Some(code) => format!("SMTP {code}"),
        None if error.is_timeout() => "timed out".into(),
        None => "connection failed".into(),
    }
}

/// The embedded default: each message as `<dir>/<message id>.eml`, where a user of
/// `sportello up` opens it with any mail client. A retry overwrites the same file.
pub struct MailSink {
    sender: Sender,
    dir: PathBuf,
    provider: String,
}

impl MailSink {
    pub fn new(provider: &str, dir: PathBuf, sender: Sender) -> anyhow::Result<Self> {
        sportello_platform::files::create_dir(&dir)?;
        Ok(Self { sender, dir, provider: provider.to_owned() })
    }
}

impl Transport for MailSink {
    fn send<'a>(&'a self, message: &'a Outgoing<'a>) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(async move {
            let email = self.sender.build(message)?;
            let path = self.dir.join(format!("{}.eml", message.message_id));
            super::write_atomically(&path, &email.formatted()).await?;
            Ok(Accepted {
                provider: self.provider.clone(),
                provider_message_id: Some(self.sender.message_id(message.message_id)),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::Rendered;
    use crate::testing::smtp::{Answer, SmtpReceiver};
    use sportello_proto::notify::v1::Channel;

    fn sender() -> Sender {
        Sender {
            from: "INPS <noreply@inps.example>".parse().expect("mailbox"),
            message_id_domain: "sportello.test".into(),
        }
    }

    fn content() -> Rendered {
        Rendered {
            subject: "INPS - Prima parte del PIN".into(),
            text: "La prima parte del suo PIN è AB12CD34.".into(),
            html: "<p>La prima parte del suo PIN è AB12CD34.</p>".into(),
            boxed: None,
        }
    }

    fn outgoing<'a>(address: &'a str, content: &'a Rendered) -> Outgoing<'a> {
        Outgoing {
            message_id: "0190-abc",
            channel: Channel::Email,
            address,
            fiscal_code: "RSSMRA85T10A562S",
            content,
        }
    }

    fn relay(receiver: &SmtpReceiver) -> Smtp {
        Smtp::new("smtp:email", &receiver.url(), sender(), Duration::from_secs(5), false)
            .expect("relay")
    }

    #[tokio::test]
    async fn an_email_reaches_the_relay_with_both_parts_and_a_message_id_of_our_own() {
        let receiver = SmtpReceiver::start().await;
        let content = content();
        let accepted = relay(&receiver)
            .send(&outgoing("mario.rossi@example.it", &content))
            .await
            .expect("sent");
        assert_eq!(accepted.provider_message_id.as_deref(), Some("<0190-abc@sportello.test>"));

        let received = receiver.received();
        assert_eq!(received.len(), 1);
        let email = &received[0];
        assert_eq!(email.rcpt_to, ["mario.rossi@example.it"]);
        assert_eq!(email.mail_from, "noreply@inps.example");
        assert_eq!(email.header("Message-ID").as_deref(), Some("<0190-abc@sportello.test>"));
        assert!(email.header("Subject").is_some());
        assert!(email.data.contains("Content-Type: text/plain"));
        assert!(email.data.contains("Content-Type: text/html"));
    }

    #[tokio::test]
    async fn a_retry_carries_the_same_message_id() {
        let receiver = SmtpReceiver::start().await;
        let content = content();
        let relay = relay(&receiver);
        for _ in 0..2 {
            relay.send(&outgoing("mario.rossi@example.it", &content)).await.expect("sent");
        }
        let ids: Vec<_> = receiver.received().iter().map(|m| m.header("Message-ID")).collect();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0], ids[1], "the receiver can drop the duplicate");
    }

    #[tokio::test]
    async fn an_unknown_mailbox_fails_for_good_and_a_busy_relay_for_now() {
        let receiver = SmtpReceiver::start().await;
        let content = content();
        let relay = relay(&receiver);
        receiver.answer(Answer::Refuse);
        let refused = relay.send(&outgoing("nobody@example.it", &content)).await;
        assert!(matches!(refused, Err(SendError::Permanent(_))), "{refused:?}");
        receiver.answer(Answer::Defer);
        let deferred = relay.send(&outgoing("mario.rossi@example.it", &content)).await;
        assert!(matches!(deferred, Err(SendError::Temporary(_))), "{deferred:?}");
        let Err(SendError::Temporary(reason)) = deferred else { unreachable!() };
        assert!(!reason.contains("mario"), "{reason}");
    }

    #[tokio::test]
    async fn a_relay_that_is_down_is_a_temporary_failure() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("smtp://{}", closed.local_addr().expect("address"));
        drop(closed);
        let relay =
            Smtp::new("smtp:email", &url, sender(), Duration::from_secs(2), false).expect("relay");
        let content = content();
        let down = relay.send(&outgoing("mario.rossi@example.it", &content)).await;
        assert!(matches!(down, Err(SendError::Temporary(_))), "{down:?}");
    }

    #[test]
    fn a_pec_relay_without_tls_is_refused_at_start() {
        let err =
            Smtp::new("smtp:pec", "smtp://pec.example:25", sender(), Duration::from_secs(5), true)
                .err()
                .expect("refused");
        assert!(err.to_string().contains("TLS"), "{err}");
        Smtp::new("smtp:pec", "smtps://pec.example:465", sender(), Duration::from_secs(5), true)
            .expect("implicit TLS is fine");
    }

    #[tokio::test]
    async fn a_phone_number_is_no_email_address() {
        let receiver = SmtpReceiver::start().await;
        let content = content();
        let sent = relay(&receiver).send(&outgoing("+39 333 1234567", &content)).await;
        assert!(matches!(sent, Err(SendError::Permanent(_))), "{sent:?}");
        assert!(receiver.received().is_empty());
    }

    #[tokio::test]
    async fn the_local_sink_keeps_one_eml_file_per_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = MailSink::new("sink:email", dir.path().join("mail"), sender()).expect("sink");
        let content = content();
        for _ in 0..2 {
            sink.send(&outgoing("mario.rossi@example.it", &content)).await.expect("written");
        }
        let files: Vec<_> = std::fs::read_dir(dir.path().join("mail"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        assert_eq!(files, ["0190-abc.eml"]);
        let eml = std::fs::read_to_string(dir.path().join("mail/0190-abc.eml")).expect("eml");
        assert!(eml.contains("Message-ID: <0190-abc@sportello.test>"), "{eml}");
        assert!(eml.contains("To: mario.rossi@example.it"), "{eml}");
    }
}
