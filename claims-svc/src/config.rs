//! claims-svc's settings (`[claims]` in the configuration file).

use serde::{Deserialize, Serialize};
use sportello_platform::config::{
    ServiceConfig, DEFAULT_CLAIMS_LISTEN, DEFAULT_IDENTITY_LISTEN, DEFAULT_NOTIFY_LISTEN,
};
use sportello_platform::server::{ServerSettings, StoreSettings};
use std::time::Duration;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub server: ServerSettings,
    #[serde(flatten)]
    pub store: StoreSettings,
    /// Where identity-svc listens.
    pub identity_url: String,
    /// Where notify-svc listens.
    pub notify_url: String,
    /// How often the benefit catalogue, served from memory, is read again from the database,
    /// so that a change made elsewhere shows within this time.
    #[serde(with = "humantime_serde")]
    pub catalogue_refresh: Duration,
    /// The bank's account-verification service (IBAN and fiscal code); empty: none, and the
    /// back office verifies accounts by hand.
    pub account_verification_url: String,
    #[serde(with = "humantime_serde")]
    pub account_verification_timeout: Duration,
    /// Whether this instance decides submitted claims and relays their notices (on by default;
    /// off in tests that look at claims before any decision).
    pub background: bool,
    /// The institute's account the benefits are paid from (the debtor of the SEPA files).
    pub payments: crate::store::Debtor,
    /// Load the demo insured-positions registry (`claims-svc/data/demo-registry.csv`: the demo
    /// citizen Mario Rossi, a professional in the Gestione separata), as `sportello up` does so
    /// that a first claim works end to end.
    #[serde(default)]
    pub demo_registry: bool,
    /// Services whose own Ed25519 keys (base64url) claims-svc trusts, by name: the gateway, which
    /// asks for a citizen's own data on the citizen's behalf.
    #[serde(default)]
    pub trusted_services: std::collections::BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerSettings::on(
                DEFAULT_CLAIMS_LISTEN.parse().expect("valid default address"),
            ),
            store: StoreSettings::default(),
            identity_url: format!("http://{DEFAULT_IDENTITY_LISTEN}"),
            notify_url: format!("http://{DEFAULT_NOTIFY_LISTEN}"),
            // The remaining budgets change with every claim: ListBenefits shows them a second
            // late at most.
            catalogue_refresh: Duration::from_secs(1),
            account_verification_url: String::new(),
            account_verification_timeout: Duration::from_secs(5),
            background: true,
            // A placeholder account: configure the institute's own.
            payments: crate::store::Debtor {
                name: "INPS - Istituto Nazionale della Previdenza Sociale".into(),
                iban: "IT60X0542811101000000123456".into(),
                bic: None,
            },
            demo_registry: false,
            trusted_services: Default::default(),
        }
    }
}

impl ServiceConfig for Config {
    const NAME: &'static str = "claims";

    fn server(&self) -> &ServerSettings {
        &self.server
    }
}
