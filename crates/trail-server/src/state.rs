//! The state every handler and background task reaches: the store, settings, metrics, the log's
//! signer, sign-in throttling and permits, the archive, the sink's health, and the batched activity
//! of sessions and API keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trail_model::time::Micros;
use trail_store::Store;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::{alerts, archive, auth, reads, retention, sink, stream, throttle};

/// Everything a handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    /// Signs checkpoints; its public key is served at `/v1/log-key`.
    pub signer: Arc<trail_merkle::Signer>,
    /// Uses of sessions and API keys not yet written to the store (flushed every few seconds).
    pub activity: Arc<Activity>,
    /// API keys' reads, recorded once per key and hour (see [`reads`]).
    pub key_reads: Arc<reads::KeyReads>,
    pub throttle: Arc<throttle::Throttle>,
    /// Permits for Argon2 work (sign-in, password changes, new accounts).
    pub password_checks: auth::PasswordChecks,
    /// Permits for ingest requests in flight (`limits.max_concurrent_ingest`).
    pub ingest_permits: Arc<tokio::sync::Semaphore>,
    /// Where archived events are (`None` when the configured archive cannot be opened; `trail serve`
    /// refuses to start then, so only embedders see it).
    pub archive: Option<archive::Archive>,
    /// Streaming to destinations (its tasks run while the server serves).
    pub streams: Arc<stream::Streams>,
    /// Alert rules' evaluation and notifications (runs while the server serves).
    pub alerts: Arc<alerts::Alerts>,
    /// Seals second factors' secrets kept at rest, under a key derived from the log key.
    pub sealer: stream::seal::Sealer,
    /// Seals sign-in challenges (the password step of a sign-in with a second factor).
    pub challenges: stream::seal::Sealer,
    /// Single sign-on: the providers' discovery, the flow cookie's cipher, states used.
    pub sso: Arc<crate::sso::Sso>,
    /// Serialises the checks of one user's codes (a code, or a recovery code, is good once).
    pub mfa_locks: Arc<crate::mfa::Locks>,
    /// The `audit.log` sink's health, while it runs.
    pub sink: Option<Arc<sink::SinkStatus>>,
    /// Orgs' retention policies, read from the store at most every few seconds.
    policies: Arc<Mutex<HashMap<String, (Instant, retention::Policy)>>>,
}

/// How long a node trusts its cached copy of an org's retention policy (another node may change it).
const POLICY_TTL: Duration = Duration::from_secs(5);

/// Recent uses of sessions (for sliding expiry) and API keys (for "last used"), batched so a busy
/// ingest key does not cost a write per request.
#[derive(Debug, Default)]
pub struct Activity {
    sessions: Mutex<HashMap<String, Micros>>,
    keys: Mutex<HashMap<String, Micros>>,
}

impl Activity {
    pub fn session_used(&self, id: &str, at: Micros) {
        if let Ok(mut m) = self.sessions.lock() {
            m.insert(id.to_string(), at);
        }
    }

    pub fn key_used(&self, id: &str, at: Micros) {
        if let Ok(mut m) = self.keys.lock() {
            m.insert(id.to_string(), at);
        }
    }

    /// The latest use of a session seen here and not yet flushed.
    pub fn session_seen(&self, id: &str) -> Option<Micros> {
        self.sessions.lock().ok().and_then(|m| m.get(id).copied())
    }

    pub fn forget_session(&self, id: &str) {
        if let Ok(mut m) = self.sessions.lock() {
            m.remove(id);
        }
    }

    /// Writes pending uses to the store.
    pub async fn flush(&self, store: &dyn Store) -> Result<(), trail_store::StoreError> {
        let sessions: Vec<_> = self.sessions.lock().map(|mut m| m.drain().collect()).unwrap_or_default();
        let keys: Vec<_> = self.keys.lock().map(|mut m| m.drain().collect()).unwrap_or_default();
        if !sessions.is_empty() {
            store.touch_sessions(sessions).await?;
        }
        if !keys.is_empty() {
            store.touch_api_keys(keys).await?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, settings: Settings, signer: trail_merkle::Signer) -> Self {
        let settings_ingest_permits = settings.limits.max_concurrent_ingest.max(1);
        let streams = stream::Streams::new(
            store.clone(),
            &signer,
            settings.streaming.clone(),
            &settings.server_name,
            &settings.data_dir,
        );
        let alerts = alerts::Alerts::new(
            store.clone(),
            alerts::notify::Notifier::new(settings.smtp.clone(), stream::seal::Sealer::new(&signer)),
        );
        Self {
            sealer: stream::seal::Sealer::for_purpose(&signer, "trail second factors v1"),
            challenges: stream::seal::Sealer::for_purpose(&signer, "trail sign-in challenges v1"),
            mfa_locks: Arc::default(),
            sso: Arc::new(crate::sso::Sso::new(&signer)),
            streams,
            alerts,
            store,
            metrics: Arc::new(Metrics::started(trail_model::time::now())),
            signer: Arc::new(signer),
            activity: Arc::default(),
            key_reads: Arc::default(),
            throttle: Arc::default(),
            password_checks: auth::PasswordChecks::default(),
            ingest_permits: Arc::new(tokio::sync::Semaphore::new(settings_ingest_permits)),
            archive: match archive::open(&settings) {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::error!(error = %e, "the archive cannot be opened; retention and restores are off");
                    None
                }
            },
            policies: Arc::default(),
            sink: None,
            settings: Arc::new(settings),
        }
    }

    /// An org's retention policy: its own settings, or the server's defaults.
    pub async fn policy(&self, org: &str) -> Result<retention::Policy, ApiError> {
        if let Ok(cache) = self.policies.lock()
            && let Some((at, p)) = cache.get(org)
            && at.elapsed() < POLICY_TTL
        {
            return Ok(*p);
        }
        let p = retention::Policy::of(&self.settings.retention, self.store.org_settings(org).await?.as_ref());
        if let Ok(mut cache) = self.policies.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(org.to_string(), (Instant::now(), p));
        }
        Ok(p)
    }

    /// Drops the cached policy after this node changed it.
    pub fn forget_policy(&self, org: &str) {
        if let Ok(mut cache) = self.policies.lock() {
            cache.remove(org);
        }
    }

    /// The oldest event time still in the org's hot retention.
    pub async fn hot_start(&self, org: &str, now: Micros) -> Result<Micros, ApiError> {
        Ok(self.policy(org).await?.hot_start(now))
    }

    /// The public base URL used in links (invitations): `public_url`, or the listen address.
    pub fn public_url(&self) -> String {
        let configured = self.settings.public_url.trim_end_matches('/');
        if configured.is_empty() {
            format!("http://{}", self.settings.listen)
        } else {
            configured.to_string()
        }
    }
}
