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
            catalogue_refresh: Duration::from_secs(30),
        }
    }
}

impl ServiceConfig for Config {
    const NAME: &'static str = "claims";

    fn server(&self) -> &ServerSettings {
        &self.server
    }
}
