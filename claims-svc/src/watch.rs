//! WatchMyClaims: a citizen's claims, live. The stream reads the citizen's claims from the
//! database whenever [`sportello_platform::changes`] says they changed, and sends those whose
//! visible state differs from what it sent last (a version per claim), so that a signal
//! coalesced with others or repeated sends nothing twice and misses nothing.

use crate::api::wire_claim;
use crate::store::{ClaimRecord, ClaimsOf, Store};
use sportello_platform::changes::Snapshot;
use sportello_proto::claims::v1 as wire;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use tonic::Status;

/// The claims a watcher follows at most: the citizen's newest.
const WATCHED: i64 = 100;

/// One citizen's claims as last sent to one watcher.
#[derive(Debug)]
pub struct MyClaims {
    store: Store,
    fiscal_code: String,
    /// The version last sent of each claim, by claim id.
    sent: HashMap<String, u64>,
}

impl MyClaims {
    pub fn new(store: Store, fiscal_code: String) -> Self {
        Self { store, fiscal_code, sent: HashMap::new() }
    }
}

/// What the citizen sees of a claim, as one number: it changes whenever any of it does.
fn version(c: &ClaimRecord) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (c.status.as_str(), c.updated_at, c.redeemed_at, &c.reasons, &c.iban).hash(&mut h);
    h.finish()
}

fn watched(c: &ClaimRecord) -> wire::WatchedClaim {
    wire::WatchedClaim { claim: Some(wire_claim(c)), status_label: c.status.label().to_owned() }
}

impl Snapshot for MyClaims {
    type Message = wire::WatchMyClaimsResponse;

    async fn next(&mut self, first: bool) -> Result<Option<Self::Message>, Status> {
        let claims = self
            .store
            .claims_where(ClaimsOf::Citizen, &self.fiscal_code, None, WATCHED)
            .await
            .map_err(crate::error::ClaimsError::from)?;
        let mut changed = Vec::new();
        for claim in &claims {
            let now = version(claim);
            if self.sent.insert(claim.id.clone(), now) != Some(now) {
                changed.push(watched(claim));
            }
        }
        if changed.is_empty() && !first {
            return Ok(None);
        }
        Ok(Some(wire::WatchMyClaimsResponse { claims: changed, initial: first }))
    }
}
