//! `trail-bench stream`: does delivery keep up with ingest? Measures W1 (batch ingest over HTTP, 4
//! clients) on an empty store, then ingests at a fraction of that rate (default half) for a while with
//! two destinations streaming the org's log: a webhook (JSON batches with proofs, to an HTTP receiver
//! here) and a syslog collector (RFC 5424, octet-counted, over TCP, to a receiver here). For every
//! event it records when its ingest was acknowledged and when each receiver got it; the difference is
//! the delivery lag, reported as median, p99 and maximum per destination.
//!
//! usage: trail-bench stream [--secs N] [--fraction F] [--batch EVENTS] [--work DIR]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use trail_server::{AppState, Server, Settings};
use trail_store::{Scope, Store};

/// When each seq was acknowledged to the ingesting client, and when each receiver had it.
#[derive(Default)]
struct Times {
    acked: Vec<Option<Instant>>,
    webhook: Vec<Option<Instant>>,
    syslog: Vec<Option<Instant>>,
}

fn set(v: &mut Vec<Option<Instant>>, seq: u64, t: Instant) {
    let i = seq as usize;
    if v.len() <= i {
        v.resize(i + 1, None);
    }
    // At least once: the first arrival counts.
    v[i].get_or_insert(t);
}

/// One synthetic event of the usual shape and size (~400 bytes of JSON).
fn event(i: u64) -> Value {
    let action =
        ["component.deployed", "project.updated", "user.signed_in", "api_key.created"][(i % 4) as usize];
    json!({"actor": {"id": format!("user-{}@example.com", i % 500), "ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)"},
           "action": action,
           "target": {"type": "component", "id": format!("billing-api-{}", i % 97), "name": "Billing API"},
           "project": "payments", "outcome": if i.is_multiple_of(13) { "failure" } else { "success" },
           "info": {"request_id": format!("req-{i}"), "env": "production", "version": "2.4.1"}})
}

fn body(from: u64) -> Vec<u8> {
    let events: Vec<Value> = (from..from + 1000).map(event).collect();
    serde_json::to_vec(&json!({ "events": events })).unwrap_or_default()
}

/// A minimal HTTP/1.1 receiver: reads each request, notes the seqs of the batch, answers 200.
async fn webhook_receiver(times: Arc<Mutex<Times>>) -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let times = times.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut r = BufReader::new(r);
                loop {
                    let mut len = 0usize;
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut buf = vec![0; len];
                    if r.read_exact(&mut buf).await.is_err() {
                        return;
                    }
                    let now = Instant::now();
                    if let Ok(batch) = serde_json::from_slice::<Value>(&buf)
                        && let Ok(mut t) = times.lock()
                    {
                        for e in batch["events"].as_array().into_iter().flatten() {
                            if let Some(seq) = e["seq"].as_u64() {
                                set(&mut t.webhook, seq, now);
                            }
                        }
                    }
                    if w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(port)
}

/// A syslog collector: octet-counted frames, the seq read from Trail's structured data.
async fn syslog_receiver(times: Arc<Mutex<Times>>) -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let times = times.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(sock);
                loop {
                    let mut len = Vec::new();
                    if r.read_until(b' ', &mut len).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let Some(n) = std::str::from_utf8(&len).ok().and_then(|s| s.trim().parse::<usize>().ok())
                    else {
                        return;
                    };
                    let mut msg = vec![0; n];
                    if r.read_exact(&mut msg).await.is_err() {
                        return;
                    }
                    let text = String::from_utf8_lossy(&msg);
                    let seq = text
                        .split("seq=\"")
                        .nth(1)
                        .and_then(|s| s.split('"').next())
                        .and_then(|s| s.parse().ok());
                    if let (Some(seq), Ok(mut t)) = (seq, times.lock()) {
                        set(&mut t.syslog, seq, Instant::now());
                    }
                }
            });
        }
    });
    Ok(port)
}

async fn post(http: &reqwest::Client, url: &str, key: &str, body: Vec<u8>) -> anyhow::Result<Vec<u64>> {
    let r =
        http.post(url).bearer_auth(key).header("content-type", "application/json").body(body).send().await?;
    if !r.status().is_success() {
        bail!("ingest failed: {}", r.status());
    }
    let v: Value = r.json().await?;
    Ok(v["results"].as_array().into_iter().flatten().filter_map(|x| x["seq"].as_u64()).collect())
}

fn summary(lags: &mut [f64]) -> String {
    if lags.is_empty() {
        return "no events".into();
    }
    lags.sort_by(f64::total_cmp);
    format!(
        "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        crate::percentile(lags, 0.5) * 1e3,
        crate::percentile(lags, 0.99) * 1e3,
        lags[lags.len() - 1] * 1e3
    )
}

pub async fn main(mut args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let (mut secs, mut fraction, mut work) = (60u64, 0.5f64, std::env::temp_dir().join("trail-bench-stream"));
    let mut batch = trail_server::settings::StreamingSettings::default().batch_max_events;
    while let Some(flag) = args.next() {
        let mut val = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--secs" => secs = val()?.parse()?,
            "--fraction" => fraction = val()?.parse()?,
            "--work" => work = val()?.into(),
            "--batch" => batch = val()?.parse()?,
            other => bail!(
                "unknown argument {other}; usage: trail-bench stream [--secs N] [--fraction F] [--batch EVENTS] [--work DIR]"
            ),
        }
    }
    let dir = work.join("trail-data");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let store: Arc<dyn Store> = Arc::new(trail_store_sqlite::SqliteStore::open(&dir)?);
    let now = trail_model::time::now();
    store.create_org("acme", "Acme", now).await?;
    let (key, secret) = trail_server::auth::new_api_key(
        "acme",
        "bench",
        vec![Scope::EventsWrite, Scope::EventsRead],
        None,
        None,
    );
    store.create_api_key(&key).await?;
    let mut settings =
        Settings { listen: "127.0.0.1:0".parse()?, data_dir: dir.clone(), ..Settings::default() };
    settings.streaming.batch_max_events = batch;
    let signer = trail_server::integrity::load_or_create_key(&dir.join("log.key"), &settings.server_name)?;
    let sealer = trail_server::stream::seal::Sealer::new(&signer);
    let state = AppState::new(store.clone(), settings, signer);
    let server = Server::bind(state).await?;
    let base = format!("http://{}", server.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async { drop(stop_rx.await) }));
    let http = reqwest::Client::new();
    let url = format!("{base}/v1/orgs/acme/events");

    // W1 on the empty store, 4 clients, 200 batches of 1000.
    eprintln!("W1 without destinations…");
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (next, http, url, secret) = (next.clone(), http.clone(), url.clone(), secret.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let from = next.fetch_add(1000, std::sync::atomic::Ordering::Relaxed);
                if from >= 200_000 {
                    return Ok::<_, anyhow::Error>(());
                }
                post(&http, &url, &secret, body(from)).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let w1 = 200_000.0 / started.elapsed().as_secs_f64();
    let rate = w1 * fraction;
    eprintln!("W1 {w1:.0} events/s; streaming at {rate:.0} events/s for {secs} s…");

    // The receivers, and the destinations starting at the log's current end.
    let times = Arc::new(Mutex::new(Times::default()));
    let (hook, sys) = (webhook_receiver(times.clone()).await?, syslog_receiver(times.clone()).await?);
    // Destinations are made through the store (the bench has no admin session): as the API would.
    let size = store.tree_size("acme").await?;
    for (id, config) in [
        (
            "bench-webhook",
            json!({"name": "bench webhook", "kind": "webhook", "url": format!("http://127.0.0.1:{hook}/in"), "format": "json", "facility": 13, "tls": false}),
        ),
        (
            "bench-syslog",
            json!({"name": "bench syslog", "kind": "syslog", "address": format!("127.0.0.1:{sys}"), "tls": false, "format": "json", "facility": 13}),
        ),
    ] {
        let sealed = (id == "bench-webhook").then(|| b"whsec_bench".to_vec());
        store
            .put_destination(&trail_store::Destination {
                org: "acme".into(),
                id: id.into(),
                config,
                sealed_secret: sealed.map(|s| sealer.seal(&s)),
                created_by: "bench".into(),
                created_at: now,
                updated_at: now,
                progress: trail_store::DestinationProgress {
                    cursor: size,
                    state: "active".into(),
                    ..Default::default()
                },
            })
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Ingest at `rate` from 4 clients, each sending a batch of 1000 on its own schedule.
    let interval = Duration::from_secs_f64(4.0 * 1000.0 / rate);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(1_000_000));
    let mut tasks = Vec::new();
    for c in 0..4u32 {
        let (next, http, url, secret, times) =
            (next.clone(), http.clone(), url.clone(), secret.clone(), times.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(interval.mul_f64(f64::from(c) / 4.0)).await;
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while Instant::now() < deadline {
                tick.tick().await;
                let from = next.fetch_add(1000, std::sync::atomic::Ordering::Relaxed);
                let seqs = post(&http, &url, &secret, body(from)).await?;
                let at = Instant::now();
                if let Ok(mut t) = times.lock() {
                    for s in seqs {
                        set(&mut t.acked, s, at);
                    }
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let sent = next.load(std::sync::atomic::Ordering::Relaxed) - 1_000_000;
    let achieved = sent as f64 / secs as f64;
    // Let the receivers catch up (at most 30 s).
    let end = store.tree_size("acme").await?;
    let waited = Instant::now();
    loop {
        let done = times.lock().map(|t| {
            let have = |v: &Vec<Option<Instant>>| {
                (size..end).all(|s| v.get(s as usize).is_some_and(Option::is_some))
            };
            have(&t.webhook) && have(&t.syslog)
        });
        if done.unwrap_or(false) || waited.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = std::mem::take(&mut *times.lock().map_err(|_| anyhow::anyhow!("lock"))?);
    let lags = |v: &Vec<Option<Instant>>| -> (Vec<f64>, u64) {
        let mut out = Vec::new();
        let mut missing = 0;
        for s in size..end {
            match (t.acked.get(s as usize).copied().flatten(), v.get(s as usize).copied().flatten()) {
                (Some(a), Some(r)) => out.push(r.saturating_duration_since(a).as_secs_f64()),
                (Some(_), None) => missing += 1,
                _ => {}
            }
        }
        (out, missing)
    };
    let (mut hook_lags, hook_missing) = lags(&t.webhook);
    let (mut sys_lags, sys_missing) = lags(&t.syslog);
    println!("## Streaming keeps up with ingest (trail-bench stream)\n");
    println!("| | |\n|---|---|");
    println!("| W1, empty store, no destinations | {w1:.0} events/s |");
    println!(
        "| ingest while streaming (target {:.0}%) | {achieved:.0} events/s for {secs} s ({sent} events) |",
        fraction * 100.0
    );
    println!(
        "| webhook delivery lag (ack → receiver) | {} ({hook_missing} not received) |",
        summary(&mut hook_lags)
    );
    println!(
        "| syslog delivery lag (ack → receiver) | {} ({sys_missing} not received) |",
        summary(&mut sys_lags)
    );
    let _ = stop_tx.send(());
    let _ = serving.await;
    Ok(())
}
