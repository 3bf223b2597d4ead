//! argon2id hashing of PINs on a bounded pool of threads of its own. Each hash costs tens of
//! milliseconds of CPU and ~19 MiB of memory, so it must never run on the async executor, and a
//! flood of requests must be turned away quickly rather than queue without bound.

use crate::domain::pin::PinHash;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use serde::{Deserialize, Serialize};
use sportello_platform::admission::{Admission, Ticket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::oneshot;

/// argon2id cost parameters; the defaults are OWASP's (m = 19 MiB, t = 2, p = 1).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hashing threads; default: one per CPU.
    pub workers: usize,
    /// Hashes that may wait for a thread before new ones are refused.
    pub max_queued: usize,
}

impl Default for HashParams {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
            workers: cpus,
            max_queued: 64 * cpus,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("too many PIN operations in progress")]
    Overloaded,
    #[error("hashing failed: {0}")]
    Failed(String),
}

fn failed(e: impl std::fmt::Display) -> HashError {
    HashError::Failed(e.to_string())
}

/// Work for a hashing thread, with where to send the answer.
enum Job {
    Hash { secret: String, reply: oneshot::Sender<Result<PinHash, HashError>> },
    Verify { secret: String, phc: String, reply: oneshot::Sender<Result<bool, HashError>> },
}

impl Job {
    /// Whether nobody waits for the answer any more: tonic dropped the handler's future because
    /// the caller hung up or its deadline passed. On click day people reload impatiently; work
    /// for them would only delay the patient ones behind them, so such a job is dropped unrun.
    fn abandoned(&self) -> bool {
        match self {
            Job::Hash { reply, .. } => reply.is_closed(),
            Job::Verify { reply, .. } => reply.is_closed(),
        }
    }
}

/// Hashes and verifies PINs on a pool of its own threads (one per CPU by default), each keeping
/// its 19 MiB of argon2 memory from one hash to the next: zeroing fresh memory for every hash
/// costs a sixth of the work. A bounded queue in front turns floods away at once.
#[derive(Clone)]
pub struct Hasher {
    params: Params,
    jobs: crossbeam_channel::Sender<Job>,
    abandoned: Arc<AtomicU64>,
    /// Logins admitted by the time they would wait for a hashing thread.
    admission: Admission,
}

/// How long a login may wait for a hashing thread before new ones are refused: a few hashes'
/// worth, far shorter than a citizen's patience or a portal's deadline.
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher").field("params", &self.params).finish()
    }
}

/// How long a hashing thread keeps its memory with nothing to do: long enough that a steady
/// trickle of logins reuses it, short enough that an idle service is small.
const KEEP_MEMORY_WHILE_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// One hashing thread: its memory, reused while the parameters stay the same.
struct Worker {
    blocks: Vec<Block>,
}

impl Worker {
    fn argon2(params: Params) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    fn memory(&mut self, params: &Params) -> &mut [Block] {
        if self.blocks.len() != params.block_count() {
            self.blocks = vec![Block::default(); params.block_count()];
        }
        &mut self.blocks
    }

    fn hash(&mut self, params: &Params, secret: &str) -> Result<PinHash, HashError> {
        let salt = SaltString::generate(&mut OsRng);
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(failed)?;
        let mut raw = [0u8; Params::DEFAULT_OUTPUT_LEN];
        let argon2 = Self::argon2(params.clone());
        argon2
            .hash_password_into_with_memory(
                secret.as_bytes(),
                salt_bytes,
                &mut raw,
                self.memory(params),
            )
            .map_err(failed)?;
        let phc = PasswordHash {
            algorithm: argon2::ARGON2ID_IDENT,
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(params).map_err(failed)?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&raw).map_err(failed)?),
        };
        Ok(PinHash::from_phc(phc.to_string()))
    }

    fn verify(&mut self, secret: &str, phc: &str) -> Result<bool, HashError> {
        let parsed = PasswordHash::new(phc).map_err(failed)?;
        if parsed.algorithm != argon2::ARGON2ID_IDENT {
            return Err(failed("not an argon2id hash"));
        }
        let params = Params::try_from(&parsed).map_err(failed)?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Err(failed("a hash without salt or output"));
        };
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(failed)?;
        let mut raw = vec![0u8; expected.len()];
        Self::argon2(params.clone())
            .hash_password_into_with_memory(
                secret.as_bytes(),
                salt_bytes,
                &mut raw,
                self.memory(&params),
            )
            .map_err(failed)?;
        // `Output`'s equality is constant-time.
        Ok(Output::new(&raw).map_err(failed)? == expected)
    }

    fn run(
        mut self,
        params: Params,
        jobs: crossbeam_channel::Receiver<Job>,
        abandoned: &AtomicU64,
        (admission, workers): (Admission, usize),
    ) {
        yield_cpu_to_the_rest();
        loop {
            let job = match jobs.recv_timeout(KEEP_MEMORY_WHILE_IDLE) {
                Ok(job) => job,
                // Idle: give the 19 MiB back, rather than hold them between click days.
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    self.blocks = Vec::new();
                    match jobs.recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            };
            if job.abandoned() {
                abandoned.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let started = std::time::Instant::now();
            match job {
                Job::Hash { secret, reply } => {
                    let _ = reply.send(self.hash(&params, &secret));
                }
                Job::Verify { secret, phc, reply } => {
                    let _ = reply.send(self.verify(&secret, &phc));
                }
            }
            // The threads hash side by side: one hash in `took` here is `workers` of them in
            // `took` for the pool.
            admission.done(workers, started.elapsed());
        }
    }
}

/// The niceness of a hashing thread: the lowest priority there is.
const HASHING_NICENESS: i32 = 19;

/// Lowers the calling hashing thread's priority (on Linux, niceness is per thread). Answers
/// that need no hash (a refusal for load decided on arrival, a cheap read, a token check) must
/// not wait for the CPU behind hashes of tens of milliseconds each: on a machine of two cores
/// and two hashing threads, logins refused for load were answered after 80 ms at p99 and a
/// profile read after 930 ms. The hashes get all the CPU the rest leaves, which under overload
/// is nearly all of it, so as many logins are served.
fn yield_cpu_to_the_rest() {
    let me = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(me), HASHING_NICENESS) {
        tracing::warn!(error = %e, "a hashing thread keeps its priority");
    }
}

impl Hasher {
    /// Starts the pool; its threads end when the last clone of the hasher is dropped.
    pub fn new(config: &HashParams) -> Result<Self, HashError> {
        let params = Params::new(config.memory_kib, config.iterations, config.parallelism, None)
            .map_err(failed)?;
        let (jobs, queue) = crossbeam_channel::bounded(config.max_queued.max(1));
        let abandoned = Arc::new(AtomicU64::new(0));
        let workers = config.workers.max(1);
        let admission = Admission::new(MAX_WAIT, workers, config.max_queued.max(1) + workers);
        for i in 0..workers {
            let queue = queue.clone();
            let params = params.clone();
            let abandoned = abandoned.clone();
            let admission = (admission.clone(), workers);
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    Worker { blocks: Vec::new() }.run(params, queue, &abandoned, admission)
                })
                .map_err(failed)?;
        }
        Ok(Self { params, jobs, abandoned, admission })
    }

    /// Admission of a login for a caller with `deadline` left: refused at once when the
    /// hashes already admitted would not be done within a second (or half the deadline) at the
    /// rate the threads have lately hashed. Taken before anything is counted against the
    /// citizen, and held until the verdict.
    pub fn admit(&self, deadline: Option<std::time::Duration>) -> Result<Ticket, HashError> {
        self.admission.admit(deadline).ok_or_else(|| {
            metrics::counter!("sportello_hash_refused_total").increment(1);
            HashError::Overloaded
        })
    }

    /// How many queued jobs were dropped unrun because their caller had gone.
    pub fn abandoned_jobs(&self) -> u64 {
        self.abandoned.load(Ordering::Relaxed)
    }

    async fn submit<T>(&self, job: impl FnOnce(oneshot::Sender<T>) -> Job) -> Result<T, HashError> {
        let (reply, answer) = oneshot::channel();
        let sent = self.jobs.try_send(job(reply)).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => {
                metrics::counter!("sportello_hash_refused_total").increment(1);
                HashError::Overloaded
            }
            crossbeam_channel::TrySendError::Disconnected(_) => failed("the hashing pool stopped"),
        });
        // The queue as this call left it: how far behind the hashing threads are.
        metrics::gauge!("sportello_hash_queue_depth").set(self.jobs.len() as f64);
        sent?;
        answer.await.map_err(|_| failed("a hashing thread died"))
    }

    /// A salted argon2id hash of `secret`.
    pub async fn hash(&self, secret: String) -> Result<PinHash, HashError> {
        self.submit(|reply| Job::Hash { secret, reply }).await?
    }

    /// Whether `secret` matches `hash` (in constant time for a given hash).
    pub async fn verify(&self, secret: String, hash: &PinHash) -> Result<bool, HashError> {
        let phc = hash.as_phc().to_owned();
        self.submit(|reply| Job::Verify { secret, phc, reply }).await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Hasher {
        Hasher::new(&HashParams { memory_kib: 1024, iterations: 1, ..HashParams::default() })
            .expect("params")
    }

    #[tokio::test]
    async fn a_pin_verifies_against_its_own_hash_only() {
        let hasher = cheap();
        let hash = hasher.hash("ABCDEFGH".into()).await.expect("hash");
        assert!(hash.as_phc().starts_with("$argon2id$"));
        assert!(!hash.as_phc().contains("ABCDEFGH"));
        assert!(hasher.verify("ABCDEFGH".into(), &hash).await.expect("verify"));
        assert!(!hasher.verify("ABCDEFGJ".into(), &hash).await.expect("verify"));
    }

    #[tokio::test]
    async fn hashes_are_standard_phc_strings_that_any_argon2_implementation_reads() {
        use argon2::{PasswordHasher, PasswordVerifier};
        let hasher = cheap();
        let ours = hasher.hash("ABCDEFGH".into()).await.expect("hash");
        let parsed = PasswordHash::new(ours.as_phc()).expect("PHC");
        assert!(Argon2::default().verify_password(b"ABCDEFGH", &parsed).is_ok());
        let theirs = Argon2::default()
            .hash_password(b"ABCDEFGH", &SaltString::generate(&mut OsRng))
            .expect("hash")
            .to_string();
        assert!(hasher
            .verify("ABCDEFGH".into(), &PinHash::from_phc(theirs))
            .await
            .expect("verify"));
    }

    /// The niceness of each of this process's threads named `argon2-…`, as Linux reports it.
    fn hashing_threads_niceness() -> Vec<i32> {
        let tasks = std::fs::read_dir("/proc/self/task").expect("Linux");
        tasks
            .filter_map(|t| {
                let dir = t.ok()?.path();
                let name = std::fs::read_to_string(dir.join("comm")).ok()?;
                if !name.starts_with("argon2-") {
                    return None;
                }
                let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
                // After the name in parentheses: state is field 3, nice field 19.
                stat.rsplit_once(") ")?.1.split(' ').nth(16)?.parse().ok()
            })
            .collect()
    }

    #[tokio::test]
    async fn hashing_gives_way_to_answers_that_need_no_hash() {
        let hasher = cheap();
        hasher.hash("ABCDEFGH".into()).await.expect("hash");
        let niceness = hashing_threads_niceness();
        assert!(!niceness.is_empty(), "the hashing threads are found");
        assert!(niceness.iter().all(|&n| n == HASHING_NICENESS), "{niceness:?}");
    }

    #[tokio::test]
    async fn the_same_pin_hashes_differently_each_time() {
        let hasher = cheap();
        let a = hasher.hash("ABCDEFGH".into()).await.expect("hash");
        let b = hasher.hash("ABCDEFGH".into()).await.expect("hash");
        assert_ne!(a, b, "salted");
    }

    #[tokio::test]
    async fn a_flood_beyond_the_queue_is_refused_at_once() {
        let hasher = Hasher::new(&HashParams {
            memory_kib: 1024,
            iterations: 1,
            workers: 1,
            max_queued: 0,
            ..HashParams::default()
        })
        .expect("params");
        let results = futures_join(&hasher).await;
        assert!(results.iter().any(|r| matches!(r, Err(HashError::Overloaded))));
    }

    #[tokio::test]
    async fn work_for_callers_who_left_is_dropped_before_it_starts() {
        let hasher = Hasher::new(&HashParams {
            memory_kib: 8 * 1024,
            iterations: 2,
            workers: 1,
            max_queued: 64,
            ..HashParams::default()
        })
        .expect("params");
        // Sixty impatient callers queue a hash each and give up after a millisecond.
        for _ in 0..60 {
            let h = hasher.clone();
            let _ = tokio::time::timeout(
                std::time::Duration::from_millis(1),
                h.hash("ABCDEFGH".into()),
            )
            .await;
        }
        // The patient caller behind them is served, and the pool did not hash for the others.
        let started = std::time::Instant::now();
        hasher.hash("ABCDEFGH".into()).await.expect("the patient caller is served");
        assert!(hasher.abandoned_jobs() >= 30, "dropped {}", hasher.abandoned_jobs());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    async fn futures_join(hasher: &Hasher) -> Vec<Result<PinHash, HashError>> {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let h = hasher.clone();
                tokio::spawn(async move { h.hash("ABCDEFGH".into()).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("task"));
        }
        out
    }
}
