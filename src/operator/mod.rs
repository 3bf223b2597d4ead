//! `sportello operator …`: the contact center's daily work from a terminal, without grpcurl.
//! It is a client of the gateway like any other (`ContactCenterService`, operator sessions only):
//! `login` opens a staff session and keeps it in a file only the user can read, the other
//! commands send it as `authorization: Bearer …` and renew it with its refresh token while the
//! session lasts (12 hours from the login). Answers print as aligned text, or with `--json` as
//! the response in the canonical proto3 JSON mapping (every field, defaults included), for
//! scripts.
//!
//! Exit status: 0 done; 1 refused or failed (NOT_FOUND, FAILED_PRECONDITION, the gateway
//! unreachable…); 2 bad input (a usage error, or INVALID_ARGUMENT, printed with its field
//! violations); 3 no usable session (not logged in, the session over, UNAUTHENTICATED): run
//! `sportello operator login`.

mod errors;
mod form;
mod output;
mod session;

pub(crate) use session::read_password;

use crate::gateway_addr::Gateway;
use anyhow::Context as _;
use form::ChannelArg;
use output::Output;
use session::{Operator, TokenFile};
use sportello_proto::identity::v1 as id;
use sportello_proto::privacy::v1 as pv;
use std::future::Future;
use std::path::PathBuf;
use tonic::Status;

#[derive(Debug, clap::Args)]
pub struct OperatorArgs {
    /// The gateway, as host:port or http://host:port. `login` defaults to $SPORTELLO_GATEWAY,
    /// else the local suite (127.0.0.1:50051); the other commands use the gateway of the session.
    #[arg(long, env = "SPORTELLO_GATEWAY", global = true, help_heading = "Global options")]
    gateway: Option<Gateway>,
    /// Where the session is kept; default `$XDG_CONFIG_HOME/sportello/operator-token` (or
    /// `~/.config/sportello/operator-token`).
    #[arg(
        long,
        env = "SPORTELLO_OPERATOR_TOKEN_FILE",
        global = true,
        help_heading = "Global options"
    )]
    token_file: Option<PathBuf>,
    /// Print the response as JSON (proto3 JSON mapping) on stdout, and errors as JSON on stderr.
    #[arg(long, global = true, help_heading = "Global options")]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Open a staff session (LoginStaff). The password is prompted for on a terminal, else read
    /// from the first line of standard input.
    Login {
        #[arg(long, env = "SPORTELLO_USERNAME")]
        username: String,
        /// Read the password from the first line of standard input even on a terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Open a citizen's session with the citizen's own PIN (LoginWithPin), for `my-access` and
    /// `my-export`. The PIN is prompted for on a terminal, else read from standard input.
    LoginCitizen {
        fiscal_code: String,
        /// Read the PIN from the first line of standard input even on a terminal.
        #[arg(long)]
        pin_stdin: bool,
    },
    /// End the session everywhere (Logout) and delete the file that kept it.
    Logout,
    #[command(flatten)]
    Desk(Desk),
}

/// What an operator does with a session.
#[derive(Debug, clap::Subcommand)]
enum Desk {
    /// File a PIN request for the caller on the line (RequestPinForCaller): the portal's form,
    /// flag by flag, with the portal's checks.
    RequestPin(Box<form::FormArgs>),
    /// A citizen's credential: PIN state, requests and the delivery of each half, contacts
    /// (masked) (LookupCredential).
    Lookup { fiscal_code: String },
    /// The 12-hour queue: requests whose first half is undelivered past the grace period,
    /// oldest first, with the phone to call back (ListUndeliveredPinRequests).
    Queue(Paging),
    /// After checking the caller's identity by phone, validate a stuck request and send its
    /// first half again, optionally to a corrected contact used this once (ResendFirstHalf).
    Resend {
        request_id: String,
        /// Confirms that the caller's identity was checked by phone.
        #[arg(long)]
        identity_verified: bool,
        /// Send by this channel instead of the request's own.
        #[arg(long, value_enum)]
        channel: Option<ChannelArg>,
        /// A corrected phone (+39…) or address for that channel, for this re-send only.
        #[arg(long)]
        address: Option<String>,
    },
    /// After checking the caller's identity by phone, change one contact on file; the contacts
    /// on file before are told (UpdateContacts).
    UpdateContacts {
        fiscal_code: String,
        /// Confirms that the caller's identity was checked by phone.
        #[arg(long)]
        identity_verified: bool,
        /// The contact to change (sms: the mobile phone).
        #[arg(long, value_enum)]
        channel: ChannelArg,
        /// The new phone (+39…) or address.
        #[arg(long)]
        address: String,
    },
    /// After checking the caller's identity and residence by phone, issue the PIN of a request
    /// waiting for validation (ValidatePendingPinRequest).
    Validate {
        request_id: String,
        /// Confirms that the caller's identity and residence were checked by phone.
        #[arg(long)]
        identity_verified: bool,
    },
    /// Revoke a citizen's PIN; the citizen is told on the contacts on file (RevokePin).
    Revoke {
        fiscal_code: String,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: String,
    },
    /// Unlock a PIN locked by failed attempts; the citizen is told (UnlockPin).
    Unlock {
        fiscal_code: String,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: String,
    },
    /// In a citizen's session (`login-citizen`): who looked at the citizen's data — staff,
    /// patronati, the back office and the services' automatic steps — newest first
    /// (PrivacyService/ListMyDataAccess).
    MyAccess {
        /// Only entries of this service (repeatable).
        #[arg(long, value_enum)]
        service: Vec<ServiceArg>,
        /// Only entries at or after this time (RFC 3339, e.g. 2026-01-01T00:00:00Z).
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        since: Option<std::time::SystemTime>,
        /// Only entries before this time (RFC 3339).
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        until: Option<std::time::SystemTime>,
        #[command(flatten)]
        paging: Paging,
    },
    /// In a citizen's session (ordinary PIN or more): everything held about the citizen as
    /// JSON Lines, on standard output or into a file (PrivacyService/ExportMyData). The export
    /// is recorded and the citizen told on the contacts on file.
    MyExport {
        /// Write the records here (mode 0600) instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// The audit trail of a fiscal code, or what an operator did (without either: what you
    /// did), newest first (ListAuditEvents).
    Audit {
        fiscal_code: Option<String>,
        /// The operator whose actions to list, instead of a citizen's trail.
        #[arg(long, conflicts_with = "fiscal_code")]
        operator_id: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
}

/// A service of the suite, as `my-access --service` names it.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ServiceArg {
    Identity,
    Claims,
    Notify,
}

impl From<ServiceArg> for pv::Source {
    fn from(s: ServiceArg) -> Self {
        match s {
            ServiceArg::Identity => pv::Source::Identity,
            ServiceArg::Claims => pv::Source::Claims,
            ServiceArg::Notify => pv::Source::Notify,
        }
    }
}

#[derive(Debug, clap::Args)]
struct Paging {
    /// At most this many per page (the service's default is 50, its maximum 500).
    #[arg(long)]
    page_size: Option<i32>,
    /// Start from a previous answer's next-page token.
    #[arg(long)]
    page_token: Option<String>,
    /// Follow the next-page tokens to the end and print every page as one answer.
    #[arg(long, conflicts_with = "page_token")]
    all: bool,
}

/// Runs the command; a failure is printed here and ends the process with its exit status.
pub fn run(args: OperatorArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let json = args.json;
    let logging_in = matches!(args.command, Command::Login { .. });
    let outcome = runtime.block_on(execute(args));
    drop(runtime);
    if let Err(error) = outcome {
        std::process::exit(errors::report(&error, json, logging_in));
    }
    Ok(())
}

async fn execute(args: OperatorArgs) -> anyhow::Result<()> {
    let file = TokenFile::at(args.token_file)?;
    let out = Output { json: args.json };
    match args.command {
        Command::Login { username, password_stdin } => {
            let gateway = args.gateway.unwrap_or_else(Gateway::local);
            let password = session::read_password(&username, password_stdin)?;
            let saved = session::login(&file, gateway.url(), &username, password).await?;
            out.logged_in(&saved)
        }
        Command::LoginCitizen { fiscal_code, pin_stdin } => {
            let gateway = args.gateway.unwrap_or_else(Gateway::local);
            let pin = session::read_password(&fiscal_code, pin_stdin)?;
            let saved = session::login_citizen(&file, gateway.url(), &fiscal_code, pin).await?;
            out.logged_in(&saved)
        }
        Command::Logout => {
            let ended = session::logout(&file).await?;
            out.logged_out(&file, ended)
        }
        Command::Desk(desk) => {
            let operator = Operator::open(&file, args.gateway.as_ref().map(Gateway::url)).await?;
            work(desk, &operator, out).await
        }
    }
}

/// Runs one of the contact center's RPCs in `operator`'s session and prints the answer.
async fn work(desk: Desk, operator: &Operator, out: Output) -> anyhow::Result<()> {
    let mut cc = operator.contact_center();
    match desk {
        Desk::RequestPin(form) => {
            let form = Some(form.into_request());
            let reply = cc.request_pin_for_caller(id::RequestPinForCallerRequest { form }).await?;
            out.reply(&reply.into_inner())
        }
        Desk::Lookup { fiscal_code } => {
            let reply = cc.lookup_credential(id::LookupCredentialRequest { fiscal_code }).await?;
            out.reply(&reply.into_inner())
        }
        Desk::Queue(paging) => {
            let reply = paged(&paging, |page_token| {
                let mut cc = cc.clone();
                let page_size = paging.page_size.unwrap_or_default();
                let request = id::ListUndeliveredPinRequestsRequest { page_size, page_token };
                async move { Ok(cc.list_undelivered_pin_requests(request).await?.into_inner()) }
            })
            .await?;
            out.reply(&reply)
        }
        Desk::Resend { request_id, identity_verified, channel, address } => {
            let request = id::ResendFirstHalfRequest {
                request_id,
                identity_verified,
                channel: channel.map_or(id::DeliveryChannel::Unspecified, Into::into) as i32,
                address: address.unwrap_or_default(),
            };
            out.reply(&cc.resend_first_half(request).await?.into_inner())
        }
        Desk::UpdateContacts { fiscal_code, identity_verified, channel, address } => {
            let channel = id::DeliveryChannel::from(channel) as i32;
            let request =
                id::UpdateContactsRequest { fiscal_code, identity_verified, channel, address };
            out.reply(&cc.update_contacts(request).await?.into_inner())
        }
        Desk::Validate { request_id, identity_verified } => {
            let request = id::ValidatePendingPinRequestRequest { request_id, identity_verified };
            out.reply(&cc.validate_pending_pin_request(request).await?.into_inner())
        }
        Desk::Revoke { fiscal_code, reason } => {
            let request = id::RevokePinRequest { fiscal_code: fiscal_code.clone(), reason };
            let reply = cc.revoke_pin(request).await?.into_inner();
            out.reply_saying(&reply, &format!("{fiscal_code}: PIN revoked; the citizen is told"))
        }
        Desk::Unlock { fiscal_code, reason } => {
            let request = id::UnlockPinRequest { fiscal_code: fiscal_code.clone(), reason };
            let reply = cc.unlock_pin(request).await?.into_inner();
            out.reply_saying(&reply, &format!("{fiscal_code}: PIN unlocked; the citizen is told"))
        }
        Desk::MyAccess { service, since, until, paging } => {
            let sources: Vec<i32> =
                service.into_iter().map(|s| pv::Source::from(s) as i32).collect();
            let (since, until) = (since.map(prost_types::Timestamp::from), until.map(Into::into));
            let reply = paged(&paging, |page_token| {
                let mut privacy = operator.privacy();
                let request = pv::ListMyDataAccessRequest {
                    page_size: paging.page_size.unwrap_or_default(),
                    page_token,
                    sources: sources.clone(),
                    since,
                    until,
                };
                async move { Ok(privacy.list_my_data_access(request).await?.into_inner()) }
            })
            .await?;
            out.reply(&reply)
        }
        Desk::MyExport { output } => {
            let mut stream =
                operator.privacy().export_my_data(pv::ExportMyDataRequest {}).await?.into_inner();
            let mut sink: Box<dyn std::io::Write> = match &output {
                Some(path) => {
                    use std::os::unix::fs::OpenOptionsExt as _;
                    // Everything about a person: readable by its owner only.
                    let file = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    Box::new(std::io::BufWriter::new(file))
                }
                None => Box::new(std::io::stdout().lock()),
            };
            while let Some(chunk) = stream.message().await? {
                sink.write_all(&chunk.data)?;
            }
            sink.flush()?;
            Ok(())
        }
        Desk::Audit { fiscal_code, operator_id, paging } => {
            let fiscal_code = fiscal_code.unwrap_or_default();
            // Neither a citizen nor an operator named: the trail of whoever is logged in.
            let operator_id = match operator_id {
                Some(id) => id,
                None if fiscal_code.is_empty() => operator.username().to_owned(),
                None => String::new(),
            };
            let reply = paged(&paging, |page_token| {
                let mut cc = cc.clone();
                let request = id::ListAuditEventsRequest {
                    fiscal_code: fiscal_code.clone(),
                    operator_id: operator_id.clone(),
                    page_size: paging.page_size.unwrap_or_default(),
                    page_token,
                };
                async move { Ok(cc.list_audit_events(request).await?.into_inner()) }
            })
            .await?;
            out.reply(&reply)
        }
    }
}

/// A list answer that comes in pages.
trait Paged {
    fn next_page_token(&mut self) -> &mut String;
    /// Appends the next page, taking its token.
    fn extend(&mut self, next: Self);
}

impl Paged for id::ListUndeliveredPinRequestsResponse {
    fn next_page_token(&mut self) -> &mut String {
        &mut self.next_page_token
    }
    fn extend(&mut self, next: Self) {
        self.requests.extend(next.requests);
        self.next_page_token = next.next_page_token;
    }
}

impl Paged for pv::ListMyDataAccessResponse {
    fn next_page_token(&mut self) -> &mut String {
        &mut self.next_page_token
    }
    fn extend(&mut self, next: Self) {
        self.entries.extend(next.entries);
        self.next_page_token = next.next_page_token;
    }
}

impl Paged for id::ListAuditEventsResponse {
    fn next_page_token(&mut self) -> &mut String {
        &mut self.next_page_token
    }
    fn extend(&mut self, next: Self) {
        self.events.extend(next.events);
        self.next_page_token = next.next_page_token;
    }
}

/// One page (from `--page-token`, or the first), or with `--all` every page from the first
/// merged into one answer whose next-page token is empty.
async fn paged<R, F, Fut>(paging: &Paging, mut fetch: F) -> Result<R, Status>
where
    R: Paged,
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<R, Status>>,
{
    let mut answer = fetch(paging.page_token.clone().unwrap_or_default()).await?;
    while paging.all && !answer.next_page_token().is_empty() {
        let next = fetch(std::mem::take(answer.next_page_token())).await?;
        answer.extend(next);
    }
    Ok(answer)
}
