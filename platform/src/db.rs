//! Storage: one sqlx `AnyPool` per service, SQLite by default and PostgreSQL when the database URL
//! says `postgres://`. Queries are written once, portably (`$1` placeholders work on both); on
//! PostgreSQL each service lives in its own schema so that services never read each other's
//! tables even when they share a database.

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Connection, Executor};
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Which engine a pool talks to, for the few statements that must differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a database URL names.
    pub fn of(url: &str) -> Self {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }
}

/// `n` bind parameters for a statement whose parameters are all generated lists, numbered on
/// from `from`: `$from, $from+1, …` on PostgreSQL, plain `?`s on SQLite. SQLite looks a numbered
/// parameter up by scanning all of them at every bind, which is quadratic in a multi-row INSERT
/// of a few thousand; anonymous ones are bound in order (sqlx numbers them apart from `$n`, so
/// the two styles must not meet in one statement).
pub fn params(conn: &sqlx::AnyConnection, from: usize, n: usize) -> String {
    if conn.backend_name().eq_ignore_ascii_case("sqlite") {
        vec!["?"; n].join(", ")
    } else {
        numbered(from, n)
    }
}

/// `$from, $from+1, …` for `n` parameters, on either engine.
pub fn numbered(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// A service's migrations, one set per engine (their SQL differs in types and defaults).
#[derive(Debug)]
pub struct Migrations {
    pub sqlite: &'static Migrator,
    pub postgres: &'static Migrator,
}

/// The migrations of the calling crate, embedded at build time from its `migrations/sqlite` and
/// `migrations/postgres` directories: `static MIGRATIONS: Migrations = embed_migrations!();`.
#[macro_export]
macro_rules! embed_migrations {
    () => {{
        static SQLITE: ::sqlx::migrate::Migrator = ::sqlx::migrate!("migrations/sqlite");
        static POSTGRES: ::sqlx::migrate::Migrator = ::sqlx::migrate!("migrations/postgres");
        $crate::db::Migrations { sqlite: &SQLITE, postgres: &POSTGRES }
    }};
}

/// The file of a SQLite URL (`sqlite://path?…` or `sqlite:path`), unless it is in memory.
fn sqlite_file(url: &str) -> Option<&Path> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| Path::new(path))
}

/// Makes the database file of `url` its owner's alone before SQLite opens it: created empty and
/// 0600 when absent (an empty file is an empty database), tightened when an older version left
/// it readable. SQLite gives the `-wal` and `-shm` files it creates the database file's mode, so
/// they are 0600 too whatever the umask; existing ones are tightened here as well.
fn private_sqlite_files(url: &str) -> std::io::Result<()> {
    let Some(path) = sqlite_file(url) else {
        return Ok(());
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::files::create_dir(dir)?;
    }
    match crate::files::options().write(true).create_new(true).open(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        crate::files::restrict(Path::new(&name))?;
    }
    Ok(())
}

/// The SQLite URL of a service's database file inside `data_dir`.
pub fn sqlite_url(data_dir: &Path, service: &str) -> String {
    format!("sqlite://{}?mode=rwc", data_dir.join(format!("{service}.sqlite")).display())
}

/// A connected, migrated pool.
#[derive(Clone, Debug)]
pub struct Database {
    pub pool: AnyPool,
    pub backend: Backend,
}

impl Database {
    /// Starts a transaction; see [`begin`].
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        begin(&self.pool).await
    }
}

/// Starts a transaction that a caller who goes away cannot leave open. sqlx 0.8 counts a
/// PostgreSQL transaction as begun only once `BEGIN` has been answered: a future dropped while
/// waiting for that answer (tonic drops a handler's future when its client hangs up) sends the
/// connection back to the pool inside a transaction nobody will end, and every later borrower's
/// statements run in it and keep their row locks forever (sqlx issue #4393, fixed after 0.8).
/// Begun in a task of its own, the transaction is always known to sqlx, and a caller that is
/// gone drops it, which rolls it back.
pub async fn begin(pool: &AnyPool) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.begin().await })
        .await
        .map_err(|e| sqlx::Error::Protocol(format!("beginning a transaction failed: {e}")))?
}

/// Connects to `url` and runs the migrations. `schema` is the PostgreSQL schema of the service.
pub async fn open(
    url: &str,
    schema: &'static str,
    migrations: &Migrations,
    max_connections: u32,
) -> Result<Database, sqlx::Error> {
    sqlx::any::install_default_drivers();
    let backend = Backend::of(url);
    if backend == Backend::Sqlite {
        private_sqlite_files(url)?;
    }
    if backend == Backend::Postgres {
        let mut conn = sqlx::AnyConnection::connect(url).await?;
        // Two services starting together may race to create their schemas; the loser's error is
        // harmless when the schema exists afterwards.
        let created = conn.execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str()).await;
        if let Err(e) = created {
            tracing::debug!(error = %e, "CREATE SCHEMA raced");
        }
        conn.close().await?;
    }
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                match backend {
                    Backend::Postgres => {
                        conn.execute(format!("SET search_path TO {schema}").as_str()).await?;
                    }
                    Backend::Sqlite => {
                        // WAL lets readers run beside the single writer; FULL syncs the log at
                        // every commit, so what was acknowledged survives a power loss too (hot
                        // writers share commits: `group_commit`); the busy timeout makes writers
                        // queue instead of failing under load. Pages are read through a memory
                        // map (no copy per read) and 16 MiB of them cached per connection.
                        // `secure_delete` zeroes what a delete or an update frees, so a purged
                        // row leaves no bytes behind in the file's free space.
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                             PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; \
                             PRAGMA mmap_size = 268435456; PRAGMA cache_size = -16384; \
                             PRAGMA wal_autocheckpoint = 0; PRAGMA secure_delete = ON;",
                        )
                        .await?;
                    }
                }
                Ok(())
            })
        })
        .connect(url)
        .await?;
    let migrator = match backend {
        Backend::Sqlite => migrations.sqlite,
        Backend::Postgres => migrations.postgres,
    };
    migrator.run(&pool).await?;
    if backend == Backend::Sqlite {
        tokio::spawn(checkpoints(pool.clone()));
    }
    Ok(Database { pool, backend })
}

/// Copies the write-ahead log into the database file every second, beside the writers: SQLite
/// would otherwise do it inside the commit that crosses 1,000 pages of log, and that commit's
/// callers would wait for the copy and its fsync (a stall every few hundred batches on click
/// day). PASSIVE never waits for readers or writers; it stops when the pool closes.
///
/// Once a second passes with nothing written and the log all copied, the log is truncated to
/// nothing: it keeps old page images (a row before its purge) until overwritten, and an idle
/// service should leave none on disk.
async fn checkpoints(pool: AnyPool) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_frames = 0;
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        match checkpoint(&pool, last_frames).await {
            Ok(frames) => last_frames = frames,
            Err(e) => {
                if pool.is_closed() {
                    return;
                }
                tracing::debug!(error = %e, "WAL checkpoint skipped");
            }
        }
    }
}

/// One pass of [`checkpoints`]: a PASSIVE checkpoint, then a TRUNCATE one when the log holds
/// the same frames as at the last pass (nothing written since) and all are copied. Returns the
/// frames the log holds afterwards.
async fn checkpoint(pool: &AnyPool, last_frames: i64) -> Result<i64, sqlx::Error> {
    use sqlx::Row;
    let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(pool).await?;
    let (frames, copied): (i64, i64) = (row.try_get(1)?, row.try_get(2)?);
    if frames == 0 || frames != last_frames || copied != frames {
        return Ok(frames);
    }
    // Without a busy timeout: if anyone reads or writes after all, try again when idle rather
    // than hold the writers up.
    let mut conn = pool.acquire().await?;
    conn.execute("PRAGMA busy_timeout = 0").await?;
    let truncated = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&mut *conn).await;
    if let Err(e) = conn.execute("PRAGMA busy_timeout = 5000").await {
        // Not back into the pool without its busy timeout.
        conn.close_on_drop();
        return Err(e);
    }
    let busy: i64 = truncated?.try_get(0)?;
    Ok(if busy == 0 { 0 } else { frames })
}

/// Like [`open`], but keeps trying (the database may come up after the service) until it succeeds
/// or `shutdown` is cancelled.
pub async fn open_with_retry(
    url: &str,
    schema: &'static str,
    migrations: &Migrations,
    max_connections: u32,
    shutdown: &CancellationToken,
) -> Option<Database> {
    let mut delay = Duration::from_millis(100);
    loop {
        match open(url, schema, migrations, max_connections).await {
            Ok(db) => return Some(db),
            Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "database not ready"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// The one statement that leases due rows of `table` to a worker: up to `$3` rows matching
/// `due` (which may use `$2`, now), not leased or with their lease run out at `$2`, in `order`,
/// leased until `$1` with `also` set besides, returning `returning`. On PostgreSQL rows another
/// worker is leasing are skipped (`FOR UPDATE SKIP LOCKED`); SQLite has one writer at a time.
pub fn lease_sql(
    backend: Backend,
    table: &str,
    also: &str,
    due: &str,
    order: &str,
    returning: &str,
) -> String {
    let lock = match backend {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let free = "(leased_until IS NULL OR leased_until <= $2)";
    format!(
        "UPDATE {table} SET leased_until = $1, {also} WHERE id IN (SELECT id FROM {table} \
         WHERE {due} AND {free} ORDER BY {order} LIMIT $3{lock}) AND {free} RETURNING {returning}"
    )
}

/// Whether `e` is the database refusing text it cannot store: PostgreSQL keeps no NUL byte in
/// `text` (SQLSTATE 22021) nor characters outside the database's encoding (22P05). The caller
/// sent such text, so it is their request that is invalid, not the service that is down.
pub fn is_unstorable_text(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "22021" || code == "22P05")
}

/// `text` as the audit trail and other free-text columns keep it: without NUL bytes, which
/// PostgreSQL refuses, so that recording what a caller sent never fails because of it.
pub fn storable(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

#[cfg(test)]
mod tests {
    use super::*;

    static NONE: Migrator = Migrator::DEFAULT;
    static NO_MIGRATIONS: Migrations = Migrations { sqlite: &NONE, postgres: &NONE };

    #[tokio::test]
    async fn an_idle_database_keeps_no_log_and_its_files_are_the_owners_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().join("data");
        let db = open(&sqlite_url(&data, "svc"), "svc", &NO_MIGRATIONS, 2).await.expect("open");
        let on: i64 =
            sqlx::query_scalar("PRAGMA secure_delete").fetch_one(&db.pool).await.expect("pragma");
        assert_eq!(on, 1, "freed pages are zeroed");
        sqlx::query("CREATE TABLE t (secret TEXT)").execute(&db.pool).await.expect("table");
        sqlx::query("INSERT INTO t VALUES ('AB12CD34')").execute(&db.pool).await.expect("row");
        sqlx::query("DELETE FROM t").execute(&db.pool).await.expect("purge");
        let wal = data.join("svc.sqlite-wal");
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) > 0 {
            assert!(std::time::Instant::now() < until, "the log was never truncated");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let file = std::fs::read(data.join("svc.sqlite")).expect("db file");
        assert!(!file.windows(8).any(|w| w == b"AB12CD34"), "the purged row is gone");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
            assert_eq!(mode(&data), 0o700);
            for name in ["svc.sqlite", "svc.sqlite-wal", "svc.sqlite-shm"] {
                assert_eq!(mode(&data.join(name)), 0o600, "{name}");
            }
        }
    }
}
