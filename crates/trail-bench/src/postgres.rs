//! `--postgres URL`: runs the workloads against the PostgreSQL store on a fresh database
//! `trail_bench` of that server (dropped and recreated each run), and measures its size for W6.

use anyhow::Context;
use tokio_postgres::{Config, NoTls};
use trail_store_postgres::PgStore;

const DB: &str = "trail_bench";

async fn connect(config: &Config) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = config.connect(NoTls).await.context("cannot connect to PostgreSQL")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn bench_config(url: &str) -> anyhow::Result<Config> {
    let mut config: Config = url.parse().context("--postgres is not a PostgreSQL URL")?;
    config.dbname(DB);
    Ok(config)
}

/// Drops and recreates `trail_bench` and opens the store on it.
pub async fn fresh(url: &str) -> anyhow::Result<PgStore> {
    let admin: Config = url.parse().context("--postgres is not a PostgreSQL URL")?;
    let client = connect(&admin).await?;
    let run = |sql: String| {
        let client = &client;
        async move {
            client.batch_execute(&sql).await.map_err(|e| match e.as_db_error() {
                Some(db) => anyhow::anyhow!("{sql}: {}", db.message()),
                None => anyhow::anyhow!("{sql}: {e}"),
            })
        }
    };
    // An autovacuum worker still busy with the last run's database cannot be terminated by FORCE
    // (it is not ours); it finishes or yields within moments.
    for attempt in 0.. {
        match run(format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)")).await {
            Ok(()) => break,
            Err(e) if attempt >= 300 => return Err(e),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
    run(format!("CREATE DATABASE {DB} TEMPLATE template0 ENCODING 'UTF8'")).await?;
    Ok(PgStore::from_config(bench_config(url)?, trail_store_postgres::DEFAULT_MAX_CONNECTIONS).await?)
}

/// Bytes of Trail's tables, their indexes and TOAST (like the baseline's `pg_total_relation_size`).
pub async fn size(url: &str) -> anyhow::Result<u64> {
    let client = connect(&bench_config(url)?).await?;
    client.batch_execute("CHECKPOINT").await.ok();
    let row = client
        .query_one(
            "SELECT sum(pg_total_relation_size(c.oid))::int8 FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind = 'r'",
            &[],
        )
        .await?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}
