//! The file sink (PRODUCT.md §9): every stored event is also written to `audit.log` in the
//! integration runtime's format, with log4j2-style rolling. It never decides what is stored: it only
//! copies what the store has acknowledged, and a failing disk here never fails an ingest.
//!
//! The sink follows each org's log from a persisted position (`.<base>.position` beside the file)
//! with [`follow`], the reader the streaming destinations use: it reads events after the position in
//! `seq` order, appends their lines in one write, fsyncs, then saves
//! the position together with the active file's identity and length. After a crash, lines written
//! after the last saved position are cut off again (the active file is opened and truncated to the
//! saved length, or emptied when a roll or reopen happened since: [`RollingFile::cut_to`], as after a
//! failed cycle), so restarting writes each event exactly once.
//! Errors (disk full, permissions) are reported in `/readyz`, metrics and the log, and the sink retries
//! from the same position until it can write. A failed cycle's lines are cut off through the open
//! file, wherever it has been moved, and a cycle writes only to the file at `audit.log`'s path
//! ([`RollingFile::follow_path`]): a file moved away without a SIGHUP, or a directory gone, never
//! receives a retry's lines a second time.

pub mod rolling;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use trail_model::auditlog;
use trail_store::Store;

use crate::settings::FileSinkSettings;
use crate::stream::follow::{self, Entry};
use rolling::{Clock, Compress, RollingConfig, RollingFile};

/// Most bytes of lines written per write-fsync-save cycle (and never more than half of `max_size`),
/// so a size roll happens between cycles, never inside one.
const MAX_CYCLE_BYTES: usize = 1 << 20;

/// What the sink reports to `/readyz` and `/metrics`.
#[derive(Debug, Default)]
pub struct SinkStatus {
    /// The last write failed; cleared by the next success.
    error: Mutex<Option<String>>,
    pub lines: AtomicU64,
    pub errors: AtomicU64,
    /// Events stored but not yet written, as of the last cycle.
    pub lag: AtomicU64,
    reopen: AtomicBool,
}

impl SinkStatus {
    pub fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }

    /// Asks the sink to close and reopen `audit.log` by path before its next write (SIGHUP).
    pub fn request_reopen(&self) {
        self.reopen.store(true, Ordering::SeqCst);
    }

    fn set_error(&self, e: Option<String>) {
        if let Ok(mut slot) = self.error.lock() {
            *slot = e;
        }
    }
}

/// How lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The runtime's `[time]  INFO {AUDIT_LOG} - {json}`.
    Runtime,
    /// One full event per line, as the API returns it.
    Json,
}

/// The sink's resolved configuration.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub rolling: RollingConfig,
    pub format: Format,
    /// Sign-ins, sign-outs and failed sign-ins in the runtime's older line shape (`sign_in_lines`).
    pub carbon_sign_ins: bool,
    /// On first start, write every event already stored (else start at the current end of each log).
    pub from_start: bool,
}

impl SinkConfig {
    /// Resolves `[sinks.file]`; `None` when the sink is off (no `path`).
    pub fn from_settings(s: &FileSinkSettings) -> Result<Option<Self>, String> {
        if s.path.trim().is_empty() {
            return Ok(None);
        }
        let path = PathBuf::from(s.path.trim());
        let (dir, base) = match (path.parent(), path.file_stem().and_then(|b| b.to_str())) {
            (Some(d), Some(b)) if path.extension().is_some_and(|e| e == "log") => {
                (d.to_path_buf(), b.to_string())
            }
            _ => {
                return Err(format!(
                    "sinks.file.path must name a .log file, e.g. /var/log/trail/audit.log, not {:?}",
                    s.path
                ));
            }
        };
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        let mut rolling = RollingConfig::new(dir);
        rolling.base = base;
        rolling.max_size = parse_size(&s.max_size)?;
        rolling.max_files = s.max_files;
        rolling.compress = match s.compress.as_str() {
            "" | "none" => Compress::None,
            "gzip" | "gz" => Compress::Gzip,
            "zstd" | "zst" => Compress::Zstd,
            other => return Err(format!("sinks.file.compress must be none, gzip or zstd, not {other:?}")),
        };
        if !s.time_zone.is_empty() {
            rolling.time_zone = jiff::tz::TimeZone::get(&s.time_zone).map_err(|e| {
                format!("sinks.file.time_zone {:?} is not a known time zone: {e}", s.time_zone)
            })?;
        }
        let format = match s.format.as_str() {
            "" | "runtime" => Format::Runtime,
            "json" => Format::Json,
            other => return Err(format!("sinks.file.format must be runtime or json, not {other:?}")),
        };
        let carbon_sign_ins = match s.sign_in_lines.as_str() {
            "" | "audit_log" => false,
            "carbon" if format == Format::Runtime => true,
            "carbon" => return Err("sinks.file.sign_in_lines = \"carbon\" needs format = \"runtime\"".into()),
            other => {
                return Err(format!("sinks.file.sign_in_lines must be audit_log or carbon, not {other:?}"));
            }
        };
        Ok(Some(Self { rolling, format, carbon_sign_ins, from_start: s.from_start }))
    }
}

/// `10MB`, `512KB`, `1GB` or a number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("sinks.file.max_size {s:?} is not a size like 10MB"))?;
    let mult = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" | "K" => 1 << 10,
        "MB" | "M" => 1 << 20,
        "GB" | "G" => 1 << 30,
        _ => return Err(format!("sinks.file.max_size {s:?}: use B, KB, MB or GB")),
    };
    match n.checked_mul(mult) {
        Some(v) if v >= 1024 => Ok(v),
        _ => Err(format!("sinks.file.max_size {s:?} must be at least 1KB")),
    }
}

/// The persisted position: the next seq to write per org, and the active file as it was then.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    version: u32,
    /// (device, inode) of the active file when saved.
    file_id: (u64, u64),
    file_len: u64,
    orgs: BTreeMap<String, u64>,
}

fn position_path(cfg: &RollingConfig) -> PathBuf {
    cfg.dir.join(format!(".{}.position", cfg.base))
}

impl Position {
    const VERSION: u32 = 1;

    /// Reads a position file, refusing a version this release does not know. Every later release must
    /// read `tests/golden/sink-position-v1.json`.
    fn parse(bytes: &[u8]) -> Result<Self, trail_model::export::FormatError> {
        trail_model::export::parse_versioned("sink position file", bytes, Self::VERSION)
    }
}

fn load_position(cfg: &RollingConfig) -> io::Result<Option<Position>> {
    match std::fs::read(position_path(cfg)) {
        Ok(b) => Position::parse(&b).map(Some).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", position_path(cfg).display()))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn save_position(cfg: &RollingConfig, p: &Position) -> io::Result<()> {
    let path = position_path(cfg);
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec(p).map_err(io::Error::other)?;
    {
        let mut f = std::fs::File::create(&tmp)?;
        io::Write::write_all(&mut f, &bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(&cfg.dir)?.sync_all()
}

/// Starts the sink on the current runtime; the returned status is what `/readyz` and `/metrics` show.
pub fn start(
    store: Arc<dyn Store>,
    cfg: SinkConfig,
    clock: Arc<dyn Clock>,
) -> io::Result<(Arc<SinkStatus>, tokio::task::JoinHandle<()>)> {
    let position = load_position(&cfg.rolling)?;
    let mut file = RollingFile::open(cfg.rolling.clone(), clock)?;
    // Lines written after the saved position are cut off (see the module doc), the same way a failed
    // cycle's are.
    if let Some(p) = &position {
        file.cut_to(p.file_id, p.file_len)?;
    }
    let (dev, ino, len) = file.open_id()?;
    let status = Arc::new(SinkStatus::default());
    let opened = ((dev, ino), len);
    let task = tokio::spawn(run(store, cfg, Arc::new(Mutex::new(file)), position, opened, status.clone()));
    Ok((status, task))
}

async fn run(
    store: Arc<dyn Store>,
    cfg: SinkConfig,
    file: Arc<Mutex<RollingFile>>,
    saved: Option<Position>,
    opened: ((u64, u64), u64),
    status: Arc<SinkStatus>,
) {
    let first_start = saved.is_none();
    // Before the first save, what a failed cycle cuts back to is the file as it was opened.
    let mut pos = saved.unwrap_or(Position {
        version: Position::VERSION,
        file_id: opened.0,
        file_len: opened.1,
        ..Position::default()
    });
    let mut initialized = !first_start;
    let mut failing = false;
    loop {
        match cycle(store.as_ref(), &cfg, &file, &mut pos, &mut initialized, &status).await {
            Ok(more) => {
                if failing {
                    tracing::info!("audit.log sink writes again; catching up");
                    failing = false;
                }
                status.set_error(None);
                if !more {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Err(e) => {
                status.errors.fetch_add(1, Ordering::Relaxed);
                status.set_error(Some(e.clone()));
                if !failing {
                    tracing::error!(error = %e, "the audit.log sink cannot write; ingest continues, the sink retries and catches up");
                    failing = true;
                }
                // Whatever this cycle wrote before failing is not in the saved position: cut it off,
                // through the open file, which may no longer be at `audit.log`'s path.
                let f = file.clone();
                let p = pos.clone();
                let cut = tokio::task::spawn_blocking(move || {
                    let mut f = f.lock().map_err(|_| io::Error::other("sink file lock poisoned"))?;
                    f.cut_to(p.file_id, p.file_len)?;
                    f.reopen()
                })
                .await;
                if let Ok(Err(e)) = cut {
                    tracing::debug!(error = %e, "audit.log not cut back or reopened yet");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// One write-fsync-save cycle over every org. Returns whether more is waiting.
async fn cycle(
    store: &dyn Store,
    cfg: &SinkConfig,
    file: &Arc<Mutex<RollingFile>>,
    pos: &mut Position,
    initialized: &mut bool,
    status: &SinkStatus,
) -> Result<bool, String> {
    // One read for every org's log size: this runs several times a second, idle or not.
    let logs = store.tree_sizes().await.map_err(|e| e.to_string())?;
    if !*initialized {
        // First start without --from-start: begin at the current end of every existing log.
        for (slug, size) in &logs {
            pos.orgs.insert(slug.clone(), if cfg.from_start { 0 } else { *size });
        }
        *initialized = true;
    }
    let budget = MAX_CYCLE_BYTES.min((cfg.rolling.max_size / 2).max(1) as usize);
    let mut lines = Vec::with_capacity(budget.min(1 << 16));
    let mut next = pos.orgs.clone();
    let (mut count, mut more, mut lag) = (0u64, false, 0u64);
    let offset_at = |t: trail_model::time::Micros, f: &RollingFile| {
        jiff::Timestamp::from_microsecond(t).map_or(0, |ts| f.utc_offset_seconds(ts))
    };
    for (slug, size) in &logs {
        let (slug, size) = (slug.as_str(), *size);
        let from = next.get(slug).copied().unwrap_or(0);
        lag += size.saturating_sub(from);
        if from >= size || lines.len() >= budget {
            more |= from < size;
            continue;
        }
        let entries = follow::read(store, slug, from, size, 1000, false).await.map_err(|e| e.to_string())?;
        let read = entries.len();
        let guard = file.lock().map_err(|_| "sink file lock poisoned".to_string())?;
        for entry in &entries {
            let Entry::Event(r) = entry else { continue };
            if lines.len() >= budget {
                more = true;
                break;
            }
            let e = trail_model::canonical::decode(&r.bytes).map_err(|e| format!("seq {}: {e}", r.seq))?;
            let line = match cfg.format {
                Format::Runtime => {
                    let offset = offset_at(e.time, &guard);
                    let carbon =
                        if cfg.carbon_sign_ins { auditlog::format_sign_in_line(&e, offset) } else { None };
                    carbon.unwrap_or_else(|| auditlog::format_line(&e, offset))
                }
                Format::Json => auditlog::format_json_line(&e, &trail_merkle::leaf_hash(&r.bytes)),
            };
            lines.extend_from_slice(line.as_bytes());
            next.insert(slug.to_string(), r.seq + 1);
            count += 1;
        }
        drop(guard);
        // Archived events are never written; move past any gap they leave.
        let reached = next.get(slug).copied().unwrap_or(0);
        if read == 1000 || reached < size {
            more = true;
        }
    }
    // Until the lines are durable they are lag too: a failing sink reports all it has not written.
    status.lag.store(lag, Ordering::Relaxed);
    let reopen = status.reopen.swap(false, Ordering::SeqCst);
    if lines.is_empty() && !reopen && next == pos.orgs {
        return Ok(more);
    }
    let (f, c) = (file.clone(), cfg.rolling.clone());
    let mut saved =
        Position { version: Position::VERSION, file_id: pos.file_id, file_len: pos.file_len, orgs: next };
    let written = tokio::task::spawn_blocking(move || -> io::Result<Position> {
        let mut f = f.lock().map_err(|_| io::Error::other("sink file lock poisoned"))?;
        if reopen {
            f.reopen()?;
        }
        // Lines go to the file at `audit.log`'s path or nowhere: appended to a file moved away, they
        // would be written again, into the new one, by the retry.
        f.follow_path()?;
        f.append(&lines)?;
        f.flush_sync()?;
        let (dev, ino, len) = f.open_id()?;
        saved.file_id = (dev, ino);
        saved.file_len = len;
        save_position(&c, &saved)?;
        Ok(saved)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    *pos = written;
    status.lag.store(lag.saturating_sub(count), Ordering::Relaxed);
    status.lines.fetch_add(count, Ordering::Relaxed);
    Ok(more)
}

/// A clock for the sink: the system's.
pub fn system_clock() -> Arc<dyn Clock> {
    Arc::new(rolling::SystemClock)
}

#[cfg(test)]
mod golden {
    use super::Position;

    /// A position file written by this release: every later release must read it.
    #[test]
    fn sink_position_v1_reads_and_writes_back() {
        let text = include_str!("../../tests/golden/sink-position-v1.json");
        let p = Position::parse(text.as_bytes()).unwrap();
        assert_eq!(
            (p.file_id, p.file_len, p.orgs["acme"], p.orgs["globex"]),
            ((2049, 1_835_012), 1_048_123, 1201, 17)
        );
        assert_eq!(serde_json::to_string(&p).unwrap(), text, "written back byte for byte");
        let newer = text.replacen("\"version\":1", "\"version\":2", 1);
        assert_eq!(
            Position::parse(newer.as_bytes()).unwrap_err().to_string(),
            "sink position file version 2 is not one this trail reads (it reads version 1)"
        );
    }
}
