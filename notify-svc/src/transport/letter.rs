//! Letters: each one rendered as a PDF into the print spool, with one manifest line per letter
//! for the print shop.

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

/// The letter as printed: institute header, addressee block, place and date, subject, body, and
/// the boxed part (a PIN half) in a frame of its own.
pub fn render_pdf(message: &Outgoing<'_>, date: &str) -> Vec<u8> {
    use sportello_platform::pdf::{letterhead, render, Block, Font, BODY_SIZE};
    let content = message.content;
    let mut blocks = letterhead();
    for line in message.address.split([',', '\n']).map(str::trim).filter(|l| !l.is_empty()) {
        blocks.push(Block::Line {
            font: Font::Regular,
            size: BODY_SIZE,
            x: 330.0,
            text: line.into(),
        });
    }
    blocks.push(Block::blank());
    blocks.push(Block::body(format!("Roma, {date}")));
    blocks.push(Block::blank());
    blocks.push(Block::bold(format!("Oggetto: {}", content.subject), BODY_SIZE));
    blocks.push(Block::blank());
    // Every line is wrapped to the page as it is rendered: the address block's too.
    blocks.extend(content.text.lines().map(Block::body));
    if let Some(boxed) = &content.boxed {
        blocks.push(Block::Boxed { text: boxed.clone(), height: 40.0, width: None });
    }
    render(&blocks)
}

/// The text of a spooled letter, page by page, as a PDF reader extracts it: for the print shop's
/// checks, and for tests and the benchmark, which read the PIN half back from the box.
pub fn text_of_pdf(pdf: &[u8]) -> anyhow::Result<String> {
    Ok(sportello_platform::pdf::text_of(pdf)?)
}

impl Transport for LetterSpool {
    fn send<'a>(&'a self, message: &'a Outgoing<'a>) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(async move {
            let now = chrono::Utc::now();
            let file = format!("{}.pdf", message.message_id);
            let letter = render_pdf(message, &now.format("%d/%m/%Y").to_string());
            super::write_atomically(&self.dir.join(&file), &letter).await?;
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
        let pdf = std::fs::read(dir.path().join("0190-letter.pdf")).expect("letter");
        assert!(pdf.starts_with(b"%PDF-"));
        let text = text_of_pdf(&pdf).expect("a readable PDF");
        for part in [
            "Istituto Nazionale della Previdenza Sociale",
            "Mario Rossi",
            "Via Roma 1",
            "00100 Roma RM",
            "Oggetto: Seconda parte del PIN INPS",
            "le inviamo la seconda parte del PIN.",
            "EF56GH78",
        ] {
            assert!(text.contains(part), "{part:?} not in {text}");
        }
        let manifest =
            std::fs::read_to_string(dir.path().join("manifest.jsonl")).expect("manifest");
        assert_eq!(manifest.lines().count(), 1);
    }

    #[test]
    fn a_long_letter_with_accents_runs_onto_a_second_page_and_reads_back() {
        let body = "È già pronta la più lunga lettera: perché sì. ".repeat(200);
        let content = Rendered {
            subject: "Comunicazione".into(),
            text: body,
            boxed: Some("ZX12CV34".into()),
            ..Default::default()
        };
        let letter = Outgoing {
            message_id: "0190-long",
            channel: Channel::Post,
            address: "Lucia Bianchi\nVia Po 2\n10100 Torino TO",
            fiscal_code: "BNCLCU80A41L219P",
            content: &content,
        };
        let text = text_of_pdf(&render_pdf(&letter, "01/04/2020")).expect("readable");
        assert!(text.contains("È già pronta la più lunga lettera: perché sì."), "{text}");
        assert!(text.contains("Lucia Bianchi") && text.contains("10100 Torino TO"), "{text}");
        assert!(text.contains("ZX12CV34"));
        let pages = lopdf::Document::load_mem(&render_pdf(&letter, "01/04/2020"))
            .expect("pdf")
            .get_pages()
            .len();
        assert!(pages >= 2, "{pages} pages");
    }

    #[test]
    fn a_letter_prints_names_and_addresses_in_any_european_script_as_written() {
        let long = "Via del Pellegrino della Santissima Annunziata dei Servi di Maria 123 scala B \
                    interno 456 00186 Roma (RM) Itali";
        assert_eq!(long.chars().count(), 111);
        let names =
            ["Jürgen Müller", "Çelik Núñez", "Łucja", "Ștefan Țurcanu", "Αικατερίνη Νικολάου"];
        let street = "улица Тверская 13 кв 268";
        let address = format!("{}\n{street}\n{long}", names.join("\n"));
        let content = Rendered {
            subject: "Seconda parte del PIN INPS".into(),
            text: format!("Gentile {}, le inviamo la seconda parte del PIN.", names[3]),
            boxed: Some("EF56GH78".into()),
            ..Default::default()
        };
        let letter = Outgoing {
            message_id: "0190-names",
            channel: Channel::Post,
            address: &address,
            fiscal_code: "RSSMRA85T10A562S",
            content: &content,
        };
        let text = text_of_pdf(&render_pdf(&letter, "01/04/2020")).expect("readable");
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for line in names.iter().chain([&street]) {
            assert!(lines.contains(line), "{line:?} not a line of {text}");
        }
        assert!(text.contains("Gentile Ștefan Țurcanu, le inviamo"), "{text}");
        // The long line is wrapped within the page: all its words, in order, on several lines.
        let words: Vec<&str> = text.split_whitespace().collect();
        let wanted: Vec<&str> = long.split_whitespace().collect();
        assert!(words.windows(wanted.len()).any(|w| w == wanted.as_slice()), "{text}");
        assert!(!lines.contains(&long), "wrapped: {text}");
    }
}
