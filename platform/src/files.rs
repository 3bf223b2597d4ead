//! Files only for their owner: everything the suite writes under its data directory is created
//! with mode 0600 (directories 0700), whatever the process's umask, because the directory holds
//! keys, databases, uploads and the local delivery sinks of PIN halves.
//!
//! Modes are set where each file is created rather than with a process-wide umask: the services
//! also run inside other processes (the tests, the bench), where changing the umask would change
//! it for everything else, and a umask cannot tighten a file an older version left readable —
//! [`restrict`] does. SQLite creates a database's `-wal` and `-shm` files with the database
//! file's own mode, so creating that file 0600 first ([`crate::db::open`]) covers them too.

use std::io;
use std::path::Path;

/// Mode of every file under the data directory.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory under it, and of the data directory itself when the suite makes it.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` and any missing parent, each 0700; an existing directory is left as it is (it
/// may be one the user chose, such as a mount point, and its mode is theirs).
pub fn create_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    builder.create(dir)
}

/// Options that create a file 0600 (the mode applies only when the file is created; see
/// [`restrict`] for one that may exist already).
pub fn options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    options
}

/// As [`options`], for tokio.
pub fn async_options() -> tokio::fs::OpenOptions {
    let mut options = tokio::fs::OpenOptions::new();
    #[cfg(unix)]
    options.mode(FILE_MODE);
    options
}

/// Makes `path` 0600 if it exists: for files an older version created with the umask's mode.
pub fn restrict(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Writes `bytes` to `path`, replacing what it held, as a file 0600 (also when it existed).
pub async fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut file = async_options().write(true).create(true).truncate(true).open(path).await?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE)).await?;
    }
    file.write_all(bytes).await?;
    file.flush().await
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("exists").permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn files_and_directories_are_the_owners_alone_and_a_readable_file_is_tightened() {
        let root = tempfile::tempdir().expect("dir");
        let dir = root.path().join("data/outbox");
        create_dir(&dir).expect("created");
        assert_eq!(mode(&root.path().join("data")), DIR_MODE);
        assert_eq!(mode(&dir), DIR_MODE);

        let file = dir.join("sms.jsonl");
        std::fs::write(&file, b"old").expect("written");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write(&file, b"new").await.expect("rewritten");
        assert_eq!(mode(&file), FILE_MODE);
        assert_eq!(std::fs::read(&file).expect("read"), b"new");

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        restrict(&file).expect("restricted");
        assert_eq!(mode(&file), FILE_MODE);
        restrict(&dir.join("absent")).expect("nothing to restrict");

        let created = dir.join("letter.pdf");
        options().write(true).create_new(true).open(&created).expect("created");
        assert_eq!(mode(&created), FILE_MODE);
    }
}
