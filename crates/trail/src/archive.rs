//! `trail archive`: one retention pass offline, the list of archived parts, and restores of archived
//! events to an NDJSON file with its signed manifest, from a data directory or through a server.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use sha2::Digest;
use trail_model::time::{format_rfc3339, now, parse_rfc3339};
use trail_server::retention::Retention;
use trail_store::Export;

use crate::verify::{self, Verdict};
use crate::{ConfigArgs, open_store, settings};

#[derive(Subcommand, Debug)]
pub enum ArchiveCommand {
    /// Run one retention pass now: archive months past hot retention, delete parts past archive
    /// retention (except under legal hold). Safe to run while the server runs, and to interrupt.
    Run {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List an organization's archived parts.
    List {
        #[command(flatten)]
        source: Source,
        #[arg(long)]
        org: String,
    },
    /// Bring archived events of a window back as an NDJSON file with its signed manifest beside it
    /// (FILE.manifest), then verify both.
    Restore {
        #[command(flatten)]
        source: Source,
        #[arg(long)]
        org: String,
        /// Start of the window (RFC 3339).
        #[arg(long)]
        from: String,
        /// End of the window (RFC 3339, exclusive).
        #[arg(long)]
        to: String,
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
    },
}

/// Where the archive is read: a data directory (default) or a server.
#[derive(Args, Debug)]
pub struct Source {
    #[command(flatten)]
    config: ConfigArgs,
    /// Go through a running server instead of the data directory.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// With --server: an API key with events:read, or a session token (also TRAIL_TOKEN).
    #[arg(long, env = "TRAIL_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl Source {
    fn client(&self) -> Option<anyhow::Result<(trail_client::Client, &str)>> {
        let url = self.server.as_deref()?;
        Some(match &self.token {
            Some(t) => Ok((trail_client::Client::new(url).with_token(t), url)),
            None => Err(anyhow::anyhow!("--server needs --token (or TRAIL_TOKEN)")),
        })
    }
}

pub async fn run(cmd: ArchiveCommand) -> anyhow::Result<Verdict> {
    match cmd {
        ArchiveCommand::Run { config } => {
            let s = settings(&config, None)?;
            let store = open_store(&s)?;
            let signer = trail_server::integrity::load_or_create_key(
                &trail_server::integrity::key_path(&s),
                &s.server_name,
            )?;
            let archive = trail_server::archive::open(&s).context("cannot open the archive")?;
            let r = Retention::new(store, archive, Arc::new(signer), &s.server_name, s.retention.clone());
            let report =
                r.run_pass(now()).await.context("the retention pass stopped; run it again to finish")?;
            println!(
                "archived {} events ({} months, {} parts); deleted {} expired parts ({} events)",
                report.archived_events,
                report.archived_months.len(),
                report.parts_written,
                report.deleted_parts,
                report.deleted_events
            );
            for org in &report.held {
                println!("{org}: under legal hold, nothing deleted");
            }
            Ok(Verdict::Verified)
        }
        ArchiveCommand::List { source, org } => {
            let parts = match source.client() {
                Some(c) => {
                    let (client, _) = c?;
                    client.get(&format!("/v1/orgs/{org}/archives")).await?["parts"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                }
                None => {
                    let s = settings(&source.config, None)?;
                    let archive = trail_server::archive::open(&s).context("cannot open the archive")?;
                    archive
                        .list(Some(&org))
                        .await?
                        .into_iter()
                        .map(|e| {
                            let m = e.manifest;
                            json!({"period": m.period, "first_seq": m.first_seq, "last_seq": m.last_seq,
                                   "row_count": m.row_count, "size_bytes": m.size_bytes, "archived_at": m.archived_at})
                        })
                        .collect()
                }
            };
            println!(
                "{:<8} {:>12} {:>12} {:>9} {:>11}  archived at",
                "period", "first seq", "last seq", "events", "bytes"
            );
            for p in &parts {
                println!(
                    "{:<8} {:>12} {:>12} {:>9} {:>11}  {}",
                    p["period"].as_str().unwrap_or("?"),
                    p["first_seq"],
                    p["last_seq"],
                    p["row_count"],
                    p["size_bytes"],
                    p["archived_at"].as_str().unwrap_or("?")
                );
            }
            if parts.is_empty() {
                println!("(no archived events for {org})");
            }
            Ok(Verdict::Verified)
        }
        ArchiveCommand::Restore { source, org, from, to, output } => {
            let window = |s: &str, name: &str| {
                parse_rfc3339(s).with_context(|| {
                    format!("--{name} {s:?} is not an RFC 3339 time, e.g. 2025-01-01T00:00:00Z")
                })
            };
            let (from_t, to_t) = (window(&from, "from")?, window(&to, "to")?);
            if from_t >= to_t {
                bail!("--from must be before --to");
            }
            if let Some(c) = source.client() {
                let (client, url) = c?;
                let created = client
                    .post(&format!("/v1/orgs/{org}/archives/restore"), &json!({"from": from, "to": to}))
                    .await
                    .context("the server refused the restore")?;
                let id = created["id"].as_str().context("the server answered no export id")?;
                return crate::export::fetch(&client, url, &org, id, &output, None).await;
            }
            let s = settings(&source.config, None)?;
            let signer =
                trail_server::integrity::read_key(&trail_server::integrity::key_path(&s), &s.server_name)?;
            let archive = trail_server::archive::open(&s).context("cannot open the archive")?;
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(&output)
                    .with_context(|| format!("cannot create {}", output.display()))?,
            );
            let key = signer.verifier();
            let store = open_store(&s)?;
            let policy =
                trail_server::retention::Policy::of(&s.retention, store.org_settings(&org).await?.as_ref());
            let hot_start = policy.hot_start(now());
            let r = trail_server::archive::restore(
                &archive,
                store.as_ref(),
                &org,
                from_t,
                to_t,
                hot_start,
                &key,
                &mut file,
            )
            .await?;
            file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            let bytes = std::fs::read(&output)?;
            let filters = json!({"from": format_rfc3339(from_t), "to": format_rfc3339(to_t)});
            let name = output.file_name().map_or("restore".into(), |n| n.to_string_lossy().into_owned());
            let e = Export::pending(
                trail_server::auth::random_id(),
                &org,
                &name,
                trail_store::ExportFormat::Json,
                trail_store::ExportKind::Restore,
                filters,
                "trail archive restore".into(),
                now(),
            );
            let contents = trail_server::exports::Contents {
                window: (from_t, to_t),
                rows: r.rows,
                bytes: bytes.len() as u64,
                sha256: hex::encode(sha2::Sha256::digest(&bytes)),
                seqs: r.seqs,
                checkpoint: r.checkpoint,
                self_audit_from: store.self_audit_from(&org).await?,
            };
            let note = trail_server::exports::sign_manifest(&signer, &e, &contents, now())
                .map_err(anyhow::Error::msg)?;
            let manifest = PathBuf::from(format!("{}.manifest", output.display()));
            std::fs::File::create(&manifest)
                .and_then(|mut f| f.write_all(note.as_bytes()).and_then(|()| f.sync_all()))
                .with_context(|| format!("cannot write {}", manifest.display()))?;
            println!(
                "{}: {} events from {} parts, manifest {}",
                output.display(),
                r.rows,
                r.parts,
                manifest.display()
            );
            verify::export(&output, &manifest, &key, None).await
        }
    }
}
