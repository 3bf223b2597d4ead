//! Sessions ended before their tokens expire (logout, a revoked or changed PIN, a removed staff
//! member), as identity-svc lists them. Every process that verifies tokens keeps this list a
//! poll away (half a second by default) and its [`crate::auth::Verifier`] refuses those
//! sessions, so a service called directly, bypassing the gateway, refuses them within seconds
//! too.

use crate::service_identity::ServiceKey;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often followers ask identity-svc for sessions ended since their last answer.
pub const DEFAULT_POLL: Duration = Duration::from_millis(500);

/// How soon a follower that has no answer yet asks again, at first (doubled on every miss).
const FIRST_RETRY: Duration = Duration::from_millis(20);

/// Ended sessions, by session id.
#[derive(Clone)]
pub struct Revoked {
    sessions: Arc<RwLock<HashMap<String, Instant>>>,
    /// Whether the list is complete: false from [`Revoked::await_follower`] until the follower's
    /// first answer. A process just (re)started knows no ended session yet, and a thief's token
    /// of a session the citizen ended must not pass in that gap.
    complete: Arc<AtomicBool>,
    /// Bumped whenever sessions are added, for those who hold a session open (a live stream)
    /// and must end it promptly.
    ended: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for Revoked {
    fn default() -> Self {
        Self {
            sessions: Arc::default(),
            complete: Arc::new(AtomicBool::new(true)),
            ended: Arc::default(),
        }
    }
}

impl std::fmt::Debug for Revoked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.sessions.read().map(|s| s.len()).unwrap_or_default();
        f.debug_struct("Revoked").field("sessions", &n).finish()
    }
}

/// Sessions ended since a time (milliseconds since the epoch), and the time the answer is
/// complete up to.
pub type Window = (Vec<String>, i64);

impl Revoked {
    /// Marks the list incomplete until a follower first answers; called before the process
    /// serves, by whoever then starts the follower.
    pub fn await_follower(&self) {
        self.complete.store(false, Ordering::Release);
    }

    /// Whether every session ended so far is known (see [`Revoked::await_follower`]).
    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    pub fn contains(&self, sid: &str) -> bool {
        // A poisoned lock refuses every session rather than none.
        self.sessions.read().map(|s| s.contains_key(sid)).unwrap_or(true)
    }

    /// Changes whenever sessions end: a holder of a long-lived call checks its own session
    /// then, rather than on a timer of its own.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.ended.subscribe()
    }

    fn add(&self, ids: Vec<String>) {
        if let Ok(mut sessions) = self.sessions.write() {
            let now = Instant::now();
            let before = sessions.len();
            for sid in ids {
                sessions.entry(sid).or_insert(now);
            }
            if sessions.len() > before {
                self.ended.send_modify(|n| *n = n.wrapping_add(1));
            }
            // Tokens live minutes; a day later a revoked session is long expired.
            sessions.retain(|_, at| now.duration_since(*at) < Duration::from_secs(86_400));
        }
    }

    /// Asks `source` for sessions ended since its last answer, every `every`.
    pub async fn follow<F, Fut, E>(
        self,
        mut source: F,
        every: Duration,
        shutdown: CancellationToken,
    ) where
        F: FnMut(i64) -> Fut,
        Fut: Future<Output = Result<Window, E>>,
        E: std::fmt::Debug,
    {
        let mut since = 0;
        // Until the first answer the process refuses sessions and is not ready: ask again
        // soon, backing off as the signing keys' follower does.
        let mut retry = FIRST_RETRY;
        loop {
            match source(since).await {
                Ok((ids, as_of)) => {
                    self.add(ids);
                    self.complete.store(true, Ordering::Release);
                    // Overlap the next window a little: clocks of two processes are not one.
                    since = as_of - 2_000;
                }
                Err(e) => tracing::debug!(error = ?e, "revoked sessions not available"),
            }
            let wait = if self.is_complete() {
                every
            } else {
                retry = (retry * 2).min(every);
                retry / 2
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Follows identity-svc's `ListRevokedSessions`, calling as service `me`.
    pub async fn follow_identity(
        self,
        identity: tonic::transport::Channel,
        me: ServiceKey,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
        use sportello_proto::identity::v1::ListRevokedSessionsRequest;
        let source = |since: i64| {
            let mut client = IdentityServiceClient::new(identity.clone());
            let request = me.request(ListRevokedSessionsRequest {
                since: Some(prost_types::Timestamp { seconds: since.div_euclid(1000), nanos: 0 }),
            });
            async move {
                let reply = client.list_revoked_sessions(request).await?.into_inner();
                let as_of = reply.as_of.map_or(0, |t| t.seconds * 1000);
                Ok::<_, tonic::Status>((reply.session_ids, as_of))
            }
        };
        self.follow(source, every, shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_list_awaiting_its_follower_is_incomplete_until_the_first_answer() {
        let revoked = Revoked::default();
        assert!(revoked.is_complete(), "nothing to wait for without a follower");
        revoked.await_follower();
        assert!(!revoked.is_complete());
        let stop = CancellationToken::new();
        let asked = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let task = tokio::spawn(revoked.clone().follow(
            {
                let asked = asked.clone();
                move |_| {
                    // identity-svc is down for the first two asks, then answers.
                    let n = asked.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if n >= 2 {
                            Ok::<_, ()>((vec!["s1".to_owned()], 10_000))
                        } else {
                            Err(())
                        }
                    }
                }
            },
            // A poll far longer than the test: only the quick first retries can complete it.
            Duration::from_secs(3600),
            stop.clone(),
        ));
        let complete = async {
            while !revoked.is_complete() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), complete).await.expect("completed");
        assert!(revoked.contains("s1"), "complete with what the answer said");
        stop.cancel();
        task.await.expect("follower");
    }

    #[tokio::test]
    async fn a_followed_revocation_is_known_within_a_poll() {
        let revoked = Revoked::default();
        let stop = CancellationToken::new();
        let task = tokio::spawn(revoked.clone().follow(
            |since| async move {
                Ok::<_, ()>((if since == 0 { vec!["s1".to_owned()] } else { vec![] }, 10_000))
            },
            Duration::from_millis(10),
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(revoked.contains("s1"));
        assert!(!revoked.contains("s2"));
        stop.cancel();
        task.await.expect("stopped");
    }
}
