//! argon2id hashing of PINs on a bounded pool of blocking threads. Each hash costs tens of
//! milliseconds of CPU and ~19 MiB of memory, so it must never run on the async executor, and a
//! flood of requests must be turned away quickly rather than queue without bound.

use crate::domain::pin::PinHash;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// argon2id cost parameters; the defaults are OWASP's (m = 19 MiB, t = 2, p = 1).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hashes running at once; default: one per CPU.
    pub workers: usize,
    /// Hashes that may wait for a worker before new ones are refused.
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

/// Hashes and verifies PINs; cheap to clone.
#[derive(Clone)]
pub struct Hasher {
    argon: Arc<Argon2<'static>>,
    running: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher").field("params", self.argon.params()).finish()
    }
}

impl Hasher {
    pub fn new(params: &HashParams) -> Result<Self, HashError> {
        let p = Params::new(params.memory_kib, params.iterations, params.parallelism, None)
            .map_err(|e| HashError::Failed(e.to_string()))?;
        Ok(Self {
            argon: Arc::new(Argon2::new(Algorithm::Argon2id, Version::V0x13, p)),
            running: Arc::new(Semaphore::new(params.workers.max(1))),
            admitted: Arc::new(Semaphore::new(params.workers.max(1) + params.max_queued)),
        })
    }

    async fn on_pool<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let _admitted =
            self.admitted.clone().try_acquire_owned().map_err(|_| HashError::Overloaded)?;
        let _running =
            self.running.clone().acquire_owned().await.map_err(|_| HashError::Overloaded)?;
        let argon = self.argon.clone();
        tokio::task::spawn_blocking(move || work(&argon))
            .await
            .map_err(|e| HashError::Failed(e.to_string()))
    }

    /// A salted argon2id hash of `secret`.
    pub async fn hash(&self, secret: String) -> Result<PinHash, HashError> {
        self.on_pool(move |argon| {
            let salt = SaltString::generate(&mut OsRng);
            argon
                .hash_password(secret.as_bytes(), &salt)
                .map(|h| PinHash::from_phc(h.to_string()))
                .map_err(|e| HashError::Failed(e.to_string()))
        })
        .await?
    }

    /// Whether `secret` matches `hash` (in constant time for a given hash).
    pub async fn verify(&self, secret: String, hash: &PinHash) -> Result<bool, HashError> {
        let phc = hash.as_phc().to_owned();
        self.on_pool(move |argon| {
            let parsed = PasswordHash::new(&phc).map_err(|e| HashError::Failed(e.to_string()))?;
            Ok(argon.verify_password(secret.as_bytes(), &parsed).is_ok())
        })
        .await?
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
