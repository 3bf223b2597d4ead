//! SMS: through an SMS provider's HTTP API, with a second provider to fail over to; on embedded
//! defaults, each SMS is a JSON line in `<dir>/sms.jsonl`, where a user of `sportello up` reads
//! what the citizen's phone would show.

use super::{Accepted, Outgoing, SendError, Transport};
use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::Mutex;

/// An SMS provider's HTTP API: `POST <url>` with a bearer token and
/// `{"to", "from", "text", "reference"}`, answered with `{"id": "<provider message id>"}`.
/// `reference` is our message id: the provider's idempotency key, so a retry after a crash is
/// not a second SMS.
pub struct HttpSms {
    name: String,
    url: String,
    token: SecretString,
    from: String,
    client: reqwest::Client,
}

#[derive(serde::Serialize)]
struct SmsRequest<'a> {
    to: &'a str,
    from: &'a str,
    text: &'a str,
    reference: &'a str,
}

#[derive(serde::Deserialize)]
struct SmsResponse {
    id: String,
}

impl HttpSms {
    /// `name` says which provider took a message (`sms:primary`); each send is bounded by
    /// `timeout`.
    pub fn new(
        name: &str,
        url: &str,
        token: SecretString,
        from: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Self {
            name: name.to_owned(),
            url: url.to_owned(),
            token,
            from: from.to_owned(),
            client,
        })
    }
}

impl Transport for HttpSms {
    fn send<'a>(&'a self, message: &'a Outgoing<'a>) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(async move {
            let body = SmsRequest {
                to: message.address,
                from: &self.from,
                text: &message.content.text,
                reference: message.message_id,
            };
            let answer = self
                .client
                .post(&self.url)
                .bearer_auth(self.token.expose_secret())
                .json(&body)
                .send()
                .await
                // Time-outs and refused connections: the provider may be back in a moment. The
                // error's text names the URL only, but say just what kind it was.
                .map_err(|e| {
                    let kind = if e.is_timeout() { "timed out" } else { "unreachable" };
                    SendError::Temporary(format!("{}: {kind}", self.name))
                })?;
            let status = answer.status();
            if status.is_success() {
                let id = answer.json::<SmsResponse>().await.map_err(|_| {
                    SendError::Temporary(format!("{}: an answer without a message id", self.name))
                })?;
                return Ok(Accepted {
                    provider: self.name.clone(),
                    provider_message_id: Some(id.id),
                });
            }
            let reason = format!("{}: HTTP {}", self.name, status.as_u16());
            if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                Err(SendError::Temporary(reason))
            } else {
                // 4xx: this request will never be taken (an invalid number, a refused text).
                Err(SendError::Permanent(reason))
            }
        })
    }
}

/// The primary provider, and the secondary when the primary fails for now. A permanent failure
/// is not retried elsewhere: a number one provider calls invalid is invalid for the other too.
pub struct FailoverSms {
    primary: Box<dyn Transport>,
    secondary: Option<Box<dyn Transport>>,
}

impl FailoverSms {
    pub fn new(primary: Box<dyn Transport>, secondary: Option<Box<dyn Transport>>) -> Self {
        Self { primary, secondary }
    }
}

impl Transport for FailoverSms {
    fn send<'a>(&'a self, message: &'a Outgoing<'a>) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(async move {
            match (self.primary.send(message).await, &self.secondary) {
                (Err(SendError::Temporary(first)), Some(secondary)) => {
                    tracing::warn!(message_id = message.message_id, reason = %first, "SMS failing over");
                    secondary.send(message).await.map_err(|e| match e {
                        SendError::Temporary(second) => {
                            SendError::Temporary(format!("{first}; {second}"))
                        }
                        permanent => permanent,
                    })
                }
                (outcome, _) => outcome,
            }
        })
    }
}

/// The embedded default: one JSON line per SMS, once per message however often it is retried.
pub struct SmsSink {
    file: PathBuf,
    /// The message ids already written, read back at start, so a retry after a crash adds no line.
    written: Mutex<HashSet<String>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Line {
    message_id: String,
    to: String,
    text: String,
}

impl SmsSink {
    pub fn new(dir: PathBuf) -> anyhow::Result<Self> {
        sportello_platform::files::create_dir(&dir)?;
        let file = dir.join("sms.jsonl");
        // Made readable by an older version: the texts hold PIN halves.
        sportello_platform::files::restrict(&file)?;
        let written = match std::fs::read_to_string(&file) {
            Ok(text) => text
                .lines()
                .filter_map(|l| serde_json::from_str::<Line>(l).ok())
                .map(|l| l.message_id)
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashSet::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(Self { file, written: Mutex::new(written) })
    }
}

impl Transport for SmsSink {
    fn send<'a>(&'a self, message: &'a Outgoing<'a>) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(async move {
            let accepted = Accepted {
                provider: "sink:sms".into(),
                provider_message_id: Some(message.message_id.to_owned()),
            };
            // Held across the write, so two lines never interleave.
            let mut written = self.written.lock().await;
            if written.contains(message.message_id) {
                return Ok(accepted);
            }
            let line = Line {
                message_id: message.message_id.to_owned(),
                to: message.address.to_owned(),
                text: message.content.text.clone(),
            };
            let mut bytes = serde_json::to_vec(&line).expect("strings serialise");
            bytes.push(b'\n');
            super::append(&self.file, &bytes).await?;
            written.insert(line.message_id);
            Ok(accepted)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::Rendered;
    use crate::testing::sms::{FakeSmsProvider, Reply};
    use sportello_proto::notify::v1::Channel;

    fn content() -> Rendered {
        Rendered {
            text: "INPS: la prima parte del suo PIN è AB12CD34.".into(),
            ..Default::default()
        }
    }

    fn outgoing(content: &Rendered) -> Outgoing<'_> {
        Outgoing {
            message_id: "0190-sms",
            channel: Channel::Sms,
            address: "+393331234567",
            fiscal_code: "RSSMRA85T10A562S",
            content,
        }
    }

    fn provider(name: &str, fake: &FakeSmsProvider) -> Box<dyn Transport> {
        let token = SecretString::from("provider-token");
        Box::new(
            HttpSms::new(name, &fake.url(), token, "INPS", Duration::from_millis(500))
                .expect("client"),
        )
    }

    #[tokio::test]
    async fn the_provider_gets_the_text_our_reference_and_the_token_and_answers_its_id() {
        let fake = FakeSmsProvider::start().await;
        let content = content();
        let accepted =
            provider("sms:primary", &fake).send(&outgoing(&content)).await.expect("sent");
        assert_eq!(accepted.provider, "sms:primary");
        let received = fake.received();
        assert_eq!(received.len(), 1);
        assert_eq!(accepted.provider_message_id.as_deref(), Some(received[0].id.as_str()));
        assert_eq!(received[0].authorization, "Bearer provider-token");
        assert_eq!(received[0].body["to"], "+393331234567");
        assert_eq!(received[0].body["from"], "INPS");
        assert_eq!(received[0].body["reference"], "0190-sms");
        assert!(received[0].body["text"].as_str().expect("text").contains("AB12CD34"));
    }

    #[tokio::test]
    async fn a_4xx_is_permanent_and_a_5xx_a_429_or_a_time_out_temporary() {
        let fake = FakeSmsProvider::start().await;
        let content = content();
        let sms = provider("sms:primary", &fake);
        for (reply, temporary) in [
            (Reply::Status(400), false),
            (Reply::Status(429), true),
            (Reply::Status(503), true),
            (Reply::Hang, true),
        ] {
            fake.reply(reply);
            let outcome = sms.send(&outgoing(&content)).await;
            match outcome {
                Err(SendError::Temporary(reason)) if temporary => {
                    assert!(!reason.contains("+39"), "{reason}")
                }
                Err(SendError::Permanent(_)) if !temporary => {}
                other => panic!("{reply:?}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn when_the_primary_is_down_the_secondary_sends_and_says_so() {
        let primary = FakeSmsProvider::start().await;
        let secondary = FakeSmsProvider::start().await;
        primary.reply(Reply::Status(503));
        let sms = FailoverSms::new(
            provider("sms:primary", &primary),
            Some(provider("sms:secondary", &secondary)),
        );
        let content = content();
        let accepted = sms.send(&outgoing(&content)).await.expect("sent by the secondary");
        assert_eq!(accepted.provider, "sms:secondary");
        assert_eq!(secondary.received().len(), 1);

        primary.reply(Reply::Status(400));
        let refused = sms.send(&outgoing(&content)).await;
        assert!(matches!(refused, Err(SendError::Permanent(_))), "{refused:?}");
        assert_eq!(secondary.received().len(), 1, "an invalid number is not tried elsewhere");
    }

    #[tokio::test]
    async fn each_sms_is_one_line_even_when_retried_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let content = Rendered {
            text: "INPS: la prima parte del suo PIN è AB12CD34.".into(),
            ..Default::default()
        };
        let sms = |id| Outgoing {
            message_id: id,
            channel: Channel::Sms,
            address: "+393331234567",
            fiscal_code: "RSSMRA85T10A562S",
            content: &content,
        };
        let sink = SmsSink::new(dir.path().to_owned()).expect("sink");
        sink.send(&sms("m-1")).await.expect("written");
        sink.send(&sms("m-1")).await.expect("written once");
        let restarted = SmsSink::new(dir.path().to_owned()).expect("sink");
        restarted.send(&sms("m-1")).await.expect("still once");
        restarted.send(&sms("m-2")).await.expect("written");
        let text = std::fs::read_to_string(dir.path().join("sms.jsonl")).expect("file");
        let lines: Vec<Line> =
            text.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
        let ids: Vec<&str> = lines.iter().map(|l| l.message_id.as_str()).collect();
        assert_eq!(ids, ["m-1", "m-2"]);
        assert!(lines[0].text.contains("AB12CD34"));
    }
}
