//! Layered configuration: built-in defaults, then a TOML file (`sportello.toml` in the working
//! directory, or the one given with `--config`/`SPORTELLO_CONFIG`), then `SPORTELLO_*`
//! environment variables, then command-line flags.
//!
//! The file has shared keys at the top (`data_dir`, `database_url`) and one table per service
//! (`[gateway]`, `[identity]`, `[claims]`, `[notify]`). In the environment, shared keys are
//! `SPORTELLO_DATA_DIR`, `SPORTELLO_DATABASE_URL`, and a service's are
//! `SPORTELLO_<SERVICE>__<KEY>` (e.g. `SPORTELLO_GATEWAY__LISTEN=0.0.0.0:50051`).

use crate::server::{ServerSettings, StoreSettings};
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

/// A service's settings: a section of the configuration file with its server settings in it.
pub trait ServiceConfig: Default + Serialize + DeserializeOwned {
    /// The service's name, which is also its section (`[identity]`) and environment prefix
    /// (`SPORTELLO_IDENTITY__`).
    const NAME: &'static str;

    fn server(&self) -> &ServerSettings;

    /// Defaults, then the file, then the environment.
    fn load(file: &Path) -> Result<Self, ConfigError> {
        load(Self::NAME, Self::default(), file)
    }
}

/// An error message that names the offending key, for people fixing their configuration.
pub fn describe(err: &figment::Error) -> String {
    let mut shown = err.to_string();
    if !err.path.is_empty() {
        shown.push_str(&format!(" (key `{}`", err.path.join(".")));
        if let Some(meta) = &err.metadata {
            shown.push_str(&format!(", from {}", meta.name));
        }
        shown.push(')');
    }
    shown
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
    let figment = figment
        .merge(Figment::from(Toml::file(file)).focus(section))
        .merge(Env::prefixed(&prefix).split("__"));
    figment.extract().map_err(|err| {
        // serde's `flatten` forgets which key failed; the shared settings, extracted on their
        // own, name it.
        if err.path.is_empty() {
            let precise = [
                figment.extract::<ServerSettings>().err(),
                figment.extract::<StoreSettings>().err(),
            ];
            if let Some(precise) = precise.into_iter().flatten().find(|e| !e.path.is_empty()) {
                return Box::new(precise);
            }
        }
        Box::new(err)
    })
}

/// Writes a secret out, for `#[serde(serialize_with = "...")]`: only for the layered
/// configuration's defaults, never for display.
pub fn expose_secret<S: serde::Serializer>(
    secret: &secrecy::SecretString,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use secrecy::ExposeSecret;
    serializer.serialize_str(secret.expose_secret())
}

#[cfg(test)]
// figment's `Jail` fixes the closures' error type; its size is not ours to choose.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::time::Duration;

    #[derive(Debug, Serialize, Deserialize)]
    struct Service {
        #[serde(flatten)]
        server: ServerSettings,
        #[serde(flatten)]
        store: StoreSettings,
        peer_url: String,
    }

    fn defaults() -> Service {
        Service {
            server: ServerSettings::on(DEFAULT_IDENTITY_LISTEN.parse().expect("addr")),
            store: StoreSettings::default(),
            peer_url: "http://default".into(),
        }
    }

    #[test]
    fn defaults_apply_when_nothing_is_configured() {
        figment::Jail::expect_with(|_jail| {
            let c = load("identity", defaults(), Path::new("sportello.toml")).expect("load");
            assert_eq!(c.server.listen.to_string(), DEFAULT_IDENTITY_LISTEN);
            assert_eq!(c.store.data_dir, PathBuf::from("data"));
            assert!(c.store.database_url.is_empty(), "SQLite by default");
            Ok(())
        });
    }

    #[test]
    fn the_file_overrides_defaults_and_the_environment_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "sportello.toml",
                r#"
                data_dir = "/srv/sportello"
                database_url = "postgres://file/db"
                [identity]
                listen = "127.0.0.1:6000"
                drain_timeout = "3s"
                peer_url = "http://from-file"
                [claims]
                listen = "127.0.0.1:6001"
                "#,
            )?;
            jail.set_env("SPORTELLO_DATABASE_URL", "postgres://env/db");
            jail.set_env("SPORTELLO_IDENTITY__PEER_URL", "http://from-env");
            jail.set_env("SPORTELLO_CLAIMS__PEER_URL", "http://not-mine");
            let c = load("identity", defaults(), Path::new("sportello.toml")).expect("load");
            assert_eq!(c.server.listen.to_string(), "127.0.0.1:6000", "file over default");
            assert_eq!(c.server.drain_timeout, Duration::from_secs(3));
            assert_eq!(c.store.data_dir, PathBuf::from("/srv/sportello"), "shared key from file");
            assert_eq!(c.store.database_url, "postgres://env/db", "environment over file");
            assert_eq!(c.peer_url, "http://from-env", "a service reads only its own section");
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_names_its_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SPORTELLO_IDENTITY__LISTEN", "not an address");
            let err = load("identity", defaults(), Path::new("sportello.toml")).expect_err("bad");
            let shown = describe(&err);
            assert!(shown.contains("listen"), "{shown}");
            Ok(())
        });
    }
}
