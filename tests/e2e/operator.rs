//! `sportello operator …`, the contact center's command line, run as a process against a real
//! suite's gateway: the session kept in a file only the user reads, the caller's form from
//! flags, tables and JSON, errors with their field violations and exit statuses.

use crate::helpers::*;
use serde_json::Value;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::contact_center_service_client::ContactCenterServiceClient;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;

/// An operator's terminal: `sportello operator` against `gateway`, with a config directory of
/// its own (so the session file is where an operator's would be, and no real one is touched).
struct Desk {
    gateway: String,
    config_home: tempfile::TempDir,
}

/// How a command ended.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "stdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }

    fn error_json(&self) -> Value {
        serde_json::from_str(&self.stderr).unwrap_or_else(|e| panic!("{e}: {}", self.stderr))
    }
}

impl Desk {
    fn at(suite: &Suite) -> Self {
        let config_home = tempfile::tempdir().expect("config dir");
        Self { gateway: url(suite.gateway.addr), config_home }
    }

    fn token_file(&self) -> PathBuf {
        self.config_home.path().join("sportello/operator-token")
    }

    /// The session file as JSON.
    fn saved(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.token_file()).expect("token file"))
            .expect("json")
    }

    async fn run(&self, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Ran {
        self.run_with_input(args, None).await
    }

    async fn run_with_input(
        &self,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
        input: Option<&str>,
    ) -> Ran {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sportello"))
            .arg("operator")
            .args(args)
            .env("XDG_CONFIG_HOME", self.config_home.path())
            .env_remove("SPORTELLO_GATEWAY")
            .env_remove("SPORTELLO_OPERATOR_TOKEN_FILE")
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("sportello operator starts");
        if let Some(input) = input {
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(input.as_bytes()).await.expect("write stdin");
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("sportello operator ends")
            .expect("output");
        Ran {
            code: out.status.code().expect("exited"),
            stdout: String::from_utf8(out.stdout).expect("utf-8"),
            stderr: String::from_utf8(out.stderr).expect("utf-8"),
        }
    }

    /// `login` as the suite's operator, the password piped in as a script would.
    async fn login(&self) -> Ran {
        let args = ["login", "--username", OPERATOR_ID, "--gateway", &self.gateway];
        self.run_with_input(args, Some(&format!("{OPERATOR_PASSWORD}\n"))).await.ok()
    }
}

/// `request-pin` with one flag per field of `form`, as an operator types the caller's answers.
fn form_flags(form: &id::RequestPinRequest) -> Vec<String> {
    // `TIME_SLOT_MORNING` → `morning`.
    let choice = |name: &str, prefix: &str| name.trim_start_matches(prefix).to_lowercase();
    let person = form.personal_data.clone().unwrap_or_default();
    let contacts = form.contacts.clone().unwrap_or_default();
    let born = person.birth_date.map(|d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day));
    let sex = match id::Sex::try_from(person.sex) {
        Ok(id::Sex::Male) => "M",
        Ok(id::Sex::Female) => "F",
        _ => "",
    };
    let mut flags = vec![
        ("--fiscal-code", form.fiscal_code.clone()),
        ("--surname", person.surname),
        ("--given-name", person.given_name),
        ("--birth-date", born.unwrap_or_default()),
        ("--sex", sex.into()),
        ("--birth-province", person.birth_province),
        ("--birth-municipality", person.birth_municipality),
        ("--birth-country", person.birth_country),
    ];
    match form.residence.clone().and_then(|r| r.place) {
        Some(id::residence::Place::Italy(a)) => flags.extend([
            ("--street", a.street),
            ("--street-number", a.street_number),
            ("--postal-code", a.postal_code),
            ("--province", a.province),
            ("--municipality", a.municipality),
        ]),
        Some(id::residence::Place::Abroad(a)) => {
            flags.extend([("--abroad-country", a.country), ("--abroad-address", a.address)])
        }
        None => {}
    }
    let slot = id::TimeSlot::try_from(contacts.preferred_time_slot).unwrap_or_default();
    let channel = id::DeliveryChannel::try_from(form.first_half_channel).unwrap_or_default();
    flags.extend([
        ("--mobile-phone", contacts.mobile_phone),
        ("--home-phone", contacts.home_phone),
        ("--email", contacts.email),
        ("--pec", contacts.pec),
        ("--preferred-time-slot", choice(slot.as_str_name(), "TIME_SLOT_")),
        ("--first-half-channel", choice(channel.as_str_name(), "DELIVERY_CHANNEL_")),
    ]);
    let given = flags.into_iter().filter(|(_, value)| !value.is_empty() && value != "unspecified");
    let mut args = vec!["request-pin".to_owned()];
    args.extend(given.flat_map(|(flag, value)| [flag.to_owned(), value]));
    args
}

/// `args` with `--json`.
fn json(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).chain(["--json"]).collect()
}

/// Files `form` with the command line and returns the request id.
async fn file(desk: &Desk, form: &id::RequestPinRequest) -> String {
    let filed = desk.run(json(&form_flags(form))).await.ok().json();
    filed["requestId"].as_str().expect("request id").to_owned()
}

/// A contact-center call with `token`, straight through the gateway.
async fn lookup_with(suite: &Suite, token: &str) -> Result<(), tonic::Status> {
    let request = with_token(token, id::LookupCredentialRequest { fiscal_code: ROSSI.into() });
    ContactCenterServiceClient::new(suite.gateway_channel().await)
        .lookup_credential(request)
        .await?;
    Ok(())
}

#[tokio::test]
async fn operator_login_keeps_the_session_in_a_file_only_the_user_can_read() {
    let suite = spawn_suite().await;
    let desk = Desk::at(&suite);
    let login = desk.login().await;
    assert!(login.stdout.contains(&format!("Logged in as {OPERATOR_ID}")), "{}", login.stdout);

    let file = desk.token_file();
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("exists").permissions().mode();
    assert_eq!(mode(&file) & 0o777, 0o600, "the tokens are the operator's alone");
    assert_eq!(mode(file.parent().expect("dir")) & 0o777, 0o700);
    let saved = desk.saved();
    assert_eq!(saved["gateway"], desk.gateway.as_str(), "kept with its gateway");
    let token = saved["access_token"].as_str().expect("token").to_owned();
    assert!(!login.stdout.contains(&token) && !login.stderr.contains(&token), "never printed");

    // Later commands find the gateway in the session.
    let lookup = desk.run(["lookup", ROSSI]).await.ok();
    assert!(lookup.stdout.contains("NONE"), "{}", lookup.stdout);

    lookup_with(&suite, &token).await.expect("the session works until the logout");
    let logout = desk.run(["logout"]).await.ok();
    assert!(logout.stdout.contains("Logged out"), "{}", logout.stdout);
    assert!(!file.exists(), "the session file goes");
    eventually("the session to end at the gateway", Duration::from_secs(5), || async {
        lookup_with(&suite, &token).await.is_err()
    })
    .await;
}

#[tokio::test]
async fn operator_commands_without_a_session_say_to_log_in() {
    let suite = spawn_suite().await;
    let desk = Desk::at(&suite);
    let lookup = desk.run(["lookup", ROSSI]).await;
    assert_eq!(lookup.code, 3, "{}", lookup.stderr);
    assert!(lookup.stderr.contains("not logged in"), "{}", lookup.stderr);
    assert!(lookup.stderr.contains("sportello operator login"), "{}", lookup.stderr);
    let as_json = desk.run(["queue", "--json"]).await;
    assert_eq!(as_json.code, 3);
    assert_eq!(as_json.error_json()["error"]["code"], "UNAUTHENTICATED");

    desk.login().await;
    let elsewhere = desk.run(["lookup", ROSSI, "--gateway", "http://127.0.0.1:1"]).await;
    assert_eq!(elsewhere.code, 3, "a session means nothing at another gateway");
    assert!(elsewhere.stderr.contains(&format!("the session is for {}", desk.gateway)));

    let wrong = desk
        .run_with_input(
            ["login", "--username", OPERATOR_ID, "--gateway", &desk.gateway],
            Some("not the password\n"),
        )
        .await;
    assert_eq!(wrong.code, 3, "{}", wrong.stderr);
    assert!(wrong.stderr.contains("UNAUTHENTICATED"), "{}", wrong.stderr);
}

#[tokio::test]
async fn operator_login_refuses_staff_who_are_not_operators() {
    let suite = spawn_suite().await;
    let desk = Desk::at(&suite);
    let args = ["login", "--username", PATRONATO_ID, "--gateway", &desk.gateway];
    let patronato = desk.run_with_input(args, Some(&format!("{PATRONATO_PASSWORD}\n"))).await;
    assert_eq!(patronato.code, 1);
    assert!(patronato.stderr.contains("is not a contact-center operator"), "{}", patronato.stderr);
    assert!(!desk.token_file().exists(), "no session kept");
}

#[tokio::test]
async fn operator_registers_a_callers_pin_request_from_flags() {
    let suite = spawn_suite().await;
    let desk = Desk::at(&suite);
    desk.login().await;
    let filed = desk.run(form_flags(&pin_request(ROSSI))).await.ok();
    assert!(filed.stdout.contains("ISSUED"), "{}", filed.stdout);
    let request_id = filed
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("request"))
        .map(|id| id.trim().to_owned())
        .expect("the request id");

    let lookup = desk.run(["lookup", ROSSI]).await.ok();
    assert!(lookup.stdout.contains(&request_id), "{}", lookup.stdout);
    assert!(lookup.stdout.contains("SIMPLIFIED_ONLY"), "{}", lookup.stdout);
    assert!(lookup.stdout.contains("+39 *** *** 4567"), "masked: {}", lookup.stdout);
    assert!(lookup.stdout.contains("Mario Rossi"), "the form to check: {}", lookup.stdout);
    assert!(!lookup.stdout.contains("1234567"), "no full contact");
    let half = suite.db.message("PIN_FIRST_HALF").await.secret("pin_half");
    for out in [&filed.stdout, &lookup.stdout] {
        assert!(!out.contains(&half), "the PIN is never shown");
    }
}

#[tokio::test]
async fn operator_json_is_the_proto3_json_of_the_answer() {
    let suite = spawn_suite().await;
    let desk = Desk::at(&suite);
    desk.login().await;
    let filed = desk.run(json(&form_flags(&pin_request(ROSSI)))).await.ok().json();
    assert_eq!(filed["outcome"], "PIN_REQUEST_OUTCOME_ISSUED");
    let request_id = filed["requestId"].as_str().expect("request id");

    let view = desk.run(["lookup", ROSSI, "--json"]).await.ok().json();
    assert_eq!(view["pinState"], "PIN_STATE_SIMPLIFIED_ONLY");
    assert_eq!(view["failedAttempts"], 0, "defaults are printed too");
    assert_eq!(view["contacts"]["mobilePhone"], "+39 *** *** 4567");
    let request = &view["requests"][0];
    assert_eq!(request["requestId"], request_id);
    assert_eq!(request["firstHalfChannel"], "DELIVERY_CHANNEL_SMS");
    assert_eq!(request["validatedBy"], "", "an empty field is there, empty");
    assert!(request["requestedAt"].as_str().expect("timestamp").ends_with('Z'), "RFC 3339");
}

#[tokio::test]
async fn operator_sees_each_field_violation_of_a_refused_form() {
    let suite = spawn_suite().await;
    let desk = Desk::at(&suite);
    desk.login().await;
    // A wrong check character, and no street.
    let mut wrong = pin_request("RSSMRA85T10A562X");
    if let Some(id::residence::Place::Italy(address)) =
        wrong.residence.as_mut().and_then(|r| r.place.as_mut())
    {
        address.street.clear();
    }
    let form = form_flags(&wrong);
    let refused = desk.run(&form).await;
    assert_eq!(refused.code, 2, "bad input: {}", refused.stderr);
    assert!(refused.stderr.contains("INVALID_ARGUMENT"), "{}", refused.stderr);
    assert!(refused.stderr.contains("\n  fiscal_code: "), "{}", refused.stderr);
    assert!(refused.stderr.contains("\n  residence.italy.street: "), "{}", refused.stderr);

    let as_json = desk.run(json(&form)).await;
    assert_eq!(as_json.code, 2);
    let error = &as_json.error_json()["error"];
    assert_eq!(error["code"], "INVALID_ARGUMENT");
    assert_eq!(error["details"][0]["@type"], "type.googleapis.com/google.rpc.BadRequest");
    let fields: Vec<&str> = error["details"][0]["fieldViolations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|v| v["field"].as_str().expect("field"))
        .collect();
    assert_eq!(fields, ["fiscal_code", "residence.italy.street"]);

    // What the command line can tell by itself is a usage error, with the same status.
    let mut bad_date = form_flags(&pin_request(ROSSI));
    let date = bad_date.iter().position(|a| a == "--birth-date").expect("date") + 1;
    bad_date[date] = "10.12.1985".into();
    let usage = desk.run(&bad_date).await;
    assert_eq!(usage.code, 2, "{}", usage.stderr);
    assert!(usage.stderr.contains("--birth-date"), "{}", usage.stderr);
    assert!(!desk.run(["lookup", ROSSI]).await.ok().stdout.contains("ISSUED"), "nothing filed");
}

#[tokio::test]
async fn operator_works_the_12_hour_queue_and_resends_a_stuck_first_half() {
    let suite = spawn_suite_with(|c| c.identity.pins.first_half_grace = Duration::ZERO).await;
    let desk = Desk::at(&suite);
    desk.login().await;
    let request_id = file(&desk, &pin_request(ROSSI)).await;
    let (_, bianchi) = citizen_request("Bianchi", "Laura", (1990, 1, 1), id::Sex::Female);
    let other = file(&desk, &bianchi).await;
    suite.db.outbox_relayed().await;

    let queue = desk.run(["queue"]).await.ok();
    assert!(queue.stdout.contains(&request_id), "{}", queue.stdout);
    assert!(queue.stdout.contains(ROSSI_MOBILE), "the phone to call back: {}", queue.stdout);
    // Why each waits, in the text as in the JSON: Rossi's first half went undelivered; Laura
    // Bianchi is not on the register of residents.
    let row = |id: &str| queue.stdout.lines().find(|l| l.contains(id)).expect("listed").to_owned();
    assert!(row(&request_id).contains("undelivered past the grace period"), "{}", queue.stdout);
    assert!(row(&other).contains("not on the register of residents"), "{}", queue.stdout);
    let page = desk.run(["queue", "--page-size", "1", "--json"]).await.ok().json();
    assert_eq!(page["requests"].as_array().expect("requests").len(), 1);
    assert_ne!(page["nextPageToken"], "");
    let all = desk.run(["queue", "--page-size", "1", "--all", "--json"]).await.ok().json();
    let listed: Vec<&str> = all["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .map(|r| r["requestId"].as_str().expect("id"))
        .collect();
    assert_eq!(listed, [request_id.as_str(), other.as_str()], "every page, oldest first");
    assert_eq!(all["nextPageToken"], "");

    let unverified = desk.run(["resend", &request_id]).await;
    assert_eq!(unverified.code, 2);
    assert!(unverified.stderr.contains("identity_verified: "), "{}", unverified.stderr);
    let resent = desk
        .run(&[
            "resend",
            &request_id,
            "--identity-verified",
            "--channel",
            "sms",
            "--address",
            "+39 347 7654321",
        ])
        .await
        .ok();
    assert!(resent.stdout.contains("+39 *** *** 4321"), "{}", resent.stdout);
    let queue = desk.run(["queue"]).await.ok();
    assert!(!queue.stdout.contains(&request_id), "validated: out of the queue");
    let again = desk.run(["resend", &request_id, "--identity-verified"]).await;
    assert_eq!(again.code, 1, "{}", again.stderr);
    assert!(again.stderr.contains("reason: REQUEST_NOT_STUCK"), "{}", again.stderr);
}

#[tokio::test]
async fn operator_unlocks_and_revokes_a_pin_and_the_trail_shows_who_did_it() {
    let suite = spawn_suite().await;
    let desk = Desk::at(&suite);
    desk.login().await;
    file(&desk, &pin_request(ROSSI)).await;
    for _ in 0..5 {
        suite.login_with_pin(ROSSI, "ZZZZZZZZ").await.expect_err("wrong PIN");
    }
    let state = |ran: Ran| ran.ok().json()["pinState"].as_str().expect("state").to_owned();
    assert_eq!(state(desk.run(["lookup", ROSSI, "--json"]).await), "PIN_STATE_LOCKED");

    let reason = "caller identified by phone";
    let unlocked = desk.run(["unlock", ROSSI, "--reason", reason]).await.ok();
    assert!(unlocked.stdout.contains("PIN unlocked"), "{}", unlocked.stdout);
    let not_locked = desk.run(["unlock", ROSSI, "--reason", reason]).await;
    assert_eq!(not_locked.code, 1);
    assert!(not_locked.stderr.contains("FAILED_PRECONDITION"), "{}", not_locked.stderr);
    assert!(not_locked.stderr.contains("reason: NOT_LOCKED"), "{}", not_locked.stderr);

    desk.run(["revoke", ROSSI, "--reason", "lost the letter"]).await.ok();
    assert_eq!(state(desk.run(["lookup", ROSSI, "--json"]).await), "PIN_STATE_REVOKED");

    let trail = desk.run(["audit", ROSSI]).await.ok();
    for seen in ["RevokePin", "UnlockPin", "lost the letter", OPERATOR_ID] {
        assert!(trail.stdout.contains(seen), "{seen}: {}", trail.stdout);
    }
    // Without a fiscal code: what this operator did, every page.
    let mine = desk.run(["audit", "--all", "--page-size", "2", "--json"]).await.ok().json();
    let events = mine["events"].as_array().expect("events");
    assert!(events.iter().all(|e| e["operatorId"] == OPERATOR_ID));
    let actions: Vec<&str> = events.iter().map(|e| e["action"].as_str().expect("action")).collect();
    for action in ["RequestPinForCaller", "LookupCredential", "UnlockPin", "RevokePin"] {
        assert!(actions.contains(&action), "{action}: {actions:?}");
    }
}

#[tokio::test]
async fn operator_session_is_renewed_with_its_refresh_token() {
    let suite = spawn_suite_with(|c| c.identity.sessions.access_ttl = Duration::from_secs(1)).await;
    let desk = Desk::at(&suite);
    desk.login().await;
    // A token renewed within the second it was issued is the same text; the refresh token,
    // which works once, is new each time.
    let first = desk.saved()["refresh_token"].clone();
    desk.run(["lookup", ROSSI]).await.ok();
    let renewed = desk.saved()["refresh_token"].clone();
    assert_ne!(renewed, first, "a token about to run out is renewed before the call");
    desk.run(["lookup", ROSSI]).await.ok();
    assert_ne!(desk.saved()["refresh_token"], renewed, "and again, with the new refresh token");
}

/// `sportello operator … | head -1`: the reader gone, the command ends quietly (status 0), as a
/// Unix tool does, rather than panicking on the broken pipe (status 101).
#[tokio::test]
async fn operator_output_into_a_closed_pipe_ends_quietly() {
    let suite = spawn_suite_with(|c| c.identity.pins.first_half_grace = Duration::ZERO).await;
    let desk = Desk::at(&suite);
    desk.login().await;
    file(&desk, &pin_request(ROSSI)).await;
    for args in [&["queue"][..], &["audit", "--json"], &["lookup", ROSSI]] {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sportello"))
            .arg("operator")
            .args(args)
            .env("XDG_CONFIG_HOME", desk.config_home.path())
            .env_remove("SPORTELLO_GATEWAY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("sportello operator starts");
        // The reader goes before the first line is written: every write meets a closed pipe.
        drop(child.stdout.take());
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("ends")
            .expect("output");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// The gateway named as `host:port` or as a URL, by flag or by $SPORTELLO_GATEWAY, is one and
/// the same gateway: the session opened with one form serves commands given the other.
#[tokio::test]
async fn operator_takes_the_gateway_as_host_and_port_or_as_a_url() {
    let suite = spawn_suite().await;
    let desk = Desk::at(&suite);
    let host_port = suite.gateway.addr.to_string();
    let login = ["login", "--username", OPERATOR_ID, "--gateway", &host_port];
    desk.run_with_input(login, Some(&format!("{OPERATOR_PASSWORD}\n"))).await.ok();
    assert_eq!(desk.saved()["gateway"], desk.gateway, "kept as a URL");
    let as_url = format!("{}/", desk.gateway);
    desk.run(["lookup", ROSSI, "--gateway", &as_url]).await.ok();
    let bad = desk.run(["lookup", ROSSI, "--gateway", "grpc://127.0.0.1:1"]).await;
    assert_eq!(bad.code, 2, "a usage error: {}", bad.stderr);
    assert!(bad.stderr.contains("host:port or http://host:port"), "{}", bad.stderr);

    let by_env = tokio::process::Command::new(env!("CARGO_BIN_EXE_sportello"))
        .args(["operator", "lookup", ROSSI])
        .env("XDG_CONFIG_HOME", desk.config_home.path())
        .env("SPORTELLO_GATEWAY", &host_port)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("runs");
    assert!(by_env.status.success(), "{}", String::from_utf8_lossy(&by_env.stderr));
}

#[tokio::test]
async fn a_citizen_lists_who_looked_at_their_data_and_exports_it_from_the_command_line() {
    let suite = spawn_suite().await;
    crate::auth::active_citizen(&suite, pin_request(ROSSI)).await;
    let operator = Desk::at(&suite);
    operator.login().await;
    operator.run(["lookup", ROSSI]).await.ok();
    let citizen = Desk::at(&suite);
    let args = ["login-citizen", ROSSI, "--gateway", &citizen.gateway];
    let pin = format!("{}\n", crate::auth::OWN_PIN);
    citizen.run_with_input(args, Some(&pin)).await.ok();
    let table = citizen.run(["my-access", "--service", "identity"]).await.ok();
    assert!(table.stdout.contains("Consultazione dello stato del PIN"), "{}", table.stdout);
    assert!(!table.stdout.contains(OPERATOR_ID), "the operator is not named");
    let listed = citizen.run(["my-access", "--all", "--json"]).await.ok().json();
    let entries = listed["entries"].as_array().expect("entries");
    assert!(entries.iter().any(|e| e["action"] == "LOOKUP_CREDENTIAL"
        && e["actorRole"] == "ACTOR_ROLE_OPERATOR"
        && e["operatorPseudonym"].as_str().is_some_and(|p| p.starts_with("OP-"))));
    let file = citizen.config_home.path().join("my-data.jsonl");
    citizen.run(["my-export", "--output", file.to_str().expect("path")]).await.ok();
    let mode = std::fs::metadata(&file).expect("written").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "everything about a person, for its owner only");
    let text = std::fs::read_to_string(&file).expect("read");
    let kinds: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a record")["kind"].to_string())
        .collect();
    assert!(kinds.iter().any(|k| k == "\"register_entry\""), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "\"data_access\""), "{kinds:?}");
    // A staff session is refused the citizen's commands.
    let refused = operator.run(["my-access"]).await;
    assert_eq!(refused.code, 1, "{}", refused.stderr);
}
