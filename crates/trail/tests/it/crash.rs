//! Killing the server never loses or changes an acknowledged event.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use trail_client::Client;

use crate::{PASSWORD, Served, create_key};

fn event(i: usize) -> Value {
    json!({"id": format!("evt-{i}"), "actor": {"id": format!("user-{}", i % 7)}, "action": "component.deployed",
           "target": {"type": "component", "id": format!("c-{i}")}, "outcome": "success", "info": {"n": i}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_ingest_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = Served::start(dir.path(), &[]);
    let secret = create_key(dir.path(), "events:write,events:read");
    let key = Client::new(&served.base).with_token(&secret);
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();

    let mut writers = Vec::new();
    for w in 0..4 {
        let (key, acked) = (key.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for round in 0.. {
                let batch: Vec<Value> = (0..20).map(|j| event(w * 1_000_000 + round * 20 + j)).collect();
                match key.ingest_batch("default", &batch).await {
                    Ok(r) => acked
                        .lock()
                        .unwrap()
                        .extend(r.results.into_iter().map(|x| (x.id.unwrap(), x.seq.unwrap()))),
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    served.signal("-KILL");
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 100, "the test must kill a busy server (acked {})", acked.len());

    let served = Served::start(dir.path(), &[]);
    let admin = Client::new(&served.base).login("admin@localhost", PASSWORD).await.unwrap();
    let all = admin.query_all("default", &[("limit", "1000")]).await.unwrap();
    // The histogram's per-minute counts are written in the same transaction as the events: after
    // every kill they still add up to what the log holds.
    let (from, to) = (trail_model::time::now() - 86_400_000_000, trail_model::time::now() - 1_000_000);
    let window =
        [("from", trail_model::time::format_rfc3339(from)), ("to", trail_model::time::format_rfc3339(to))];
    let window: Vec<(&str, &str)> = window.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let in_window =
        admin.query_all("default", &[window.as_slice(), &[("limit", "1000")]].concat()).await.unwrap();
    let histogram = admin.histogram("default", &window).await.unwrap();
    let counted: u64 =
        histogram["buckets"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, in_window.len() as u64, "the histogram counts every event of its window once");
    let stored: std::collections::HashMap<String, u64> =
        all.iter().map(|e| (e["id"].as_str().unwrap().to_string(), e["seq"].as_u64().unwrap())).collect();
    for (id, seq) in &acked {
        assert_eq!(stored.get(id), Some(seq), "acknowledged event {id} lost or moved");
    }
    let mut seqs: Vec<u64> = stored.values().copied().collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "seq has no gaps after a crash");
    // The full-text index is written behind the log and was killed mid-step: search still finds every
    // acknowledged event (a sample of writers 1–3, whose target ids no other id begins with).
    let sample: Vec<&(String, u64)> =
        acked.iter().filter(|(id, _)| id.len() == 11).step_by(acked.len() / 40 + 1).collect();
    assert!(sample.len() > 10);
    for (id, seq) in sample {
        let target = format!("c-{}", &id[4..]);
        let found = admin.query_all("default", &[("q", target.as_str()), ("limit", "10")]).await.unwrap();
        let seqs: Vec<u64> = found.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, [*seq], "a search for {target} finds its acknowledged event");
    }
    // The id map (its tail, runs and any merge) was killed mid-write too: every acknowledged event
    // sent again is a duplicate answered with its original seq.
    let key = Client::new(&served.base).with_token(&secret);
    for chunk in acked.chunks(500) {
        let again: Vec<Value> = chunk.iter().map(|(id, _)| event(id[4..].parse().unwrap())).collect();
        let r = key.ingest_batch("default", &again).await.unwrap();
        for ((id, seq), x) in chunk.iter().zip(&r.results) {
            assert_eq!((x.status.as_str(), x.seq), ("duplicate", Some(*seq)), "{id} sent again");
        }
    }
    // Sign-ins are in the log too (Trail audits itself); check the test's own events.
    for e in all.iter().filter(|e| e["source"] != "trail").take(50) {
        let i: usize = e["id"].as_str().unwrap()[4..].parse().unwrap();
        assert_eq!(e["info"]["n"], i, "stored content is what was sent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = Served::start(dir.path(), &[]);
    let key = Client::new(&served.base).with_token(create_key(dir.path(), "events:write"));
    let r = key.ingest_batch("default", &(0..100).map(event).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(r.results.len(), 100);
    let status = served.signal("-TERM");
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    let served = Served::start(dir.path(), &[]);
    let admin = Client::new(&served.base).login("admin@localhost", PASSWORD).await.unwrap();
    let all = admin.query_all("default", &[("limit", "1000")]).await.unwrap();
    assert_eq!(all.iter().filter(|e| e["source"] != "trail").count(), 100);
}

/// Many rounds of: start, ingest from several clients, request an export, SIGKILL at a random moment
/// (during group commits, checkpoint signing, export runs and retention passes, which start with the
/// server and archive the old events ingested first), restart. Afterwards every acknowledged event is
/// present — hot or archived, exactly once — with its seq and exactly the content sent, the log has no
/// gap, `trail verify` passes on the hot store and the archive, and every export completed and verifies.
/// `TRAIL_CRASH_ROUNDS` sets the number of rounds (CI: 50; by hand: 1000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_kill_restart_rounds_lose_nothing_acknowledged() {
    let rounds: usize = std::env::var("TRAIL_CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let acked: Arc<Mutex<Vec<(String, u64, usize)>>> = Arc::default();
    // Old events first (accepted while hot retention is 400 days); the rounds run with 30 days, so each
    // start's retention pass archives them, and is killed doing so.
    let secret = {
        let first = Served::start(dir.path(), &[("TRAIL_RETENTION__HOT_DAYS", "400")]);
        let secret = create_key(dir.path(), "events:write,events:read");
        let key = Client::new(&first.base).with_token(&secret);
        let now = trail_model::time::now();
        let old: Vec<Value> = (0..6000usize)
            .map(|i| {
                // Ids of their own: the rounds' ids (round × 1,000,000 + …) must never meet them.
                let mut e = event(i);
                e["id"] = json!(format!("old-{i}"));
                e["time"] =
                    json!(trail_model::time::format_rfc3339(now - (40 + (i as i64 % 300)) * 86_400_000_000));
                e
            })
            .collect();
        for chunk in old.chunks(500) {
            let r = key.ingest_batch("default", chunk).await.unwrap();
            let base = chunk[0]["info"]["n"].as_u64().unwrap() as usize;
            acked.lock().unwrap().extend(
                r.results.into_iter().enumerate().map(|(i, x)| (x.id.unwrap(), x.seq.unwrap(), base + i)),
            );
        }
        secret
    };
    // Every round queues an export and is killed, so the queue outgrows the per-org bound on pending
    // exports; this harness checks that each completes (the bound is tested in the server's suite).
    let env = [
        ("TRAIL_RETENTION__HOT_DAYS", "30"),
        ("TRAIL_RETENTION__INTERVAL_SECS", "1"),
        ("TRAIL_EXPORTS__MAX_PENDING_PER_ORG", "100000"),
    ];
    let mut exports: Vec<String> = Vec::new();
    let mut next = 0usize;
    for round in 0..rounds {
        let mut served = Served::start(dir.path(), &env);
        let key = Client::new(&served.base).with_token(&secret);
        // The last minute only: a thousand rounds of whole-day exports would fill the disk.
        let since = trail_model::time::format_rfc3339(trail_model::time::now() - 60_000_000);
        let body = json!({"name": format!("round {round}"), "format": "json", "filters": {"from": since}});
        if let Ok(e) = key.post("/v1/orgs/default/exports", &body).await {
            exports.push(e["id"].as_str().unwrap().to_string());
        }
        let mut writers = Vec::new();
        for w in 0..3 {
            let (key, acked) = (key.clone(), acked.clone());
            let start = next + w * 100_000;
            writers.push(tokio::spawn(async move {
                for b in 0.. {
                    let first = start + b * 10;
                    let batch: Vec<Value> = (first..first + 10).map(event).collect();
                    match key.ingest_batch("default", &batch).await {
                        Ok(r) => acked.lock().unwrap().extend(
                            r.results
                                .into_iter()
                                .enumerate()
                                .map(|(i, x)| (x.id.unwrap(), x.seq.unwrap(), first + i)),
                        ),
                        Err(_) => return,
                    }
                }
            }));
        }
        next += 1_000_000;
        // Kill somewhere between 20 and 400 ms in: while batches commit and checkpoints are signed.
        let pause = 20 + (round * 7919) % 380;
        tokio::time::sleep(std::time::Duration::from_millis(pause as u64)).await;
        served.signal("-KILL");
        for w in writers {
            w.await.unwrap();
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > rounds * 10, "the rounds must ingest for real (acked {})", acked.len());

    // Finish whatever retention pass the last kill interrupted, then read the archive back.
    let out = crate::trail()
        .env("TRAIL_RETENTION__HOT_DAYS", "30")
        .args(["archive", "run", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let restored = dir.path().join("restored.jsonl");
    let to = trail_model::time::format_rfc3339(trail_model::time::now() - 25 * 86_400_000_000);
    let out = crate::trail()
        .env("TRAIL_RETENTION__HOT_DAYS", "30")
        .args(["archive", "restore", "--org", "default", "--from", "2020-01-01T00:00:00Z", "--to", &to, "-o"])
        .arg(&restored)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let archived: Vec<Value> = std::fs::read_to_string(&restored)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(archived.len() >= 4500, "the old events went to the archive ({})", archived.len());

    let served = Served::start(dir.path(), &env);
    let admin = Client::new(&served.base).login("admin@localhost", PASSWORD).await.unwrap();
    let all = admin.query_all("default", &[("limit", "1000")]).await.unwrap();
    let mut stored: std::collections::HashMap<String, (u64, Value)> = std::collections::HashMap::new();
    for e in all.iter().chain(&archived) {
        let prev =
            stored.insert(e["id"].as_str().unwrap().to_string(), (e["seq"].as_u64().unwrap(), e.clone()));
        assert!(prev.is_none(), "event {} is both hot and archived, or archived twice", e["id"]);
    }

    for (id, seq, n) in &acked {
        let (got_seq, e) = stored.get(id).unwrap_or_else(|| panic!("acknowledged event {id} was lost"));
        assert_eq!(got_seq, seq, "event {id} moved");
        // Every field the client sent reads back as sent (ids and times differ by design for the
        // old events, which are keyed by their own ids above).
        let sent = event(*n);
        for field in ["/actor/id", "/action", "/target/type", "/target/id", "/outcome", "/info"] {
            assert_eq!(e.pointer(field), sent.pointer(field), "event {id} changed at {field}");
        }
    }
    let mut seqs: Vec<u64> = stored.values().map(|(s, _)| *s).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "the log has no gap");
    // The full-text index, written behind the log and killed mid-step in many rounds, finds the
    // acknowledged events (a sample of the rounds' own, by the target id only they carry).
    let hot: Vec<&(String, u64, usize)> = acked.iter().filter(|(_, _, n)| *n >= 1_000_000).collect();
    for (id, seq, n) in hot.iter().step_by(hot.len() / 30 + 1) {
        let target = format!("c-{n}");
        let found = admin.query_all("default", &[("q", target.as_str()), ("limit", "100")]).await.unwrap();
        assert!(found.iter().any(|e| e["seq"] == *seq), "a search for {target} finds event {id}");
        for e in &found {
            let t = e["target"]["id"].as_str().unwrap();
            assert!(t.starts_with(&target), "a search for {target} found only what begins with it, not {t}");
        }
    }

    // Every export requested before a kill ran to completion after a restart.
    assert!(exports.len() >= rounds / 2, "exports were requested ({})", exports.len());
    for id in &exports {
        let mut status = Value::Null;
        for _ in 0..600 {
            status = admin.get(&format!("/v1/orgs/default/exports/{id}")).await.unwrap();
            if status["status"] == "completed" || status["status"] == "failed" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(status["status"], "completed", "export {id}: {status}");
    }
    let last = exports.last().unwrap();
    let file = dir.path().join("last-export.jsonl");
    let body = admin
        .request(reqwest::Method::GET, &format!("/v1/orgs/default/exports/{last}/download"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    std::fs::write(&file, &body).unwrap();
    let manifest = admin.get_text(&format!("/v1/orgs/default/exports/{last}/manifest")).await.unwrap();
    std::fs::write(dir.path().join("last-export.manifest"), manifest).unwrap();
    drop(served);
    let out = crate::trail()
        .args(["verify", "--export"])
        .arg(&file)
        .arg("--manifest")
        .arg(dir.path().join("last-export.manifest"))
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "the last export verifies: {}", String::from_utf8_lossy(&out.stdout));
    let out = crate::trail()
        .args(["verify", "--archive"])
        .arg(dir.path().join("archive"))
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "the archive verifies: {}", String::from_utf8_lossy(&out.stdout));
    let out = crate::trail().args(["verify", "--data-dir"]).arg(dir.path()).output().unwrap();
    assert!(
        out.status.success(),
        "trail verify after {rounds} crashes: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    eprintln!("{rounds} kill/restart rounds, {} acknowledged events, none lost or changed", acked.len());
}
