//! A content-addressed store for uploaded files (identity documents, signed forms): each blob is
//! named by the lowercase hex SHA-256 of its bytes, so storing the same file twice keeps one copy
//! and a name can never point at different content.
//!
//! What a service accepts is decided while the bytes stream in, by [`BlobWriter`]: a byte limit,
//! and a type recognised by the content's first bytes (PDF, JPEG, PNG), never by a file name.
//! Bytes go straight to the backend chunk by chunk; no blob is ever held whole in memory. An
//! upload that fails, or whose writer is dropped because the client hung up (tonic drops the
//! handler's future), leaves nothing behind.
//!
//! [`BlobStore`] is the seam where an object store can replace [`FsBlobs`], the filesystem
//! implementation: blobs under `<root>/<first 2 hex>/<digest>`, uploads staged in `<root>/tmp/`.

use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// How long a temp file may go unwritten before [`FsBlobs::open`] takes it for a crash's leftover.
/// Not zero: services may share a data directory, and another process's upload in progress is
/// written to with every chunk.
pub const STALE_TEMP: Duration = Duration::from_secs(3600);

/// How many leading bytes decide a blob's [`Kind`]: the longest signature (PNG's).
const SNIFF_LEN: usize = 8;

const SIGNATURES: [(&[u8], Kind); 3] = [
    (b"%PDF-", Kind::Pdf),
    (&[0xFF, 0xD8, 0xFF], Kind::Jpeg),
    (&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A], Kind::Png),
];

/// The types of file accepted, as recognised by their content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Pdf,
    Jpeg,
    Png,
}

impl Kind {
    pub fn mime(self) -> &'static str {
        match self {
            Kind::Pdf => "application/pdf",
            Kind::Jpeg => "image/jpeg",
            Kind::Png => "image/png",
        }
    }

    /// The kind `head` (a blob's first bytes) starts with: `None` while `head` is still a prefix
    /// of some signature, so more bytes could decide either way.
    fn sniff(head: &[u8]) -> Option<Result<Kind, BlobError>> {
        let mut undecided = false;
        for (magic, kind) in SIGNATURES {
            if head.starts_with(magic) {
                return Some(Ok(kind));
            }
            undecided |= magic.starts_with(head);
        }
        (!undecided).then_some(Err(BlobError::UnacceptedType))
    }
}

/// A blob once stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Lowercase hex SHA-256 of the content: the blob's name.
    pub digest: String,
    pub size: u64,
    pub kind: Kind,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("the file is larger than the {limit} bytes allowed")]
    TooLarge { limit: u64 },
    #[error("the file is not a PDF, JPEG or PNG")]
    UnacceptedType,
    /// Also the answer to a digest that is not 64 lowercase hex characters: such a name cannot
    /// exist, and it must never reach a path.
    #[error("no such blob")]
    NotFound,
    #[error("blob storage: {0}")]
    Io(#[from] std::io::Error),
}

/// A stored blob's content, to be served in chunks (e.g. through `tokio_util::io::ReaderStream`).
pub type BlobReader = Box<dyn AsyncRead + Send + Unpin>;

/// Where blobs live. Object-safe, so a service can hold an `Arc<dyn BlobStore>` chosen by its
/// configuration.
pub trait BlobStore: Send + Sync {
    /// Starts an upload of at most `limit` bytes.
    fn begin(&self, limit: u64) -> BoxFuture<'_, Result<BlobWriter, BlobError>>;

    /// The content of blob `digest`.
    fn open<'a>(&'a self, digest: &'a str) -> BoxFuture<'a, Result<BlobReader, BlobError>>;

    /// Whether blob `digest` is stored (never, for a digest that is not valid).
    fn exists<'a>(&'a self, digest: &'a str) -> BoxFuture<'a, Result<bool, BlobError>>;

    /// Where blob `digest` is on this machine's filesystem, when the store keeps it there (so
    /// that another process can be handed the file itself).
    fn local_path(&self, _digest: &str) -> Option<PathBuf> {
        None
    }

    /// Removes blob `digest`, if it is there.
    fn remove<'a>(&'a self, digest: &'a str) -> BoxFuture<'a, Result<(), BlobError>>;

    /// The first `max` bytes of blob `digest` (all of it when shorter), for small checks.
    fn read_prefix<'a>(
        &'a self,
        digest: &'a str,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<u8>, BlobError>> {
        Box::pin(async move {
            let reader = self.open(digest).await?;
            let mut prefix = Vec::new();
            reader.take(max as u64).read_to_end(&mut prefix).await?;
            Ok(prefix)
        })
    }
}

/// The backend's half of an upload: it keeps the bytes [`BlobWriter`] has accepted. Dropping a
/// sink without committing it must discard what it holds.
pub trait BlobSink: Send {
    fn write<'a>(&'a mut self, chunk: &'a [u8]) -> BoxFuture<'a, Result<(), BlobError>>;

    /// Makes what was written durable as blob `digest`; when that blob already exists, the same
    /// content is simply discarded.
    fn commit(self: Box<Self>, digest: String) -> BoxFuture<'static, Result<(), BlobError>>;
}

/// One upload in progress: enforces the limit and the accepted types as chunks arrive, and hashes
/// them on the way to the backend.
pub struct BlobWriter {
    /// `None` once the upload has failed: what was written is already discarded.
    sink: Option<Box<dyn BlobSink>>,
    limit: u64,
    size: u64,
    hasher: Sha256,
    head: Vec<u8>,
    kind: Option<Kind>,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("limit", &self.limit)
            .field("size", &self.size)
            .field("kind", &self.kind)
            .field("failed", &self.sink.is_none())
            .finish_non_exhaustive()
    }
}

impl BlobWriter {
    /// An upload of at most `limit` bytes into `sink` (for implementations of [`BlobStore`]).
    pub fn new(sink: Box<dyn BlobSink>, limit: u64) -> Self {
        Self {
            sink: Some(sink),
            limit,
            size: 0,
            hasher: Sha256::new(),
            head: Vec::with_capacity(SNIFF_LEN),
            kind: None,
        }
    }

    /// Bytes accepted so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The next chunk. On an error the upload is over and what it wrote is already gone, so a
    /// caller that keeps the writer around a while (to answer the client) leaves nothing behind.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        let Some(sink) = self.sink.as_mut() else {
            return Err(failed_before());
        };
        if self.size.saturating_add(chunk.len() as u64) > self.limit {
            return Err(self.fail(BlobError::TooLarge { limit: self.limit }));
        }
        if self.kind.is_none() {
            let take = (SNIFF_LEN - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
            match Kind::sniff(&self.head) {
                Some(Ok(kind)) => self.kind = Some(kind),
                Some(Err(e)) => return Err(self.fail(e)),
                None => {}
            }
        }
        if let Err(e) = sink.write(chunk).await {
            return Err(self.fail(e));
        }
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        Ok(())
    }

    /// Stores the blob, durably, once every chunk has been written.
    pub async fn finish(self) -> Result<Stored, BlobError> {
        self.seal()?.place().await
    }

    /// The upload, complete but not yet stored under its name: a caller that must record its
    /// claim to the name first (so that nothing deletes a file it is about to use) does so
    /// between `seal` and [`Sealed::place`]. Dropping it discards the bytes.
    pub fn seal(mut self) -> Result<Sealed, BlobError> {
        let Some(sink) = self.sink.take() else {
            return Err(failed_before());
        };
        // Shorter than every signature, or empty: nothing more will decide it.
        let Some(kind) = self.kind else {
            return Err(BlobError::UnacceptedType);
        };
        let digest = hex(&self.hasher.clone().finalize());
        Ok(Sealed { stored: Stored { digest, size: self.size, kind }, sink })
    }

    fn fail(&mut self, e: BlobError) -> BlobError {
        self.sink = None;
        e
    }
}

/// A complete upload waiting to be placed under its name.
pub struct Sealed {
    pub stored: Stored,
    sink: Box<dyn BlobSink>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed").field("stored", &self.stored).finish_non_exhaustive()
    }
}

impl Sealed {
    /// Stores the blob durably under its digest (or keeps the copy already there).
    pub async fn place(self) -> Result<Stored, BlobError> {
        self.sink.commit(self.stored.digest.clone()).await?;
        Ok(self.stored)
    }
}

fn failed_before() -> BlobError {
    BlobError::Io(std::io::Error::other("the upload has already failed"))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Whether `digest` can name a blob: exactly 64 lowercase hex characters, hence no separator, no
/// `..`, nothing a path could be made of.
pub fn is_valid_digest(digest: &str) -> bool {
    digest.len() == 64 && digest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Blobs in a directory of the filesystem (a service's `<data_dir>/blobs`).
#[derive(Clone, Debug)]
pub struct FsBlobs {
    root: PathBuf,
}

impl FsBlobs {
    /// The store rooted at `root`, created when absent. Temp files that a crash left behind
    /// (untouched for [`STALE_TEMP`]) are removed.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self, BlobError> {
        let blobs = Self { root: root.into() };
        tokio::fs::create_dir_all(blobs.tmp()).await?;
        let swept = blobs.sweep_temp(STALE_TEMP).await?;
        if swept > 0 {
            tracing::info!(swept, root = %blobs.root.display(), "removed abandoned uploads");
        }
        Ok(blobs)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes the temp files not written to for `older_than`; returns how many.
    pub async fn sweep_temp(&self, older_than: Duration) -> Result<usize, BlobError> {
        let tmp = self.tmp();
        let swept = tokio::task::spawn_blocking(move || sweep(&tmp, older_than))
            .await
            .map_err(std::io::Error::other)??;
        Ok(swept)
    }

    /// The digests of the blobs stored at least `older_than` ago: the candidates of a sweep of
    /// blobs nothing refers to (an upload that failed after one of its files was complete).
    pub async fn stored_before(&self, older_than: Duration) -> Result<Vec<String>, BlobError> {
        let root = self.root.clone();
        let listed = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<String>> {
            let now = SystemTime::now();
            let mut found = Vec::new();
            for shard in std::fs::read_dir(&root)? {
                let shard = shard?.path();
                if !shard.is_dir() || shard.file_name().is_some_and(|n| n == "tmp") {
                    continue;
                }
                for entry in std::fs::read_dir(&shard)? {
                    let entry = entry?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let age = entry
                        .metadata()
                        .ok()
                        .and_then(|m| m.modified().ok())
                        .and_then(|m| now.duration_since(m).ok());
                    if is_valid_digest(&name) && age.is_some_and(|a| a >= older_than) {
                        found.push(name);
                    }
                }
            }
            Ok(found)
        });
        Ok(listed.await.map_err(std::io::Error::other)??)
    }

    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn path(&self, digest: &str) -> Result<PathBuf, BlobError> {
        if !is_valid_digest(digest) {
            return Err(BlobError::NotFound);
        }
        Ok(self.root.join(&digest[..2]).join(digest))
    }
}

fn sweep(tmp: &Path, older_than: Duration) -> std::io::Result<usize> {
    let now = SystemTime::now();
    let mut swept = 0;
    for entry in std::fs::read_dir(tmp)? {
        let entry = entry?;
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            // Finished or discarded since it was listed.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // A clock set back makes every file look fresh: kept, and swept at a later start.
        let idle = meta.modified().ok().and_then(|m| now.duration_since(m).ok());
        if meta.is_file() && idle.is_some_and(|idle| idle >= older_than) {
            remove_if_present(&entry.path())?;
            swept += 1;
        }
    }
    Ok(swept)
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl BlobStore for FsBlobs {
    fn begin(&self, limit: u64) -> BoxFuture<'_, Result<BlobWriter, BlobError>> {
        Box::pin(async move {
            let temp = self.tmp().join(format!("{:016x}.part", rand::random::<u64>()));
            let mut options = tokio::fs::OpenOptions::new();
            // `create_new`: two uploads can never share a temp file, however the names fall.
            options.write(true).create_new(true);
            // Identity documents: readable by the service's own user only.
            #[cfg(unix)]
            options.mode(0o600);
            let file = options.open(&temp).await?;
            let sink = FsSink { file: Some(file), temp, root: self.root.clone() };
            Ok(BlobWriter::new(Box::new(sink), limit))
        })
    }

    fn open<'a>(&'a self, digest: &'a str) -> BoxFuture<'a, Result<BlobReader, BlobError>> {
        Box::pin(async move {
            match tokio::fs::File::open(self.path(digest)?).await {
                Ok(file) => Ok(Box::new(file) as BlobReader),
                Err(e) if e.kind() == ErrorKind::NotFound => Err(BlobError::NotFound),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn local_path(&self, digest: &str) -> Option<PathBuf> {
        self.path(digest).ok()
    }

    fn remove<'a>(&'a self, digest: &'a str) -> BoxFuture<'a, Result<(), BlobError>> {
        Box::pin(async move {
            let path = self.path(digest)?;
            tokio::task::spawn_blocking(move || remove_if_present(&path))
                .await
                .map_err(std::io::Error::other)??;
            Ok(())
        })
    }

    fn exists<'a>(&'a self, digest: &'a str) -> BoxFuture<'a, Result<bool, BlobError>> {
        Box::pin(async move {
            match self.path(digest) {
                Ok(path) => Ok(tokio::fs::try_exists(path).await?),
                Err(_) => Ok(false),
            }
        })
    }
}

/// An upload staged in `<root>/tmp/`, removed on drop unless it was moved into place.
struct FsSink {
    file: Option<tokio::fs::File>,
    temp: PathBuf,
    root: PathBuf,
}

impl BlobSink for FsSink {
    fn write<'a>(&'a mut self, chunk: &'a [u8]) -> BoxFuture<'a, Result<(), BlobError>> {
        Box::pin(async move {
            let file = self.file.as_mut().ok_or_else(failed_before)?;
            file.write_all(chunk).await?;
            Ok(())
        })
    }

    fn commit(mut self: Box<Self>, digest: String) -> BoxFuture<'static, Result<(), BlobError>> {
        Box::pin(async move {
            let mut file = self.file.take().ok_or_else(failed_before)?;
            // tokio reports a failed background write on the next flush, not on `write_all`.
            file.flush().await?;
            file.sync_all().await?;
            drop(file);
            let (temp, root) = (self.temp.clone(), self.root.clone());
            tokio::task::spawn_blocking(move || place(&temp, &root, &digest))
                .await
                .map_err(std::io::Error::other)??;
            // Dropping `self` now finds the temp file gone (renamed, or removed as a duplicate).
            Ok(())
        })
    }
}

impl Drop for FsSink {
    fn drop(&mut self) {
        // Runs when a client hangs up mid-upload, inside the dropped handler: synchronous, and
        // nobody left to tell of a failure but the log (the next start sweeps what stays).
        if let Err(e) = remove_if_present(&self.temp) {
            tracing::warn!(error = %e, temp = %self.temp.display(), "abandoned upload not removed");
        }
    }
}

/// Moves the synced `temp` into place as blob `digest`, durably: the rename is atomic, and the
/// directories holding the new names are synced too.
fn place(temp: &Path, root: &Path, digest: &str) -> std::io::Result<()> {
    let dir = root.join(&digest[..2]);
    match std::fs::create_dir(&dir) {
        Ok(()) => sync_dir(root)?,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let dest = dir.join(digest);
    if dest.try_exists()? {
        // Same name, same content: the copy already there will do.
        return remove_if_present(temp);
    }
    std::fs::rename(temp, &dest)?;
    sync_dir(&dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256_hex(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    /// Every file under `dir`, however deep.
    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                found.extend(files(&path));
            } else {
                found.push(path);
            }
        }
        found
    }

    fn pdf(len: usize) -> Vec<u8> {
        let mut content = b"%PDF-1.7\n".to_vec();
        content.extend((0..len).map(|i| (i % 251) as u8));
        content
    }

    async fn store() -> (tempfile::TempDir, FsBlobs) {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = FsBlobs::open(dir.path().join("blobs")).await.expect("open");
        (dir, blobs)
    }

    async fn upload(blobs: &FsBlobs, content: &[u8], chunk: usize) -> Result<Stored, BlobError> {
        let mut writer = blobs.begin(1 << 20).await?;
        for part in content.chunks(chunk) {
            writer.write(part).await?;
        }
        writer.finish().await
    }

    #[tokio::test]
    async fn a_pdf_in_chunks_round_trips_under_its_digest() {
        let (_dir, blobs) = store().await;
        let content = pdf(10_000);
        // Chunks of 2 bytes split the signature across three of them.
        let mut writer = blobs.begin(1 << 20).await.expect("begin");
        writer.write(&content[..2]).await.expect("chunk");
        writer.write(&content[2..4]).await.expect("chunk");
        for part in content[4..].chunks(777) {
            writer.write(part).await.expect("chunk");
        }
        let stored = writer.finish().await.expect("finish");
        assert_eq!(stored.digest, sha256_hex(&content));
        assert_eq!(stored.size, content.len() as u64);
        assert_eq!(stored.kind, Kind::Pdf);
        assert_eq!(stored.kind.mime(), "application/pdf");
        let path = blobs.root().join(&stored.digest[..2]).join(&stored.digest);
        assert_eq!(std::fs::read(path).expect("stored file"), content);

        assert!(blobs.exists(&stored.digest).await.expect("exists"));
        let mut read = Vec::new();
        blobs.open(&stored.digest).await.expect("open").read_to_end(&mut read).await.expect("read");
        assert_eq!(read, content);
        let prefix = blobs.read_prefix(&stored.digest, 5).await.expect("prefix");
        assert_eq!(prefix, b"%PDF-");
        assert!(files(&blobs.tmp()).is_empty());
    }

    #[tokio::test]
    async fn jpeg_and_png_are_recognised_even_one_byte_at_a_time() {
        let (_dir, blobs) = store().await;
        let jpeg = [0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F'];
        let png = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D];
        assert_eq!(upload(&blobs, &jpeg, 1).await.expect("jpeg").kind, Kind::Jpeg);
        let png = upload(&blobs, &png, 1).await.expect("png");
        assert_eq!((png.kind, png.kind.mime()), (Kind::Png, "image/png"));
    }

    #[tokio::test]
    async fn the_same_content_twice_is_one_file() {
        let (_dir, blobs) = store().await;
        let content = pdf(3_000);
        let first = upload(&blobs, &content, 1000).await.expect("first");
        let second = upload(&blobs, &content, 333).await.expect("second");
        assert_eq!(first, second);
        assert_eq!(files(blobs.root()).len(), 1);
    }

    #[tokio::test]
    async fn over_the_limit_is_refused_and_leaves_nothing() {
        let (_dir, blobs) = store().await;
        let content = pdf(2_000);
        let mut writer = blobs.begin(1_000).await.expect("begin");
        let mut refused = None;
        for part in content.chunks(300) {
            if let Err(e) = writer.write(part).await {
                refused = Some(e);
                break;
            }
        }
        assert!(matches!(refused, Some(BlobError::TooLarge { limit: 1_000 })), "{refused:?}");
        // Gone while the caller still holds the writer, not only once it drops it.
        assert!(files(blobs.root()).is_empty());
        assert!(writer.finish().await.is_err());
        assert!(files(blobs.root()).is_empty());
    }

    #[tokio::test]
    async fn exactly_the_limit_is_accepted() {
        let (_dir, blobs) = store().await;
        let content = pdf(991);
        let mut writer = blobs.begin(content.len() as u64).await.expect("begin");
        writer.write(&content).await.expect("write");
        assert_eq!(writer.finish().await.expect("finish").size, content.len() as u64);
    }

    #[tokio::test]
    async fn other_types_are_refused_and_leave_nothing() {
        let (_dir, blobs) = store().await;
        let zip = b"PK\x03\x04\x14\x00\x00\x00\x08\x00rest of the archive".as_slice();
        let text = b"just some text, saved as invoice.pdf".as_slice();
        // A prefix of the PDF signature that stops short.
        let short = b"%PD".as_slice();
        for (content, chunk) in [(zip, 3), (text, 100), (short, 1), (b"".as_slice(), 1)] {
            let refused = upload(&blobs, content, chunk).await;
            assert!(matches!(refused, Err(BlobError::UnacceptedType)), "{refused:?}");
            assert!(files(blobs.root()).is_empty());
        }
    }

    #[tokio::test]
    async fn an_unaccepted_type_is_refused_before_the_rest_arrives() {
        let (_dir, blobs) = store().await;
        let mut writer = blobs.begin(1 << 20).await.expect("begin");
        // Still a prefix of `%PDF-`: undecided.
        writer.write(b"%P").await.expect("undecided");
        let refused = writer.write(b"DX and the rest").await;
        assert!(matches!(refused, Err(BlobError::UnacceptedType)), "{refused:?}");
        assert!(files(blobs.root()).is_empty());
        assert!(writer.write(b"more").await.is_err());
    }

    #[tokio::test]
    async fn a_writer_dropped_mid_upload_leaves_nothing() {
        let (_dir, blobs) = store().await;
        let content = pdf(5_000);
        let mut writer = blobs.begin(1 << 20).await.expect("begin");
        writer.write(&content[..2_500]).await.expect("write");
        assert_eq!(files(&blobs.tmp()).len(), 1);
        drop(writer);
        assert!(files(blobs.root()).is_empty());
    }

    #[tokio::test]
    async fn an_invalid_digest_is_refused() {
        let (dir, blobs) = store().await;
        std::fs::write(dir.path().join("secret"), b"%PDF-not yours").expect("write");
        for digest in [
            "../../etc/passwd",
            "../secret",
            "",
            &"A".repeat(64),
            &format!("../{}", "a".repeat(61)),
            &"g".repeat(64),
        ] {
            assert!(matches!(blobs.open(digest).await, Err(BlobError::NotFound)), "{digest}");
            assert!(matches!(blobs.read_prefix(digest, 8).await, Err(BlobError::NotFound)));
            assert!(!blobs.exists(digest).await.expect("exists"));
        }
        let absent = "0".repeat(64);
        assert!(matches!(blobs.open(&absent).await, Err(BlobError::NotFound)));
        assert!(!blobs.exists(&absent).await.expect("exists"));
    }

    #[tokio::test]
    async fn stale_temp_files_are_swept_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("blobs");
        std::fs::create_dir_all(root.join("tmp")).expect("mkdir");
        let stale = root.join("tmp/0123456789abcdef.part");
        let fresh = root.join("tmp/fedcba9876543210.part");
        std::fs::write(&stale, b"%PDF-half").expect("write");
        std::fs::write(&fresh, b"%PDF-in progress").expect("write");
        let long_ago = SystemTime::now() - STALE_TEMP - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&stale)
            .and_then(|f| f.set_modified(long_ago))
            .expect("age");

        let blobs = FsBlobs::open(&root).await.expect("open");
        assert!(!stale.exists());
        // Another process's upload, still being written.
        assert!(fresh.exists());
        assert_eq!(blobs.sweep_temp(Duration::ZERO).await.expect("sweep"), 1);
        assert!(files(&root).is_empty());
    }
}
