//! Integrity over HTTP: the log key, signed checkpoints, proofs, and an auditor's consistency check.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use trail_merkle::checkpoint::open;
use trail_merkle::{Checkpoint, Hash, Signer, Verifier, verify_consistency, verify_inclusion};

use crate::{TestServer, ev, root_of};

fn hashes(v: &Value) -> Vec<Hash> {
    v["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| STANDARD.decode(h.as_str().unwrap()).unwrap().try_into().unwrap())
        .collect()
}

async fn text(s: &TestServer, path: &str) -> (u16, String) {
    let r = s.admin.request(reqwest::Method::GET, path).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn verifier(s: &TestServer) -> Verifier {
    let (status, key) = text(s, "/v1/log-key").await;
    assert_eq!(status, 200);
    assert!(key.starts_with("trail.localhost+"), "{key}");
    Verifier::from_key(key.trim()).unwrap()
}

/// Waits for a checkpoint covering at least `size` events and returns it, opened.
async fn checkpoint_at_least(s: &TestServer, v: &Verifier, size: u64) -> (Checkpoint, String) {
    for _ in 0..100 {
        let (status, note) = text(s, "/v1/orgs/default/checkpoint").await;
        if status == 200 {
            let cp = open(&note, v).unwrap();
            if cp.size >= size {
                return (cp, note);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no checkpoint of size {size} within 5 s");
}

#[tokio::test]
async fn checkpoints_are_signed_and_proofs_verify() {
    let s = TestServer::start().await;
    let v = verifier(&s).await;
    let (status, _) = text(&s, "/v1/orgs/default/checkpoint").await;
    assert_eq!(status, 404, "no checkpoint before the first event");

    let batch: Vec<Value> = (0..37).map(|i| ev("alice", "component.deployed", i)).collect();
    let r = s.key.ingest_batch("default", &batch).await.unwrap();
    let started = std::time::Instant::now();
    let (cp, _) = checkpoint_at_least(&s, &v, 37).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a checkpoint follows an append within about a second"
    );
    assert_eq!((cp.origin.as_str(), cp.size), ("trail.localhost/orgs/default", 37));

    // Every event's own proof verifies against the checkpoint it names.
    for res in r.results.iter().step_by(5) {
        let e = s.key.event("default", res.id.as_deref().unwrap()).await.unwrap();
        assert_eq!(e["proof_pending"], false);
        let proof = &e["proof"];
        let signed = open(proof["checkpoint"].as_str().unwrap(), &v).unwrap();
        let leaf: Hash = STANDARD.decode(e["leaf_hash"].as_str().unwrap()).unwrap().try_into().unwrap();
        verify_inclusion(&leaf, e["seq"].as_u64().unwrap(), signed.size, &hashes(proof), &signed.root)
            .unwrap();
        // A proof for another leaf must not verify.
        let mut other = leaf;
        other[0] ^= 1;
        assert!(
            verify_inclusion(&other, e["seq"].as_u64().unwrap(), signed.size, &hashes(proof), &signed.root)
                .is_err()
        );
    }
    let p = s.admin.get("/v1/orgs/default/proofs/inclusion?seq=3&tree_size=20").await.unwrap();
    let root20 = root_of(&s.store, 20).await;
    let leaf3: Hash = STANDARD
        .decode(
            s.key.event("default", r.results[3].id.as_deref().unwrap()).await.unwrap()["leaf_hash"]
                .as_str()
                .unwrap(),
        )
        .unwrap()
        .try_into()
        .unwrap();
    verify_inclusion(&leaf3, 3, 20, &hashes(&p), &root20).unwrap();

    for (path, field) in [
        ("/v1/orgs/default/proofs/inclusion?seq=37&tree_size=37", None),
        ("/v1/orgs/default/proofs/inclusion?seq=1&tree_size=38", None),
        ("/v1/orgs/default/proofs/inclusion?seq=1", Some("tree_size")),
        ("/v1/orgs/default/proofs/inclusion?seq=-1&tree_size=3", Some("seq")),
        ("/v1/orgs/default/proofs/consistency?from=5&to=3", None),
        ("/v1/orgs/default/proofs/consistency?from=5&to=3&extra=1", Some("extra")),
    ] {
        let e = s.admin.get(path).await.unwrap_err();
        assert_eq!(e.status(), Some(400), "{path}");
        assert_eq!(e.field(), field, "{path}");
    }
}

#[tokio::test]
async fn an_auditor_detects_a_rewritten_history() {
    let s = TestServer::start().await;
    let v = verifier(&s).await;
    s.key.ingest_batch("default", &(0..10).map(|i| ev("a", "a.b", i)).collect::<Vec<_>>()).await.unwrap();
    let (old, _) = checkpoint_at_least(&s, &v, 10).await;
    s.key.ingest_batch("default", &(0..25).map(|i| ev("b", "a.b", i)).collect::<Vec<_>>()).await.unwrap();
    let (new, _) = checkpoint_at_least(&s, &v, 35).await;
    let p = s
        .admin
        .get(&format!("/v1/orgs/default/proofs/consistency?from={}&to={}", old.size, new.size))
        .await
        .unwrap();
    verify_consistency(old.size, new.size, &old.root, &new.root, &hashes(&p)).unwrap();

    // A forger without the log key cannot produce a checkpoint the auditor accepts…
    let forger = Signer::generate("trail.localhost", &mut rand::rngs::OsRng).unwrap();
    let forged = forger.sign(&Checkpoint { root: [7; 32], ..new.clone() }).unwrap();
    assert!(open(&forged, &v).is_err(), "a checkpoint signed by another key is rejected");
    // …and a history that differs from the trusted one fails the consistency check.
    let mut wrong_old = old.root;
    wrong_old[5] ^= 0x10;
    assert!(verify_consistency(old.size, new.size, &wrong_old, &new.root, &hashes(&p)).is_err());
}

#[tokio::test]
async fn integrity_endpoints_are_authorized() {
    let s = TestServer::start().await;
    s.key.ingest("default", &ev("a", "a.b", 1)).await.unwrap();
    let other = s.org_with_key("acme", &["events:read"]).await;
    for path in [
        "/v1/orgs/default/checkpoint",
        "/v1/orgs/default/proofs/inclusion?seq=0&tree_size=1",
        "/v1/orgs/default/proofs/consistency?from=0&to=1",
    ] {
        assert_eq!(s.anon.get(path).await.unwrap_err().status(), Some(401), "{path}");
        assert_eq!(other.get(path).await.unwrap_err().status(), Some(403), "{path}");
    }
    assert_eq!(
        s.anon.request(reqwest::Method::GET, "/v1/log-key").send().await.unwrap().status(),
        200,
        "the public key is public"
    );
}

#[tokio::test]
async fn checkpoint_once_signs_grown_logs() {
    use trail_store::Store;
    let s = TestServer::start().await;
    s.key.ingest("default", &ev("a", "a.b", 1)).await.unwrap();
    let signer =
        trail_server::integrity::load_or_create_key(&s.dir.path().join("log.key"), "trail.localhost")
            .unwrap();
    let n = trail_server::integrity::checkpoint_once(s.store.as_ref(), &signer, "trail.localhost").await;
    let cp = s.store.latest_checkpoint("default").await.unwrap();
    assert!(matches!(n, Ok(0) | Ok(1)), "{n:?}");
    assert_eq!(cp.map(|c| c.size), Some(1));
}
