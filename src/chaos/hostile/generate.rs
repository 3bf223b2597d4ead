//! The messages the hostile scenario sends, made from the contract's descriptors alone: a
//! plausible message of any type (each field filled with a value its name suggests, so that the
//! checks behind the first one are reached), then one to three of its fields, anywhere in it,
//! made hostile; or its encoding broken (invalid UTF-8 in a string, cut short, wrong wire type).
//! Nothing here knows an RPC by name, so a new RPC or field is covered the day it is added.

use bytes::{Bytes, BytesMut};
use prost::Message as _;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;

/// The size over which a message is refused by size (tonic's default limit, 4 MiB).
pub const SIZE_LIMIT: usize = 4 << 20;

/// One message to send.
#[derive(Clone, Debug)]
pub struct Case {
    /// What was done to the plausible message, for the report (never the value itself).
    pub what: String,
    pub bytes: Bytes,
    /// Whether the bytes are a message of the input type that decodes, within the size limit:
    /// a validation refusal of it must name the fields (google.rpc.BadRequest).
    pub well_formed: bool,
}

/// A fiscal code that exists (Giulia Bianchi, on the demo register), kept apart from the
/// citizen whose honest calls the scenario checks.
const OTHER_FISCAL_CODE: &str = "BNCGLI90C55H501W";

/// A plausible value for a string field, by its name.
fn plausible_string(field: &FieldDescriptor, rng: &mut StdRng) -> String {
    let name = field.name();
    let has = |part: &str| name.contains(part);
    let text = if has("fiscal_code") {
        OTHER_FISCAL_CODE
    } else if has("email") {
        "giulia.bianchi@example.it"
    } else if has("phone") {
        "+393471234567"
    } else if has("iban") {
        "IT60X0542811101000000123456"
    } else if has("postal_code") {
        "00186"
    } else if has("province") {
        "RM"
    } else if has("municipality") || has("city") {
        "Roma"
    } else if has("street_number") {
        "12"
    } else if has("street") || has("address") {
        "Via Dante"
    } else if has("surname") {
        "Bianchi"
    } else if has("given_name") || name == "name" {
        "Giulia"
    } else if has("country") {
        ""
    } else if has("pin") || has("code") && !has("benefit") {
        // Never a real PIN or recovery code: the honest citizen's stays theirs.
        "QW3RTY9Z"
    } else if has("benefit") {
        "PROFESSIONISTI_COCOCO"
    } else if has("password") {
        "not-the-password"
    } else if has("username") {
        // Not a demo account: wrong passwords would lock it.
        "chaos-nobody"
    } else if has("idempotency_key") {
        return format!("chaos-{:016x}", rng.random::<u64>());
    } else if name == "id" || name.ends_with("_id") || name.ends_with("_ids") {
        return uuid::Uuid::from_u128(rng.random()).to_string();
    } else if has("token") {
        ""
    } else if has("template") {
        "PIN_FIRST_HALF"
    } else if has("content_type") || has("mime") {
        "application/pdf"
    } else if has("file") {
        "documento.pdf"
    } else {
        "Controllo di routine"
    };
    text.to_owned()
}

fn plausible_number(field: &FieldDescriptor) -> i64 {
    let name = field.name();
    match name {
        "year" => 1990,
        "month" => 3,
        "day" => 15,
        "page_size" => 10,
        _ if name.contains("cents") || name.contains("amount") => 10_000,
        _ => 1,
    }
}

fn number_value(kind: &Kind, n: i64) -> Value {
    match kind {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(n as i32),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(n),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(n as u32),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(n as u64),
        Kind::Float => Value::F32(n as f32),
        Kind::Double => Value::F64(n as f64),
        other => unreachable!("not a number: {other:?}"),
    }
}

/// A plausible single value of `field` (an element, for a list).
fn plausible_value(field: &FieldDescriptor, rng: &mut StdRng, depth: usize) -> Value {
    match field.kind() {
        Kind::String => Value::String(plausible_string(field, rng)),
        Kind::Bytes => Value::Bytes(Bytes::from_static(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")),
        Kind::Bool => Value::Bool(true),
        Kind::Enum(e) => {
            let first = e.values().map(|v| v.number()).find(|&n| n != 0).unwrap_or(0);
            Value::EnumNumber(first)
        }
        Kind::Message(m) => Value::Message(plausible(&m, rng, depth + 1)),
        kind => number_value(&kind, plausible_number(field)),
    }
}

/// A plausible message of type `descriptor`: every field set, one member of each oneof.
pub fn plausible(descriptor: &MessageDescriptor, rng: &mut StdRng, depth: usize) -> DynamicMessage {
    let mut message = DynamicMessage::new(descriptor.clone());
    if descriptor.full_name() == "google.protobuf.Timestamp" {
        message.set_field_by_name("seconds", Value::I64(1_790_000_000));
        return message;
    }
    if depth > 5 || descriptor.full_name().starts_with("google.") {
        return message;
    }
    let chosen: Vec<FieldDescriptor> = descriptor
        .oneofs()
        .filter(|o| !o.is_synthetic())
        .filter_map(|o| o.fields().collect::<Vec<_>>().choose(rng).cloned())
        .collect();
    for field in descriptor.fields() {
        let in_oneof = field.containing_oneof().is_some_and(|o| !o.is_synthetic());
        if in_oneof && !chosen.contains(&field) {
            continue;
        }
        let value = if field.is_map() {
            let Kind::Message(entry) = field.kind() else { continue };
            let value = plausible_value(&entry.map_entry_value_field(), rng, depth);
            Value::Map([(MapKey::String("name".into()), value)].into_iter().collect())
        } else if field.is_list() {
            Value::List(vec![plausible_value(&field, rng, depth)])
        } else {
            plausible_value(&field, rng, depth)
        };
        message.set_field(&field, value);
    }
    message
}

/// How often a value is one of the giant ones (4 MB strings and bytes, huge lists): each costs
/// the suite as much as a hundred small ones, and the short run has two minutes.
const GIANT: f64 = 0.03;

/// Hostile strings, by what they are.
fn hostile_string(rng: &mut StdRng) -> (&'static str, String) {
    type Make = fn() -> String;
    if rng.random_bool(GIANT) {
        let giants: [(&str, Make); 2] = [
            ("4 MB string", || "A".repeat(4_000_000)),
            ("string over the 4 MiB limit", || "A".repeat(SIZE_LIMIT + 1)),
        ];
        let (what, make) = giants.choose(rng).expect("choices");
        return (what, make());
    }
    let choices: [(&str, Make); 17] = [
        ("empty string", String::new),
        ("64 KiB of four-byte characters", || "😀".repeat(16 << 10)),
        ("NUL", || "\0".into()),
        ("NUL inside a value", || "BNCGLI90\0C55H501W".into()),
        ("control characters", || "\u{1}\u{7}\u{8}\u{1b}[2J\u{7f}".into()),
        ("C1 controls", || "\u{85}\u{9b}\u{9f}".into()),
        ("CR LF injection", || "a\r\nBcc: x@example.it".into()),
        ("direction override", || "\u{202e}cipa\u{202c}".into()),
        ("BOM and zero-width", || "\u{feff}\u{200b}\u{200d}".into()),
        ("byte 8 inside a character", || "AÀÀÀÀÀÀÀB".into()),
        ("combining marks", || "a\u{301}\u{302}\u{303}".repeat(50)),
        ("only spaces", || "   ".into()),
        ("SQL", || "'; DROP TABLE claims; --".into()),
        ("format strings", || "%s%n%x{0}{{}}${jndi:ldap://x}".into()),
        ("path traversal", || "../../../../etc/passwd".into()),
        ("lowercase fiscal code", || "bncgli90c55h501w".into()),
        ("unassigned code points", || "\u{e000}\u{10ffff}\u{fffe}".into()),
    ];
    let (what, make) = choices.choose(rng).expect("choices");
    (what, make())
}

fn hostile_bytes(rng: &mut StdRng) -> (&'static str, Bytes) {
    if rng.random_bool(GIANT) {
        return ("4 MB of random bytes", random_bytes(rng, 4_000_000));
    }
    match rng.random_range(0..7) {
        0 | 1 => ("empty bytes", Bytes::new()),
        2 => ("random bytes", random_bytes(rng, 1024)),
        3 => ("a PDF header and garbage", {
            let mut b = b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 9 0 R >>\n".to_vec();
            b.extend_from_slice(&random_bytes(rng, 512));
            b.into()
        }),
        4 => ("a PNG header and garbage", {
            let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\x7f\xff\xff\xff\x7f\xff\xff\xff".to_vec();
            b.extend_from_slice(&random_bytes(rng, 256));
            b.into()
        }),
        5 => ("a JPEG header and garbage", {
            let mut b = b"\xff\xd8\xff\xe0\0\x10JFIF\0".to_vec();
            b.extend_from_slice(&random_bytes(rng, 256));
            b.into()
        }),
        _ => (
            "a PDF cut short",
            Bytes::from_static(b"%PDF-1.4\n1 0 obj\n<< /Length 99999 >>\nstream\n"),
        ),
    }
}

fn random_bytes(rng: &mut StdRng, n: usize) -> Bytes {
    let mut b = vec![0u8; n];
    rng.fill(&mut b[..]);
    b.into()
}

fn hostile_number(kind: &Kind, rng: &mut StdRng) -> (&'static str, Value) {
    let (what, n): (&str, i128) = *[
        ("zero", 0),
        ("-1", -1),
        ("i32::MAX", i32::MAX as i128),
        ("i32::MIN", i32::MIN as i128),
        ("i64::MAX", i64::MAX as i128),
        ("i64::MIN", i64::MIN as i128),
        ("u64::MAX", u64::MAX as i128),
        ("a billion", 1_000_000_000),
    ]
    .choose(rng)
    .expect("choices");
    let value = match kind {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(n as i32),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(n as i64),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(n as u32),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(n as u64),
        Kind::Float => {
            Value::F32([f32::NAN, f32::INFINITY, -0.0, f32::MAX][rng.random_range(0..4)])
        }
        Kind::Double => {
            Value::F64([f64::NAN, f64::NEG_INFINITY, -0.0, f64::MAX][rng.random_range(0..4)])
        }
        other => unreachable!("not a number: {other:?}"),
    };
    (what, value)
}

/// A hostile value for a message field: out-of-range dates and timestamps, empty or random
/// messages.
fn hostile_message(m: &MessageDescriptor, rng: &mut StdRng) -> (&'static str, Value) {
    let mut message = DynamicMessage::new(m.clone());
    if m.full_name() == "google.protobuf.Timestamp" {
        let (what, seconds, nanos) = *[
            ("timestamp at i64::MAX", i64::MAX, 0),
            ("timestamp at i64::MIN", i64::MIN, 0),
            ("timestamp with negative nanos", 0, -1),
            ("timestamp with 2e9 nanos", 1_790_000_000, 2_000_000_000),
            ("timestamp in year 10000", 253_402_300_800, 0),
            ("timestamp before year 1", -62_135_596_801, 0),
        ]
        .choose(rng)
        .expect("choices");
        message.set_field_by_name("seconds", Value::I64(seconds));
        message.set_field_by_name("nanos", Value::I32(nanos));
        return (what, Value::Message(message));
    }
    let is_date = ["year", "month", "day"].iter().all(|f| m.get_field_by_name(f).is_some());
    if is_date && rng.random_bool(0.8) {
        let (what, y, mo, d) = *[
            ("date of 30 February", 2000, 2, 30),
            ("date of 29 February in a common year", 2023, 2, 29),
            ("date with month 13", 1990, 13, 1),
            ("date with day 0", 1990, 1, 0),
            ("date in year 0", 0, 1, 1),
            ("date in year -1", -1, 1, 1),
            ("date in year 10000", 10_000, 1, 1),
            ("date at i32::MAX", i32::MAX, i32::MAX, i32::MAX),
            ("date at i32::MIN", i32::MIN, i32::MIN, i32::MIN),
            ("date in 1800", 1800, 1, 1),
            ("date in the future", 2999, 12, 31),
        ]
        .choose(rng)
        .expect("choices");
        for (field, n) in [("year", y), ("month", mo), ("day", d)] {
            message.set_field_by_name(field, Value::I32(n));
        }
        return (what, Value::Message(message));
    }
    if rng.random_bool(0.5) {
        ("empty message", Value::Message(message))
    } else {
        ("a message of random values", Value::Message(random(m, rng, 1)))
    }
}

/// A hostile value of `field`'s element type.
fn hostile_value(field: &FieldDescriptor, rng: &mut StdRng) -> (&'static str, Value) {
    match field.kind() {
        Kind::String => {
            let (what, text) = hostile_string(rng);
            (what, Value::String(text))
        }
        Kind::Bytes => {
            let (what, bytes) = hostile_bytes(rng);
            (what, Value::Bytes(bytes))
        }
        Kind::Bool => ("false", Value::Bool(false)),
        Kind::Enum(e) => {
            let (what, n) = *[
                ("unknown enum value", 999),
                ("negative enum value", -1),
                ("enum value i32::MAX", i32::MAX),
                ("enum value 0 (unspecified)", 0),
            ]
            .choose(rng)
            .expect("choices");
            let _ = e;
            (what, Value::EnumNumber(n))
        }
        Kind::Message(m) => hostile_message(&m, rng),
        kind => hostile_number(&kind, rng),
    }
}

/// A message of random values (hostile and plausible mixed), a few levels deep.
pub fn random(descriptor: &MessageDescriptor, rng: &mut StdRng, depth: usize) -> DynamicMessage {
    let mut message = DynamicMessage::new(descriptor.clone());
    if depth > 3 {
        return message;
    }
    for field in descriptor.fields() {
        if field.is_map() || !rng.random_bool(0.6) {
            continue;
        }
        let value = if rng.random_bool(0.5) {
            hostile_value(&field, rng).1
        } else {
            plausible_value(&field, rng, depth + 3)
        };
        // Small strings only here: the big ones are sent one at a time.
        if matches!(&value, Value::String(s) if s.len() > 70_000)
            || matches!(&value, Value::Bytes(b) if b.len() > 70_000)
        {
            continue;
        }
        let value = if field.is_list() { Value::List(vec![value]) } else { value };
        message.set_field(&field, value);
    }
    message
}

/// Every path from the root of `descriptor` to a field, through message fields, a few levels
/// deep.
pub fn paths(descriptor: &MessageDescriptor, depth: usize) -> Vec<Vec<FieldDescriptor>> {
    let mut out = Vec::new();
    for field in descriptor.fields() {
        out.push(vec![field.clone()]);
        if let Kind::Message(inner) = field.kind() {
            if depth < 4 && !field.is_map() && !inner.full_name().starts_with("google.") {
                for mut tail in paths(&inner, depth + 1) {
                    tail.insert(0, field.clone());
                    out.push(tail);
                }
            }
        }
    }
    out
}

fn dotted(path: &[FieldDescriptor]) -> String {
    path.iter().map(|f| f.name()).collect::<Vec<_>>().join(".")
}

/// The message held at `field` of `message` (the first element of a list), made if absent.
fn inner_mut<'a>(
    message: &'a mut DynamicMessage,
    field: &FieldDescriptor,
) -> &'a mut DynamicMessage {
    let Kind::Message(inner) = field.kind() else { unreachable!("paths go through messages") };
    if !message.has_field(field) {
        let empty = Value::Message(DynamicMessage::new(inner.clone()));
        message.set_field(field, if field.is_list() { Value::List(vec![empty]) } else { empty });
    }
    match message.get_field_mut(field) {
        Value::Message(m) => m,
        Value::List(items) => {
            if items.is_empty() {
                items.push(Value::Message(DynamicMessage::new(inner)));
            }
            match &mut items[0] {
                Value::Message(m) => m,
                _ => unreachable!("a list of messages"),
            }
        }
        _ => unreachable!("a message field holds a message"),
    }
}

/// Makes the field at the end of `path` hostile; says how.
fn mutate_at(
    message: &mut DynamicMessage,
    path: &[FieldDescriptor],
    rng: &mut StdRng,
) -> &'static str {
    let (field, rest) = path.split_first().expect("a non-empty path");
    if !rest.is_empty() {
        return mutate_at(inner_mut(message, field), rest, rng);
    }
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else { unreachable!("a map entry") };
        let (what, key) = hostile_string(rng);
        let value = plausible_value(&entry.map_entry_value_field(), rng, 3);
        message.set_field(field, Value::Map([(MapKey::String(key), value)].into_iter().collect()));
        return what;
    }
    if field.is_list() && rng.random_bool(0.1) {
        return match rng.random_bool(GIANT * 10.0) {
            false => {
                message.clear_field(field);
                "empty list"
            }
            true => {
                // Huge, but within the size limit: 100,000 scalars or 20,000 small messages.
                let one = plausible_value(field, rng, 4);
                let n = match &one {
                    Value::Message(m) => (2_000_000 / (m.encoded_len() + 3)).min(20_000),
                    Value::String(s) => (2_000_000 / (s.len() + 3)).min(100_000),
                    _ => 100_000,
                };
                message.set_field(field, Value::List(vec![one; n]));
                "huge repeated field"
            }
        };
    }
    if matches!(field.kind(), Kind::Message(_)) && rng.random_bool(0.2) {
        message.clear_field(field);
        return "absent message";
    }
    let (what, value) = hostile_value(field, rng);
    let value = if field.is_list() { Value::List(vec![value]) } else { value };
    message.set_field(field, value);
    what
}

/// The encoding of field `number` with wire type LEN and `payload`.
fn len_field(number: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

/// `payload` as the raw content of the string field at the end of `path`, wrapped in the
/// messages on the way: appended to a message, it merges into it (protobuf's concatenation).
fn raw_at(path: &[FieldDescriptor], payload: &[u8]) -> Vec<u8> {
    let (last, outer) = path.split_last().expect("a non-empty path");
    let mut bytes = len_field(last.number(), payload);
    for field in outer.iter().rev() {
        bytes = len_field(field.number(), &bytes);
    }
    bytes
}

/// Whether `bytes` decode as a message of `descriptor` within the size limit.
fn decodes(descriptor: &MessageDescriptor, bytes: &[u8]) -> bool {
    bytes.len() <= SIZE_LIMIT - 5 && DynamicMessage::decode(descriptor.clone(), bytes).is_ok()
}

/// One case for a method taking `input`.
pub fn case(input: &MessageDescriptor, rng: &mut StdRng) -> Case {
    let all = paths(input, 0);
    let mut message = plausible(input, rng, 0);
    let roll = rng.random_range(0..100);
    if all.is_empty() || roll < 8 {
        // The wire itself broken.
        let encoded = message.encode_to_vec();
        let (what, bytes): (String, Vec<u8>) = match rng.random_range(0..4) {
            0 if !encoded.is_empty() => {
                let cut = rng.random_range(0..encoded.len());
                ("protobuf cut short".into(), encoded[..cut].to_vec())
            }
            1 => ("random bytes as the message".into(), random_bytes(rng, 200).to_vec()),
            2 => {
                // A field number the contract does not have: ignored, as protobuf says.
                let mut b = encoded.clone();
                prost::encoding::encode_key(1999, prost::encoding::WireType::Varint, &mut b);
                prost::encoding::encode_varint(7, &mut b);
                ("unknown field".into(), b)
            }
            _ => match all.first() {
                Some(path) => {
                    // A varint where the contract says length-delimited, or the reverse.
                    let mut b = encoded.clone();
                    let wire = if path[0].kind() == Kind::String || path[0].is_list() {
                        prost::encoding::WireType::Varint
                    } else {
                        prost::encoding::WireType::LengthDelimited
                    };
                    prost::encoding::encode_key(path[0].number(), wire, &mut b);
                    b.extend_from_slice(&[3, 1, 2, 3]);
                    (format!("{} with the wrong wire type", dotted(path)), b)
                }
                None => ("empty message".into(), Vec::new()),
            },
        };
        let well_formed = decodes(input, &bytes);
        return Case { what, bytes: bytes.into(), well_formed };
    }
    let strings: Vec<&Vec<FieldDescriptor>> =
        all.iter().filter(|p| p.last().is_some_and(|f| f.kind() == Kind::String)).collect();
    if roll < 20 && !strings.is_empty() {
        let path = *strings.choose(rng).expect("a string path");
        let payload: &[u8] = [
            &b"\xff\xfe"[..],
            b"BNCGLI90C55H50\xc3\x28",
            b"\xed\xa0\x80",
            b"caf\xe9",
            b"\xc0\xaf",
            b"\xf4\x90\x80\x80",
        ]
        .choose(rng)
        .expect("choices");
        let mut bytes = message.encode_to_vec();
        bytes.extend_from_slice(&raw_at(path, payload));
        return Case {
            what: format!("{}: invalid UTF-8", dotted(path)),
            bytes: bytes.into(),
            well_formed: false,
        };
    }
    if roll < 28 {
        let message = random(input, rng, 0);
        let bytes = message.encode_to_vec();
        let well_formed = decodes(input, &bytes);
        return Case { what: "random values throughout".into(), bytes: bytes.into(), well_formed };
    }
    let mut what = Vec::new();
    for _ in 0..rng.random_range(1..=2) {
        let path = all.choose(rng).expect("a path");
        let how = mutate_at(&mut message, path, rng);
        what.push(format!("{} = {how}", dotted(path)));
    }
    let mut buf = BytesMut::with_capacity(message.encoded_len());
    message.encode(&mut buf).expect("a message encodes into a buffer of its size");
    let bytes = buf.freeze();
    let well_formed = decodes(input, &bytes);
    Case { what: what.join(", "), bytes, well_formed }
}

/// The plausible message itself, as a case.
pub fn plausible_case(input: &MessageDescriptor, rng: &mut StdRng) -> Case {
    let bytes = plausible(input, rng, 0).encode_to_vec();
    Case { what: "plausible message".into(), bytes: bytes.into(), well_formed: true }
}
