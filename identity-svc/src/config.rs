//! identity-svc's settings (`[identity]` in the configuration file).

use crate::hashing::HashParams;
use crate::oidc::ProviderConfig;
use crate::provider_keys::FetchRules;
use crate::sessions::SessionRules;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sportello_platform::auth::Role;
use sportello_platform::config::{ServiceConfig, DEFAULT_IDENTITY_LISTEN, DEFAULT_NOTIFY_LISTEN};
use sportello_platform::server::{ServerSettings, StoreSettings};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub server: ServerSettings,
    #[serde(flatten)]
    pub store: StoreSettings,
    /// Where notify-svc listens.
    pub notify_url: String,
    /// argon2id parameters for PINs.
    pub pin_hash: HashParams,
    pub pins: PinRules,
    pub sessions: SessionRules,
    /// SPID and CIE identity providers whose assertions are accepted.
    #[serde(default)]
    pub identity_providers: Vec<ProviderConfig>,
    /// How providers' `jwks_url`s are fetched (https only, time and size bounds).
    pub jwks_fetch: FetchRules,
    /// Sportello services (name → Ed25519 public key, base64url) whose own signed tokens are
    /// accepted for internal RPCs (signing keys, ended sessions) and, for `gateway`, CNS
    /// assertions. `sportello up` fills it in from the services' key files.
    #[serde(default)]
    pub trusted_services: BTreeMap<String, String>,
    /// How long a staff account stays locked after too many wrong passwords the first time;
    /// each next lockout lasts twice as long, until a successful login or `sportello staff
    /// unlock`.
    #[serde(with = "humantime_serde")]
    pub staff_lockout: Duration,
    /// Staff accounts (username → role and argon2id password hash, from
    /// `sportello hash-password`), created or updated at start-up; accounts no longer listed are
    /// disabled and their sessions ended.
    #[serde(default)]
    pub staff: BTreeMap<String, StaffAccount>,
    /// Load the demo register of residents (`identity-svc/data/demo-residents.csv`, built in)
    /// at start-up; `sportello up` turns it on unless told otherwise. Idempotent.
    #[serde(default)]
    pub demo_register: bool,
    /// How large the files of a PIN dispositivo request may be (each, and both together).
    #[serde(default)]
    pub uploads: crate::conversion::UploadLimits,
    /// The identity-document registry (`POST {document_type, number, issuer, holder_fiscal_code,
    /// surname, given_name, birth_date}` → MATCH / NO_MATCH / UNKNOWN). Empty: none, and every
    /// conversion goes to the back office.
    #[serde(default)]
    pub document_verification_url: String,
    #[serde(with = "humantime_serde", default = "default_document_verification_timeout")]
    pub document_verification_timeout: Duration,
    /// How long after a conversion is granted the contact center can still revoke it at the
    /// citizen's request.
    #[serde(with = "humantime_serde", default = "default_conversion_hold")]
    pub conversion_hold: Duration,
}

fn default_document_verification_timeout() -> Duration {
    Duration::from_secs(3)
}

fn default_conversion_hold() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// A staff account as configured. The hash is held as a secret: printed, it would let anyone
/// who reads a log guess the password offline.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StaffAccount {
    pub role: Role,
    #[serde(serialize_with = "sportello_platform::config::expose_secret")]
    pub password_hash: SecretString,
}

/// The PIN lifecycle's tunables.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PinRules {
    /// Consecutive wrong PINs that lock the PIN.
    pub max_failed_attempts: u32,
    /// How long a first half may take to arrive before operators see the request as stuck.
    #[serde(with = "humantime_serde")]
    pub first_half_grace: Duration,
    /// How long a ripristino confirmation code lives.
    #[serde(with = "humantime_serde")]
    pub recovery_code_ttl: Duration,
    /// Wrong confirmation codes allowed before the recovery must start again.
    pub recovery_max_attempts: u32,
    /// Ripristino starts accepted per fiscal code per hour (the rest get the same answer and
    /// nothing happens).
    #[serde(default = "default_per_hour")]
    pub recovery_starts_per_hour: u32,
    /// Notices that anonymous calls (a PIN request for a code that has one, a recovery start)
    /// may send to one citizen's contacts per hour: no one can bomb a citizen's phone.
    #[serde(default = "default_per_hour")]
    pub notices_per_hour: u32,
    /// Exports of their own data (ExportMyData) one citizen may make per hour. Each is
    /// announced to every contact on file, so a thief holding the PIN cannot flood them; an
    /// honest citizen needs one.
    #[serde(default = "default_per_hour")]
    pub exports_per_hour: u32,
    /// A recovery start is answered no sooner than this after it arrived, whatever happened:
    /// with the same work on every path, this hides what noise is left (registered or not,
    /// right contacts or not).
    #[serde(with = "humantime_serde", default = "default_recovery_answer_time")]
    pub recovery_answer_time: Duration,
}

fn default_recovery_answer_time() -> Duration {
    Duration::from_millis(200)
}

fn default_per_hour() -> u32 {
    3
}

impl Default for PinRules {
    fn default() -> Self {
        Self {
            max_failed_attempts: 5,
            first_half_grace: Duration::from_secs(12 * 3600),
            recovery_code_ttl: Duration::from_secs(15 * 60),
            recovery_max_attempts: 5,
            recovery_starts_per_hour: default_per_hour(),
            notices_per_hour: default_per_hour(),
            exports_per_hour: default_per_hour(),
            recovery_answer_time: default_recovery_answer_time(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerSettings::on(
                DEFAULT_IDENTITY_LISTEN.parse().expect("valid default address"),
            ),
            store: StoreSettings::default(),
            notify_url: format!("http://{DEFAULT_NOTIFY_LISTEN}"),
            pin_hash: HashParams::default(),
            pins: PinRules::default(),
            sessions: SessionRules::default(),
            identity_providers: Vec::new(),
            jwks_fetch: FetchRules::default(),
            staff: BTreeMap::new(),
            demo_register: false,
            trusted_services: BTreeMap::new(),
            staff_lockout: Duration::from_secs(15 * 60),
            uploads: crate::conversion::UploadLimits::default(),
            document_verification_url: String::new(),
            document_verification_timeout: default_document_verification_timeout(),
            conversion_hold: default_conversion_hold(),
        }
    }
}

impl ServiceConfig for Config {
    const NAME: &'static str = "identity";

    fn server(&self) -> &ServerSettings {
        &self.server
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_the_configuration_shows_no_secret() {
        let mut config = Config::default();
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
        config.staff.insert(
            "op.one".into(),
            StaffAccount { role: Role::Operator, password_hash: hash.into() },
        );
        let shown = format!("{config:?}");
        assert!(shown.contains("op.one"), "{shown}");
        assert!(!shown.contains("argon2id"), "{shown}");
        let written = serde_json::to_string(&config).expect("serialises for the layering");
        assert!(written.contains(hash));
    }
}
