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

/// A4, in PDF points.
const PAGE: (f32, f32) = (595.0, 842.0);
const MARGIN: f32 = 60.0;
const BODY_SIZE: f32 = 11.0;
const LEADING: f32 = 15.0;
/// Body lines are wrapped at this many characters (Helvetica at 11 pt across the text width).
const WRAP: usize = 88;

/// The letter as printed: institute header, addressee block, place and date, subject, body, and
/// the boxed part (a PIN half) in a frame of its own, as a PDF with the standard Helvetica and
/// Courier fonts (WinAnsi encoding covers Italian's accented letters).
pub fn render_pdf(message: &Outgoing<'_>, date: &str) -> Vec<u8> {
    use pdf_writer::{Content, Name, Pdf, Rect, Ref, Str};
    let content = message.content;
    let encode =
        |text: &str| lopdf::Encoding::SimpleEncoding(b"WinAnsiEncoding").string_to_bytes(text);
    let (regular, bold, mono) = (Name(b"F1"), Name(b"F2"), Name(b"F3"));

    // Lines of (font, size, x, text), laid out top to bottom; a page ends where the margin begins.
    let mut lines: Vec<(Name<'_>, f32, f32, String)> = vec![
        (bold, 13.0, MARGIN, "INPS".into()),
        (regular, 9.0, MARGIN, "Istituto Nazionale della Previdenza Sociale".into()),
        (regular, 9.0, MARGIN, "Direzione Generale — Via Ciro il Grande 21, 00144 Roma".into()),
        (regular, BODY_SIZE, MARGIN, String::new()),
    ];
    for line in message.address.split([',', '\n']).map(str::trim).filter(|l| !l.is_empty()) {
        lines.push((regular, BODY_SIZE, 330.0, line.to_owned()));
    }
    lines.push((regular, BODY_SIZE, MARGIN, String::new()));
    lines.push((regular, BODY_SIZE, MARGIN, format!("Roma, {date}")));
    lines.push((regular, BODY_SIZE, MARGIN, String::new()));
    lines.push((bold, BODY_SIZE, MARGIN, format!("Oggetto: {}", content.subject)));
    lines.push((regular, BODY_SIZE, MARGIN, String::new()));
    for paragraph in content.text.lines() {
        for line in wrap(paragraph, WRAP) {
            lines.push((regular, BODY_SIZE, MARGIN, line));
        }
    }

    let mut pages = vec![Content::new()];
    let mut y = PAGE.1 - MARGIN;
    for (font, size, x, text) in &lines {
        if y < MARGIN {
            pages.push(Content::new());
            y = PAGE.1 - MARGIN;
        }
        let page = pages.last_mut().expect("a page");
        page.begin_text()
            .set_font(*font, *size)
            .next_line(*x, y)
            .show(Str(&encode(text)))
            .end_text();
        y -= if *size > BODY_SIZE { LEADING + 4.0 } else { LEADING };
    }
    if let Some(boxed) = &content.boxed {
        let (size, height) = (18.0, 40.0);
        let width = boxed.chars().count() as f32 * size * 0.6 + 40.0;
        if y - height - LEADING < MARGIN {
            pages.push(Content::new());
            y = PAGE.1 - MARGIN;
        }
        let page = pages.last_mut().expect("a page");
        let bottom = y - height;
        page.set_line_width(1.5).rect(MARGIN, bottom, width, height).stroke();
        page.begin_text()
            .set_font(mono, size)
            .next_line(MARGIN + 20.0, bottom + 13.0)
            .show(Str(&encode(boxed)))
            .end_text();
    }

    let (catalog, tree) = (Ref::new(1), Ref::new(2));
    let fonts = [
        (regular, Ref::new(3), "Helvetica"),
        (bold, Ref::new(4), "Helvetica-Bold"),
        (mono, Ref::new(5), "Courier"),
    ];
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    let page_ids: Vec<Ref> = (0..pages.len()).map(|i| Ref::new(10 + 2 * i as i32)).collect();
    pdf.pages(tree).kids(page_ids.iter().copied()).count(pages.len() as i32);
    for (font, id, base) in fonts {
        let _ = font;
        pdf.type1_font(id)
            .base_font(Name(base.as_bytes()))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
    }
    for (i, page) in pages.into_iter().enumerate() {
        let (page_id, content_id) = (page_ids[i], Ref::new(11 + 2 * i as i32));
        let mut writer = pdf.page(page_id);
        writer.parent(tree).media_box(Rect::new(0.0, 0.0, PAGE.0, PAGE.1)).contents(content_id);
        let mut resources = writer.resources();
        let mut named = resources.fonts();
        for (font, id, _) in fonts {
            named.pair(font, id);
        }
        drop(named);
        drop(resources);
        drop(writer);
        pdf.stream(content_id, &page.finish());
    }
    pdf.finish()
}

/// `text` in lines of at most `width` characters, broken between words (a longer word stands
/// alone on its line).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("a line");
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(word.to_owned());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

/// The text of a spooled letter, page by page, as a PDF reader extracts it: for the print shop's
/// checks, and for tests and the benchmark, which read the PIN half back from the box.
pub fn text_of_pdf(pdf: &[u8]) -> anyhow::Result<String> {
    let document = lopdf::Document::load_mem(pdf)?;
    let pages: Vec<u32> = document.get_pages().keys().copied().collect();
    Ok(document.extract_text(&pages)?)
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
    fn words_wrap_between_words() {
        assert_eq!(wrap("uno due tre quattro", 7), ["uno due", "tre", "quattro"]);
        assert_eq!(wrap("", 7), [""]);
    }
}
