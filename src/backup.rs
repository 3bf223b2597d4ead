//! `sportello backup DIR`: a consistent copy of a running suite's SQLite data. Each service's
//! database is copied with `VACUUM INTO`, which reads one snapshot while the writers carry on
//! (WAL), so the copy holds every transaction committed before it began and none half-way. Then
//! the files the databases refer to: the service keys (sessions and service tokens stay
//! verifiable) and the upload blobs, which are written before the row that names them and never
//! change, so copying them after the snapshot finds every one it names. PostgreSQL deployments
//! use `pg_dump` per schema instead (README).
//!
//! The copy holds no secret in clear: the databases keep PIN halves and codes waiting to be sent
//! only sealed, and the data keys that open them (`keys/secrets-*.key`) are left out, to be kept
//! apart like any other secret of the deployment (put them back beside a restored copy to send
//! what was waiting). Like the data directory, the copy is its owner's alone: 0700 and 0600.

use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The services whose databases live in the data directory.
const DATABASES: [&str; 3] = ["identity", "claims", "notify"];
/// Directories of files copied beside the databases.
const FILES: [&str; 2] = ["keys", "blobs"];

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Where the copy goes: a new or empty directory.
    pub dir: PathBuf,
    /// The suite's data directory.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<u64> {
    use sportello_platform::files;
    let mut copied = 0;
    files::create_dir(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        // Uploads still streaming are not part of any record.
        if source.is_dir() && entry.file_name() == "tmp" {
            continue;
        }
        if source.is_dir() {
            copied += copy_tree(&source, &target)?;
        } else if !is_data_key(&entry.file_name()) {
            let mut out = files::options().write(true).create_new(true).open(&target)?;
            std::io::copy(&mut std::fs::File::open(&source)?, &mut out)?;
            copied += 1;
        }
    }
    Ok(copied)
}

/// Whether `name` is a data key of secrets at rest, which a backup leaves out.
fn is_data_key(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_some_and(|n| n.starts_with("secrets-") && n.ends_with(".key"))
}

/// Copies one database with `VACUUM INTO`; returns its size.
async fn copy_database(source: &Path, target: &Path) -> anyhow::Result<u64> {
    use sqlx::ConnectOptions as _;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(source)
        .read_only(true)
        .connect()
        .await
        .with_context(|| format!("opening {}", source.display()))?;
    let into = target.to_str().context("a backup path that is not UTF-8")?;
    // VACUUM INTO fills an empty file as it is, so the copy has this one's mode, not the umask's.
    sportello_platform::files::options().write(true).create_new(true).open(target)?;
    sqlx::query("VACUUM INTO ?").bind(into).execute(&mut conn).await?;
    Ok(std::fs::metadata(target)?.len())
}

pub fn run(args: BackupArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        sportello_platform::files::create_dir(&args.dir)?;
        anyhow::ensure!(
            std::fs::read_dir(&args.dir)?.next().is_none(),
            "{} is not empty: a backup goes into a new directory",
            args.dir.display()
        );
        for name in DATABASES {
            let source = args.data_dir.join(format!("{name}.sqlite"));
            if !source.exists() {
                println!(
                    "{name}: no database in {} (PostgreSQL?): skipped",
                    args.data_dir.display()
                );
                continue;
            }
            let started = Instant::now();
            let size = copy_database(&source, &args.dir.join(format!("{name}.sqlite"))).await?;
            println!(
                "{name}: {:.1} MB in {:.2} s",
                size as f64 / 1_048_576.0,
                started.elapsed().as_secs_f64()
            );
        }
        for dir in FILES {
            let source = args.data_dir.join(dir);
            if source.is_dir() {
                let n = copy_tree(&source, &args.dir.join(dir))?;
                println!("{dir}: {n} files");
            }
        }
        println!(
            "backup in {}: start a suite on it with --data-dir {} (the data keys, \
             keys/secrets-*.key, are not in it: copy them back to send what was waiting)",
            args.dir.display(),
            args.dir.display()
        );
        Ok(())
    })
}
