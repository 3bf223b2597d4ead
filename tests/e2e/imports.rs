//! Bulk imports read their file as one CSV document however it is cut: quoted newlines and
//! quotes work wherever the chunks and calls fall, every line is accounted for, a reply stays
//! small whatever the cells hold, and a fiscal code named twice is rejected the second time in
//! whichever call it comes (issue 21).

use crate::claims::{nth_cf, professional_row, REGISTRY_HEADER};
use crate::helpers::*;
use prost::Message;
use sportello_proto::claims::v1 as cl;
use sportello_proto::claims::v1::claims_back_office_service_client::ClaimsBackOfficeServiceClient;

/// Sends `chunks` as one ImportRegistry call straight to claims-svc (the gateway's per-client
/// rate limit is not the test), as the back office with `token`.
async fn import_chunks(
    suite: &Suite,
    token: &str,
    chunks: Vec<Vec<u8>>,
) -> Result<cl::ImportRegistryResponse, tonic::Status> {
    let messages: Vec<cl::ImportRegistryRequest> =
        chunks.into_iter().map(|chunk| cl::ImportRegistryRequest { chunk }).collect();
    let reply = ClaimsBackOfficeServiceClient::new(connect(suite.claims.addr).await)
        .max_decoding_message_size(64 << 20)
        .import_registry(with_token(token, tokio_stream::iter(messages)))
        .await?;
    Ok(reply.into_inner())
}

/// How `sportello import` ended.
struct Imported {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Imported {
    /// Some rows were not taken: status 1, said on stderr, the rows listed on stdout.
    fn with_rows_not_taken(self) -> String {
        assert_eq!(self.code, Some(1), "{}\n{}", self.stdout, self.stderr);
        assert!(self.stderr.contains("not every row was taken"), "{}", self.stderr);
        self.stdout
    }
}

/// Runs `sportello import <what> <path>` as the back office, at the suite's gateway as `gateway`
/// names it (`--gateway …`, or in $SPORTELLO_GATEWAY).
async fn sportello_import_at(
    gateway: &[(&str, String)],
    what: &str,
    path: &std::path::Path,
    extra: &[&str],
) -> Imported {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sportello"));
    command.args(["import", what]).arg(path).args(["--username", BACKOFFICE_ID]).args(extra);
    command.env_remove("SPORTELLO_GATEWAY").env("SPORTELLO_PASSWORD", BACKOFFICE_PASSWORD);
    for (flag_or_variable, value) in gateway {
        match flag_or_variable.strip_prefix("--") {
            Some(_) => command.args([*flag_or_variable, value.as_str()]),
            None => command.env(flag_or_variable, value),
        };
    }
    let out = command.output().await.expect("sportello runs");
    Imported {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `sportello import <what> <path>` as the back office with `--gateway`.
async fn sportello_import(
    suite: &Suite,
    what: &str,
    path: &std::path::Path,
    extra: &[&str],
) -> Imported {
    sportello_import_at(&[("--gateway", url(suite.gateway.addr))], what, path, extra).await
}

async fn backoffice_token(suite: &Suite) -> String {
    suite.login_staff(BACKOFFICE_ID, BACKOFFICE_PASSWORD).await.access_token
}

/// A pensioner whose schemes cell is quoted and holds a newline: a file cut inside that cell
/// once read the rest of the row as a new one, and the pensioner was paid as a worker.
fn pensioner_file() -> (String, String) {
    let cf = nth_cf(7);
    let file = format!(
        "{REGISTRY_HEADER}\n{}\n{cf},\"GESTIONE_SEPARATA:2015-01-01:;\nARTIGIANI:2010-01-01:2014-12-31\",2015-01-01,,1,0,,0\n{}\n",
        professional_row(&nth_cf(1)),
        professional_row(&nth_cf(2)),
    );
    (cf, file)
}

#[tokio::test]
async fn a_quoted_newline_reads_the_same_at_every_chunk_offset_of_a_small_file() {
    let suite = spawn_suite().await;
    let token = backoffice_token(&suite).await;
    let (cf, file) = pensioner_file();
    let bytes = file.as_bytes();
    for cut in 0..=bytes.len() {
        let chunks = vec![bytes[..cut].to_vec(), bytes[cut..].to_vec()];
        let reply = import_chunks(&suite, &token, chunks).await.expect("imported");
        assert_eq!(reply.rows_read, 3, "cut at {cut}: {reply:?}");
        assert_eq!(reply.rows_rejected, 0, "cut at {cut}: {reply:?}");
        assert_eq!(reply.rows_changed + reply.rows_unchanged, 3, "cut at {cut}");
        assert_eq!(reply.rows_changed, if cut == 0 { 3 } else { 0 }, "cut at {cut}");
    }
    let store = crate::claims::claims_store(&suite).await;
    let position = store.position(&cf).await.expect("read").expect("on the registry");
    assert!(position.position.pensioner, "the pensioner stays a pensioner");
    assert_eq!(position.position.memberships.len(), 2);
}

#[tokio::test]
async fn an_unbalanced_quote_reports_every_line_it_swallowed() {
    let suite = spawn_suite().await;
    let token = backoffice_token(&suite).await;
    let rows: Vec<String> = (1..=5).map(|n| professional_row(&nth_cf(n))).collect();
    let file = format!(
        "{REGISTRY_HEADER}\n{}\n{}\n\"{}\n{}\n{}\n",
        rows[0], rows[1], rows[2], rows[3], rows[4]
    );
    let chunks = file.as_bytes().chunks(50).map(<[u8]>::to_vec).collect();
    let reply = import_chunks(&suite, &token, chunks).await.expect("imported");
    assert_eq!(reply.rows_read, 2, "{reply:?}");
    assert_eq!(reply.rows_changed, 2);
    assert_eq!(reply.lines_unreadable, 3, "lines 4 to 6: neither imported nor silent");
    assert_eq!(reply.errors.len(), 1, "{reply:?}");
    assert_eq!(reply.errors[0].line, 4);
    assert!(reply.errors[0].description.contains("never closed"), "{reply:?}");
}

#[tokio::test]
async fn five_bad_one_megabyte_cells_give_a_small_reply_and_the_good_rows_are_written() {
    let suite = spawn_suite().await;
    let token = backoffice_token(&suite).await;
    let huge = "9".repeat(1 << 20);
    let mut file = format!("{REGISTRY_HEADER}\n");
    for n in 0..10 {
        let row = professional_row(&nth_cf(n));
        if n % 2 == 0 {
            // The pensioner flag, a megabyte long.
            let bad = row.replacen(",,0,60,", &format!(",,{huge},60,"), 1);
            file.push_str(&bad);
        } else {
            file.push_str(&row);
        }
        file.push('\n');
    }
    let chunks = file.as_bytes().chunks(256 * 1024).map(<[u8]>::to_vec).collect();
    let reply = import_chunks(&suite, &token, chunks).await.expect("imported");
    assert_eq!((reply.rows_read, reply.rows_changed, reply.rows_rejected), (10, 5, 5));
    assert_eq!(reply.errors.len(), 5);
    assert!(reply.errors.iter().all(|e| e.description.chars().count() <= 200), "{reply:?}");
    assert!(reply.encoded_len() < 4096, "a small reply: {} bytes", reply.encoded_len());
}

/// The CLI cuts a big file into calls between rows (a quoted newline is never cut), keeps the
/// fiscal codes of the whole file, and numbers lines as the file does.
#[tokio::test]
async fn sportello_import_registry_rejects_a_code_named_again_in_a_later_call() {
    let suite = spawn_suite().await;
    let (cf, pensioner) = pensioner_file();
    // The pensioner again, in the third call, as a worker.
    let file = format!("{pensioner}{}\n{}\n", professional_row(&nth_cf(3)), professional_row(&cf));
    let path = suite.db.data_dir().join("registry.csv");
    std::fs::write(&path, file).expect("file");
    let imported = sportello_import(&suite, "registry", &path, &["--rows-per-call", "2"]).await;
    let stdout = imported.with_rows_not_taken();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "line 7, fiscal_code: the same fiscal code is already on line 3");
    assert!(lines[1].starts_with("5 rows read: 4 changed, 0 unchanged, 1 rejected"), "{stdout}");
    let store = crate::claims::claims_store(&suite).await;
    let position = store.position(&cf).await.expect("read").expect("on the registry");
    assert!(position.position.pensioner, "the first row stands");
}

/// README: "a fiscal code named twice is rejected the second time", also past the 20,000 rows
/// the CLI sends per call.
#[tokio::test]
async fn a_duplicate_fiscal_code_at_row_20001_of_the_residents_file_is_rejected() {
    use identity_svc::domain::codice_fiscale::{compute, Sex};
    let suite = spawn_suite().await;
    let mut csv = String::from(
        "fiscal_code,surname,given_name,birth_date,sex,birth_province,birth_municipality,\
         street,street_number,postal_code,province,municipality\n",
    );
    let first_day = chrono::NaiveDate::from_ymd_opt(1940, 1, 1).expect("date");
    let row = |n: i64, street: &str| {
        let born = first_day + chrono::Duration::days(n);
        let cf = compute("Esposito", "Luca", born, Sex::Male, "H501");
        let day = born.format("%d/%m/%Y");
        format!("{cf},Esposito,Luca,{day},M,RM,Roma,{street},1,00184,RM,Roma\n")
    };
    for n in 0..20_000 {
        csv.push_str(&row(n, "Via Cavour"));
    }
    // Row 20,001 (line 20,002): the first citizen again, elsewhere.
    csv.push_str(&row(0, "Via Appia"));
    let path = suite.db.data_dir().join("register.csv");
    std::fs::write(&path, csv).expect("file");
    let stdout = sportello_import(&suite, "residents", &path, &[]).await.with_rows_not_taken();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "line 20002, fiscal_code: the same fiscal code is already on line 2");
    assert!(lines[1].contains("20000 written, 0 unchanged, 1 rejected"), "{stdout}");
    let cf = compute("Esposito", "Luca", first_day, Sex::Male, "H501");
    let filter = format!("fiscal_code = '{cf}' AND street = 'Via Cavour'");
    assert_eq!(suite.db.count("identity", "residents", &filter).await, 1, "the first stands");
}

/// `sportello import` finds the gateway in $SPORTELLO_GATEWAY, as `host:port` or as a URL, and
/// ends with status 0 only when every row was taken.
#[tokio::test]
async fn sportello_import_honours_sportello_gateway_and_succeeds_when_every_row_is_taken() {
    let suite = spawn_suite().await;
    let rows: Vec<String> = (1..=3).map(|n| professional_row(&nth_cf(n))).collect();
    let path = suite.db.data_dir().join("registry.csv");
    std::fs::write(&path, format!("{REGISTRY_HEADER}\n{}\n", rows.join("\n"))).expect("file");
    for gateway in [suite.gateway.addr.to_string(), url(suite.gateway.addr)] {
        let env = [("SPORTELLO_GATEWAY", gateway.clone())];
        let imported = sportello_import_at(&env, "registry", &path, &[]).await;
        assert_eq!(imported.code, Some(0), "{gateway}: {}\n{}", imported.stdout, imported.stderr);
        assert!(imported.stdout.starts_with("3 rows read: "), "{}", imported.stdout);
    }

    // One row the registry refuses: the rest are written, and the status says not all were.
    let file = format!("{REGISTRY_HEADER}\n{}\nnot a fiscal code,,,,,,,\n", rows[0]);
    std::fs::write(&path, file).expect("file");
    let stdout = sportello_import(&suite, "registry", &path, &[]).await.with_rows_not_taken();
    assert!(stdout.contains("1 rejected"), "{stdout}");

    // A residents file alike.
    let residents = suite.db.data_dir().join("register.csv");
    let register = "fiscal_code,surname,given_name,birth_date,sex,birth_province,\
                    birth_municipality,street,street_number,postal_code,province,municipality\n\
                    NOTAFISCALCODE00,Rossi,Mario,10/12/1985,M,RM,Roma,Via Appia,1,00184,RM,Roma\n";
    std::fs::write(&residents, register).expect("file");
    let env = [("SPORTELLO_GATEWAY", suite.gateway.addr.to_string())];
    sportello_import_at(&env, "residents", &residents, &[]).await.with_rows_not_taken();
}
