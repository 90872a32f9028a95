//! `trail verify`: offline against a data directory, or against a running server with a trusted
//! checkpoint. Exit codes: 0 verified, 3 verified and found tampering, 1 could not verify.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use base64::Engine;
use sha2::Digest;
use trail_merkle::checkpoint::open;
use trail_merkle::{Hash, Verifier};

/// The outcome the exit code reports.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Verified,
    Tampered,
}

/// A progress line on a terminal, nothing otherwise.
struct Bar {
    on: bool,
    started: std::time::Instant,
}

impl Bar {
    fn new() -> Self {
        Self { on: std::io::stderr().is_terminal(), started: std::time::Instant::now() }
    }

    fn draw(&mut self, org: &str, done: u64, total: u64) {
        if !self.on {
            return;
        }
        let pct = (done * 100).checked_div(total).unwrap_or(100).min(100);
        let filled = (pct / 4) as usize;
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        eprint!(
            "\r{org}: [{}{}] {pct:>3}% {done}/{total} events, {rate:.0}/s ",
            "#".repeat(filled),
            ".".repeat(25 - filled)
        );
        let _ = std::io::stderr().flush();
    }

    fn clear(&self) {
        if self.on {
            eprint!("\r\x1b[2K");
        }
    }
}

/// The log's public key as given with `--key` (`<name>+<id>+<key>`).
pub fn parse_key(k: &str) -> anyhow::Result<Verifier> {
    Verifier::from_key(k.trim()).map_err(|e| anyhow::anyhow!("--key is not a verifier key: {e}"))
}

/// `--key` when given, else the server's own `/v1/log-key` — trust on first use, said on stderr.
pub async fn server_key(base: &str, given: Option<&str>) -> anyhow::Result<Verifier> {
    if let Some(k) = given {
        return parse_key(k);
    }
    eprintln!("warning: trusting the server's own /v1/log-key; pin it with --key for a real audit");
    let url = format!("{}/v1/log-key", base.trim_end_matches('/'));
    let text = reqwest::get(&url).await?.error_for_status()?.text().await?;
    Verifier::from_key(text.trim()).map_err(|e| anyhow::anyhow!("the server's log key is malformed: {e}"))
}

/// The log's public key: given, or derived from the data directory's key file.
pub fn key_from(given: Option<&str>, key_file: &std::path::Path, name: &str) -> anyhow::Result<Verifier> {
    if let Some(k) = given {
        return parse_key(k);
    }
    let none = "no log key to verify with; pass --key with the server's /v1/log-key";
    let text = std::fs::read_to_string(key_file)
        .with_context(|| format!("{}: cannot read; {none}", key_file.display()))?;
    let signer = trail_merkle::Signer::from_key_file(name, &text)
        .with_context(|| format!("{}: is not a Trail log key (64 hex digits); {none}", key_file.display()))?;
    Ok(signer.verifier())
}

pub fn data_dir(dir: &std::path::Path, org: Option<&str>, key: &Verifier) -> anyhow::Result<Verdict> {
    let mut bar = Bar::new();
    let started = std::time::Instant::now();
    let reports =
        trail_store_sqlite::verify::verify_data_dir(dir, org, key, &mut |o, d, t| bar.draw(o, d, t))
            .with_context(|| format!("cannot verify {}", dir.display()))?;
    bar.clear();
    let mut verdict = Verdict::Verified;
    let mut total = 0;
    for r in &reports {
        total += r.events;
        match &r.problem {
            None if r.archived > 0 => println!(
                "{}: ok, {} events ({} archived: their kept leaf hashes), {} checkpoints verified",
                r.org, r.events, r.archived, r.checkpoints
            ),
            None => println!("{}: ok, {} events, {} checkpoints verified", r.org, r.events, r.checkpoints),
            Some(p) => {
                verdict = Verdict::Tampered;
                match p.seq {
                    Some(seq) => println!("{}: FAILED at seq {seq}: {}", r.org, p.reason),
                    None => println!("{}: FAILED: {}", r.org, p.reason),
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!("verified {total} events in {secs:.2} s ({:.0} events/s)", total as f64 / secs.max(1e-9));
    Ok(verdict)
}

/// Checks the server's latest checkpoint against a trusted one and saves it as the new trusted one.
pub async fn server(
    url: &str,
    org: &str,
    token: Option<&str>,
    key: Option<&str>,
    trusted: Option<&PathBuf>,
) -> anyhow::Result<Verdict> {
    let mut client = trail_client::Client::new(url);
    if let Some(t) = token {
        client = client.with_token(t);
    }
    let text = |path: String| {
        let c = client.clone();
        async move {
            let r = c
                .request(reqwest::Method::GET, &path)
                .send()
                .await
                .with_context(|| format!("cannot reach {url}"))?;
            let status = r.status();
            let body = r.text().await?;
            if !status.is_success() {
                bail!("{path}: {status}: {}", body.trim());
            }
            Ok::<_, anyhow::Error>(body)
        }
    };
    let verifier = server_key(url, key).await?;
    let note = text(format!("/v1/orgs/{org}/checkpoint")).await?;
    let latest = match open(&note, &verifier) {
        Ok(c) => c,
        Err(e) => {
            println!("{org}: FAILED: the server's checkpoint does not verify with the log key: {e}");
            return Ok(Verdict::Tampered);
        }
    };
    if !latest.origin.ends_with(&format!("/orgs/{org}")) {
        println!("{org}: FAILED: the checkpoint is for {}, not this organization", latest.origin);
        return Ok(Verdict::Tampered);
    }
    let Some(path) = trusted else {
        println!(
            "{org}: checkpoint of {} events verified (no --trusted checkpoint to compare with)",
            latest.size
        );
        return Ok(Verdict::Verified);
    };
    if path.exists() {
        let old_note =
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let old = open(&old_note, &verifier).map_err(|e| {
            anyhow::anyhow!("{}: the trusted checkpoint does not verify: {e}", path.display())
        })?;
        if old.origin != latest.origin {
            bail!("{}: the trusted checkpoint is for {}, not {}", path.display(), old.origin, latest.origin);
        }
        if old.size > latest.size {
            println!(
                "{org}: FAILED: the server's log ({} events) is shorter than the trusted checkpoint ({}): history was rolled back",
                latest.size, old.size
            );
            return Ok(Verdict::Tampered);
        }
        let proof = client
            .get(&format!("/v1/orgs/{org}/proofs/consistency?from={}&to={}", old.size, latest.size))
            .await
            .context("cannot fetch the consistency proof")?;
        let hashes: Vec<Hash> = proof["hashes"]
            .as_array()
            .context("malformed consistency proof")?
            .iter()
            .map(|h| {
                let bytes =
                    base64::engine::general_purpose::STANDARD.decode(h.as_str().unwrap_or_default())?;
                <[u8; 32]>::try_from(bytes).map_err(|_| anyhow::anyhow!("a proof hash is not 32 bytes"))
            })
            .collect::<anyhow::Result<_>>()?;
        if let Err(e) =
            trail_merkle::verify_consistency(old.size, latest.size, &old.root, &latest.root, &hashes)
        {
            println!(
                "{org}: FAILED: the server's history is not an extension of the trusted checkpoint ({e}): it was rewritten"
            );
            return Ok(Verdict::Tampered);
        }
        println!(
            "{org}: checkpoint of {} events is consistent with the trusted one of {} events",
            latest.size, old.size
        );
    } else {
        println!(
            "{org}: checkpoint of {} events verified; saved as the first trusted checkpoint",
            latest.size
        );
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &note)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot save {}", path.display()))?;
    Ok(Verdict::Verified)
}

/// Checks an export file against its signed manifest: signature, size, SHA-256 and row count; for
/// JSON exports every event's leaf hash recomputed from its content, and (with a server) its inclusion
/// in the log under the manifest's signed checkpoint.
pub async fn export(
    file: &std::path::Path,
    manifest: &std::path::Path,
    key: &Verifier,
    server: Option<(&str, Option<&str>)>,
) -> anyhow::Result<Verdict> {
    let note =
        std::fs::read_to_string(manifest).with_context(|| format!("cannot read {}", manifest.display()))?;
    let fail = |why: String| {
        println!("{}: FAILED: {why}", file.display());
        Ok(Verdict::Tampered)
    };
    let text = match key.open_note(&note) {
        Ok(t) => t,
        Err(e) => return fail(format!("the manifest's signature does not verify with the log key: {e}")),
    };
    let m = trail_model::export::ExportManifest::parse(text).context("cannot read the manifest")?;
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    if m.size_bytes != bytes.len() as u64 {
        return fail(format!("the file has {} bytes, the manifest says {}", bytes.len(), m.size_bytes));
    }
    let sha: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    if m.sha256 != sha {
        return fail("the file's SHA-256 differs from the manifest's: it was altered".into());
    }
    let checkpoint = match m.checkpoint.as_deref() {
        Some(n) => match open(n, key) {
            Ok(c) => Some(c),
            Err(e) => return fail(format!("the manifest's checkpoint does not verify: {e}")),
        },
        None => None,
    };
    let rows = m.row_count;
    if m.format != trail_model::export::ExportFormat::Json {
        println!("{}: ok, {rows} rows; size, SHA-256 and signature match the manifest", file.display());
        return Ok(Verdict::Verified);
    }
    let text = String::from_utf8(bytes).context("the export is not UTF-8")?;
    let org = m.org.as_str();
    let client = server.map(|(url, token)| {
        let c = trail_client::Client::new(url);
        token.map_or(c.clone(), |t| c.with_token(t))
    });
    let mut count = 0u64;
    for (i, line) in text.lines().enumerate() {
        count += 1;
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("line {} is not JSON", i + 1))?;
        let event = match trail_model::StoredEvent::from_json(&v) {
            Ok(e) => e,
            Err(e) => return fail(format!("line {}: {e}", i + 1)),
        };
        let leaf = trail_merkle::leaf_hash(&trail_model::canonical::encode(&event));
        let stated = base64::engine::general_purpose::STANDARD
            .decode(v["leaf_hash"].as_str().unwrap_or_default())
            .unwrap_or_default();
        if event.org != org || stated != leaf {
            return fail(format!(
                "line {} (seq {}): the event does not hash to its leaf_hash: it was altered",
                i + 1,
                event.seq
            ));
        }
        if let (Some(c), Some(cp)) = (&client, &checkpoint) {
            let proof = c
                .get(&format!("/v1/orgs/{org}/proofs/inclusion?seq={}&tree_size={}", event.seq, cp.size))
                .await
                .context("cannot fetch an inclusion proof")?;
            let hashes: Vec<Hash> = proof["hashes"]
                .as_array()
                .context("malformed proof")?
                .iter()
                .filter_map(|h| {
                    base64::engine::general_purpose::STANDARD.decode(h.as_str()?).ok()?.try_into().ok()
                })
                .collect();
            if trail_merkle::verify_inclusion(&leaf, event.seq, cp.size, &hashes, &cp.root).is_err() {
                return fail(format!(
                    "line {} (seq {}): not in the log under the manifest's checkpoint",
                    i + 1,
                    event.seq
                ));
            }
        }
    }
    if count != rows {
        return fail(format!("the file has {count} events, the manifest says {rows}"));
    }
    let scope = if client.is_some() {
        "leaf hashes and inclusion proofs"
    } else {
        "leaf hashes (pass --server for inclusion proofs)"
    };
    println!("{}: ok, {count} events; signature, size, SHA-256 and {scope} verified", file.display());
    Ok(Verdict::Verified)
}

/// Checks archive parts offline: each manifest's signature and checkpoint, the file's size and SHA-256,
/// and every event inside; with the data directory at hand, also that each archived event's leaf is
/// the one the log kept for its seq (so the archive holds exactly what the tree committed to).
/// `path` is the archive directory, or one part's `.manifest`.
pub async fn archive(
    path: &std::path::Path,
    key: &Verifier,
    data_dir: Option<&std::path::Path>,
) -> anyhow::Result<Verdict> {
    let (root, only) = if path.is_file() {
        let root = path
            .ancestors()
            .nth(3)
            .context("a part's manifest lies at <archive>/<org>/<YYYY-MM>/<part>.manifest")?;
        (root.to_path_buf(), Some(path.strip_prefix(root)?.to_string_lossy().replace('\\', "/")))
    } else {
        (path.to_path_buf(), None)
    };
    let archive = trail_archive::Archive::local(&root)?;
    let entries: Vec<_> = archive
        .list(None)
        .await?
        .into_iter()
        .filter(|e| only.as_ref().is_none_or(|o| *o == e.manifest_path))
        .collect();
    if entries.is_empty() {
        anyhow::bail!("no archive parts under {}", path.display());
    }
    let db = data_dir.filter(|d| d.join(trail_store_sqlite::DB_FILE).exists());
    let mut kept: std::collections::HashMap<String, std::collections::BTreeMap<u64, Hash>> =
        Default::default();
    let (mut parts, mut events) = (0usize, 0u64);
    for entry in &entries {
        let fail = |why: String| {
            println!("{}: FAILED: {why}", entry.manifest_path);
            Ok(Verdict::Tampered)
        };
        let data = match archive.data(entry).await {
            Ok(d) => d,
            Err(e) => return fail(format!("cannot read the data file: {e}")),
        };
        let records = match trail_archive::check_part(entry, &data, Some(key)) {
            Ok(r) => r,
            Err(e) => return fail(e.to_string()),
        };
        if let Some(dir) = db {
            let org = &entry.manifest.org;
            if !kept.contains_key(org) {
                kept.insert(org.clone(), trail_store_sqlite::verify::pruned_leaves(dir, org)?);
            }
            for r in &records {
                if kept[org].get(&r.seq) != Some(&trail_merkle::leaf_hash(&r.bytes)) {
                    return fail(format!("seq {}: not the event the log committed to at that seq", r.seq));
                }
            }
        }
        parts += 1;
        events += records.len() as u64;
    }
    let scope = if db.is_some() { "; every event matches the leaf the log kept" } else { "" };
    println!(
        "{}: ok, {parts} parts, {events} events; signatures, checkpoints, SHA-256 and contents verified{scope}",
        path.display()
    );
    Ok(Verdict::Verified)
}

/// Checks a directory of webhook batches as a receiver stored them (one request body per `*.json`
/// file): per org, that the batches join into one contiguous range of seqs, that every event hashes
/// to its leaf, and that each batch's leaves, on top of its frontier, make a tree the signed
/// checkpoint extends (its consistency proof). Names the first gap or mismatch.
pub fn stream(dir: &std::path::Path, key: &Verifier) -> anyhow::Result<Verdict> {
    use std::collections::BTreeMap;
    use trail_model::siem::Batch;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no batches (*.json)", dir.display());
    }
    let fail = |why: String| {
        println!("{}: FAILED: {why}", dir.display());
        Ok(Verdict::Tampered)
    };
    let mut by_org: BTreeMap<String, Vec<(String, Batch)>> = BTreeMap::new();
    for f in &files {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        let batch: Batch = match serde_json::from_slice(&bytes) {
            Ok(b) => b,
            Err(e) => return fail(format!("{name} is not a Trail batch: {e}")),
        };
        if batch.trail_batch != Batch::VERSION {
            return fail(format!(
                "{name}: batch version {} is not one this trail reads (1)",
                batch.trail_batch
            ));
        }
        by_org.entry(batch.org.clone()).or_default().push((name, batch));
    }
    for (org, mut batches) in by_org {
        batches.sort_by_key(|(name, b)| (b.first_seq, b.last_seq, name.clone()));
        let start = batches[0].1.first_seq;
        let (mut next, mut events, mut skipped, mut signed_to) = (start, 0u64, 0u64, 0u64);
        for (name, b) in &batches {
            if b.first_seq > next {
                return fail(format!(
                    "{org}: seq {next} to {} are missing: no batch covers them (the next is {name})",
                    b.first_seq - 1
                ));
            }
            match check_batch(b, key) {
                Ok(size) => signed_to = signed_to.max(size),
                Err(why) => {
                    return fail(format!("{name} ({org}, seq {}-{}): {why}", b.first_seq, b.last_seq));
                }
            }
            if b.last_seq >= next {
                // Count only what this batch adds (a batch sent again repeats what came before).
                let new = |seq: u64| seq >= next;
                events += b.events.iter().filter_map(|v| b.trail_event(v).ok()).filter(|e| new(e.seq)).count()
                    as u64;
                skipped += b.skipped.iter().filter(|s| new(s.seq)).count() as u64;
                next = b.last_seq + 1;
            }
        }
        println!(
            "{}: ok, {org}: seq {start} to {} complete ({events} events, {skipped} filtered or archived) in {} batches, each proven against checkpoints up to size {signed_to}",
            dir.display(),
            next - 1,
            batches.len()
        );
    }
    Ok(Verdict::Verified)
}

/// One batch on its own: leaves, frontier, checkpoint signature and consistency. The checkpoint's size.
fn check_batch(b: &trail_model::siem::Batch, key: &Verifier) -> Result<u64, String> {
    let b64 = |s: &str| -> Result<Hash, String> {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| format!("{s:?} is not a base64 SHA-256 hash"))
    };
    if b.last_seq < b.first_seq {
        return Err("last_seq is below first_seq".into());
    }
    let len = b.last_seq - b.first_seq + 1;
    if b.events.len() as u64 + b.skipped.len() as u64 != len {
        return Err(format!(
            "{} events and {} skipped leaves do not cover the {len} seqs of the range",
            b.events.len(),
            b.skipped.len()
        ));
    }
    let mut leaves: Vec<Option<Hash>> = vec![None; len as usize];
    let mut place = |seq: u64, leaf: Hash| -> Result<(), String> {
        let slot = seq
            .checked_sub(b.first_seq)
            .and_then(|i| leaves.get_mut(i as usize))
            .ok_or_else(|| format!("seq {seq} lies outside the batch's range"))?;
        if slot.replace(leaf).is_some() {
            return Err(format!("seq {seq} appears twice"));
        }
        Ok(())
    };
    for v in &b.events {
        let e = b.trail_event(v).map_err(|e| format!("an event cannot be read: {e}"))?;
        if e.org != b.org {
            return Err(format!("seq {} belongs to org {}, not {}", e.seq, e.org, b.org));
        }
        place(e.seq, trail_merkle::leaf_hash(&trail_model::canonical::encode(&e)))?;
    }
    for s in &b.skipped {
        place(s.seq, b64(&s.leaf_hash)?)?;
    }
    let frontier: Vec<Hash> = b.frontier.iter().map(|h| b64(h)).collect::<Result<_, _>>()?;
    let mut tree = trail_merkle::Frontier::from_parts(b.first_seq, frontier)
        .map_err(|e| format!("its frontier is malformed: {e}"))?;
    for leaf in leaves.into_iter().flatten() {
        tree.append(leaf);
    }
    let cp = open(&b.checkpoint, key)
        .map_err(|e| format!("its checkpoint does not verify with the log key: {e}"))?;
    if !cp.origin.ends_with(&format!("/orgs/{}", b.org)) {
        return Err(format!("its checkpoint is for {}, not this org's log", cp.origin));
    }
    if cp.size <= b.last_seq {
        return Err(format!("its checkpoint (size {}) does not cover seq {}", cp.size, b.last_seq));
    }
    let proof: Vec<Hash> = b.consistency.iter().map(|h| b64(h)).collect::<Result<_, _>>()?;
    trail_merkle::verify_consistency(b.last_seq + 1, cp.size, &tree.root(), &cp.root, &proof).map_err(|e| {
        format!("its events are not the log's: the tree they make is not one the signed checkpoint extends ({e}); an event was altered, dropped or forged")
    })?;
    Ok(cp.size)
}
