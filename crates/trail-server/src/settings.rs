//! Configuration, resolved once at start: built-in defaults < `trail.toml` < `TRAIL_*` environment <
//! command-line flags. Environment keys map to TOML paths with `__` between levels
//! (`TRAIL_STORAGE__URL` → `storage.url`, `TRAIL_LISTEN` → `listen`). Secrets are redacted in `Debug`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Every setting of `trail serve`.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where the embedded store, keys and exports live.
    pub data_dir: PathBuf,
    /// This server's public name: checkpoint origins are `<server_name>/orgs/<org>`.
    pub server_name: String,
    /// Base URL people reach this server at, for links in invitations; empty means `http://<listen>`.
    pub public_url: String,
    pub storage: StorageSettings,
    pub auth: AuthSettings,
    pub limits: LimitSettings,
    pub retention: RetentionSettings,
    pub integrity: IntegritySettings,
    pub smtp: SmtpSettings,
    pub exports: ExportSettings,
    pub sinks: SinksSettings,
    pub streaming: StreamingSettings,
}

/// Streaming to destinations (README "Stream to your SIEM").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingSettings {
    /// A destination failing for this long is paused (with the reason) until someone resumes it.
    pub pause_after_secs: u64,
    /// The longest wait between retries (they start at 1 s and double, with jitter).
    pub max_backoff_secs: u64,
    /// Most events in one batch (a webhook POST, a syslog write; a HEC request takes at most 1,000,
    /// within Splunk's default request size). Larger batches keep up with faster ingest.
    pub batch_max_events: usize,
    /// Destinations one org may have.
    pub max_per_org: usize,
}

impl Default for StreamingSettings {
    fn default() -> Self {
        Self { pause_after_secs: 24 * 3600, max_backoff_secs: 300, batch_max_events: 5000, max_per_org: 10 }
    }
}

/// Copies of the log outside the store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SinksSettings {
    pub file: FileSinkSettings,
}

/// The `audit.log` file sink (PRODUCT.md §9); off while `path` is empty.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FileSinkSettings {
    /// The active file, e.g. /var/log/trail/audit.log; rolled files go beside it.
    pub path: String,
    /// Roll when the file would pass this size (10MB, 512KB, bytes).
    pub max_size: String,
    /// Rolled files kept; the oldest are deleted.
    pub max_files: usize,
    /// `runtime` (the integration runtime's line format) or `json` (one full event per line).
    pub format: String,
    /// Compress rolled files: none, gzip or zstd.
    pub compress: String,
    /// Zone for line times and the midnight roll (IANA name); empty for the system's zone.
    pub time_zone: String,
    /// On the sink's first start, also write every event already stored (else start at the end).
    pub from_start: bool,
    /// With `format = "runtime"`: `audit_log` writes sign-ins like every event (an `{AUDIT_LOG}`
    /// JSON line); `carbon` writes them in the runtime's older shape (`admin logged in at […]`), which
    /// existing log parsers read.
    pub sign_in_lines: String,
}

impl Default for FileSinkSettings {
    fn default() -> Self {
        Self {
            path: String::new(),
            max_size: "10MB".into(),
            max_files: 20,
            format: "runtime".into(),
            compress: "none".into(),
            time_zone: String::new(),
            from_start: false,
            sign_in_lines: "audit_log".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ExportSettings {
    /// Completed export files are deleted after this many hours.
    pub keep_hours: u64,
    /// Exports running at once; more wait as pending.
    pub max_running: usize,
    /// Exports of one org running at once, so one org cannot take every place.
    pub max_running_per_org: usize,
    /// Exports of one org pending or running; more are refused (429 `too_many_exports`).
    pub max_pending_per_org: usize,
    /// Bytes of completed export files one org may keep; further exports are refused, and one that
    /// would pass it while running fails.
    pub max_bytes_per_org: u64,
    /// Where export files go: empty for `<data_dir>/exports`. Several nodes on one database must share
    /// it (a shared volume), so an export run by one node downloads from any.
    pub dir: String,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self {
            keep_hours: 7 * 24,
            max_running: 2,
            max_running_per_org: 1,
            max_pending_per_org: 10,
            max_bytes_per_org: 5 << 30,
            dir: String::new(),
        }
    }
}

/// Where invitation and alert emails go. Without a host, the inviting admin is shown the link instead
/// and alert rules notify by webhook and in the log only.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSettings {
    /// SMTP server host; empty disables email.
    pub host: String,
    pub port: u16,
    /// The envelope and header sender.
    pub from: String,
    /// `none` (a local relay), `starttls` (upgrade, required) or `tls` (implicit TLS, port 465).
    pub tls: String,
    /// Authenticate (PLAIN or LOGIN) with these, after TLS; empty: no authentication.
    pub username: String,
    pub password: String,
    /// A PEM CA file trusted besides the system's roots (a private mail server).
    pub ca_file: String,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 25,
            from: "trail@localhost".into(),
            tls: "none".into(),
            username: String::new(),
            password: String::new(),
            ca_file: String::new(),
        }
    }
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("from", &self.from)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &if self.password.is_empty() { "" } else { "<redacted>" })
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct IntegritySettings {
    /// The Ed25519 log signing key (64 hex digits); empty means `<data_dir>/log.key`, created on first start.
    pub key_file: PathBuf,
}

#[derive(Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// Empty for the embedded store; `postgres://…` for the scale-out backend.
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Sessions expire after this many minutes without use.
    pub session_idle_minutes: u64,
    /// Sessions expire this many hours after sign-in whatever their use.
    pub session_max_hours: u64,
    /// Mark the session cookie `Secure` (serve behind TLS).
    pub secure_cookies: bool,
    /// Invitation links stay valid this many days.
    pub invitation_days: u64,
    /// The server's OpenID Connect provider, for server administrators (orgs configure their own).
    pub sso: ServerSsoSettings,
}

/// Single sign-on of server administrators with an OpenID Connect provider (empty issuer: off).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSsoSettings {
    /// The provider's issuer URL (https://, or http:// to this machine); discovery is read from it.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// Scopes asked for besides `openid`.
    pub scopes: Vec<String>,
    /// The ID-token claim listing the person's groups at the provider.
    pub groups_claim: String,
    /// People in one of these provider groups sign in as server administrators; nobody else can.
    pub admin_groups: Vec<String>,
}

impl Default for ServerSsoSettings {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            client_id: String::new(),
            client_secret: String::new(),
            scopes: vec!["email".into(), "profile".into()],
            groups_claim: "groups".into(),
            admin_groups: Vec::new(),
        }
    }
}

impl std::fmt::Debug for ServerSsoSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSsoSettings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &if self.client_secret.is_empty() { "" } else { "<redacted>" })
            .field("scopes", &self.scopes)
            .field("groups_claim", &self.groups_claim)
            .field("admin_groups", &self.admin_groups)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Requests taking longer are answered 408 and cancelled.
    pub request_timeout_secs: u64,
    /// Most events in one batch.
    pub max_batch_events: usize,
    /// Ingest requests handled at once; more are answered 503 with Retry-After instead of queueing,
    /// which bounds memory (each may hold a body of max_body_bytes).
    pub max_concurrent_ingest: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Days events stay queryable (hot), for orgs that did not set their own.
    pub hot_days: u32,
    /// Days archived events are kept after leaving the hot store, for orgs that did not set their own.
    pub archive_days: u32,
    /// Bounds for an org's own `hot_days` and `archive_days`.
    pub min_days: u32,
    pub max_days: u32,
    /// Seconds between retention passes; 0 disables the job (run `trail archive run` instead).
    pub interval_secs: u64,
    /// Where archives go: empty for `<data_dir>/archive`, a directory, or `s3://bucket/prefix`
    /// (with the `s3` cargo feature; credentials from the usual `AWS_*` variables).
    pub archive: String,
    /// An S3-compatible endpoint (MinIO, Ceph, moto); empty for AWS.
    pub s3_endpoint: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            data_dir: PathBuf::from("./trail-data"),
            server_name: "trail.localhost".into(),
            public_url: String::new(),
            storage: StorageSettings::default(),
            auth: AuthSettings::default(),
            limits: LimitSettings::default(),
            retention: RetentionSettings::default(),
            integrity: IntegritySettings::default(),
            smtp: SmtpSettings::default(),
            exports: ExportSettings::default(),
            sinks: SinksSettings::default(),
            streaming: StreamingSettings::default(),
        }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            session_idle_minutes: 60,
            session_max_hours: 12,
            secure_cookies: false,
            invitation_days: 7,
            sso: ServerSsoSettings::default(),
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            request_timeout_secs: 30,
            max_batch_events: 1000,
            max_concurrent_ingest: 32,
        }
    }
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            hot_days: 365,
            archive_days: 365,
            min_days: 1,
            max_days: 3650,
            interval_secs: 3600,
            archive: String::new(),
            s3_endpoint: String::new(),
        }
    }
}

impl RetentionSettings {
    /// Checks one org's requested days against the server's bounds.
    pub fn check_days(&self, field: &str, days: u32) -> Result<(), String> {
        if days < self.min_days || days > self.max_days {
            return Err(format!(
                "{field} must be between {} and {} days (the server's bounds)",
                self.min_days, self.max_days
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for StorageSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageSettings").field("url", &redact_database_url(&self.url)).finish()
    }
}

/// A database connection string with every password replaced by `***`: in the URL's user info
/// (`postgres://user:secret@host`), as a parameter (`?password=secret`), or in keyword form
/// (`host=db password='secret'`).
pub fn redact_database_url(url: &str) -> String {
    let mut out = match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
            match rest[..authority_end].rsplit_once('@') {
                Some((userinfo, _)) if userinfo.contains(':') => {
                    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
                    format!("{scheme}://{user}:***@{}", &rest[userinfo.len() + 1..])
                }
                _ => url.to_string(),
            }
        }
        None => url.to_string(),
    };
    // `password=…` anywhere (a query parameter or a keyword), its value up to `&` or whitespace, or
    // to the closing quote when quoted.
    let mut from = 0;
    while let Some(i) = out[from..].to_ascii_lowercase().find("password").map(|i| i + from) {
        let after = &out[i + "password".len()..];
        let eq = after.len() - after.trim_start().len();
        if !after.trim_start().starts_with('=') {
            from = i + "password".len();
            continue;
        }
        let value_start = i + "password".len() + eq + 1;
        let value = &out[value_start..];
        let skip = value.len() - value.trim_start().len();
        let value = value.trim_start();
        let len = match value.strip_prefix('\'') {
            Some(quoted) => quoted.find('\'').map_or(value.len(), |e| e + 2),
            None => value.find(|c: char| c == '&' || c.is_whitespace()).unwrap_or(value.len()),
        };
        let start = value_start + skip;
        out.replace_range(start..start + len, "***");
        from = start + 3;
    }
    out
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("server_name", &self.server_name)
            .field("public_url", &self.public_url)
            .field("smtp", &self.smtp)
            .field("exports", &self.exports)
            .field("storage", &self.storage)
            .field("auth", &self.auth)
            .field("limits", &self.limits)
            .field("retention", &self.retention)
            .field("integrity", &self.integrity)
            .field("sinks", &self.sinks)
            .finish()
    }
}

/// A configuration problem, naming where it came from.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(String);

impl Settings {
    /// Resolves settings from the layers. `file` is read if given (it must exist) or if
    /// `./trail.toml` exists; `env` is the process environment; `flags` are already-parsed overrides.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: toml::Table,
    ) -> Result<Self, SettingsError> {
        let mut merged =
            toml::Table::try_from(Settings::default()).map_err(|e| SettingsError(e.to_string()))?;
        let default_file = Path::new("trail.toml");
        let file = file.or(default_file.exists().then_some(default_file));
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| SettingsError(format!("cannot read {}: {e}", path.display())))?;
            let table: toml::Table =
                text.parse().map_err(|e| SettingsError(format!("{}: {e}", path.display())))?;
            merge(&mut merged, table);
        }
        merge(&mut merged, env_table(env)?);
        merge(&mut merged, flags);
        let settings: Settings = toml::Value::Table(merged).try_into().map_err(|e: toml::de::Error| {
            SettingsError(format!("invalid configuration: {}", e.to_string().trim()))
        })?;
        let r = &settings.retention;
        if r.min_days == 0 || r.min_days > r.max_days {
            return Err(SettingsError(format!(
                "retention.min_days ({}) must be at least 1 and at most retention.max_days ({})",
                r.min_days, r.max_days
            )));
        }
        for (name, days) in [("hot_days", r.hot_days), ("archive_days", r.archive_days)] {
            r.check_days(name, days).map_err(|e| SettingsError(format!("retention.{e}")))?;
        }
        crate::sink::SinkConfig::from_settings(&settings.sinks.file).map_err(SettingsError)?;
        if !matches!(settings.smtp.tls.as_str(), "none" | "starttls" | "tls") {
            return Err(SettingsError(format!(
                "smtp.tls must be none, starttls or tls, not {:?}",
                settings.smtp.tls
            )));
        }
        if !settings.smtp.username.is_empty() && settings.smtp.tls == "none" {
            return Err(SettingsError(
                "smtp.username needs smtp.tls = \"starttls\" or \"tls\": credentials are never sent in the clear".into(),
            ));
        }
        Ok(settings)
    }

    /// A commented example configuration with every default (`trail default-config`).
    pub fn default_config() -> String {
        let d = Settings::default();
        format!(
            "# Trail configuration. Precedence: built-in defaults < this file < TRAIL_* environment < flags.\n\
             # Environment keys use __ between levels, e.g. TRAIL_STORAGE__URL, TRAIL_LIMITS__MAX_BODY_BYTES.\n\n\
             # Address to listen on (port 0 picks a free one).\nlisten = \"{}\"\n\
             # Where the embedded database, signing key and exports live.\ndata_dir = \"{}\"\n\
             # Public name of this server; checkpoint origins are <server_name>/orgs/<org>.\nserver_name = \"{}\"\n\
             # Base URL people reach Trail at, used in invitation links. Empty: http://<listen>.\npublic_url = \"\"\n\n\
             [storage]\n# Empty: the embedded store in data_dir. Or postgres://user:password@host/db for scale-out.\nurl = \"\"\n\n\
             [auth]\n# Sessions end after this many idle minutes, and at most this many hours after sign-in.\n\
             session_idle_minutes = {}\nsession_max_hours = {}\n# Set when Trail is served over HTTPS.\nsecure_cookies = {}\n\
             # Invitation links stay valid this many days.\ninvitation_days = {}\n\n\
             [auth.sso]\n# Server administrators' single sign-on (OpenID Connect); empty issuer: off. Register\n\
             # <public_url>/v1/auth/sso/callback at the provider. Orgs configure their own provider in the console.\n\
             issuer = \"\"\nclient_id = \"\"\nclient_secret = \"\"\nscopes = [\"email\", \"profile\"]\ngroups_claim = \"groups\"\n\
             # Provider groups whose members are server administrators.\nadmin_groups = []\n\n\
             [limits]\nmax_body_bytes = {}\nrequest_timeout_secs = {}\nmax_batch_events = {}\n# Ingest requests handled at once; more get 503 with Retry-After.\nmax_concurrent_ingest = {}\n\n\
             [retention]\n# Defaults for orgs: days events stay queryable, then days they stay archived.\n\
             # Each org may set its own within [min_days, max_days] (PATCH /v1/orgs/<org>/settings).\n\
             hot_days = {}\narchive_days = {}\nmin_days = {}\nmax_days = {}\n\
             # Seconds between retention passes (0: never; run `trail archive run` instead).\ninterval_secs = {}\n\
             # Archive location: empty for <data_dir>/archive, a directory, or s3://bucket/prefix.\narchive = \"\"\n\
             # S3-compatible endpoint (MinIO, moto); empty for AWS. Credentials: AWS_* variables.\ns3_endpoint = \"\"\n\n\
             [integrity]\n# The log signing key (Ed25519 seed, 64 hex digits). Empty: <data_dir>/log.key, created on first start.\nkey_file = \"\"\n\n\
             [smtp]\n# Mail server for invitations and alerts. Empty host: the inviting admin is shown the link instead.\nhost = \"\"\nport = {}\nfrom = \"{}\"\n\
             # none (a local relay), starttls (required) or tls (implicit, port 465); AUTH with username and password.\n\
             tls = \"none\"\nusername = \"\"\npassword = \"\"\n# A PEM CA file trusted besides the system's roots.\nca_file = \"\"\n\n\
             [exports]\n# Completed export files are deleted after this many hours (7 days).\nkeep_hours = {}\n# Exports running at once; more wait as pending.\nmax_running = {}\n\
             # Per organization: exports running at once, pending or running (more: 429), and bytes of files kept.\n\
             max_running_per_org = {}\nmax_pending_per_org = {}\nmax_bytes_per_org = {}\n\
             # Directory for export files; empty: <data_dir>/exports. Nodes sharing a database must share it.\ndir = \"\"\n\n\
             [sinks.file]\n# Also write every stored event to this audit.log (the integration runtime's format). Empty: off.\npath = \"\"\n\
             # Roll daily (at midnight in time_zone) and when the file would pass max_size; keep max_files rolled files.\n\
             max_size = \"{}\"\nmax_files = {}\n# runtime ([time]  INFO {{AUDIT_LOG}} - {{json}}) or json (one full event per line).\nformat = \"{}\"\n\
             # Compress rolled files: none, gzip or zstd.\ncompress = \"{}\"\n# IANA zone for line times and the midnight roll; empty: the system's zone.\ntime_zone = \"\"\n\
             # On the sink's first start, also write the events already stored (else start at the end of each log).\nfrom_start = {}\n\
             # Sign-ins with format = runtime: audit_log (an {{AUDIT_LOG}} line like every event) or carbon\n\
             # (the runtime's older `admin logged in at [...]` lines, for parsers that expect them).\nsign_in_lines = \"audit_log\"\n",
            d.listen,
            d.data_dir.display(),
            d.server_name,
            d.auth.session_idle_minutes,
            d.auth.session_max_hours,
            d.auth.secure_cookies,
            d.auth.invitation_days,
            d.limits.max_body_bytes,
            d.limits.request_timeout_secs,
            d.limits.max_batch_events,
            d.limits.max_concurrent_ingest,
            d.retention.hot_days,
            d.retention.archive_days,
            d.retention.min_days,
            d.retention.max_days,
            d.retention.interval_secs,
            d.smtp.port,
            d.smtp.from,
            d.exports.keep_hours,
            d.exports.max_running,
            d.exports.max_running_per_org,
            d.exports.max_pending_per_org,
            d.exports.max_bytes_per_org,
            d.sinks.file.max_size,
            d.sinks.file.max_files,
            d.sinks.file.format,
            d.sinks.file.compress,
            d.sinks.file.from_start,
        ) + &format!(
            "\n[streaming]\n# Destinations (README \"Stream to your SIEM\"): a destination failing this long is paused;\n\
             # retries back off from 1 s to max_backoff_secs; events per batch; destinations per org.\n\
             pause_after_secs = {}\nmax_backoff_secs = {}\nbatch_max_events = {}\nmax_per_org = {}\n",
            d.streaming.pause_after_secs,
            d.streaming.max_backoff_secs,
            d.streaming.batch_max_events,
            d.streaming.max_per_org,
        )
    }
}

/// Deep-merges `over` into `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Variables not meant as settings (secrets the server reads directly, the log filter).
const NOT_SETTINGS: &[&str] = &["TRAIL_ADMIN_PASSWORD", "TRAIL_LOG"];

fn env_table(env: impl IntoIterator<Item = (String, String)>) -> Result<toml::Table, SettingsError> {
    let mut out = toml::Table::new();
    for (key, value) in env {
        let Some(rest) = key.strip_prefix("TRAIL_") else {
            continue;
        };
        if NOT_SETTINGS.contains(&key.as_str()) || rest.is_empty() {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        // Typed values (numbers, booleans) parse as TOML; anything else is a string.
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(value));
        let mut table = &mut out;
        for (i, part) in path.iter().enumerate() {
            if i + 1 == path.len() {
                table.insert(part.clone(), parsed.clone());
            } else {
                let entry =
                    table.entry(part.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
                table = match entry {
                    toml::Value::Table(t) => t,
                    _ => return Err(SettingsError(format!("{key}: {part} is not a section"))),
                };
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("trail.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nserver_name = \"from-file\"\n[limits]\nmax_batch_events = 10\n",
        )
        .unwrap();
        let mut flags = toml::Table::new();
        flags.insert("listen".into(), "127.0.0.1:9002".into());
        let s = Settings::load(
            Some(&file),
            env(&[
                ("TRAIL_SERVER_NAME", "from-env"),
                ("TRAIL_LIMITS__MAX_BATCH_EVENTS", "20"),
                ("TRAIL_LOG", "x"),
            ]),
            flags,
        )
        .unwrap();
        assert_eq!(s.listen.port(), 9002, "flags beat everything");
        assert_eq!(s.server_name, "from-env", "environment beats the file");
        assert_eq!(s.limits.max_batch_events, 20);
        assert_eq!(s.limits.max_body_bytes, 4 * 1024 * 1024, "defaults fill the rest");
    }

    #[test]
    fn errors_name_the_problem() {
        let e = Settings::load(None, env(&[("TRAIL_LIMITS__MAX_BODY_BYTES", "lots")]), toml::Table::new());
        let e = e.unwrap_err().to_string();
        assert!(e.contains("max_body_bytes"), "{e}");
        let e = Settings::load(None, env(&[("TRAIL_COLOUR", "red")]), toml::Table::new());
        assert!(e.unwrap_err().to_string().contains("colour"));
        let e = Settings::load(Some(Path::new("/nonexistent/trail.toml")), env(&[]), toml::Table::new());
        assert!(e.unwrap_err().to_string().contains("/nonexistent/trail.toml"));
    }

    #[test]
    fn default_config_parses_back_to_the_defaults() {
        let t: toml::Table = Settings::default_config().parse().unwrap();
        let s: Settings = toml::Value::Table(t).try_into().unwrap();
        assert!(s == Settings::default());
    }

    #[test]
    fn debug_redacts_database_passwords() {
        let mut s = Settings::default();
        s.storage.url = "postgres://trail:hunter2@db.internal/trail".into();
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("db.internal"));
    }

    #[test]
    fn database_passwords_are_redacted_in_every_form() {
        for (url, shown) in [
            ("postgres://trail:hunter2@db/trail", "postgres://trail:***@db/trail"),
            (
                "postgres://trail@db/trail?password=hunter2&sslmode=off",
                "postgres://trail@db/trail?password=***&sslmode=off",
            ),
            ("postgresql://db/trail?user=t&PASSWORD=hunter2", "postgresql://db/trail?user=t&PASSWORD=***"),
            (
                "host=db user=trail password=hunter2 dbname=trail",
                "host=db user=trail password=*** dbname=trail",
            ),
            ("host=db password = 'hunter 2' dbname=t", "host=db password = *** dbname=t"),
            ("postgres://a:b@c/d?password=e", "postgres://a:***@c/d?password=***"),
        ] {
            assert_eq!(super::redact_database_url(url), shown, "{url}");
        }
    }
}
