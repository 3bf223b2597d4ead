//! SMS. On embedded defaults, each SMS is a JSON line in `<dir>/sms.jsonl`, where a user of
//! `sportello up` reads what the citizen's phone would show. (The HTTP provider API comes with
//! its own module.)

use super::{Accepted, Outgoing, SendError, Transport};
use futures::future::BoxFuture;
use std::collections::HashSet;
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

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
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("sms.jsonl");
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
            let failed = |e: std::io::Error| {
                SendError::Temporary(format!("writing to the sink: {}", e.kind()))
            };
            let mut file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.file)
                .await
                .map_err(failed)?;
            file.write_all(&bytes).await.map_err(failed)?;
            file.flush().await.map_err(failed)?;
            written.insert(line.message_id);
            Ok(accepted)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::Rendered;
    use sportello_proto::notify::v1::Channel;

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
