//! One-column A4 documents as the institute prints them (letters, pre-filled forms): lines of
//! text top to bottom in the standard Helvetica and Courier fonts, and framed boxes (a PIN half,
//! a signature), written with `pdf-writer` and read back with `lopdf`. The standard fonts need
//! no embedding, and WinAnsi covers Italian's accented letters.

use pdf_writer::{Content, Name, Pdf, Rect, Ref, Str};

/// A4, in PDF points.
const PAGE: (f32, f32) = (595.0, 842.0);
pub const MARGIN: f32 = 60.0;
pub const BODY_SIZE: f32 = 11.0;
const LEADING: f32 = 15.0;
/// Body lines are wrapped at this many characters (Helvetica at 11 pt across the text width).
pub const WRAP: usize = 88;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Font {
    Regular,
    Bold,
    Mono,
}

impl Font {
    fn name(self) -> Name<'static> {
        match self {
            Font::Regular => Name(b"F1"),
            Font::Bold => Name(b"F2"),
            Font::Mono => Name(b"F3"),
        }
    }
}

/// What goes down the page, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    /// A line of text at `x` points from the left edge.
    Line { font: Font, size: f32, x: f32, text: String },
    /// A frame `height` points tall holding `text` in large Courier (a PIN half), or empty
    /// (where the citizen signs); `width` `None` fits the text.
    Boxed { text: String, height: f32, width: Option<f32> },
}

impl Block {
    /// A body line at the margin.
    pub fn body(text: impl Into<String>) -> Self {
        Block::Line { font: Font::Regular, size: BODY_SIZE, x: MARGIN, text: text.into() }
    }

    /// A bold line at the margin.
    pub fn bold(text: impl Into<String>, size: f32) -> Self {
        Block::Line { font: Font::Bold, size, x: MARGIN, text: text.into() }
    }

    /// A blank body line.
    pub fn blank() -> Self {
        Block::body("")
    }
}

/// The institute's letterhead, first on every document it prints.
pub fn letterhead() -> Vec<Block> {
    vec![
        Block::bold("INPS", 13.0),
        Block::Line {
            font: Font::Regular,
            size: 9.0,
            x: MARGIN,
            text: "Istituto Nazionale della Previdenza Sociale".into(),
        },
        Block::Line {
            font: Font::Regular,
            size: 9.0,
            x: MARGIN,
            text: "Direzione Generale — Via Ciro il Grande 21, 00144 Roma".into(),
        },
        Block::blank(),
    ]
}

/// The document of `blocks`, as many pages as they take.
pub fn render(blocks: &[Block]) -> Vec<u8> {
    let encode =
        |text: &str| lopdf::Encoding::SimpleEncoding(b"WinAnsiEncoding").string_to_bytes(text);
    let mut pages = vec![Content::new()];
    let mut y = PAGE.1 - MARGIN;
    for block in blocks {
        match block {
            Block::Line { font, size, x, text } => {
                if y < MARGIN {
                    pages.push(Content::new());
                    y = PAGE.1 - MARGIN;
                }
                let page = pages.last_mut().expect("a page");
                page.begin_text()
                    .set_font(font.name(), *size)
                    .next_line(*x, y)
                    .show(Str(&encode(text)))
                    .end_text();
                y -= if *size > BODY_SIZE { LEADING + 4.0 } else { LEADING };
            }
            Block::Boxed { text, height, width } => {
                let size = 18.0;
                let width = width.unwrap_or(text.chars().count() as f32 * size * 0.6 + 40.0);
                if y - height - LEADING < MARGIN {
                    pages.push(Content::new());
                    y = PAGE.1 - MARGIN;
                }
                let page = pages.last_mut().expect("a page");
                let bottom = y - height;
                page.set_line_width(1.5).rect(MARGIN, bottom, width, *height).stroke();
                if !text.is_empty() {
                    page.begin_text()
                        .set_font(Font::Mono.name(), size)
                        .next_line(MARGIN + 20.0, bottom + 13.0)
                        .show(Str(&encode(text)))
                        .end_text();
                }
                y = bottom - LEADING;
            }
        }
    }

    let (catalog, tree) = (Ref::new(1), Ref::new(2));
    let fonts = [
        (Font::Regular, Ref::new(3), "Helvetica"),
        (Font::Bold, Ref::new(4), "Helvetica-Bold"),
        (Font::Mono, Ref::new(5), "Courier"),
    ];
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    let page_ids: Vec<Ref> = (0..pages.len()).map(|i| Ref::new(10 + 2 * i as i32)).collect();
    pdf.pages(tree).kids(page_ids.iter().copied()).count(pages.len() as i32);
    for (_, id, base) in fonts {
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
            named.pair(font.name(), id);
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
pub fn wrap(text: &str, width: usize) -> Vec<String> {
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

/// The text of a PDF, page by page, as a PDF reader extracts it.
pub fn text_of(pdf: &[u8]) -> Result<String, lopdf::Error> {
    let document = lopdf::Document::load_mem(pdf)?;
    let pages: Vec<u32> = document.get_pages().keys().copied().collect();
    document.extract_text(&pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back_accents_and_boxes_included() {
        let mut blocks = letterhead();
        blocks.push(Block::body("Città: Forlì"));
        blocks.push(Block::Boxed { text: "AB12CD34".into(), height: 40.0, width: None });
        blocks.push(Block::Boxed { text: String::new(), height: 60.0, width: Some(250.0) });
        let text = text_of(&render(&blocks)).expect("readable");
        for expected in ["INPS", "Città: Forlì", "AB12CD34"] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
    }

    #[test]
    fn a_long_document_runs_onto_more_pages() {
        let blocks: Vec<Block> = (0..120).map(|i| Block::body(format!("riga {i}"))).collect();
        let document = lopdf::Document::load_mem(&render(&blocks)).expect("readable");
        assert!(document.get_pages().len() >= 3);
    }

    #[test]
    fn words_wrap_at_the_width_and_a_long_word_stands_alone() {
        assert_eq!(wrap("uno due tre", 7), ["uno due", "tre"]);
        assert_eq!(wrap("a supercalifragilistic b", 5), ["a", "supercalifragilistic", "b"]);
    }
}
