//! `sportello keys DIR`: the keys a deployment of separate processes needs, made once and shared
//! (a Kubernetes Secret mounted at each service's `data_dir/keys`): identity-svc's session
//! signing key, each calling service's own key, and the data key that secrets at rest are sealed
//! under (`secrets-<id>.key`). Prints the environment lines that make identity-svc, claims-svc
//! and notify-svc trust the services' public keys, which `sportello up` sets by itself.
//!
//! `sportello keys rotate-secrets DIR` adds a new data key and makes it the one that seals: the
//! services take it within 30 seconds, and open rows sealed under the older keys for as long as
//! those stay in the directory.

use sportello_platform::sealed::Keyring;
use sportello_platform::service_identity::ServiceKey;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: Option<KeysCommand>,
    /// The data directory whose `keys/` gets the keys (existing ones are kept).
    #[arg(default_value = "data")]
    pub data_dir: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Add a new data key for secrets at rest and make it the one that seals; older keys keep
    /// opening what they sealed (remove one only once no row sealed under it is left).
    RotateSecrets {
        /// The data directory whose `keys/` gets the new key.
        #[arg(default_value = "data")]
        data_dir: PathBuf,
    },
}

pub fn run(args: KeysArgs) -> anyhow::Result<()> {
    if let Some(KeysCommand::RotateSecrets { data_dir }) = args.command {
        let id = Keyring::rotate(&data_dir)?;
        let keys = sportello_platform::sealed::keys_dir(&data_dir);
        println!("new data key {id} in {}: it seals from now on", keys.display());
        return Ok(());
    }
    identity_svc::keys::Signer::load_or_generate(&args.data_dir.join("keys/session-ed25519.der"))?;
    Keyring::load_or_generate(&args.data_dir)?;
    let mut lines = Vec::new();
    for name in [gateway::NAME, notify_svc::NAME, claims_svc::NAME] {
        let key = ServiceKey::load_or_generate(&args.data_dir, name)?.public_key();
        let upper = name.to_ascii_uppercase();
        lines.push(format!("SPORTELLO_IDENTITY__TRUSTED_SERVICES__{upper}={key}"));
        if name == claims_svc::NAME {
            lines.push(format!("SPORTELLO_NOTIFY__TRUSTED_SERVICES__{upper}={key}"));
        }
        // The gateway asks claims and notify for a citizen's own data (PrivacyService).
        if name == gateway::NAME {
            lines.push(format!("SPORTELLO_CLAIMS__TRUSTED_SERVICES__{upper}={key}"));
            lines.push(format!("SPORTELLO_NOTIFY__TRUSTED_SERVICES__{upper}={key}"));
        }
    }
    eprintln!(
        "keys in {}; the trust they need, as environment:",
        args.data_dir.join("keys").display()
    );
    for line in lines {
        println!("{line}");
    }
    Ok(())
}
