//! Layered configuration: built-in defaults, then a TOML file (`sportello.toml` in the working
//! directory, or the one given with `--config`/`SPORTELLO_CONFIG`), then `SPORTELLO_*`
//! environment variables, then command-line flags.
//!
//! The file has shared keys at the top (`data_dir`, `database_url`) and one table per service
//! (`[gateway]`, `[identity]`, `[claims]`, `[notify]`). In the environment, shared keys are
//! `SPORTELLO_DATA_DIR`, `SPORTELLO_DATABASE_URL`, and a service's are
//! `SPORTELLO_<SERVICE>__<KEY>` (e.g. `SPORTELLO_GATEWAY__LISTEN=0.0.0.0:50051`).

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Where each service listens unless configured otherwise.
pub const DEFAULT_GATEWAY_LISTEN: &str = "127.0.0.1:50051";
pub const DEFAULT_IDENTITY_LISTEN: &str = "127.0.0.1:50052";
pub const DEFAULT_CLAIMS_LISTEN: &str = "127.0.0.1:50053";
pub const DEFAULT_NOTIFY_LISTEN: &str = "127.0.0.1:50054";

/// Why a configuration could not be loaded (names the key and where it came from).
pub type ConfigError = Box<figment::Error>;

/// Keys shared by every service, read from the top of the file and from `SPORTELLO_<KEY>`.
pub const SHARED_KEYS: &[&str] = &["data_dir", "database_url"];

/// The configuration file to read: the one named, else `$SPORTELLO_CONFIG`, else
/// `./sportello.toml` (which may be absent).
pub fn file(named: Option<&Path>) -> PathBuf {
    named
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("SPORTELLO_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("sportello.toml"))
}

/// Loads the settings of service `section` (e.g. "identity") over `defaults`.
pub fn load<T>(section: &str, defaults: T, file: &Path) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned,
{
    let prefix = format!("SPORTELLO_{}__", section.to_ascii_uppercase());
    let shared =
        Figment::from(Toml::file(file)).merge(Env::prefixed("SPORTELLO_").only(SHARED_KEYS));
    let mut figment = Figment::from(Serialized::defaults(defaults));
    for key in SHARED_KEYS {
        if let Ok(value) = shared.find_value(key) {
            figment = figment.merge(Serialized::default(key, value));
        }
    }
    figment
        .merge(Figment::from(Toml::file(file)).focus(section))
        .merge(Env::prefixed(&prefix))
        .extract()
        .map_err(Box::new)
}
