//! claims-svc's settings (`[claims]` in the configuration file).

use serde::{Deserialize, Serialize};
use sportello_platform::config::{
    ConfigError, DEFAULT_CLAIMS_LISTEN, DEFAULT_IDENTITY_LISTEN, DEFAULT_NOTIFY_LISTEN,
};
use sportello_platform::server::{ServerSettings, StoreSettings};
use std::path::Path;

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

impl Config {
    /// Defaults, then the file, then the environment (see `sportello_platform::config`).
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        sportello_platform::config::load("claims", Self::default(), file)
    }
}
