//! notify-svc's settings (`[notify]` in the configuration file).

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sportello_platform::config::{ServiceConfig, DEFAULT_IDENTITY_LISTEN, DEFAULT_NOTIFY_LISTEN};
use sportello_platform::server::{ServerSettings, StoreSettings};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub server: ServerSettings,
    #[serde(flatten)]
    pub store: StoreSettings,
    /// Where identity-svc listens: the keys that citizens' session tokens are checked with.
    pub identity_url: String,
    /// How queued messages are handed to their channels.
    #[serde(default)]
    pub dispatch: DispatchSettings,
    /// Email relay; without one, emails are `.eml` files under `<data_dir>/outbox/email`.
    #[serde(default)]
    pub email: Option<SmtpSettings>,
    /// PEC relay (TLS required); without one, `.eml` files under `<data_dir>/outbox/pec`.
    #[serde(default)]
    pub pec: Option<SmtpSettings>,
    /// SMS providers; without one, JSON lines in `<data_dir>/outbox/sms.jsonl`.
    #[serde(default)]
    pub sms: Option<SmsSettings>,
    /// What the local SMS and email sinks report after writing a message, as a provider would.
    #[serde(default)]
    pub sinks: SinkSettings,
    /// Who the institute's emails come from, and the domain of their `Message-ID`s.
    #[serde(default = "default_from")]
    pub mail_from: String,
    #[serde(default = "default_message_id_domain")]
    pub message_id_domain: String,
    /// Services (besides identity-svc) whose own calls are accepted, by name: their Ed25519
    /// public keys (base64url), as `sportello up` arranges for claims-svc.
    #[serde(default)]
    pub trusted_services: std::collections::BTreeMap<String, String>,
}

fn default_from() -> String {
    "INPS <noreply@sportello.local>".into()
}

fn default_message_id_domain() -> String {
    "sportello.local".into()
}

/// The dispatcher's settings (`[notify.dispatch]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct DispatchSettings {
    /// `false` pauses sending: messages are still accepted and wait in QUEUED.
    pub enabled: bool,
    /// Messages claimed at once, and sent concurrently.
    pub batch_size: i64,
    /// Attempts before a message that keeps failing for now is FAILED.
    pub max_attempts: i64,
    /// How long a claimed message is one worker's; a worker that dies leaves it to another then.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often to look for due messages when none was just enqueued here.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The most one send may take before it counts as a temporary failure.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// The first wait before a retry; it doubles per attempt (with jitter), up to 10 minutes.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// Messages per second each channel may send (`[notify.dispatch.rate_limits]`), as agreed
    /// with its provider; a channel left out is not limited.
    pub rate_limits: ChannelRates,
}

/// The local sinks' delivery receipts (`[notify.sinks]`): on embedded defaults the SMS and
/// email sinks report each message DELIVERED `receipt_delay` after it was written, or FAILED when
/// its address matches one of `fail_addresses`, through the path `ReportDelivery` takes; so
/// WatchMessage ends, and the 12-hour queue, the contact center's views and the fallback to email
/// work on `sportello up` as with real providers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct SinkSettings {
    /// `false`: the sinks report nothing, and messages stay SENT as with a provider that never
    /// sends receipts.
    pub report_delivery: bool,
    #[serde(with = "humantime_serde")]
    pub receipt_delay: Duration,
    /// Glob patterns (`*` any run of characters) on the full address: a phone number as stored
    /// (`+39…`) or an email address.
    pub fail_addresses: Vec<String>,
}

impl Default for SinkSettings {
    fn default() -> Self {
        Self {
            report_delivery: true,
            receipt_delay: Duration::from_secs(2),
            fail_addresses: vec!["*@fallisce.example".into(), "*9999999".into()],
        }
    }
}

/// Messages per second, per channel.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelRates {
    pub sms: Option<u32>,
    pub email: Option<u32>,
    pub pec: Option<u32>,
    pub post: Option<u32>,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            batch_size: 64,
            max_attempts: 8,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_millis(250),
            send_timeout: Duration::from_secs(15),
            backoff: Duration::from_secs(2),
            rate_limits: ChannelRates::default(),
        }
    }
}

/// An SMTP relay: `smtp://host:port`, `smtps://user:password@host:465`, or
/// `smtp://host:587?tls=required`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SmtpSettings {
    #[serde(serialize_with = "sportello_platform::config::expose_secret")]
    pub relay: SecretString,
}

/// SMS through a provider's HTTP API, with an optional second provider to fail over to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SmsSettings {
    pub primary: SmsProvider,
    #[serde(default)]
    pub secondary: Option<SmsProvider>,
    /// The sender name the citizen's phone shows.
    #[serde(default = "default_sender")]
    pub sender: String,
}

fn default_sender() -> String {
    "INPS".into()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SmsProvider {
    pub url: String,
    #[serde(serialize_with = "sportello_platform::config::expose_secret")]
    pub token: SecretString,
}

impl Config {
    /// Where the local sinks write what would have been sent.
    pub fn outbox_dir(&self) -> PathBuf {
        self.store.data_dir.join("outbox")
    }

    /// Where letters go for printing.
    pub fn spool_dir(&self) -> PathBuf {
        self.store.data_dir.join("spool")
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerSettings::on(
                DEFAULT_NOTIFY_LISTEN.parse().expect("valid default address"),
            ),
            store: StoreSettings::default(),
            identity_url: format!("http://{DEFAULT_IDENTITY_LISTEN}"),
            dispatch: DispatchSettings::default(),
            email: None,
            pec: None,
            sms: None,
            sinks: SinkSettings::default(),
            mail_from: default_from(),
            message_id_domain: default_message_id_domain(),
            trusted_services: Default::default(),
        }
    }
}

impl ServiceConfig for Config {
    const NAME: &'static str = "notify";

    fn server(&self) -> &ServerSettings {
        &self.server
    }
}
