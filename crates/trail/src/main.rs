//! `trail`: parses arguments, resolves settings, sets up logging, picks the storage backend, and maps
//! errors to an exit code. Everything else lives in the library crates.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use trail_server::{AppState, Server, Settings};
use trail_store::{Scope, Store};
use trail_store_sqlite::SqliteStore;

mod archive;
mod export;
mod import;
mod verify;

/// glibc's allocator spends a third of ingest CPU on the many small JSON allocations; mimalloc does not.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "trail", version, about = "Self-hosted, tamper-evident audit log")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Print a commented configuration file with every default.
    DefaultConfig,
    /// Administration on a data directory (create-key and create-org work while the server runs).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Check that no event was altered, removed or reordered: offline against a data directory, or
    /// against a server with a trusted checkpoint. Exits 0 when verified, 3 when tampering is found,
    /// 1 when verification could not run.
    Verify(VerifyArgs),
    /// Export events from a server to a CSV or NDJSON file with its signed manifest, and verify both.
    Export(export::ExportArgs),
    /// Retention and the archive: run a pass, list archived parts, restore archived events.
    #[command(subcommand)]
    Archive(archive::ArchiveCommand),
    /// Load audit.log files (the integration runtime's format, rolled or compressed) or NDJSON events
    /// into an organization, idempotently. Exits 2 when some lines were skipped.
    Import(import::ImportArgs),
}

#[derive(Args, Debug)]
struct VerifyArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Verify only this organization (required with --server).
    #[arg(long)]
    org: Option<String>,
    /// The log's public key (`<name>+<id>+<key>` from /v1/log-key); default: the data directory's key.
    #[arg(long, value_name = "VERIFIER_KEY")]
    key: Option<String>,
    /// Verify a running server instead of a data directory.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// With --server: a file holding the last checkpoint you trust; the new one must extend it and
    /// replaces it.
    #[arg(long, value_name = "CHECKPOINT_FILE")]
    trusted: Option<PathBuf>,
    /// With --server: an API key with events:read, or a session token (also TRAIL_TOKEN).
    #[arg(long, env = "TRAIL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Verify an export file (with --manifest) instead of a log.
    #[arg(long, value_name = "FILE", requires = "manifest")]
    export: Option<PathBuf>,
    /// The export's signed manifest.
    #[arg(long, value_name = "MANIFEST", requires = "export")]
    manifest: Option<PathBuf>,
    /// Verify archive parts instead of a log: the archive directory or one part's .manifest. With the
    /// data directory present, each archived event is also checked against the leaf the log kept.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["export", "server"])]
    archive: Option<PathBuf>,
    /// Verify a directory of webhook batches a receiver stored (one request body per .json file):
    /// contiguous seqs, every event's leaf, and each batch's proof against its signed checkpoint.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["export", "server", "archive"])]
    stream: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
struct ConfigArgs {
    /// Configuration file (default: ./trail.toml when it exists).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (overrides data_dir).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Address to listen on, e.g. 127.0.0.1:7700 (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Create an API key for an organization and print its secret (shown once).
    CreateKey {
        #[command(flatten)]
        config: ConfigArgs,
        /// Organization slug the key belongs to.
        #[arg(long)]
        org: String,
        /// Comma-separated: events:write, events:read.
        #[arg(long, value_delimiter = ',', default_value = "events:write")]
        scopes: Vec<String>,
        /// A name to recognise the key by in the key list.
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// Create an organization.
    CreateOrg {
        #[command(flatten)]
        config: ConfigArgs,
        /// URL-safe identifier: 2-63 lowercase letters, digits or hyphens.
        #[arg(long)]
        slug: String,
        /// Display name (default: the slug).
        #[arg(long)]
        name: Option<String>,
    },
    /// Rewrite the embedded store's files without their free space, so that they give space back to
    /// the file system from then on (directories made before December 2026 cannot otherwise). Stop
    /// the server first; needs free disk of about twice the largest file.
    Compact {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

fn settings(config: &ConfigArgs, listen: Option<&str>) -> anyhow::Result<Settings> {
    let mut flags = toml::Table::new();
    if let Some(d) = &config.data_dir {
        flags.insert("data_dir".into(), d.display().to_string().into());
    }
    if let Some(l) = listen {
        flags.insert("listen".into(), l.into());
    }
    Ok(Settings::load(config.config.as_deref(), std::env::vars(), flags)?)
}

/// Picks the storage backend from the settings: PostgreSQL for a `postgres://` URL (its migrations run
/// under an advisory lock, so several nodes may start at once), else the embedded store.
fn open_store(s: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let url = s.storage.url.as_str();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // Called from async code on the multi-threaded runtime; connecting is async.
        let store = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(trail_store_postgres::PgStore::connect(url))
        })
        .context("cannot open the PostgreSQL store (storage.url)")?;
        return Ok(Arc::new(store));
    }
    if !url.is_empty() {
        bail!("storage.url must be a postgres:// URL, or empty for the embedded store");
    }
    let store = SqliteStore::open(&s.data_dir)
        .with_context(|| format!("cannot open the data directory {}", s.data_dir.display()))?;
    Ok(Arc::new(store))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutting down: finishing in-flight requests");
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = settings(&args.config, args.listen.as_deref())?;
    tracing::info!(settings = ?settings, "starting");
    let store = open_store(&settings)?;
    let password = std::env::var("TRAIL_ADMIN_PASSWORD").ok().filter(|p| !p.is_empty());
    let generated = trail_server::bootstrap(store.as_ref(), password.as_deref())
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the first organization: {}", e.message))?;
    if let Some(p) = generated {
        // Printed once, to the terminal only: never to the log.
        println!("created the first administrator, admin@localhost with password: {p}");
    }
    let key_file = trail_server::integrity::key_path(&settings);
    let signer = trail_server::integrity::load_or_create_key(&key_file, &settings.server_name)?;
    trail_server::archive::open(&settings).context("cannot open the archive (retention.archive)")?;
    let server = Server::bind(AppState::new(store.clone(), settings.clone(), signer))
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    println!("listening on http://{}", server.local_addr()?);
    server.run(shutdown_signal()).await.context("server failed")?;
    drop(store);
    Ok(())
}

async fn verify(args: VerifyArgs) -> anyhow::Result<verify::Verdict> {
    if let (Some(file), Some(manifest)) = (&args.export, &args.manifest) {
        let key = match (&args.key, &args.server) {
            (Some(k), _) => verify::parse_key(k)?,
            (None, Some(url)) => verify::server_key(url, None).await?,
            (None, None) => {
                let s = settings(&args.config, None)?;
                verify::key_from(None, &trail_server::integrity::key_path(&s), &s.server_name)?
            }
        };
        let server = args.server.as_deref().map(|u| (u, args.token.as_deref()));
        return verify::export(file, manifest, &key, server).await;
    }
    if let Some(dir) = &args.stream {
        let key = match args.key.as_deref() {
            Some(k) => verify::parse_key(k)?,
            None => {
                let s = settings(&args.config, None)?;
                verify::key_from(None, &trail_server::integrity::key_path(&s), &s.server_name)?
            }
        };
        return verify::stream(dir, &key);
    }
    if let Some(path) = &args.archive {
        let s = settings(&args.config, None)?;
        let key =
            verify::key_from(args.key.as_deref(), &trail_server::integrity::key_path(&s), &s.server_name)?;
        return verify::archive(path, &key, Some(&s.data_dir)).await;
    }
    if let Some(url) = &args.server {
        let org = args.org.as_deref().context("--server needs --org")?;
        return verify::server(url, org, args.token.as_deref(), args.key.as_deref(), args.trusted.as_ref())
            .await;
    }
    let s = settings(&args.config, None)?;
    let key = verify::key_from(args.key.as_deref(), &trail_server::integrity::key_path(&s), &s.server_name)?;
    verify::data_dir(&s.data_dir, args.org.as_deref(), &key)
}

async fn admin(cmd: AdminCommand) -> anyhow::Result<()> {
    let now = trail_model::time::now();
    match cmd {
        AdminCommand::CreateKey { config, org, scopes, name } => {
            let store = open_store(&settings(&config, None)?)?;
            let mut parsed = Vec::new();
            for s in &scopes {
                parsed.push(
                    Scope::parse(s.trim())
                        .with_context(|| format!("unknown scope {s:?}; use events:write or events:read"))?,
                );
            }
            if store.org(&org).await?.is_none() {
                bail!("organization {org} does not exist");
            }
            let (key, secret) =
                trail_server::auth::new_api_key(&org, &name, parsed, Some("trail admin".into()), None);
            store.create_api_key(&key).await?;
            cli_audit("api_key.created", "api_key")
                .target(&key.id, Some(key.name.clone()))
                .info("scopes", serde_json::json!(key.scopes.iter().map(Scope::as_str).collect::<Vec<_>>()))
                .append(store.as_ref(), &org)
                .await?;
            println!("{secret}");
        }
        AdminCommand::CreateOrg { config, slug, name } => {
            if !trail_server::routes::valid_slug(&slug) {
                bail!("invalid slug {slug:?}: use 2-63 lowercase letters, digits or hyphens");
            }
            let store = open_store(&settings(&config, None)?)?;
            let name = name.as_deref().unwrap_or(&slug);
            store.create_org(&slug, name, now).await?;
            cli_audit("org.created", "org")
                .target(&slug, Some(name.to_string()))
                .append(store.as_ref(), &slug)
                .await?;
            println!("created organization {slug}");
        }
        AdminCommand::Compact { config } => {
            let s = settings(&config, None)?;
            if !s.storage.url.is_empty() {
                bail!("compact rewrites the embedded store's files; storage.url names a PostgreSQL database");
            }
            let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
            for f in trail_store_sqlite::space::compact(&s.data_dir)? {
                let before = if f.was_incremental { "" } else { ", and gives space back from now on" };
                println!(
                    "{}: {:.1} MiB → {:.1} MiB{before}",
                    f.file,
                    mib(f.bytes_before),
                    mib(f.bytes_after)
                );
            }
        }
    }
    Ok(())
}

/// A self-audit event for a change made with `trail admin`: the actor is the command line, named
/// with the operating-system user who ran it.
fn cli_audit(action: &'static str, target_type: &'static str) -> trail_server::audit::Audit {
    let who =
        std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    trail_server::audit::Audit::new("trail admin", action, target_type)
        .service(Some(format!("trail admin on the command line (OS user {who})")))
}

/// SQLite allocates through the C library, not the Rust allocator above. glibc gives each thread that
/// contends for `malloc` its own arena (up to 8 per core) and keeps what is freed in each: with SQLite
/// caches used from many worker threads, a 30-minute soak held ~390 MB where two arenas hold ~210 MB
/// for the same work (BENCHMARKS.md, "Soak"). An operator's `MALLOC_ARENA_MAX` still wins.
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first thing in main, before any other thread exists; mallopt only sets a
        // tuning parameter of the C allocator.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRAIL_LOG")
                .unwrap_or_else(|_| "info,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await.map(|()| ExitCode::SUCCESS),
            Command::DefaultConfig => {
                print!("{}", Settings::default_config());
                Ok(ExitCode::SUCCESS)
            }
            Command::Admin(cmd) => admin(cmd).await.map(|()| ExitCode::SUCCESS),
            Command::Export(args) => export::run(args).await.map(|v| match v {
                verify::Verdict::Verified => ExitCode::SUCCESS,
                verify::Verdict::Tampered => ExitCode::from(3),
            }),
            Command::Import(args) => import::run(args).await,
            Command::Archive(cmd) => archive::run(cmd).await.map(|v| match v {
                verify::Verdict::Verified => ExitCode::SUCCESS,
                verify::Verdict::Tampered => ExitCode::from(3),
            }),
            Command::Verify(args) => verify(args).await.map(|v| match v {
                verify::Verdict::Verified => ExitCode::SUCCESS,
                verify::Verdict::Tampered => ExitCode::from(3),
            }),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
