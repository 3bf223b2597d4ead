//! identity-svc's part of a citizen's "who looked at my data" and "take my data with me": its
//! audit trail about the citizen, and everything it holds about them (the register entry, the
//! credential and contacts, PIN requests, logins of the last year, conversion requests), never a
//! PIN, a hash or a code. An export is audited here, and the citizen told of it through the
//! outbox in the same transaction. For the gateway only.

use crate::error::IdentityError;
use crate::pins::{queue_notice, Pins, EXPORTS, HOUR_MS, SELF_SERVICE};
use crate::store::{self, Entry};
use sportello_platform::citizen_data::{self as data, unavailable, Kind};
use sportello_proto::privacy::v1::citizen_data_service_server::CitizenDataService;
use sportello_proto::privacy::v1::{
    ActorRole, ExportCitizenDataRequest, ListAccessEntriesRequest, ListAccessEntriesResponse,
    Source,
};
use std::collections::HashMap;
use tonic::{Request, Response, Status};

/// How the records name this service.
const SOURCE: &str = "identity";

/// Logins are exported for this long back.
const LOGINS_KEPT_MS: i64 = 365 * 24 * 3_600_000;

const RESIDENT: Kind = Kind {
    name: "register_entry",
    sql: "SELECT fiscal_code, surname, given_name, birth_date, sex, birthplace, street, \
          street_number, postal_code, province, municipality, country, foreign_address, \
          updated_at FROM residents WHERE fiscal_code = $1",
    json: &[],
};

const CREDENTIAL: Kind = Kind {
    name: "pin",
    sql: "SELECT pin_state, pin_level, failed_attempts, locked_at, first_access_completed, \
          pins_issued, state_reason, created_at, updated_at FROM citizens WHERE fiscal_code = $1",
    json: &[],
};

const CONTACTS: Kind = Kind {
    name: "contacts",
    sql: "SELECT contacts FROM citizens WHERE fiscal_code = $1",
    json: &["contacts"],
};

const PIN_REQUESTS: Kind = Kind {
    name: "pin_request",
    sql: "SELECT id, outcome, first_half_channel, \
          CASE WHEN filed_by = 'PORTAL' THEN 'PORTAL' ELSE 'CONTACT_CENTER' END AS filed_through, \
          register_check, pending_reason, validated_at, form, contacts, preferred_phone, \
          preferred_time_slot, first_half_message, second_half_message, created_at \
          FROM pin_requests WHERE fiscal_code = $1 ORDER BY created_at, id",
    json: &["form", "contacts"],
};

const CONVERSIONS: Kind = Kind {
    name: "pin_conversion_request",
    sql: "SELECT request_number, status, guardian_fiscal_code, document, signed_form_type, \
          document_type, document_check, failed_checks, rejection_reason, requested_at, \
          uploaded_at, decided_at, revoked_at FROM pin_conversions WHERE fiscal_code = $1 \
          ORDER BY requested_at, id",
    json: &["document"],
};

const LOGINS: Kind = Kind {
    name: "login",
    sql: "SELECT created_at, amr AS method, acr, level, revoked_at AS ended_at FROM sessions \
          WHERE subject = $1 AND role = 'citizen' AND created_at >= $2 ORDER BY created_at, id",
    json: &[],
};

#[derive(Clone)]
pub struct CitizenData {
    pins: Pins,
}

impl CitizenData {
    pub fn new(pins: Pins) -> Self {
        Self { pins }
    }

    /// Who acted on an audit row: the role recorded with it, else told from the actor (the
    /// citizen, a staff account on file, or one of the services' automatic steps).
    fn role(row: &data::AuditRow, fiscal_code: &str, staff: &HashMap<String, String>) -> ActorRole {
        if let Some(role) = data::recorded_role(row) {
            return role;
        }
        if row.operator_id == fiscal_code || row.operator_id == SELF_SERVICE {
            return ActorRole::Citizen;
        }
        match staff.get(&row.operator_id).map(String::as_str) {
            Some("operator") => ActorRole::Operator,
            Some("patronato") => ActorRole::Patronato,
            Some("backoffice") => ActorRole::Backoffice,
            _ => ActorRole::System,
        }
    }

    /// Audits the export and queues its notice to the contacts on file, in one transaction.
    async fn record_export(&self, fiscal_code: &str) -> Result<(), Status> {
        let credential = self.pins.store.credential(fiscal_code).await.map_err(unavailable)?;
        let mut tx = self.pins.store.begin().await.map_err(unavailable)?;
        let max = i64::from(self.pins.rules.exports_per_hour);
        let allowed = store::take_allowance(&mut tx, fiscal_code, EXPORTS, max, HOUR_MS)
            .await
            .map_err(unavailable)?;
        if !allowed {
            return Err(IdentityError::Exhausted {
                reason: "TOO_MANY_EXPORTS",
                message:
                    "hai già scaricato i tuoi dati più volte nell'ultima ora: riprova più tardi",
            }
            .into());
        }
        if let Some(credential) = &credential {
            queue_notice(&mut tx, fiscal_code, &credential.contacts, "DATA_EXPORTED")
                .await
                .map_err(unavailable)?;
        }
        let entry = Entry {
            operator_id: fiscal_code,
            action: "ExportMyData",
            fiscal_code,
            outcome: "OK",
            detail: "",
        };
        sportello_platform::audit::append_as(
            &mut tx,
            &entry,
            sportello_platform::auth::Role::Citizen,
        )
        .await
        .map_err(unavailable)?;
        self.pins.commit(tx).await.map_err(|_| Status::unavailable("retry"))
    }
}

#[tonic::async_trait]
impl CitizenDataService for CitizenData {
    async fn list_access_entries(
        &self,
        request: Request<ListAccessEntriesRequest>,
    ) -> Result<Response<ListAccessEntriesResponse>, Status> {
        let q = data::trail_query(&request)?;
        let db = self.pins.store.db();
        let rows = data::audit_rows(db, &q, Source::Identity).await.map_err(unavailable)?;
        let mut actors: Vec<&str> = rows.iter().map(|r| r.operator_id.as_str()).collect();
        actors.sort_unstable();
        actors.dedup();
        let staff = self.pins.store.staff_roles(&actors).await.map_err(unavailable)?;
        let entries =
            data::entries(&rows, Source::Identity, |row| Self::role(row, &q.fiscal_code, &staff));
        Ok(Response::new(ListAccessEntriesResponse { entries }))
    }

    type ExportCitizenDataStream = data::ExportStream;

    async fn export_citizen_data(
        &self,
        request: Request<ExportCitizenDataRequest>,
    ) -> Result<Response<Self::ExportCitizenDataStream>, Status> {
        let fiscal_code = data::export_of(&request)?;
        // A place first: an export refused for load is neither recorded nor announced.
        let place = data::export_place()?;
        self.record_export(&fiscal_code).await?;
        let db = self.pins.store.db().clone();
        let since = sportello_platform::now_millis() - LOGINS_KEPT_MS;
        let kinds = vec![
            (&RESIDENT, None),
            (&CREDENTIAL, None),
            (&CONTACTS, None),
            (&PIN_REQUESTS, None),
            (&CONVERSIONS, None),
            (&LOGINS, Some(since)),
        ];
        Ok(Response::new(data::export_kinds(place, db, SOURCE, fiscal_code, kinds)))
    }
}

impl store::Store {
    /// The roles of those of `usernames` that are staff accounts (disabled ones included: the
    /// trail still names them).
    pub async fn staff_roles(
        &self,
        usernames: &[&str],
    ) -> Result<HashMap<String, String>, sqlx::Error> {
        let mut roles = HashMap::new();
        for username in usernames {
            let role: Option<String> =
                sqlx::query_scalar("SELECT role FROM staff WHERE username = $1")
                    .bind(*username)
                    .fetch_optional(&self.db().pool)
                    .await?;
            if let Some(role) = role {
                roles.insert((*username).to_owned(), role);
            }
        }
        Ok(roles)
    }
}
