//! Records of the access model (PRODUCT.md §3) as the store keeps them. Secrets are only ever held
//! as SHA-256 hashes or Argon2id password hashes, and `Debug` never prints them.

use std::fmt;

use trail_model::time::Micros;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Org {
    pub slug: String,
    pub name: String,
    pub created_at: Micros,
}

#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    pub server_admin: bool,
    pub created_at: Micros,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("server_admin", &self.server_admin)
            .finish_non_exhaustive()
    }
}

/// A signed-in session. The bearer token is `<id>.<secret>`; only `SHA-256(secret)` is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub secret_hash: [u8; 32],
    pub created_at: Micros,
    /// Hard end of the session, whatever its use.
    pub expires_at: Micros,
    /// Last request seen (renewed at most about once a minute); idle sessions end.
    pub last_seen: Micros,
    /// How the person signed in: `password`, or `sso:<org>` (that org's identity provider, and only
    /// that org), or `sso` (the server's identity provider, for server administrators).
    pub method: String,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("expires_at", &self.expires_at)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    EventsWrite,
    EventsRead,
    /// Minting viewer tokens for the embedded viewer (the host product's backend).
    ViewerMint,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::EventsWrite, Scope::EventsRead, Scope::ViewerMint];

    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::EventsWrite => "events:write",
            Scope::EventsRead => "events:read",
            Scope::ViewerMint => "viewer:mint",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// An org's API key. The secret is `<id>.<secret>`; only `SHA-256(secret)` is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub org: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub secret_hash: [u8; 32],
    pub created_by: Option<String>,
    pub created_at: Micros,
    pub expires_at: Option<Micros>,
    pub revoked_at: Option<Micros>,
    /// Last authenticated use, recorded within seconds (written in batches).
    pub last_used_at: Option<Micros>,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("org", &self.org)
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// Permissions roles grant (PRODUCT.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    LogManagement,
    UserManagement,
    KeyManagement,
    OrgSettings,
}

impl Permission {
    pub const ALL: [Permission; 4] = [
        Permission::LogManagement,
        Permission::UserManagement,
        Permission::KeyManagement,
        Permission::OrgSettings,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Permission::LogManagement => "LOG-MANAGEMENT",
            Permission::UserManagement => "USER-MANAGEMENT",
            Permission::KeyManagement => "KEY-MANAGEMENT",
            Permission::OrgSettings => "ORG-SETTINGS",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// A role: a named set of permissions. The built-in `admin` role holds all and cannot change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub id: String,
    pub name: String,
    pub description: String,
    pub permissions: Vec<Permission>,
    pub builtin: bool,
}

/// A group: users and the roles they get. The built-in `Administrators` group has `admin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Role ids, sorted.
    pub roles: Vec<String>,
    /// User ids, sorted.
    pub members: Vec<String>,
    pub builtin: bool,
}

/// An invitation into an org's groups. The accept token is `<id>.<secret>`; only `SHA-256(secret)` is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Invitation {
    pub id: String,
    pub org: String,
    pub email: String,
    pub groups: Vec<String>,
    pub secret_hash: [u8; 32],
    pub created_by: String,
    pub created_at: Micros,
    pub expires_at: Micros,
    pub accepted_at: Option<Micros>,
    pub revoked_at: Option<Micros>,
}

impl fmt::Debug for Invitation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invitation")
            .field("id", &self.id)
            .field("org", &self.org)
            .field("email", &self.email)
            .field("groups", &self.groups)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Where an export is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportStatus {
    Pending,
    Running,
    Completed,
    Failed,
    /// Completed, then its file was deleted after the retention of exports.
    Expired,
}

impl ExportStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            ExportStatus::Pending => "pending",
            ExportStatus::Running => "running",
            ExportStatus::Completed => "completed",
            ExportStatus::Failed => "failed",
            ExportStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Running, Self::Completed, Self::Failed, Self::Expired]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// An export request and, once run, its result.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub id: String,
    pub org: String,
    pub name: String,
    pub format: ExportFormat,
    pub kind: ExportKind,
    /// The query parameters, with the window resolved to absolute `from`/`to`.
    pub filters: serde_json::Value,
    pub status: ExportStatus,
    pub error: Option<String>,
    pub requested_by: String,
    pub created_at: Micros,
    pub started_at: Option<Micros>,
    pub finished_at: Option<Micros>,
    pub expires_at: Option<Micros>,
    pub row_count: u64,
    pub size_bytes: u64,
    pub sha256: Option<String>,
    /// The signed manifest (a signed note whose text is the manifest JSON).
    pub manifest: Option<String>,
}

pub use trail_model::export::{ExportFormat, ExportKind};

impl Export {
    /// A new request, waiting for the worker.
    #[allow(clippy::too_many_arguments, reason = "every field a request sets, each named at the call")]
    pub fn pending(
        id: String,
        org: &str,
        name: &str,
        format: ExportFormat,
        kind: ExportKind,
        filters: serde_json::Value,
        requested_by: String,
        now: Micros,
    ) -> Self {
        Self {
            id,
            org: org.to_string(),
            name: name.to_string(),
            format,
            kind,
            filters,
            status: ExportStatus::Pending,
            error: None,
            requested_by,
            created_at: now,
            started_at: None,
            finished_at: None,
            expires_at: None,
            row_count: 0,
            size_bytes: 0,
            sha256: None,
            manifest: None,
        }
    }
}
