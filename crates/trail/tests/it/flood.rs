//! Unauthenticated floods against a real `trail serve` process (issue 15): 2,000 sign-ins with
//! unknown emails and wrong passwords from 200 concurrent clients, each on an address of its own in
//! 127.0.0.0/8 so the per-address throttle does not stop them early. The server's resident memory
//! must stay within 100 MB of where it started, and another client's ingest and queries keep being
//! answered throughout. Bounds are generous on purpose: this holds a promise, it measures nothing
//! (`--nocapture` prints the figures SECURITY.md records).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use serde_json::json;
use trail_client::Client;

use crate::{Served, create_key};

const CLIENTS: usize = 200;
const PER_CLIENT: usize = 10;

/// The process's resident set in bytes (`VmRSS`).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_flood_costs_bounded_memory_and_others_keep_being_served() {
    if !std::path::Path::new("/proc/self/status").exists() {
        println!("SKIPPED: no /proc to read the server's memory from");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &[]);
    let pid = served.child.id();
    let key = Client::new(&served.base).with_token(create_key(dir.path(), "events:write,events:read"));
    let login = |http: &reqwest::Client, i: usize| {
        http.post(format!("{}/v1/auth/login", served.base))
            .json(&json!({"email": format!("nobody-{i}@example.com"), "password": format!("wrong password {i}")}))
            .send()
    };
    // Warm up what every later request reuses (the dummy hash, the reader connections).
    let _ = login(&reqwest::Client::new(), 0).await;
    key.ingest(
        "default",
        &json!({"actor": {"id": "warm"}, "action": "component.deployed",
        "target": {"type": "component"}, "outcome": "success"}),
    )
    .await
    .unwrap();
    key.query("default", &[("actor", "warm")]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = rss(pid);

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = tokio::spawn({
        let done = done.clone();
        async move {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                peak = peak.max(rss(pid));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak.max(rss(pid))
        }
    });
    // Another client ingests and queries while the flood runs; every answer must come.
    let other = tokio::spawn({
        let (key, done) = (key.clone(), done.clone());
        async move {
            let mut latencies = Vec::new();
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let t = Instant::now();
                key.ingest(
                    "default",
                    &json!({"actor": {"id": "steady"}, "action": "component.deployed",
                    "target": {"type": "component", "id": format!("c-{n}")}, "outcome": "success"}),
                )
                .await
                .expect("ingest during the flood");
                key.query("default", &[("actor", "steady"), ("limit", "10")])
                    .await
                    .expect("query during the flood");
                latencies.push(t.elapsed());
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            latencies
        }
    });

    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let base = served.base.clone();
            tokio::spawn(async move {
                let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1 + (c / 250) as u8, 1 + (c % 250) as u8));
                let http = reqwest::Client::builder().local_address(ip).build().unwrap();
                let mut statuses = Vec::with_capacity(PER_CLIENT);
                for i in 0..PER_CLIENT {
                    let n = c * PER_CLIENT + i + 1;
                    let r = http
                        .post(format!("{base}/v1/auth/login"))
                        .json(&json!({"email": format!("nobody-{n}@example.com"), "password": format!("wrong password {n}")}))
                        .send()
                        .await
                        .expect("the server answers every sign-in");
                    statuses.push(r.status().as_u16());
                }
                statuses
            })
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for c in clients {
        for s in c.await.unwrap() {
            *statuses.entry(s).or_default() += 1;
        }
    }
    let flood = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let peak = sampler.await.unwrap();
    let mut latencies = other.await.unwrap();
    latencies.sort();
    let after = rss(pid);
    let mb = |b: u64| b as f64 / 1_048_576.0;
    println!(
        "flood: {} sign-ins from {CLIENTS} clients in {:.1} s, answers {statuses:?}; server RSS {:.1} MB before, \
         {:.1} MB peak (+{:.1} MB), {:.1} MB after; other client: {} ingest+query rounds, p50 {:?}, max {:?}",
        CLIENTS * PER_CLIENT,
        flood.as_secs_f64(),
        mb(baseline),
        mb(peak),
        mb(peak.saturating_sub(baseline)),
        mb(after),
        latencies.len(),
        latencies.get(latencies.len() / 2),
        latencies.last(),
    );
    assert_eq!(statuses.values().sum::<usize>(), CLIENTS * PER_CLIENT);
    assert!(
        statuses.keys().all(|s| [401, 429, 503].contains(s)),
        "every sign-in is refused as wrong, throttled or busy: {statuses:?}"
    );
    assert!(statuses.get(&503).is_some_and(|n| *n > 0), "password checks were bounded: {statuses:?}");
    assert!(peak.saturating_sub(baseline) < 100 << 20, "RSS grew by {:.1} MB", mb(peak - baseline));
    assert!(!latencies.is_empty(), "the other client was served during the flood");
    assert!(latencies.last().is_some_and(|l| *l < Duration::from_secs(10)), "{latencies:?}");
}
