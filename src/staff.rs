//! Staff accounts from the command line: `sportello staff add USER --role ROLE` writes the
//! account into the configuration file itself, `sportello hash-password` prints a hash for
//! those who write it by hand, and `sportello up` on embedded defaults (no staff configured)
//! makes demo accounts so that the imports, the contact-center CLI and the back office work at
//! once.

use crate::stdout::outln;
use anyhow::Context as _;
use rand::distr::{Alphanumeric, SampleString as _};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Shorter passwords are refused: staff passwords guard every citizen's record.
const MIN_PASSWORD_CHARS: usize = 12;

/// The roles a staff account may have.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum StaffRole {
    Operator,
    Patronato,
    Backoffice,
}

impl StaffRole {
    /// As `[identity.staff.<username>] role` spells it.
    fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Patronato => "patronato",
            Self::Backoffice => "backoffice",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    username: String,
    #[arg(long, value_enum)]
    role: StaffRole,
    /// Configuration file (TOML) to write the account into, created if absent; default
    /// `$SPORTELLO_CONFIG` or `./sportello.toml`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Replace the account if the file has one of that name.
    #[arg(long)]
    force: bool,
    /// Read the password from the first line of standard input even on a terminal.
    #[arg(long)]
    password_stdin: bool,
}

/// The argon2id hash of `password`, as identity-svc checks it.
fn hash(password: String) -> anyhow::Result<String> {
    anyhow::ensure!(
        password.chars().count() >= MIN_PASSWORD_CHARS,
        "use a password of {MIN_PASSWORD_CHARS} characters or more"
    );
    let hasher = identity_svc::hashing::Hasher::new(&identity_svc::hashing::HashParams::default())?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(runtime.block_on(hasher.hash(password))?.as_phc().to_owned())
}

/// `sportello hash-password`: the hash of the first line of standard input, and nothing else.
pub fn hash_password() -> anyhow::Result<()> {
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    outln!("{}", hash(password.trim_end_matches(['\r', '\n']).to_owned())?);
    Ok(())
}

/// `sportello staff add`: the password from the terminal (not echoed) or standard input, its
/// hash written with the role into the configuration file, the rest of the file left as it was.
pub fn add(args: AddArgs) -> anyhow::Result<()> {
    let file = sportello_platform::config::file(args.config.as_deref());
    let username = args.username.trim().to_ascii_lowercase();
    anyhow::ensure!(!username.is_empty(), "no username given");
    let password = crate::operator::read_password(&username, args.password_stdin)?;
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let mut doc: toml_edit::DocumentMut =
        text.parse().with_context(|| format!("{} is not TOML", file.display()))?;
    let staff = staff_table(&mut doc).with_context(|| format!("in {}", file.display()))?;
    anyhow::ensure!(
        args.force || !staff.contains_key(&username),
        "{} already has [identity.staff.{username}]: give --force to replace it",
        file.display()
    );
    let mut account = toml_edit::Table::new();
    account.insert("role", toml_edit::value(args.role.as_str()));
    account.insert("password_hash", toml_edit::value(hash(password)?));
    staff.insert(&username, toml_edit::Item::Table(account));
    // A new file is made 0600: it holds password hashes.
    let mode = std::fs::metadata(&file).map_or(0o600, |m| m.permissions().mode() & 0o7777);
    crate::atomic_file::replace(&file, doc.to_string().as_bytes(), mode)?;
    outln!(
        "{username}: {} account written to {}; restart the suite to use it",
        args.role.as_str(),
        file.display()
    );
    Ok(())
}

/// `[identity.staff]` of `doc`, made if absent (without empty headers of its own).
fn staff_table(doc: &mut toml_edit::DocumentMut) -> anyhow::Result<&mut toml_edit::Table> {
    let mut table = doc.as_table_mut();
    for key in ["identity", "staff"] {
        let entry = table.entry(key).or_insert_with(|| {
            let mut made = toml_edit::Table::new();
            made.set_implicit(true);
            toml_edit::Item::Table(made)
        });
        table = entry.as_table_mut().with_context(|| {
            format!(
                "`{key}` is not a table here: add the account by hand (sportello hash-password)"
            )
        })?;
    }
    Ok(table)
}

/// A demo account of `sportello up`.
pub struct DemoAccount {
    pub role: StaffRole,
    pub username: String,
    pub password: String,
}

/// The demo accounts under `data_dir`: read back from `demo-staff.txt`, or made now with random
/// passwords and written there (mode 0600) once; and whether they were made now.
pub fn demo_accounts(data_dir: &Path) -> anyhow::Result<(Vec<DemoAccount>, bool)> {
    let path = demo_file(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let accounts: Vec<DemoAccount> = text
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
                    [role, username, password] => Some(DemoAccount {
                        role: <StaffRole as clap::ValueEnum>::from_str(role, false).ok()?,
                        username: username.to_owned(),
                        password: password.to_owned(),
                    }),
                    _ => None,
                })
                .collect();
            anyhow::ensure!(!accounts.is_empty(), "{} lists no account", path.display());
            return Ok((accounts, false));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let accounts: Vec<DemoAccount> =
        [StaffRole::Operator, StaffRole::Patronato, StaffRole::Backoffice]
            .into_iter()
            .map(|role| DemoAccount {
                role,
                username: format!("demo-{}", role.as_str()),
                password: Alphanumeric.sample_string(&mut rand::rng(), 20),
            })
            .collect();
    let mut text = String::from(
        "# Demo staff of `sportello up` on embedded defaults (no [identity.staff] configured).\n\
         # role        username          password\n",
    );
    for a in &accounts {
        text.push_str(&format!("{:<13} {:<17} {}\n", a.role.as_str(), a.username, a.password));
    }
    std::fs::create_dir_all(data_dir)?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    out.write_all(text.as_bytes())?;
    out.sync_all()?;
    Ok((accounts, true))
}

pub fn demo_file(data_dir: &Path) -> PathBuf {
    data_dir.join("demo-staff.txt")
}

/// The environment that gives identity-svc `accounts` as configured staff.
pub fn demo_env(accounts: &[DemoAccount]) -> anyhow::Result<Vec<(String, String)>> {
    let mut env = Vec::new();
    for a in accounts {
        let prefix = format!("SPORTELLO_IDENTITY__STAFF__{}", a.username.to_ascii_uppercase());
        env.push((format!("{prefix}__ROLE"), a.role.as_str().to_owned()));
        env.push((format!("{prefix}__PASSWORD_HASH"), hash(a.password.clone())?));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_accounts_are_made_once_and_read_back_the_same() {
        let dir = tempfile::tempdir().expect("dir");
        let (made, new) = demo_accounts(dir.path()).expect("made");
        assert!(new);
        let roles: Vec<&str> = made.iter().map(|a| a.role.as_str()).collect();
        assert_eq!(roles, ["operator", "patronato", "backoffice"]);
        let mode = std::fs::metadata(demo_file(dir.path())).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, new) = demo_accounts(dir.path()).expect("read");
        assert!(!new);
        let pairs = |v: &[DemoAccount]| {
            v.iter().map(|a| (a.username.clone(), a.password.clone())).collect::<Vec<_>>()
        };
        assert_eq!(pairs(&again), pairs(&made));
    }

    #[test]
    fn an_account_goes_under_identity_staff_and_the_rest_of_the_file_stays() {
        let mut doc: toml_edit::DocumentMut =
            "# ours\ndata_dir = \"d\"\n\n[identity]\nstaff_lockout = \"1m\"\n"
                .parse()
                .expect("toml");
        staff_table(&mut doc).expect("table").insert("op.rossi", toml_edit::value(1));
        let text = doc.to_string();
        assert!(text.starts_with("# ours\ndata_dir = \"d\""), "{text}");
        assert!(text.contains("staff_lockout = \"1m\""), "{text}");
        let mut bad: toml_edit::DocumentMut = "identity = 1\n".parse().expect("toml");
        assert!(staff_table(&mut bad).is_err());
    }
}
