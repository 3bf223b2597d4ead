//! One-column A4 documents as the institute prints them (letters, pre-filled forms): lines of
//! text top to bottom, and framed boxes (a PIN half, a signature), written with `pdf-writer` and
//! read back with `lopdf`.
//!
//! Names and addresses are printed as written, whatever their script: the text is set in DejaVu
//! Sans (bold and mono alike, `platform/fonts/`, with its licence), embedded as a subset of the
//! glyphs the document uses — a Type0 font over a CIDFontType2, glyph ids as CIDs — with a
//! ToUnicode map, so that a reader (and [`text_of`]) extracts exactly the text that was set.
//! Every line is wrapped to the page by its measured width; a character the font lacks prints
//! (and reads back) as `?`.

use pdf_writer::types::{CidFontType, FontFlags, SystemInfo, UnicodeCmap};
use pdf_writer::{Content, Name, Pdf, Rect, Ref, Str};
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// A4, in PDF points.
const PAGE: (f32, f32) = (595.0, 842.0);
pub const MARGIN: f32 = 60.0;
pub const BODY_SIZE: f32 = 11.0;
const LEADING: f32 = 15.0;
/// The width of the text between the margins, in points.
pub const TEXT_WIDTH: f32 = PAGE.0 - 2.0 * MARGIN;
/// The size of a boxed text (a PIN half).
const BOXED_SIZE: f32 = 18.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Font {
    Regular,
    Bold,
    Mono,
}

const FONTS: [Font; 3] = [Font::Regular, Font::Bold, Font::Mono];

/// A font file of the repository, parsed once.
struct FontFile {
    data: &'static [u8],
    face: ttf_parser::Face<'static>,
    name: &'static str,
}

fn parse(data: &'static [u8], name: &'static str) -> FontFile {
    let face = ttf_parser::Face::parse(data, 0).expect("the repository's fonts parse");
    FontFile { data, face, name }
}

static REGULAR: LazyLock<FontFile> =
    LazyLock::new(|| parse(include_bytes!("../fonts/DejaVuSans.ttf"), "DejaVuSans"));
static BOLD: LazyLock<FontFile> =
    LazyLock::new(|| parse(include_bytes!("../fonts/DejaVuSans-Bold.ttf"), "DejaVuSans-Bold"));
static MONO: LazyLock<FontFile> =
    LazyLock::new(|| parse(include_bytes!("../fonts/DejaVuSansMono.ttf"), "DejaVuSansMono"));

impl Font {
    fn name(self) -> Name<'static> {
        match self {
            Font::Regular => Name(b"F1"),
            Font::Bold => Name(b"F2"),
            Font::Mono => Name(b"F3"),
        }
    }

    fn file(self) -> &'static FontFile {
        match self {
            Font::Regular => &REGULAR,
            Font::Bold => &BOLD,
            Font::Mono => &MONO,
        }
    }

    /// The glyph `c` prints with, and the character it reads back as: `?` for a character the
    /// font lacks, so that what is read is what is seen.
    fn glyph(self, c: char) -> (u16, char) {
        let face = &self.file().face;
        match face.glyph_index(c) {
            Some(g) if !c.is_control() => (g.0, c),
            _ => (face.glyph_index('?').map_or(0, |g| g.0), '?'),
        }
    }

    /// The advance of glyph `gid` in thousandths of the font size (PDF glyph space).
    fn advance(self, gid: u16) -> f32 {
        let face = &self.file().face;
        let units = face.glyph_hor_advance(ttf_parser::GlyphId(gid)).unwrap_or(0);
        f32::from(units) * 1000.0 / f32::from(face.units_per_em())
    }

    /// How wide `text` prints at `size` points, in points.
    pub fn width(self, text: &str, size: f32) -> f32 {
        text.chars().map(|c| self.advance(self.glyph(c).0)).sum::<f32>() * size / 1000.0
    }
}

/// What goes down the page, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    /// A line of text at `x` points from the left edge, wrapped between words (or inside a word
    /// too long for a line) to end before the right margin.
    Line { font: Font, size: f32, x: f32, text: String },
    /// A frame `height` points tall holding `text` in large mono type (a PIN half), or empty
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

/// What a page shows, placed.
enum Mark {
    Text { font: Font, size: f32, x: f32, y: f32, text: String },
    Frame { x: f32, y: f32, width: f32, height: f32 },
}

/// The marks of `blocks`, page by page.
fn lay_out(blocks: &[Block]) -> Vec<Vec<Mark>> {
    let mut pages = vec![Vec::new()];
    let mut y = PAGE.1 - MARGIN;
    for block in blocks {
        match block {
            Block::Line { font, size, x, text } => {
                let room = (PAGE.0 - MARGIN - x).max(*size);
                for line in wrap(text, *font, *size, room) {
                    if y < MARGIN {
                        pages.push(Vec::new());
                        y = PAGE.1 - MARGIN;
                    }
                    let page = pages.last_mut().expect("a page");
                    page.push(Mark::Text { font: *font, size: *size, x: *x, y, text: line });
                    y -= if *size > BODY_SIZE { LEADING + 4.0 } else { LEADING };
                }
            }
            Block::Boxed { text, height, width } => {
                let fitted = Font::Mono.width(text, BOXED_SIZE) + 40.0;
                let width = width.unwrap_or(fitted).min(TEXT_WIDTH);
                if y - height - LEADING < MARGIN {
                    pages.push(Vec::new());
                    y = PAGE.1 - MARGIN;
                }
                let page = pages.last_mut().expect("a page");
                let bottom = y - height;
                page.push(Mark::Frame { x: MARGIN, y: bottom, width, height: *height });
                if !text.is_empty() {
                    let (x, y, size) = (MARGIN + 20.0, bottom + 13.0, BOXED_SIZE);
                    page.push(Mark::Text { font: Font::Mono, size, x, y, text: text.clone() });
                }
                y = bottom - LEADING;
            }
        }
    }
    pages
}

/// The glyphs a document uses of one font: their new ids in the subset, and what they read as.
struct Subset {
    remapper: subsetter::GlyphRemapper,
    reads_as: BTreeMap<u16, char>,
}

impl Subset {
    fn new() -> Self {
        Self { remapper: subsetter::GlyphRemapper::new(), reads_as: BTreeMap::new() }
    }

    /// `text` as the two-byte CIDs (new glyph ids) of the subset, adding its glyphs.
    fn encode(&mut self, font: Font, text: &str) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(text.len() * 2);
        for c in text.chars() {
            let (gid, reads_as) = font.glyph(c);
            let cid = self.remapper.remap(gid);
            self.reads_as.entry(cid).or_insert(reads_as);
            bytes.extend(cid.to_be_bytes());
        }
        bytes
    }

    /// Writes the font's objects from `first` on (five of them) and returns the Type0 font's id.
    fn write(&self, pdf: &mut Pdf, font: Font, first: i32) -> Ref {
        let [type0, cid, descriptor, file, cmap] = [0, 1, 2, 3, 4].map(|i| Ref::new(first + i));
        let source = font.file();
        let face = &source.face;
        let program =
            subsetter::subset(source.data, 0, &self.remapper).expect("DejaVu subsets cleanly");
        // A subset is named with a tag of six capitals that tells it from other subsets.
        let tag: String = {
            let mut h: u32 = 2_166_136_261;
            for gid in self.remapper.remapped_gids() {
                h = (h ^ u32::from(gid)).wrapping_mul(16_777_619);
            }
            (0..6).map(|i| char::from(b'A' + ((h >> (i * 5)) % 26) as u8)).collect()
        };
        let base = format!("{tag}+{}", source.name);
        let info =
            SystemInfo { registry: Str(b"Adobe"), ordering: Str(b"Identity"), supplement: 0 };
        pdf.type0_font(type0)
            .base_font(Name(base.as_bytes()))
            .encoding_predefined(Name(b"Identity-H"))
            .descendant_font(cid)
            .to_unicode(cmap);
        let widths: Vec<f32> = self.remapper.remapped_gids().map(|g| font.advance(g)).collect();
        let mut cid_font = pdf.cid_font(cid);
        cid_font
            .subtype(CidFontType::Type2)
            .base_font(Name(base.as_bytes()))
            .system_info(info)
            .font_descriptor(descriptor)
            .cid_to_gid_map_predefined(Name(b"Identity"));
        cid_font.widths().consecutive(0, widths);
        drop(cid_font);
        let scale = |v: i16| f32::from(v) * 1000.0 / f32::from(face.units_per_em());
        let b = face.global_bounding_box();
        let mut flags = FontFlags::NON_SYMBOLIC;
        if font == Font::Mono {
            flags |= FontFlags::FIXED_PITCH;
        }
        pdf.font_descriptor(descriptor)
            .name(Name(base.as_bytes()))
            .flags(flags)
            .bbox(Rect::new(scale(b.x_min), scale(b.y_min), scale(b.x_max), scale(b.y_max)))
            .italic_angle(0.0)
            .ascent(scale(face.ascender()))
            .descent(scale(face.descender()))
            .cap_height(scale(face.capital_height().unwrap_or(face.ascender())))
            .stem_v(if font == Font::Bold { 120.0 } else { 80.0 })
            .font_file2(file);
        pdf.stream(file, &program).pair(Name(b"Length1"), program.len() as i32);
        let mut map = UnicodeCmap::new(Name(b"Sportello-UCS"), info);
        for (cid, c) in &self.reads_as {
            map.pair(*cid, *c);
        }
        pdf.cmap(cmap, map.finish().as_slice());
        type0
    }
}

/// The document of `blocks`, as many pages as they take.
pub fn render(blocks: &[Block]) -> Vec<u8> {
    let mut subsets: BTreeMap<Font, Subset> = FONTS.iter().map(|f| (*f, Subset::new())).collect();
    let mut contents = Vec::new();
    for marks in lay_out(blocks) {
        let mut page = Content::new();
        for mark in marks {
            match mark {
                Mark::Text { font, size, x, y, text } => {
                    let cids = subsets.get_mut(&font).expect("every font").encode(font, &text);
                    page.begin_text()
                        .set_font(font.name(), size)
                        .next_line(x, y)
                        .show(Str(&cids))
                        .end_text();
                }
                Mark::Frame { x, y, width, height } => {
                    page.set_line_width(1.5).rect(x, y, width, height).stroke();
                }
            }
        }
        contents.push(page.finish());
    }

    let (catalog, tree) = (Ref::new(1), Ref::new(2));
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    let fonts: Vec<(Font, Ref)> = subsets
        .iter()
        .enumerate()
        .map(|(i, (font, subset))| (*font, subset.write(&mut pdf, *font, 3 + 5 * i as i32)))
        .collect();
    let first_page = 3 + 5 * FONTS.len() as i32;
    let page_ids: Vec<Ref> =
        (0..contents.len()).map(|i| Ref::new(first_page + 2 * i as i32)).collect();
    pdf.pages(tree).kids(page_ids.iter().copied()).count(contents.len() as i32);
    for (i, content) in contents.iter().enumerate() {
        let (page_id, content_id) = (page_ids[i], Ref::new(first_page + 1 + 2 * i as i32));
        let mut writer = pdf.page(page_id);
        writer.parent(tree).media_box(Rect::new(0.0, 0.0, PAGE.0, PAGE.1)).contents(content_id);
        let mut resources = writer.resources();
        let mut named = resources.fonts();
        for (font, id) in &fonts {
            named.pair(font.name(), *id);
        }
        drop(named);
        drop(resources);
        drop(writer);
        pdf.stream(content_id, content);
    }
    pdf.finish()
}

/// `text` in lines no wider than `width` points in `font` at `size`, broken between words; a
/// word wider than a line is broken where it must.
pub fn wrap(text: &str, font: Font, size: f32, width: f32) -> Vec<String> {
    let fits = |s: &str| font.width(s, size) <= width;
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("a line");
        let joined = if line.is_empty() { word.to_owned() } else { format!("{line} {word}") };
        if fits(&joined) {
            *line = joined;
            continue;
        }
        if !line.is_empty() {
            lines.push(String::new());
        }
        for c in word.chars() {
            let line = lines.last_mut().expect("a line");
            line.push(c);
            if !fits(line) && line.chars().count() > 1 {
                line.pop();
                lines.push(c.to_string());
            }
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
    fn words_wrap_by_their_printed_width_and_a_word_too_wide_is_broken() {
        let seven = Font::Regular.width("uno due", BODY_SIZE);
        assert_eq!(wrap("uno due tre", Font::Regular, BODY_SIZE, seven), ["uno due", "tre"]);
        let narrow = Font::Regular.width("abcde", BODY_SIZE);
        let lines = wrap("a supercalifragilistic b", Font::Regular, BODY_SIZE, narrow);
        assert_eq!(lines.concat().replace(' ', ""), "asupercalifragilisticb");
        assert!(lines.iter().all(|l| Font::Regular.width(l, BODY_SIZE) <= narrow), "{lines:?}");
        // "iiii" is narrower than "MMMM": widths, not characters, decide.
        assert!(Font::Regular.width("iiii", BODY_SIZE) < Font::Regular.width("MMMM", BODY_SIZE));
        assert_eq!(wrap("", Font::Regular, BODY_SIZE, narrow), [""]);
    }

    #[test]
    fn names_and_addresses_in_any_european_script_read_back_as_written_within_the_page() {
        let street = "улица Тверская, 13, кв. 268";
        let address = "Via del Pellegrino della Santissima Annunziata dei Servi di Maria 123, scala B, interno 456";
        let address = format!("{address}, 00186 Roma (RM) IT");
        assert_eq!(address.chars().count(), 111);
        let written = [
            "Jürgen Müller",
            "Çelik Núñez",
            "Łucja",
            "Ștefan Țurcanu",
            street,
            "Αικατερίνη Παπαδοπούλου",
        ];
        let mut blocks = letterhead();
        for (i, name) in written.iter().enumerate() {
            blocks.push(Block::Line {
                font: Font::Regular,
                size: BODY_SIZE,
                x: 330.0,
                text: (*name).into(),
            });
            blocks.push(Block::bold(format!("Gentile {name}"), BODY_SIZE + i as f32));
        }
        blocks.push(Block::body(address.clone()));
        blocks.push(Block::Line {
            font: Font::Regular,
            size: BODY_SIZE,
            x: 330.0,
            text: address.clone(),
        });
        blocks.push(Block::Boxed { text: "ŁŚ12ЖΩ34".into(), height: 40.0, width: None });
        let pdf = render(&blocks);
        let text = text_of(&pdf).expect("readable");
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for name in written {
            assert!(lines.contains(&name), "{name} in {text}");
            assert!(lines.contains(&format!("Gentile {name}").as_str()), "{name} in {text}");
        }
        assert!(text.contains("ŁŚ12ЖΩ34"), "{text}");
        // The address is wrapped: its words all there, in order, in lines within the page.
        let words: Vec<&str> = text.split_whitespace().collect();
        let address_words: Vec<&str> = address.split_whitespace().collect();
        assert!(
            words.windows(address_words.len()).any(|w| w == address_words.as_slice()),
            "{text}"
        );
        for mark in lay_out(&blocks).iter().flatten() {
            if let Mark::Text { font, size, x, text, .. } = mark {
                let right = x + font.width(text, *size);
                assert!(right <= PAGE.0 - MARGIN + 0.01, "{text:?} ends at {right}");
            }
        }
    }

    #[test]
    fn a_character_the_font_lacks_prints_and_reads_as_a_question_mark() {
        let text = text_of(&render(&[Block::body("Li 李")])).expect("readable");
        assert!(text.contains("Li ?"), "{text}");
    }

    #[test]
    fn the_same_document_renders_to_the_same_bytes() {
        let blocks = [Block::body("Łucja Kowalska"), Block::body("Mario Rossi")];
        assert_eq!(render(&blocks), render(&blocks));
    }
}
