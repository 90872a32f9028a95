//! `trail-bench soak`: runs a real `trail serve` process (the binary next to this one) under a steady
//! mix of batch and single-event ingest, queries (pages, cursors, filters, free text, events with
//! their proofs, histograms) and exports, and watches it: every `--sample-secs` it records throughput,
//! p99 latencies, the server's RSS (`/proc/<pid>/status` VmRSS) and open file descriptors
//! (`/proc/<pid>/fd`), and errors. At the end it writes the samples as CSV and a Markdown table, runs
//! `trail verify` on the data directory, and gives a verdict:
//!
//! - zero errors (any non-2xx answer, transport error, event not `created`, failed export);
//! - no file-descriptor growth: the count with no client connected, after a warm-up and again at the
//!   end, must not grow;
//! - RSS growth over the second half of the run under 10%, not counting the growth of the memory the
//!   store reports in `/metrics` (`trail_store_memory_bytes`: SQLite's page caches, which fill up to
//!   their configured sizes as the files grow, and the id filters, ~1.1 bytes per stored event by
//!   design); what is left is what a leak would show. Both figures are printed. Not with `--ci`: a
//!   minute is too short to tell growth from warm-up;
//! - `trail verify` passes.
//!
//! It exits non-zero when the verdict fails, so a script can run it. It measures; it asserts no speed.
//!
//! usage: trail-bench soak [--rate EVENTS_PER_S] [--secs N] [--sample-secs N] [--work DIR] [--out FILE] [--ci]

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use trail_model::time::{MICROS_PER_SECOND, format_rfc3339, now};

const USAGE: &str = "usage: trail-bench soak [--rate EVENTS_PER_S] [--secs N] [--sample-secs N] [--work DIR] [--out FILE] [--ci]";
const PASSWORD: &str = "soak password, long enough";
/// Half the measured maximum of W1 in BENCHMARKS.md (51,907 events/s).
const DEFAULT_RATE: u64 = 25_000;
const BATCH: usize = 500;
/// Ingest requests in flight at once (the server admits 32).
const IN_FLIGHT: usize = 8;
const ORGS: [&str; 3] = ["default", "soak-a", "soak-b"];

struct Options {
    rate: u64,
    secs: u64,
    sample_secs: u64,
    work: PathBuf,
    out: Option<PathBuf>,
    /// The one-minute CI check: low rate, short warm-up, no RSS verdict.
    ci: bool,
}

fn options(mut args: impl Iterator<Item = String>) -> anyhow::Result<Options> {
    let mut o = Options {
        rate: DEFAULT_RATE,
        secs: 1800,
        sample_secs: 10,
        work: std::env::temp_dir().join("trail-soak"),
        out: None,
        ci: false,
    };
    let (mut rate, mut secs) = (None, None);
    while let Some(flag) = args.next() {
        let mut val = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--rate" => rate = Some(val()?.parse()?),
            "--secs" => secs = Some(val()?.parse()?),
            "--sample-secs" => o.sample_secs = val()?.parse()?,
            "--work" => o.work = PathBuf::from(val()?),
            "--out" => o.out = Some(PathBuf::from(val()?)),
            "--ci" => o.ci = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}; {USAGE}"),
        }
    }
    if o.ci {
        (o.rate, o.secs, o.sample_secs) = (2_000, 60, 5);
    }
    o.rate = rate.unwrap_or(o.rate).max(1);
    o.secs = secs.unwrap_or(o.secs).max(6 * o.sample_secs);
    o.sample_secs = o.sample_secs.max(1);
    Ok(o)
}

/// Everything the load tasks report, emptied at every sample.
#[derive(Default)]
struct Window {
    events: u64,
    batch_ms: Vec<f64>,
    single_ms: Vec<f64>,
    query_ms: Vec<f64>,
    /// The slowest query of the window: its time and what it asked.
    slowest_query: Option<(f64, String)>,
    exports: u64,
    errors: u64,
}

#[derive(Default)]
struct Shared {
    window: Mutex<Window>,
    /// The first few errors, to print.
    first_errors: Mutex<Vec<String>>,
    total_errors: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn record(&self, f: impl FnOnce(&mut Window)) {
        if let Ok(mut w) = self.window.lock() {
            f(&mut w);
        }
    }

    fn error(&self, what: String) {
        self.total_errors.fetch_add(1, Ordering::Relaxed);
        self.record(|w| w.errors += 1);
        if let Ok(mut e) = self.first_errors.lock()
            && e.len() < 20
        {
            eprintln!("soak error: {what}");
            e.push(what);
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

struct Sample {
    t: f64,
    events_per_s: f64,
    batch_p99: f64,
    /// The slowest batch of the sample.
    batch_max: f64,
    single_p99: f64,
    query_p99: f64,
    exports: u64,
    rss_mb: f64,
    /// `trail_store_memory_bytes`, every part, in MB (0 when the server does not report it).
    store_mb: f64,
    fds: usize,
    errors: u64,
}

/// The org, its API key and the pre-serialized request bodies for it.
#[derive(Clone)]
struct Target {
    org: String,
    key: String,
    batches: Arc<Vec<Vec<u8>>>,
    singles: Arc<Vec<Vec<u8>>>,
}

pub async fn main(args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let o = options(args)?;
    std::fs::create_dir_all(&o.work)?;
    let data = o.work.join("soak-data");
    let _ = std::fs::remove_dir_all(&data);
    let bin = std::env::current_exe()?.with_file_name("trail");
    let log = o.work.join("soak-server.log");
    let (mut child, base) = start_server(&bin, &data, &log)?;
    let pid = child.id();
    let result = soak(&o, &base, pid).await;
    stop_server(&mut child);
    let (samples, verdicts) = result?;

    let verified = trail_cmd(&bin, &o.work).args(["verify", "--data-dir"]).arg(&data).status()?.success();
    let mut verdicts = verdicts;
    verdicts.push(("`trail verify` passes on the data directory".into(), verified));
    report(&o, &samples, &verdicts)?;
    if verdicts.iter().any(|(_, ok)| !ok) {
        bail!("soak verdict: FAIL (server log: {})", log.display());
    }
    println!("\nsoak verdict: PASS");
    Ok(())
}

/// `trail` with none of this process's `TRAIL_*` variables (Trail refuses unknown ones), run from the
/// work directory so no stray `trail.toml` is picked up.
fn trail_cmd(bin: &Path, work: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("TRAIL_") {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(work);
    cmd
}

fn start_server(bin: &Path, data: &Path, log: &Path) -> anyhow::Result<(Child, String)> {
    let work = data.parent().context("data directory has no parent")?;
    let mut child = trail_cmd(bin, work)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("TRAIL_ADMIN_PASSWORD", PASSWORD)
        .env("TRAIL_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .with_context(|| {
            format!("cannot start {} (build it with cargo build --release -p trail)", bin.display())
        })?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let base = loop {
        let line = lines.next().with_context(|| format!("trail serve exited; see {}", log.display()))??;
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    Ok((child, base))
}

/// SIGTERM (a graceful stop, as an operator would), then SIGKILL if it does not go within a minute.
fn stop_server(child: &mut Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    for _ in 0..600 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn rss_mb(pid: u32) -> f64 {
    crate::memory_kib(pid, "VmRSS:") as f64 / 1024.0
}

/// The store's memory as the server reports it (`trail_store_memory_bytes`, summed over parts), in MB.
async fn store_mb(http: &reqwest::Client, base: &str) -> f64 {
    let Ok(r) = http.get(format!("{base}/metrics")).send().await else { return 0.0 };
    store_memory_mb(&r.text().await.unwrap_or_default())
}

/// `trail_store_memory_bytes` in a `/metrics` text, every part summed, in MB.
fn store_memory_mb(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("trail_store_memory_bytes{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>()
        / (1024.0 * 1024.0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// The server's descriptors with no client connected: load stopped, clients dropped, connections
/// given a moment to close.
async fn idle_fds(pid: u32) -> usize {
    tokio::time::sleep(Duration::from_secs(2)).await;
    fds(pid)
}

type Verdicts = Vec<(String, bool)>;

async fn soak(o: &Options, base: &str, pid: u32) -> anyhow::Result<(Vec<Sample>, Verdicts)> {
    let targets = setup(base).await?;
    let warmup = if o.ci { 10 } else { (o.secs / 10).clamp(10, 120) };
    eprintln!("soak: warm-up {warmup} s at {} events/s", o.rate);
    let shared = Arc::new(Shared::default());
    run_load(o, base, &targets, &shared, Duration::from_secs(warmup), pid, &mut Vec::new()).await?;
    let fds_before = idle_fds(pid).await;
    let warm_errors = shared.total_errors.load(Ordering::Relaxed);

    eprintln!("soak: {} s at {} events/s, sampling every {} s", o.secs, o.rate, o.sample_secs);
    let mut samples = Vec::new();
    run_load(o, base, &targets, &shared, Duration::from_secs(o.secs), pid, &mut samples).await?;
    let fds_after = idle_fds(pid).await;
    let errors = shared.total_errors.load(Ordering::Relaxed);

    let mut verdicts: Verdicts = vec![
        (format!("zero errors (warm-up {warm_errors}, run {})", errors - warm_errors), errors == 0),
        (
            format!(
                "no descriptor growth: {fds_before} open with no client after warm-up, {fds_after} at the end"
            ),
            fds_after <= fds_before,
        ),
    ];
    verdicts.push(rss_verdict(&samples, o.ci));
    Ok((samples, verdicts))
}

/// The RSS verdict: growth over the second half of the run beyond what the store's memory grew
/// (bounded caches filling, id filters growing with the events by design), under 10%. RSS at the
/// start and at the end of the second half are each the mean of three samples, so one noisy reading
/// does not decide. With `ci` (a one-minute run) the line is printed, not judged.
fn rss_verdict(samples: &[Sample], ci: bool) -> (String, bool) {
    let mean = |around: &[Sample], of: fn(&Sample) -> f64| {
        around.iter().map(of).sum::<f64>() / around.len().max(1) as f64
    };
    if samples.len() < 6 {
        return ("RSS growth: too few samples to judge (need 6)".into(), ci);
    }
    let half = samples.len() / 2;
    let (at_mid, at_end) = (&samples[half - 1..half + 2], &samples[samples.len() - 3..]);
    let (mid, end) = (mean(at_mid, |s| s.rss_mb), mean(at_end, |s| s.rss_mb));
    let store = mean(at_end, |s| s.store_mb) - mean(at_mid, |s| s.store_mb);
    let raw = (end - mid) / mid.max(1.0) * 100.0;
    let growth = (end - mid - store) / mid.max(1.0) * 100.0;
    let line = format!(
        "RSS growth over the second half {raw:+.1}% ({mid:.0} → {end:.0} MB); the store's caches and id \
         filters {store:+.0} MB of it; the rest {growth:+.1}%"
    );
    match ci {
        true => (format!("{line} (not judged with --ci)"), true),
        false => (format!("{line}, under 10%"), growth < 10.0),
    }
}

/// Signs in as the bootstrap admin and makes the orgs and an API key for each.
async fn setup(base: &str) -> anyhow::Result<Vec<Target>> {
    let anon = trail_client::Client::new(base);
    let admin = anon.login("admin@localhost", PASSWORD).await.context("sign-in failed")?;
    let mut targets = Vec::new();
    for (n, org) in ORGS.iter().enumerate() {
        if *org != "default" {
            admin.create_org(org, org).await?;
        }
        let k = admin.create_api_key(org, "soak", &["events:write", "events:read"]).await?;
        let key = k["secret"].as_str().context("no key secret")?.to_string();
        let event = |i: usize| {
            let actions = ["component.deployed", "project.updated", "user.logged_in", "api_proxy.created"];
            json!({
                "actor": {"id": format!("soak-user-{}", i % 50), "ip": "203.0.113.7"},
                "action": actions[i % actions.len()],
                "target": {"type": "component", "id": format!("c-{}", i % 200)},
                "outcome": if i.is_multiple_of(10) { "failure" } else { "success" },
                "info": {"request_id": format!("req-{n}{i:06x}"), "n": i},
            })
        };
        let batches = (0..4)
            .map(|b| {
                let events: Vec<Value> = (0..BATCH).map(|i| event(b * BATCH + i)).collect();
                serde_json::to_vec(&json!({ "events": events }))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let singles = (0..64).map(|i| serde_json::to_vec(&event(i))).collect::<Result<Vec<_>, _>>()?;
        targets.push(Target {
            org: org.to_string(),
            key,
            batches: Arc::new(batches),
            singles: Arc::new(singles),
        });
    }
    Ok(targets)
}

/// Runs the mix for `duration` with fresh HTTP clients (dropped at the end, so their connections
/// close), sampling into `samples`.
async fn run_load(
    o: &Options,
    base: &str,
    targets: &[Target],
    shared: &Arc<Shared>,
    duration: Duration,
    pid: u32,
    samples: &mut Vec<Sample>,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?;
    shared.stop.store(false, Ordering::Relaxed);
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(ingest(
        http.clone(),
        base.to_string(),
        targets.to_vec(),
        o.rate,
        shared.clone(),
    )));
    for q in 0..2 {
        tasks.push(tokio::spawn(queries(
            http.clone(),
            base.to_string(),
            targets.to_vec(),
            q,
            shared.clone(),
        )));
    }
    let export_every = Duration::from_secs(if o.ci { 15 } else { 60 });
    tasks.push(tokio::spawn(exports(
        http.clone(),
        base.to_string(),
        targets[0].clone(),
        export_every,
        shared.clone(),
    )));

    let started = Instant::now();
    let mut next = started;
    let every = Duration::from_secs(o.sample_secs);
    while started.elapsed() < duration {
        next += every;
        tokio::time::sleep_until(next.into()).await;
        let w = shared.window.lock().map(|mut w| std::mem::take(&mut *w)).unwrap_or_default();
        let p99 = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            crate::percentile(&v, 0.99)
        };
        let s = Sample {
            t: started.elapsed().as_secs_f64(),
            events_per_s: w.events as f64 / every.as_secs_f64(),
            batch_max: w.batch_ms.iter().copied().fold(0.0, f64::max),
            batch_p99: p99(w.batch_ms),
            single_p99: p99(w.single_ms),
            query_p99: p99(w.query_ms),
            exports: w.exports,
            rss_mb: rss_mb(pid),
            store_mb: store_mb(&http, base).await,
            fds: fds(pid),
            errors: w.errors,
        };
        eprintln!(
            "t={:>6.0}s {:>8.0} ev/s  batch p99 {:>7.1} ms max {:>7.1} ms  single p99 {:>6.1} ms  query p99 {:>6.1} ms  \
             exports {}  rss {:>6.1} MB (store {:>5.1})  fds {:>3}  errors {}",
            s.t,
            s.events_per_s,
            s.batch_p99,
            s.batch_max,
            s.single_p99,
            s.query_p99,
            s.exports,
            s.rss_mb,
            s.store_mb,
            s.fds,
            s.errors
        );
        if let Some((ms, asked)) = w.slowest_query.filter(|(ms, _)| *ms > 1000.0) {
            eprintln!("         slowest query {ms:.0} ms: {asked}");
        }
        samples.push(s);
    }
    shared.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    Ok(())
}

/// Batches and singles at `rate` events/s in total (singles are 2% of events, at most 200 requests/s),
/// paced in 100 ms ticks with at most [`IN_FLIGHT`] requests outstanding.
async fn ingest(http: reqwest::Client, base: String, targets: Vec<Target>, rate: u64, shared: Arc<Shared>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let single_rate = (rate as f64 / 50.0).min(200.0);
    let (mut budget, mut single_budget) = (0.0f64, 0.0f64);
    let mut last = Instant::now();
    let mut n = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !shared.stopped() {
        tick.tick().await;
        let dt = last.elapsed().as_secs_f64();
        last = Instant::now();
        // At most a second's worth of backlog: a slow server lowers the rate rather than getting bursts.
        single_budget = (single_budget + single_rate * dt).min(single_rate.max(1.0));
        budget = (budget + (rate as f64 - single_rate) * dt).min((rate as f64).max(BATCH as f64));
        let mut sends: Vec<bool> = Vec::new();
        while single_budget >= 1.0 {
            single_budget -= 1.0;
            sends.push(true);
        }
        while budget >= BATCH as f64 {
            budget -= BATCH as f64;
            sends.push(false);
        }
        for single in sends {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            n += 1;
            let t = &targets[n % targets.len()];
            let (body, size) = if single {
                (t.singles[n % t.singles.len()].clone(), 1)
            } else {
                (t.batches[n % t.batches.len()].clone(), BATCH)
            };
            let (http, shared, url, key) =
                (http.clone(), shared.clone(), format!("{base}/v1/orgs/{}/events", t.org), t.key.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let r = http
                    .post(url)
                    .bearer_auth(key)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let outcome = match r {
                    Ok(r) if r.status().is_success() => r.json::<Value>().await.map_err(|e| e.to_string()),
                    Ok(r) => {
                        Err(format!("ingest answered {}: {}", r.status(), r.text().await.unwrap_or_default()))
                    }
                    Err(e) => Err(format!("ingest failed: {e}")),
                };
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                match outcome {
                    Ok(v) => {
                        let results = v["results"].as_array().map_or(&[][..], Vec::as_slice);
                        let created = results.iter().filter(|r| r["status"] == "created").count();
                        if created != size || results.len() != size {
                            shared.error(format!("{size} events sent, {created} created: {v:.200}"));
                        }
                        shared.record(|w| {
                            w.events += created as u64;
                            if single { w.single_ms.push(ms) } else { w.batch_ms.push(ms) }
                        });
                    }
                    Err(e) => {
                        shared.error(e);
                        // A refused or timed-out request is still an answer the client waited for.
                        shared.record(|w| if single { w.single_ms.push(ms) } else { w.batch_ms.push(ms) });
                    }
                }
                drop(permit);
            });
        }
    }
    // Wait for what is in flight.
    let _ = permits.acquire_many(IN_FLIGHT as u32).await;
}

/// One querier: about ten requests a second, cycling through the query API's shapes.
async fn queries(
    http: reqwest::Client,
    base: String,
    targets: Vec<Target>,
    seed: usize,
    shared: Arc<Shared>,
) {
    let mut ids: VecDeque<(usize, String)> = VecDeque::new();
    // The next page of an earlier query: its org, and its parameters with the cursor (a cursor is
    // only valid with the filters it was issued for).
    let mut next_page: Option<(usize, Vec<(&str, String)>)> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = seed;
    while !shared.stopped() {
        tick.tick().await;
        n += 1;
        let mut oi = n % targets.len();
        let (path, params): (String, Vec<(&str, String)>) = match n % 7 {
            0 => ("/events".into(), vec![("limit", "50".into())]),
            1 => ("/events".into(), vec![("actor", format!("soak-user-{}", n % 50)), ("limit", "50".into())]),
            2 => ("/events".into(), vec![("q", format!("req-{oi}{:02x}", n % 256)), ("limit", "20".into())]),
            3 => match next_page.take() {
                Some((ci, params)) => {
                    oi = ci;
                    ("/events".into(), params)
                }
                None => ("/events".into(), vec![("outcome", "failure".into())]),
            },
            4 => match ids.pop_front() {
                Some((ii, id)) => {
                    oi = ii;
                    (format!("/events/{id}"), vec![])
                }
                None => ("/events".into(), vec![]),
            },
            5 => {
                ("/events/histogram".into(), vec![("from", format_rfc3339(now() - 3600 * MICROS_PER_SECOND))])
            }
            _ => ("/events".into(), vec![("action", "component.*".into()), ("limit", "100".into())]),
        };
        let t = &targets[oi];
        let url = format!("{base}/v1/orgs/{}{path}", t.org);
        let key = t.key.clone();
        let started = Instant::now();
        let r = http.get(&url).query(&params).bearer_auth(key).send().await;
        let asked = format!("{url}?{}", serde_urlencoded::to_string(&params).unwrap_or_default());
        let v = match r {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.map_err(|e| e.to_string()),
            Ok(r) => Err(format!("{asked} answered {}: {}", r.status(), r.text().await.unwrap_or_default())),
            Err(e) => Err(format!("{asked} failed: {e}")),
        };
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        shared.record(|w| {
            if w.slowest_query.as_ref().is_none_or(|(slowest, _)| ms > *slowest) {
                w.slowest_query = Some((ms, asked));
            }
        });
        match v {
            Ok(v) => {
                shared.record(|w| w.query_ms.push(ms));
                if let Some(c) = v["next_cursor"].as_str() {
                    let mut p: Vec<(&str, String)> =
                        params.into_iter().filter(|(k, _)| *k != "cursor").collect();
                    p.push(("cursor", c.to_string()));
                    next_page = Some((oi, p));
                }
                if let Some(id) = v["events"][0]["id"].as_str()
                    && ids.len() < 100
                {
                    ids.push_back((oi, id.to_string()));
                }
            }
            Err(e) => shared.error(e),
        }
    }
}

/// An export of one actor's events over an earlier minute, every `every`: requested, waited for,
/// downloaded, its size checked.
async fn exports(http: reqwest::Client, base: String, t: Target, every: Duration, shared: Arc<Shared>) {
    let mut n = 0u64;
    let mut next = Instant::now() + every / 2;
    while !shared.stopped() {
        if Instant::now() < next {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        next += every;
        n += 1;
        let to = now() - 30 * MICROS_PER_SECOND;
        let body = json!({"name": format!("soak {n}"), "format": if n.is_multiple_of(2) { "csv" } else { "json" },
            "filters": {"from": format_rfc3339(to - 60 * MICROS_PER_SECOND), "to": format_rfc3339(to),
                        "actor": format!("soak-user-{}", n % 50)}});
        match export_once(&http, &base, &t, &body).await {
            Ok(()) => shared.record(|w| w.exports += 1),
            Err(e) => shared.error(format!("export {n}: {e:#}")),
        }
    }
}

async fn export_once(http: &reqwest::Client, base: &str, t: &Target, body: &Value) -> anyhow::Result<()> {
    let url = format!("{base}/v1/orgs/{}/exports", t.org);
    let r = http.post(&url).bearer_auth(&t.key).json(body).send().await?;
    if !r.status().is_success() {
        bail!("request answered {}: {}", r.status(), r.text().await?);
    }
    let created: Value = r.json().await?;
    let id = created["id"].as_str().context("no export id")?.to_string();
    let deadline = Instant::now() + Duration::from_secs(300);
    let done = loop {
        let e: Value = http.get(format!("{url}/{id}")).bearer_auth(&t.key).send().await?.json().await?;
        match e["status"].as_str() {
            Some("completed") => break e,
            Some("failed" | "expired") => bail!("export ended {}", e["status"]),
            _ if Instant::now() > deadline => bail!("export did not finish within 5 minutes"),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let r = http.get(format!("{url}/{id}/download")).bearer_auth(&t.key).send().await?;
    if !r.status().is_success() {
        bail!("download answered {}", r.status());
    }
    let bytes = r.bytes().await?;
    if Some(bytes.len() as u64) != done["size_bytes"].as_u64() {
        bail!("downloaded {} bytes, the export says {}", bytes.len(), done["size_bytes"]);
    }
    Ok(())
}

fn report(o: &Options, samples: &[Sample], verdicts: &[(String, bool)]) -> anyhow::Result<()> {
    let csv_path = o.out.clone().unwrap_or_else(|| o.work.join("soak.csv"));
    let mut csv = std::io::BufWriter::new(std::fs::File::create(&csv_path)?);
    writeln!(
        csv,
        "t_s,events_per_s,batch_p99_ms,batch_max_ms,single_p99_ms,query_p99_ms,exports,rss_mb,store_mb,fds,errors"
    )?;
    let mut md = String::new();
    md.push_str(&format!(
        "## Soak: {} s at {} events/s target ({} orgs, batches of {BATCH} + singles, queries, exports)\n\n",
        o.secs,
        o.rate,
        ORGS.len()
    ));
    md.push_str("| t (s) | events/s | batch p99 ms | batch max ms | single p99 ms | query p99 ms | exports | RSS MB | store MB | fds | errors |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for s in samples {
        let row = [
            format!("{:.0}", s.t),
            format!("{:.0}", s.events_per_s),
            format!("{:.1}", s.batch_p99),
            format!("{:.1}", s.batch_max),
            format!("{:.1}", s.single_p99),
            format!("{:.1}", s.query_p99),
            s.exports.to_string(),
            format!("{:.1}", s.rss_mb),
            format!("{:.1}", s.store_mb),
            s.fds.to_string(),
            s.errors.to_string(),
        ];
        writeln!(csv, "{}", row.join(","))?;
        md.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    csv.flush()?;
    // Measured, not judged (issue #16 asks for the slowest batch within 1 s at half the maximum rate).
    if let Some(slowest) = samples.iter().max_by(|a, b| a.batch_max.total_cmp(&b.batch_max)) {
        let below = samples.iter().filter(|s| s.events_per_s < o.rate as f64 * 0.9).count();
        md.push_str(&format!(
            "\nSlowest batch: {:.0} ms (at {:.0} s); samples below 90% of the target rate: {below} of {}.\n",
            slowest.batch_max,
            slowest.t,
            samples.len()
        ));
    }
    md.push_str("\nVerdict:\n\n");
    for (what, ok) in verdicts {
        md.push_str(&format!("- {} {what}\n", if *ok { "PASS" } else { "FAIL" }));
    }
    let md_path = csv_path.with_extension("md");
    std::fs::write(&md_path, &md)?;
    print!("{md}");
    eprintln!("soak: samples in {} and {}", csv_path.display(), md_path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples whose RSS and store memory go linearly from `(rss0, store0)` to `(rss1, store1)`.
    fn run(n: usize, (rss0, rss1): (f64, f64), (store0, store1): (f64, f64)) -> Vec<Sample> {
        (0..n)
            .map(|i| {
                let f = i as f64 / (n - 1) as f64;
                Sample {
                    t: i as f64 * 10.0,
                    events_per_s: 0.0,
                    batch_p99: 0.0,
                    batch_max: 0.0,
                    single_p99: 0.0,
                    query_p99: 0.0,
                    exports: 0,
                    rss_mb: rss0 + (rss1 - rss0) * f,
                    store_mb: store0 + (store1 - store0) * f,
                    fds: 0,
                    errors: 0,
                }
            })
            .collect()
    }

    #[test]
    fn rss_growth_is_judged_beyond_the_stores_memory() {
        // Flat: passes.
        let (line, ok) = rss_verdict(&run(20, (150.0, 150.0), (20.0, 20.0)), false);
        assert!(ok, "{line}");
        // 100 → 200 MB over the run: the second half grows ~30%, 15 MB of it the store's: fails.
        let (line, ok) = rss_verdict(&run(21, (100.0, 200.0), (20.0, 30.0)), false);
        assert!(!ok && line.contains("the rest +"), "{line}");
        // The same growth, all of it the store's memory: passes, and says how much was the store's.
        let (line, ok) = rss_verdict(&run(21, (100.0, 200.0), (20.0, 120.0)), false);
        assert!(ok, "{line}");
        assert!(
            line.contains("+30.0% (150 → 195 MB); the store's caches and id filters +45 MB of it"),
            "{line}"
        );
        // A one-minute CI run prints the line without judging it.
        let (line, ok) = rss_verdict(&run(21, (100.0, 200.0), (20.0, 30.0)), true);
        assert!(ok && line.ends_with("(not judged with --ci)"), "{line}");
        // Too few samples: fails, unless in CI.
        assert!(!rss_verdict(&run(5, (100.0, 100.0), (0.0, 0.0)), false).1);
        assert!(rss_verdict(&run(5, (100.0, 100.0), (0.0, 0.0)), true).1);
    }

    #[test]
    fn the_stores_memory_is_every_part_of_its_family() {
        let metrics = "# HELP trail_store_memory_bytes Memory the store holds.\n\
                       # TYPE trail_store_memory_bytes gauge\n\
                       trail_store_memory_bytes{part=\"sqlite\"} 2097152\n\
                       trail_store_memory_bytes{part=\"id_filters\"} 1048576\n\
                       trail_store_memory_bytes_other 99999999\n\
                       process_resident_memory_bytes 123456789\n";
        assert_eq!(store_memory_mb(metrics), 3.0);
        assert_eq!(store_memory_mb("process_resident_memory_bytes 1\n"), 0.0, "a store that reports none");
    }
}
