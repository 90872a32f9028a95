//! End-to-end tests: the real server on 127.0.0.1:0 over a real SQLite store, driven through
//! `trail-client` exactly as an integration would.
#![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]

mod access;
mod access_control;
mod api;
mod authz;
mod console;
mod disk_full;
mod exports;
mod hostile;
mod ingest;
mod integrity;
mod mfa;
mod query;
mod reads;
mod retention;
mod security;
mod viewer;

use std::sync::Arc;

use serde_json::{Value, json};
use trail_client::Client;
use trail_server::{AppState, Server, Settings};
use trail_store::Store;
use trail_store_sqlite::SqliteStore;

pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// A running server with a signed-in admin and an API key (both scopes) for org `default`.
#[allow(missing_debug_implementations, reason = "a test fixture")]
pub struct TestServer {
    pub base: String,
    pub anon: Client,
    pub admin: Client,
    pub key: Client,
    pub dir: tempfile::TempDir,
    pub store: Arc<SqliteStore>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), Settings::default()).await
    }

    pub async fn start_in(dir: tempfile::TempDir, mut settings: Settings) -> Self {
        settings.listen = "127.0.0.1:0".parse().unwrap();
        settings.data_dir = dir.path().to_path_buf();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        trail_server::bootstrap(store.as_ref(), Some(ADMIN_PASSWORD)).await.unwrap();
        let key = dir.path().join("log.key");
        let signer = trail_server::integrity::load_or_create_key(&key, &settings.server_name).unwrap();
        let state = AppState::new(store.clone(), settings, signer);
        // The fixture's session and key are made in the store directly, not over HTTP, so the org's
        // log holds only what each test does (signing in and creating keys are audited events).
        let admin_user = store.user_by_email("admin@localhost").await.unwrap().unwrap();
        let issued = trail_server::auth::issue_session(&admin_user.id, "password", &state);
        store.create_session(&issued.session).await.unwrap();
        let scopes = vec![trail_store::Scope::EventsWrite, trail_store::Scope::EventsRead];
        let (api_key, secret) = trail_server::auth::new_api_key("default", "test", scopes, None, None);
        store.create_api_key(&api_key).await.unwrap();
        let server = Server::bind(state).await.unwrap();
        let base = format!("http://{}", server.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server.run(async { drop(rx.await) }).await.unwrap();
        });
        let anon = Client::new(&base);
        let admin = anon.with_token(issued.token);
        let key = anon.with_token(secret);
        Self { base, anon, admin, key, dir, store, shutdown: Some(tx), task: Some(task) }
    }

    /// Stops the server gracefully and hands back its data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
        // Let the store's last handle drop so its writer thread ends.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    /// Creates another org (with the admin as its administrator) and an API key for it.
    pub async fn org_with_key(&self, slug: &str, scopes: &[&str]) -> Client {
        self.admin.create_org(slug, slug).await.unwrap();
        let k = self.admin.create_api_key(slug, "k", scopes).await.unwrap();
        self.anon.with_token(k["secret"].as_str().unwrap())
    }
}

/// The Merkle root of org `default` at `size`, straight from the store.
pub async fn root_of(store: &SqliteStore, size: u64) -> trail_merkle::Hash {
    use trail_store::Store;
    store.root("default", size).await.unwrap()
}

/// A valid event, `minutes_ago` before now.
pub fn ev(actor: &str, action: &str, minutes_ago: i64) -> Value {
    let t = trail_model::time::now() - minutes_ago * 60_000_000;
    json!({
        "time": trail_model::time::format_rfc3339(t),
        "actor": {"id": actor},
        "action": action,
        "target": {"type": action.split('.').next().unwrap(), "id": "t-1"},
        "outcome": "success",
    })
}
