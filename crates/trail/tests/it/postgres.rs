//! Two `trail serve` processes sharing one PostgreSQL database (PRODUCT.md §11): concurrent ingest
//! into one org through both keeps `seq` gapless and the checkpoints consistent, and a session made on
//! one node works on the other. Each test uses a throwaway database; without PostgreSQL the tests
//! say `SKIPPED` (see `trail_store_postgres::testing`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use trail_client::Client;
use trail_store_postgres::testing::TestDb;

use crate::{PASSWORD, Served, trail};

/// Starts a node on the database, with the log key, server name and export directory all nodes share.
fn node(dir: &Path, url: &str, key_file: &Path) -> Served {
    let exports = key_file.parent().unwrap().join("exports");
    Served::start(
        dir,
        &[
            ("TRAIL_STORAGE__URL", url),
            ("TRAIL_INTEGRITY__KEY_FILE", key_file.to_str().unwrap()),
            ("TRAIL_EXPORTS__DIR", exports.to_str().unwrap()),
        ],
    )
}

/// `trail verify --server` against a node, saving or checking the trusted checkpoint.
fn verify(base: &str, token: &str, trusted: &Path) -> String {
    let out = trail()
        .args(["verify", "--server", base, "--org", "default", "--token", token, "--trusted"])
        .arg(trusted)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "verify against {base}: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Waits until the node's latest checkpoint covers the whole log.
async fn checkpointed(client: &Client, size: u64) {
    for _ in 0..200 {
        let note = client.request(reqwest::Method::GET, "/v1/orgs/default/checkpoint").send().await.unwrap();
        let text = note.text().await.unwrap();
        if text.lines().nth(1).and_then(|l| l.parse::<u64>().ok()).is_some_and(|s| s >= size) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no checkpoint of size {size} appeared on {}", client.base());
}

async fn ingest(nodes: &[Client], rounds: usize, tag: &str) -> Vec<(String, u64)> {
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let mut tasks = Vec::new();
    for (n, client) in nodes.iter().enumerate() {
        for w in 0..3 {
            let (client, acked, tag) = (client.clone(), acked.clone(), tag.to_string());
            tasks.push(tokio::spawn(async move {
                for round in 0..rounds {
                    let batch: Vec<Value> = (0..10)
                        .map(|j| {
                            json!({"id": format!("{tag}-{n}-{w}-{round}-{j}"), "actor": {"id": format!("u{w}")},
                                   "action": "component.deployed", "target": {"type": "component"},
                                   "outcome": "success"})
                        })
                        .collect();
                    let r = client.ingest_batch("default", &batch).await.unwrap();
                    acked.lock().unwrap().extend(r.results.into_iter().map(|x| (x.id.unwrap(), x.seq.unwrap())));
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_log() {
    let Some(db) = TestDb::create().await else { return };
    let url = db.url();
    let (dir_a, dir_b, shared) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key_file = shared.path().join("log.key");
    // The key exists before the nodes start (two nodes must not each create one).
    trail_server::integrity::load_or_create_key(&key_file, "trail.localhost").unwrap();
    // Both start at once on the empty database: one bootstraps, the other finds it done.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| node(dir_a.path(), &url, &key_file));
        let b = s.spawn(|| node(dir_b.path(), &url, &key_file));
        (a.join().unwrap(), b.join().unwrap())
    });

    // A session signed in on one node is valid on the other (sessions live in the database).
    let login = json!({"email": "admin@localhost", "password": PASSWORD});
    let token = Client::new(&a.base).post("/v1/auth/login", &login).await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let me = Client::new(&b.base).with_token(&token).me().await.unwrap();
    assert_eq!(me["email"], "admin@localhost", "{me}");
    let admin_a = Client::new(&a.base).with_token(&token);

    let key = admin_a.create_api_key("default", "ingest", &["events:write", "events:read"]).await.unwrap();
    let secret = key["secret"].as_str().unwrap().to_string();
    let clients = [Client::new(&a.base).with_token(&secret), Client::new(&b.base).with_token(&secret)];
    let mut acked = ingest(&clients, 15, "first").await;

    // Seq is gapless: every event of the org (self-audit included) has a distinct seq 0..n-1.
    let all = clients[1].query_all("default", &[("limit", "1000")]).await.unwrap();
    let stored: HashMap<String, u64> =
        all.iter().map(|e| (e["id"].as_str().unwrap().to_string(), e["seq"].as_u64().unwrap())).collect();
    let mut seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "seq 0..n-1, each exactly once");
    for (id, seq) in &acked {
        assert_eq!(stored.get(id), Some(seq), "acknowledged event {id} lost or moved");
    }

    // Both nodes sign checkpoints of one tree with one key: the checkpoint verified on one node is
    // extended by the other's (a consistency proof between them verifies), in both directions.
    let trusted = shared.path().join("trusted.checkpoint");
    checkpointed(&clients[0], seqs.len() as u64).await;
    verify(&a.base, &secret, &trusted);
    acked.extend(ingest(&clients[1..], 5, "second").await);
    let size = clients[0].query_all("default", &[("limit", "1000")]).await.unwrap().len() as u64;
    checkpointed(&clients[1], size).await;
    let out = verify(&b.base, &secret, &trusted);
    assert!(out.contains("is consistent with the trusted one"), "{out}");
    acked.extend(ingest(&clients[..1], 5, "third").await);
    let size = clients[1].query_all("default", &[("limit", "1000")]).await.unwrap().len() as u64;
    checkpointed(&clients[0], size).await;
    let out = verify(&a.base, &secret, &trusted);
    assert!(out.contains("is consistent with the trusted one"), "{out}");
    assert_eq!(acked.len(), 2 * 3 * 15 * 10 + 3 * 5 * 10 + 3 * 5 * 10);

    // An export requested on node A is run by whichever node claims it and downloads from node B.
    let e = admin_a
        .post("/v1/orgs/default/exports", &json!({"name": "both nodes", "format": "json"}))
        .await
        .unwrap();
    let id = e["id"].as_str().unwrap();
    let admin_b = Client::new(&b.base).with_token(&token);
    let mut done = Value::Null;
    for _ in 0..300 {
        done = admin_b.get(&format!("/v1/orgs/default/exports/{id}")).await.unwrap();
        if done["status"] == "completed" || done["status"] == "failed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(done["status"], "completed", "{done}");
    let body = admin_b
        .request(reqwest::Method::GET, &format!("/v1/orgs/default/exports/{id}/download"))
        .send()
        .await
        .unwrap();
    assert_eq!(body.status(), 200);
    let text = body.text().await.unwrap();
    assert_eq!(text.lines().count() as u64, done["row_count"].as_u64().unwrap());
    assert!(text.lines().count() as u64 >= size, "the export holds the whole day: {}", text.lines().count());

    // The store's metrics come from the database the nodes share.
    let metrics = reqwest::get(format!("{}/metrics", b.base)).await.unwrap().text().await.unwrap();
    let value = |series: &str| -> f64 {
        metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap()
    };
    assert!(value("trail_events_stored") >= size as f64, "{metrics}");
    assert!(value("trail_store_size_bytes") > 1e6, "{metrics}");
    assert_eq!(value("trail_exports{state=\"running\"}"), 0.0);
    assert!(value("trail_store_pool_waits_total{pool=\"postgres\"}") >= 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_migrate_a_fresh_database_at_once() {
    let Some(db) = TestDb::create().await else { return };
    let url = db.url();
    let dir = tempfile::tempdir().unwrap();
    let children: Vec<_> = ["first", "second"]
        .iter()
        .map(|slug| {
            trail()
                .args(["admin", "create-org", "--slug", slug, "--data-dir"])
                .arg(dir.path())
                .env("TRAIL_STORAGE__URL", &url)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let client = db.client().await;
    let slugs: Vec<String> = client
        .query("SELECT slug FROM orgs ORDER BY slug", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(slugs, ["first", "second"]);
    let versions = client.query("SELECT version FROM schema_migrations", &[]).await.unwrap();
    assert_eq!(versions.len(), trail_store_postgres::schema::MIGRATIONS.len());
}
