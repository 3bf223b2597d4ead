//! The operator's session between commands: opened by LoginStaff, kept in a file of mode 0600
//! (the tokens are the operator's credentials for up to 12 hours), renewed with its refresh
//! token when the short-lived session token runs out, ended by Logout.

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::contact_center_service_client::ContactCenterServiceClient;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use sportello_proto::privacy::v1::privacy_service_client::PrivacyServiceClient;
use std::fs::DirBuilder;
use std::io::IsTerminal as _;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// A session token with less than this left is renewed first, so that it does not run out on
/// its way through the gateway.
const RENEW_AHEAD_SECS: i64 = 30;

/// Why a command needs `sportello operator login` first (exit status 3).
#[derive(Debug)]
pub struct NeedsLogin(pub String);

impl std::fmt::Display for NeedsLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NeedsLogin {}

/// Where the session is kept.
pub struct TokenFile(PathBuf);

impl TokenFile {
    /// `path`, else `$XDG_CONFIG_HOME/sportello/operator-token`, else
    /// `$HOME/.config/sportello/operator-token` (the XDG default).
    pub fn at(path: Option<PathBuf>) -> anyhow::Result<Self> {
        if let Some(path) = path {
            return Ok(Self(path));
        }
        // XDG says a relative $XDG_CONFIG_HOME is invalid and to be ignored.
        let xdg = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from);
        let config = match xdg.filter(|dir| dir.is_absolute()) {
            Some(dir) => dir,
            None => {
                let home = std::env::var_os("HOME").filter(|h| !h.is_empty());
                let home = home.context("no $HOME: give --token-file")?;
                PathBuf::from(home).join(".config")
            }
        };
        Ok(Self(config.join("sportello").join("operator-token")))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    fn load(&self) -> anyhow::Result<Saved> {
        let text = match std::fs::read_to_string(&self.0) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(NeedsLogin("not logged in".into()).into())
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.0.display())),
        };
        serde_json::from_str(&text).map_err(|_| {
            let why = format!("{} does not hold a session this command wrote", self.0.display());
            NeedsLogin(why).into()
        })
    }

    /// Replaces the file at once, created 0600: the tokens are never readable by others.
    fn save(&self, saved: &Saved) -> anyhow::Result<()> {
        if let Some(dir) = self.0.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        crate::atomic_file::replace(&self.0, &serde_json::to_vec_pretty(saved)?, 0o600)
    }

    fn remove(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(&self.0) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", self.0.display()))
            }
            _ => Ok(()),
        }
    }
}

/// What the token file holds. No `Debug`: it would print the tokens.
#[derive(Serialize, Deserialize)]
pub struct Saved {
    /// The gateway the session was opened at: its tokens mean nothing elsewhere.
    pub gateway: String,
    pub username: String,
    access_token: String,
    /// Unix seconds.
    access_token_expires_at: i64,
    refresh_token: String,
    /// Unix seconds: the end of the session, however often it is renewed.
    pub refresh_token_expires_at: i64,
}

impl Saved {
    fn of(gateway: &str, username: &str, session: id::Session) -> Self {
        let secs = |t: Option<prost_types::Timestamp>| t.map_or(0, |t| t.seconds);
        Self {
            gateway: gateway.to_owned(),
            username: username.to_owned(),
            access_token_expires_at: secs(session.access_token_expires_at),
            refresh_token_expires_at: secs(session.refresh_token_expires_at),
            access_token: session.access_token,
            refresh_token: session.refresh_token,
        }
    }
}

fn unix_now() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
}

/// A plaintext HTTP/2 channel to the gateway, connected now so that a wrong URL or a gateway
/// that is down is said at once.
async fn connect(gateway: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(gateway.to_owned())
        .with_context(|| format!("{gateway:?} is not a gateway URL (http://host:port)"))?;
    endpoint
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .with_context(|| format!("cannot reach the gateway at {gateway}"))
}

/// The password for `username`: prompted for without echo on a terminal, else (or with
/// `--password-stdin`) the first line of standard input, so scripts can pipe it in.
pub fn read_password(username: &str, from_stdin: bool) -> anyhow::Result<String> {
    let password = if !from_stdin && std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("Password for {username}: "))?
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).context("reading the password")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    anyhow::ensure!(!password.is_empty(), "no password given");
    Ok(password)
}

/// Opens a session for `username` at `gateway` and keeps it in `file`.
pub async fn login(
    file: &TokenFile,
    gateway: &str,
    username: &str,
    password: String,
) -> anyhow::Result<Saved> {
    let channel = connect(gateway).await?;
    let request = id::LoginStaffRequest { username: username.to_owned(), password };
    let reply = IdentityServiceClient::new(channel.clone()).login_staff(request).await?;
    let session = reply.into_inner().session.context("the gateway answered without a session")?;
    let role = session.role;
    let saved = Saved::of(gateway, username, session);
    if role != id::PrincipalRole::Operator as i32 {
        // Told now rather than at the first call; the session is of no use here, so it ends.
        let _ = identity(&channel, &saved.access_token)?.logout(id::LogoutRequest {}).await;
        let role = id::PrincipalRole::try_from(role).map_or("unknown", |r| r.as_str_name());
        anyhow::bail!("{username} is not a contact-center operator (role {role})");
    }
    file.save(&saved)?;
    Ok(saved)
}

/// Opens a citizen's session (LoginWithPin) at `gateway` and keeps it in `file`: for the
/// commands a citizen runs on their own data (`my-access`, `my-export`).
pub async fn login_citizen(
    file: &TokenFile,
    gateway: &str,
    fiscal_code: &str,
    pin: String,
) -> anyhow::Result<Saved> {
    let channel = connect(gateway).await?;
    let request = id::LoginWithPinRequest { fiscal_code: fiscal_code.to_owned(), pin };
    let reply = IdentityServiceClient::new(channel).login_with_pin(request).await?;
    let session = reply.into_inner().session.context("the gateway answered without a session")?;
    let saved = Saved::of(gateway, &fiscal_code.trim().to_ascii_uppercase(), session);
    file.save(&saved)?;
    Ok(saved)
}

/// Ends the session in `file` at the gateway it was opened at and deletes the file. Whether
/// there was a session still going to end.
pub async fn logout(file: &TokenFile) -> anyhow::Result<bool> {
    let operator = match Operator::open(file, None).await {
        Ok(operator) => operator,
        // Nothing left to end at the gateway; the file goes all the same.
        Err(e) if e.is::<NeedsLogin>() => {
            file.remove()?;
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    identity(&operator.channel, &operator.saved.access_token)?.logout(id::LogoutRequest {}).await?;
    file.remove()?;
    Ok(true)
}

/// Puts the session token on every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

fn bearer(token: &str) -> anyhow::Result<Bearer> {
    let value = format!("Bearer {token}").parse().context("the session token is not ASCII")?;
    Ok(Bearer(value))
}

fn identity(
    channel: &Channel,
    token: &str,
) -> anyhow::Result<IdentityServiceClient<InterceptedService<Channel, Bearer>>> {
    Ok(IdentityServiceClient::with_interceptor(channel.clone(), bearer(token)?))
}

/// A session ready for calls.
pub struct Operator {
    channel: Channel,
    saved: Saved,
    bearer: Bearer,
}

impl Operator {
    /// The session in `file`, renewed first if its token is about to run out. `gateway`, when
    /// given, must be the one the session was opened at.
    pub async fn open(file: &TokenFile, gateway: Option<&str>) -> anyhow::Result<Self> {
        let mut saved = file.load()?;
        let same = |g: &str| g.trim_end_matches('/') == saved.gateway.trim_end_matches('/');
        if let Some(gateway) = gateway.filter(|g| !same(g)) {
            let why = format!("the session is for {}, not {gateway}", saved.gateway);
            return Err(NeedsLogin(why).into());
        }
        let channel = connect(&saved.gateway).await?;
        let now = unix_now();
        if saved.access_token_expires_at - RENEW_AHEAD_SECS <= now {
            if saved.refresh_token.is_empty() || saved.refresh_token_expires_at <= now {
                return Err(NeedsLogin("the session has ended".into()).into());
            }
            let request = id::RefreshSessionRequest { refresh_token: saved.refresh_token.clone() };
            let session =
                match IdentityServiceClient::new(channel.clone()).refresh_session(request).await {
                    Ok(reply) => reply.into_inner().session.context("no session in the answer")?,
                    // Logged out elsewhere, or the refresh token used already by another command
                    // running at the same moment: each works once.
                    Err(status) if status.code() == tonic::Code::Unauthenticated => {
                        return Err(NeedsLogin("the session has ended".into()).into());
                    }
                    Err(status) => return Err(status.into()),
                };
            saved = Saved::of(&saved.gateway, &saved.username, session);
            file.save(&saved)?;
        }
        let bearer = bearer(&saved.access_token)?;
        Ok(Self { channel, saved, bearer })
    }

    pub fn username(&self) -> &str {
        &self.saved.username
    }

    pub fn contact_center(
        &self,
    ) -> ContactCenterServiceClient<InterceptedService<Channel, Bearer>> {
        ContactCenterServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    /// A citizen's own data (a citizen's session only).
    pub fn privacy(&self) -> PrivacyServiceClient<InterceptedService<Channel, Bearer>> {
        PrivacyServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }
}
