//! identity-svc's settings (`[identity]` in the configuration file).

use crate::hashing::HashParams;
use crate::oidc::ProviderConfig;
use crate::sessions::SessionRules;
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
}

/// A staff account as configured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StaffAccount {
    pub role: Role,
    pub password_hash: String,
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
}

impl Default for PinRules {
    fn default() -> Self {
        Self {
            max_failed_attempts: 5,
            first_half_grace: Duration::from_secs(12 * 3600),
            recovery_code_ttl: Duration::from_secs(15 * 60),
            recovery_max_attempts: 5,
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
            staff: BTreeMap::new(),
            trusted_services: BTreeMap::new(),
            staff_lockout: Duration::from_secs(15 * 60),
        }
    }
}

impl ServiceConfig for Config {
    const NAME: &'static str = "identity";

    fn server(&self) -> &ServerSettings {
        &self.server
    }
}
