//! Authentication: Argon2id passwords, opaque session and API-key tokens, and the [`Principal`] extractor.
//!
//! Tokens are `<prefix><id>.<secret>`; the store keeps only `SHA-256(secret)`, looked up by `id` and
//! compared in constant time. Sessions come as `Authorization: Bearer` or the `trail_session` cookie;
//! a cookie-authenticated request that changes state must also carry `X-CSRF-Token`, which is derived
//! from the session secret (double-submit without server state). Nothing here logs a secret.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use trail_model::time::{MICROS_PER_SECOND, now};
use trail_store::{ApiKey, Permission, Scope, Session, User};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

pub const SESSION_COOKIE: &str = "trail_session";
pub const CSRF_HEADER: &str = "x-csrf-token";
const SESSION_PREFIX: &str = "trs_";
const KEY_PREFIX: &str = "trk_";

/// Hashes a password with Argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(ApiError::internal)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(ApiError::internal)
}

/// Checks a password against a PHC string in constant time.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// The longest email address accepted anywhere (RFC 5321's path limit); longer ones are refused
/// before any work is done for them.
pub const MAX_EMAIL_LEN: usize = 254;
/// The longest password taken at sign-in (new passwords are held to 256 characters): at most 4 KiB
/// of UTF-8 for Argon2. Counted in characters, as the document's `maxLength` is.
pub const MAX_PASSWORD_CHARS: usize = 1024;
/// How long a password check waits for one of the [`PasswordChecks`] permits before the request is
/// answered 503 with `Retry-After`.
const PASSWORD_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Permits for Argon2 work (19 MiB and tens of milliseconds of a core each): one per core, so a
/// flood of sign-ins costs a fixed amount of memory and leaves the other cores' share to everyone
/// else. Checks that cannot get a permit within [`PASSWORD_WAIT`] are refused before hashing.
#[derive(Debug, Clone)]
pub struct PasswordChecks(std::sync::Arc<tokio::sync::Semaphore>);

impl Default for PasswordChecks {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(cores.clamp(1, 8))
    }
}

impl PasswordChecks {
    pub fn new(permits: usize) -> Self {
        Self(std::sync::Arc::new(tokio::sync::Semaphore::new(permits.max(1))))
    }

    /// Runs `work` (Argon2) on the blocking pool under a permit, or answers 503 `busy` when none
    /// frees in time.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
        let permit = match tokio::time::timeout(PASSWORD_WAIT, self.0.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => return Err(busy()),
        };
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(ApiError::internal)
    }
}

impl PasswordChecks {
    /// Checks `password` against `phc` for an attempt the throttle already counted: the count is given
    /// back when nothing was checked (busy), cleared when the password is right, and stays when it is
    /// wrong. With `factor_follows` (the account has a second factor) a right password only gives its
    /// own count back: earlier failures, of codes too, stay until the code is right.
    pub async fn verify_reserved(
        &self,
        throttle: &crate::throttle::Throttle,
        reservation: crate::throttle::Reservation,
        password: String,
        phc: String,
        factor_follows: bool,
    ) -> ApiResult<bool> {
        match self.run(move || verify_password(&password, &phc)).await {
            Ok(true) if factor_follows => {
                throttle.cancelled(reservation);
                Ok(true)
            }
            Ok(true) => {
                throttle.succeeded(reservation);
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(e) => {
                throttle.cancelled(reservation);
                Err(e)
            }
        }
    }
}

/// The answer when password checks are saturated: nothing was checked, so nothing is counted.
pub fn busy() -> ApiError {
    let mut e = ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "too many password checks at once; nothing was checked, retry after the Retry-After delay",
    );
    e.retry_after = Some(1);
    e
}

/// A PHC hash of a random password, verified against when the account does not exist, so a failed
/// sign-in takes the same time either way.
pub fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&random_secret()).unwrap_or_default())
}

pub fn random_secret() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

pub fn random_id() -> String {
    let mut b = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

pub fn csrf_for(secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"trail-csrf\0");
    h.update(secret.as_bytes());
    URL_SAFE_NO_PAD.encode(h.finalize())
}

/// A newly issued session: the token is shown to the client once.
pub struct IssuedSession {
    pub session: Session,
    pub token: String,
    pub csrf_token: String,
}

impl std::fmt::Debug for IssuedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedSession").field("session", &self.session).finish_non_exhaustive()
    }
}

/// A new session of `user_id`, signed in by `method` (see [`Session::method`]).
pub fn issue_session(user_id: &str, method: &str, state: &AppState) -> IssuedSession {
    let (id, secret) = (random_id(), random_secret());
    let now = now();
    let max = state.settings.auth.session_max_hours as i64 * 3600 * MICROS_PER_SECOND;
    let session = Session {
        id: id.clone(),
        user_id: user_id.into(),
        secret_hash: secret_hash(&secret),
        created_at: now,
        expires_at: now + max,
        last_seen: now,
        method: method.into(),
    };
    IssuedSession { session, csrf_token: csrf_for(&secret), token: format!("{SESSION_PREFIX}{id}.{secret}") }
}

/// A new API key of `org` and its secret (`trk_<id>.<secret>`), which is shown once: the store keeps
/// only its hash.
pub fn new_api_key(
    org: &str,
    name: &str,
    scopes: Vec<Scope>,
    created_by: Option<String>,
    expires_at: Option<trail_model::time::Micros>,
) -> (ApiKey, String) {
    let (id, secret, secret_hash) = issue_key_secret();
    let key = ApiKey {
        id,
        org: org.to_string(),
        name: name.to_string(),
        scopes,
        secret_hash,
        created_by,
        created_at: now(),
        expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    (key, secret)
}

fn issue_key_secret() -> (String, String, [u8; 32]) {
    let (id, secret) = (random_id(), random_secret());
    let h = secret_hash(&secret);
    (id.clone(), format!("{KEY_PREFIX}{id}.{secret}"), h)
}

/// Who is making a request.
#[derive(Debug, Clone)]
pub enum Principal {
    User {
        user: User,
        session_id: String,
        /// How the session was signed in ([`Session::method`]).
        method: String,
    },
    Key(ApiKey),
    /// A viewer token of the embedded viewer: reads through its filter, nothing else.
    Viewer(Box<crate::viewer::Viewer>),
}

impl Principal {
    /// Actor id for self-audit events.
    pub fn actor_id(&self) -> String {
        match self {
            Principal::User { user, .. } => user.email.clone(),
            Principal::Key(k) => format!("api-key:{}", k.id),
            Principal::Viewer(v) => v.actor_id(),
        }
    }

    /// A self-audit event with this principal as its actor (a key is a service; a viewer, the host
    /// product's user, with the token named).
    pub fn audit(&self, action: &'static str, target_type: &'static str) -> crate::audit::Audit {
        let a = || crate::audit::Audit::new(self.actor_id(), action, target_type);
        match self {
            Principal::User { .. } => a(),
            Principal::Key(k) => a().service(Some(k.name.clone())),
            Principal::Viewer(v) => v.audit(action, target_type),
        }
    }

    pub fn user(&self) -> ApiResult<&User> {
        match self {
            Principal::User { user, .. } => Ok(user),
            Principal::Key(_) => {
                Err(ApiError::forbidden("this endpoint needs a signed-in user, not an API key"))
            }
            Principal::Viewer(_) => Err(viewer_refused()),
        }
    }

    /// Reading events as the embedded viewer may: `require_read` for people and keys (no
    /// narrowing), a viewer token of this org (narrowed by its filter, which the caller applies).
    pub async fn require_view(
        &self,
        state: &AppState,
        org: &str,
    ) -> ApiResult<Option<&crate::viewer::Viewer>> {
        match self {
            Principal::Viewer(v) if v.org == org => Ok(Some(v)),
            Principal::Viewer(_) => Err(ApiError::forbidden(format!(
                "this viewer token belongs to another organization than {org}"
            ))),
            _ => self.require_read(state, org).await.map(|()| None),
        }
    }

    /// Requires a user session holding `perm` in `org`.
    pub async fn require_permission(&self, state: &AppState, org: &str, perm: Permission) -> ApiResult<()> {
        let user = self.user()?;
        let perms = state.store.permissions(org, &user.id).await?;
        match perms {
            Some(p) if p.contains(&perm) => crate::mfa::gate(state, org, user, self.method()).await,
            Some(_) => Err(ApiError::forbidden(format!(
                "you need the {} permission in organization {org}",
                perm.as_str()
            ))),
            None => Err(ApiError::forbidden(format!("you are not a member of organization {org}"))),
        }
    }

    /// Requires an API key of `org` with `scope`.
    pub fn require_scope(&self, org: &str, scope: Scope) -> ApiResult<()> {
        match self {
            Principal::Key(k) if k.org == org && k.scopes.contains(&scope) => Ok(()),
            Principal::Key(k) if k.org != org => {
                Err(ApiError::forbidden(format!("this API key belongs to another organization than {org}")))
            }
            Principal::Key(_) => {
                Err(ApiError::forbidden(format!("this API key lacks the {} scope", scope.as_str())))
            }
            Principal::User { .. } => Err(ApiError::forbidden(format!(
                "this endpoint needs an API key with the {} scope",
                scope.as_str()
            ))),
            Principal::Viewer(_) => Err(viewer_refused()),
        }
    }

    /// Reading events: `LOG-MANAGEMENT` for users, `events:read` for keys.
    pub async fn require_read(&self, state: &AppState, org: &str) -> ApiResult<()> {
        match self {
            Principal::Key(_) => self.require_scope(org, Scope::EventsRead),
            Principal::User { .. } => self.require_permission(state, org, Permission::LogManagement).await,
            Principal::Viewer(_) => Err(viewer_refused()),
        }
    }
}

/// The orgs a person's session reaches, with their permissions there: every org they belong to for a
/// password session, only its org for one of an org's identity provider, none for one of the
/// server's provider (server administration only).
pub async fn reachable_orgs(
    state: &AppState,
    user: &User,
    method: &str,
) -> ApiResult<Vec<(trail_store::Org, Vec<Permission>)>> {
    if method == crate::sso::SERVER_METHOD {
        return Ok(Vec::new());
    }
    let mut orgs = state.store.user_orgs(&user.id).await?;
    if let Some(home) = crate::sso::confined_to(method) {
        orgs.retain(|(o, _)| o.slug == home);
    }
    Ok(orgs)
}

impl Principal {
    /// How a person's session was signed in (`password` for keys and viewers, which have none).
    pub fn method(&self) -> &str {
        match self {
            Principal::User { method, .. } => method,
            _ => "password",
        }
    }
}

/// What a viewer token gets anywhere but the viewer's own reads.
fn viewer_refused() -> ApiError {
    ApiError::forbidden(
        "a viewer token can only read events, their proofs and its own exports in the embedded viewer",
    )
}

fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// The signed-in user of a console page (the session cookie), with the CSRF token its forms send.
pub async fn cookie_session(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> ApiResult<Option<(User, Session, String)>> {
    let Some(token) = cookie_value(headers, SESSION_COOKIE) else { return Ok(None) };
    Ok(session_user(state, token).await?.map(|(u, s, secret)| (u, s, csrf_for(&secret))))
}

fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    cookie_value(&parts.headers, name)
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie_value<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

fn split_token<'a>(token: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    token.strip_prefix(prefix)?.split_once('.')
}

/// Resolves a session token to its user, checking expiry; `None` for anything invalid.
pub async fn session_user(state: &AppState, token: &str) -> ApiResult<Option<(User, Session, String)>> {
    let Some((id, secret)) = split_token(token, SESSION_PREFIX) else {
        return Ok(None);
    };
    let Some(session) = state.store.session(id).await? else {
        return Ok(None);
    };
    if !bool::from(session.secret_hash.ct_eq(&secret_hash(secret))) || session.expires_at <= now() {
        return Ok(None);
    }
    // Sliding expiry: a session ends after the idle timeout without use (its last use is the later of
    // what the store recorded and what this node has seen but not yet written).
    let idle = state.settings.auth.session_idle_minutes as i64 * 60 * MICROS_PER_SECOND;
    let now = now();
    let last = state.activity.session_seen(&session.id).unwrap_or(0).max(session.last_seen);
    if now - last > idle {
        return Ok(None);
    }
    state.activity.session_used(&session.id, now);
    let Some(mut user) = state.store.user(&session.user_id).await? else {
        return Ok(None);
    };
    // An org's provider never makes a server administrator; the server's provider makes only them.
    match session.method.as_str() {
        "sso" => user.server_admin = true,
        m if crate::sso::confined_to(m).is_some() => user.server_admin = false,
        _ => {}
    }
    Ok(Some((user, session, secret.to_string())))
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(token) = bearer(parts) {
            if crate::viewer::is_token(token) {
                let viewer =
                    crate::viewer::resolve(state, token).await?.ok_or_else(ApiError::unauthorized)?;
                return Ok(Principal::Viewer(Box::new(viewer)));
            }
            if token.starts_with(KEY_PREFIX) {
                let (id, secret) = split_token(token, KEY_PREFIX).ok_or_else(ApiError::unauthorized)?;
                let key = state.store.api_key(id).await?.ok_or_else(ApiError::unauthorized)?;
                let valid = bool::from(key.secret_hash.ct_eq(&secret_hash(secret)))
                    && key.revoked_at.is_none()
                    && key.expires_at.is_none_or(|t| t > now());
                if !valid {
                    return Err(ApiError::unauthorized());
                }
                state.activity.key_used(&key.id, now());
                return Ok(Principal::Key(key));
            }
            let (user, session, _) = session_user(state, token).await?.ok_or_else(ApiError::unauthorized)?;
            return Ok(Principal::User { user, session_id: session.id, method: session.method });
        }
        if let Some(token) = cookie(parts, SESSION_COOKIE) {
            let (user, session, secret) =
                session_user(state, token).await?.ok_or_else(ApiError::unauthorized)?;
            if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
                let sent = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
                if !bool::from(sent.as_bytes().ct_eq(csrf_for(&secret).as_bytes())) {
                    return Err(ApiError::forbidden("missing or wrong X-CSRF-Token for a cookie session")
                        .with_field(CSRF_HEADER));
                }
            }
            return Ok(Principal::User { user, session_id: session.id, method: session.method });
        }
        Err(ApiError::unauthorized())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct horse!", &h));
        assert!(!verify_password("x", "not a phc string"));
    }

    #[test]
    fn key_tokens_split() {
        let (id, token, hash) = issue_key_secret();
        let (tid, secret) = split_token(&token, KEY_PREFIX).unwrap();
        assert_eq!(tid, id);
        assert_eq!(secret_hash(secret), hash);
        assert!(split_token(&token, SESSION_PREFIX).is_none());
    }
}

/// The client's address as the socket saw it (a proxy's `X-Forwarded-For` is not trusted).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip()),
        ))
    }
}

impl ClientAddr {
    pub fn text(&self) -> Option<String> {
        self.0.map(|ip| ip.to_string())
    }
}

impl axum::extract::OptionalFromRequestParts<AppState> for Principal {
    type Rejection = std::convert::Infallible;

    /// Credentials that are absent or invalid both mean "no principal" here; handlers that need one
    /// take `Principal` itself.
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(<Principal as FromRequestParts<AppState>>::from_request_parts(parts, state).await.ok())
    }
}
