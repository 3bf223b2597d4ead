//! The `sportello.claims.v1.ClaimsService` handlers.

use crate::catalogue::Catalogue;
use crate::domain::Benefit;
use sportello_proto::claims::v1 as wire;
use sportello_proto::claims::v1::claims_service_server::ClaimsService;
use tonic::{Request, Response, Status};

#[derive(Clone, Debug)]
pub struct Claims {
    catalogue: Catalogue,
}

impl Claims {
    pub fn new(catalogue: Catalogue) -> Self {
        Self { catalogue }
    }
}

impl From<Benefit> for wire::Benefit {
    fn from(b: Benefit) -> Self {
        wire::Benefit {
            code: b.code,
            title: b.title,
            legal_basis: b.legal_basis,
            amount_cents: b.amount_cents,
            ceiling_cents: b.ceiling_cents,
            simplified_pin_allowed: b.simplified_pin_allowed,
        }
    }
}

#[tonic::async_trait]
impl ClaimsService for Claims {
    async fn list_benefits(
        &self,
        _request: Request<wire::ListBenefitsRequest>,
    ) -> Result<Response<wire::ListBenefitsResponse>, Status> {
        Ok(Response::new(wire::ListBenefitsResponse::clone(&self.catalogue.current())))
    }
}
