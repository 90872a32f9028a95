//! The export worker (PRODUCT.md §6): runs pending exports in the background, a bounded number at a
//! time, streaming query pages to a file so memory does not grow with the export; signs a manifest;
//! deletes expired files. Exports left running by a stopped server are run again at start.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use trail_model::export::{ExportManifest, ManifestWindow, SeqRange, csv_header, csv_row};
use trail_model::query::{Query, QueryContext, parse_filter};
use trail_model::time::{MICROS_PER_SECOND, format_rfc3339, now};
use trail_store::{Export, ExportFormat, ExportKind, ExportStatus};

use crate::AppState;
use crate::audit::Audit;
use crate::error::ApiError;

/// Rows fetched per query page while exporting.
const PAGE: usize = 1000;

/// Where an export's file lives.
pub fn file_path(state: &AppState, e: &Export) -> PathBuf {
    let ext = e.format.extension();
    let dir = match state.settings.exports.dir.trim() {
        "" => state.settings.data_dir.join("exports"),
        d => PathBuf::from(d),
    };
    dir.join(format!("{}.{ext}", e.id))
}

/// Filters as stored (an object of strings or lists of strings) back to query pairs.
pub fn filter_pairs(filters: &Value) -> Result<Vec<(String, String)>, ApiError> {
    let bad = |k: &str| {
        ApiError::bad_request("invalid_field", format!("filters.{k} must be a string or a list of strings"))
            .with_field(format!("filters.{k}"))
    };
    let Some(m) = filters.as_object() else {
        return Err(ApiError::bad_request("invalid_field", "filters must be an object of query parameters")
            .with_field("filters"));
    };
    let mut pairs = Vec::new();
    for (k, v) in m {
        match v {
            // Null is absent, as everywhere in request bodies; its name must still be a filter's.
            Value::Null if trail_model::query::FILTER_PARAMETERS.contains(&k.as_str()) => {}
            Value::Null => {
                return Err(ApiError::bad_request(
                    "unknown_parameter",
                    format!("filters.{k} is not a query parameter"),
                )
                .with_field(format!("filters.{k}")));
            }
            Value::String(s) => pairs.push((k.clone(), s.clone())),
            Value::Array(items) => {
                for i in items {
                    pairs.push((k.clone(), i.as_str().ok_or_else(|| bad(k))?.to_string()));
                }
            }
            _ => return Err(bad(k)),
        }
    }
    Ok(pairs)
}

/// Query parameters as an export's `filters` object: one value as a string, repeats as a list.
pub fn filters_object(pairs: &[(String, String)]) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in pairs {
        match m.get_mut(k) {
            Some(Value::Array(list)) => list.push(Value::String(v.clone())),
            Some(one) => *one = Value::Array(vec![one.take(), Value::String(v.clone())]),
            None => {
                m.insert(k.clone(), Value::String(v.clone()));
            }
        }
    }
    Value::Object(m)
}

/// Bytes of an org's export files on disk (completed and not yet expired).
pub fn kept_bytes(exports: &[Export]) -> u64 {
    exports.iter().filter(|e| e.status == ExportStatus::Completed).map(|e| e.size_bytes).sum()
}

/// Runs the worker until the task is dropped: requeues interrupted exports, then claims pending ones
/// up to `exports.max_running` at a time and deletes expired files.
pub async fn run_exporter(state: AppState) {
    match state.store.requeue_running_exports().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(exports = n, "exports interrupted by a stop will run again"),
        Err(e) => tracing::error!(error = %e, "cannot requeue interrupted exports"),
    }
    let running = Arc::new(AtomicUsize::new(0));
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = expire(&state).await {
            tracing::warn!(error = %e, "cannot expire old exports; will retry");
        }
        while running.load(Ordering::SeqCst) < state.settings.exports.max_running.max(1) {
            let per_org = state.settings.exports.max_running_per_org.max(1);
            let claimed = match state.store.claim_export(now(), per_org).await {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim an export; will retry");
                    break;
                }
            };
            let slot = Slot::take(&running);
            let state = state.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let id = claimed.id.clone();
                let finished = run_one(&state, claimed.clone()).await;
                let mut e = match finished {
                    Ok(e) => e,
                    Err(reason) => {
                        tracing::warn!(export = %id, error = %reason, "export failed");
                        let path = file_path(&state, &claimed);
                        let _ = std::fs::remove_file(path.with_extension("partial"));
                        let _ = std::fs::remove_file(path);
                        Export { status: ExportStatus::Failed, error: Some(reason), ..claimed }
                    }
                };
                e.finished_at = Some(now());
                // The result must be recorded, or the export would show `running` until a restart.
                for attempt in 0u64.. {
                    match state.store.update_export(&e).await {
                        Ok(()) => break,
                        Err(err) => {
                            tracing::error!(export = %id, error = %err, attempt, "cannot record an export's result; retrying");
                            tokio::time::sleep(Duration::from_millis(200 * (attempt + 1).min(25))).await;
                        }
                    }
                }
                // How much left with it is in the org's log (an alert template watches large exports).
                if e.status == ExportStatus::Completed {
                    let recorded = Audit::new(e.requested_by.clone(), "export.completed", "export")
                        .target(&e.id, Some(e.name.clone()))
                        .info("row_count", e.row_count)
                        .info("size_bytes", e.size_bytes)
                        .info("kind", e.kind.as_str())
                        .with_id(format!("export-completed-{}", e.id))
                        .append(state.store.as_ref(), &e.org)
                        .await;
                    if let Err(err) = recorded {
                        tracing::warn!(export = %id, error = %err, "cannot record an export's completion in the log");
                    }
                }
            });
        }
    }
}

/// One of the `max_running` places; given back when dropped, even if the export's task panics.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(running: &Arc<AtomicUsize>) -> Self {
        running.fetch_add(1, Ordering::SeqCst);
        Slot(running.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn expire(state: &AppState) -> Result<(), trail_store::StoreError> {
    for mut e in state.store.expired_exports(now()).await? {
        let path = file_path(state, &e);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "cannot delete an expired export");
                continue;
            }
        }
        e.status = ExportStatus::Expired;
        state.store.update_export(&e).await?;
    }
    Ok(())
}

/// Hashes and counts what passes through to the file.
struct Tee<W: Write> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

type Out = Tee<std::io::BufWriter<std::fs::File>>;

/// Creates the export's temporary file.
fn open_out(state: &AppState, e: &Export) -> Result<Out, String> {
    let path = file_path(state, e);
    let dir = path.parent().ok_or("export directory")?.to_path_buf();
    // Export files hold an org's events: readable by the server's user alone.
    let mut dirs = std::fs::DirBuilder::new();
    dirs.recursive(true);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        std::os::unix::fs::DirBuilderExt::mode(&mut dirs, 0o700);
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    }
    dirs.create(&dir).map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    let file = opts
        .open(path.with_extension("partial"))
        .map_err(|err| format!("cannot create the export file: {err}"))?;
    Ok(Tee { inner: std::io::BufWriter::with_capacity(1 << 20, file), hash: Sha256::new(), bytes: 0 })
}

/// Runs one export to completion; the error is the reason shown in the history.
async fn run_one(state: &AppState, e: Export) -> Result<Export, String> {
    if e.kind == ExportKind::Restore {
        return run_restore(state, e).await;
    }
    let pairs = filter_pairs(&e.filters).map_err(|err| err.message)?;
    let now = now();
    let oldest = state.hot_start(&e.org, now).await.map_err(|err| err.message)?;
    let filter = parse_filter(&pairs, QueryContext { now, oldest }).map_err(|err| err.message)?;
    // The org's bound on bytes kept holds while the file grows, not only when the export is queued.
    let kept = state.store.exports(&e.org).await.map_err(|err| err.to_string())?;
    let budget = state.settings.exports.max_bytes_per_org.saturating_sub(kept_bytes(&kept));
    let mut out = open_out(state, &e)?;
    let csv = e.format == ExportFormat::Csv;
    if csv {
        out.write_all(csv_header().as_bytes()).map_err(|err| err.to_string())?;
    }
    let mut q = Query { filter: filter.clone(), limit: PAGE, cursor: None };
    let (mut rows, mut min_seq, mut max_seq, mut as_of) = (0u64, u64::MAX, 0u64, None);
    let fetch = |q: Query| {
        let (store, org) = (state.store.clone(), e.org.clone());
        tokio::spawn(async move { store.query_raw(&org, &q).await })
    };
    let mut next = Some(fetch(q.clone()));
    while let Some(pending) = next.take() {
        let page = pending.await.map_err(|err| err.to_string())?.map_err(|err| err.to_string())?;
        // Fetch the next page on the reader pool while this one is written: two cores, both busy.
        if let Some(c) = page.next {
            as_of = Some(c.as_of);
            q.cursor = Some(c);
            next = Some(fetch(q.clone()));
        }
        for r in &page.records {
            if csv {
                let event = trail_model::canonical::decode(&r.bytes)
                    .map_err(|err| format!("seq {}: {err}", r.seq))?;
                out.write_all(csv_row(&event).as_bytes())
                    .map_err(|err| format!("cannot write the export file: {err}"))?;
            } else {
                // NDJSON straight from the stored bytes: no decode, `info` copied as stored.
                trail_model::canonical::write_json(&r.bytes, &trail_merkle::leaf_hash(&r.bytes), &mut out)
                    .map_err(|err| format!("seq {}: cannot write the export: {err}", r.seq))?;
                out.write_all(b"\n").map_err(|err| format!("cannot write the export file: {err}"))?;
            }
            min_seq = min_seq.min(r.seq);
            max_seq = max_seq.max(r.seq);
        }
        rows += page.records.len() as u64;
        if out.bytes > budget {
            return Err(format!(
                "the export passed this organization's {} bytes of export files (exports.max_bytes_per_org); narrow its filters or wait for older exports to expire",
                state.settings.exports.max_bytes_per_org
            ));
        }
    }
    // The manifest names a checkpoint covering every exported event (one follows within a second).
    let needed = if rows == 0 { 0 } else { as_of.unwrap_or(max_seq + 1).max(max_seq + 1) };
    let mut checkpoint = None;
    for _ in 0..100 {
        match state.store.latest_checkpoint(&e.org).await.map_err(|err| err.to_string())? {
            Some(cp) if cp.size >= needed => {
                checkpoint = Some(cp);
                break;
            }
            None if needed == 0 => break,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    if needed > 0 && checkpoint.is_none() {
        return Err("no checkpoint covers the exported events yet".into());
    }
    let seqs = (rows > 0).then_some((min_seq, max_seq));
    let window = (filter.from, filter.to);
    seal(state, e, out, rows, seqs, checkpoint.map(|c| c.note), window, now).await
}

/// Restores archived events of a time window into an NDJSON export (PRODUCT.md §8), each part
/// checked against its signed manifest first.
async fn run_restore(state: &AppState, e: Export) -> Result<Export, String> {
    let archive = state.archive.as_ref().ok_or("the archive storage is not available on this server")?;
    let bound = |k: &str| {
        e.filters[k]
            .as_str()
            .and_then(trail_model::time::parse_rfc3339)
            .ok_or(format!("the restore's {k} is not a time"))
    };
    let (from, to) = (bound("from")?, bound("to")?);
    let mut out = open_out(state, &e)?;
    let key = state.signer.verifier();
    let hot_start = state.hot_start(&e.org, now()).await.map_err(|err| err.message)?;
    let r =
        crate::archive::restore(archive, state.store.as_ref(), &e.org, from, to, hot_start, &key, &mut out)
            .await
            .map_err(|err| err.to_string())?;
    seal(state, e, out, r.rows, r.seqs, r.checkpoint, (from, to), now()).await
}

/// Makes the file durable, moves it into place, and signs the manifest.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site per kind of export; a struct would only rename them"
)]
async fn seal(
    state: &AppState,
    mut e: Export,
    mut out: Out,
    rows: u64,
    seqs: Option<(u64, u64)>,
    checkpoint: Option<String>,
    (from, to): (trail_model::time::Micros, trail_model::time::Micros),
    now: trail_model::time::Micros,
) -> Result<Export, String> {
    let path = file_path(state, &e);
    let dir = path.parent().ok_or("export directory")?.to_path_buf();
    out.flush().map_err(|err| err.to_string())?;
    let Tee { inner, hash, bytes } = out;
    inner.into_inner().map_err(|err| err.to_string())?.sync_all().map_err(|err| err.to_string())?;
    std::fs::rename(path.with_extension("partial"), &path).map_err(|err| err.to_string())?;
    // The rename must survive a power loss too before the export is called completed.
    std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(|err| err.to_string())?;
    let sha256: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let self_audit_from = state.store.self_audit_from(&e.org).await.map_err(|err| err.to_string())?;
    let contents = Contents {
        window: (from, to),
        rows,
        bytes,
        sha256: sha256.clone(),
        seqs,
        checkpoint,
        self_audit_from,
    };
    let signed = sign_manifest(&state.signer, &e, &contents, now)?;
    e.status = ExportStatus::Completed;
    e.row_count = rows;
    e.size_bytes = bytes;
    e.sha256 = Some(sha256);
    e.manifest = Some(signed);
    e.expires_at = Some(now + state.settings.exports.keep_hours as i64 * 3600 * MICROS_PER_SECOND);
    Ok(e)
}

/// What an export file holds, as its manifest states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents {
    pub window: (trail_model::time::Micros, trail_model::time::Micros),
    pub rows: u64,
    pub bytes: u64,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// Smallest and largest seq in the file.
    pub seqs: Option<(u64, u64)>,
    /// A signed checkpoint covering every event in the file.
    pub checkpoint: Option<String>,
    /// From this seq on, `source: "trail"` in the file is Trail's own record (see
    /// [`crate::audit::is_self_audit`]).
    pub self_audit_from: u64,
}

/// The export's signed manifest: a signed note whose text is JSON (`trail verify --export` reads it).
pub fn sign_manifest(
    signer: &trail_merkle::Signer,
    e: &Export,
    c: &Contents,
    now: trail_model::time::Micros,
) -> Result<String, String> {
    let manifest = ExportManifest {
        version: ExportManifest::VERSION,
        export_id: e.id.clone(),
        org: e.org.clone(),
        name: e.name.clone(),
        format: e.format,
        kind: e.kind,
        filters: e.filters.clone(),
        window: ManifestWindow { from: format_rfc3339(c.window.0), to: format_rfc3339(c.window.1) },
        row_count: c.rows,
        size_bytes: c.bytes,
        sha256: c.sha256.clone(),
        seq: c.seqs.map(|(min, max)| SeqRange { min, max }),
        checkpoint: c.checkpoint.clone(),
        self_audit_from_seq: c.self_audit_from,
        exported_at: format_rfc3339(now),
        log_key: signer.verifier_key(),
    };
    signer.sign_note(&format!("{}\n", manifest.to_text())).map_err(|err| err.to_string())
}
