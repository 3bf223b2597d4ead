//! Live changes: whose records changed, told to every watcher in this process wherever the
//! change was made. A change says only "the records of X changed"; a watcher reads the state
//! from the database itself and sends only what differs from what it sent last, so a signal
//! coalesced with others, or lost while a connection was down (every watcher then reads again),
//! costs a wake-up, never a change. One follower per process feeds the hub — PostgreSQL's
//! `LISTEN` on its own connection (the `NOTIFY` is sent by a trigger, in the transaction of the
//! change, so a change rolled back tells nobody), or on SQLite a change log the same triggers
//! write, read when a write of this process commits and every so often for the other processes
//! on the file — and the hub fans out in memory: ten thousand watchers are ten thousand waiting
//! futures, not connections or pollers.

use crate::auth::{AuthError, Claims};
use crate::db::Backend;
use crate::revocation::Revoked;
use futures::stream::BoxStream;
use sqlx::{AnyPool, Row};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// The log rows a SQLite follower reads at most per round.
const LOG_PAGE: i64 = 10_000;
/// Log rows kept for followers in other processes: at click-day rates, tens of seconds. A
/// follower that falls further behind finds a gap and has every watcher read again.
const LOG_KEPT: i64 = 100_000;

/// The hub of one process: watchers subscribe to a key (a fiscal code), followers touch keys.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The keys someone watches, each with a counter bumped at every change; a key nobody
    /// watches any more is forgotten.
    keys: Mutex<HashMap<String, Arc<watch::Sender<u64>>>>,
    /// Bumped when every watcher must read again (the follower may have missed changes).
    all: watch::Sender<u64>,
    /// A write of this process committed: the SQLite follower reads the log at once.
    wake: Notify,
}

/// Where a service's triggers announce changes: the PostgreSQL channel they `NOTIFY` (with the
/// key as payload) and the SQLite log table they append to (`seq INTEGER PRIMARY KEY`, `key`).
#[derive(Clone, Copy, Debug)]
pub struct Source {
    pub channel: &'static str,
    pub log: &'static str,
}

/// One watcher's subscription; dropping it forgets the key once nobody else watches it.
#[derive(Debug)]
pub struct Watching {
    key: String,
    sender: Arc<watch::Sender<u64>>,
    mine: watch::Receiver<u64>,
    all: watch::Receiver<u64>,
    hub: Changes,
}

impl Watching {
    /// Waits for the next change of the key (or for a "read again" to everyone). Changes that
    /// came meanwhile are one wake-up.
    pub async fn changed(&mut self) {
        tokio::select! {
            r = self.mine.changed() => if r.is_err() { std::future::pending::<()>().await },
            r = self.all.changed() => if r.is_err() { std::future::pending::<()>().await },
        }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let mut keys = self.hub.inner.keys.lock().unwrap_or_else(|p| p.into_inner());
        // Clones are made under this lock: the map's and this one are the last two.
        if Arc::strong_count(&self.sender) == 2 {
            keys.remove(&self.key);
        }
    }
}

/// Live streams one key (a citizen) may hold open in one process. The gateway bounds a citizen
/// to 4 per gateway instance; this bounds a citizen token used straight at a service, and
/// leaves room for several gateway instances.
pub const MAX_WATCHERS_PER_KEY: usize = 16;

impl Changes {
    /// Subscribes to the changes of `key` from now on; RESOURCE_EXHAUSTED with RetryInfo when
    /// the key already has [`MAX_WATCHERS_PER_KEY`] watchers here.
    pub fn watch(&self, key: &str) -> Result<Watching, Status> {
        let sender = {
            let mut keys = self.inner.keys.lock().unwrap_or_else(|p| p.into_inner());
            let sender =
                keys.entry(key.to_owned()).or_insert_with(|| Arc::new(watch::channel(0).0));
            // The map holds one; every watcher one more.
            if Arc::strong_count(sender) > MAX_WATCHERS_PER_KEY {
                return Err(crate::error::retry_later(
                    tonic::Code::ResourceExhausted,
                    "troppi aggiornamenti in diretta aperti; chiudine uno",
                    "TOO_MANY_STREAMS",
                    "sportello",
                    Duration::from_secs(5),
                ));
            }
            sender.clone()
        };
        let mine = sender.subscribe();
        Ok(Watching {
            key: key.to_owned(),
            sender,
            mine,
            all: self.inner.all.subscribe(),
            hub: self.clone(),
        })
    }

    /// The records of `key` changed.
    pub fn touch(&self, key: &str) {
        let keys = self.inner.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = keys.get(key) {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Anything may have changed: every watcher reads again.
    pub fn touch_all(&self) {
        self.inner.all.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Keys watched now (for tests and metrics).
    pub fn watched(&self) -> usize {
        self.inner.keys.lock().map(|k| k.len()).unwrap_or_default()
    }

    /// A write of this process committed: on SQLite the follower reads the log now rather than
    /// at its next round.
    pub fn committed(&self) {
        self.inner.wake.notify_one();
    }

    /// Feeds the hub from the database at `url` until `shutdown`: PostgreSQL's `LISTEN` on
    /// `source.channel`, or SQLite's `source.log`, read after each local commit and at least
    /// every `every` (for writes of other processes on the same file).
    pub fn follow(
        &self,
        url: &str,
        pool: AnyPool,
        source: Source,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        let hub = self.clone();
        match Backend::of(url) {
            Backend::Postgres => {
                tokio::spawn(hub.listen(url.to_owned(), source.channel, shutdown));
            }
            Backend::Sqlite => {
                tokio::spawn(hub.read_log(pool, source.log, every, shutdown));
            }
        }
    }

    async fn listen(self, url: String, channel: &'static str, shutdown: CancellationToken) {
        let pause = || async {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        };
        while !shutdown.is_cancelled() {
            let listener = async {
                let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
                listener.listen(channel).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let mut listener = match listener.await {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::warn!(error = %e, channel, "cannot listen for changes; retrying");
                    pause().await;
                    continue;
                }
            };
            // What changed while nobody listened is read again by every watcher.
            self.touch_all();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    n = listener.try_recv() => match n {
                        Ok(Some(n)) => self.touch(n.payload()),
                        // The connection was lost: listen again on a new one, then read again.
                        Ok(None) | Err(_) => break,
                    },
                }
            }
            tracing::warn!(channel, "the connection listening for changes was lost");
        }
    }

    async fn read_log(
        self,
        pool: AnyPool,
        log: &'static str,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        let newest = format!("SELECT COALESCE(MAX(seq), 0) AS seq FROM {log}");
        let since = format!("SELECT seq, subject FROM {log} WHERE seq > $1 ORDER BY seq LIMIT $2");
        let prune = format!("DELETE FROM {log} WHERE seq <= $1");
        // Watchers read the current state when they start: the log before now is not theirs.
        let mut last: i64 = loop {
            match sqlx::query(&newest).fetch_one(&pool).await.and_then(|r| r.try_get("seq")) {
                Ok(seq) => break seq,
                Err(e) => tracing::debug!(error = %e, "change log not readable yet"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        };
        let mut pruned_at = last;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(every) => {}
            }
            loop {
                let rows = sqlx::query(&since).bind(last).bind(LOG_PAGE).fetch_all(&pool).await;
                let rows = match rows {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::warn!(error = %e, "change log unreadable; every watcher reads again");
                        self.touch_all();
                        break;
                    }
                };
                let n = rows.len() as i64;
                for row in rows {
                    let (Ok(seq), Ok(key)) =
                        (row.try_get::<i64, _>("seq"), row.try_get::<String, _>("subject"))
                    else {
                        continue;
                    };
                    // The log is written by one writer at a time and never rolled back in
                    // part: a gap means rows were pruned before this process read them.
                    if seq != last + 1 {
                        self.touch_all();
                    }
                    last = seq;
                    self.touch(&key);
                }
                if n < LOG_PAGE {
                    break;
                }
            }
            if last - pruned_at > LOG_KEPT {
                // Every follower prunes; deleting rows already gone is no harm.
                let upto = last - LOG_KEPT;
                if let Err(e) = sqlx::query(&prune).bind(upto).execute(&pool).await {
                    tracing::debug!(error = %e, "change log not pruned this time");
                }
                pruned_at = last;
            }
        }
    }
}

/// The session a live stream was opened in, and what ends the stream: the session ending
/// (logout, a locked or revoked PIN: told by the list of ended sessions, checked whenever it
/// grows and at every change), the token it was opened with expiring, or the caller's deadline.
#[derive(Debug)]
pub struct Session {
    sid: String,
    revoked: Revoked,
    ended: watch::Receiver<u64>,
    expires: Instant,
    deadline: Option<Instant>,
}

impl Session {
    /// The session of `claims`, for a call whose request carried `metadata`.
    pub fn of(claims: &Claims, revoked: &Revoked, metadata: &tonic::metadata::MetadataMap) -> Self {
        let left = claims.exp.saturating_sub(crate::now_millis() / 1000).max(0) as u64;
        let deadline = crate::deadline::of_metadata(metadata).map(|d| Instant::now() + d);
        Self {
            sid: claims.sid.clone(),
            revoked: revoked.clone(),
            ended: revoked.subscribe(),
            expires: Instant::now() + Duration::from_secs(left),
            deadline,
        }
    }

    /// Why the stream must end now, if it must.
    pub fn over(&self) -> Option<Status> {
        if self.revoked.contains(&self.sid) {
            return Some(crate::error::with_reason(
                tonic::Code::Unauthenticated,
                "the session has ended",
                "SESSION_ENDED",
                "auth.sportello",
            ));
        }
        if Instant::now() >= self.expires {
            return Some(AuthError::Expired.into());
        }
        if self.deadline.is_some_and(|at| Instant::now() >= at) {
            return Some(Status::deadline_exceeded("the stream reached its deadline"));
        }
        None
    }

    /// Resolves when the stream must end, with the status it ends with.
    pub async fn ended(&mut self) -> Status {
        loop {
            if let Some(status) = self.over() {
                return status;
            }
            let until = self.deadline.map_or(self.expires, |d| d.min(self.expires));
            tokio::select! {
                r = self.ended.changed() => if r.is_err() { std::future::pending::<()>().await },
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }
}

/// What a live stream sends: everything at first, then what changed.
pub trait Snapshot: Send + 'static {
    type Message: Send + 'static;
    /// The message to send now: the whole state when `first`, else what differs from what was
    /// sent before (`None`: nothing does).
    fn next(
        &mut self,
        first: bool,
    ) -> impl Future<Output = Result<Option<Self::Message>, Status>> + Send;
}

/// A live stream: `snapshot`'s first message at once, then a message whenever `watching` says
/// something changed and the snapshot finds a difference, until `session` ends it (with the
/// status of why) or the caller hangs up (dropping the stream).
pub fn live<S: Snapshot>(
    session: Session,
    watching: Watching,
    snapshot: S,
) -> BoxStream<'static, Result<S::Message, Status>> {
    struct Live<S> {
        session: Session,
        watching: Watching,
        snapshot: S,
        first: bool,
    }
    let start = Live { session, watching, snapshot, first: true };
    let stream = futures::stream::unfold(Some(start), |state| async move {
        let mut live = state?;
        loop {
            if !live.first {
                tokio::select! {
                    status = live.session.ended() => return Some((Err(status), None)),
                    _ = live.watching.changed() => {}
                }
            }
            // Checked at every change too, so that nothing more is sent in a session just ended.
            if let Some(status) = live.session.over() {
                return Some((Err(status), None));
            }
            let first = std::mem::take(&mut live.first);
            match live.snapshot.next(first).await {
                Ok(Some(message)) => return Some((Ok(message), Some(live))),
                Ok(None) => continue,
                Err(status) => return Some((Err(status), None)),
            }
        }
    });
    Box::pin(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_citizen_holds_a_bounded_number_of_streams_in_a_process_and_gets_places_back() {
        let hub = Changes::default();
        let mut held: Vec<Watching> =
            (0..MAX_WATCHERS_PER_KEY).map(|_| hub.watch("A").expect("watching")).collect();
        let refused = hub.watch("A").expect_err("one too many");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        hub.watch("B").expect("another citizen is not held up");
        held.pop();
        hub.watch("A").expect("a place back once one ends");
    }

    #[tokio::test]
    async fn a_watcher_wakes_for_its_key_only_and_the_key_is_forgotten_when_nobody_watches() {
        let hub = Changes::default();
        let mut mine = hub.watch("A").expect("watching");
        let other = hub.watch("B").expect("watching");
        hub.touch("B");
        let early = tokio::time::timeout(Duration::from_millis(20), mine.changed()).await;
        assert!(early.is_err(), "another key's change does not wake it");
        hub.touch("A");
        hub.touch("A");
        tokio::time::timeout(Duration::from_secs(1), mine.changed()).await.expect("woken");
        let again = tokio::time::timeout(Duration::from_millis(20), mine.changed()).await;
        assert!(again.is_err(), "two changes before it looked are one wake-up");
        let second = hub.watch("A").expect("watching");
        drop(mine);
        assert_eq!(hub.watched(), 2, "A is still watched by the second watcher");
        drop(second);
        drop(other);
        assert_eq!(hub.watched(), 0);
    }

    async fn log() -> (tempfile::TempDir, AnyPool) {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.sqlite").display());
        let pool = AnyPool::connect(&url).await.expect("pool");
        sqlx::query("CREATE TABLE changes (seq INTEGER PRIMARY KEY, subject TEXT NOT NULL)")
            .execute(&pool)
            .await
            .expect("table");
        (dir, pool)
    }

    async fn append(pool: &AnyPool, subject: &str) {
        sqlx::query("INSERT INTO changes (subject) VALUES ($1)")
            .bind(subject)
            .execute(pool)
            .await
            .expect("logged");
    }

    #[tokio::test]
    async fn a_logged_change_wakes_its_watcher_at_once_after_a_local_commit_and_soon_after_another_process_commits(
    ) {
        let (dir, pool) = log().await;
        append(&pool, "OLD").await;
        let hub = Changes::default();
        let stop = CancellationToken::new();
        let url = format!("sqlite://{}", dir.path().join("t.sqlite").display());
        let source = Source { channel: "unused", log: "changes" };
        // A catch-up far away: only the local commit's wake can be what reads the log.
        hub.follow(&url, pool.clone(), source, Duration::from_secs(3600), stop.clone());
        let mut mine = hub.watch("A").expect("watching");
        tokio::time::sleep(Duration::from_millis(100)).await;
        append(&pool, "B").await;
        append(&pool, "A").await;
        hub.committed();
        tokio::time::timeout(Duration::from_secs(2), mine.changed()).await.expect("woken");
        // Another process's commit: found by the periodic catch-up.
        let other = Changes::default();
        other.follow(&url, pool.clone(), source, Duration::from_millis(20), stop.clone());
        let mut theirs = other.watch("A").expect("watching");
        tokio::time::sleep(Duration::from_millis(100)).await;
        append(&pool, "A").await;
        tokio::time::timeout(Duration::from_secs(2), theirs.changed()).await.expect("caught up");
        stop.cancel();
    }

    #[tokio::test]
    async fn a_follower_that_finds_log_rows_pruned_before_it_read_them_has_everyone_read_again() {
        let (dir, pool) = log().await;
        append(&pool, "X").await;
        let hub = Changes::default();
        let stop = CancellationToken::new();
        let url = format!("sqlite://{}", dir.path().join("t.sqlite").display());
        let source = Source { channel: "unused", log: "changes" };
        hub.follow(&url, pool.clone(), source, Duration::from_millis(20), stop.clone());
        let mut unrelated = hub.watch("Z").expect("watching");
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Rows 2 and 3 come and go (another process pruned them) before this one reads.
        let mut tx = pool.begin().await.expect("tx");
        for _ in 0..3 {
            sqlx::query("INSERT INTO changes (subject) VALUES ('Y')")
                .execute(&mut *tx)
                .await
                .expect("logged");
        }
        sqlx::query("DELETE FROM changes WHERE seq IN (2, 3)")
            .execute(&mut *tx)
            .await
            .expect("pruned");
        tx.commit().await.expect("committed");
        tokio::time::timeout(Duration::from_secs(2), unrelated.changed())
            .await
            .expect("told to read again");
        stop.cancel();
    }

    #[tokio::test]
    async fn read_again_wakes_every_watcher() {
        let hub = Changes::default();
        let mut a = hub.watch("A").expect("watching");
        let mut b = hub.watch("B").expect("watching");
        hub.touch_all();
        tokio::time::timeout(Duration::from_secs(1), a.changed()).await.expect("A woken");
        tokio::time::timeout(Duration::from_secs(1), b.changed()).await.expect("B woken");
    }
}
