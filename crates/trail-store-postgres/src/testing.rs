//! Test support (feature `testing`, for this crate's tests and the binary's): a throwaway database per
//! test on the server named by `TRAIL_TEST_POSTGRES`, or on [`DEFAULT_URL`]. Without a server
//! [`TestDb::create`] prints `SKIPPED (no PostgreSQL at …)` on stderr, past the test harness's output
//! capture, and returns `None`; with `TRAIL_TEST_POSTGRES` set to a server that cannot be reached it
//! panics, so CI never skips silently. Never used outside tests.
#![allow(clippy::unwrap_used, clippy::panic, reason = "a test fixture fails loudly")]

use std::io::Write;

use crate::PgStore;
use tokio_postgres::{Config, NoTls};

/// The variable naming the test server.
pub const ENV: &str = "TRAIL_TEST_POSTGRES";
/// Tried when the variable is unset.
pub const DEFAULT_URL: &str = "postgres://trail:trail@127.0.0.1:5432/postgres";

/// A database created for one test and dropped (`WITH (FORCE)`) when this is dropped.
#[derive(Debug)]
pub struct TestDb {
    admin: Config,
    pub name: String,
    pub config: Config,
}

/// Where a configuration points, without its password.
fn describe(c: &Config) -> String {
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    format!(
        "postgres://{}@{host}:{}/{}",
        c.get_user().unwrap_or(""),
        c.get_ports().first().copied().unwrap_or(5432),
        c.get_dbname().unwrap_or("")
    )
}

async fn connect(config: &Config) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

impl TestDb {
    /// Creates a fresh database, or says the test is skipped and returns `None` without a server.
    pub async fn create() -> Option<Self> {
        let given = std::env::var(ENV).ok().filter(|u| !u.is_empty());
        let url = given.clone().unwrap_or_else(|| DEFAULT_URL.to_string());
        let mut admin: Config = url.parse().unwrap_or_else(|e| panic!("{ENV} is not a PostgreSQL URL: {e}"));
        admin.connect_timeout(std::time::Duration::from_secs(5));
        let client = match connect(&admin).await.map_err(|e| match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        }) {
            Ok(c) => c,
            Err(e) if given.is_none() => {
                // Straight to stderr, past the test harness's capture, so a skip is always visible.
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED (no PostgreSQL at {}: {e}); set {ENV} to run the PostgreSQL tests",
                    describe(&admin)
                );
                return None;
            }
            Err(e) => panic!("{ENV} is set but {} cannot be reached: {e}", describe(&admin)),
        };
        let name = format!("trail_test_{:016x}", rand::random::<u64>());
        client
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'"))
            .await
            .unwrap_or_else(|e| {
                let why = e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_string());
                panic!("cannot create a test database on {}: {why}", describe(&admin))
            });
        let mut config = admin.clone();
        config.dbname(&name);
        Some(Self { admin, name, config })
    }

    /// A store (a "node") on this database.
    pub async fn store(&self) -> PgStore {
        PgStore::from_config(self.config.clone(), 8).await.unwrap()
    }

    /// A URL for this database, password included (for child processes).
    pub fn url(&self) -> String {
        let url =
            std::env::var(ENV).ok().filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_URL.to_string());
        match url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{}", self.name),
            None => url,
        }
    }

    /// A direct connection to this database, for checks behind the store's back.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.config).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be shutting down: use a thread of our own.
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let client = connect(&admin).await.ok()?;
                // FORCE cannot end an autovacuum worker (not ours) that is busy there: wait for it.
                for _ in 0..50 {
                    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    if client.batch_execute(&drop).await.is_ok() {
                        return Some(());
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                None
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            let _ = writeln!(std::io::stderr(), "warning: could not drop test database {}", self.name);
        }
    }
}
