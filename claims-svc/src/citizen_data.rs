//! claims-svc's part of a citizen's "who looked at my data" and "take my data with me": its
//! audit trail about the citizen (staff reads, decisions, payments, patronati's filings), and
//! everything it holds about them (the insured position eligibility is decided on, claims with
//! their history, mandates). For the gateway only.

use crate::store::Store;
use sportello_platform::citizen_data::{self as data, unavailable, Kind};
use sportello_proto::privacy::v1::citizen_data_service_server::CitizenDataService;
use sportello_proto::privacy::v1::{
    ActorRole, ExportCitizenDataRequest, ListAccessEntriesRequest, ListAccessEntriesResponse,
    Source,
};
use tonic::{Request, Response, Status};

/// How the records name this service.
const SOURCE: &str = "claims";

const INSURED_POSITION: Kind = Kind {
    name: "insured_position",
    sql: "SELECT position, imported_at FROM insured_positions WHERE fiscal_code = $1",
    json: &["position"],
};

/// A claim and its history: submitted, decided (with reasons), redeemed, payment ordered, paid.
const CLAIMS: Kind = Kind {
    name: "claim",
    // The account masked as everywhere else (`Iban::masked`): an ordinary PIN reads it, and
    // only a dispositive one may change where money goes.
    sql: "SELECT c.id, c.protocol_number, c.benefit_code, c.status, c.amount_cents, \
          substr(c.iban, 1, 4) || ' **** ' || substr(c.iban, length(c.iban) - 3) AS iban_masked, \
          c.child_fiscal_code, c.reasons, c.contacts, c.filed_by_role, \
          CASE WHEN c.filed_by_role = 'PATRONATO' THEN c.filed_by_id END AS filed_by_patronato, \
          c.submitted_at, c.updated_at, c.redeemed_at, b.execution_date AS payment_execution_date, \
          b.created_at AS payment_ordered_at, b.confirmed_at AS paid_at \
          FROM claims c LEFT JOIN payment_batches b ON b.id = c.payment_batch_id \
          WHERE c.fiscal_code = $1 ORDER BY c.submitted_at, c.id",
    json: &["contacts"],
};

const MANDATES: Kind = Kind {
    name: "mandate",
    sql: "SELECT id, patronato_id, signed_form_reference, registered_at, revoked_at \
          FROM mandates WHERE fiscal_code = $1 ORDER BY registered_at, id",
    json: &[],
};

#[derive(Clone)]
pub struct CitizenData {
    store: Store,
}

impl CitizenData {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

/// Who acted on an audit row: the role recorded with it (staff reads), else told from what was
/// done — the citizen's own filings, the automatic decider, a patronato's filings and mandates,
/// and the back office's decisions and payments.
fn role(row: &data::AuditRow, fiscal_code: &str) -> ActorRole {
    if let Some(role) = data::recorded_role(row) {
        return role;
    }
    if row.operator_id == fiscal_code {
        return ActorRole::Citizen;
    }
    match (row.operator_id.as_str(), row.action.as_str()) {
        ("automatic", _) => ActorRole::System,
        (_, "SubmitClaim" | "RegisterMandate" | "UpdatePaymentDetails") => ActorRole::Patronato,
        _ => ActorRole::Backoffice,
    }
}

#[tonic::async_trait]
impl CitizenDataService for CitizenData {
    async fn list_access_entries(
        &self,
        request: Request<ListAccessEntriesRequest>,
    ) -> Result<Response<ListAccessEntriesResponse>, Status> {
        let q = data::trail_query(&request)?;
        let rows =
            data::audit_rows(self.store.db(), &q, Source::Claims).await.map_err(unavailable)?;
        let entries = data::entries(&rows, Source::Claims, |row| role(row, &q.fiscal_code));
        Ok(Response::new(ListAccessEntriesResponse { entries }))
    }

    type ExportCitizenDataStream = data::ExportStream;

    async fn export_citizen_data(
        &self,
        request: Request<ExportCitizenDataRequest>,
    ) -> Result<Response<Self::ExportCitizenDataStream>, Status> {
        let fiscal_code = data::export_of(&request)?;
        let db = self.store.db().clone();
        let place = data::export_place()?;
        let kinds = vec![(&INSURED_POSITION, None), (&CLAIMS, None), (&MANDATES, None)];
        Ok(Response::new(data::export_kinds(place, db, SOURCE, fiscal_code, kinds)))
    }
}
