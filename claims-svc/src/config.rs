//! claims-svc's settings (`[claims]` in the configuration file).

use serde::{Deserialize, Serialize};
use sportello_platform::config::{
    ServiceConfig, DEFAULT_CLAIMS_LISTEN, DEFAULT_IDENTITY_LISTEN, DEFAULT_NOTIFY_LISTEN,
};
use sportello_platform::server::{ServerSettings, StoreSettings};

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
        }
    }
}

impl ServiceConfig for Config {
    const NAME: &'static str = "claims";

    fn server(&self) -> &ServerSettings {
        &self.server
    }
}
