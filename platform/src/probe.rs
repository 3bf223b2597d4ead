//! Reading a citizen's upload (a PDF, a JPEG or PNG scan) to learn what it really is, without
//! letting the file hurt the service that reads it.
//!
//! A 9 KB PDF can inflate to gigabytes, a 600 KB one can hold 5,000 pages, and an image header can
//! promise a 100,000-pixel square: parsing such files inside a service lets one upload take the
//! whole process's memory and CPU, and go on after the caller has gone. So a file is read by a
//! child process (`<program> file-probe`) that limits itself before it reads a byte — address
//! space, CPU seconds, no files written — and that the parent kills when the call ends or its
//! deadline passes (`kill_on_drop`). Inside the child, [`probe`] has its own budget too (pages,
//! objects, decompressed bytes, pixels), so an ordinary oversized file gets a clear answer rather
//! than a killed process.
//!
//! [`probe`] is pure and also reads the service's own documents (the form it printed), which
//! need no child.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// The argument that makes a Sportello binary a probe child.
pub const PROBE_ARG: &str = "file-probe";

/// What one file may cost to read.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub max_input_bytes: u64,
    pub max_pages: usize,
    pub max_objects: usize,
    /// Decompressed page content, all pages together.
    pub max_content_bytes: u64,
    pub max_pixels: u64,
    pub min_side: u32,
    pub max_side: u32,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_input_bytes: 32 * 1024 * 1024,
            max_pages: 20,
            max_objects: 20_000,
            max_content_bytes: 8 * 1024 * 1024,
            max_pixels: 40_000_000,
            // An identity card scanned at 100 dpi is about 340 × 210 pixels.
            min_side: 200,
            max_side: 12_000,
        }
    }
}

/// What a file turned out to be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Probed {
    Pdf {
        pages: usize,
        /// The text a PDF reader extracts, page by page.
        text: String,
        /// SHA-256 of the decompressed content of every page, in order: two files with the same
        /// pages have the same digest however their bytes differ (trailing bytes, another
        /// cross-reference table).
        content_digest: String,
        /// Whether any page draws an image (a scan, a photographed signature).
        has_images: bool,
    },
    Image {
        format: ImageFormat,
        width: u32,
        height: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageFormat {
    Jpeg,
    Png,
}

/// Why a file could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Unreadable {
    #[error("not a PDF that can be read: {0}")]
    BadPdf(String),
    #[error("not an image that can be decoded: {0}")]
    BadImage(String),
    #[error("neither a PDF nor a JPEG or PNG image")]
    UnknownType,
    #[error("too costly to read: {0}")]
    OverBudget(String),
}

/// Reads `bytes` within `budget`.
pub fn probe(bytes: &[u8], budget: &Budget) -> Result<Probed, Unreadable> {
    if bytes.len() as u64 > budget.max_input_bytes {
        return Err(Unreadable::OverBudget(format!("more than {} bytes", budget.max_input_bytes)));
    }
    if bytes.starts_with(b"%PDF-") {
        probe_pdf(bytes, budget)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        probe_image(bytes, image::ImageFormat::Jpeg, budget)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        probe_image(bytes, image::ImageFormat::Png, budget)
    } else {
        Err(Unreadable::UnknownType)
    }
}

fn probe_image(
    bytes: &[u8],
    format: image::ImageFormat,
    budget: &Budget,
) -> Result<Probed, Unreadable> {
    let bad = |e: image::ImageError| Unreadable::BadImage(e.to_string());
    let reader = || image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    // The header first: a decoder is never asked to allocate what it promises.
    let (width, height) = reader().into_dimensions().map_err(bad)?;
    let pixels = u64::from(width) * u64::from(height);
    if width.min(height) < budget.min_side {
        return Err(Unreadable::BadImage(format!("{width}×{height} pixels is too small")));
    }
    if width.max(height) > budget.max_side || pixels > budget.max_pixels {
        return Err(Unreadable::OverBudget(format!("{width}×{height} pixels")));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(budget.max_side);
    limits.max_image_height = Some(budget.max_side);
    limits.max_alloc = Some(pixels.saturating_mul(8).max(16 << 20));
    let mut decoder = reader();
    decoder.limits(limits);
    // Decoding every pixel is what tells an image from junk behind an image's header.
    decoder.decode().map_err(bad)?;
    let format = match format {
        image::ImageFormat::Png => ImageFormat::Png,
        _ => ImageFormat::Jpeg,
    };
    Ok(Probed::Image { format, width, height })
}

fn probe_pdf(bytes: &[u8], budget: &Budget) -> Result<Probed, Unreadable> {
    let bad = |e: lopdf::Error| match e {
        lopdf::Error::Decompress(e) => Unreadable::OverBudget(e.to_string()),
        e => Unreadable::BadPdf(e.to_string()),
    };
    let limit = usize::try_from(budget.max_content_bytes).unwrap_or(usize::MAX);
    // Object and cross-reference streams are inflated while loading: bounded there too.
    let options = lopdf::LoadOptions { max_decompressed_size: Some(limit), ..Default::default() };
    let doc = lopdf::Document::load_mem_with_options(bytes, options).map_err(bad)?;
    if doc.objects.len() > budget.max_objects {
        return Err(Unreadable::OverBudget(format!("{} objects", doc.objects.len())));
    }
    let pages = doc.get_pages();
    if pages.is_empty() {
        return Err(Unreadable::BadPdf("no pages".into()));
    }
    if pages.len() > budget.max_pages {
        return Err(Unreadable::OverBudget(format!("{} pages", pages.len())));
    }
    let mut hasher = Sha256::new();
    let mut left = limit;
    let mut has_images = false;
    for page in pages.values() {
        let content = doc.get_page_content_with_limit(*page, left).map_err(bad)?;
        left -= content.len().min(left);
        hasher.update(&content);
        let (resources, _) = doc.get_page_resources(*page).map_err(bad)?;
        has_images |= resources
            .and_then(|r| r.get(b"XObject").ok())
            .and_then(|x| x.as_dict().ok())
            .is_some_and(|x| !x.is_empty());
    }
    let numbers: Vec<u32> = pages.keys().copied().collect();
    let mut text = doc.extract_text_with_limit(&numbers, limit).map_err(bad)?;
    // What the checks read (a request number) is near the top; the answer stays small.
    if let Some((cut, _)) = text.char_indices().nth(MAX_TEXT_CHARS) {
        text.truncate(cut);
    }
    let content_digest = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Probed::Pdf { pages: pages.len(), text, content_digest, has_images })
}

/// The text a PDF's answer carries at most.
const MAX_TEXT_CHARS: usize = 16 * 1024;
/// The most a child may answer: the answer is small by construction, so more is an error.
const MAX_ANSWER_BYTES: u64 = 256 * 1024;
/// The exit code of a child that could not set up (not the file's fault).
const SETUP_FAILED: i32 = 3;

/// What a probe child answers on its standard output.
type Answer = Result<Probed, Unreadable>;

/// The child's side: limits itself, reads the file from standard input, prints the answer as JSON.
/// Returns the process's exit code.
pub fn child_main() -> i32 {
    let budget = Budget::default();
    if let Err(e) = limit_self(&budget) {
        eprintln!("file-probe: cannot limit itself: {e}");
        return SETUP_FAILED;
    }
    let mut bytes = Vec::new();
    let read = std::io::stdin().lock().take(budget.max_input_bytes + 1).read_to_end(&mut bytes);
    if let Err(e) = read {
        eprintln!("file-probe: {e}");
        return 2;
    }
    let answer: Answer = probe(&bytes, &budget);
    match serde_json::to_string(&answer) {
        Ok(json) => {
            println!("{json}");
            0
        }
        Err(_) => 2,
    }
}

/// Address space, CPU time and file writes, limited before the file is read.
fn limit_self(budget: &Budget) -> nix::Result<()> {
    use nix::sys::resource::{setrlimit, Resource};
    let memory = CHILD_MEMORY.max(budget.max_input_bytes * 4);
    setrlimit(Resource::RLIMIT_AS, memory, memory)?;
    setrlimit(Resource::RLIMIT_CPU, CHILD_CPU_SECONDS, CHILD_CPU_SECONDS)?;
    setrlimit(Resource::RLIMIT_FSIZE, 0, 0)?;
    // An abort at the memory limit must not dump a citizen's document to disk.
    setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
    Ok(())
}

/// The child's address space: the decoded image (40 Mpx × 4 bytes) and the file, with room for
/// the allocator's reservations.
const CHILD_MEMORY: u64 = 768 * 1024 * 1024;
const CHILD_CPU_SECONDS: u64 = 4;

/// The parent's side: how to start a probe child, and how many may run at once.
#[derive(Clone, Debug)]
pub struct Prober {
    pub program: PathBuf,
    /// Wall-clock time a file may take to read.
    pub timeout: Duration,
    /// One permit per child that may run: readers beyond them would only share the same cores,
    /// and each may take its memory limit.
    pub permits: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Children reading at once, per process: one per core of the machine this was sized for.
pub const READERS: usize = 2;

/// Why a probe gave no answer about the file itself.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The file could not be read: its own fault.
    #[error(transparent)]
    Unreadable(#[from] Unreadable),
    /// The child could not run, or said nothing sensible: no fault of the file.
    #[error("the file reader did not run: {0}")]
    Unavailable(String),
    /// Every reader is busy: retry shortly.
    #[error("every file reader is busy")]
    Busy,
}

impl Prober {
    /// This very program, as the child.
    pub fn current_exe(timeout: Duration) -> std::io::Result<Self> {
        Ok(Self::new(std::env::current_exe()?, timeout))
    }

    pub fn new(program: PathBuf, timeout: Duration) -> Self {
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(READERS));
        Self { program, timeout, permits }
    }

    /// Reads what `file` yields in a child. Dropping the future kills the child.
    pub async fn probe(&self, file: impl AsyncRead + Send + Unpin) -> Result<Probed, ProbeError> {
        self.run(std::process::Stdio::piped(), Some(Box::new(file))).await
    }

    /// Reads `file` in a child that is handed the file itself as its standard input: not a byte
    /// of it passes through this process.
    pub async fn probe_file(&self, file: std::fs::File) -> Result<Probed, ProbeError> {
        self.run(std::process::Stdio::from(file), None).await
    }

    async fn run(
        &self,
        stdin: std::process::Stdio,
        feed: Option<Box<dyn AsyncRead + Send + Unpin + '_>>,
    ) -> Result<Probed, ProbeError> {
        let unavailable = |e: std::io::Error| ProbeError::Unavailable(e.to_string());
        // A short wait for a reader, then a refusal: a queue of readers is only a slower refusal.
        let permit =
            tokio::time::timeout(Duration::from_millis(500), self.permits.clone().acquire_owned())
                .await
                .map_err(|_| ProbeError::Busy)?
                .map_err(|_| ProbeError::Busy)?;
        let mut child = tokio::process::Command::new(&self.program)
            .arg(PROBE_ARG)
            // Nothing of the service's own: no environment (database URLs, keys), no files.
            .env_clear()
            .current_dir("/")
            // A small arena reservation, so that the address-space limit is spent on the file.
            .env("MIMALLOC_ARENA_RESERVE", "16384")
            .stdin(stdin)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(unavailable)?;
        let stdin = child.stdin.take();
        let mut stdout =
            child.stdout.take().ok_or_else(|| ProbeError::Unavailable("stdout".into()))?;
        let run = async move {
            let feed = async move {
                if let (Some(mut file), Some(mut stdin)) = (feed, stdin) {
                    // The child may stop reading early (a file too big): not our error.
                    let _ = tokio::io::copy(&mut file, &mut stdin).await;
                    let _ = stdin.shutdown().await;
                }
            };
            let mut out = Vec::new();
            let mut limited = (&mut stdout).take(MAX_ANSWER_BYTES);
            let read = limited.read_to_end(&mut out);
            let ((), read) = tokio::join!(feed, read);
            read.map_err(unavailable)?;
            let status = child.wait().await.map_err(unavailable)?;
            Ok::<_, ProbeError>((status, out))
        };
        let (status, out) = match tokio::time::timeout(self.timeout, run).await {
            Ok(done) => done?,
            Err(_) => {
                return Err(
                    Unreadable::OverBudget(format!("not read within {:?}", self.timeout)).into()
                )
            }
        };
        drop(permit);
        match serde_json::from_slice::<Answer>(&out) {
            Ok(answer) => Ok(answer?),
            Err(_) if status.code() == Some(SETUP_FAILED) => {
                Err(ProbeError::Unavailable("the reader could not limit itself".into()))
            }
            // Killed by its own limits (memory, CPU): the file asked for more than it may.
            Err(_) if !status.success() => {
                Err(Unreadable::OverBudget("the reader ran out of its limits".into()).into())
            }
            Err(e) => Err(ProbeError::Unavailable(format!("unexpected answer: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdf::{render, Block};

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut out = Vec::new();
        image::RgbImage::new(width, height)
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .expect("png");
        out
    }

    #[test]
    fn a_printed_form_reads_back_with_its_text_and_the_same_content_after_trailing_bytes() {
        let pdf = render(&[Block::body("Numero di richiesta: DISP.2020.0000042")]);
        let Ok(Probed::Pdf { text, content_digest, pages, .. }) = probe(&pdf, &Budget::default())
        else {
            panic!("a PDF")
        };
        assert_eq!(pages, 1);
        assert!(text.contains("DISP.2020.0000042"), "{text}");
        let mut appended = pdf.clone();
        appended.push(b'\n');
        let Ok(Probed::Pdf { content_digest: again, .. }) = probe(&appended, &Budget::default())
        else {
            panic!("still a PDF")
        };
        assert_eq!(content_digest, again);
    }

    #[test]
    fn html_after_a_pdf_header_and_junk_after_a_jpeg_header_are_unreadable() {
        let html = b"%PDF-1.7\n<html><body>not a pdf</body></html>".to_vec();
        assert!(matches!(probe(&html, &Budget::default()), Err(Unreadable::BadPdf(_))));
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0];
        jpeg.extend((0..1024).map(|i| (i * 7 % 251) as u8));
        assert!(matches!(probe(&jpeg, &Budget::default()), Err(Unreadable::BadImage(_))));
        assert_eq!(probe(b"GIF89a", &Budget::default()), Err(Unreadable::UnknownType));
    }

    #[test]
    fn an_image_decodes_and_is_measured_and_a_thumbnail_is_too_small() {
        let scan = probe(&png(400, 300), &Budget::default()).expect("an image");
        assert_eq!(scan, Probed::Image { format: ImageFormat::Png, width: 400, height: 300 });
        assert!(matches!(probe(&png(40, 30), &Budget::default()), Err(Unreadable::BadImage(_))));
    }

    #[test]
    fn a_content_stream_that_inflates_past_the_budget_is_over_budget() {
        let blocks: Vec<Block> = (0..400).map(|i| Block::body(format!("riga {i}"))).collect();
        let pdf = render(&blocks);
        let tight = Budget { max_content_bytes: 1_000, ..Budget::default() };
        assert!(matches!(probe(&pdf, &tight), Err(Unreadable::OverBudget(_))));
        let few_pages = Budget { max_pages: 2, ..Budget::default() };
        assert!(matches!(probe(&pdf, &few_pages), Err(Unreadable::OverBudget(_))));
    }
}
