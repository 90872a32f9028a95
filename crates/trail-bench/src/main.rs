//! `trail-bench`: measures PRODUCT.md §12 workloads W1 (HTTP batch ingest), W2 (single-event ingest
//! from 32 clients), W3 (filtered query and free-text latency) and W6 (bytes on disk per event) on
//! events from `shared/tools/gen_events.py`,
//! and runs the PostgreSQL baseline (`shared/tools/pg_baseline.sh`) on the same file in the same run.
//!
//! usage: trail-bench [--events N] [--tools DIR] [--work DIR] [--no-pg] [--concurrency C] [--sink] [--w5]
//!        [--one-org] [--w2-secs S] [--samples N]
//!        [--postgres URL]   (the PostgreSQL store on a fresh database `trail_bench` instead of the embedded one)
//!        trail-bench soak [--rate EVENTS_PER_S] [--secs N] [--sample-secs N] [--work DIR] [--out FILE] [--ci]
//!        (a long run of `trail serve` under mixed load, with a verdict; see `soak.rs`)
//!        trail-bench stream [--secs N] [--fraction F] [--work DIR]
//!        (delivery lag of a webhook and a syslog destination at a fraction of W1; see `stream.rs`)
//!        trail-bench alerts [--rules N] [--events N] [--rounds N] [--work DIR]
//!        (W1 with and without N alert rules, and how soon a firing follows its event; see `alerts.rs`)
//! Prints a Markdown report; BENCHMARKS.md holds the figures of a recorded run.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use trail_model::time::{MICROS_PER_DAY, format_rfc3339, parse_rfc3339};
use trail_server::{AppState, Server, Settings};
use trail_store::{Scope, Store};
use trail_store_sqlite::SqliteStore;

/// What `--help` prints: the usage lines of the module docs.
const USAGE: &str = "\
usage: trail-bench [--events N] [--tools DIR] [--work DIR] [--no-pg] [--concurrency C] [--sink] [--w5]
       [--one-org] [--w2-secs S] [--samples N]
       [--postgres URL]   (the PostgreSQL store on a fresh database `trail_bench` instead of the embedded one)
       trail-bench soak [--rate EVENTS_PER_S] [--secs N] [--sample-secs N] [--work DIR] [--out FILE] [--ci]
       trail-bench stream [--secs N] [--fraction F] [--batch EVENTS] [--work DIR]
       trail-bench alerts [--rules N] [--events N] [--rounds N] [--work DIR]
";

mod alerts;
mod postgres;
mod soak;
mod stream;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    events: usize,
    tools: PathBuf,
    work: PathBuf,
    pg: bool,
    concurrency: usize,
    samples: usize,
    /// W5: one org over 89 days (so all events fit one export), then exports from a separate
    /// `trail serve` process whose memory is measured.
    w5: bool,
    /// Run with the `audit.log` sink on, and measure how long it takes to catch up after W1.
    sink: bool,
    /// Run against the PostgreSQL store on this server instead of the embedded store.
    postgres: Option<String>,
    /// One org over 89 days (the shape W5 uses, and the 10M-event org), without running W5.
    one_org: bool,
    /// Seconds of each W2 phase (0 skips W2).
    w2_secs: u64,
}

fn args() -> anyhow::Result<Args> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../..");
    let mut a = Args {
        events: 1_000_000,
        tools: root.join("shared/tools"),
        work: std::env::temp_dir().join("trail-bench"),
        pg: true,
        concurrency: 4,
        samples: 200,
        w5: false,
        sink: false,
        postgres: None,
        w2_secs: 10,
        one_org: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--events" => a.events = val()?.parse()?,
            "--tools" => a.tools = PathBuf::from(val()?),
            "--work" => a.work = PathBuf::from(val()?),
            "--concurrency" => a.concurrency = val()?.parse()?,
            "--samples" => a.samples = val()?.parse()?,
            "--no-pg" => a.pg = false,
            "--w5" => a.w5 = true,
            "--one-org" => a.one_org = true,
            "--sink" => a.sink = true,
            "--postgres" => a.postgres = Some(val()?),
            "--w2-secs" => a.w2_secs = val()?.parse()?,
            "--help" | "-h" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}; trail-bench --help lists them"),
        }
    }
    if a.w5 && a.postgres.is_some() {
        bail!("--w5 runs a `trail serve` on the data directory; it cannot be combined with --postgres");
    }
    Ok(a)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    e.metadata().map(|m| if m.is_dir() { dir_size(&e.path()) } else { m.len() }).unwrap_or(0)
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Generates the event file once per (N, end) and reuses it.
fn generate(a: &Args, end: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(&a.work)?;
    let one_org = a.w5 || a.one_org;
    let kind = if one_org { "w5-" } else { "" };
    let file = a.work.join(format!("events-{kind}{}-{}.ndjson", a.events, &end[..10]));
    if !file.exists() {
        eprintln!("generating {} events…", a.events);
        let out = std::fs::File::create(&file)?;
        let st = std::process::Command::new("python3")
            .arg(a.tools.join("gen_events.py"))
            .arg(a.events.to_string())
            .args(if one_org { ["--days", "89", "--orgs", "1"] } else { ["--days", "360", "--orgs", "50"] })
            .args(["--end", end])
            .stdout(out)
            .status()?;
        if !st.success() {
            let _ = std::fs::remove_file(&file);
            bail!("gen_events.py failed");
        }
    }
    Ok(file)
}

fn baseline(a: &Args, file: &Path) -> anyhow::Result<HashMap<String, f64>> {
    eprintln!("running the PostgreSQL baseline…");
    let out = std::process::Command::new("bash").arg(a.tools.join("pg_baseline.sh")).arg(file).output()?;
    if !out.status.success() {
        bail!("pg_baseline.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut m = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() >= 3
            && parts[0] == "baseline"
            && let Ok(v) = parts[2].parse()
        {
            m.insert(parts[1].to_string(), v);
        }
    }
    Ok(m)
}

/// The ingest work, prepared before timing starts.
struct Workload {
    /// (org, serialized `{"events": [...]}` of up to 1000 events)
    bodies: Vec<(String, Vec<u8>)>,
    events: usize,
    busiest: String,
    max_time: i64,
}

/// Ingest bodies per org, 1000 events each, already serialized: the client's work is not timed.
fn batches(file: &Path) -> anyhow::Result<Workload> {
    let mut per_org: HashMap<String, Vec<Value>> = HashMap::new();
    let mut out = Vec::new();
    let mut n = 0;
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut max_time = 0;
    for line in std::io::BufReader::new(std::fs::File::open(file)?).lines() {
        let mut v: Value = serde_json::from_str(&line?)?;
        let org = v
            .as_object_mut()
            .and_then(|m| m.remove("org"))
            .and_then(|o| o.as_str().map(str::to_string))
            .context("event without org")?;
        if let Some(t) = v["time"].as_str().and_then(parse_rfc3339) {
            max_time = max_time.max(t);
        }
        *counts.entry(org.clone()).or_default() += 1;
        n += 1;
        let list = per_org.entry(org.clone()).or_default();
        list.push(v);
        if list.len() == 1000 {
            let events = std::mem::take(list);
            out.push((org, serde_json::to_vec(&serde_json::json!({ "events": events }))?));
        }
    }
    for (org, events) in per_org {
        if !events.is_empty() {
            out.push((org, serde_json::to_vec(&serde_json::json!({ "events": events }))?));
        }
    }
    let busiest = counts.into_iter().max_by_key(|(_, c)| *c).map(|(o, _)| o).unwrap_or_default();
    Ok(Workload { bodies: out, events: n, busiest, max_time })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The server's warnings and errors (what went wrong inside a run), on standard error.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRAIL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if std::env::args().nth(1).as_deref() == Some("soak") {
        return soak::main(std::env::args().skip(2)).await;
    }
    if std::env::args().nth(1).as_deref() == Some("alerts") {
        return alerts::main(std::env::args().skip(2)).await;
    }
    if std::env::args().nth(1).as_deref() == Some("stream") {
        return stream::main(std::env::args().skip(2)).await;
    }
    let a = args()?;
    let end = format_rfc3339(trail_model::time::now() - 60_000_000);
    let file = generate(&a, &end)?;
    let pg = if a.pg { Some(baseline(&a, &file)?) } else { None };

    let dir = a.work.join("trail-data");
    let _ = std::fs::remove_dir_all(&dir);
    let (store, sqlite): (Arc<dyn Store>, Option<Arc<SqliteStore>>) = match &a.postgres {
        Some(url) => {
            std::fs::create_dir_all(&dir)?;
            (Arc::new(postgres::fresh(url).await?), None)
        }
        None => {
            let s = Arc::new(SqliteStore::open(&dir)?);
            (s.clone(), Some(s))
        }
    };
    let Workload { bodies, events: n, busiest, max_time } = batches(&file)?;
    let mut keys: HashMap<String, String> = HashMap::new();
    let now = trail_model::time::now();
    for (org, _) in &bodies {
        if keys.contains_key(org) {
            continue;
        }
        store.create_org(org, org, now).await?;
        let scopes = vec![Scope::EventsWrite, Scope::EventsRead];
        let (key, secret) = trail_server::auth::new_api_key(org, "bench", scopes, None, None);
        store.create_api_key(&key).await?;
        keys.insert(org.clone(), secret);
    }
    let mut settings =
        Settings { listen: "127.0.0.1:0".parse()?, data_dir: dir.clone(), ..Settings::default() };
    settings.limits.request_timeout_secs = 600;
    let sink_dir = a.work.join("sink");
    if a.sink {
        let _ = std::fs::remove_dir_all(&sink_dir);
        settings.sinks.file.path = sink_dir.join("audit.log").display().to_string();
        settings.sinks.file.from_start = true;
        settings.sinks.file.max_files = 100_000;
    }
    let signer = trail_server::integrity::load_or_create_key(&dir.join("log.key"), &settings.server_name)?;
    let server = Server::bind(AppState::new(store.clone(), settings, signer)).await?;
    let base = format!("http://{}", server.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async { drop(stop_rx.await) }));
    let http = reqwest::Client::new();

    // W1: durable batch ingest over HTTP.
    eprintln!("W1: ingesting {n} events over HTTP with {} concurrent clients…", a.concurrency);
    let queue = Arc::new(std::sync::Mutex::new(bodies.into_iter()));
    let keys = Arc::new(keys);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency {
        let (queue, keys, http, base) = (queue.clone(), keys.clone(), http.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.next());
                let Some((org, body)) = next else {
                    return Ok::<_, anyhow::Error>(());
                };
                let r = http
                    .post(format!("{base}/v1/orgs/{org}/events"))
                    .bearer_auth(&keys[&org])
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("ingest failed: {} {}", r.status(), r.text().await?);
                }
                let v: Value = r.json().await?;
                if v["results"].as_array().is_some_and(|rs| rs.iter().any(|x| x["status"] != "created")) {
                    bail!(
                        "an event was not created: {}",
                        v["results"]
                            .as_array()
                            .and_then(|rs| rs.iter().find(|x| x["status"] != "created"))
                            .unwrap_or(&Value::Null)
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let ingest_secs = started.elapsed().as_secs_f64();
    let w1 = n as f64 / ingest_secs;
    // The full-text index follows the log: how far behind it was when W1 ended, and for how long.
    let index_behind = store.search_index_lag().await?;
    let caught_up = Instant::now();
    while store.search_index_lag().await? > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let index_secs = caught_up.elapsed().as_secs_f64();
    // With the sink: the time from the start of W1 until every event is in audit.log.
    let mut sink_secs = None;
    if a.sink {
        loop {
            let v: Value = http.get(format!("{base}/readyz")).send().await?.json().await?;
            if v["sink"]["status"] != "ok" && v["sink"]["status"] != "failing" {
                bail!("the sink is not running: {v}");
            }
            if v["sink"]["lag_events"] == 0 && started.elapsed().as_secs_f64() > ingest_secs {
                let lines: u64 = std::fs::read_dir(&sink_dir)?
                    .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
                    .map(|b| b.iter().filter(|c| **c == b'\n').count() as u64)
                    .sum();
                if lines >= n as u64 {
                    sink_secs = Some(started.elapsed().as_secs_f64());
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // W3: query latency for the busiest org, windows ending at the newest event.
    let key = &keys[&busiest];
    let to = format_rfc3339(max_time + 1);
    let from = |days: i64| format_rfc3339(max_time + 1 - days * MICROS_PER_DAY);
    let sample = {
        let v: Value = http
            .get(format!("{base}/v1/orgs/{busiest}/events"))
            .query(&[("from", from(1).as_str()), ("to", to.as_str()), ("limit", "1")])
            .bearer_auth(key)
            .send()
            .await?
            .json()
            .await?;
        v["events"][0].clone()
    };
    let sample_field = |path: &[&str], none: &str| {
        path.iter().fold(&sample, |v, k| &v[k]).as_str().unwrap_or(none).to_string()
    };
    let sample_actor = sample_field(&["actor", "id"], "nobody");
    let sample_ttype = sample_field(&["target", "type"], "none");
    let sample_project = sample_field(&["project"], "none");
    let queries: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("24h", vec![("from", from(1))]),
        ("30d", vec![("from", from(30))]),
        ("90d", vec![("from", from(90))]),
        ("24h actor", vec![("from", from(1)), ("actor", sample_actor.clone())]),
        ("30d actor", vec![("from", from(30)), ("actor", sample_actor.clone())]),
        ("90d outcome=failure", vec![("from", from(90)), ("outcome", "failure".into())]),
        (
            "90d action+outcome",
            vec![("from", from(90)), ("action", "component.deployed".into()), ("outcome", "failure".into())],
        ),
        ("30d q=req-0", vec![("from", from(30)), ("q", "req-0".into())]),
        ("90d q=req-0", vec![("from", from(90)), ("q", "req-0".into())]),
        ("90d q=<one request id>", vec![("from", from(90)), ("q", "REQID".into())]),
        ("90d q=x86-64", vec![("from", from(90)), ("q", "x86-64".into())]),
        // What the console asks for beside every page (rows: buckets).
        ("histogram 30d", vec![("from", from(30))]),
        ("histogram 90d", vec![("from", from(90))]),
        ("histogram 90d outcome=failure", vec![("from", from(90)), ("outcome", "failure".into())]),
        ("histogram 90d q=req-0", vec![("from", from(90)), ("q", "req-0".into())]),
        // A common word of two tokens, the first with digits; an email, five tokens.
        ("histogram 90d q=x86-64", vec![("from", from(90)), ("q", "x86-64".into())]),
        ("histogram 90d q=<actor>", vec![("from", from(90)), ("q", sample_actor.clone())]),
        ("histogram 90d action", vec![("from", from(90)), ("action", "component.deployed".into())]),
        (
            "histogram 90d action+outcome",
            vec![("from", from(90)), ("action", "component.deployed".into()), ("outcome", "failure".into())],
        ),
        ("histogram 90d actor", vec![("from", from(90)), ("actor", sample_actor.clone())]),
        (
            "histogram 90d actor+outcome",
            vec![("from", from(90)), ("actor", sample_actor.clone()), ("outcome", "failure".into())],
        ),
        ("histogram 90d target type", vec![("from", from(90)), ("target_type", sample_ttype)]),
        ("histogram 90d project", vec![("from", from(90)), ("project", sample_project)]),
    ];
    let reqid = {
        let v: Value = http
            .get(format!("{base}/v1/orgs/{busiest}/events"))
            .query(&[("from", from(60).as_str()), ("to", from(59).as_str()), ("limit", "1")])
            .bearer_auth(key)
            .send()
            .await?
            .json()
            .await?;
        v["events"][0]["info"]["request_id"].as_str().unwrap_or("req-000000000000").to_string()
    };
    let mut w3 = Vec::new();
    for (name, params) in &queries {
        let mut p: Vec<(&str, String)> =
            params.iter().map(|(k, v)| (*k, if v == "REQID" { reqid.clone() } else { v.clone() })).collect();
        p.push(("to", to.clone()));
        let mut lat = Vec::with_capacity(a.samples);
        let mut rows = 0;
        let (path, list) = if name.starts_with("histogram") {
            ("events/histogram", "buckets")
        } else {
            ("events", "events")
        };
        for i in 0..a.samples + 5 {
            let t = Instant::now();
            let r = http
                .get(format!("{base}/v1/orgs/{busiest}/{path}"))
                .query(&p)
                .bearer_auth(key)
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("query {name} failed: {}", r.text().await?);
            }
            let v: Value = r.json().await?;
            if i >= 5 {
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            rows = v[list].as_array().map_or(0, Vec::len);
        }
        lat.sort_by(f64::total_cmp);
        w3.push((name.to_string(), percentile(&lat, 0.5), percentile(&lat, 0.99), rows));
    }

    // Proofs: an event by id (with its inclusion proof) and raw inclusion proofs, busiest org.
    tokio::time::sleep(Duration::from_millis(600)).await; // let the checkpointer cover everything
    let ids: Vec<String> = {
        let v: Value = http
            .get(format!("{base}/v1/orgs/{busiest}/events"))
            .query(&[("from", from(90).as_str()), ("to", to.as_str()), ("limit", "1000")])
            .bearer_auth(key)
            .send()
            .await?
            .json()
            .await?;
        v["events"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["id"].as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let mut proof_lat = Vec::new();
    let mut by_id_lat = Vec::new();
    for (i, id) in ids.iter().cycle().take(a.samples).enumerate() {
        let t = Instant::now();
        let v: Value = http
            .get(format!("{base}/v1/orgs/{busiest}/events/{id}"))
            .bearer_auth(key)
            .send()
            .await?
            .json()
            .await?;
        by_id_lat.push(t.elapsed().as_secs_f64() * 1000.0);
        let size = v["proof"]["tree_size"].as_u64().context("no proof on an event")?;
        let seq = (i as u64 * 7919) % size;
        let t = Instant::now();
        let r = http
            .get(format!("{base}/v1/orgs/{busiest}/proofs/inclusion"))
            .query(&[("seq", seq), ("tree_size", size)])
            .bearer_auth(key)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("proof failed: {}", r.text().await?);
        }
        proof_lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    proof_lat.sort_by(f64::total_cmp);
    by_id_lat.sort_by(f64::total_cmp);

    // W2: single-event requests, after W1 (the store holds the whole file).
    let w2 = if a.w2_secs > 0 {
        let mut first = String::new();
        std::io::BufReader::new(std::fs::File::open(&file)?).read_line(&mut first)?;
        let template: Value = serde_json::from_str(&first)?;
        Some(w2(&http, &base, &busiest, key, template, Duration::from_secs(a.w2_secs)).await?)
    } else {
        None
    };

    let _ = stop_tx.send(());
    serving.await??;
    if let Some(s) = &sqlite {
        s.close();
    }
    drop((store, sqlite));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let bytes = match &a.postgres {
        Some(url) => postgres::size(url).await?,
        None => dir_size(&dir),
    };

    // trail verify, offline, on the same directory (the code the CLI runs).
    let signer = trail_server::integrity::read_key(&dir.join("log.key"), "trail.localhost")?;
    let t = Instant::now();
    // Offline verification reads a data directory; the PostgreSQL store is verified with --server.
    let reports = match &a.postgres {
        Some(_) => Vec::new(),
        None => {
            trail_store_sqlite::verify::verify_data_dir(&dir, None, &signer.verifier(), &mut |_, _, _| {})?
        }
    };
    let verify_secs = t.elapsed().as_secs_f64();
    let verified: u64 = reports.iter().map(|r| r.events).sum();
    if let Some(bad) = reports.iter().find(|r| r.problem.is_some()) {
        bail!("verification failed: {bad:?}");
    }

    // Report.
    let mut o = std::io::stdout().lock();
    writeln!(o, "## Run: {n} events, {} orgs, busiest org {busiest}\n", keys.len())?;
    let backend = if a.postgres.is_some() { "PostgreSQL store" } else { "embedded" };
    writeln!(o, "| workload | Trail ({backend}) | PostgreSQL baseline | ratio |\n|---|---|---|---|")?;
    let b = |k: &str| pg.as_ref().and_then(|m| m.get(k).copied());
    let ratio = |ours: f64, theirs: Option<f64>, higher_is_better: bool| {
        theirs.map_or("n/a".to_string(), |t| {
            format!("{:.2}×", if higher_is_better { ours / t } else { t / ours })
        })
    };
    writeln!(
        o,
        "| W1 batch ingest over HTTP, durable | {w1:.0} events/s ({ingest_secs:.1} s) | {} events/s (COPY, no HTTP) | {} |",
        b("ingest_copy").map_or("n/a".into(), |v| format!("{v:.0}")),
        ratio(w1, b("ingest_copy"), true)
    )?;
    writeln!(
        o,
        "| full-text index behind when W1 ended | {index_behind} events, caught up {index_secs:.2} s later | | |"
    )?;
    if let Some(s) = sink_secs {
        writeln!(
            o,
            "| audit.log sink on: every event in audit.log | {:.0} lines/s ({s:.1} s from the start of W1) | | |",
            n as f64 / s
        )?;
    }
    if let Some(w2) = &w2 {
        writeln!(
            o,
            "| W2 single-event requests, 32 clients, durable | {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms | | |",
            w2.rate, w2.closed.0, w2.closed.1
        )?;
        writeln!(
            o,
            "| W2 at a fixed {} req/s (latency from the scheduled send) | {:.0} answered/s, p50 {:.1} ms, p99 {:.1} ms | | |",
            W2_FIXED_RATE, w2.fixed_answered, w2.fixed.0, w2.fixed.1
        )?;
    }
    // W2's events are on disk too.
    let stored = n + w2.as_ref().map_or(0, |w| w.events);
    let per_event = bytes as f64 / stored as f64;
    writeln!(
        o,
        "| W6 bytes on disk per event | {per_event:.0} B | {} B | {} |",
        b("bytes_per_event").map_or("n/a".into(), |v| format!("{v:.0}")),
        ratio(per_event, b("bytes_per_event"), false)
    )?;
    writeln!(
        o,
        "\nW3 query latency over HTTP (busiest org, {} samples each, limit 50, newest first):\n",
        a.samples
    )?;
    writeln!(
        o,
        "| query | p50 ms | p99 ms | rows | PostgreSQL (same shape, in-process psql) |\n|---|---|---|---|---|"
    )?;
    let pg_of = |name: &str| match name {
        "24h" => b("query_24h_ms"),
        "30d actor" => b("query_30d_actor_ms"),
        "90d outcome=failure" => b("query_90d_failures_ms"),
        "90d q=req-0" => b("search_90d_ms"),
        _ => None,
    };
    for (name, p50, p99, rows) in &w3 {
        writeln!(
            o,
            "| {name} | {p50:.2} | {p99:.2} | {rows} | {} |",
            pg_of(name).map_or(String::new(), |v| format!("{v:.2} ms"))
        )?;
    }
    writeln!(o, "\nIntegrity ({} samples each, over HTTP):\n", a.samples)?;
    writeln!(o, "| operation | p50 ms | p99 ms |\n|---|---|---|")?;
    let (b50, b99) = (percentile(&by_id_lat, 0.5), percentile(&by_id_lat, 0.99));
    writeln!(o, "| GET event by id with its inclusion proof | {b50:.2} | {b99:.2} |")?;
    let (p50, p99) = (percentile(&proof_lat, 0.5), percentile(&proof_lat, 0.99));
    writeln!(o, "| GET inclusion proof (random seq, latest checkpoint) | {p50:.2} | {p99:.2} |")?;
    if a.postgres.is_none() {
        let rate = verified as f64 / verify_secs;
        writeln!(
            o,
            "\n`trail verify` offline, all {} orgs: {verified} events in {verify_secs:.2} s = {rate:.0} events/s",
            reports.len()
        )?;
    }
    if a.w5 {
        w5(&dir, &busiest, &keys[&busiest], max_time, &mut o)?;
    }
    Ok(())
}

/// A process's memory figures from /proc, in KiB.
fn memory_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// W5: exports of the whole data set from a fresh `trail serve` process, timing and peak RSS.
fn w5(dir: &Path, org: &str, key: &str, max_time: i64, o: &mut impl Write) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    let bin = std::env::current_exe()?.with_file_name("trail");
    let mut child = std::process::Command::new(&bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| {
            format!("cannot start {} (build it with cargo build --release -p trail)", bin.display())
        })?;
    let pid = child.id();
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let base = loop {
        let line = lines.next().context("trail serve exited")??;
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let rt = tokio::runtime::Handle::current();
    let client = trail_client::Client::new(&base).with_token(key);
    writeln!(o, "\nW5 export from a separate `trail serve` process (org {org}, whole 92-day window):\n")?;
    writeln!(
        o,
        "| format | rows | size | seconds | events/s | server RSS before | server peak RSS after |\n|---|---|---|---|---|---|---|"
    )?;
    for format in ["json", "csv"] {
        let before = memory_kib(pid, "VmRSS:");
        let body = serde_json::json!({"name": format!("w5 {format}"), "format": format,
            "filters": {"from": format_rfc3339(max_time + 1 - 92 * MICROS_PER_DAY), "to": format_rfc3339(max_time + 1)}});
        let started = Instant::now();
        let created = tokio::task::block_in_place(|| {
            rt.block_on(client.post(&format!("/v1/orgs/{org}/exports"), &body))
        })?;
        let id = created["id"].as_str().context("no export id")?.to_string();
        let done = loop {
            let e = tokio::task::block_in_place(|| {
                rt.block_on(client.get(&format!("/v1/orgs/{org}/exports/{id}")))
            })?;
            match e["status"].as_str() {
                Some("completed") => break e,
                Some("failed") => bail!("export failed: {e}"),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let secs = started.elapsed().as_secs_f64();
        let rows = done["row_count"].as_u64().unwrap_or(0);
        let size = done["size_bytes"].as_u64().unwrap_or(0);
        let peak = memory_kib(pid, "VmHWM:");
        writeln!(
            o,
            "| {format} | {rows} | {:.0} MB | {secs:.2} | {:.0} | {:.0} MB | {:.0} MB |",
            size as f64 / 1e6,
            rows as f64 / secs,
            before as f64 / 1024.0,
            peak as f64 / 1024.0
        )?;
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

/// W2's fixed rate, requests per second (PRODUCT.md §12: p99 at 5,000/s).
const W2_FIXED_RATE: u64 = 5_000;
const W2_CLIENTS: u64 = 32;

struct W2 {
    /// Requests answered per second with 32 clients sending back to back.
    rate: f64,
    /// p50 and p99 of that phase, ms.
    closed: (f64, f64),
    /// p50 and p99 at [`W2_FIXED_RATE`], measured from when each request was due (so a server
    /// falling behind shows in the figures), ms.
    fixed: (f64, f64),
    fixed_answered: f64,
    /// Events the two phases added to the store.
    events: usize,
}

/// W2: one event per request. First 32 clients send back to back for `secs`; then the same clients
/// send at [`W2_FIXED_RATE`] in all for `secs`, each on its own schedule.
async fn w2(
    http: &reqwest::Client,
    base: &str,
    org: &str,
    key: &str,
    mut template: Value,
    secs: Duration,
) -> anyhow::Result<W2> {
    eprintln!(
        "W2: single-event requests from {W2_CLIENTS} clients, {} s back to back then {} s at {W2_FIXED_RATE}/s…",
        secs.as_secs(),
        secs.as_secs()
    );
    if let Some(m) = template.as_object_mut() {
        m.remove("org");
        m.remove("id");
    }
    let url = format!("{base}/v1/orgs/{org}/events");
    let phase = |interval: Option<Duration>| {
        let tasks: Vec<_> = (0..W2_CLIENTS)
            .map(|c| {
                let (http, url, key, mut event) =
                    (http.clone(), url.clone(), key.to_string(), template.clone());
                tokio::spawn(async move {
                    let start = Instant::now();
                    let mut lat = Vec::new();
                    let mut i: u32 = 0;
                    loop {
                        // Each client starts its schedule at its own offset, so sends spread evenly.
                        let due = interval.map(|d| start + d * i + d.mul_f64(c as f64 / W2_CLIENTS as f64));
                        let began = due.unwrap_or_else(Instant::now);
                        if began.duration_since(start) >= secs {
                            return Ok::<_, anyhow::Error>(lat);
                        }
                        if let Some(due) = due {
                            tokio::time::sleep_until(due.into()).await;
                        }
                        event["time"] = Value::String(format_rfc3339(trail_model::time::now()));
                        let r = http
                            .post(&url)
                            .bearer_auth(&key)
                            .json(&serde_json::json!({ "events": [&event] }))
                            .send()
                            .await?;
                        if !r.status().is_success() {
                            bail!("W2 ingest failed: {} {}", r.status(), r.text().await?);
                        }
                        r.bytes().await?;
                        lat.push(began.elapsed().as_secs_f64() * 1000.0);
                        i += 1;
                    }
                })
            })
            .collect();
        async move {
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await??);
            }
            all.sort_by(f64::total_cmp);
            Ok::<_, anyhow::Error>(all)
        }
    };
    let t = Instant::now();
    let closed = phase(None).await?;
    let rate = closed.len() as f64 / t.elapsed().as_secs_f64();
    let every = Duration::from_secs_f64(W2_CLIENTS as f64 / W2_FIXED_RATE as f64);
    let t = Instant::now();
    let fixed = phase(Some(every)).await?;
    let fixed_answered = fixed.len() as f64 / t.elapsed().as_secs_f64();
    Ok(W2 {
        rate,
        closed: (percentile(&closed, 0.5), percentile(&closed, 0.99)),
        fixed: (percentile(&fixed, 0.5), percentile(&fixed, 0.99)),
        fixed_answered,
        events: closed.len() + fixed.len(),
    })
}
