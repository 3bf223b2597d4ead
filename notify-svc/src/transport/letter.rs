//! Letters: each one written into the print spool, with one manifest line per letter for the
//! print shop. (A text rendering of the letter for now; the PDF layout is the next step.)

use super::{Accepted, Outgoing, SendError, Transport};
use futures::future::BoxFuture;
use std::collections::HashSet;
use std::path::PathBuf;
use tokio::sync::Mutex;

pub struct LetterSpool {
    dir: PathBuf,
    /// The message ids already in the manifest, so a letter re-sent after a crash is listed once.
    listed: Mutex<HashSet<String>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ManifestLine {
    message_id: String,
    fiscal_code: String,
    file: String,
    created_at: String,
}

impl LetterSpool {
    pub fn new(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let listed = match std::fs::read_to_string(dir.join("manifest.jsonl")) {
            Ok(text) => text
                .lines()
                .filter_map(|l| serde_json::from_str::<ManifestLine>(l).ok())
                .map(|l| l.message_id)
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashSet::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(Self { dir, listed: Mutex::new(listed) })
    }
}

/// The letter as printed: header, addressee block, place and date, body, and the boxed part.
fn layout(message: &Outgoing<'_>, date: &str) -> String {
    let content = message.content;
    let mut letter = String::from("INPS — Istituto Nazionale della Previdenza Sociale\n\n");
    for line in message.address.split(',') {
        letter.push_str(line.trim());
        letter.push('\n');
    }
    letter
        .push_str(&format!("\nRoma, {date}\n\nOggetto: {}\n\n{}\n", content.subject, content.text));
    if let Some(boxed) = &content.boxed {
        let rule = "-".repeat(boxed.chars().count() + 4);
        letter.push_str(&format!("\n+{rule}+\n|  {boxed}  |\n+{rule}+\n"));
    }
    letter
}

impl Transport for LetterSpool {
    fn send<'a>(&'a self, message: &'a Outgoing<'a>) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(async move {
            let now = chrono::Utc::now();
            let file = format!("{}.txt", message.message_id);
            let letter = layout(message, &now.format("%d/%m/%Y").to_string());
            super::write_atomically(&self.dir.join(&file), letter.as_bytes()).await?;
            let accepted = Accepted {
                provider: "spool".into(),
                provider_message_id: Some(message.message_id.to_owned()),
            };
            let mut listed = self.listed.lock().await;
            if listed.contains(message.message_id) {
                return Ok(accepted);
            }
            let line = ManifestLine {
                message_id: message.message_id.to_owned(),
                fiscal_code: message.fiscal_code.to_owned(),
                file,
                created_at: now.to_rfc3339(),
            };
            let mut bytes = serde_json::to_vec(&line).expect("strings serialise");
            bytes.push(b'\n');
            super::append(&self.dir.join("manifest.jsonl"), &bytes).await?;
            listed.insert(line.message_id);
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
    async fn a_letter_is_spooled_once_with_its_pin_half_in_a_box() {
        let dir = tempfile::tempdir().expect("tempdir");
        let content = Rendered {
            subject: "Seconda parte del PIN INPS".into(),
            text: "Gentile utente, le inviamo la seconda parte del PIN.".into(),
            boxed: Some("EF56GH78".into()),
            ..Default::default()
        };
        let letter = Outgoing {
            message_id: "0190-letter",
            channel: Channel::Post,
            address: "Mario Rossi, Via Roma 1, 00100 Roma RM",
            fiscal_code: "RSSMRA85T10A562S",
            content: &content,
        };
        let spool = LetterSpool::new(dir.path().to_owned()).expect("spool");
        spool.send(&letter).await.expect("spooled");
        LetterSpool::new(dir.path().to_owned())
            .expect("restarted")
            .send(&letter)
            .await
            .expect("again");
        let text = std::fs::read_to_string(dir.path().join("0190-letter.txt")).expect("letter");
        assert!(text.contains("Via Roma 1\n00100 Roma RM"), "{text}");
        assert!(text.contains("|  EF56GH78  |"), "{text}");
        let manifest =
            std::fs::read_to_string(dir.path().join("manifest.jsonl")).expect("manifest");
        assert_eq!(manifest.lines().count(), 1);
    }
}
