//! `trail-bench alerts`: what alert rules cost ingest. W1 (4 clients, batches of 1,000 synthetic
//! events) on a fresh store without rules, then on another fresh store with N enabled rules of the
//! usual kinds (every matching event on an action, thresholds grouped by actor or address, free text,
//! the templates); the ratio is the cost. Then how long after its ingest answer an event's firing is
//! written (the 5 s), as median and maximum over 20 probes.
//!
//! usage: trail-bench alerts [--rules N] [--events N] [--rounds N] [--work DIR]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use trail_server::{AppState, Server, Settings};
use trail_store::{Document, Scope, Store};

/// One synthetic event of the usual shape and size.
fn event(i: u64) -> Value {
    // One event in 50 a failed sign-in (failures are the exception in real logs).
    let action = if i.is_multiple_of(50) {
        "user.sign_in_failed"
    } else {
        ["component.deployed", "project.updated", "user.signed_in", "api_proxy.updated"][(i % 4) as usize]
    };
    json!({"actor": {"id": format!("user-{}@example.com", i % 500), "ip": format!("203.0.113.{}", i % 200)},
           "action": action,
           "target": {"type": "component", "id": format!("billing-api-{}", i % 97), "name": "Billing API"},
           "project": "payments", "outcome": if i.is_multiple_of(7) { "failure" } else { "success" },
           "info": {"request_id": format!("req-{i}"), "env": "production"}})
}

fn rules(n: usize) -> Vec<Value> {
    let templates = trail_server::alerts::rules::templates();
    (0..n)
        .map(|i| {
            let (search, condition) = match i % 5 {
                0 => (format!("action=custom.action_{i}"), json!({"kind": "any"})),
                1 => ("action=user.sign_in_failed".to_string(), json!({"kind": "threshold", "count": 50, "window_secs": 60, "group_by": "actor"})),
                2 => ("outcome=failure&action=component.*".to_string(), json!({"kind": "threshold", "count": 1000, "window_secs": 300, "group_by": "ip"})),
                3 => (format!("q=never-{i}"), json!({"kind": "any"})),
                _ => {
                    let t = &templates[i % templates.len()];
                    (t.search.to_string(), serde_json::to_value(&t.condition).unwrap_or_default())
                }
            };
            json!({"name": format!("rule {i}"), "search": search, "condition": condition, "cooldown_secs": 300,
                   "notify": {"emails": [], "webhook": null}, "enabled": true, "created_by": "bench", "created_at": 0})
        })
        .collect()
}

struct Run {
    w1: f64,
    firing_lag: Vec<f64>,
}

async fn run(work: &std::path::Path, round: usize, events: u64, n_rules: usize) -> anyhow::Result<Run> {
    // A directory of its own per run: the previous run's store may not be closed yet.
    let dir = work.join(format!("trail-data-{round}-{n_rules}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let store: Arc<dyn Store> = Arc::new(trail_store_sqlite::SqliteStore::open(&dir)?);
    let now = trail_model::time::now();
    store.create_org("acme", "Acme", now).await?;
    let (key, secret) =
        trail_server::auth::new_api_key("acme", "bench", vec![Scope::EventsWrite], None, None);
    store.create_api_key(&key).await?;
    let mut all = rules(n_rules);
    if n_rules > 0 {
        // The probe: every `bench.probe` event fires.
        all.push(json!({"name": "probe", "search": "action=bench.probe", "condition": {"kind": "any"}, "cooldown_secs": 0,
                        "notify": {"emails": [], "webhook": null}, "enabled": true, "created_by": "bench", "created_at": 0}));
    }
    for (i, body) in all.into_iter().enumerate() {
        let d = Document {
            org: "acme".into(),
            kind: "alert_rule".into(),
            id: format!("ar_{i:04}"),
            body,
            updated_at: now,
        };
        store.put_document(&d, true).await?;
    }
    let settings = Settings { listen: "127.0.0.1:0".parse()?, data_dir: dir.clone(), ..Settings::default() };
    let signer = trail_server::integrity::load_or_create_key(&dir.join("log.key"), &settings.server_name)?;
    let server = Server::bind(AppState::new(store.clone(), settings, signer)).await?;
    let base = format!("http://{}", server.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async { drop(stop_rx.await) }));
    let http = reqwest::Client::new();
    let url = format!("{base}/v1/orgs/acme/events");
    // The evaluator loads the rules within 2 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (next, http, url, secret) = (next.clone(), http.clone(), url.clone(), secret.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let from = next.fetch_add(1000, std::sync::atomic::Ordering::Relaxed);
                if from >= events {
                    return Ok::<_, anyhow::Error>(());
                }
                let batch: Vec<Value> = (from..from + 1000).map(event).collect();
                let r = http.post(&url).bearer_auth(&secret).json(&json!({ "events": batch })).send().await?;
                if !r.status().is_success() {
                    bail!("ingest failed: {}", r.status());
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let w1 = events as f64 / started.elapsed().as_secs_f64();
    let mut firing_lag = Vec::new();
    if n_rules > 0 {
        // Let the evaluator catch up with W1, then probe one event at a time.
        let caught = Instant::now();
        let size = store.tree_size("acme").await?;
        loop {
            let cursor = store.documents(Some("acme"), "alert_cursor", 1, None).await?;
            if cursor.first().and_then(|d| d.body["next_seq"].as_u64()).is_some_and(|c| c >= size) {
                break;
            }
            if caught.elapsed() > Duration::from_secs(600) {
                bail!("the evaluator did not catch up within 10 minutes");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("  the evaluator caught up {:.1} s after W1 ended", caught.elapsed().as_secs_f64());
        for p in 0..20 {
            let probe = json!({"actor": {"id": "bench"}, "action": "bench.probe", "target": {"type": "x", "id": format!("p{p}")}, "outcome": "success"});
            let r = http.post(&url).bearer_auth(&secret).json(&probe).send().await?;
            let acked = Instant::now();
            if !r.status().is_success() {
                bail!("probe failed");
            }
            let v: Value = r.json().await?;
            let seq = v["results"][0]["seq"].as_u64().context("the probe's seq")?;
            // Its firing's id is its seq and the probe rule's id.
            let firing = format!("{seq:020}-ar_{:04}", n_rules);
            loop {
                let newest = store.documents(Some("acme"), "alert_firing", 20, None).await?;
                if newest.iter().any(|d| d.id == firing) {
                    firing_lag.push(acked.elapsed().as_secs_f64());
                    break;
                }
                if acked.elapsed() > Duration::from_secs(30) {
                    bail!("a probe did not fire within 30 s");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    // Its idle keep-alive connections would hold the graceful shutdown open.
    drop(http);
    let _ = stop_tx.send(());
    let _ = serving.await;
    Ok(Run { w1, firing_lag })
}

pub async fn main(mut args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let (mut n_rules, mut events, mut rounds, mut work) =
        (100usize, 300_000u64, 3usize, std::env::temp_dir().join("trail-bench-alerts"));
    while let Some(flag) = args.next() {
        let mut val = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--rules" => n_rules = val()?.parse()?,
            "--events" => events = val()?.parse()?,
            "--rounds" => rounds = val()?.parse()?,
            "--work" => work = val()?.into(),
            other => bail!(
                "unknown argument {other}; usage: trail-bench alerts [--rules N] [--events N] [--rounds N] [--work DIR]"
            ),
        }
    }
    std::fs::create_dir_all(&work)?;
    let mut results = Vec::new();
    // Alternate, so drift on the machine falls on both alike.
    for round in 0..rounds {
        for rules in [0, n_rules] {
            eprintln!("round {round}: W1 with {rules} rules…");
            let r = run(&work, round, events, rules).await?;
            eprintln!("  {:.0} events/s", r.w1);
            results.push((rules, r));
        }
    }
    // The median run of each (what the report's line says).
    let median = |rules: usize| {
        let mut w1: Vec<f64> = results.iter().filter(|(n, _)| *n == rules).map(|(_, r)| r.w1).collect();
        w1.sort_by(f64::total_cmp);
        crate::percentile(&w1, 0.5)
    };
    let (without, with) = (median(0), median(n_rules));
    let mut lags: Vec<f64> = results.iter().flat_map(|(_, r)| r.firing_lag.clone()).collect();
    lags.sort_by(f64::total_cmp);
    println!("## Alert rules and ingest (trail-bench alerts)\n");
    println!("| | |\n|---|---|");
    for (n, r) in &results {
        println!("| W1, {n} rules | {:.0} events/s |", r.w1);
    }
    println!("| cost of {n_rules} rules (median of each) | {:.1} % |", (1.0 - with / without) * 100.0);
    if !lags.is_empty() {
        println!(
            "| ingest answer → firing written, {} probes | median {:.0} ms, max {:.0} ms |",
            lags.len(),
            crate::percentile(&lags, 0.5) * 1e3,
            lags[lags.len() - 1] * 1e3
        );
    }
    Ok(())
}
