//! `sportello keys DIR`: the keys a deployment of separate processes needs, made once and shared
//! (a Kubernetes Secret mounted at each service's `data_dir/keys`): identity-svc's session
//! signing key, and each calling service's own key. Prints the environment lines that make
//! identity-svc and notify-svc trust the services' public keys, which `sportello up` sets by
//! itself.

use sportello_platform::service_identity::ServiceKey;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    /// The data directory whose `keys/` gets the keys (existing ones are kept).
    #[arg(default_value = "data")]
    pub data_dir: PathBuf,
}

pub fn run(args: KeysArgs) -> anyhow::Result<()> {
    identity_svc::keys::Signer::load_or_generate(&args.data_dir.join("keys/session-ed25519.der"))?;
    let mut lines = Vec::new();
    for name in [gateway::NAME, notify_svc::NAME, claims_svc::NAME] {
        let key = ServiceKey::load_or_generate(&args.data_dir, name)?.public_key();
        let upper = name.to_ascii_uppercase();
        lines.push(format!("SPORTELLO_IDENTITY__TRUSTED_SERVICES__{upper}={key}"));
        if name == claims_svc::NAME {
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
