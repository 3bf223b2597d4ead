//! notify-svc's settings (`[notify]` in the configuration file).

use serde::{Deserialize, Serialize};
use sportello_platform::config::{ServiceConfig, DEFAULT_IDENTITY_LISTEN, DEFAULT_NOTIFY_LISTEN};
use sportello_platform::server::{ServerSettings, StoreSettings};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub server: ServerSettings,
    #[serde(flatten)]
    pub store: StoreSettings,
    /// Where identity-svc listens: the keys that citizens' session tokens are checked with.
    pub identity_url: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerSettings::on(
                DEFAULT_NOTIFY_LISTEN.parse().expect("valid default address"),
            ),
            store: StoreSettings::default(),
            identity_url: format!("http://{DEFAULT_IDENTITY_LISTEN}"),
        }
    }
}

impl ServiceConfig for Config {
    const NAME: &'static str = "notify";

    fn server(&self) -> &ServerSettings {
        &self.server
    }
}
