//! identity-svc: who citizens are and how they prove it. It owns the PIN lifecycle of
//! DOMAIN.md §4 (request, issuance in two halves, first access, change, ripristino, revocation,
//! unlocking) and the contact center's view of it; stores PINs only as argon2id hashes; and
//! sends PIN halves and notices through notify-svc.

pub mod api;
pub mod citizen_data;
pub mod config;
pub mod contact_center;
pub mod conversion;
pub mod domain;
pub mod error;
pub mod hashing;
pub mod keys;
pub mod login;
pub mod notifier;
pub mod oidc;
pub mod operator_auth;
pub mod pin_watch;
pub mod pins;
pub mod provider_keys;
pub mod relay;
pub mod residents;
pub mod sessions;
pub mod store;

pub use config::Config;

use sportello_platform::client;
use sportello_platform::db::Migrations;
use sportello_platform::health::Needs;
use sportello_platform::server::Storage;
use sportello_proto::identity::v1::contact_center_service_server::{
    self, ContactCenterServiceServer,
};
use sportello_proto::identity::v1::identity_service_server::{self, IdentityServiceServer};
use sportello_proto::identity::v1::pin_conversion_back_office_service_server::{
    self, PinConversionBackOfficeServiceServer,
};
use sportello_proto::identity::v1::pin_conversion_service_server::{
    self, PinConversionServiceServer,
};
use sportello_proto::identity::v1::residents_service_server::{self, ResidentsServiceServer};
use sportello_proto::notify::v1::notify_service_client::NotifyServiceClient;
use sportello_proto::privacy::v1::citizen_data_service_server::{
    self as citizen_data_service_server, CitizenDataServiceServer,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

static MIGRATIONS: Migrations = sportello_platform::embed_migrations!();

/// Lifts the lockout of staff account `username` in the database of `config` (`sportello staff
/// unlock`), audited as the action of `by`. Returns whether the account exists.
pub async fn unlock_staff(config: &Config, username: &str, by: &str) -> anyhow::Result<bool> {
    let url = config.store.database_url_for("identity")?;
    let db = sportello_platform::db::open(&url, "identity", &MIGRATIONS, 1).await?;
    let keys = sportello_platform::sealed::Keyring::load_or_generate(&config.store.data_dir)?;
    let username = username.trim().to_ascii_lowercase();
    Ok(store::Store::new(db, keys).unlock_staff(&username, by).await?)
}

/// Runs identity-svc on `listener` until `shutdown` is cancelled and in-flight calls have drained.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let client::Backend { channel: notify, dependency: on_notify } = client::backend(
        "sportello.notify.v1.NotifyService",
        &config.notify_url,
        config.server.health_interval,
        shutdown.clone(),
    )?;
    let hasher = hashing::Hasher::new(&config.pin_hash)?;
    let decoy = hasher.hash(uuid::Uuid::new_v4().to_string()).await?;
    let dependencies = vec![on_notify];
    let key_file = config
        .sessions
        .signing_key_file
        .clone()
        .unwrap_or_else(|| config.store.data_dir.join("keys/session-ed25519.der"));
    let signer = keys::Signer::load_or_generate(&key_file)?;
    let secrets = sportello_platform::sealed::Keyring::load_or_generate(&config.store.data_dir)?;
    let verifier = sportello_platform::auth::Verifier::default();
    verifier.set_jwks(signer.jwks()).map_err(anyhow::Error::msg)?;
    for (service, public_key) in &config.trusted_services {
        verifier.trust_service(service, public_key).map_err(|e| {
            anyhow::anyhow!("trusted_services.{service}: not an Ed25519 public key: {e}")
        })?;
    }
    let follow_revoked = shutdown.clone();
    let providers = provider_keys::load(&config.identity_providers, &config.jwks_fetch).await?;
    tokio::spawn(provider_keys::refresh(
        config.identity_providers.clone(),
        config.jwks_fetch.clone(),
        providers.clone(),
        std::time::Duration::from_secs(600),
        shutdown.clone(),
    ));
    let relay_stop = shutdown.clone();
    let watch_stop = shutdown.clone();
    let url = config.store.database_url_for("identity")?;
    let blobs_dir = config.store.data_dir.join("blobs");
    let sweep_stop = shutdown.clone();
    sportello_platform::server::serve_with_store(
        Storage { name: "identity", settings: &config.store, migrations: &MIGRATIONS },
        &[
            identity_service_server::SERVICE_NAME,
            contact_center_service_server::SERVICE_NAME,
            residents_service_server::SERVICE_NAME,
            pin_conversion_service_server::SERVICE_NAME,
            pin_conversion_back_office_service_server::SERVICE_NAME,
            citizen_data_service_server::SERVICE_NAME,
        ],
        listener,
        &config.server,
        // Ready once it can tell a valid session from an ended one.
        Needs { dependencies, condition: Some(verifier.ready_condition()) },
        shutdown,
        move |db| async move {
            let store = store::Store::new(db, secrets);
            // Changes of PIN requests reach the citizens watching them on every instance.
            let changes = sportello_platform::changes::Changes::default();
            let every = std::time::Duration::from_millis(250);
            let (pool, source) = (store.pool().clone(), pin_watch::CHANGES);
            changes.follow(&url, pool, source, every, watch_stop.clone());
            let deliveries = pin_watch::Deliveries::default();
            store.seal_cleartext_outbox().await?;
            let blobs = sportello_platform::blobs::FsBlobs::open(blobs_dir).await?;
            tokio::spawn(conversion::sweep_orphans(store.clone(), blobs.clone(), sweep_stop));
            let conversions = conversion::Conversions {
                store: store.clone(),
                blobs: std::sync::Arc::new(blobs),
                prober: config.uploads.prober()?,
                limits: config.uploads.clone(),
                registry: sportello_platform::provider::Provider::configured(
                    &config.document_verification_url,
                    config.document_verification_timeout,
                )?,
                notices_per_hour: config.pins.notices_per_hour,
            };
            if config.demo_register {
                residents::load_demo(&store).await?;
            }
            let mut configured = Vec::new();
            for (username, account) in &config.staff {
                let role = sportello_platform::auth::name_of(account.role);
                let username = username.trim().to_ascii_lowercase();
                let hash = secrecy::ExposeSecret::expose_secret(&account.password_hash);
                store.put_staff(&username, &role, hash).await?;
                configured.push(username);
            }
            for removed in store.disable_staff_except(&configured).await? {
                tracing::info!(username = %removed, "staff account no longer configured: disabled");
            }
            let notifier = notifier::Notifier::new(
                NotifyServiceClient::new(client::traced(notify)),
                signer.clone(),
            );
            let wake = std::sync::Arc::new(tokio::sync::Notify::new());
            tokio::spawn(relay::run(store.clone(), notifier.clone(), wake.clone(), relay_stop));
            // The halves' delivery is notify-svc's: asked once a second for all watchers.
            let follow = deliveries.clone().follow(
                notifier.clone(),
                changes.clone(),
                std::time::Duration::from_secs(1),
                watch_stop,
            );
            tokio::spawn(follow);
            let pins = pins::Pins {
                store: store.clone(),
                hasher,
                notifier,
                rules: config.pins.clone(),
                decoy,
                relay: wake.clone(),
                conversion_hold: config.conversion_hold,
            };
            let sessions = sessions::Sessions { store, signer, rules: config.sessions.clone() };
            // This instance refuses sessions that any instance ended, as the other services do.
            verifier.revoked().await_follower();
            tokio::spawn(verifier.revoked().follow(
                {
                    let sessions = sessions.clone();
                    move |since| {
                        let sessions = sessions.clone();
                        async move { sessions.revoked_since(since).await }
                    }
                },
                sportello_platform::revocation::DEFAULT_POLL,
                follow_revoked,
            ));
            let logins = login::Logins {
                pins: pins.clone(),
                sessions,
                providers,
                verifier: verifier.clone(),
                staff_lockout: config.staff_lockout,
            };
            let authenticate =
                sportello_platform::auth::Authenticate { verifier: verifier.clone() };
            Ok(Routes::new(IdentityServiceServer::with_interceptor(
                api::Identity::new(logins).watching(changes, deliveries),
                authenticate,
            ))
            .add_service(PinConversionServiceServer::with_interceptor(
                conversions.clone(),
                sportello_platform::auth::Authenticate { verifier: verifier.clone() },
            ))
            .add_service(PinConversionBackOfficeServiceServer::with_interceptor(
                conversions,
                sportello_platform::auth::Authenticate { verifier: verifier.clone() },
            ))
            .add_service(ResidentsServiceServer::with_interceptor(
                residents::Residents::new(pins.store.clone()),
                sportello_platform::auth::Authenticate { verifier: verifier.clone() },
            ))
            .add_service(CitizenDataServiceServer::with_interceptor(
                citizen_data::CitizenData::new(pins.clone()),
                sportello_platform::auth::Authenticate { verifier: verifier.clone() },
            ))
            .add_service(ContactCenterServiceServer::with_interceptor(
                api::ContactCenter::new(pins),
                operator_auth::OperatorAuth::new(verifier),
            )))
        },
    )
    .await
}
