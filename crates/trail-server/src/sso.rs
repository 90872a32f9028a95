//! Single sign-on with OpenID Connect: an org's identity provider signs its members in (and, from the
//! settings file, the server's provider signs in server administrators).
//!
//! The flow is the authorization code flow with PKCE. `begin` discovers the provider (cached), and
//! seals the flow's state, nonce and PKCE verifier into a short-lived cookie, so nothing is stored
//! for a sign-in that is never finished and any node can finish it. `finish` opens the cookie,
//! checks the `state`, refuses one already used, exchanges the code, and has the `openidconnect`
//! crate verify the ID token (signature against the provider's keys, issuer, audience, expiry,
//! nonce). The person is then found by their subject (or email) and created when new; the org's
//! group map is applied at every sign-in, so a group removed at the provider is removed here at the
//! person's next sign-in. The session made says how it was signed in (`sso:<org>`): it reaches only
//! that org, and never carries server-administrator powers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreProviderMetadata, CoreResponseType,
    CoreRevocableToken, CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthenticationFlow, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken,
    EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields, IssuerUrl, Nonce,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, StandardErrorResponse, StandardTokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use trail_model::time::{MICROS_PER_SECOND, Micros};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::stream::seal::Sealer;

/// Issuer URLs the API takes: an origin's grammar ([`crate::viewer::ORIGIN_PATTERN`]), then path
/// segments of unreserved characters.
pub const ISSUER_PATTERN: &str = concat!(crate::viewer::origin_grammar!(), "(/[A-Za-z0-9._~%-]*)*$");

/// Checks an issuer URL (what [`ISSUER_PATTERN`] states, and https unless it is this machine).
pub fn check_issuer(issuer: &str) -> Result<(), String> {
    let after_scheme = issuer.find("://").map_or(0, |i| i + 3);
    let (origin, path) = match issuer[after_scheme..].find('/') {
        Some(i) => issuer.split_at(after_scheme + i),
        None => (issuer, ""),
    };
    let origin = crate::viewer::check_origin(origin).map_err(|e| e.replace("an origin", "an issuer URL"))?;
    if !path.bytes().all(|b| b.is_ascii_alphanumeric() || b"._~%-/".contains(&b)) {
        return Err(format!(
            "{issuer} is not an issuer URL: its path has characters other than letters, digits and ._~%-/"
        ));
    }
    let host = origin.split("://").nth(1).unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    if origin.starts_with("http://") && !matches!(host, "localhost" | "127.0.0.1") {
        return Err(format!("{issuer} must be https:// (http:// only to this machine)"));
    }
    Ok(())
}

/// The org document of its identity provider.
pub const KIND: &str = "sso";
/// Org documents linking a provider's subject to a Trail user.
const SUBJECT_KIND: &str = "sso_subject";
/// The cookie holding a sign-in in progress (sealed).
pub const FLOW_COOKIE: &str = "trail_sso";
/// How long a sign-in may take at the provider.
pub const FLOW_SECS: i64 = 600;
/// How long a provider's discovery document (and keys) is trusted before it is fetched again; a
/// failed discovery is tried again after [`RETRY_AFTER`].
const DISCOVERY_TTL: Duration = Duration::from_secs(300);
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// Most used states remembered (each within its flow's 10 minutes): a sign-in whose state is not
/// remembered as used is still refused by the provider's one-use codes.
const MAX_USED_STATES: usize = 100_000;
/// The most of a provider's answer (discovery document, key set, token response) that is read: a
/// provider is chosen by an org's administrator, whose server could otherwise send an endless body.
const MAX_PROVIDER_ANSWER: usize = 1 << 20;

/// Every claim of the ID token beyond the standard ones, for the groups claim (named per provider).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct OtherClaims(Map<String, Value>);
impl AdditionalClaims for OtherClaims {}

type IdFields = IdTokenFields<
    OtherClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type TokenResponse = StandardTokenResponse<IdFields, CoreTokenType>;
type OidcClient = Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// An identity provider as configured: an org's (its document, the client secret sealed) or the
/// server's (the settings file).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct Provider {
    pub issuer: String,
    pub client_id: String,
    /// Sealed (base64url) in an org's document; in the clear only in memory.
    pub client_secret: String,
    /// Scopes asked for besides `openid`.
    pub scopes: Vec<String>,
    /// The ID-token claim listing the person's groups (or roles) at the provider.
    pub groups_claim: String,
    /// Provider group → Trail group (id), applied at every sign-in. Empty for the server's provider.
    #[serde(default)]
    pub group_map: Vec<GroupRule>,
    /// The server's provider only: a person in one of these provider groups is a server administrator.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_groups: Vec<String>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("groups_claim", &self.groups_claim)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRule {
    /// A value of the groups claim (a group or role name at the provider).
    #[schemars(length(min = 1, max = 200))]
    pub value: String,
    /// The id of the Trail group of this org that people with that value are members of.
    #[schemars(length(min = 1, max = 100))]
    pub group: String,
}

/// Whose provider signs the person in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Realm {
    Org(String),
    /// The server's provider (`[auth.sso]` in the settings file), for server administrators.
    Server,
}

impl Realm {
    /// What a session made by this realm records as its sign-in method.
    pub fn method(&self) -> String {
        match self {
            Realm::Org(org) => format!("sso:{org}"),
            Realm::Server => SERVER_METHOD.into(),
        }
    }

    fn key(&self) -> String {
        match self {
            Realm::Org(org) => format!("org:{org}"),
            Realm::Server => "server".into(),
        }
    }

    fn parse(key: &str) -> Option<Self> {
        match key.split_once(':') {
            Some(("org", org)) => Some(Realm::Org(org.to_string())),
            None if key == "server" => Some(Realm::Server),
            _ => None,
        }
    }
}

/// The sign-in method of a session of the server's provider (server administration only).
pub const SERVER_METHOD: &str = "sso";

/// The org a session signed in by `method` is confined to (`sso:<org>`), if any.
pub fn confined_to(method: &str) -> Option<&str> {
    method.strip_prefix("sso:")
}

/// The HTTP client to identity providers: reqwest's, reading an answer's body chunk by chunk and
/// refusing one longer than [`MAX_PROVIDER_ANSWER`] (reqwest's own adapter reads any length whole).
#[derive(Debug)]
pub struct ProviderHttp(openidconnect::reqwest::Client);

type ProviderHttpError = openidconnect::HttpClientError<openidconnect::reqwest::Error>;

impl<'c> openidconnect::AsyncHttpClient<'c> for ProviderHttp {
    type Error = ProviderHttpError;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<openidconnect::HttpResponse, Self::Error>>
                + Send
                + Sync
                + 'c,
        >,
    >;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let mut response =
                self.0.execute(request.try_into().map_err(Box::new)?).await.map_err(Box::new)?;
            let mut builder = openidconnect::http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(Box::new)? {
                if body.len() + chunk.len() > MAX_PROVIDER_ANSWER {
                    return Err(ProviderHttpError::Other(format!(
                        "the provider's answer is longer than {MAX_PROVIDER_ANSWER} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            builder.body(body).map_err(ProviderHttpError::Http)
        })
    }
}

/// A provider's discovery (or why it failed) and when it was fetched.
type Discovered = (Instant, Result<CoreProviderMetadata, String>);

/// What every part of single sign-on shares: the HTTP client to providers, their discovery
/// documents, the flow cookie's cipher and the states already used.
pub struct Sso {
    /// Follows no redirects, times out and reads at most [`MAX_PROVIDER_ANSWER`] bytes of an answer;
    /// `None` (single sign-on refused) if it could not be built.
    http: Option<ProviderHttp>,
    /// One discovery at a time: a flood of sign-ins while a provider is slow waits for nothing.
    fetching: tokio::sync::Mutex<()>,
    discovered: Mutex<HashMap<String, Discovered>>,
    flows: Sealer,
    secrets: Sealer,
    used: Mutex<HashMap<[u8; 32], Micros>>,
}

impl std::fmt::Debug for Sso {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sso").finish_non_exhaustive()
    }
}

impl Sso {
    pub fn new(signer: &trail_merkle::Signer) -> Self {
        let http = openidconnect::reqwest::ClientBuilder::new()
            // Following redirects would let a provider point Trail anywhere (server-side request forgery).
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| tracing::error!(error = %e, "single sign-on has no HTTP client"))
            .ok()
            .map(ProviderHttp);
        Self {
            http,
            fetching: tokio::sync::Mutex::new(()),
            discovered: Mutex::default(),
            flows: Sealer::for_purpose(signer, "trail single sign-on flows v1"),
            secrets: Sealer::for_purpose(signer, "trail single sign-on client secrets v1"),
            used: Mutex::default(),
        }
    }

    /// Seals a client secret for an org's document.
    pub fn seal_secret(&self, secret: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.secrets.seal(secret.as_bytes()))
    }

    fn open_secret(&self, sealed: &str) -> ApiResult<String> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).map_err(ApiError::internal)?;
        String::from_utf8(self.secrets.open(&bytes).map_err(ApiError::internal)?).map_err(ApiError::internal)
    }

    /// The provider's discovery document and keys, fetched at most every few minutes, one fetch at a
    /// time: while one is under way, others get the previous copy, or are refused at once.
    async fn metadata(&self, issuer: &str) -> Result<CoreProviderMetadata, String> {
        let cached = self.discovered.lock().ok().and_then(|cache| cache.get(issuer).cloned());
        if let Some((at, found)) = &cached {
            let fresh = if found.is_ok() { DISCOVERY_TTL } else { RETRY_AFTER };
            if at.elapsed() < fresh {
                return found.clone();
            }
        }
        let Ok(_fetching) = self.fetching.try_lock() else {
            return match cached {
                Some((_, Ok(stale))) => Ok(stale),
                _ => Err("another discovery is under way; try again in a moment".into()),
            };
        };
        let http = self.http.as_ref().ok_or("no HTTP client")?;
        let found = match IssuerUrl::new(issuer.to_string()) {
            Ok(url) => CoreProviderMetadata::discover_async(url, http).await.map_err(|e| chain(&e)),
            Err(e) => Err(e.to_string()),
        };
        if let Ok(mut cache) = self.discovered.lock() {
            // Only configured issuers get here; a server has few.
            if cache.len() > 1000 {
                cache.clear();
            }
            cache.insert(issuer.to_string(), (Instant::now(), found.clone()));
        }
        found
    }

    async fn client(&self, provider: &Provider, redirect: &str) -> Result<OidcClient, Failure> {
        let metadata = self.metadata(&provider.issuer).await.map_err(|e| {
            Failure::new("sso_provider_unreachable", format!("discovery of {} failed: {e}", provider.issuer))
        })?;
        let redirect = RedirectUrl::new(redirect.to_string())
            .map_err(|e| Failure::new("sso_misconfigured", format!("the redirect URL is not valid: {e}")))?;
        Ok(OidcClient::from_provider_metadata(
            metadata,
            ClientId::new(provider.client_id.clone()),
            Some(ClientSecret::new(provider.client_secret.clone())),
        )
        .set_redirect_uri(redirect))
    }

    /// Remembers a state as used; `false` when it already was.
    fn spend(&self, state: &str, now: Micros) -> bool {
        let key: [u8; 32] = Sha256::digest(state.as_bytes()).into();
        let Ok(mut used) = self.used.lock() else { return false };
        if used.len() >= MAX_USED_STATES {
            used.retain(|_, until| *until > now);
        }
        if used.len() >= MAX_USED_STATES {
            // Full of live states: forget the oldest half (their codes are spent at the provider).
            let mut ends: Vec<Micros> = used.values().copied().collect();
            ends.sort_unstable();
            let cut = ends[ends.len() / 2];
            used.retain(|_, until| *until > cut);
        }
        used.insert(key, now + FLOW_SECS * MICROS_PER_SECOND).is_none()
    }

    fn was_spent(&self, state: &str) -> bool {
        let key: [u8; 32] = Sha256::digest(state.as_bytes()).into();
        self.used.lock().map_or(true, |u| u.contains_key(&key))
    }
}

/// The messages of `error.source()` chains (discovery errors say little at the top).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// Why a sign-in was refused: a code the sign-in page explains, and details for the log.
#[derive(Debug)]
pub struct Failure {
    pub code: &'static str,
    pub detail: String,
    /// The org of the sign-in, once known (the sign-in page offers it again).
    pub org: Option<String>,
    /// The org whose log records the refusal (only once the provider has answered for a person).
    pub record_in: Option<String>,
    pub email: Option<String>,
}

impl Failure {
    fn new(code: &'static str, detail: impl Into<String>) -> Self {
        Self { code, detail: detail.into(), org: None, record_in: None, email: None }
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::new("sso_unavailable", e.message)
    }
}

impl From<trail_store::StoreError> for Failure {
    fn from(e: trail_store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

/// What the sign-in page says for each refusal code (the only text it shows: the code comes from
/// the address bar, where anyone can write one).
pub fn explain(code: &str) -> Option<&'static str> {
    Some(match code {
        "sso_not_configured" => {
            "This organization has no single sign-on. Sign in with your email and password."
        }
        "sso_no_flow" => "This sign-in expired or was started in another browser. Start again.",
        "sso_state_mismatch" => "This sign-in does not match the one this browser started. Start again.",
        "sso_state_replayed" => "This sign-in was already used. Start again.",
        "sso_provider_refused" => "Your identity provider did not sign you in.",
        "sso_issuer_mismatch" => "The answer came from another identity provider than this organization's.",
        "sso_provider_unreachable" => "Trail could not reach your identity provider. Try again later.",
        "sso_exchange_failed" => "Your identity provider refused the sign-in code. Start again.",
        "sso_token_audience" => {
            "Your identity provider's token was issued for another application, not this Trail."
        }
        "sso_token_expired" => {
            "Your identity provider's token has expired. Check the clocks, and start again."
        }
        "sso_token_invalid" => "Your identity provider's token could not be verified.",
        "sso_email_missing" => "Your identity provider did not share a verified email address.",
        "sso_no_access" => "Your identity provider gives you no group with access to this organization.",
        "sso_email_taken" => {
            "An account with your email address exists outside this organization. Ask an administrator to invite it."
        }
        "sso_cross_site" => {
            "Single sign-on must be started from this site. Choose Continue with single sign-on below."
        }
        "sso_not_admin" => "Your identity provider does not list you among the server administrators.",
        "sso_misconfigured" => "Single sign-on is not configured correctly. Ask your administrator.",
        "sso_unavailable" => "Sign-in is unavailable right now. Try again later.",
        _ => return None,
    })
}

/// The flow sealed in the cookie between `begin` and `finish`.
#[derive(Serialize, Deserialize)]
struct Flow {
    realm: String,
    state: String,
    nonce: String,
    verifier: String,
    exp: Micros,
    next: String,
}

/// The address the provider sends people back to (registered at the provider).
pub fn redirect_uri(state: &AppState) -> String {
    format!("{}/v1/auth/sso/callback", state.public_url())
}

/// An org's provider, its secret opened; `None` when the org has none.
pub async fn org_provider(state: &AppState, org: &str) -> ApiResult<Option<Provider>> {
    let Some(doc) = state.store.document(org, KIND, "settings").await? else { return Ok(None) };
    let mut p: Provider = serde_json::from_value(doc.body).map_err(ApiError::internal)?;
    p.client_secret = state.sso.open_secret(&p.client_secret)?;
    Ok(Some(p))
}

/// The server's provider from the settings file, if configured.
pub fn server_provider(state: &AppState) -> Option<Provider> {
    let s = &state.settings.auth.sso;
    (!s.issuer.is_empty()).then(|| Provider {
        issuer: s.issuer.clone(),
        client_id: s.client_id.clone(),
        client_secret: s.client_secret.clone(),
        scopes: s.scopes.clone(),
        groups_claim: s.groups_claim.clone(),
        group_map: Vec::new(),
        admin_groups: s.admin_groups.clone(),
    })
}

async fn provider_of(state: &AppState, realm: &Realm) -> Result<Provider, Failure> {
    let found = match realm {
        Realm::Org(org) => org_provider(state, org).await?,
        Realm::Server => server_provider(state),
    };
    found.ok_or_else(|| Failure::new("sso_not_configured", "no identity provider is configured"))
}

/// Starts a sign-in: the provider's authorization URL and the sealed flow for the cookie.
pub async fn begin(state: &AppState, realm: &Realm, next: String) -> Result<(String, String), Failure> {
    let provider = provider_of(state, realm).await?;
    let client = state.sso.client(&provider, &redirect_uri(state)).await?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(
            AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge);
    for s in &provider.scopes {
        request = request.add_scope(Scope::new(s.clone()));
    }
    let (url, csrf, nonce) = request.url();
    let flow = Flow {
        realm: realm.key(),
        state: csrf.secret().clone(),
        nonce: nonce.secret().clone(),
        verifier: verifier.secret().clone(),
        exp: trail_model::time::now() + FLOW_SECS * MICROS_PER_SECOND,
        next,
    };
    let plain = serde_json::to_vec(&flow).map_err(|e| Failure::new("sso_unavailable", e.to_string()))?;
    Ok((url.to_string(), URL_SAFE_NO_PAD.encode(state.sso.flows.seal(&plain))))
}

/// What the provider sent back to the callback.
#[derive(Debug, Default, Deserialize)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    /// The provider that answers (RFC 9207), when it says.
    pub iss: Option<String>,
}

/// A person the provider signed in, admitted to the realm.
#[derive(Debug)]
pub struct SignedIn {
    pub user: trail_store::User,
    pub realm: Realm,
    pub next: String,
    /// Trail groups joined and left by this sign-in's group map (ids).
    pub joined: Vec<String>,
    pub left: Vec<String>,
}

/// Finishes a sign-in from the provider's answer and the flow cookie.
pub async fn finish(state: &AppState, cookie: Option<&str>, answer: Callback) -> Result<SignedIn, Failure> {
    let now = trail_model::time::now();
    let flow: Flow = cookie
        .and_then(|c| URL_SAFE_NO_PAD.decode(c).ok())
        .and_then(|sealed| state.sso.flows.open(&sealed).ok())
        .and_then(|plain| serde_json::from_slice(&plain).ok())
        .filter(|f: &Flow| f.exp > now)
        .ok_or_else(|| Failure::new("sso_no_flow", "no sign-in in progress in this browser"))?;
    let realm = Realm::parse(&flow.realm).ok_or_else(|| Failure::new("sso_no_flow", "unknown realm"))?;
    let org = match &realm {
        Realm::Org(org) => Some(org.clone()),
        Realm::Server => None,
    };
    finish_flow(state, flow, realm, answer, now).await.map_err(|f| Failure { org: org.clone(), ..f })
}

/// [`finish`] once the flow's cookie is open.
async fn finish_flow(
    state: &AppState,
    flow: Flow,
    realm: Realm,
    answer: Callback,
    now: Micros,
) -> Result<SignedIn, Failure> {
    let sent = answer.state.as_deref().unwrap_or("");
    if !bool::from(sent.as_bytes().ct_eq(flow.state.as_bytes())) {
        return Err(Failure::new("sso_state_mismatch", "the state does not match this browser's sign-in"));
    }
    if state.sso.was_spent(&flow.state) {
        return Err(Failure::new("sso_state_replayed", "this sign-in's state was already used"));
    }
    if let Some(error) = answer.error {
        let mut detail = format!("{error}: {}", answer.error_description.unwrap_or_default());
        detail.truncate(300);
        return Err(Failure::new("sso_provider_refused", detail));
    }
    let code = answer.code.ok_or_else(|| Failure::new("sso_provider_refused", "the answer has no code"))?;
    let provider = provider_of(state, &realm).await?;
    if answer.iss.as_ref().is_some_and(|iss| iss != &provider.issuer) {
        return Err(Failure::new(
            "sso_issuer_mismatch",
            "the answer names another issuer than this org's provider",
        ));
    }
    let client = state.sso.client(&provider, &redirect_uri(state)).await?;
    let exchange = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| Failure::new("sso_misconfigured", format!("the provider has no token endpoint: {e}")))?
        .set_pkce_verifier(PkceCodeVerifier::new(flow.verifier.clone()));
    let http = state.sso.http.as_ref().ok_or_else(|| Failure::new("sso_unavailable", "no HTTP client"))?;
    let token =
        exchange.request_async(http).await.map_err(|e| Failure::new("sso_exchange_failed", chain(&e)))?;
    // The code is spent at the provider; the state is spent here (once, even when raced).
    if !state.sso.spend(&flow.state, now) {
        return Err(Failure::new("sso_state_replayed", "this sign-in's state was already used"));
    }
    let org = match &realm {
        Realm::Org(org) => Some(org.clone()),
        Realm::Server => None,
    };
    let refused = |code: &'static str, detail: String, email: Option<String>| Failure {
        code,
        detail,
        org: None,
        record_in: org.clone(),
        email,
    };
    let id_token = token
        .extra_fields()
        .id_token()
        .ok_or_else(|| refused("sso_token_invalid", "the provider sent no ID token".into(), None))?;
    let claims =
        id_token.claims(&client.id_token_verifier(), &Nonce::new(flow.nonce.clone())).map_err(|e| {
            use openidconnect::ClaimsVerificationError as E;
            let code = match &e {
                E::InvalidAudience(_) => "sso_token_audience",
                E::Expired(_) => "sso_token_expired",
                _ => "sso_token_invalid",
            };
            refused(code, chain(&e), None)
        })?;
    let email = claims
        .email()
        .filter(|_| claims.email_verified() != Some(false))
        .map(|e| e.as_str().trim().to_lowercase())
        .filter(|e| crate::viewer::email_like(e))
        .ok_or_else(|| refused("sso_email_missing", "no verified email claim".into(), None))?;
    let groups = claim_values(&claims.additional_claims().0, &provider.groups_claim);
    let subject = claims.subject().as_str().to_string();
    let person = Person { subject, email: email.clone(), groups };
    let admitted = match &realm {
        Realm::Org(org) => admit_member(state, org, &provider, &person).await,
        Realm::Server => admit_admin(state, &provider, &person).await,
    };
    let (user, joined, left) =
        admitted.map_err(|f| Failure { record_in: org.clone(), email: Some(email), ..f })?;
    Ok(SignedIn { user, realm, next: flow.next, joined, left })
}

/// What the ID token says about the person.
#[derive(Debug)]
struct Person {
    subject: String,
    email: String,
    groups: Vec<String>,
}

/// The values of a claim that is a list of strings (or one string).
fn claim_values(claims: &Map<String, Value>, name: &str) -> Vec<String> {
    match claims.get(name) {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// A password hash no password matches, for people who only ever sign in through a provider.
fn no_password() -> &'static str {
    crate::auth::dummy_hash()
}

/// Finds (by subject, then email) or creates the member, and applies the org's group map.
async fn admit_member(
    state: &AppState,
    org: &str,
    provider: &Provider,
    person: &Person,
) -> Result<(trail_store::User, Vec<String>, Vec<String>), Failure> {
    let link_id = hex::encode(Sha256::digest(format!("{}\n{}", provider.issuer, person.subject)));
    let linked = match state.store.document(org, SUBJECT_KIND, &link_id).await? {
        Some(doc) => match doc.body["user"].as_str() {
            Some(id) => state.store.user(id).await?,
            None => None,
        },
        None => None,
    };
    let wanted: Vec<&str> = provider
        .group_map
        .iter()
        .filter(|r| person.groups.iter().any(|g| g == &r.value))
        .map(|r| r.group.as_str())
        .collect();
    let found = match linked {
        Some(u) => Some(u),
        // An account of that email is linked only when it is already this org's member: the org's
        // provider vouches for people of this org, not for an account that belongs elsewhere.
        None => match state.store.user_by_email(&person.email).await? {
            Some(u) if state.store.permissions(org, &u.id).await?.is_some() => Some(u),
            Some(_) => {
                return Err(Failure::new(
                    "sso_email_taken",
                    "an account of this email exists outside this organization; an administrator must invite it",
                ));
            }
            None => None,
        },
    };
    let user = match found {
        Some(u) => u,
        // Nobody new is created without a group to join.
        None if wanted.is_empty() => {
            return Err(Failure::new("sso_no_access", "no mapped group in the groups claim"));
        }
        None => {
            let now = trail_model::time::now();
            match state.store.create_user(&person.email, no_password(), false, now).await {
                Ok(u) => u,
                // Created meanwhile by a sign-in raced with this one.
                Err(trail_store::StoreError::Conflict(_)) => state
                    .store
                    .user_by_email(&person.email)
                    .await?
                    .ok_or_else(|| Failure::new("sso_unavailable", "the new user vanished"))?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    let groups = state.store.groups(org).await?;
    let (mut joined, mut left, mut changes) = (Vec::new(), Vec::new(), Vec::new());
    for g in groups.iter().filter(|g| provider.group_map.iter().any(|r| r.group == g.id)) {
        let want = wanted.contains(&g.id.as_str());
        if want != g.members.contains(&user.id) {
            if want {
                joined.push(g.id.clone())
            } else {
                left.push(g.id.clone())
            }
            changes.push((g.id.clone(), want));
        }
    }
    if !changes.is_empty() {
        match state.store.sync_groups(org, &user.id, &changes).await {
            Ok(()) => {}
            // The provider took the org's last administrator out of the administrators' group: the
            // org keeps them, and this sign-in is refused.
            Err(trail_store::StoreError::Conflict(m)) => return Err(Failure::new("sso_no_access", m)),
            Err(e) => return Err(e.into()),
        }
    }
    if state.store.permissions(org, &user.id).await?.is_none() {
        return Err(Failure::new("sso_no_access", "no group of this org after the group map"));
    }
    // Linked only once admitted: a refused sign-in leaves nothing behind.
    let link = trail_store::Document {
        org: org.to_string(),
        kind: SUBJECT_KIND.into(),
        id: link_id,
        body: serde_json::json!({"user": user.id, "issuer": provider.issuer}),
        updated_at: trail_model::time::now(),
    };
    state.store.put_document(&link, false).await?;
    Ok((user, joined, left))
}

/// A server administrator signed in by the server's provider (found by email, created when new).
async fn admit_admin(
    state: &AppState,
    provider: &Provider,
    person: &Person,
) -> Result<(trail_store::User, Vec<String>, Vec<String>), Failure> {
    if !person.groups.iter().any(|g| provider.admin_groups.contains(g)) {
        return Err(Failure::new(
            "sso_not_admin",
            "not in an administrators' group of the server's provider",
        ));
    }
    let user = match state.store.user_by_email(&person.email).await? {
        Some(u) => u,
        None => {
            state.store.create_user(&person.email, no_password(), false, trail_model::time::now()).await?
        }
    };
    Ok((user, Vec::new(), Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realms_round_trip_and_confine_sessions() {
        for r in [Realm::Org("acme".into()), Realm::Server] {
            assert_eq!(Realm::parse(&r.key()), Some(r));
        }
        assert_eq!(Realm::parse("org"), None);
        assert_eq!(confined_to("sso:acme"), Some("acme"));
        assert_eq!(confined_to("sso"), None);
        assert_eq!(confined_to("password"), None);
    }

    #[test]
    fn a_state_is_spent_once() {
        let sso = Sso::new(&trail_merkle::Signer::generate("t", &mut rand::rngs::OsRng).unwrap());
        assert!(!sso.was_spent("s1"));
        assert!(sso.spend("s1", 0));
        assert!(sso.was_spent("s1"));
        assert!(!sso.spend("s1", 0), "twice");
    }

    #[test]
    fn groups_are_read_from_a_list_or_one_string() {
        let claims: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"groups": ["a", 1, "b"], "role": "admin"})).unwrap();
        assert_eq!(claim_values(&claims, "groups"), ["a", "b"]);
        assert_eq!(claim_values(&claims, "role"), ["admin"]);
        assert!(claim_values(&claims, "missing").is_empty());
    }

    #[test]
    fn every_refusal_code_is_explained() {
        for code in
            ["sso_no_flow", "sso_state_replayed", "sso_token_audience", "sso_token_expired", "sso_no_access"]
        {
            assert!(explain(code).is_some(), "{code}");
        }
        assert_eq!(explain("<script>"), None);
    }

    /// A provider's answer is read up to [`MAX_PROVIDER_ANSWER`] bytes, from a real HTTP server that
    /// sends a body of no stated length (read until it closes), small or endless.
    #[tokio::test]
    async fn a_provider_answer_is_read_up_to_its_limit() {
        use openidconnect::AsyncHttpClient;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = vec![0u8; 4096];
                    let n = socket.read(&mut request).await.unwrap_or(0);
                    let small = String::from_utf8_lossy(&request[..n]).starts_with("GET /small ");
                    let length = if small { 100 } else { 64 << 20 };
                    let head =
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n";
                    if socket.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = vec![b' '; 64 * 1024];
                    let mut sent = 0;
                    while sent < length {
                        let k = (length - sent).min(chunk.len());
                        if socket.write_all(&chunk[..k]).await.is_err() {
                            return; // the client stopped reading
                        }
                        sent += k;
                    }
                });
            }
        });
        let http = ProviderHttp(openidconnect::reqwest::Client::new());
        let get = |path: &str| {
            openidconnect::http::Request::get(format!("http://{addr}{path}")).body(Vec::new()).unwrap()
        };
        let small = http.call(get("/small")).await.unwrap();
        assert_eq!(small.body().len(), 100);
        let refused = http.call(get("/endless")).await.unwrap_err();
        assert!(refused.to_string().contains("longer than 1048576 bytes"), "{refused}");
    }
}
