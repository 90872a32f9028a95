//! A small Prometheus registry, rendered in the text exposition format at `/metrics`: request counters
//! and latency histograms keyed by route, event and sign-in counters, background jobs' last results,
//! the store's sizes and pool waits, and the standard `process_*` families. Kept in-house because it is
//! a few dozen lines; `promtool check metrics` checks the output in a test.
//!
//! Every label is bounded: routes are the router's patterns, statuses are HTTP codes, pools and
//! states are fixed names. No label names an org, a user or a key.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use trail_store::StoreStats;

const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Process-wide metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (method, route, status) → count
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// (method, route) → latency
    latency: Mutex<BTreeMap<(String, String), Histogram>>,
    pub events_created: AtomicU64,
    pub events_duplicate: AtomicU64,
    pub events_conflict: AtomicU64,
    pub events_rejected: AtomicU64,
    pub sign_in_failures: AtomicU64,
    /// Sign-ins and password checks refused by the throttle without checking the password.
    pub sign_in_throttled: AtomicU64,
    /// People's reads answered without their self-audit record (the store refused it).
    pub read_audit_failures: AtomicU64,
    /// Unix time (µs) the last checkpoint pass that signed every log began: every append before it
    /// is covered by a signed checkpoint. The process's start until the first such pass (see
    /// `AppState::new`), so an unsigned log never reads as 0 s behind.
    pub checkpoint_covered_at: AtomicU64,
    /// Unix time (µs) of the last retention pass, and whether it succeeded (1) or failed (0).
    pub retention_last_run: AtomicU64,
    pub retention_last_ok: AtomicU64,
    pub retention_runs_ok: AtomicU64,
    pub retention_runs_failed: AtomicU64,
}

/// Builds the exposition text, one family at a time (`# HELP`, `# TYPE`, then its samples).
#[derive(Debug)]
pub struct Exposition(String);

impl Exposition {
    pub fn new() -> Self {
        Self(String::with_capacity(16 * 1024))
    }

    /// A family with one unlabelled sample.
    pub fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help, [("", value)]);
    }

    /// A family whose samples carry labels (`label="value",…`, already escaped; bounded sets only).
    pub fn family<V: std::fmt::Display>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl IntoIterator<Item = (impl AsRef<str>, V)>,
    ) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let labels = labels.as_ref();
            if labels.is_empty() {
                let _ = writeln!(self.0, "{name} {v}");
            } else {
                let _ = writeln!(self.0, "{name}{{{labels}}} {v}");
            }
        }
    }

    pub fn finish(self) -> String {
        self.0
    }
}

impl Default for Exposition {
    fn default() -> Self {
        Self::new()
    }
}

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn seconds(micros: u64) -> f64 {
    micros as f64 / 1e6
}

impl Metrics {
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((method.to_string(), route.to_string(), status)).or_default() += 1;
        }
        if let Ok(mut l) = self.latency.lock() {
            let h = l.entry((method.to_string(), route.to_string())).or_default();
            for (i, b) in BUCKETS.iter().enumerate() {
                if seconds <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += seconds;
            h.count += 1;
        }
    }

    /// A process's metrics, started at `now` (the checkpoint lag counts from it until the first pass).
    pub fn started(now: trail_model::time::Micros) -> Self {
        let m = Self::default();
        m.checkpoint_covered_at.store(now.max(0) as u64, Ordering::Relaxed);
        m
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Records the end of a retention pass.
    pub fn retention_ran(&self, ok: bool, at: trail_model::time::Micros) {
        self.retention_last_run.store(at.max(0) as u64, Ordering::Relaxed);
        self.retention_last_ok.store(u64::from(ok), Ordering::Relaxed);
        Self::add(if ok { &self.retention_runs_ok } else { &self.retention_runs_failed }, 1);
    }

    /// The request, event and sign-in families.
    pub fn render(&self, out: &mut Exposition) {
        let requests: Vec<(String, u64)> = self.requests.lock().map_or_else(
            |_| Vec::new(),
            |r| {
                r.iter()
                    .map(|((m, route, s), n)| {
                        (format!("method=\"{m}\",route=\"{route}\",status=\"{s}\""), *n)
                    })
                    .collect()
            },
        );
        out.family("trail_http_requests_total", "counter", "HTTP requests by route and status.", requests);
        let mut lines = Vec::new();
        if let Ok(l) = self.latency.lock() {
            for ((m, route), h) in l.iter() {
                let labels = format!("method=\"{m}\",route=\"{route}\"");
                for (i, b) in BUCKETS.iter().enumerate() {
                    lines.push(format!(
                        "trail_http_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                        h.counts[i]
                    ));
                }
                lines.push(format!(
                    "trail_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                    h.count
                ));
                lines.push(format!("trail_http_request_duration_seconds_sum{{{labels}}} {}", h.sum));
                lines.push(format!("trail_http_request_duration_seconds_count{{{labels}}} {}", h.count));
            }
        }
        let _ = writeln!(
            out.0,
            "# HELP trail_http_request_duration_seconds HTTP request latency by route.\n# TYPE trail_http_request_duration_seconds histogram"
        );
        for l in lines {
            let _ = writeln!(out.0, "{l}");
        }
        for (name, help, c) in [
            ("trail_events_created_total", "Events stored.", &self.events_created),
            (
                "trail_events_duplicate_total",
                "Events answered as duplicates (retries).",
                &self.events_duplicate,
            ),
            (
                "trail_events_conflict_total",
                "Events refused because their id is stored with different content.",
                &self.events_conflict,
            ),
            ("trail_events_rejected_total", "Events rejected by validation.", &self.events_rejected),
        ] {
            out.one(name, "counter", help, load(c));
        }
        out.one(
            "trail_sign_in_failures_total",
            "counter",
            "Failed sign-in attempts (wrong credentials or throttled).",
            load(&self.sign_in_failures),
        );
        out.one(
            "trail_sign_in_throttled_total",
            "counter",
            "Sign-ins and password checks refused by the throttle, before any password was checked.",
            load(&self.sign_in_throttled),
        );
        out.one(
            "trail_read_audit_failures_total",
            "counter",
            "Searches and event views answered although their record in the log could not be written.",
            load(&self.read_audit_failures),
        );
        out.one(
            "trail_retention_last_run_timestamp_seconds",
            "gauge",
            "Unix time the last retention pass ended (0: none yet since start).",
            seconds(load(&self.retention_last_run)),
        );
        out.one(
            "trail_retention_last_run_success",
            "gauge",
            "Whether the last retention pass succeeded (1) or failed (0).",
            load(&self.retention_last_ok),
        );
        out.family(
            "trail_retention_runs_total",
            "counter",
            "Retention passes by result.",
            [
                ("result=\"success\"", load(&self.retention_runs_ok)),
                ("result=\"failure\"", load(&self.retention_runs_failed)),
            ],
        );
    }
}

/// The store's families.
pub fn render_store(out: &mut Exposition, s: &StoreStats) {
    out.one("trail_store_size_bytes", "gauge", "Bytes the store takes on disk.", s.size_bytes);
    out.one("trail_events_stored", "gauge", "Events in hot storage, every org.", s.events);
    out.family(
        "trail_exports",
        "gauge",
        "Exports waiting to run (pending) and running.",
        [("state=\"pending\"", s.exports_pending), ("state=\"running\"", s.exports_running)],
    );
    out.family(
        "trail_store_pool_waits_total",
        "counter",
        "Store requests that found every pooled connection taken and waited.",
        s.pools.iter().map(|p| (format!("pool=\"{}\"", p.name), p.waits)),
    );
    out.family(
        "trail_store_pool_wait_seconds_total",
        "counter",
        "Time store requests spent waiting for a pooled connection.",
        s.pools.iter().map(|p| (format!("pool=\"{}\"", p.name), p.wait_seconds)),
    );
    if s.memory.is_empty() {
        return;
    }
    out.family(
        "trail_store_memory_bytes",
        "gauge",
        "Memory the store holds in this process, by part: sqlite (page caches, bounded by their configured sizes), id_filters (about 1.1 bytes a stored event id, by design).",
        s.memory.iter().map(|(part, bytes)| (format!("part=\"{part}\""), *bytes)),
    );
}

/// The standard process families (as Prometheus client libraries name them), read from `/proc`.
/// Absent where `/proc` is not (they are then left out, never reported as 0).
pub fn render_process(out: &mut Exposition) {
    out.family(
        "trail_build_info",
        "gauge",
        "The running build: always 1, with its version.",
        [(format!("version=\"{}\"", env!("CARGO_PKG_VERSION")), 1)],
    );
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name (which may hold spaces), from field 3 (`state`) on.
    let Some(fields) = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect::<Vec<_>>())
    else {
        return;
    };
    // USER_HZ, the unit of /proc's clock ticks, is 100 on every Linux architecture.
    const TICKS: f64 = 100.0;
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        out.one(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, in seconds.",
            (utime + stime) / TICKS,
        );
    }
    if let Some(vsize) = field(23) {
        out.one("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", vsize);
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    if let Some(kib) = rss_kib {
        out.one("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", kib * 1024);
    }
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok()));
    if let (Some(boot), Some(start)) = (boot, field(22)) {
        out.one(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, in seconds.",
            boot + start / TICKS,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.one("process_open_fds", "gauge", "Open file descriptors.", fds.count());
    }
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let max = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(max) = max {
        out.one("process_max_fds", "gauge", "Maximum open file descriptors (the soft limit).", max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_help_type_and_samples() {
        let m = Metrics::default();
        m.observe("GET", "/v1/orgs/{org}/events", 200, 0.003);
        Metrics::add(&m.events_conflict, 2);
        let mut out = Exposition::new();
        m.render(&mut out);
        render_process(&mut out);
        let text = out.finish();
        assert!(text.contains("trail_events_conflict_total 2\n"), "{text}");
        assert!(text.contains(
            "trail_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/orgs/{org}/events\",le=\"0.005\"} 1\n"
        ));
        assert!(text.contains("trail_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/orgs/{org}/events\",le=\"0.0025\"} 0\n"));
        assert!(text.contains("# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes "));
        let fds: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_open_fds "))
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!(fds >= 3, "stdin, stdout and stderr at least: {fds}");
    }
}
