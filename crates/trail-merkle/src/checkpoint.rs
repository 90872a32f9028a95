//! Signed checkpoints: C2SP `tlog-checkpoint` bodies inside C2SP `signed-note` envelopes, signed with
//! Ed25519 (signature type 0x01).
//!
//! A checkpoint is the log's commitment to a tree size and root, so this module parses strictly and
//! trusts nothing it has not verified. It must never return checkpoint data from a note that lacks a
//! valid signature by the expected key, never accept a note that another parser could read
//! differently (so extension lines are rejected), and never expose private key bytes except through
//! [`Signer::secret_bytes`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use std::fmt;

use crate::Hash;

/// Signature type byte of Ed25519 note signatures (signed-note "Signature types").
const ALG_ED25519: u8 = 0x01;
/// Go's `golang.org/x/mod/sumdb/note` limit; the spec requires accepting at least 16.
const MAX_SIGNATURES: usize = 100;
/// Every signature line starts with an em dash (U+2014) and a space.
const SIG_PREFIX: &str = "\u{2014} ";

/// Why a key, note or checkpoint was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// Key names must be non-empty and contain no Unicode spaces or `+`.
    #[error("invalid key name {0:?}")]
    InvalidKeyName(String),
    /// A verifier key string is not `<name>+<8 hex key id>+<base64(0x01 ‖ public key)>`.
    #[error("malformed verifier key: {0}")]
    MalformedVerifierKey(&'static str),
    /// The text is not a well-formed signed note.
    #[error("malformed note: {0}")]
    MalformedNote(&'static str),
    /// The note text is not a checkpoint body Trail accepts.
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
    /// No signature line carries the expected key's name and id.
    #[error("note has no signature by key {0}")]
    NoSignature(String),
    /// A signature line with the expected key's name and id does not verify.
    #[error("invalid signature by key {0}")]
    InvalidSignature(String),
}

/// A log's signed statement of its size and root: the body of a C2SP `tlog-checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity; non-empty, one line, no control characters.
    pub origin: String,
    /// Number of leaves in the tree.
    pub size: u64,
    /// RFC 6962 root of the tree at `size`.
    pub root: Hash,
}

impl Checkpoint {
    /// The note text: `<origin>\n<size>\n<base64 root>\n`.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, BASE64.encode(self.root))
    }

    /// Parses a checkpoint body strictly: exactly the three mandatory lines, a non-empty origin, a
    /// decimal size without leading zeros and a base64 root of exactly 32 bytes. Extension lines are
    /// rejected because Trail never writes them and the verified [`Checkpoint`] could not carry them.
    pub fn parse_body(text: &str) -> Result<Self, NoteError> {
        let bad = NoteError::MalformedCheckpoint;
        let lines = text.strip_suffix('\n').ok_or(bad("missing final newline"))?;
        let mut lines = lines.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next()) else {
            return Err(bad("fewer than three lines"));
        };
        if lines.next().is_some() {
            return Err(bad("extension lines are not accepted"));
        }
        check_origin(origin)?;
        let size_ok = !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        let size =
            size.parse::<u64>().ok().filter(|_| size_ok).ok_or(bad("size is not a canonical decimal u64"))?;
        let root = BASE64
            .decode(root)
            .ok()
            .and_then(|r| Hash::try_from(r).ok())
            .ok_or(bad("root is not 32 bytes of base64"))?;
        Ok(Checkpoint { origin: origin.to_owned(), size, root })
    }
}

fn check_origin(origin: &str) -> Result<(), NoteError> {
    if origin.is_empty() {
        return Err(NoteError::MalformedCheckpoint("empty origin"));
    }
    if origin.chars().any(char::is_control) {
        return Err(NoteError::MalformedCheckpoint("origin contains a control character"));
    }
    Ok(())
}

fn check_key_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(NoteError::InvalidKeyName(name.to_owned()));
    }
    Ok(())
}

/// signed-note key ID: `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[..4]`.
fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let digest = Sha256::new()
        .chain_update(name)
        .chain_update([b'\n', ALG_ED25519])
        .chain_update(key.as_bytes())
        .finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn key_label(name: &str, id: [u8; 4]) -> String {
    format!("{name}+{:08x}", u32::from_be_bytes(id))
}

/// Note text may hold any printable UTF-8 and newlines, must end in a newline (signed-note "Format").
fn check_note_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::MalformedNote("text must end with a newline"));
    }
    if text.chars().any(|c| c.is_ascii_control() && c != '\n') {
        return Err(NoteError::MalformedNote("control character"));
    }
    Ok(())
}

/// A named Ed25519 note-signing key.
pub struct Signer {
    name: String,
    key: SigningKey,
    id: [u8; 4],
}

impl fmt::Debug for Signer {
    // Hand-written so the private key can never end up in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer").field("key", &key_label(&self.name, self.id)).finish_non_exhaustive()
    }
}

impl Signer {
    /// Wraps `key` under `name` (non-empty, no spaces or `+`; conventionally the log's origin).
    pub fn new(name: &str, key: SigningKey) -> Result<Self, NoteError> {
        check_key_name(name)?;
        let id = key_id(name, &key.verifying_key());
        Ok(Signer { name: name.to_owned(), key, id })
    }

    /// Generates a fresh key from a cryptographically secure RNG.
    pub fn generate<R: CryptoRngCore + ?Sized>(name: &str, rng: &mut R) -> Result<Self, NoteError> {
        Self::new(name, SigningKey::generate(rng))
    }

    /// A signer from the text of a log key file: the 32-byte seed as 64 hex digits (surrounding white
    /// space ignored). `None` when the text is not such a key.
    pub fn from_key_file(name: &str, text: &str) -> Option<Self> {
        let hex = text.trim();
        if hex.len() != 64 {
            return None;
        }
        let mut seed = [0u8; 32];
        for (i, byte) in seed.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Self::from_secret_bytes(name, &seed).ok()
    }

    /// Rebuilds a signer from the 32-byte Ed25519 private key (RFC 8032 seed) of [`Signer::secret_bytes`].
    pub fn from_secret_bytes(name: &str, secret: &[u8; 32]) -> Result<Self, NoteError> {
        Self::new(name, SigningKey::from_bytes(secret))
    }

    /// The 32-byte Ed25519 private key, for storing in an owner-only file. Treat as secret.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The signed-note key ID: the first 4 bytes of `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)`.
    pub fn key_id(&self) -> [u8; 4] {
        self.id
    }

    /// The verifier for this key.
    pub fn verifier(&self) -> Verifier {
        Verifier { name: self.name.clone(), id: self.id, key: self.key.verifying_key() }
    }

    /// The public verifier key string, `<name>+<key id as 8 hex digits>+<base64(0x01 ‖ public key)>`,
    /// as read by [`Verifier::from_key`] and Go's `golang.org/x/mod/sumdb/note`.
    pub fn verifier_key(&self) -> String {
        self.verifier().key_string()
    }

    /// Signs a checkpoint, returning the complete note: body, blank line, signature line.
    ///
    /// Fails if the origin is empty or contains a control character (a newline would let the origin
    /// forge the size and root lines for parsers that accept extension lines).
    pub fn sign(&self, checkpoint: &Checkpoint) -> Result<String, NoteError> {
        check_origin(&checkpoint.origin)?;
        self.sign_note(&checkpoint.body())
    }

    /// Signs arbitrary note text (which must end in a newline and contain no control characters other
    /// than newlines), returning `text`, a blank line and `— <name> <base64(key id ‖ signature)>\n`.
    pub fn sign_note(&self, text: &str) -> Result<String, NoteError> {
        check_note_text(text)?;
        let signature = self.key.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(4 + 64);
        blob.extend_from_slice(&self.id);
        blob.extend_from_slice(&signature.to_bytes());
        Ok(format!("{text}\n{SIG_PREFIX}{} {}\n", self.name, BASE64.encode(blob)))
    }
}

/// A trusted note-verification key: name, key ID and Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl Verifier {
    /// Parses a verifier key string `<name>+<8 lowercase hex digits>+<base64(0x01 ‖ 32-byte key)>`,
    /// checking that the key ID matches the name and key.
    pub fn from_key(vkey: &str) -> Result<Self, NoteError> {
        let bad = NoteError::MalformedVerifierKey;
        // The name and id cannot contain '+'; the base64 key can, so split at most twice.
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected <name>+<key id>+<key>"));
        };
        check_key_name(name)?;
        if id_hex.len() != 8 || !id_hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad("key id is not 8 lowercase hex digits"));
        }
        let id = u32::from_str_radix(id_hex, 16).map_err(|_| bad("key id is not hex"))?.to_be_bytes();
        let raw = BASE64.decode(key64).map_err(|_| bad("key is not base64"))?;
        let Some((&ALG_ED25519, key)) = raw.split_first() else {
            return Err(bad("not an Ed25519 (type 0x01) key"));
        };
        let key = <&[u8; 32]>::try_from(key).map_err(|_| bad("Ed25519 key is not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(key).map_err(|_| bad("invalid Ed25519 public key"))?;
        if key_id(name, &key) != id {
            return Err(bad("key id does not match name and key"));
        }
        Ok(Verifier { name: name.to_owned(), id, key })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The signed-note key ID.
    pub fn key_id(&self) -> [u8; 4] {
        self.id
    }

    /// The verifier key string accepted by [`Verifier::from_key`].
    pub fn key_string(&self) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        format!("{}+{}", key_label(&self.name, self.id), BASE64.encode(raw))
    }

    /// Parses a signed note strictly and returns its text if it carries a valid signature by this key.
    ///
    /// Signatures by other keys (witnesses, rotated keys) are checked for syntax and otherwise ignored,
    /// as the spec requires; every signature line with this key's name and ID must verify.
    pub fn open_note<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let bad = NoteError::MalformedNote;
        if note.chars().any(|c| c.is_ascii_control() && c != '\n') {
            return Err(bad("control character"));
        }
        // Signature lines are never empty, so the last blank line separates text from signatures.
        let split = note.rfind("\n\n").ok_or(bad("no blank line before the signatures"))?;
        let (text, sigs) = (&note[..=split], &note[split + 2..]);
        let sigs = sigs.strip_suffix('\n').ok_or(bad("signatures must end with a newline"))?;
        let mut found = false;
        for (n, line) in sigs.split('\n').enumerate() {
            if n == MAX_SIGNATURES {
                return Err(bad("too many signatures"));
            }
            let rest =
                line.strip_prefix(SIG_PREFIX).ok_or(bad("signature line must start with an em dash"))?;
            let (name, sig64) = rest.split_once(' ').ok_or(bad("signature line without a signature"))?;
            check_key_name(name).map_err(|_| bad("invalid key name in a signature line"))?;
            let blob = BASE64.decode(sig64).map_err(|_| bad("signature is not base64"))?;
            let (id, sig) = blob.split_first_chunk::<4>().ok_or(bad("signature too short"))?;
            if sig.is_empty() {
                return Err(bad("signature too short"));
            }
            if name != self.name || *id != self.id {
                continue;
            }
            let label = || key_label(&self.name, self.id);
            let sig = Signature::from_slice(sig).map_err(|_| NoteError::InvalidSignature(label()))?;
            self.key
                .verify_strict(text.as_bytes(), &sig)
                .map_err(|_| NoteError::InvalidSignature(label()))?;
            found = true;
        }
        if !found {
            return Err(NoteError::NoSignature(key_label(&self.name, self.id)));
        }
        Ok(text)
    }
}

/// Opens a signed checkpoint: verifies the note's signature by `verifier` (see
/// [`Verifier::open_note`]) and parses its body strictly (see [`Checkpoint::parse_body`]).
pub fn open(note: &str, verifier: &Verifier) -> Result<Checkpoint, NoteError> {
    Checkpoint::parse_body(verifier.open_note(note)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    // Known-answer vectors from golang.org/x/mod sumdb/note/note_test.go (TestNewVerifier, TestSign,
    // TestOpen). The private key is `PRIVATE+KEY+PeterNeumann+c74f20a3+<base64(0x01 ‖ seed)>`.
    const PETER_SKEY_B64: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
    const PETER_SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    const ENOCH_SIG: &str = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    fn peter() -> Signer {
        let raw = BASE64.decode(PETER_SKEY_B64).unwrap();
        assert_eq!(raw[0], ALG_ED25519);
        Signer::from_secret_bytes("PeterNeumann", &raw[1..].try_into().unwrap()).unwrap()
    }

    #[test]
    fn go_note_known_answer() {
        let signer = peter();
        assert_eq!(signer.key_id(), [0xc7, 0x4f, 0x20, 0xa3]);
        assert_eq!(signer.verifier_key(), PETER_VKEY);
        let note = signer.sign_note(TEXT).unwrap();
        assert_eq!(note, format!("{TEXT}\n{PETER_SIG}"));

        let verifier = Verifier::from_key(PETER_VKEY).unwrap();
        assert_eq!(verifier, signer.verifier());
        assert_eq!(verifier.open_note(&note), Ok(TEXT));
        // Another key's signature is ignored, before or after ours.
        assert_eq!(verifier.open_note(&format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}")), Ok(TEXT));
        assert_eq!(verifier.open_note(&format!("{TEXT}\n{ENOCH_SIG}{PETER_SIG}")), Ok(TEXT));
        let enoch = Verifier::from_key(ENOCH_VKEY).unwrap();
        assert_eq!(enoch.open_note(&format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}")), Ok(TEXT));
        assert_eq!(enoch.open_note(&note), Err(NoteError::NoSignature("EnochRoot+af0cfe78".into())));
    }

    #[test]
    fn any_changed_byte_fails() {
        let verifier = Verifier::from_key(PETER_VKEY).unwrap();
        let note = format!("{TEXT}\n{PETER_SIG}");
        let bytes = note.as_bytes();
        for i in 0..bytes.len() {
            let mut changed = bytes.to_vec();
            changed[i] ^= 0x01;
            // Changes that break UTF-8 cannot even be presented as a note.
            if let Ok(changed) = String::from_utf8(changed) {
                assert!(verifier.open_note(&changed).is_err(), "byte {i} changed: {changed:?}");
            }
        }
    }

    #[test]
    fn malformed_notes_are_rejected() {
        let verifier = Verifier::from_key(PETER_VKEY).unwrap();
        // From TestOpen's badMsgs, plus an invalid signature by the right key.
        let bad = [
            TEXT.to_owned(),
            format!("{TEXT}\n"),
            format!("{TEXT}\n{}", PETER_SIG.trim_end()),
            format!("\x01{TEXT}\n{PETER_SIG}"),
            format!(
                "{TEXT}\n— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
            ),
            format!("{TEXT}\n{PETER_SIG}Unexpected line.\n"),
            format!("{TEXT}\n{}", PETER_SIG.repeat(101)),
            format!("{TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]),
        ];
        for note in bad {
            assert!(verifier.open_note(&note).is_err(), "{note:?}");
        }
        assert_eq!(
            verifier.open_note(&format!("{TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..])),
            Err(NoteError::InvalidSignature("PeterNeumann+c74f20a3".into()))
        );
    }

    #[test]
    fn verifier_keys_are_parsed_strictly() {
        // From TestNewVerifier: every proper substring and every single-byte increment must fail.
        let b = PETER_VKEY.as_bytes();
        for i in 0..b.len() {
            for j in i + 1..=b.len() {
                if (i, j) != (0, b.len()) {
                    let s = std::str::from_utf8(&b[i..j]).unwrap();
                    assert!(Verifier::from_key(s).is_err(), "{s}");
                }
            }
            let mut changed = b.to_vec();
            changed[i] += 1;
            let s = String::from_utf8(changed).unwrap();
            assert!(Verifier::from_key(&s).is_err(), "{s}");
        }
        // Wrong key length and unknown algorithm, each with a matching key id (TestNewVerifier).
        assert!(
            Verifier::from_key("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==")
                .is_err()
        );
        assert!(
            Verifier::from_key("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW").is_err()
        );
    }

    #[test]
    fn checkpoint_round_trip_and_key_storage() {
        let mut rng = StdRng::seed_from_u64(7);
        let signer = Signer::generate("trail.example/org/42", &mut rng).unwrap();
        let restored = Signer::from_secret_bytes("trail.example/org/42", &signer.secret_bytes()).unwrap();
        assert_eq!(restored.verifier_key(), signer.verifier_key());
        assert!(!format!("{signer:?}").contains(&format!("{:?}", signer.secret_bytes())));

        let cp =
            Checkpoint { origin: "trail.example/org/42".into(), size: 1234, root: crate::leaf_hash(b"x") };
        let note = restored.sign(&cp).unwrap();
        assert!(note.starts_with(&format!(
            "trail.example/org/42\n1234\n{}\n\n— trail.example/org/42 ",
            BASE64.encode(cp.root)
        )));
        let verifier = Verifier::from_key(&signer.verifier_key()).unwrap();
        assert_eq!(open(&note, &verifier), Ok(cp.clone()));

        // Same name, different key: its signature is ignored, so ours is missing.
        let other = Signer::generate("trail.example/org/42", &mut rng).unwrap();
        assert!(matches!(open(&other.sign(&cp).unwrap(), &verifier), Err(NoteError::NoSignature(_))));

        let bad_origin = Checkpoint { origin: "a\n5".into(), ..cp.clone() };
        assert!(matches!(signer.sign(&bad_origin), Err(NoteError::MalformedCheckpoint(_))));
        assert!(matches!(
            signer.sign(&Checkpoint { origin: String::new(), ..cp }),
            Err(NoteError::MalformedCheckpoint(_))
        ));
        assert!(matches!(Signer::generate("has space", &mut rng), Err(NoteError::InvalidKeyName(_))));
        assert!(matches!(Signer::generate("a+b", &mut rng), Err(NoteError::InvalidKeyName(_))));
    }

    #[test]
    fn checkpoint_bodies_are_parsed_strictly() {
        let root64 = BASE64.encode([9u8; 32]);
        let good = format!("o\n0\n{root64}\n");
        assert_eq!(
            Checkpoint::parse_body(&good),
            Ok(Checkpoint { origin: "o".into(), size: 0, root: [9; 32] })
        );
        assert_eq!(
            Checkpoint::parse_body(&format!("o\n18446744073709551615\n{root64}\n")).map(|c| c.size),
            Ok(u64::MAX)
        );
        let bad = [
            format!("o\n0\n{root64}"),
            format!("\n0\n{root64}\n"),
            format!("o\n00\n{root64}\n"),
            format!("o\n012\n{root64}\n"),
            format!("o\n+12\n{root64}\n"),
            format!("o\n\n{root64}\n"),
            format!("o\n18446744073709551616\n{root64}\n"),
            format!("o\n1\n{}\n", BASE64.encode([9u8; 31])),
            format!("o\n1\n{}\n", BASE64.encode([9u8; 33])),
            format!("o\n1\n{}\n", root64.trim_end_matches('=')),
            format!("o\n1\n{root64}\nextension\n"),
            "o\n1\n".to_owned(),
        ];
        for body in bad {
            assert!(
                matches!(Checkpoint::parse_body(&body), Err(NoteError::MalformedCheckpoint(_))),
                "{body:?}"
            );
        }
    }
}
