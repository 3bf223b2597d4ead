//! The gateway's settings (`[gateway]` in the configuration file).

use serde::{Deserialize, Serialize};
use sportello_platform::config::{
    ServiceConfig, DEFAULT_CLAIMS_LISTEN, DEFAULT_GATEWAY_LISTEN, DEFAULT_IDENTITY_LISTEN,
    DEFAULT_NOTIFY_LISTEN,
};
use sportello_platform::server::ServerSettings;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub server: ServerSettings,
    /// Each backend: one URL, or several separated by commas (instances of one service). A
    /// host name is resolved again every `resolve_every`, and every address it resolves to is
    /// an instance (a Kubernetes headless Service's name gives one per ready pod).
    pub identity_url: String,
    pub claims_url: String,
    pub notify_url: String,
    /// How often backend host names are resolved again.
    #[serde(with = "humantime_serde")]
    pub resolve_every: Duration,
    pub limits: Limits,
    /// Where the gateway keeps its own key (`keys/gateway-service-ed25519.der`, generated on
    /// first run), with which it proves itself to identity-svc and vouches for CNS cards (which
    /// also need `tls.client_ca_file`).
    pub data_dir: PathBuf,
    /// The calling systems the gateway knows (a portal backend, a patronato's software), by
    /// name: each is the unit of fairness for the calls it forwards, with a bound of its own,
    /// instead of the address it calls from.
    pub callers: BTreeMap<String, Caller>,
}

/// A calling system, recognised by its client credential (`x-sportello-caller: <name>:<secret>`)
/// or, where the gateway terminates TLS and asks for client certificates, by its certificate.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Caller {
    /// SHA-256 (hex) of the secret it sends. The secret is a random 256-bit value made for the
    /// calling system (`openssl rand -hex 32`), not a human password: a fast hash is as hard to
    /// reverse as argon2 there, and argon2 on every call would cost the gateway milliseconds of
    /// CPU per call.
    pub secret_sha256: Option<String>,
    /// SHA-256 fingerprint (hex) of the DER client certificate it presents.
    pub certificate_sha256: Option<String>,
    /// Calls it may hold open at once; default `limits.max_in_flight_per_caller`.
    pub max_in_flight: Option<usize>,
}

impl Caller {
    /// A calling system that sends `secret`, configured as its digest.
    pub fn with_secret(secret: &str) -> Self {
        Self { secret_sha256: Some(sha256_hex(secret.as_bytes())), ..Self::default() }
    }
}

/// SHA-256 of `bytes` in lowercase hex, as `secret_sha256` and `certificate_sha256` take it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Bounds that keep the gateway answering under overload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Limits {
    /// Calls in flight at once across all clients; beyond it calls are refused at once with
    /// RESOURCE_EXHAUSTED rather than queued.
    pub max_in_flight: usize,
    /// Of those, calls of one method (`/package.Service/Method`) at once: a flood of one kind of
    /// call (click day's submissions, a login storm) leaves the rest of the gateway to every
    /// other call, a citizen's cheap reads included (`METHOD_AT_CAPACITY` beyond).
    pub max_in_flight_per_method: usize,
    /// Calls open at once from one client address, whatever they wait for, for callers that are
    /// neither a known calling system nor a logged-in principal; beyond it such calls from that
    /// address are refused at once with RESOURCE_EXHAUSTED `TOO_MANY_CALLS_IN_FLIGHT_FROM_ADDRESS`.
    pub max_in_flight_per_address: usize,
    /// Calls one logged-in principal (a citizen, a staff member) may hold open at once, whatever
    /// address or calling system they come through (`TOO_MANY_CALLS_IN_FLIGHT_FOR_CITIZEN`).
    pub max_in_flight_per_principal: usize,
    /// Calls a known calling system may hold open at once unless its own entry says otherwise
    /// (`TOO_MANY_CALLS_IN_FLIGHT_FOR_CALLER`).
    pub max_in_flight_per_caller: usize,
    /// The largest request message accepted, in bytes (gRPC framing included).
    pub max_request_bytes: usize,
    /// How long a request message may take to arrive once its call has started.
    #[serde(with = "humantime_serde")]
    pub max_receive_time: Duration,
    /// The longest deadline a call may have; calls without one get this one.
    #[serde(with = "humantime_serde")]
    pub max_deadline: Duration,
    /// The longest a live stream (a method that streams its response, e.g. WatchMyClaims) may
    /// stay open; the caller's deadline, if shorter, ends it sooner. The backend ends it too
    /// when its session ends or its token expires.
    #[serde(with = "humantime_serde")]
    pub max_stream_lifetime: Duration,
    /// Live streams open at once per principal (a citizen's portal in a few tabs).
    pub max_streams_per_principal: usize,
    /// Live streams open at once across the gateway.
    pub max_streams: usize,
    /// Calls per client address (all calls, public ones included).
    pub per_address: RateLimit,
    /// Calls per logged-in principal.
    pub per_principal: RateLimit,
}

/// A token bucket: `per_second` refill, up to `burst` at once.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_in_flight: 2048,
            // Half the gateway: one method's flood can take no more.
            max_in_flight_per_method: 1024,
            // A quarter of the gateway: a carrier-grade NAT in front of many citizens still gets
            // far more than it needs, and one attacker's address cannot hold the rest.
            max_in_flight_per_address: 512,
            // A person has a page or an app open, a few calls at once: a few dozen is more than
            // anyone honest holds, and far below what would crowd the others out.
            max_in_flight_per_principal: 32,
            // A portal backend forwards a whole population's calls over a few connections: it
            // may hold as many as the gateway itself works on at once, and then some, so that
            // the gateway-wide bound, not its own, is what it meets under load.
            max_in_flight_per_caller: 4096,
            // What the services accept (tonic's default decoding limit).
            max_request_bytes: 4 * 1024 * 1024,
            // A request message is a form, a few kilobytes: seconds are generous even on a
            // poor mobile link.
            max_receive_time: Duration::from_secs(5),
            max_deadline: Duration::from_secs(30),
            // Tokens last 15 minutes: a stream outliving its token is ended by its backend.
            max_stream_lifetime: Duration::from_secs(3600),
            max_streams_per_principal: 4,
            // A few kilobytes each across the gateway and the backend (`sportello bench watch`).
            max_streams: 50_000,
            // A flood guard, not a quota: on click day many citizens share one carrier-grade NAT.
            per_address: RateLimit { per_second: 20_000, burst: 40_000 },
            per_principal: RateLimit { per_second: 20, burst: 40 },
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerSettings::on(
                DEFAULT_GATEWAY_LISTEN.parse().expect("valid default address"),
            ),
            identity_url: format!("http://{DEFAULT_IDENTITY_LISTEN}"),
            claims_url: format!("http://{DEFAULT_CLAIMS_LISTEN}"),
            notify_url: format!("http://{DEFAULT_NOTIFY_LISTEN}"),
            // Kubernetes' DNS caches for 5 s: sooner would see nothing new.
            resolve_every: Duration::from_secs(5),
            limits: Limits::default(),
            data_dir: PathBuf::from("data"),
            callers: BTreeMap::new(),
        }
    }
}

impl ServiceConfig for Config {
    const NAME: &'static str = "gateway";

    fn server(&self) -> &ServerSettings {
        &self.server
    }
}
