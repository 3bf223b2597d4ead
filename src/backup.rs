//! `sportello backup DIR`: a consistent copy of a running suite's SQLite data. Each service's
//! database is copied with `VACUUM INTO`, which reads one snapshot while the writers carry on
//! (WAL), so the copy holds every transaction committed before it began and none half-way. Then
//! the files the databases refer to: the service keys (sessions and service tokens stay
//! verifiable) and the upload blobs, which are written before the row that names them and never
//! change, so copying them after the snapshot finds every one it names. PostgreSQL deployments
//! use `pg_dump` per schema instead (README).

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
    let mut copied = 0;
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        // Uploads still streaming are not part of any record.
        if source.is_dir() && entry.file_name() == "tmp" {
            continue;
        }
        if source.is_dir() {
            copied += copy_tree(&source, &target)?;
        } else {
            std::fs::copy(&source, &target)?;
            copied += 1;
        }
    }
    Ok(copied)
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
    sqlx::query("VACUUM INTO ?").bind(into).execute(&mut conn).await?;
    Ok(std::fs::metadata(target)?.len())
}

pub fn run(args: BackupArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        std::fs::create_dir_all(&args.dir)?;
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
            "backup in {}: start a suite on it with --data-dir {}",
            args.dir.display(),
            args.dir.display()
        );
        Ok(())
    })
}
