//! Verified gateway credentials that survive a restart.
//!
//! After a gateway's password has been verified against its argon2 hash once, Headend stores
//! `HMAC-SHA256(key, serial ‖ argon2 hash ‖ password)` beside that hash
//! (`gateways.credential_mac`), under a key kept in the data directory
//! (`gateway-credentials.key`, 0600), never in the database. At start the records are loaded,
//! so a fleet reconnecting after a restart is checked by one HMAC each instead of one argon2
//! each (10 000 argon2 verifications on 2 cores take minutes; 10 000 HMACs take milliseconds).
//!
//! Why this keeps the guarantees (docs/security.md, "Gateway credentials"):
//! - the record is bound to the stored hash: a rotated password (a new hash) invalidates it at
//!   once, on every instance, and `rotate_password` clears it as well;
//! - a database dump alone yields nothing usable: without the key a MAC neither verifies nor
//!   helps guessing; the argon2 hash beside it stays the only thing an offline attack can use;
//! - a wrong password does not match and takes the throttled argon2 path as before; an unknown
//!   serial has no record and costs a dummy argon2 as before.

use std::collections::HashMap;
use std::path::Path;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sg_wire::topic::TopicLayout;
use sha2::Sha256;
use sqlx::PgPool;

use super::gateways::MqttGrant;

/// The key's file in the data directory.
pub const KEY_FILE: &str = "gateway-credentials.key";

/// The HMAC key of verified-credential records. Never printed.
#[derive(Clone)]
pub struct CredentialKey([u8; 32]);

impl std::fmt::Debug for CredentialKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialKey(..)")
    }
}

impl CredentialKey {
    /// Reads the key at `path`, or creates it (32 random bytes, 0600) when it does not exist.
    pub fn load_or_generate(path: &Path) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice())
                .map(Self)
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{} must hold exactly 32 bytes", path.display()),
                    )
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::random();
                crate::infra::datadir::write_private(path, &key.0)?;
                Ok(key)
            }
            Err(e) => Err(e),
        }
    }

    /// A key that lives as long as the process: records made with it never match after a
    /// restart (they are then simply made again after one argon2 verification).
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self(key)
    }

    fn hmac(&self, serial: &str, hash: &str, password: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        // Length-prefixed, so that no two (serial, hash, password) triples share an input.
        for part in [serial.as_bytes(), hash.as_bytes(), password] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// The record of `password` verified for `serial` against the stored argon2 `hash`.
    pub fn mac(&self, serial: &str, hash: &str, password: &[u8]) -> [u8; 32] {
        self.hmac(serial, hash, password)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Whether `record` is this key's record of `password` for `serial` and `hash`
    /// (constant-time comparison).
    pub fn matches(&self, record: &[u8], serial: &str, hash: &str, password: &[u8]) -> bool {
        self.hmac(serial, hash, password)
            .verify_slice(record)
            .is_ok()
    }
}

/// A gateway's verified-credential record, with what a CONNECT it admits is granted.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The argon2 hash the password was verified against.
    pub hash: String,
    pub mac: [u8; 32],
    pub grant: MqttGrant,
}

/// The grant of a gateway row; `None` (logged) when its stored topics no longer parse.
pub fn grant(id: i64, serial: &str, root: &str, publish: &str, sub: &str) -> Option<MqttGrant> {
    match TopicLayout::new(root, publish, sub) {
        Ok(layout) => Some(MqttGrant {
            id,
            serial: serial.to_owned(),
            publish_base: layout.publish_base(),
            command_topic: layout.command_topic(),
        }),
        Err(e) => {
            tracing::error!(serial, error = %e, "stored topics are invalid");
            None
        }
    }
}

type RecordRow = (String, i64, String, Vec<u8>, String, String, String);

/// Every stored record of an SG gateway, by serial. Records made under another key (another
/// instance's, or a previous data directory's) are loaded too: they simply never match.
pub async fn load(pool: &PgPool) -> Result<HashMap<String, Verified>, sqlx::Error> {
    let rows: Vec<RecordRow> = sqlx::query_as(
        "SELECT serial, id, password_hash, credential_mac, topic_root, topic_pub, topic_sub
         FROM gateways WHERE kind = 'sg' AND credential_mac IS NOT NULL",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(serial, id, hash, mac, root, publish, sub)| {
            let mac = <[u8; 32]>::try_from(mac.as_slice()).ok()?;
            let grant = grant(id, &serial, &root, &publish, &sub)?;
            Some((serial, Verified { hash, mac, grant }))
        })
        .collect())
}

/// Stores the record of gateway `id`, only while its hash is still `hash` (a rotation that
/// raced the verification wins).
pub async fn persist(
    pool: &PgPool,
    id: i64,
    hash: &str,
    mac: &[u8; 32],
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE gateways SET credential_mac = $3 WHERE id = $1 AND password_hash = $2")
        .bind(id)
        .bind(hash)
        .bind(mac.as_slice())
        .execute(pool)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_bound_to_serial_hash_password_and_key() {
        let key = CredentialKey::random();
        let mac = key.mac("SG1", "$argon2id$old", b"secret password");
        assert!(key.matches(&mac, "SG1", "$argon2id$old", b"secret password"));
        // A rotation (new hash), a wrong password, another serial, another key: no match.
        assert!(!key.matches(&mac, "SG1", "$argon2id$new", b"secret password"));
        assert!(!key.matches(&mac, "SG1", "$argon2id$old", b"secret passwore"));
        assert!(!key.matches(&mac, "SG2", "$argon2id$old", b"secret password"));
        assert!(!CredentialKey::random().matches(&mac, "SG1", "$argon2id$old", b"secret password"));
        // Boundaries are part of the input: moving bytes between fields changes the record.
        assert!(!key.matches(&mac, "SG1$", "argon2id$old", b"secret password"));
        assert!(!key.matches(&mac[..31], "SG1", "$argon2id$old", b"secret password"));
    }

    #[test]
    fn the_key_file_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let first = CredentialKey::load_or_generate(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = CredentialKey::load_or_generate(&path).unwrap();
        assert_eq!(first.0, again.0);
        std::fs::write(&path, b"short").unwrap();
        assert!(CredentialKey::load_or_generate(&path).is_err());
        assert_eq!(format!("{first:?}"), "CredentialKey(..)");
    }
}
