//! Who may call what through the gateway: one table, read top to bottom, checked on every call.
//! A method missing from the table is refused: a new RPC is closed until someone decides who
//! may call it (a test fails until they do).

use crate::stack::Gate;
use sportello_platform::auth::{Level, Role};
use sportello_platform::error::with_reason;
use tonic::{Code, Status};

/// What a method requires of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, with no session: logins, PIN requests, the benefit catalogue.
    Public,
    /// A session of one of these roles, at this level or above.
    Session { roles: &'static [Role], min_level: Level },
    /// Never from outside: service-to-service only.
    Internal,
}

use Access::{Internal, Public, Session};

const CITIZEN: &[Role] = &[Role::Citizen];
const EVERYONE: &[Role] = &[Role::Citizen, Role::Operator, Role::Patronato, Role::Backoffice];
const OPERATOR: &[Role] = &[Role::Operator];
const BACKOFFICE: &[Role] = &[Role::Backoffice];
const PATRONATO: &[Role] = &[Role::Patronato];
/// Who files claims: citizens for themselves, patronati under a mandate.
const FILERS: &[Role] = &[Role::Citizen, Role::Patronato];

/// A simplified PIN reaches only one's own profile and notifications (and, when they exist, the
/// six COVID-19 claim RPCs); everything else needs an ordinary PIN or more.
pub const TABLE: &[(&str, Access)] = &[
    // identity: becoming someone
    ("sportello.identity.v1.IdentityService/RequestPin", Public),
    ("sportello.identity.v1.IdentityService/CompleteFirstAccess", Public),
    ("sportello.identity.v1.IdentityService/StartPinRecovery", Public),
    ("sportello.identity.v1.IdentityService/ConfirmPinRecovery", Public),
    ("sportello.identity.v1.IdentityService/GetPinRequestStatus", Public),
    ("sportello.identity.v1.IdentityService/LoginWithPin", Public),
    ("sportello.identity.v1.IdentityService/LoginWithIdentityProvider", Public),
    ("sportello.identity.v1.IdentityService/LoginWithCertificate", Public),
    ("sportello.identity.v1.IdentityService/LoginStaff", Public),
    ("sportello.identity.v1.IdentityService/RefreshSession", Public),
    // identity: being someone
    (
        "sportello.identity.v1.IdentityService/GetProfile",
        Session { roles: EVERYONE, min_level: Level::Simplified },
    ),
    (
        "sportello.identity.v1.IdentityService/Logout",
        Session { roles: EVERYONE, min_level: Level::Simplified },
    ),
    // live progress of one's own PIN request (identity-svc sends only the caller's own)
    (
        "sportello.identity.v1.IdentityService/WatchMyPinRequest",
        Session { roles: CITIZEN, min_level: Level::Simplified },
    ),
    (
        "sportello.identity.v1.IdentityService/ChangePin",
        Session { roles: CITIZEN, min_level: Level::Ordinary },
    ),
    ("sportello.identity.v1.IdentityService/GetSigningKeys", Internal),
    ("sportello.identity.v1.IdentityService/ListRevokedSessions", Internal),
    // the contact center
    (
        "sportello.identity.v1.ContactCenterService/*",
        Session { roles: OPERATOR, min_level: Level::Ordinary },
    ),
    // the register of residents, which decides where PIN letters go
    (
        "sportello.identity.v1.ResidentsService/ImportResidents",
        Session { roles: BACKOFFICE, min_level: Level::Ordinary },
    ),
    ("sportello.identity.v1.ResidentsService/BatchGetResidentNames", Internal),
    // PIN dispositivo: the citizen with an ordinary PIN asks; the back office decides
    (
        "sportello.identity.v1.PinConversionService/*",
        Session { roles: CITIZEN, min_level: Level::Ordinary },
    ),
    (
        "sportello.identity.v1.PinConversionBackOfficeService/*",
        Session { roles: BACKOFFICE, min_level: Level::Ordinary },
    ),
    // claims: the catalogue is public; the COVID-19 claim RPCs take a simplified PIN (the
    // service checks each benefit's own level, and that a citizen reaches only their claims)
    ("sportello.claims.v1.ClaimsService/ListBenefits", Public),
    ("sportello.claims.v1.ClaimsService/GetBenefit", Public),
    (
        "sportello.claims.v1.ClaimsService/SubmitClaim",
        Session { roles: FILERS, min_level: Level::Simplified },
    ),
    (
        "sportello.claims.v1.ClaimsService/GetClaim",
        Session { roles: EVERYONE, min_level: Level::Simplified },
    ),
    (
        "sportello.claims.v1.ClaimsService/ListClaims",
        Session { roles: EVERYONE, min_level: Level::Simplified },
    ),
    (
        "sportello.claims.v1.ClaimsService/WithdrawClaim",
        Session { roles: CITIZEN, min_level: Level::Simplified },
    ),
    // filed with a simplified PIN; claims-svc asks an ordinary one to redeem (issue 11)
    (
        "sportello.claims.v1.ClaimsService/RedeemBabySittingBonus",
        Session { roles: CITIZEN, min_level: Level::Simplified },
    ),
    // where a claim's money goes: claims-svc asks a dispositive session and names the level
    (
        "sportello.claims.v1.ClaimsService/UpdatePaymentDetails",
        Session { roles: CITIZEN, min_level: Level::Ordinary },
    ),
    (
        "sportello.claims.v1.ClaimsService/RegisterMandate",
        Session { roles: PATRONATO, min_level: Level::Ordinary },
    ),
    (
        "sportello.claims.v1.ClaimsService/ListMandates",
        Session { roles: FILERS, min_level: Level::Simplified },
    ),
    (
        "sportello.claims.v1.ClaimsService/RevokeMandate",
        Session { roles: CITIZEN, min_level: Level::Simplified },
    ),
    // live status of one's own claims (claims-svc sends only the caller's own)
    (
        "sportello.claims.v1.ClaimsService/WatchMyClaims",
        Session { roles: CITIZEN, min_level: Level::Simplified },
    ),
    (
        "sportello.claims.v1.ClaimsBackOfficeService/*",
        Session { roles: BACKOFFICE, min_level: Level::Ordinary },
    ),
    // notifications
    (
        "sportello.notify.v1.NotifyService/ListMyMessages",
        Session { roles: CITIZEN, min_level: Level::Simplified },
    ),
    (
        "sportello.notify.v1.NotifyService/GetMyMessage",
        Session { roles: CITIZEN, min_level: Level::Simplified },
    ),
    // the contact center following a citizen's messages (each lookup audited by notify-svc)
    (
        "sportello.notify.v1.NotifyService/GetMessage",
        Session { roles: OPERATOR, min_level: Level::Ordinary },
    ),
    (
        "sportello.notify.v1.NotifyService/ListMessages",
        Session { roles: OPERATOR, min_level: Level::Ordinary },
    ),
    (
        "sportello.notify.v1.NotifyService/WatchMessage",
        Session { roles: OPERATOR, min_level: Level::Ordinary },
    ),
    // receipts come from the providers' adapters, which are services of ours
    ("sportello.notify.v1.NotifyService/ReportDelivery", Internal),
    ("sportello.notify.v1.NotifyService/EnqueueMessage", Internal),
    ("sportello.notify.v1.NotifyService/BatchGetMessages", Internal),
    ("sportello.notify.v1.NotifyService/ResendMessage", Internal),
    ("sportello.notify.v1.NotifyService/ListTemplates", Internal),
    // a citizen's own data, merged by the gateway from every service's part (issue 25): who
    // touched it at any level; the whole of it, which moves it elsewhere, with an ordinary PIN or
    // more
    (
        "sportello.privacy.v1.PrivacyService/ListMyDataAccess",
        Session { roles: CITIZEN, min_level: Level::Simplified },
    ),
    (
        "sportello.privacy.v1.PrivacyService/ExportMyData",
        Session { roles: CITIZEN, min_level: Level::Ordinary },
    ),
    // each service's part, asked by the gateway with its own key
    ("sportello.privacy.v1.CitizenDataService/*", Internal),
];

/// The rule for `/package.Service/Method`: the method's own row, else its service's `/*` row,
/// else [`Access::Internal`].
pub fn access(path: &str) -> Access {
    let method = path.trim_start_matches('/');
    let service = method.split_once('/').map(|(s, _)| s).unwrap_or(method);
    TABLE
        .iter()
        .find(|(m, _)| *m == method)
        .or_else(|| TABLE.iter().find(|(m, _)| m.strip_suffix("/*") == Some(service)))
        .map_or(Internal, |(_, a)| *a)
}

/// The refusal of a method that is never callable from outside.
pub fn internal_method() -> Status {
    with_reason(
        Code::PermissionDenied,
        "not callable from outside",
        "INTERNAL_METHOD",
        "gateway.sportello",
    )
}

/// Looks up the rule of the called method, refuses internal methods, and hands the rule on to
/// the authentication below.
#[derive(Clone, Copy, Debug)]
pub struct Policy;

impl Gate for Policy {
    type Held = ();

    fn admit<B>(&self, req: &mut http::Request<B>) -> Result<(), Status> {
        let rule = access(req.uri().path());
        if rule == Internal {
            return Err(internal_method());
        }
        req.extensions_mut().insert(rule);
        Ok(())
    }
}

/// Whether a caller of `role` at `level` may call a method with rule `access`.
pub fn allows(access: Access, role: Role, level: Level) -> bool {
    match access {
        Public => true,
        Internal => false,
        Session { roles, min_level } => roles.contains(&role) && level >= min_level,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Every method of the contract, from the descriptor set the gateway serves.
    fn every_method() -> Vec<String> {
        let set = prost_types::FileDescriptorSet::decode(sportello_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut out = Vec::new();
        for file in set.file {
            let package = file.package().to_owned();
            for service in &file.service {
                for method in &service.method {
                    out.push(format!("{package}.{}/{}", service.name(), method.name()));
                }
            }
        }
        out
    }

    #[test]
    fn every_method_of_the_contract_has_a_rule_of_its_own() {
        for method in every_method() {
            let service = method.split_once('/').map(|(s, _)| s).expect("service");
            let listed = TABLE.iter().any(|(m, _)| *m == method || *m == format!("{service}/*"));
            assert!(listed, "{method} has no row in the policy table");
        }
    }

    #[test]
    fn every_row_of_the_table_names_a_real_method_or_service() {
        let methods = every_method();
        for (row, _) in TABLE {
            let real = match row.strip_suffix("/*") {
                Some(service) => methods.iter().any(|m| m.starts_with(&format!("{service}/"))),
                None => methods.iter().any(|m| m == row),
            };
            assert!(real, "{row} is not in the contract");
        }
    }

    #[test]
    fn a_simplified_pin_reaches_only_profile_logout_own_notifications_and_covid_claims() {
        let reachable: Vec<String> = every_method()
            .into_iter()
            .filter(|m| {
                let a = access(&format!("/{m}"));
                a != Public && allows(a, Role::Citizen, Level::Simplified)
            })
            .collect();
        assert_eq!(
            reachable,
            [
                "sportello.identity.v1.IdentityService/Logout",
                "sportello.identity.v1.IdentityService/GetProfile",
                "sportello.identity.v1.IdentityService/WatchMyPinRequest",
                "sportello.claims.v1.ClaimsService/SubmitClaim",
                "sportello.claims.v1.ClaimsService/GetClaim",
                "sportello.claims.v1.ClaimsService/ListClaims",
                "sportello.claims.v1.ClaimsService/WithdrawClaim",
                "sportello.claims.v1.ClaimsService/RedeemBabySittingBonus",
                "sportello.claims.v1.ClaimsService/ListMandates",
                "sportello.claims.v1.ClaimsService/RevokeMandate",
                "sportello.claims.v1.ClaimsService/WatchMyClaims",
                "sportello.notify.v1.NotifyService/ListMyMessages",
                "sportello.notify.v1.NotifyService/GetMyMessage",
                "sportello.privacy.v1.PrivacyService/ListMyDataAccess",
            ]
        );
    }

    #[test]
    fn a_citizens_own_data_is_for_that_citizen_and_each_services_part_for_services() {
        let list = access("/sportello.privacy.v1.PrivacyService/ListMyDataAccess");
        let export = access("/sportello.privacy.v1.PrivacyService/ExportMyData");
        assert!(allows(list, Role::Citizen, Level::Simplified));
        assert!(!allows(export, Role::Citizen, Level::Simplified));
        assert!(allows(export, Role::Citizen, Level::Ordinary));
        for role in [Role::Operator, Role::Patronato, Role::Backoffice, Role::Service] {
            assert!(!allows(list, role, Level::Dispositive), "{role:?}");
            assert!(!allows(export, role, Level::Dispositive), "{role:?}");
        }
        for method in ["ListAccessEntries", "ExportCitizenData"] {
            let part = access(&format!("/sportello.privacy.v1.CitizenDataService/{method}"));
            assert_eq!(part, Internal, "{method}");
        }
    }

    #[test]
    fn internal_methods_are_closed_to_every_role_and_level() {
        for role in
            [Role::Citizen, Role::Operator, Role::Patronato, Role::Backoffice, Role::Service]
        {
            for level in [Level::Simplified, Level::Ordinary, Level::Dispositive] {
                assert!(!allows(
                    access("/sportello.notify.v1.NotifyService/EnqueueMessage"),
                    role,
                    level
                ));
                assert!(!allows(
                    access("/sportello.identity.v1.IdentityService/GetSigningKeys"),
                    role,
                    level
                ));
            }
        }
    }

    #[test]
    fn the_contact_center_is_for_operators_only() {
        let lookup = access("/sportello.identity.v1.ContactCenterService/LookupCredential");
        assert!(allows(lookup, Role::Operator, Level::Ordinary));
        for role in [Role::Citizen, Role::Patronato, Role::Backoffice] {
            assert!(!allows(lookup, role, Level::Dispositive), "{role:?}");
        }
    }

    #[test]
    fn only_the_back_office_loads_the_register_of_residents() {
        let import = access("/sportello.identity.v1.ResidentsService/ImportResidents");
        assert!(allows(import, Role::Backoffice, Level::Ordinary));
        for role in [Role::Citizen, Role::Operator, Role::Patronato, Role::Service] {
            assert!(!allows(import, role, Level::Dispositive), "{role:?}");
        }
    }

    #[test]
    fn changing_a_pin_needs_more_than_a_simplified_pin() {
        let change = access("/sportello.identity.v1.IdentityService/ChangePin");
        assert!(!allows(change, Role::Citizen, Level::Simplified));
        assert!(allows(change, Role::Citizen, Level::Ordinary));
    }

    #[test]
    fn an_unknown_method_is_closed() {
        assert_eq!(access("/sportello.identity.v1.IdentityService/Nope"), Internal);
        assert_eq!(access("/acme.v1.X/Y"), Internal);
    }
}
