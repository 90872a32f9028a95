//! The second factor of password sign-in (README "Two-factor sign-in"): TOTP as RFC 6238 defines it
//! and authenticator apps expect (SHA-1, 6 digits, 30-second steps; `totp-rs`), one step of clock
//! drift either way, each step's code accepted once. Enrolment shows the secret as an `otpauth://`
//! QR code and takes effect once a code from the app confirms it; ten single-use recovery codes are
//! shown then. The secret is sealed at rest like destinations' secrets; recovery codes are kept as
//! SHA-256 hashes. The enrolment is a user document (`totp`).
//!
//! Sign-in with a second factor is two requests: the password answers a short-lived challenge
//! (sealed: the user and its expiry), and the challenge with a code answers the session. Codes are
//! throttled with the password, on the account's budget (see `routes::session`).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};
use trail_model::time::{MICROS_PER_SECOND, Micros};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::stream::seal::Sealer;

/// The user document of an enrolment.
pub const KIND: &str = "totp";
const STEP_SECS: u64 = 30;
const DIGITS: usize = 6;
/// How long a password's challenge waits for its code.
pub const CHALLENGE_SECS: i64 = 300;
const RECOVERY_CODES: usize = 10;

/// Locks that serialise the checks of one user's codes on this node (striped: a fixed 64, whatever
/// the number of users). Several PostgreSQL nodes do not share them (README notes it).
#[derive(Debug)]
pub struct Locks([tokio::sync::Mutex<()>; 64]);

impl Default for Locks {
    fn default() -> Self {
        Self(std::array::from_fn(|_| tokio::sync::Mutex::new(())))
    }
}

impl Locks {
    pub fn of(&self, user_id: &str) -> &tokio::sync::Mutex<()> {
        let h = Sha256::digest(user_id.as_bytes());
        &self.0[usize::from(h[0]) % self.0.len()]
    }
}

/// A user's TOTP enrolment, as stored.
#[derive(Clone, Serialize, Deserialize)]
pub struct Enrolment {
    /// The secret, sealed, in base64.
    pub secret: String,
    /// When a code confirmed it; until then it is pending and sign-in does not ask for codes.
    pub confirmed_at: Option<Micros>,
    /// Hex SHA-256 of each unused recovery code.
    pub recovery: Vec<String>,
    /// The last time step whose code was accepted: a code is good once.
    pub last_step: u64,
    /// Hex random bytes the recovery codes are hashed with (one crack covers one enrolment).
    #[serde(default)]
    pub salt: String,
}

impl std::fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrolment")
            .field("confirmed_at", &self.confirmed_at)
            .field("recovery_left", &self.recovery.len())
            .finish_non_exhaustive()
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl Enrolment {
    /// A new, unconfirmed enrolment and its secret's base32 (what the app is given).
    pub fn new(sealer: &Sealer) -> (Self, String) {
        use base64::Engine;
        use rand::RngCore;
        let mut secret = [0u8; 20];
        rand::thread_rng().fill_bytes(&mut secret);
        // RFC 4648 base32 without padding, as authenticator apps take secrets.
        let encoded = totp_rs::Secret::Raw(secret.to_vec()).to_encoded().to_string();
        let mut salt = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        let e = Self {
            secret: b64().encode(sealer.seal(&secret)),
            confirmed_at: None,
            recovery: Vec::new(),
            last_step: 0,
            salt: hex::encode(salt),
        };
        (e, encoded)
    }

    fn totp(&self, sealer: &Sealer) -> ApiResult<TOTP> {
        use base64::Engine;
        let sealed = b64().decode(&self.secret).map_err(ApiError::internal)?;
        let secret = sealer.open(&sealed).map_err(ApiError::internal)?;
        TOTP::new(Algorithm::SHA1, DIGITS, 1, STEP_SECS, secret).map_err(ApiError::internal)
    }

    /// Accepts `code` if it is the code of the current step or one either side, and of a step after
    /// the last one accepted; records that step.
    pub fn accept_code(&mut self, sealer: &Sealer, code: &str, now: Micros) -> ApiResult<bool> {
        let code = code.trim();
        if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(false);
        }
        let totp = self.totp(sealer)?;
        let now_secs = u64::try_from(now / MICROS_PER_SECOND).unwrap_or(0);
        let current = now_secs / STEP_SECS;
        for step in [current.saturating_sub(1), current, current + 1] {
            let expected = totp.generate(step * STEP_SECS);
            if step > self.last_step && bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
                self.last_step = step;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Accepts a code of the app or, failing that, a recovery code; says which (`None`: neither).
    pub fn accept(&mut self, sealer: &Sealer, code: &str, now: Micros) -> ApiResult<Option<&'static str>> {
        if self.accept_code(sealer, code, now)? {
            return Ok(Some("totp"));
        }
        // Recovery codes are longer than the app's: a 6-digit guess never spends one.
        Ok((code.trim().len() > DIGITS && self.accept_recovery(code)).then_some("recovery_code"))
    }

    /// Accepts a recovery code once (it is removed).
    pub fn accept_recovery(&mut self, code: &str) -> bool {
        let hash = recovery_hash(&self.salt, code);
        let before = self.recovery.len();
        self.recovery.retain(|h| !bool::from(h.as_bytes().ct_eq(hash.as_bytes())));
        self.recovery.len() < before
    }

    /// Ten new recovery codes (shown once); their hashes replace any before.
    pub fn new_recovery_codes(&mut self) -> Vec<String> {
        use rand::Rng;
        const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
        let mut rng = rand::thread_rng();
        let codes: Vec<String> = (0..RECOVERY_CODES)
            .map(|_| {
                let c: String = (0..10).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect();
                format!("{}-{}", &c[..5], &c[5..])
            })
            .collect();
        self.recovery = codes.iter().map(|c| recovery_hash(&self.salt, c)).collect();
        codes
    }
}

/// Recovery codes are compared without case, spaces or dashes (as people type them).
fn recovery_hash(salt: &str, code: &str) -> String {
    let normal: String =
        code.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect();
    hex::encode(Sha256::digest(format!("trail-recovery\0{salt}\0{normal}").as_bytes()))
}

/// The `otpauth://` URI authenticator apps read from the QR code.
pub fn otpauth_uri(issuer: &str, account: &str, secret_b32: &str) -> String {
    let enc = |s: &str| {
        serde_urlencoded::to_string([("", s)]).unwrap_or_default().trim_start_matches('=').replace('+', "%20")
    };
    format!(
        "otpauth://totp/{}:{}?secret={secret_b32}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        enc(issuer),
        enc(account),
        enc(issuer)
    )
}

/// The QR code of `text` as an SVG document (black modules on white, a 4-module quiet zone).
pub fn qr_svg(text: &str) -> ApiResult<String> {
    let qr =
        qrcodegen::QrCode::encode_text(text, qrcodegen::QrCodeEcc::Medium).map_err(ApiError::internal)?;
    let (size, border) = (qr.size(), 4);
    let mut path = String::new();
    for y in 0..size {
        for x in 0..size {
            if qr.get_module(x, y) {
                path.push_str(&format!("M{},{}h1v1h-1z", x + border, y + border));
            }
        }
    }
    let dim = size + border * 2;
    Ok(format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {dim} {dim}" shape-rendering="crispEdges"><rect width="100%" height="100%" fill="#ffffff"/><path d="{path}" fill="#000000"/></svg>"##
    ))
}

/// A user's enrolment, if any.
pub async fn enrolment(state: &AppState, user_id: &str) -> ApiResult<Option<Enrolment>> {
    match state.store.user_document(user_id, KIND).await? {
        Some((body, _)) => serde_json::from_value(body).map(Some).map_err(ApiError::internal),
        None => Ok(None),
    }
}

/// Whether sign-in asks this user for a code.
pub async fn enabled(state: &AppState, user_id: &str) -> ApiResult<bool> {
    Ok(enrolment(state, user_id).await?.is_some_and(|e| e.confirmed_at.is_some()))
}

pub async fn save(state: &AppState, user_id: &str, e: Option<&Enrolment>) -> ApiResult<()> {
    let body = e.map(serde_json::to_value).transpose().map_err(ApiError::internal)?;
    state.store.set_user_document(user_id, KIND, body.as_ref(), trail_model::time::now()).await?;
    Ok(())
}

/// The org document of its sign-in requirements.
pub const SIGN_IN: &str = "sign_in";

/// How an org lets its members sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInRules {
    pub require_mfa: bool,
    pub password_sign_in: bool,
}

/// The org's sign-in rules (one document).
pub async fn sign_in_rules(state: &AppState, org: &str) -> ApiResult<SignInRules> {
    let doc = state.store.document(org, SIGN_IN, "settings").await?;
    let body = doc.map(|d| d.body).unwrap_or_default();
    Ok(SignInRules {
        require_mfa: body["require_mfa"] == serde_json::Value::Bool(true),
        password_sign_in: body["password_sign_in"] != serde_json::Value::Bool(false),
    })
}

/// Whether the org requires a second factor.
pub async fn requires_mfa(state: &AppState, org: &str) -> ApiResult<bool> {
    Ok(sign_in_rules(state, org).await?.require_mfa)
}

/// The gate of an org's sign-in rules, for a person signed in by `method`: a session of another
/// org's identity provider gets `403 sso_other_org`; a password session, when the org admits only
/// its provider, `403 sso_required`; a person without a second factor, when the org requires one,
/// `403 mfa_required` (the org's own provider's sessions are the provider's to secure).
pub async fn gate(state: &AppState, org: &str, user: &trail_store::User, method: &str) -> ApiResult<()> {
    let forbidden = |code: &'static str, m: String| ApiError::new(axum::http::StatusCode::FORBIDDEN, code, m);
    if method == crate::sso::SERVER_METHOD {
        return Err(forbidden(
            "sso_other_org",
            format!(
                "this session was signed in by the server's identity provider, for server administration only; sign in to {org} with its own sign-in"
            ),
        ));
    }
    if let Some(home) = crate::sso::confined_to(method) {
        if home != org {
            return Err(forbidden(
                "sso_other_org",
                format!(
                    "this session was signed in by {home}'s identity provider and reaches only {home}; sign in again for {org}"
                ),
            ));
        }
        return Ok(());
    }
    let rules = sign_in_rules(state, org).await?;
    if !rules.password_sign_in {
        return Err(forbidden(
            "sso_required",
            format!("organization {org} signs in only with its identity provider: /v1/auth/sso?org={org}"),
        ));
    }
    if rules.require_mfa && !enabled(state, &user.id).await? {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "mfa_required",
            format!(
                "organization {org} requires two-factor sign-in: set it up on your account page (/account) first"
            ),
        ));
    }
    Ok(())
}

/// A challenge: the user whose password was right, sealed with its expiry.
pub fn challenge(sealer: &Sealer, user_id: &str, now: Micros) -> String {
    use base64::Engine;
    let plain = serde_json::json!({"user": user_id, "exp": now + CHALLENGE_SECS * MICROS_PER_SECOND});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealer.seal(plain.to_string().as_bytes()))
}

/// The user of a challenge still valid at `now`.
pub fn challenged_user(sealer: &Sealer, token: &str, now: Micros) -> Option<String> {
    use base64::Engine;
    let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
    let plain: serde_json::Value = serde_json::from_slice(&sealer.open(&sealed).ok()?).ok()?;
    (plain["exp"].as_i64()? > now).then(|| plain["user"].as_str().map(str::to_string))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 (the 8-digit vectors, whose last 6 digits are the 6-digit codes).
    #[test]
    fn codes_match_rfc_6238_test_vectors() {
        let secret = b"12345678901234567890".to_vec();
        let totp = TOTP::new(Algorithm::SHA1, 8, 1, 30, secret).unwrap();
        for (t, code) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
        ] {
            assert_eq!(totp.generate(t), code, "T = {t}");
        }
    }

    #[test]
    fn a_code_is_good_once_within_one_step_of_drift() {
        let signer = trail_merkle::Signer::generate("test", &mut rand::rngs::OsRng).unwrap();
        let sealer = Sealer::new(&signer);
        let (mut e, b32) = Enrolment::new(&sealer);
        assert_eq!(b32.len(), 32);
        let totp = e.totp(&sealer).unwrap();
        let now = 1_700_000_000 * MICROS_PER_SECOND;
        let code = |secs: i64| totp.generate(u64::try_from(secs).unwrap());
        assert!(!e.accept_code(&sealer, &code(1_700_000_000 - 90), now).unwrap(), "three steps ago");
        assert!(e.accept_code(&sealer, &code(1_700_000_000 - 30), now).unwrap(), "one step ago");
        assert!(!e.accept_code(&sealer, &code(1_700_000_000 - 30), now).unwrap(), "the same code again");
        assert!(e.accept_code(&sealer, &code(1_700_000_000), now).unwrap());
        assert!(
            !e.accept_code(&sealer, "12345", now).unwrap() && !e.accept_code(&sealer, "abcdef", now).unwrap()
        );
        let codes = e.new_recovery_codes();
        assert_eq!(codes.len(), 10);
        assert!(e.accept_recovery(&codes[3].to_uppercase().replace('-', " ")));
        assert!(!e.accept_recovery(&codes[3]), "once");
        assert_eq!(e.recovery.len(), 9);
    }

    #[test]
    fn challenges_expire_and_cannot_be_forged() {
        let sealer = Sealer::new(&trail_merkle::Signer::generate("test", &mut rand::rngs::OsRng).unwrap());
        let c = challenge(&sealer, "u1", 0);
        assert_eq!(challenged_user(&sealer, &c, 1).as_deref(), Some("u1"));
        assert_eq!(challenged_user(&sealer, &c, CHALLENGE_SECS * MICROS_PER_SECOND), None, "expired");
        let other = Sealer::new(&trail_merkle::Signer::generate("other", &mut rand::rngs::OsRng).unwrap());
        assert_eq!(challenged_user(&other, &c, 1), None, "another server's key");
        assert_eq!(challenged_user(&sealer, "not a challenge", 1), None);
    }

    #[test]
    fn the_qr_code_and_uri_are_what_apps_read() {
        let uri = otpauth_uri("Trail", "ada@example.com", "JBSWY3DPEHPK3PXP");
        assert_eq!(
            uri,
            "otpauth://totp/Trail:ada%40example.com?secret=JBSWY3DPEHPK3PXP&issuer=Trail&algorithm=SHA1&digits=6&period=30"
        );
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<path d=\"M"), "{svg}");
    }
}
