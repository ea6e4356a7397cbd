//! Secrets at rest: envelope encryption bound to the row and column that hold the secret.
//!
//! Each secret gets its own random data key (DEK). The DEK encrypts the plaintext with
//! XChaCha20-Poly1305, and the key-encryption key (KEK, from `HIVEGRAPH_SECRET_KEY`) wraps the DEK.
//! The additional authenticated data is `table/row/column`, so a sealed value copied to another
//! row or column no longer opens. The KEK is identified by a key id (a hash prefix), so that keys
//! can be rotated by re-wrapping DEKs.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, OsRng, Payload};
use chacha20poly1305::{AeadCore, XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a sealed value is bound to.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub table: &'a str,
    pub row: uuid::Uuid,
    pub column: &'a str,
}

impl Binding<'_> {
    fn aad(&self) -> Vec<u8> {
        format!("hivegraph/v1/{}/{}/{}", self.table, self.row, self.column).into_bytes()
    }
}

/// A sealed secret as stored in a jsonb column.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sealed {
    /// Format version.
    pub v: u8,
    /// Id of the key-encryption key that wrapped the data key.
    pub kid: String,
    /// The data key, encrypted with the KEK (nonce-prefixed, base64).
    pub dek: String,
    /// The secret, encrypted with the data key (nonce-prefixed, base64).
    pub ct: String,
}

/// Errors of sealing and opening.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret was sealed with key {0}, which is not configured")]
    UnknownKey(String),
    #[error("the sealed secret is damaged or bound to another row")]
    Corrupt,
    #[error("HIVEGRAPH_SECRET_KEY must be base64 of exactly 32 bytes")]
    BadKey,
}

/// The key-encryption key(s).
pub struct Keyring {
    current: (String, SecretBox<[u8; 32]>),
    previous: Vec<(String, SecretBox<[u8; 32]>)>,
}

fn key_id(key: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(key)[..6])
}

fn parse_key(b64: &str) -> Result<SecretBox<[u8; 32]>, SecretError> {
    let raw = B64.decode(b64.trim()).map_err(|_| SecretError::BadKey)?;
    let arr: [u8; 32] = raw.try_into().map_err(|_| SecretError::BadKey)?;
    Ok(SecretBox::new(Box::new(arr)))
}

impl Keyring {
    /// A keyring from the base64 current key, plus older keys that can still open secrets.
    pub fn new(
        current_b64: &SecretString,
        previous_b64: &[SecretString],
    ) -> Result<Self, SecretError> {
        let current = parse_key(current_b64.expose_secret())?;
        let mut previous = Vec::new();
        for p in previous_b64 {
            let k = parse_key(p.expose_secret())?;
            previous.push((key_id(k.expose_secret()), k));
        }
        Ok(Keyring {
            current: (key_id(current.expose_secret()), current),
            previous,
        })
    }

    /// A random key for development; secrets sealed with it do not survive a restart.
    pub fn ephemeral() -> Self {
        let key: [u8; 32] = XChaCha20Poly1305::generate_key(&mut OsRng).into();
        Keyring {
            current: (key_id(&key), SecretBox::new(Box::new(key))),
            previous: Vec::new(),
        }
    }

    /// The id of the key new secrets are sealed with.
    pub fn current_key_id(&self) -> &str {
        &self.current.0
    }

    fn key(&self, kid: &str) -> Option<&SecretBox<[u8; 32]>> {
        if self.current.0 == kid {
            return Some(&self.current.1);
        }
        self.previous
            .iter()
            .find(|(id, _)| id == kid)
            .map(|(_, k)| k)
    }

    /// Seals `plaintext` for `binding`.
    pub fn seal(&self, plaintext: &[u8], binding: Binding<'_>) -> Sealed {
        let aad = binding.aad();
        let dek = XChaCha20Poly1305::generate_key(&mut OsRng);
        let ct = encrypt(&dek, plaintext, &aad);
        let kek = XChaCha20Poly1305::new(self.current.1.expose_secret().into());
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let wrapped = kek
            .encrypt(
                &nonce,
                Payload {
                    msg: dek.as_slice(),
                    aad: &aad,
                },
            )
            .expect("encryption with a valid key cannot fail");
        Sealed {
            v: 1,
            kid: self.current.0.clone(),
            dek: B64.encode([nonce.as_slice(), &wrapped].concat()),
            ct,
        }
    }

    /// Opens a sealed value bound to `binding`.
    pub fn open(
        &self,
        sealed: &Sealed,
        binding: Binding<'_>,
    ) -> Result<SecretBox<Vec<u8>>, SecretError> {
        let aad = binding.aad();
        let kek_bytes = self
            .key(&sealed.kid)
            .ok_or_else(|| SecretError::UnknownKey(sealed.kid.clone()))?;
        let kek = XChaCha20Poly1305::new(kek_bytes.expose_secret().into());
        let wrapped = B64.decode(&sealed.dek).map_err(|_| SecretError::Corrupt)?;
        if wrapped.len() < 24 {
            return Err(SecretError::Corrupt);
        }
        let (nonce, body) = wrapped.split_at(24);
        let dek = kek
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .map_err(|_| SecretError::Corrupt)?;
        let dek = SecretBox::new(Box::new(dek));
        let ct = B64.decode(&sealed.ct).map_err(|_| SecretError::Corrupt)?;
        if ct.len() < 24 {
            return Err(SecretError::Corrupt);
        }
        let (nonce, body) = ct.split_at(24);
        let cipher = XChaCha20Poly1305::new_from_slice(dek.expose_secret())
            .map_err(|_| SecretError::Corrupt)?;
        let plain = cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .map_err(|_| SecretError::Corrupt)?;
        Ok(SecretBox::new(Box::new(plain)))
    }

    /// Re-wraps a sealed value's data key with the current key (key rotation).
    pub fn rewrap(&self, sealed: &Sealed, binding: Binding<'_>) -> Result<Sealed, SecretError> {
        if sealed.kid == self.current.0 {
            return Ok(sealed.clone());
        }
        let plain = self.open(sealed, binding)?;
        Ok(self.seal(plain.expose_secret(), binding))
    }
}

fn encrypt(dek: &chacha20poly1305::Key, plaintext: &[u8], aad: &[u8]) -> String {
    let cipher = XChaCha20Poly1305::new(dek);
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let ct = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("encryption with a valid key cannot fail");
    B64.encode([nonce.as_slice(), &ct].concat())
}

impl Keyring {
    /// Loads the key-encryption key: `HIVEGRAPH_SECRET_KEY` (plus optional
    /// `HIVEGRAPH_SECRET_KEY_PREVIOUS`, comma-separated, during a rotation). In dev mode a missing key
    /// gives an ephemeral one, with a warning.
    pub fn load(mode: crate::config::Mode) -> anyhow::Result<Keyring> {
        match std::env::var("HIVEGRAPH_SECRET_KEY") {
            Ok(k) if !k.trim().is_empty() => {
                let previous: Vec<SecretString> = std::env::var("HIVEGRAPH_SECRET_KEY_PREVIOUS")
                    .unwrap_or_default()
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| SecretString::from(s.trim().to_string()))
                    .collect();
                Ok(Keyring::new(&SecretString::from(k), &previous)?)
            }
            _ if mode == crate::config::Mode::Dev => {
                tracing::warn!(
                    "HIVEGRAPH_SECRET_KEY is not set: using an ephemeral key; registry credentials stored now \
                     cannot be opened after a restart"
                );
                Ok(Keyring::ephemeral())
            }
            _ => anyhow::bail!(
                "HIVEGRAPH_SECRET_KEY is required in production mode (base64 of 32 random bytes)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(row: uuid::Uuid) -> Binding<'static> {
        Binding {
            table: "registries",
            row,
            column: "auth_config",
        }
    }

    #[test]
    fn seal_open_round_trip_and_binding() {
        let ring = Keyring::ephemeral();
        let row = uuid::Uuid::new_v4();
        let sealed = ring.seal(b"CANARY-secret", binding(row));
        let text = serde_json::to_string(&sealed).unwrap();
        assert!(!text.contains("CANARY"));
        assert_eq!(
            ring.open(&sealed, binding(row))
                .unwrap()
                .expose_secret()
                .as_slice(),
            b"CANARY-secret"
        );
        // Moved to another row, it no longer opens.
        assert!(matches!(
            ring.open(&sealed, binding(uuid::Uuid::new_v4())),
            Err(SecretError::Corrupt)
        ));
        // A different key cannot open it either.
        assert!(matches!(
            Keyring::ephemeral().open(&sealed, binding(row)),
            Err(SecretError::UnknownKey(_))
        ));
    }

    #[test]
    fn rotation_rewraps_with_the_new_key() {
        let old = SecretString::from(B64.encode([7u8; 32]));
        let new = SecretString::from(B64.encode([9u8; 32]));
        let row = uuid::Uuid::new_v4();
        let sealed = Keyring::new(&old, &[])
            .unwrap()
            .seal(b"token", binding(row));
        let rotated_ring = Keyring::new(&new, std::slice::from_ref(&old)).unwrap();
        let rewrapped = rotated_ring.rewrap(&sealed, binding(row)).unwrap();
        assert_eq!(rewrapped.kid, rotated_ring.current_key_id());
        let only_new = Keyring::new(&new, &[]).unwrap();
        assert_eq!(
            only_new
                .open(&rewrapped, binding(row))
                .unwrap()
                .expose_secret()
                .as_slice(),
            b"token"
        );
        assert!(Keyring::new(&SecretString::from("short".to_string()), &[]).is_err());
    }
}
