//! Group commit: the changes of many concurrent callers committed in one transaction, so that
//! they share one fsync. A single writer task drains a queue of jobs into a transaction, each
//! job under a savepoint of its own (a job that fails undoes only its own changes and gets its
//! own error), commits, and answers every caller. Durability is the database's full one: a
//! caller is answered only once its job is committed.
//!
//! The writer owns the jobs: a caller that hangs up after queueing its job leaves it to be
//! committed all the same, so nothing depends on code after the caller's `await` running (the
//! caller's idempotency key finds the result when it tries again).

use futures::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection};
use tokio::sync::{mpsc, oneshot};

/// One caller's changes, run on the shared transaction's connection.
pub type Work<T> =
    Box<dyn for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, sqlx::Error>> + Send>;

/// Hands a job's result to its caller once the transaction's fate is known: `None` when it
/// committed, or why it did not.
type Deliver = Box<dyn FnOnce(Option<String>) + Send>;

/// A job waiting for the SQLite writer, its result type erased so that one writer serves every
/// kind of write of a database (two writers would wait on each other's locks).
type Job = Box<dyn for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, (bool, Deliver)> + Send>;

/// How one database's writes are committed.
#[derive(Clone, Debug)]
pub enum GroupCommit {
    /// SQLite has one writer at a time anyway: one task takes every job, in shared transactions.
    Queue(mpsc::Sender<Job>),
    /// PostgreSQL commits concurrent transactions together by itself (its WAL flush covers
    /// every commit waiting for it), so each job runs in a transaction of its own, side by side.
    Direct(AnyPool),
}

impl GroupCommit {
    /// Starts committing on `db`: on SQLite a writer task, at most `max_batch` jobs per
    /// transaction, which stops once every handle is dropped and the queue is empty.
    pub fn start(db: &crate::db::Database, max_batch: usize) -> Self {
        match db.backend {
            crate::db::Backend::Postgres => GroupCommit::Direct(db.pool.clone()),
            crate::db::Backend::Sqlite => {
                // Callers wait for their turn here rather than in the pool; the bound only caps
                // memory.
                Self::start_batched(db, max_batch)
            }
        }
    }

    /// Like [`GroupCommit::start`], but batching on PostgreSQL too: for writes that all touch a
    /// few hot rows (a spending ceiling, a counter), where transactions of their own would queue
    /// on those rows' locks one commit at a time, while one transaction takes the locks once for
    /// the whole batch.
    pub fn start_batched(db: &crate::db::Database, max_batch: usize) -> Self {
        let (jobs, queue) = mpsc::channel(max_batch.max(1) * 16);
        // On SQLite the transaction takes the write lock as it begins: one that read first and
        // met another connection's commit before writing would fail at once (SQLITE_BUSY on
        // its stale snapshot), where a lock asked for at the start is waited for.
        let begin = match db.backend {
            crate::db::Backend::Sqlite => "BEGIN IMMEDIATE",
            crate::db::Backend::Postgres => "BEGIN",
        };
        tokio::spawn(writer(db.pool.clone(), begin, queue, max_batch.max(1)));
        GroupCommit::Queue(jobs)
    }

    /// Runs `work` in a transaction and returns its result once that has committed.
    pub async fn run<T: Send + 'static>(&self, work: Work<T>) -> Result<T, sqlx::Error> {
        match self {
            GroupCommit::Queue(jobs) => {
                let (reply, answer) = oneshot::channel::<Result<T, sqlx::Error>>();
                let job: Job = Box::new(move |conn| {
                    Box::pin(async move {
                        let result = work(conn).await;
                        let ok = result.is_ok();
                        let deliver: Deliver = Box::new(move |failed| {
                            let result = match failed {
                                None => result,
                                Some(why) => Err(sqlx::Error::Protocol(why)),
                            };
                            // A caller that hung up does not need its answer; its job is
                            // committed anyway.
                            let _ = reply.send(result);
                        });
                        (ok, deliver)
                    })
                });
                jobs.send(job).await.map_err(|_| sqlx::Error::PoolClosed)?;
                answer.await.map_err(|_| sqlx::Error::PoolClosed)?
            }
            GroupCommit::Direct(pool) => {
                let mut tx = crate::db::begin(pool).await?;
                let result = work(&mut tx).await?;
                tx.commit().await?;
                Ok(result)
            }
        }
    }
}

async fn writer(pool: AnyPool, begin: &'static str, mut queue: mpsc::Receiver<Job>, max: usize) {
    // One connection for every batch: on SQLite a connection's page cache is dropped whenever
    // another connection wrote since its last transaction, so a writer moving between the
    // pool's connections read its indexes back from the file at nearly every batch.
    let mut held: Option<PoolConnection<Any>> = None;
    let mut batch = Vec::with_capacity(max);
    while queue.recv_many(&mut batch, max).await > 0 {
        let jobs = std::mem::take(&mut batch);
        let count = jobs.len();
        let mut conn = match held.take() {
            Some(conn) => conn,
            None => match pool.acquire().await {
                Ok(conn) => conn,
                Err(e) => {
                    // Dropping the jobs answers their callers (the pool is closed or full).
                    tracing::warn!(error = %e, jobs = count, "group commit found no connection");
                    continue;
                }
            },
        };
        let mut delivered = Vec::with_capacity(count);
        let outcome = run_all(&mut conn, begin, jobs, &mut delivered).await;
        let failed = match outcome {
            Ok(()) => {
                held = Some(conn);
                None
            }
            // The connection may be what failed: the next batch takes a fresh one.
            Err(e) => {
                tracing::warn!(error = %e, jobs = count, "group commit failed");
                Some(format!("commit failed: {e}"))
            }
        };
        for deliver in delivered {
            deliver(failed.clone());
        }
    }
}

/// Runs each job under its own savepoint in one transaction, collecting how to answer each;
/// `Err` when the transaction itself fails (then nothing of the batch is committed, and the jobs
/// not run yet are answered by their dropped reply: `PoolClosed`).
async fn run_all(
    conn: &mut AnyConnection,
    begin: &'static str,
    jobs: Vec<Job>,
    delivered: &mut Vec<Deliver>,
) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin_with(begin).await?;
    for job in jobs {
        sqlx::query("SAVEPOINT job").execute(&mut *tx).await?;
        let (ok, deliver) = job(&mut tx).await;
        delivered.push(deliver);
        if ok {
            sqlx::query("RELEASE SAVEPOINT job").execute(&mut *tx).await?;
        } else {
            sqlx::query("ROLLBACK TO SAVEPOINT job").execute(&mut *tx).await?;
            sqlx::query("RELEASE SAVEPOINT job").execute(&mut *tx).await?;
        }
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    async fn pool() -> (tempfile::TempDir, AnyPool) {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.sqlite").display());
        let pool = AnyPool::connect(&url).await.expect("pool");
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY)").execute(&pool).await.expect("table");
        (dir, pool)
    }

    fn sqlite(pool: &AnyPool) -> crate::db::Database {
        crate::db::Database { pool: pool.clone(), backend: crate::db::Backend::Sqlite }
    }

    fn insert(key: String) -> Work<String> {
        Box::new(move |conn| {
            Box::pin(async move {
                sqlx::query("INSERT INTO t (k) VALUES ($1)").bind(&key).execute(&mut *conn).await?;
                Ok(key)
            })
        })
    }

    #[tokio::test]
    async fn concurrent_jobs_are_all_committed_and_a_failing_one_undoes_only_itself() {
        let (_dir, pool) = pool().await;
        let writer = GroupCommit::start(&sqlite(&pool), 64);
        let mut calls = tokio::task::JoinSet::new();
        for n in 0..200 {
            let writer = writer.clone();
            // Keys 0..100 twice: the second insert of a key fails on the primary key.
            calls.spawn(async move { writer.run(insert(format!("k{}", n % 100))).await.is_ok() });
        }
        let mut ok = 0;
        while let Some(done) = calls.join_next().await {
            ok += usize::from(done.expect("task"));
        }
        assert_eq!(ok, 100, "one insert of each key succeeds");
        let row = sqlx::query("SELECT COUNT(*) AS n FROM t").fetch_one(&pool).await.expect("n");
        assert_eq!(row.get::<i64, _>("n"), 100);
    }

    #[tokio::test]
    async fn a_caller_that_hangs_up_still_has_its_job_committed() {
        let (_dir, pool) = pool().await;
        let writer = GroupCommit::start(&sqlite(&pool), 8);
        let call = writer.run(insert("left".into()));
        // Polled once (queued), then dropped, as tonic drops a handler whose client hung up.
        let _ = tokio::time::timeout(std::time::Duration::from_micros(1), call).await;
        writer.run(insert("after".into())).await.expect("a later job");
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM t WHERE k = 'left'")
            .fetch_one(&pool)
            .await
            .expect("n")
            .get("n");
        assert_eq!(n, 1);
    }
}
