//! `trail export`: requests an export from a server, shows its progress, downloads the file and its
//! signed manifest, and verifies them before reporting success.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::verify::{self, Verdict};

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The Trail server, e.g. http://127.0.0.1:7700.
    #[arg(long, value_name = "URL")]
    server: String,
    /// Organization slug.
    #[arg(long)]
    org: String,
    /// An API key with events:read, or a session token (also TRAIL_TOKEN).
    #[arg(long, env = "TRAIL_TOKEN", hide_env_values = true)]
    token: String,
    /// csv (header row, stable columns) or json (one event per line, as the API returns it).
    #[arg(long, value_parser = ["csv", "json"])]
    format: String,
    /// Where to write the file; the manifest goes beside it as FILE.manifest.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,
    /// The name shown in the export history (default: the file name).
    #[arg(long)]
    name: Option<String>,
    /// Start of the window (RFC 3339; default: 24 hours before --to).
    #[arg(long)]
    from: Option<String>,
    /// End of the window (RFC 3339; default: now).
    #[arg(long)]
    to: Option<String>,
    /// Actor id; repeat for OR (likewise every filter below).
    #[arg(long)]
    actor: Vec<String>,
    /// Exact action, or a prefix ending in `*`.
    #[arg(long)]
    action: Vec<String>,
    /// Target type.
    #[arg(long)]
    target_type: Vec<String>,
    /// Target id.
    #[arg(long)]
    target_id: Vec<String>,
    /// Project.
    #[arg(long)]
    project: Vec<String>,
    /// success or failure.
    #[arg(long)]
    outcome: Vec<String>,
    /// Source (console, api, trail, …).
    #[arg(long)]
    source: Vec<String>,
    /// Free-text search.
    #[arg(long)]
    q: Option<String>,
    /// The log's public key to verify the manifest with (default: the server's /v1/log-key).
    #[arg(long, value_name = "VERIFIER_KEY")]
    key: Option<String>,
}

pub async fn run(a: ExportArgs) -> anyhow::Result<Verdict> {
    let client = trail_client::Client::new(&a.server).with_token(&a.token);
    let mut filters = serde_json::Map::new();
    for (k, v) in [("from", &a.from), ("to", &a.to), ("q", &a.q)] {
        if let Some(v) = v {
            filters.insert(k.into(), json!(v));
        }
    }
    for (k, v) in [
        ("actor", &a.actor),
        ("action", &a.action),
        ("target_type", &a.target_type),
        ("target_id", &a.target_id),
        ("project", &a.project),
        ("outcome", &a.outcome),
        ("source", &a.source),
    ] {
        if !v.is_empty() {
            filters.insert(k.into(), json!(v));
        }
    }
    let name = a.name.clone().unwrap_or_else(|| {
        a.output.file_stem().map_or("export".to_string(), |s| s.to_string_lossy().into_owned())
    });
    let org = &a.org;
    let created = client
        .post(
            &format!("/v1/orgs/{org}/exports"),
            &json!({"name": name, "format": a.format, "filters": filters}),
        )
        .await
        .context("the server refused the export")?;
    let id = created["id"].as_str().context("the server answered no export id")?.to_string();
    fetch(&client, &a.server, org, &id, &a.output, a.key.as_deref()).await
}

/// Waits for an export (or restore) to complete, downloads its file to `output` and its manifest
/// beside it, and verifies both.
pub async fn fetch(
    client: &trail_client::Client,
    server: &str,
    org: &str,
    id: &str,
    output: &std::path::Path,
    key: Option<&str>,
) -> anyhow::Result<Verdict> {
    let tty = std::io::stderr().is_terminal();
    let done: Value = loop {
        let e = client.get(&format!("/v1/orgs/{org}/exports/{id}")).await?;
        if tty {
            eprint!("\rexport {id}: {} ", e["status"].as_str().unwrap_or("?"));
            let _ = std::io::stderr().flush();
        }
        match e["status"].as_str() {
            Some("completed") => break e,
            Some("failed") => {
                bail!("the export failed: {}", e["error"].as_str().unwrap_or("no reason given"))
            }
            Some("pending" | "running") => tokio::time::sleep(Duration::from_millis(300)).await,
            other => bail!("unexpected export status {other:?}"),
        }
    };
    if tty {
        eprintln!();
    }
    let mut resp =
        client.request(reqwest::Method::GET, &format!("/v1/orgs/{org}/exports/{id}/download")).send().await?;
    if !resp.status().is_success() {
        bail!("download failed: {} {}", resp.status(), resp.text().await.unwrap_or_default());
    }
    let mut out =
        std::fs::File::create(output).with_context(|| format!("cannot create {}", output.display()))?;
    let total = done["size_bytes"].as_u64().unwrap_or(0);
    let mut got = 0u64;
    while let Some(chunk) = resp.chunk().await? {
        out.write_all(&chunk)?;
        got += chunk.len() as u64;
        if tty {
            eprint!("\rdownloading: {got}/{total} bytes ");
        }
    }
    out.sync_all()?;
    if tty {
        eprintln!();
    }
    let manifest_path = PathBuf::from(format!("{}.manifest", output.display()));
    let manifest = client
        .request(reqwest::Method::GET, &format!("/v1/orgs/{org}/exports/{id}/manifest"))
        .send()
        .await?
        .text()
        .await?;
    std::fs::write(&manifest_path, manifest)
        .with_context(|| format!("cannot write {}", manifest_path.display()))?;
    let key = verify::server_key(server, key).await?;
    println!("{}: {} rows, manifest {}", output.display(), done["row_count"], manifest_path.display());
    verify::export(output, &manifest_path, &key, None).await
}
