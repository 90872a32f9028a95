//! Archive files (PRODUCT.md §8): immutable, compressed parts of one org's month with a signed manifest,
//! kept in an object store (a local directory by default, S3-compatible with the `s3` feature).
//!
//! A part is `<org>/<YYYY-MM>/<first seq>-<last seq>.events.zst` (zero-padded, so names sort by seq)
//! and its manifest beside it (`….manifest`, a signed note whose text is JSON). The data is a zstd
//! stream of `TRAIL-ARCHIVE 1\n` followed by each event's canonical bytes, length-prefixed (u32 BE), in
//! seq order: exactly the bytes the log hashed, so every leaf can be recomputed.
//!
//! Writes put the data first and the manifest second, so a manifest always names a complete file; a
//! reader trusts nothing it has not checked against the signed manifest.
//!
//! A crate of its own so that `trail verify --archive` checks parts with the same code the server
//! writes them with, without linking the server. It must never know HTTP or SQL.

#![cfg_attr(test, allow(clippy::unwrap_used, reason = "tests fail loudly on purpose"))]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use trail_merkle::{Signer, Verifier};
use trail_model::canonical;
use trail_model::time::{Micros, format_rfc3339, month_of};
use trail_store::RawRecord;

const MAGIC: &[u8] = b"TRAIL-ARCHIVE 1\n";
/// Events per part: bounds the memory a pass or a restore needs (~30 MB before compression).
pub const PART_EVENTS: usize = 100_000;

/// What can go wrong with archives.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The object store failed (unreachable, permission, disk full); nothing was changed by us.
    #[error("archive storage: {0}")]
    Storage(String),
    /// A part or manifest is not what its signed manifest says.
    #[error("{0}")]
    Invalid(String),
    /// A manifest's data file is gone: a deletion past retention was interrupted (the next pass ends it).
    #[error(
        "{0}: the data file is missing (a deletion was interrupted; the next retention pass finishes it)"
    )]
    Missing(String),
}

impl From<object_store::Error> for ArchiveError {
    fn from(e: object_store::Error) -> Self {
        ArchiveError::Storage(e.to_string())
    }
}

pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;

/// The JSON text of a part's signed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub kind: String,
    pub org: String,
    /// `YYYY-MM` (UTC) of the events' `time`.
    pub period: String,
    /// The data file's name, beside the manifest.
    pub file: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub row_count: u64,
    pub time_min: String,
    pub time_max: String,
    /// Bytes and SHA-256 (hex) of the compressed data file.
    pub size_bytes: u64,
    pub sha256: String,
    /// A signed checkpoint whose tree contains every event of the part.
    pub checkpoint: String,
    pub archived_at: String,
    pub log_key: String,
}

impl Manifest {
    pub const VERSION: u32 = 1;

    /// Reads a part's manifest text, refusing a version this release does not know. Every later
    /// release must read `tests/golden/archive-manifest-v1.json`.
    pub fn parse(text: &str) -> Result<Self, trail_model::export::FormatError> {
        trail_model::export::parse_versioned("archive part manifest", text.as_bytes(), Self::VERSION)
    }
}

impl Manifest {
    pub fn month(&self) -> Option<u32> {
        let (y, m) = self.period.split_once('-')?;
        Some(y.parse::<u32>().ok()? * 100 + m.parse::<u32>().ok()?)
    }
}

/// One archived part as listed: where its manifest is, the signed note, and the manifest's text.
#[derive(Debug, Clone)]
pub struct Entry {
    pub manifest_path: String,
    pub note: String,
    pub manifest: Manifest,
}

impl Entry {
    pub fn data_path(&self) -> String {
        match self.manifest_path.rsplit_once('/') {
            Some((dir, _)) => format!("{dir}/{}", self.manifest.file),
            None => self.manifest.file.clone(),
        }
    }
}

/// The text of a signed note without checking its signature (for listing; readers verify).
pub fn note_text(note: &str) -> &str {
    note.rsplit_once("\n\n").map_or(note, |(text, _)| text)
}

/// An archive location.
#[derive(Debug, Clone)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    /// Set for a local directory: writes there are fsynced before they count.
    local: Option<PathBuf>,
    location: String,
}

impl Archive {
    /// The archive configured in `retention.archive`.
    /// The archive at `location` (`retention.archive`): `s3://bucket/prefix` (with the `s3` feature
    /// and an optional endpoint), a directory, or `<data_dir>/archive` when empty.
    pub fn open(location: &str, s3_endpoint: &str, data_dir: &Path) -> Result<Self> {
        let configured = location.trim();
        if let Some(rest) = configured.strip_prefix("s3://") {
            return Self::s3(rest, s3_endpoint);
        }
        let dir = if configured.is_empty() { data_dir.join("archive") } else { PathBuf::from(configured) };
        Self::local(&dir)
    }

    pub fn local(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ArchiveError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)?;
        Ok(Self { store: Arc::new(fs), local: Some(dir.to_path_buf()), location: dir.display().to_string() })
    }

    #[cfg(feature = "s3")]
    fn s3(bucket_and_prefix: &str, endpoint: &str) -> Result<Self> {
        let (bucket, prefix) = bucket_and_prefix.split_once('/').unwrap_or((bucket_and_prefix, ""));
        let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        if !endpoint.is_empty() {
            b = b.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        let s3: Arc<dyn ObjectStore> = Arc::new(b.build()?);
        let store: Arc<dyn ObjectStore> = if prefix.trim_matches('/').is_empty() {
            s3
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(s3, prefix.trim_matches('/')))
        };
        Ok(Self { store, local: None, location: format!("s3://{bucket_and_prefix}") })
    }

    #[cfg(not(feature = "s3"))]
    fn s3(_: &str, _: &str) -> Result<Self> {
        Err(ArchiveError::Storage(
            "retention.archive is an s3:// URL but this trail was built without the `s3` feature".into(),
        ))
    }

    /// Where the archive is, for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Stores a part: data, then manifest, each durable before the next.
    pub async fn put(&self, entry: &Entry, data: Vec<u8>) -> Result<()> {
        self.put_durable(&entry.data_path(), data).await?;
        self.put_durable(&entry.manifest_path, entry.note.clone().into_bytes()).await
    }

    async fn put_durable(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        let location = ObjectPath::from(path);
        self.store.put(&location, PutPayload::from(bytes)).await?;
        if let Some(root) = &self.local {
            // The local store renames a temporary file into place but does not fsync.
            let file = root.join(path);
            let sync = |p: &Path| std::fs::File::open(p).and_then(|f| f.sync_all());
            sync(&file)
                .and_then(|()| file.parent().map_or(Ok(()), sync))
                .map_err(|e| ArchiveError::Storage(format!("cannot sync {}: {e}", file.display())))?;
        }
        Ok(())
    }

    /// Every part of an org (or of all orgs), ordered by period then first seq.
    pub async fn list(&self, org: Option<&str>) -> Result<Vec<Entry>> {
        let prefix = org.map(ObjectPath::from);
        let metas: Vec<_> = self.store.list(prefix.as_ref()).try_collect().await?;
        let mut out = Vec::new();
        for meta in metas {
            let path = meta.location.to_string();
            if !path.ends_with(".manifest") {
                continue;
            }
            let note = match self.store.get(&meta.location).await {
                Ok(got) => String::from_utf8(got.bytes().await?.to_vec())
                    .map_err(|_| ArchiveError::Invalid(format!("{path}: the manifest is not UTF-8")))?,
                // Deleted by a concurrent pass between list and get.
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let manifest = Manifest::parse(note_text(&note))
                .map_err(|e| ArchiveError::Invalid(format!("{path}: {e}")))?;
            out.push(Entry { manifest_path: path, note, manifest });
        }
        out.sort_by(|a, b| {
            (&a.manifest.org, &a.manifest.period, a.manifest.first_seq).cmp(&(
                &b.manifest.org,
                &b.manifest.period,
                b.manifest.first_seq,
            ))
        });
        Ok(out)
    }

    /// The part's data file as stored (compressed).
    pub async fn data(&self, entry: &Entry) -> Result<Vec<u8>> {
        match self.store.get(&ObjectPath::from(entry.data_path())).await {
            Ok(got) => Ok(got.bytes().await?.to_vec()),
            Err(object_store::Error::NotFound { .. }) => Err(ArchiveError::Missing(entry.data_path())),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a part: data first, so a manifest never outlives knowledge of its data by more than one
    /// interrupted pass (a rerun finds the manifest and finishes).
    pub async fn delete(&self, entry: &Entry) -> Result<()> {
        self.delete_data(entry).await?;
        self.remove(&entry.manifest_path).await
    }

    /// Deletes only a part's data file (the first half of [`Archive::delete`]).
    pub async fn delete_data(&self, entry: &Entry) -> Result<()> {
        self.remove(&entry.data_path()).await
    }

    async fn remove(&self, path: &str) -> Result<()> {
        match self.store.delete(&ObjectPath::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Builds a part from events of one org and month (in seq order): the compressed data and its entry.
pub fn build_part(
    org: &str,
    month: u32,
    records: &[RawRecord],
    checkpoint: &str,
    signer: &Signer,
    now: Micros,
) -> Result<(Entry, Vec<u8>)> {
    let (first, last) = match (records.first(), records.last()) {
        (Some(f), Some(l)) => (f.seq, l.seq),
        _ => return Err(ArchiveError::Invalid("an archive part needs at least one event".into())),
    };
    let mut raw = Vec::with_capacity(MAGIC.len() + records.iter().map(|r| r.bytes.len() + 4).sum::<usize>());
    raw.extend_from_slice(MAGIC);
    for r in records {
        let len = u32::try_from(r.bytes.len())
            .map_err(|_| ArchiveError::Invalid(format!("seq {}: event too large", r.seq)))?;
        raw.extend_from_slice(&len.to_be_bytes());
        raw.extend_from_slice(&r.bytes);
    }
    let data = ruzstd::encoding::compress_to_vec(raw.as_slice(), ruzstd::encoding::CompressionLevel::Fastest);
    let period = format!("{:04}-{:02}", month / 100, month % 100);
    let file = format!("{first:012}-{last:012}.events.zst");
    let manifest = Manifest {
        version: Manifest::VERSION,
        kind: "trail-archive".into(),
        org: org.to_string(),
        period: period.clone(),
        file: file.clone(),
        first_seq: first,
        last_seq: last,
        row_count: records.len() as u64,
        time_min: format_rfc3339(records.iter().map(|r| r.time).min().unwrap_or_default()),
        time_max: format_rfc3339(records.iter().map(|r| r.time).max().unwrap_or_default()),
        size_bytes: data.len() as u64,
        sha256: hex::encode(Sha256::digest(&data)),
        checkpoint: checkpoint.to_string(),
        archived_at: format_rfc3339(now),
        log_key: signer.verifier_key(),
    };
    let text = serde_json::to_string(&manifest).map_err(|e| ArchiveError::Invalid(e.to_string()))?;
    let note = signer.sign_note(&format!("{text}\n")).map_err(|e| ArchiveError::Invalid(e.to_string()))?;
    let manifest_path = format!("{org}/{period}/{first:012}-{last:012}.manifest");
    Ok((Entry { manifest_path, note, manifest }, data))
}

/// Splits decompressed part data into the events' canonical bytes.
fn frames(raw: &[u8]) -> Result<Vec<Vec<u8>>> {
    let body = raw
        .strip_prefix(MAGIC)
        .ok_or_else(|| ArchiveError::Invalid("not a Trail archive part (bad header)".into()))?;
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| ArchiveError::Invalid("truncated archive part".into()))?;
        let len = u32::from_be_bytes(*len) as usize;
        if tail.len() < len {
            return Err(ArchiveError::Invalid("truncated archive part".into()));
        }
        out.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    Ok(out)
}

/// Checks a part against its manifest and returns its events (time, seq, canonical bytes) in seq order.
/// With a key, the manifest's signature and its checkpoint's are checked too; without, only that the
/// content matches the manifest.
pub fn check_part(entry: &Entry, data: &[u8], key: Option<&Verifier>) -> Result<Vec<RawRecord>> {
    let m = &entry.manifest;
    let bad = |why: String| Err(ArchiveError::Invalid(format!("{}: {why}", entry.manifest_path)));
    if let Some(key) = key {
        match key.open_note(&entry.note) {
            Ok(text) if Manifest::parse(text).ok().as_ref() == Some(m) => {}
            Ok(_) => return bad("the manifest's text differs from what was signed".into()),
            Err(e) => return bad(format!("the manifest's signature does not verify with the log key: {e}")),
        }
        match trail_merkle::checkpoint::open(&m.checkpoint, key) {
            Ok(cp) if cp.size > m.last_seq => {}
            Ok(cp) => {
                return bad(format!(
                    "the manifest's checkpoint (size {}) does not cover seq {}",
                    cp.size, m.last_seq
                ));
            }
            Err(e) => return bad(format!("the manifest's checkpoint does not verify: {e}")),
        }
    }
    if data.len() as u64 != m.size_bytes || hex::encode(Sha256::digest(data)) != m.sha256 {
        return bad(format!("{}: size or SHA-256 differs from the manifest: the file was altered", m.file));
    }
    let mut raw = Vec::new();
    let undecodable =
        |e: &dyn std::fmt::Display| ArchiveError::Invalid(format!("{}: cannot decompress: {e}", m.file));
    ruzstd::decoding::StreamingDecoder::new(data)
        .map_err(|e| undecodable(&e))?
        .read_to_end(&mut raw)
        .map_err(|e| undecodable(&e))?;
    let events = frames(&raw).map_err(|e| ArchiveError::Invalid(format!("{}: {e}", m.file)))?;
    if events.len() as u64 != m.row_count {
        return bad(format!("{} events, the manifest says {}", events.len(), m.row_count));
    }
    let month = m.month();
    let mut out: Vec<RawRecord> = Vec::with_capacity(events.len());
    for bytes in events {
        let e = canonical::decode(&bytes)
            .map_err(|e| ArchiveError::Invalid(format!("{}: an event does not decode: {e}", m.file)))?;
        if e.org != m.org || Some(month_of(e.time)) != month {
            return bad(format!("seq {}: belongs to another org or month", e.seq));
        }
        if out.last().is_some_and(|p| e.seq <= p.seq) || e.seq < m.first_seq || e.seq > m.last_seq {
            return bad(format!("seq {}: out of order or outside the manifest's seq range", e.seq));
        }
        out.push(RawRecord { time: e.time, seq: e.seq, bytes });
    }
    if out.first().map(|r| r.seq) != Some(m.first_seq) || out.last().map(|r| r.seq) != Some(m.last_seq) {
        return bad("the first or last seq differs from the manifest".into());
    }
    Ok(out)
}

/// What a restore wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    pub rows: u64,
    /// Smallest and largest seq written.
    pub seqs: Option<(u64, u64)>,
    /// The newest checkpoint among the parts read: it covers every restored event.
    pub checkpoint: Option<String>,
    pub parts: usize,
}

impl Restored {
    /// Writes one event as an NDJSON line (the API's form) and counts it.
    fn write(&mut self, rec: &RawRecord, out: &mut impl std::io::Write) -> Result<()> {
        let failed = |e: &dyn std::fmt::Display| {
            ArchiveError::Storage(format!("cannot write the restored events: {e}"))
        };
        canonical::write_json(&rec.bytes, &trail_merkle::leaf_hash(&rec.bytes), &mut *out)
            .map_err(|e| failed(&e))?;
        out.write_all(b"\n").map_err(|e| failed(&e))?;
        self.rows += 1;
        self.seqs = Some(self.seqs.map_or((rec.seq, rec.seq), |(lo, hi)| (lo.min(rec.seq), hi.max(rec.seq))));
        Ok(())
    }
}

/// Writes the org's events with `time` in `[from, to)` that lie before its hot window (`hot_start`) as
/// NDJSON (the API's event form, one per line): first the archived ones, part by part in period then seq
/// order, each part checked against its signed manifest before a line of it is written (a part that
/// fails stops the restore); then those still in the hot store because their month has not wholly left
/// the hot window yet. Each event is written once.
#[allow(
    clippy::too_many_arguments,
    reason = "the window, its sources and the sink; a struct would only rename them"
)]
pub async fn restore(
    archive: &Archive,
    store: &dyn trail_store::Store,
    org: &str,
    from: Micros,
    to: Micros,
    hot_start: Micros,
    key: &Verifier,
    out: &mut impl std::io::Write,
) -> Result<Restored> {
    let to = to.min(hot_start);
    let mut r = Restored::default();
    if from >= to {
        return Ok(r);
    }
    let (first_month, last_month) = (month_of(from), month_of(to - 1));
    let mut written = std::collections::HashSet::new();
    let mut best: Option<(u64, String)> = None;
    for entry in archive.list(Some(org)).await? {
        let Some(month) = entry.manifest.month() else { continue };
        if entry.manifest.org != org || month < first_month || month > last_month {
            continue;
        }
        let data = match archive.data(&entry).await {
            Ok(d) => d,
            // Past its retention and half deleted: not restorable any more.
            Err(ArchiveError::Missing(_)) => continue,
            Err(e) => return Err(e),
        };
        let events = check_part(&entry, &data, Some(key))?;
        r.parts += 1;
        for rec in events {
            if rec.time >= from && rec.time < to && written.insert(rec.seq) {
                r.write(&rec, out)?;
            }
        }
        let size =
            trail_merkle::checkpoint::open(&entry.manifest.checkpoint, key).map(|c| c.size).unwrap_or(0);
        if best.as_ref().is_none_or(|(s, _)| size > *s) {
            best = Some((size, entry.manifest.checkpoint.clone()));
        }
    }
    // Events older than the hot window whose month is still in the hot store.
    let storage = |e: trail_store::StoreError| ArchiveError::Storage(e.to_string());
    let filter = trail_model::query::Filter { from, to, ..trail_model::query::Filter::default() };
    let mut q = trail_model::query::Query { filter, limit: 1000, cursor: None };
    loop {
        let page = store.query_raw(org, &q).await.map_err(storage)?;
        for rec in &page.records {
            if written.insert(rec.seq) {
                r.write(rec, out)?;
            }
        }
        match page.next {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    if let Some((_, hi)) = r.seqs
        && best.as_ref().is_none_or(|(size, _)| *size <= hi)
    {
        // A checkpoint covering the hot events (one follows every append within a second).
        for _ in 0..50 {
            match store.latest_checkpoint(org).await.map_err(storage)? {
                Some(cp) if cp.size > hi => {
                    best = Some((cp.size, cp.note));
                    break;
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    }
    r.checkpoint = best.map(|(_, note)| note);
    Ok(r)
}

#[cfg(test)]
mod golden {
    use super::Manifest;

    /// A part's manifest written by this release: every later release must read it.
    #[test]
    fn archive_manifest_v1_reads_and_writes_back() {
        let text = include_str!("../tests/golden/archive-manifest-v1.json");
        let m = Manifest::parse(text).unwrap();
        assert_eq!(
            (m.org.as_str(), m.period.as_str(), m.first_seq, m.last_seq),
            ("acme", "2025-01", 17, 342)
        );
        assert_eq!(format!("{}\n", serde_json::to_string(&m).unwrap()), text, "written back byte for byte");
        let newer = text.replacen("\"version\":1", "\"version\":2", 1);
        assert_eq!(
            Manifest::parse(&newer).unwrap_err().to_string(),
            "archive part manifest version 2 is not one this trail reads (it reads version 1)"
        );
    }
}
