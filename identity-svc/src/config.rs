//! identity-svc's settings (`[identity]` in the configuration file).

use crate::hashing::HashParams;
use serde::{Deserialize, Serialize};
use sportello_platform::config::ConfigError;
use sportello_platform::server::{ServerSettings, StoreSettings};
use std::path::Path;

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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerSettings::on(
                sportello_platform::config::DEFAULT_IDENTITY_LISTEN
                    .parse()
                    .expect("valid default address"),
            ),
            store: StoreSettings::default(),
            notify_url: format!(
                "http://{}",
                sportello_platform::config::DEFAULT_NOTIFY_LISTEN
            ),
            pin_hash: HashParams::default(),
        }
    }
}

impl Config {
    /// Defaults, then the file, then the environment (see `sportello_platform::config`).
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        sportello_platform::config::load("identity", Self::default(), file)
    }
}
