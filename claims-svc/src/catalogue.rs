//! The benefit catalogue, served from memory. It changes only by a back-office action, yet
//! ListBenefits is the hottest read of click day: a database query per call spent most of the
//! service's CPU on thread hand-offs and file locks for six rows that never changed.
//!
//! Kept simple on purpose: a snapshot behind a lock, loaded before the service answers, reloaded
//! by [`Catalogue::reload`] after any write to the catalogue (there is no such RPC yet) and every
//! `refresh` interval, so that a change made through another instance, or straight in the
//! database, shows here within that interval.

use crate::store::Store;
use sportello_proto::claims::v1 as wire;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct Catalogue {
    store: Store,
    snapshot: Arc<RwLock<Arc<wire::ListBenefitsResponse>>>,
}

impl Catalogue {
    /// Loads the catalogue from `store`.
    pub async fn load(store: Store) -> Result<Self, sqlx::Error> {
        let catalogue = Self { store, snapshot: Arc::default() };
        catalogue.reload().await?;
        Ok(catalogue)
    }

    /// Reads the catalogue from the database again and serves that from now on.
    pub async fn reload(&self) -> Result<(), sqlx::Error> {
        let benefits = self.store.benefits().await?;
        let fresh =
            wire::ListBenefitsResponse { benefits: benefits.into_iter().map(Into::into).collect() };
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        Ok(())
    }

    /// The catalogue as last loaded.
    pub fn current(&self) -> Arc<wire::ListBenefitsResponse> {
        self.snapshot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reloads every `every` until `shutdown`; a failed reload keeps the last good catalogue.
    pub async fn refresh(self, every: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "reloading the benefit catalogue failed; serving the last one");
            }
        }
    }
}
