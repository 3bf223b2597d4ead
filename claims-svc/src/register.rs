//! The names the register of residents (identity-svc) holds, asked as claims-svc: the creditor
//! of a SEPA transfer is named, and claims-svc keeps no anagrafica of its own.

use crate::error::ClaimsError;
use sportello_platform::client::TracedChannel;
use sportello_platform::service_identity::ServiceKey;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::residents_service_client::ResidentsServiceClient;
use std::collections::HashMap;

/// Fiscal codes per call: identity-svc's limit.
const PER_CALL: usize = 1_000;

#[derive(Clone, Debug)]
pub struct Register {
    pub identity: ResidentsServiceClient<TracedChannel>,
    pub me: ServiceKey,
}

impl Register {
    /// "Given-name Surname" of each of `fiscal_codes` on the register; those not on it are left
    /// out. UNAVAILABLE when identity-svc does not answer: a payment file is not made half-named.
    pub async fn names(
        &self,
        fiscal_codes: &[String],
    ) -> Result<HashMap<String, String>, ClaimsError> {
        let mut names = HashMap::new();
        for chunk in fiscal_codes.chunks(PER_CALL) {
            let request = id::BatchGetResidentNamesRequest { fiscal_codes: chunk.to_vec() };
            let mut identity = self.identity.clone();
            let reply = identity.batch_get_resident_names(self.me.request(request)).await;
            let reply = reply.map_err(|e| {
                tracing::warn!(code = ?e.code(), "the register's names are not available");
                ClaimsError::Unavailable("the register of residents")
            })?;
            for r in reply.into_inner().residents {
                names.insert(r.fiscal_code, format!("{} {}", r.given_name, r.surname));
            }
        }
        Ok(names)
    }
}

/// The demo insured-positions registry `sportello up` loads for its demo citizens.
const DEMO_REGISTRY: &str = include_str!("../data/demo-registry.csv");

/// Loads the demo registry: idempotent, so every start of `sportello up` may do it.
pub async fn load_demo(store: &crate::store::Store) -> anyhow::Result<()> {
    let today = chrono::Utc::now().date_naive();
    let mut rows = csv::Reader::from_reader(DEMO_REGISTRY.as_bytes());
    let layout = crate::domain::registry::Layout::from_header(rows.headers()?)
        .map_err(|p| anyhow::anyhow!("demo registry header: {}", p.description))?;
    let mut positions = Vec::new();
    for row in rows.records() {
        let parsed = layout.parse(&row?, today);
        positions.push(parsed.map_err(|p| anyhow::anyhow!("demo registry: {p:?}"))?);
    }
    store.put_positions(positions, "demo").await?;
    tracing::info!("demo insured-positions registry loaded");
    Ok(())
}
