//! The log signing key and the checkpointer: a background task that signs a C2SP checkpoint for every
//! org whose log grew, within a second of the append.
//!
//! The key is an Ed25519 seed kept as 64 hex digits in `<data_dir>/log.key` (mode 0600), created on
//! first start, or read from `integrity.key_file`. Its public half is served at `/v1/log-key` in the
//! signed-note verifier format, so auditors can pin it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use trail_merkle::{Checkpoint, Signer};
use trail_model::time::now;
use trail_store::{Store, StoreError, StoredCheckpoint};

use crate::Settings;

/// How often the checkpointer looks for grown logs; a checkpoint follows an append within this.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// Where the signing key lives for these settings.
pub fn key_path(settings: &Settings) -> PathBuf {
    if settings.integrity.key_file.as_os_str().is_empty() {
        settings.data_dir.join("log.key")
    } else {
        settings.integrity.key_file.clone()
    }
}

/// A key problem, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

/// Reads an existing signing key (the file format is `Signer::from_key_file`'s).
pub fn read_key(path: &Path, name: &str) -> Result<Signer, KeyError> {
    let bad = |m: String| KeyError(format!("{}: {m}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    Signer::from_key_file(name, &text).ok_or_else(|| bad("is not a Trail log key (64 hex digits)".into()))
}

/// Reads the signing key, creating it (mode 0600) when the file does not exist.
pub fn load_or_create_key(path: &Path, name: &str) -> Result<Signer, KeyError> {
    let bad = |m: String| KeyError(format!("{}: {m}", path.display()));
    match std::fs::metadata(path) {
        Ok(_) => read_key(path, name),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let signer = Signer::generate(name, &mut rand::rngs::OsRng).map_err(|e| bad(e.to_string()))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
            }
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(path).map_err(|e| bad(format!("cannot create: {e}")))?;
            let hex: String = signer.secret_bytes().iter().map(|b| format!("{b:02x}")).collect();
            f.write_all(format!("{hex}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| bad(e.to_string()))?;
            tracing::info!(path = %path.display(), "created the log signing key");
            Ok(signer)
        }
        Err(e) => Err(bad(format!("cannot read: {e}"))),
    }
}

/// The checkpoint origin of an org: `<server_name>/orgs/<org>`.
pub fn origin(server_name: &str, org: &str) -> String {
    format!("{server_name}/orgs/{org}")
}

/// Signs and stores a checkpoint for every org whose log grew; returns how many were signed.
pub async fn checkpoint_once(
    store: &dyn Store,
    signer: &Signer,
    server_name: &str,
) -> Result<usize, StoreError> {
    let mut signed = 0;
    for (org, size) in store.unsigned_heads().await? {
        let root = store.root(&org, size).await?;
        let note = signer
            .sign(&Checkpoint { origin: origin(server_name, &org), size, root })
            .map_err(|e| StoreError::Internal(format!("cannot sign a checkpoint: {e}")))?;
        match store.add_checkpoint(&org, &StoredCheckpoint { size, root, note, created_at: now() }).await {
            Ok(()) => signed += 1,
            // Another node signed this size first with a different root: that can only mean storage
            // disagrees with itself, which an operator must look at.
            Err(StoreError::Conflict(m)) => {
                tracing::error!(org = %org, size, error = %m, "checkpoint conflict")
            }
            Err(e) => return Err(e),
        }
    }
    Ok(signed)
}

/// Runs [`checkpoint_once`] every [`CHECKPOINT_INTERVAL`] until the task is dropped.
/// Each pass that signs every log records when it began (`Metrics::checkpoint_covered_at`).
pub async fn run_checkpointer(
    store: std::sync::Arc<dyn Store>,
    signer: std::sync::Arc<Signer>,
    server_name: String,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) {
    let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let began = now();
        match checkpoint_once(store.as_ref(), &signer, &server_name).await {
            Ok(_) => {
                metrics.checkpoint_covered_at.store(began.max(0) as u64, std::sync::atomic::Ordering::Relaxed)
            }
            Err(e) => tracing::warn!(error = %e, "checkpointing failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.key");
        let a = load_or_create_key(&path, "trail.test").unwrap();
        let b = load_or_create_key(&path, "trail.test").unwrap();
        assert_eq!(a.verifier_key(), b.verifier_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(&path, "not a key").unwrap();
        let e = load_or_create_key(&path, "trail.test").unwrap_err().to_string();
        assert!(e.contains("log.key") && e.contains("64 hex digits"), "{e}");
    }
}
