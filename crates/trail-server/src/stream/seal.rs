//! Destinations' secrets at rest: sealed with ChaCha20-Poly1305 under a key derived from the log's
//! signing key, so a copy of the database alone (a backup, a PostgreSQL dump) does not reveal them, and
//! every node that signs the log can read them. A secret is shown once, when created; the API never
//! returns it again.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Seals and opens secrets.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

/// Sealed form: version byte 1, 12-byte nonce, ciphertext with its tag.
const VERSION: u8 = 1;

impl Sealer {
    pub fn new(signer: &trail_merkle::Signer) -> Self {
        Self::for_purpose(signer, "trail destination secrets v1")
    }

    /// A cipher of its own for each purpose (destinations' secrets, second factors, sign-in
    /// challenges): what one seals, another does not open.
    pub fn for_purpose(signer: &trail_merkle::Signer, purpose: &str) -> Self {
        let mut h = Sha256::new();
        h.update(purpose.as_bytes());
        h.update(b"\0");
        h.update(signer.secret_bytes());
        let key: [u8; 32] = h.finalize().into();
        Self { cipher: ChaCha20Poly1305::new(Key::from_slice(&key)) }
    }

    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        // Encryption with a fresh nonce cannot fail for inputs this small.
        let sealed = self.cipher.encrypt(Nonce::from_slice(&nonce), plain).unwrap_or_default();
        let mut out = Vec::with_capacity(13 + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, String> {
        match sealed.split_first() {
            Some((&VERSION, rest)) if rest.len() > 12 => {
                let (nonce, ct) = rest.split_at(12);
                self.cipher
                    .decrypt(Nonce::from_slice(nonce), ct)
                    .map_err(|_| "the sealed secret does not open with this server's log key".into())
            }
            _ => Err("the secret is not in a sealed form this trail reads".into()),
        }
    }
}

/// A new webhook signing secret: `whsec_` and 32 random bytes in base64url.
pub fn new_signing_secret() -> String {
    use base64::Engine;
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    format!("whsec_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_under_the_same_key() {
        let a = Sealer::new(&trail_merkle::Signer::from_secret_bytes("a", &[1; 32]).unwrap());
        let b = Sealer::new(&trail_merkle::Signer::from_secret_bytes("a", &[2; 32]).unwrap());
        let sealed = a.seal(b"whsec_x");
        assert_eq!(a.open(&sealed).unwrap(), b"whsec_x");
        assert!(b.open(&sealed).is_err());
        assert_ne!(a.seal(b"whsec_x"), sealed, "a fresh nonce each time");
        let mut cut = sealed.clone();
        cut.pop();
        assert!(a.open(&cut).is_err());
    }
}
