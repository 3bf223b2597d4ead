//! notify-svc's settings (`[notify]` in the configuration file).

use serde::{Deserialize, Serialize};
use sportello_platform::config::{ConfigError, DEFAULT_NOTIFY_LISTEN};
use sportello_platform::server::{ServerSettings, StoreSettings};
use std::path::Path;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub server: ServerSettings,
    #[serde(flatten)]
    pub store: StoreSettings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerSettings::on(
                DEFAULT_NOTIFY_LISTEN.parse().expect("valid default address"),
            ),
            store: StoreSettings::default(),
        }
    }
}

impl Config {
    /// Defaults, then the file, then the environment (see `sportello_platform::config`).
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        sportello_platform::config::load("notify", Self::default(), file)
    }
}
