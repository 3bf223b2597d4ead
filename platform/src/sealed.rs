//! Secrets at rest. What a service must keep only until it has sent it — a PIN half, a recovery
//! code — is sealed before it reaches a database, with XChaCha20-Poly1305 under a data key that
//! lives outside the database: `data_dir/keys/secrets-<id>.key`, 32 random bytes, mode 0600,
//! shared by the replicas like the other keys. The key's id is stored beside the ciphertext, so
//! keys rotate: the newest key in the directory seals, every key there opens, and a key can be
//! removed once no row sealed under it is left. The row (its table and id) is the associated
//! data, so a ciphertext copied onto another row does not open. A dump, a backup, a WAL file or a
//! dead tuple holds ciphertext only; what opens lives in memory in `secrecy` wrappers, wiped when
//! dropped.
//!
//! Key ids are the milliseconds since the epoch when the key was made, so the newest sorts last;
//! the random 192-bit nonce of each seal makes reuse under one key negligible however many rows.

use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::zeroize::{Zeroize, Zeroizing};
use secrecy::{CloneableSecret, SecretBox};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Bytes of a data key.
const KEY_LEN: usize = 32;
/// Bytes of a nonce, stored in front of the ciphertext.
const NONCE_LEN: usize = 24;
/// How often the key directory is looked at again for a key rotated in meanwhile.
const RESCAN: Duration = Duration::from_secs(30);

const PREFIX: &str = "secrets-";
const SUFFIX: &str = ".key";

/// A value sealed for storage: the id of the key that sealed it and the ciphertext (nonce, then
/// ciphertext and tag), base64, as two text columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub ciphertext: String,
}

impl Sealed {
    /// The sealed secret parameters of a row, from the columns every table that keeps them
    /// has: `secret_params` (the ciphertext) and `secrets_key` (the key id). None when purged.
    pub fn of_row(row: &sqlx::any::AnyRow) -> Result<Option<Self>, sqlx::Error> {
        use sqlx::Row;
        let ciphertext: Option<String> = row.try_get("secret_params")?;
        let key_id: Option<String> = row.try_get("secrets_key")?;
        Ok(ciphertext.zip(key_id).map(|(ciphertext, key_id)| Sealed { key_id, ciphertext }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("sealed under key {0}, which is not in the keys directory")]
    UnknownKey(String),
    /// Altered, copied from another row, or sealed under another key that had the same id.
    #[error("does not open under key {0}")]
    Rejected(String),
    #[error("opens to something other than secret parameters")]
    NotParams,
}

/// Secret parameters by name (`pin_half`, `code`) as they are held in memory once opened.
#[derive(Clone, Default)]
pub struct Params(pub BTreeMap<String, String>);

impl Zeroize for Params {
    fn zeroize(&mut self) {
        for (_, mut value) in std::mem::take(&mut self.0) {
            value.zeroize();
        }
    }
}

impl CloneableSecret for Params {}

/// Opened secret parameters: wiped from memory when dropped, and never in `Debug`.
pub type SecretParams = SecretBox<Params>;

/// The associated data of a row: its table and id.
fn associated(table: &str, id: &str) -> Vec<u8> {
    format!("{table}/{id}").into_bytes()
}

/// Where the data keys of `data_dir` live.
pub fn keys_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("keys")
}

/// The keys found in `dir`, by id; an unreadable or malformed key file is an error (a service
/// must not start sealing under one key while rows it cannot open pile up under another).
fn scan(dir: &Path) -> anyhow::Result<BTreeMap<String, XChaCha20Poly1305>> {
    let mut keys = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(keys),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(key_id) else {
            continue;
        };
        let bytes = Zeroizing::new(std::fs::read(entry.path())?);
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| {
            anyhow::anyhow!("{}: a data key is {KEY_LEN} bytes", entry.path().display())
        })?;
        keys.insert(id.to_owned(), cipher);
    }
    Ok(keys)
}

/// The id in a key file's name, if it is one.
fn key_id(file_name: &str) -> Option<&str> {
    let id = file_name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then_some(id)
}

/// Makes a new key in `dir`, newer than every key there; returns its id.
fn generate(dir: &Path, newest: Option<&str>) -> anyhow::Result<String> {
    crate::files::create_dir(dir)?;
    let after = newest.and_then(|id| id.parse::<i64>().ok()).map_or(0, |n| n + 1);
    let mut id = crate::now_millis().max(after);
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    rand_core::RngCore::fill_bytes(&mut OsRng, &mut key[..]);
    loop {
        let path = dir.join(format!("{PREFIX}{id:013}{SUFFIX}"));
        match crate::files::options().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                std::io::Write::write_all(&mut file, &key[..])?;
                file.sync_all()?;
                tracing::info!(path = %path.display(), "generated a new data key for secrets at rest");
                return Ok(format!("{id:013}"));
            }
            // Made at the same millisecond by another process: it stands, ours goes after it
            // (for a first key, see `Keyring::load_or_generate`).
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => id += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

struct Keys {
    by_id: BTreeMap<String, XChaCha20Poly1305>,
    scanned: Instant,
}

/// The data keys of a data directory: the newest seals, all of them open.
#[derive(Clone)]
pub struct Keyring {
    dir: PathBuf,
    keys: Arc<RwLock<Keys>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl Keyring {
    /// The keys under `data_dir/keys`, with a first one made when there is none (every process
    /// sharing the directory then finds and uses that one).
    pub fn load_or_generate(data_dir: &Path) -> anyhow::Result<Self> {
        let dir = keys_dir(data_dir);
        let mut by_id = scan(&dir)?;
        if by_id.is_empty() {
            generate(&dir, None)?;
            by_id = scan(&dir)?;
        }
        Ok(Self { dir, keys: Arc::new(RwLock::new(Keys { by_id, scanned: Instant::now() })) })
    }

    /// `sportello keys rotate-secrets`: makes a new key under `data_dir/keys`, which running
    /// services seal with from their next look at the directory (within 30 s); rows sealed
    /// under older keys stay readable as long as those keys are kept. Returns the new key's id.
    pub fn rotate(data_dir: &Path) -> anyhow::Result<String> {
        let dir = keys_dir(data_dir);
        let keys = scan(&dir)?;
        generate(&dir, keys.keys().next_back().map(String::as_str))
    }

    /// Reads the directory again; keeps what it knew if that fails (a key may be being written)
    /// or finds no key at all (what is sealed must stay readable).
    fn rescan(&self) {
        let found = scan(&self.dir);
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        keys.scanned = Instant::now();
        match found {
            Ok(by_id) if !by_id.is_empty() => keys.by_id = by_id,
            Ok(_) => {
                tracing::warn!(dir = %self.dir.display(), "no data key left in the keys directory")
            }
            Err(e) => tracing::warn!(error = %e, "the keys directory could not be read again"),
        }
    }

    /// Seals `plaintext` for row `id` of `table` under the newest key.
    pub fn seal(&self, table: &str, id: &str, plaintext: &[u8]) -> Sealed {
        let stale = self.keys.read().unwrap_or_else(|e| e.into_inner()).scanned.elapsed() > RESCAN;
        if stale {
            self.rescan();
        }
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let (key_id, cipher) = keys.by_id.iter().next_back().expect("a keyring is never empty");
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = associated(table, id);
        let sealed = cipher
            .encrypt(&nonce, Payload { msg: plaintext, aad: &aad })
            .expect("XChaCha20-Poly1305 seals any message this size");
        let mut stored = Vec::with_capacity(NONCE_LEN + sealed.len());
        stored.extend_from_slice(&nonce);
        stored.extend_from_slice(&sealed);
        Sealed {
            key_id: key_id.clone(),
            ciphertext: base64::engine::general_purpose::STANDARD_NO_PAD.encode(stored),
        }
    }

    /// Opens what [`Keyring::seal`] sealed for row `id` of `table`.
    pub fn open(
        &self,
        table: &str,
        id: &str,
        sealed: &Sealed,
    ) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let rejected = || OpenError::Rejected(sealed.key_id.clone());
        let stored = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(&sealed.ciphertext)
            .map_err(|_| rejected())?;
        if stored.len() < NONCE_LEN {
            return Err(rejected());
        }
        let (nonce, ciphertext) = stored.split_at(NONCE_LEN);
        let aad = associated(table, id);
        let attempt = || {
            let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
            let cipher = keys.by_id.get(&sealed.key_id)?;
            let payload = Payload { msg: ciphertext, aad: &aad };
            Some(cipher.decrypt(XNonce::from_slice(nonce), payload).map(Zeroizing::new))
        };
        let opened = match attempt() {
            Some(opened) => opened,
            // Rotated in by another replica since this one looked, perhaps.
            None => {
                self.rescan();
                attempt().ok_or_else(|| OpenError::UnknownKey(sealed.key_id.clone()))?
            }
        };
        opened.map_err(|_| rejected())
    }

    /// Seals secret parameters, a map of names to values, as a JSON object for row `id` of
    /// `table`.
    pub fn seal_params<K, V>(&self, table: &str, id: &str, params: &BTreeMap<K, V>) -> Sealed
    where
        K: serde::Serialize + Ord,
        V: serde::Serialize,
    {
        let json = Zeroizing::new(serde_json::to_vec(params).expect("string maps serialise"));
        self.seal(table, id, &json)
    }

    /// Opens secret parameters sealed by [`Keyring::seal_params`]; a row with none (`None`)
    /// has no parameters.
    pub fn open_params(
        &self,
        table: &str,
        id: &str,
        sealed: Option<&Sealed>,
    ) -> Result<SecretParams, OpenError> {
        let Some(sealed) = sealed else {
            return Ok(SecretParams::default());
        };
        let json = self.open(table, id, sealed)?;
        // serde_json's message may quote what it choked on: say nothing of it.
        let params = serde_json::from_slice(&json).map_err(|_| OpenError::NotParams)?;
        Ok(SecretBox::new(Box::new(Params(params))))
    }
}

/// Seals, in place, the secret parameters a version before sealing kept in clear in `table`'s
/// `secret_params` column (rows with no `secrets_key` beside it): run at start, so that rows
/// waiting to be sent across an upgrade go out, and their secrets leave the file (on SQLite,
/// with `secure_delete`, at once; on PostgreSQL, when vacuum reclaims the old row versions).
/// Returns how many rows it sealed.
pub async fn seal_cleartext_rows(
    pool: &sqlx::AnyPool,
    keys: &Keyring,
    table: &str,
) -> Result<u64, sqlx::Error> {
    use sqlx::Row;
    let select = format!(
        "SELECT id, secret_params FROM {table} WHERE secret_params IS NOT NULL \
         AND secrets_key IS NULL"
    );
    let update = format!(
        "UPDATE {table} SET secret_params = $1, secrets_key = $2 \
         WHERE id = $3 AND secrets_key IS NULL"
    );
    let mut sealed_rows = 0;
    for row in sqlx::query(&select).fetch_all(pool).await? {
        let id: String = row.try_get("id")?;
        let clear = Zeroizing::new(row.try_get::<String, _>("secret_params")?);
        let sealed = keys.seal(table, &id, clear.as_bytes());
        let done = sqlx::query(&update)
            .bind(&sealed.ciphertext)
            .bind(&sealed.key_id)
            .bind(&id)
            .execute(pool)
            .await?;
        sealed_rows += done.rows_affected();
    }
    if sealed_rows > 0 {
        tracing::info!(table, rows = sealed_rows, "sealed secret parameters kept in clear");
    }
    Ok(sealed_rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn params() -> BTreeMap<String, String> {
        BTreeMap::from([("pin_half".to_owned(), "AB12CD34".to_owned())])
    }

    #[test]
    fn sealed_parameters_open_for_their_own_row_only() {
        let dir = tempfile::tempdir().expect("dir");
        let keys = Keyring::load_or_generate(dir.path()).expect("keys");
        let sealed = keys.seal_params("messages", "row-1", &params());
        assert!(!sealed.ciphertext.contains("AB12CD34"));
        let opened = keys.open_params("messages", "row-1", Some(&sealed)).expect("opens");
        assert_eq!(opened.expose_secret().0, params());
        assert!(matches!(
            keys.open_params("messages", "row-2", Some(&sealed)),
            Err(OpenError::Rejected(_))
        ));
        assert!(matches!(
            keys.open_params("outbox", "row-1", Some(&sealed)),
            Err(OpenError::Rejected(_))
        ));
        let mut altered = sealed.clone();
        let flipped = if &altered.ciphertext[40..41] == "A" { "B" } else { "A" };
        altered.ciphertext.replace_range(40..41, flipped);
        assert!(matches!(
            keys.open_params("messages", "row-1", Some(&altered)),
            Err(OpenError::Rejected(_))
        ));
    }

    #[test]
    fn after_a_rotation_the_new_key_seals_and_the_old_one_still_opens() {
        let dir = tempfile::tempdir().expect("dir");
        let keys = Keyring::load_or_generate(dir.path()).expect("keys");
        let old = keys.seal_params("outbox", "1", &params());
        let new_id = Keyring::rotate(dir.path()).expect("rotated");
        assert!(new_id > old.key_id, "{new_id} sorts after {}", old.key_id);
        // A service started after the rotation (a running one looks again within 30 s).
        let restarted = Keyring::load_or_generate(dir.path()).expect("keys");
        let new = restarted.seal_params("outbox", "2", &params());
        assert_eq!(new.key_id, new_id);
        assert_eq!(
            restarted.open_params("outbox", "1", Some(&old)).expect("old").expose_secret().0,
            params()
        );
        // The running one opens rows of the new key at once.
        assert_eq!(
            keys.open_params("outbox", "2", Some(&new)).expect("new").expose_secret().0,
            params()
        );
    }

    #[test]
    fn a_row_sealed_under_a_key_no_longer_held_says_which() {
        let dir = tempfile::tempdir().expect("dir");
        let keys = Keyring::load_or_generate(dir.path()).expect("keys");
        let sealed = keys.seal_params("outbox", "1", &params());
        let other = tempfile::tempdir().expect("dir");
        let stranger = Keyring::load_or_generate(other.path()).expect("keys");
        let foreign = Sealed { key_id: "0000000000001".into(), ..sealed.clone() };
        assert!(matches!(
            stranger.open_params("outbox", "1", Some(&foreign)),
            Err(OpenError::UnknownKey(id)) if id == "0000000000001"
        ));
    }

    #[tokio::test]
    async fn secrets_an_older_version_kept_in_clear_are_sealed_in_place_at_start() {
        let dir = tempfile::tempdir().expect("dir");
        let keys = Keyring::load_or_generate(dir.path()).expect("keys");
        sqlx::any::install_default_drivers();
        let url = crate::db::sqlite_url(dir.path(), "svc");
        let pool = sqlx::AnyPool::connect(&url).await.expect("pool");
        sqlx::query("CREATE TABLE outbox (id TEXT, secret_params TEXT, secrets_key TEXT)")
            .execute(&pool)
            .await
            .expect("table");
        sqlx::query("INSERT INTO outbox VALUES ('1', '{\"pin_half\":\"AB12CD34\"}', NULL), ('2', NULL, NULL)")
            .execute(&pool)
            .await
            .expect("rows");
        assert_eq!(seal_cleartext_rows(&pool, &keys, "outbox").await.expect("sealed"), 1);
        assert_eq!(seal_cleartext_rows(&pool, &keys, "outbox").await.expect("again"), 0);
        let row = sqlx::query("SELECT secret_params, secrets_key FROM outbox WHERE id = '1'")
            .fetch_one(&pool)
            .await
            .expect("row");
        let sealed = Sealed::of_row(&row).expect("columns").expect("sealed");
        assert!(!sealed.ciphertext.contains("AB12CD34"));
        let opened = keys.open_params("outbox", "1", Some(&sealed)).expect("opens");
        assert_eq!(opened.expose_secret().0, params());
    }

    #[cfg(unix)]
    #[test]
    fn a_data_key_is_its_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        Keyring::load_or_generate(dir.path()).expect("keys");
        let file = std::fs::read_dir(keys_dir(dir.path())).expect("keys").next().expect("one");
        let meta = file.expect("entry").metadata().expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), KEY_LEN as u64);
    }
}
