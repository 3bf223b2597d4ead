//! Hostile strings in every string field of every RPC of every service: non-ASCII text that
//! breaks byte slicing, control characters, empty values and 1 MB strings. Whatever the field,
//! the answer is a refusal (or a success), never INTERNAL, UNAVAILABLE or UNKNOWN, and nothing
//! panics. Driven by the descriptor set that reflection serves, so a new RPC or field is covered
//! the day it is added.

use crate::helpers::*;
use bytes::Bytes;
use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value,
};
use sportello_platform::raw_codec::RawCodec;
use sportello_proto::identity::v1 as id;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Code;

/// Calls `path` with `message`, as whoever `token` says.
async fn call(channel: &Channel, path: &str, message: Bytes, token: Option<&str>) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel.clone())
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    grpc.ready().await.expect("channel ready");
    let mut request = tonic::Request::new(message);
    request.set_timeout(Duration::from_secs(20));
    if let Some(token) = token {
        let bearer = format!("Bearer {token}").parse().expect("ascii");
        request.metadata_mut().insert("authorization", bearer);
    }
    let path = path.parse().expect("a gRPC path");
    match grpc.unary(request, path, RawCodec).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// What goes into each string field in turn.
fn hostile_values() -> Vec<(&'static str, String)> {
    vec![
        // 16 bytes, 9 characters: byte 8 falls inside a character.
        ("a two-byte character across byte 8", "AÀÀÀÀÀÀÀB".into()),
        ("sixteen two-byte characters", "À".repeat(16)),
        ("a fiscal code ending in a two-byte character", "RSSMRA85T10A562À".into()),
        ("four-byte characters", "😀".repeat(8)),
        ("mixed widths", "a€😀ÀB€a\u{301}".into()),
        ("control characters", "\0\u{1}\t\n\r\u{7f}\u{1b}[2J\u{202e}\u{feff}".into()),
        ("a NUL inside a fiscal code", "RSSMRA85\0T10A562S".into()),
        ("only spaces", "   ".into()),
        ("empty", String::new()),
        ("1 MB", "A".repeat(1 << 20)),
        ("1 MB of two-byte characters", "À".repeat(1 << 19)),
    ]
}

/// Every path from `message` down to a string field (through nested and repeated messages),
/// a few levels deep.
fn string_paths(message: &MessageDescriptor, depth: usize) -> Vec<Vec<FieldDescriptor>> {
    let mut paths = Vec::new();
    for field in message.fields() {
        if field.is_map() {
            continue;
        }
        match field.kind() {
            Kind::String => paths.push(vec![field]),
            Kind::Message(inner) if depth < 4 && !inner.full_name().starts_with("google.") => {
                for mut tail in string_paths(&inner, depth + 1) {
                    tail.insert(0, field.clone());
                    paths.push(tail);
                }
            }
            _ => {}
        }
    }
    paths
}

/// Puts `text` in the string field at the end of `path`, creating the messages on the way.
fn set_at(message: &mut DynamicMessage, path: &[FieldDescriptor], text: &str) {
    let (field, rest) = path.split_first().expect("a non-empty path");
    if rest.is_empty() {
        let value = Value::String(text.to_owned());
        let value = if field.is_list() { Value::List(vec![value]) } else { value };
        message.set_field(field, value);
        return;
    }
    let Kind::Message(inner_type) = field.kind() else { unreachable!("paths go through messages") };
    if !message.has_field(field) {
        // Setting it first also selects it in its oneof, if it is in one.
        let empty = Value::Message(DynamicMessage::new(inner_type.clone()));
        message.set_field(field, if field.is_list() { Value::List(vec![empty]) } else { empty });
    }
    match message.get_field_mut(field) {
        Value::Message(inner) => set_at(inner, rest, text),
        Value::List(items) => {
            if items.is_empty() {
                items.push(Value::Message(DynamicMessage::new(inner_type)));
            }
            if let Value::Message(inner) = &mut items[0] {
                set_at(inner, rest, text);
            }
        }
        _ => unreachable!("a message field holds a message"),
    }
}

/// Panics anywhere in this test's thread (where the in-process suite runs) or in tokio's worker
/// and blocking threads, as the platform's panic hook would log them.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn count_panics() {
    let test_thread = std::thread::current().name().map(str::to_owned);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let name = thread.name().map(str::to_owned);
        if name == test_thread || name.as_deref().is_some_and(|n| n.starts_with("tokio")) {
            let line = sportello_platform::telemetry::describe_panic(info);
            PANICS.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
        previous(info);
    }));
}

/// Everything the services log on this thread, to look for "panicked" in.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A PIN request for Anna Verdi, who has a PIN on its way (first access not done yet).
fn verdi() -> (String, id::RequestPinRequest) {
    citizen_request("Verdi", "Anna", (1990, 3, 15), id::Sex::Female)
}

/// Valid messages for the RPCs whose checks run in stages, so that a hostile value in one field
/// meets the checks that only run once the other fields are valid.
struct Baselines {
    by_type: Vec<(&'static str, Vec<u8>)>,
}

impl Baselines {
    fn of(&self, message: &MessageDescriptor) -> DynamicMessage {
        match self.by_type.iter().find(|(name, _)| *name == message.full_name()) {
            Some((_, bytes)) => {
                DynamicMessage::decode(message.clone(), bytes.as_slice()).expect("baseline")
            }
            None => DynamicMessage::new(message.clone()),
        }
    }
}

const ROSSI_PIN: &str = "RMX7K2QA";

/// Gives Mario Rossi a PIN of his own (returning a session of his) and puts Anna Verdi's first
/// access within reach (returning her initial PIN).
async fn citizens(suite: &Suite) -> (String, String) {
    let mut identity =
        sportello_proto::identity::v1::identity_service_client::IdentityServiceClient::new(
            connect(suite.identity.addr).await,
        );
    let initial_pin = |template_first, template_second| async move {
        let first = suite.db.messages(template_first).await.pop().expect("first half");
        let second = suite.db.messages(template_second).await.pop().expect("second half");
        format!("{}{}", first.secret("pin_half"), second.secret("pin_half"))
    };
    identity.request_pin(pin_request(ROSSI)).await.expect("Rossi's PIN request");
    let rossi_initial = initial_pin("PIN_FIRST_HALF", "PIN_SECOND_HALF_LETTER").await;
    identity
        .complete_first_access(id::CompleteFirstAccessRequest {
            fiscal_code: ROSSI.into(),
            initial_pin: rossi_initial,
            new_pin: ROSSI_PIN.into(),
        })
        .await
        .expect("Rossi's first access");
    let session = suite.login_with_pin(ROSSI, ROSSI_PIN).await.expect("Rossi logs in");
    identity.request_pin(verdi().1).await.expect("Verdi's PIN request");
    let verdi_initial = initial_pin("PIN_FIRST_HALF", "PIN_SECOND_HALF_LETTER").await;
    (session.access_token, verdi_initial)
}

fn is_failure(code: Code) -> bool {
    matches!(code, Code::Internal | Code::Unavailable | Code::Unknown | Code::DataLoss)
}

#[tokio::test]
async fn hostile_strings_in_any_field_of_any_rpc_are_refused_never_a_failure_or_a_panic() {
    count_panics();
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .with_ansi(false)
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);

    let suite = spawn_suite_with(|c| {
        // Cheap hashes, and no lockout: wrong PINs are this test's daily bread, and a locked
        // PIN would hide the checks that come after.
        c.identity.pin_hash.memory_kib = 1024;
        c.identity.pin_hash.iterations = 1;
        c.identity.pins.max_failed_attempts = 1_000_000;
    })
    .await;
    let (mut citizen, verdi_initial) = citizens(&suite).await;
    let service_token = suite.service_token();
    let gateway_token = suite.gateway_token();
    let operator = suite.operator_token.clone();

    let (verdi_cf, verdi_request) = verdi();
    let baselines = Baselines {
        by_type: vec![
            ("sportello.identity.v1.RequestPinRequest", verdi_request.encode_to_vec()),
            (
                "sportello.identity.v1.CompleteFirstAccessRequest",
                id::CompleteFirstAccessRequest {
                    fiscal_code: verdi_cf.clone(),
                    initial_pin: verdi_initial,
                    new_pin: "QW3RTY9Z".into(),
                }
                .encode_to_vec(),
            ),
            (
                "sportello.identity.v1.LoginWithPinRequest",
                id::LoginWithPinRequest { fiscal_code: ROSSI.into(), pin: ROSSI_PIN.into() }
                    .encode_to_vec(),
            ),
            (
                "sportello.identity.v1.StartPinRecoveryRequest",
                id::StartPinRecoveryRequest {
                    fiscal_code: ROSSI.into(),
                    contacts: Some(id::Contacts {
                        mobile_phone: ROSSI_MOBILE.into(),
                        email: ROSSI_EMAIL.into(),
                        ..Default::default()
                    }),
                }
                .encode_to_vec(),
            ),
        ],
    };

    let pool = DescriptorPool::decode(sportello_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
    let owner = |service: &prost_reflect::ServiceDescriptor| -> SocketAddr {
        match (service.package_name(), service.name()) {
            ("sportello.identity.v1", _) => suite.identity.addr,
            ("sportello.claims.v1", _) => suite.claims.addr,
            ("sportello.notify.v1", _) => suite.notify.addr,
            // The gateway answers the citizen's privacy RPCs itself; each service answers its
            // own part (identity's is tried here).
            ("sportello.privacy.v1", "PrivacyService") => suite.gateway.addr,
            ("sportello.privacy.v1", _) => suite.identity.addr,
            (other, _) => panic!("no service owns {other}: add it here"),
        }
    };
    let gateway = suite.gateway_channel().await;
    let values = hostile_values();
    let mut failures = Vec::new();
    let mut calls = 0usize;
    let mut methods = 0usize;
    for service in pool.services() {
        let channel = connect(owner(&service)).await;
        for method in service.methods() {
            methods += 1;
            let path = format!("/{}/{}", service.full_name(), method.name());
            let input = method.input();
            let baseline = baselines.of(&input);
            // A hostile Logout (or a PIN change) ends Rossi's session: he logs in again, so
            // that the methods after it are still called as a citizen.
            let profile = id::GetProfileRequest {}.encode_to_vec().into();
            let get_profile = "/sportello.identity.v1.IdentityService/GetProfile";
            if call(&gateway, get_profile, profile, Some(&citizen)).await == Code::Unauthenticated {
                let session = suite.login_with_pin(ROSSI, ROSSI_PIN).await.expect("Rossi again");
                citizen = session.access_token;
            }
            // Call as whoever the RPC serves, so that its handler really reads the fields:
            // the first of anonymous, citizen, operator and service not refused at the door.
            let mut token = None;
            for candidate in [
                None,
                Some(citizen.as_str()),
                Some(operator.as_str()),
                Some(service_token.as_str()),
                Some(gateway_token.as_str()),
            ] {
                let code = call(&channel, &path, baseline.encode_to_vec().into(), candidate).await;
                if !matches!(code, Code::Unauthenticated | Code::PermissionDenied) {
                    token = candidate;
                    break;
                }
            }
            // A message that does not decode (field 1 said 255 bytes long, one sent) is the
            // caller's error wherever it is read, the gateway's own privacy service included.
            let unreadable = Bytes::from_static(&[0x0a, 0xff, 0x01]);
            for (route, channel) in [("owner", &channel), ("gateway", &gateway)] {
                calls += 1;
                let code = call(channel, &path, unreadable.clone(), token).await;
                if is_failure(code) {
                    failures.push(format!("{path} with an unreadable message ({route}): {code:?}"));
                }
            }
            for field in string_paths(&input, 0) {
                let name: Vec<&str> = field.iter().map(|f| f.name()).collect();
                for (what, text) in &values {
                    let mut message = baseline.clone();
                    set_at(&mut message, &field, text);
                    let bytes = Bytes::from(message.encode_to_vec());
                    let mut targets = vec![("direct", &channel)];
                    // A sample through the gateway too (every value everywhere twice would
                    // double the run time): the values that break byte slicing.
                    if what.contains("two-byte") && text.len() < 1024 {
                        targets.push(("gateway", &gateway));
                    }
                    for (route, channel) in targets {
                        calls += 1;
                        let code = call(channel, &path, bytes.clone(), token).await;
                        if is_failure(code) {
                            failures.push(format!(
                                "{path} {} = {what} ({route}): {code:?}",
                                name.join(".")
                            ));
                        }
                    }
                }
            }
        }
    }
    let panics = PANICS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let logged =
        String::from_utf8_lossy(&logs.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    let panicked: Vec<&str> = logged.lines().filter(|l| l.contains("panicked")).collect();
    eprintln!("{methods} methods, {calls} calls");
    assert!(methods >= 25, "every service's methods are covered: {methods}");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    assert!(panics.is_empty(), "panics:\n{}", panics.join("\n"));
    assert!(panicked.is_empty(), "logged:\n{}", panicked.join("\n"));
}

#[tokio::test]
async fn an_initial_pin_of_sixteen_bytes_but_nine_characters_is_just_a_wrong_pin() {
    let suite = spawn_suite().await;
    let mut identity =
        sportello_proto::identity::v1::identity_service_client::IdentityServiceClient::new(
            suite.gateway_channel().await,
        );
    identity.request_pin(pin_request(ROSSI)).await.expect("issued");
    for initial in ["AÀÀÀÀÀÀÀB", "ÀÀÀÀÀÀÀÀ", "ABCDEFGHIJKLMNOP", ""] {
        let status = identity
            .complete_first_access(id::CompleteFirstAccessRequest {
                fiscal_code: ROSSI.into(),
                initial_pin: initial.into(),
                new_pin: "RMX7K2QA".into(),
            })
            .await
            .expect_err("not the initial PIN");
        assert_eq!(status.code(), Code::Unauthenticated, "{initial:?}: {status:?}");
    }
    // Control characters are refused by field before any PIN is compared (the text guard).
    let status = identity
        .complete_first_access(id::CompleteFirstAccessRequest {
            fiscal_code: ROSSI.into(),
            initial_pin: "\u{0}\u{7f}ABCDEFGHIJKLMN".into(),
            new_pin: "RMX7K2QA".into(),
        })
        .await
        .expect_err("control characters");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["initial_pin"]);
    // The service is still there.
    assert_eq!(
        health_of(suite.identity.addr, "").await,
        Some(tonic_health::pb::health_check_response::ServingStatus::Serving)
    );
}
