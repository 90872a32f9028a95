//! `trail import`: loads `audit.log` files (every line format of the integration runtime, rolled and
//! compressed ones too) and NDJSON events into an org, through a server or offline into a data
//! directory. Ids derive from the file content, so importing a file again stores nothing new.
//! Lines that are not events are reported with file and line, skipped and counted, and make the
//! exit status 2.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use sha2::Digest;
use trail_model::auditlog;
use trail_model::time::{Micros, format_rfc3339, now};

use crate::ConfigArgs;

#[derive(Args, Debug)]
pub struct ImportArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Import through a running server instead of into the data directory.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// With --server: an API key with events:write (also TRAIL_TOKEN).
    #[arg(long, visible_alias = "key", env = "TRAIL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The organization to import into.
    #[arg(long)]
    org: String,
    /// The zone the files' timestamps were written in (IANA name, e.g. Asia/Kolkata); default UTC.
    /// Lines that carry their own offset ignore it.
    #[arg(long, default_value = "UTC")]
    time_zone: String,
    /// audit.log files (plain, .gz or .zst) or NDJSON files of events.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// Events sent per request or append.
const BATCH: usize = 500;

/// One event ready to send, and where it came from.
struct Pending {
    line: usize,
    event: Value,
}

/// Counts for the summary.
#[derive(Debug, Default)]
struct Tally {
    lines: u64,
    created: u64,
    duplicate: u64,
    skipped: u64,
}

/// Where events go.
enum Target {
    Server(trail_client::Client),
    Store { store: std::sync::Arc<dyn trail_store::Store>, oldest: Micros },
}

pub async fn run(a: ImportArgs) -> anyhow::Result<std::process::ExitCode> {
    let zone = jiff::tz::TimeZone::get(&a.time_zone)
        .with_context(|| format!("unknown time zone {:?}", a.time_zone))?;
    let target = match &a.server {
        Some(url) => {
            let token = a
                .token
                .as_deref()
                .context("--server needs --token (or TRAIL_TOKEN): an API key with events:write")?;
            Target::Server(trail_client::Client::new(url).with_token(token))
        }
        None => {
            let s = crate::settings(&a.config, None)?;
            let store = crate::open_store(&s)?;
            if store.org(&a.org).await?.is_none() {
                bail!("organization {} does not exist", a.org);
            }
            let policy =
                trail_server::retention::Policy::of(&s.retention, store.org_settings(&a.org).await?.as_ref());
            Target::Store { oldest: policy.hot_start(now()), store }
        }
    };
    let total_bytes: u64 = a.files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    let mut progress = Progress { tty: std::io::stderr().is_terminal(), total: total_bytes, done: 0 };
    let mut all = Tally::default();
    for file in &a.files {
        let t = import_file(file, &a.org, &zone, &target, &mut progress).await?;
        progress.clear();
        println!(
            "{}: {} lines, {} imported, {} already present, {} skipped",
            file.display(),
            t.lines,
            t.created,
            t.duplicate,
            t.skipped
        );
        all.lines += t.lines;
        all.created += t.created;
        all.duplicate += t.duplicate;
        all.skipped += t.skipped;
    }
    if a.files.len() > 1 {
        println!(
            "total: {} lines, {} imported, {} already present, {} skipped",
            all.lines, all.created, all.duplicate, all.skipped
        );
    }
    Ok(if all.skipped > 0 { std::process::ExitCode::from(2) } else { std::process::ExitCode::SUCCESS })
}

struct Progress {
    tty: bool,
    total: u64,
    done: u64,
}

impl Progress {
    fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        if self.tty && self.total > 0 {
            let pct = (self.done as f64 / self.total as f64 * 100.0).min(100.0);
            let filled = (pct / 5.0) as usize;
            eprint!("\r[{}{}] {pct:5.1}% ", "#".repeat(filled), " ".repeat(20 - filled.min(20)));
            let _ = std::io::stderr().flush();
        }
    }

    fn clear(&self) {
        if self.tty {
            eprint!("\r{}\r", " ".repeat(32));
        }
    }
}

/// Opens a file, decompressing `.gz` and `.zst` (rolled audit logs).
fn open(path: &Path) -> anyhow::Result<Box<dyn BufRead>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path.to_string_lossy();
    let r: Box<dyn Read> = if name.ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(f))
    } else if name.ends_with(".zst") {
        Box::new(
            ruzstd::decoding::StreamingDecoder::new(f)
                .map_err(|e| anyhow::anyhow!("{}: not zstd: {e}", path.display()))?,
        )
    } else {
        Box::new(f)
    };
    Ok(Box::new(std::io::BufReader::with_capacity(1 << 16, r)))
}

/// Fields the API adds to an event (an NDJSON export) that an ingested event does not carry.
const OUTPUT_ONLY: &[&str] =
    &["org", "seq", "received_at", "leaf_hash", "action_label", "proof", "proof_pending"];

/// One line to an event in ingest form, or why it is not one. `occurrence` counts earlier identical lines;
/// it is asked only for a line whose event carries no id of its own (its id is derived from the line).
fn event_of(
    line: &str,
    occurrence: &mut dyn FnMut() -> u32,
    zone: &jiff::tz::TimeZone,
) -> Result<Option<Value>, String> {
    let trimmed = line.trim_start_matches('\u{feff}').trim();
    if trimmed.starts_with('{') {
        let mut v: Value = serde_json::from_str(trimmed).map_err(|e| format!("not valid JSON: {e}"))?;
        let Some(m) = v.as_object_mut() else { return Err("not a JSON object".into()) };
        OUTPUT_ONLY.iter().for_each(|k| {
            m.remove(*k);
        });
        if !m.contains_key("id") {
            m.insert("id".into(), json!(auditlog::derive_id(trimmed, occurrence())));
        }
        return Ok(Some(v));
    }
    let Some(p) = auditlog::parse_line(line).map_err(|e| e.to_string())? else { return Ok(None) };
    let time = match p.absolute_time {
        Some(t) => t,
        None => {
            let civil = jiff::civil::DateTime::new(
                p.local_time.year() as i16,
                u8::from(p.local_time.month()) as i8,
                p.local_time.day() as i8,
                p.local_time.hour() as i8,
                p.local_time.minute() as i8,
                p.local_time.second() as i8,
                (p.local_time.millisecond() as i32) * 1_000_000,
            )
            .map_err(|e| format!("bad timestamp: {e}"))?;
            let ts = zone
                .to_ambiguous_zoned(civil)
                .compatible()
                .map_err(|e| format!("bad timestamp: {e}"))?
                .timestamp();
            ts.as_microsecond()
        }
    };
    let mut event = p.event;
    event["time"] = json!(format_rfc3339(time));
    event["id"] = json!(p.event_id.unwrap_or_else(|| auditlog::derive_id(line, occurrence())));
    Ok(Some(event))
}

async fn import_file(
    path: &Path,
    org: &str,
    zone: &jiff::tz::TimeZone,
    target: &Target,
    progress: &mut Progress,
) -> anyhow::Result<Tally> {
    let mut reader = open(path)?;
    let mut tally = Tally::default();
    // Lines seen so far whose id is derived, by a digest of the line: keyed by the lines themselves,
    // a 10M-line file held 5.3 GB (and lines with their own id need no count at all).
    let mut seen: std::collections::HashMap<[u8; 16], u32> = Default::default();
    let mut batch: Vec<Pending> = Vec::with_capacity(BATCH);
    let mut buf = Vec::new();
    let mut n = 0usize;
    loop {
        buf.clear();
        let read =
            reader.read_until(b'\n', &mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        if read == 0 {
            break;
        }
        n += 1;
        progress.advance(read as u64);
        let skip = |tally: &mut Tally, why: &str| {
            eprintln!("{}:{n}: skipped: {why}", path.display());
            tally.skipped += 1;
        };
        let Ok(line) = std::str::from_utf8(&buf) else {
            tally.lines += 1;
            skip(&mut tally, "not UTF-8");
            continue;
        };
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        tally.lines += 1;
        let mut occurrence = || {
            let digest: [u8; 32] = sha2::Sha256::digest(line.as_bytes()).into();
            let c = seen.entry(digest[..16].try_into().unwrap_or_default()).or_insert(0);
            *c += 1;
            *c - 1
        };
        match event_of(line, &mut occurrence, zone) {
            Ok(Some(event)) => batch.push(Pending { line: n, event }),
            Ok(None) => tally.lines -= 1,
            Err(why) => skip(&mut tally, &why),
        }
        if batch.len() >= BATCH {
            send(path, org, target, std::mem::take(&mut batch), &mut tally).await?;
        }
    }
    if !batch.is_empty() {
        send(path, org, target, batch, &mut tally).await?;
    }
    Ok(tally)
}

async fn send(
    path: &Path,
    org: &str,
    target: &Target,
    batch: Vec<Pending>,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    match target {
        Target::Server(client) => {
            let events: Vec<Value> = batch.iter().map(|p| p.event.clone()).collect();
            let r = client.ingest_batch(org, &events).await.context("the server refused the batch")?;
            for (i, res) in r.results.iter().enumerate() {
                match res.status.as_str() {
                    "created" => tally.created += 1,
                    "duplicate" => tally.duplicate += 1,
                    _ => {
                        let line = batch.get(res.index.unwrap_or(i)).map_or(0, |p| p.line);
                        let why =
                            res.error.as_ref().and_then(|e| e["message"].as_str()).unwrap_or("rejected");
                        let field = res.error.as_ref().and_then(|e| e["field"].as_str()).unwrap_or("");
                        eprintln!("{}:{line}: skipped: {field} {why}", path.display());
                        tally.skipped += 1;
                    }
                }
            }
        }
        Target::Store { store, oldest } => {
            let bounds = trail_model::event::TimeBounds { now: now(), oldest: *oldest };
            let mut valid = Vec::with_capacity(batch.len());
            for p in &batch {
                match trail_model::event::admit_event(&p.event, bounds) {
                    Ok(e) => valid.push(e),
                    Err(e) => {
                        eprintln!("{}:{}: skipped: {e}", path.display(), p.line);
                        tally.skipped += 1;
                    }
                }
            }
            if !valid.is_empty() {
                for a in store.append(org, valid, now()).await? {
                    match a {
                        trail_store::Appended::Created { .. } => tally.created += 1,
                        trail_store::Appended::Duplicate { .. } => tally.duplicate += 1,
                        trail_store::Appended::Conflict { id, seq } => {
                            eprintln!(
                                "{}: skipped: id {id} is stored at seq {seq} with different content",
                                path.display()
                            );
                            tally.skipped += 1;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
