//! Request bodies as types: each handler deserializes its body into one of these structs (unknown
//! fields refused, the failing field named), and the OpenAPI document's request schemas are derived
//! from the same structs ([`schemas`]), so the two cannot drift. What a type cannot say (trimming, a
//! time in the future, a group of this org) the handler checks and the document's description states.
//!
//! Events are not here: an event is Trail's own model, parsed by `trail_model::event::parse_event`
//! with per-item results, and described by the hand-written `NewEvent` schema it is tested against.

use axum::extract::{FromRequest, Request};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::JsonBody;
use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// A JSON body of type `T` (see [`typed`] for its errors).
#[derive(Debug)]
pub struct Typed<T>(pub T);

impl<T: DeserializeOwned + JsonSchema> FromRequest<AppState> for Typed<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let JsonBody(value) = JsonBody::from_request(req, state).await?;
        typed(value).map(Typed)
    }
}

/// `value` as a `T`: 400 `unknown_field` naming a key the type does not have (and the fields there
/// are), else 400 `invalid_field` naming the top-level field that failed and why.
pub fn typed<T: DeserializeOwned + JsonSchema>(value: Value) -> ApiResult<T> {
    let schema = schemars::schema_for!(T);
    let known: Vec<&str> = schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    super::fields(&value, &known)?;
    // serde reads a struct from an array too (its fields in order): where the type is an object, an
    // array is refused as the document says it is.
    let root = schema.as_value();
    if let Some(path) = array_for_object(root, root, &value, String::new()) {
        let field = path.split(['.', '[']).next().unwrap_or_default().to_string();
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("{path}: must be an object, not an array"),
        )
        .with_field(field));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let why = e.into_inner().to_string();
        // A missing field is reported at its parent: name the field itself.
        let missing = why.strip_prefix("missing field `").and_then(|r| r.split('`').next());
        let field = match missing {
            Some(m) if path == "." => m.to_string(),
            _ => path.split(['.', '[']).next().unwrap_or_default().to_string(),
        };
        let message = if path == "." { why } else { format!("{path}: {why}") };
        ApiError::bad_request("invalid_field", message).with_field(field)
    })
}

/// The subschema a `$ref` of `root` names (or `schema` itself).
fn resolved<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            root.get("$defs").and_then(|d| d.get(r.rsplit('/').next().unwrap_or_default())).unwrap_or(schema)
        }
        None => schema,
    }
}

/// Whether `schema` lets a value of JSON type `t` through (an unconstrained schema does).
fn allows(root: &Value, schema: &Value, t: &str) -> bool {
    let schema = resolved(root, schema);
    if let Some(branches) = schema.get("anyOf").or_else(|| schema.get("oneOf")).and_then(Value::as_array) {
        return branches.iter().any(|b| allows(root, b, t));
    }
    match schema.get("type") {
        Some(Value::String(s)) => s == t,
        Some(Value::Array(a)) => a.iter().any(|x| x == t),
        _ => !(t == "array" && schema.get("properties").is_some()),
    }
}

/// The path of the first array in `value` where `schema` (a subschema of `root`) takes no array.
fn array_for_object(root: &Value, schema: &Value, value: &Value, path: String) -> Option<String> {
    let schema = resolved(root, schema);
    let here = || if path.is_empty() { ".".to_string() } else { path.clone() };
    if value.is_array() && !allows(root, schema, "array") {
        return Some(here());
    }
    if let Some(branches) = schema.get("anyOf").or_else(|| schema.get("oneOf")).and_then(Value::as_array) {
        let kind = if value.is_array() { "array" } else { "object" };
        return branches
            .iter()
            .filter(|b| allows(root, b, kind))
            .find_map(|b| array_for_object(root, b, value, path.clone()));
    }
    match value {
        Value::Array(items) => {
            let item = schema.get("items")?;
            items
                .iter()
                .enumerate()
                .find_map(|(i, v)| array_for_object(root, item, v, format!("{path}[{i}]")))
        }
        Value::Object(m) => {
            let props = schema.get("properties").and_then(Value::as_object)?;
            m.iter().find_map(|(k, v)| {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                props.get(k).and_then(|s| array_for_object(root, s, v, p))
            })
        }
        _ => None,
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    #[schemars(length(max = 254))]
    pub email: String,
    #[schemars(length(max = 1024))]
    pub password: String,
}

/// The second step of a sign-in with a second factor.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecondFactor {
    /// The `challenge` the password step answered.
    #[schemars(length(min = 1, max = 1024))]
    pub challenge: String,
    /// The 6-digit code of the authenticator app, or an unused recovery code.
    #[schemars(length(min = 1, max = 64))]
    pub code: String,
}

/// Starting an enrolment takes your password (a session alone must not add a factor).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaStart {
    #[schemars(length(max = 1024))]
    pub current_password: String,
}

/// A code from the authenticator app (or, where it says so, a recovery code).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaCode {
    #[schemars(length(min = 1, max = 64))]
    pub code: String,
}

/// How people sign in to an organization.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInSettings {
    /// Members must sign in with a second factor (a password user without one is refused the org's
    /// pages and API until they set one up). Single sign-on sessions are the provider's to secure.
    pub require_mfa: bool,
    /// Members may use a password (default true). False: only sessions signed in by the org's own
    /// identity provider reach the org; yours must be one to turn it off.
    #[serde(default = "yes")]
    pub password_sign_in: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrg {
    /// 2-63 lowercase letters, digits or hyphens, not starting or ending with a hyphen.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$"))]
    pub slug: String,
    /// Shown in the console; the slug when left out.
    #[schemars(length(min = 1, max = 200), regex(pattern = r"\S"))]
    pub name: Option<String>,
}

/// A scope of an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum ScopeName {
    #[serde(rename = "events:write")]
    EventsWrite,
    #[serde(rename = "events:read")]
    EventsRead,
    #[serde(rename = "viewer:mint")]
    ViewerMint,
}

impl From<ScopeName> for trail_store::Scope {
    fn from(s: ScopeName) -> Self {
        match s {
            ScopeName::EventsWrite => trail_store::Scope::EventsWrite,
            ScopeName::EventsRead => trail_store::Scope::EventsRead,
            ScopeName::ViewerMint => trail_store::Scope::ViewerMint,
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    #[schemars(length(min = 1, max = 100), regex(pattern = r"\S"))]
    pub name: String,
    #[schemars(length(min = 1))]
    pub scopes: Vec<ScopeName>,
    /// When the key stops working: an RFC 3339 time in the future; never when left out.
    #[schemars(extend("format" = "date-time"))]
    pub expires_at: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    #[schemars(length(max = 1024))]
    pub current_password: String,
    /// Taken exactly as typed.
    #[schemars(length(min = 10, max = 256))]
    pub new_password: String,
}

/// A permission a role grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum PermissionName {
    #[serde(rename = "LOG-MANAGEMENT")]
    LogManagement,
    #[serde(rename = "USER-MANAGEMENT")]
    UserManagement,
    #[serde(rename = "KEY-MANAGEMENT")]
    KeyManagement,
    #[serde(rename = "ORG-SETTINGS")]
    OrgSettings,
}

impl From<PermissionName> for trail_store::Permission {
    fn from(p: PermissionName) -> Self {
        use trail_store::Permission as P;
        match p {
            PermissionName::LogManagement => P::LogManagement,
            PermissionName::UserManagement => P::UserManagement,
            PermissionName::KeyManagement => P::KeyManagement,
            PermissionName::OrgSettings => P::OrgSettings,
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRole {
    #[schemars(length(min = 1, max = 100), regex(pattern = r"\S"))]
    pub name: String,
    #[schemars(length(max = 500))]
    pub description: Option<String>,
    pub permissions: Option<Vec<PermissionName>>,
}

/// The fields to change; those left out (or null) keep their value.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleChange {
    #[schemars(length(min = 1, max = 100), regex(pattern = r"\S"))]
    pub name: Option<String>,
    #[schemars(length(max = 500))]
    pub description: Option<String>,
    pub permissions: Option<Vec<PermissionName>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    #[schemars(length(min = 1, max = 100), regex(pattern = r"\S"))]
    pub name: String,
    #[schemars(length(max = 500))]
    pub description: Option<String>,
}

/// The fields to change; those left out (or null) keep their value.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupChange {
    #[schemars(length(min = 1, max = 100), regex(pattern = r"\S"))]
    pub name: Option<String>,
    #[schemars(length(max = 500))]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInvitations {
    /// Email addresses (each with an `@`, no spaces or angle brackets).
    #[schemars(
        length(min = 1, max = 100),
        inner(length(min = 3, max = 254), regex(pattern = r"^[^\s<>@]+@[^\s<>]+$"))
    )]
    pub emails: Vec<String>,
    /// Ids of this organization's groups.
    pub groups: Vec<String>,
}

/// Without the invited user's session, the password creates the account (or is the existing
/// account's own). May be sent as an empty body when signed in as the invited user.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptInvitation {
    #[schemars(length(min = 10, max = 256))]
    pub password: Option<String>,
}

/// An export file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormatName {
    Csv,
    Json,
}

/// One filter value, or several (ORed), as the query parameter would repeat.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
#[allow(dead_code, reason = "describes the document; the handler reads filters as query pairs")]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The query parameters of `GET /v1/orgs/{org}/events` as an object.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "describes the document; the handler reads filters as query pairs")]
pub struct EventFilters {
    #[schemars(extend("format" = "date-time"))]
    from: Option<String>,
    #[schemars(extend("format" = "date-time"))]
    to: Option<String>,
    actor: Option<OneOrMany>,
    action: Option<OneOrMany>,
    target_type: Option<OneOrMany>,
    target_id: Option<OneOrMany>,
    project: Option<OneOrMany>,
    outcome: Option<OneOrMany>,
    source: Option<OneOrMany>,
    q: Option<String>,
}

/// The fields a viewer token's filter may fix. (The document states each field's values precisely:
/// `openapi::fixed_filter`.)
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "describes the document; the handler reads the filter as query pairs")]
pub struct FixedFilter {
    actor: Option<OneOrMany>,
    action: Option<OneOrMany>,
    target_type: Option<OneOrMany>,
    target_id: Option<OneOrMany>,
    project: Option<OneOrMany>,
    outcome: Option<OneOrMany>,
    source: Option<OneOrMany>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewExport {
    #[schemars(length(min = 1, max = 200), regex(pattern = r"\S"))]
    pub name: String,
    pub format: ExportFormatName,
    /// The events to export: the query's filters (from and to default to the last 24 hours).
    #[schemars(with = "Option<EventFilters>")]
    pub filters: Option<Map<String, Value>>,
}

/// The host product's user a viewer token is minted for (the actor of what they do in Trail).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ViewerUser {
    #[schemars(length(min = 1, max = 256), regex(pattern = r"\S"))]
    pub id: String,
    #[schemars(length(min = 1, max = 256))]
    pub name: Option<String>,
    #[schemars(length(min = 3, max = 254), regex(pattern = r"^[^\s<>@]+@[^\s<>]+$"))]
    pub email: Option<String>,
}

/// What may be done with the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ViewerPermission {
    View,
    Export,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewViewerToken {
    pub user: ViewerUser,
    /// `view` (always implied) and `export`; default `["view"]`.
    pub permissions: Option<Vec<ViewerPermission>>,
    /// Query parameters every read is narrowed to (`{"project": "payments"}`): the viewer can narrow
    /// further, never widen. Fields: actor, action, target_type, target_id, project, outcome, source.
    #[schemars(with = "Option<FixedFilter>")]
    pub filter: Option<Map<String, Value>>,
    /// Lifetime in seconds, at most 3600; default 900.
    #[schemars(range(min = 1, max = 3600))]
    #[serde(default, deserialize_with = "whole")]
    pub ttl_secs: Option<u32>,
}

/// The origins allowed to frame the embedded viewer.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingSettings {
    /// `scheme://host[:port]` each (at most 20); empty: the viewer cannot be framed anywhere.
    #[schemars(length(max = 20), inner(regex(pattern = crate::viewer::ORIGIN_PATTERN)))]
    pub allowed_origins: Vec<String>,
}

/// An org's OpenID Connect provider.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SsoSettings {
    /// The provider's issuer URL, exactly as its discovery document states it: https://, or http://
    /// only to this machine; a path may follow the host.
    #[schemars(length(max = 500), regex(pattern = crate::sso::ISSUER_PATTERN))]
    pub issuer: String,
    #[schemars(length(min = 1, max = 200))]
    pub client_id: String,
    /// Needed the first time; left out (or null), the stored one is kept. Never answered back.
    #[serde(default)]
    #[schemars(length(min = 1, max = 500))]
    pub client_secret: Option<String>,
    /// Scopes asked for besides `openid` (default email and profile).
    #[serde(default = "default_sso_scopes")]
    #[schemars(length(max = 10), inner(regex(pattern = r"^[!#-\[\]-~]{1,100}$")))]
    pub scopes: Vec<String>,
    /// The ID-token claim listing the person's groups (or roles) at the provider (default `groups`).
    #[serde(default = "default_groups_claim")]
    #[schemars(length(min = 1, max = 100))]
    pub groups_claim: String,
    /// Provider group → group of this org, applied at every sign-in (people join the groups whose
    /// values they have and leave the mapped groups whose values they lost; groups not in the map are
    /// left alone). A person with no mapped group and no other group here is refused.
    #[serde(default)]
    #[schemars(length(max = 100))]
    pub group_map: Vec<crate::sso::GroupRule>,
}

fn default_sso_scopes() -> Vec<String> {
    vec!["email".into(), "profile".into()]
}

fn default_groups_claim() -> String {
    "groups".into()
}

/// Reads `null` as "set to nothing" and a missing field as "leave alone" (`None`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A time range the console's Audit Logs page can open with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum RangeName {
    #[serde(rename = "1h")]
    Hour,
    #[serde(rename = "24h")]
    Day,
    #[serde(rename = "7d")]
    Week,
    #[serde(rename = "30d")]
    Month,
    #[serde(rename = "90d")]
    Quarter,
}

impl RangeName {
    pub const ALL: [RangeName; 5] =
        [RangeName::Hour, RangeName::Day, RangeName::Week, RangeName::Month, RangeName::Quarter];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RangeName::Hour => "1h",
            RangeName::Day => "24h",
            RangeName::Week => "7d",
            RangeName::Month => "30d",
            RangeName::Quarter => "90d",
        }
    }
}

/// A whole number as JSON Schema's `integer` means it: `30` or `30.0`, not `30.5`.
fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    use serde::de::Error;
    match Option::<f64>::deserialize(d)? {
        None => Ok(None),
        Some(n) if n.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&n) => Ok(Some(n as u32)),
        Some(n) => Err(D::Error::custom(format!("{n} is not a whole number"))),
    }
}

/// The settings to change; those left out keep their value.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgSettingsChange {
    /// Days events stay queryable, within the server's bounds (`bounds` in the answer).
    #[serde(default, deserialize_with = "whole")]
    pub hot_days: Option<u32>,
    /// Days events stay in the archive after that, within the same bounds.
    #[serde(default, deserialize_with = "whole")]
    pub archive_days: Option<u32>,
    pub legal_hold: Option<bool>,
    /// Why the hold is placed (required with one); null clears it.
    #[serde(default, deserialize_with = "present")]
    #[schemars(length(max = 500))]
    pub legal_hold_reason: Option<Option<String>>,
    /// Whether searches, event views and API keys' reads are recorded in the org's log (on by
    /// default; turning it off is itself recorded).
    pub read_audit: Option<bool>,
    /// The time range the console's Audit Logs page opens with (24 hours unless chosen).
    pub default_range: Option<RangeName>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRestore {
    #[schemars(extend("format" = "date-time"))]
    pub from: String,
    #[schemars(extend("format" = "date-time"))]
    pub to: String,
    #[schemars(length(min = 1, max = 200), regex(pattern = r"\S"))]
    pub name: Option<String>,
}

/// A streaming destination's settings, as created or replaced (README "Stream to your SIEM").
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(extend("additionalProperties" = false))]
pub struct DestinationFields {
    #[schemars(length(min = 1, max = 100), regex(pattern = r"\S"))]
    pub name: String,
    pub kind: crate::stream::config::Kind,
    /// Webhook and splunk_hec: where batches are POSTed; https:// (http:// only to this machine).
    #[schemars(length(max = 2000))]
    pub url: Option<String>,
    /// Syslog: `host:port` of the collector.
    #[schemars(length(max = 300))]
    pub address: Option<String>,
    /// Syslog: TCP+TLS (default) or plain TCP (`false`).
    pub tls: Option<bool>,
    /// A PEM CA certificate to trust besides the system's roots.
    #[schemars(length(max = 65536))]
    pub ca_pem: Option<String>,
    /// `json` (default), `ocsf`, or `cef` (syslog only).
    pub format: Option<crate::stream::config::PayloadFormat>,
    pub filter: Option<crate::stream::config::StreamFilter>,
    /// Syslog facility, 0-23 (default 13, "log audit").
    #[schemars(range(max = 23))]
    pub facility: Option<u8>,
    /// splunk_hec: the index and sourcetype given to events.
    #[schemars(length(min = 1, max = 200))]
    pub index: Option<String>,
    #[schemars(length(min = 1, max = 200))]
    pub sourcetype: Option<String>,
    /// splunk_hec: the HEC token (required when creating; sealed at rest, never shown again).
    #[schemars(length(min = 1, max = 512))]
    pub token: Option<String>,
}

impl DestinationFields {
    pub fn config(&self) -> crate::stream::config::DestinationConfig {
        use crate::stream::config::Kind;
        crate::stream::config::DestinationConfig {
            name: self.name.trim().to_string(),
            kind: self.kind,
            url: self.url.clone(),
            address: self.address.clone(),
            tls: self.kind == Kind::Syslog && self.tls.unwrap_or(true),
            ca_pem: self.ca_pem.clone(),
            format: self.format.unwrap_or_default(),
            filter: self.filter.clone().unwrap_or_default(),
            facility: self.facility.unwrap_or(trail_model::siem::FACILITY_LOG_AUDIT),
            index: self.index.clone(),
            sourcetype: self.sourcetype.clone(),
        }
    }
}

/// A new destination: its settings and where in the log it starts (the log's end when neither is given).
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(extend("additionalProperties" = false))]
pub struct NewDestination {
    #[serde(flatten)]
    pub fields: DestinationFields,
    /// Start at this seq (0 replays the whole hot log).
    pub start_seq: Option<u64>,
    /// Start at the first event received at or after this time (a backfill).
    #[schemars(extend("format" = "date-time"))]
    pub start_time: Option<String>,
}

/// Resuming a paused or failing destination, optionally replaying from a seq.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resume {
    pub from_seq: Option<u64>,
}

/// A search of the Audit Logs page to keep.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSavedSearch {
    #[schemars(length(min = 1, max = 100), regex(pattern = r"\S"))]
    pub name: String,
    /// The page's filters and free text as a query string (`action=user.*&outcome=failure&q=…`); no window.
    #[schemars(length(max = 4000))]
    pub query: String,
    /// The relative range it opens with (default 24h).
    pub range: Option<String>,
    /// Everyone who reads the org's log sees it (default: only you).
    pub shared: Option<bool>,
}

/// A saved search's changes (the fields given).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SavedSearchChange {
    #[schemars(length(min = 1, max = 100), regex(pattern = r"\S"))]
    pub name: Option<String>,
    #[schemars(length(max = 4000))]
    pub query: Option<String>,
    pub range: Option<String>,
    pub shared: Option<bool>,
}

/// An alert rule, created or replaced whole.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleBody {
    #[schemars(length(min = 1, max = 100), regex(pattern = r"\S"))]
    pub name: String,
    /// The search it watches (a saved search's query string); empty or absent: every event.
    #[schemars(length(max = 4000))]
    pub search: Option<String>,
    pub condition: crate::alerts::rules::Condition,
    /// Quiet time after a firing (per group), default 300; at most a week.
    #[schemars(range(max = 604800))]
    pub cooldown_secs: Option<u64>,
    pub notify: Option<crate::alerts::rules::Notify>,
    /// Default true.
    pub enabled: Option<bool>,
}

/// Enabling a template, with where it notifies.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnableTemplate {
    pub notify: Option<crate::alerts::rules::Notify>,
}

/// The request schemas by component name, for the OpenAPI document (references between them point
/// into `#/components/schemas/`).
pub fn schemas() -> Map<String, Value> {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "#/components/schemas/".into())
        .into_generator();
    // Each type becomes a named definition (referenced by the document's operations).
    macro_rules! add {
        ($($t:ty),*) => {$(
            generator.subschema_for::<$t>();
        )*};
    }
    add!(
        Login,
        NewOrg,
        NewApiKey,
        PasswordChange,
        NewRole,
        RoleChange,
        NewGroup,
        GroupChange,
        NewInvitations,
        AcceptInvitation,
        NewExport,
        OrgSettingsChange,
        NewRestore,
        DestinationFields,
        NewDestination,
        Resume,
        NewSavedSearch,
        SavedSearchChange,
        AlertRuleBody,
        EnableTemplate,
        NewViewerToken,
        EmbeddingSettings,
        SsoSettings,
        SecondFactor,
        MfaStart,
        MfaCode,
        SignInSettings
    );
    generator.take_definitions(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_name_the_field() {
        let e = typed::<NewGroup>(json!({"name": "a", "colour": "blue"})).unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), ("unknown_field", Some("colour")));
        assert!(e.message.ends_with("the fields are description, name"), "{}", e.message);
        let e = typed::<NewGroup>(json!({"description": "x"})).unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), ("invalid_field", Some("name")));
        let e = typed::<NewApiKey>(json!({"name": "k", "scopes": ["events:write", "nope"]})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("scopes"));
        assert!(e.message.starts_with("scopes[1]: unknown variant"), "{}", e.message);
        let e = typed::<NewOrg>(json!({"slug": "acme", "name": {}})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("name"));
        let e = typed::<NewOrg>(json!(["slug"])).unwrap_err();
        assert_eq!(e.code, "invalid_body");
    }

    #[test]
    fn null_and_absent_differ_where_it_matters() {
        let c: OrgSettingsChange = typed(json!({"legal_hold_reason": null})).unwrap();
        assert_eq!(c.legal_hold_reason, Some(None));
        let c: OrgSettingsChange = typed(json!({})).unwrap();
        assert_eq!(c.legal_hold_reason, None);
    }

    #[test]
    fn an_array_is_no_object() {
        let e = typed::<EnableTemplate>(json!({"notify": []})).unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), ("invalid_field", Some("notify")), "{}", e.message);
        let e = typed::<NewViewerToken>(json!({"user": ["u1"]})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("user"));
        // Arrays where arrays belong still pass.
        assert!(
            typed::<NewViewerToken>(json!({"user": {"id": "u"}, "filter": {"project": ["a", "b"]}})).is_ok()
        );
        let t: NewViewerToken = typed(json!({"user": {"id": "u"}, "ttl_secs": 60.0})).unwrap();
        assert_eq!(t.ttl_secs, Some(60), "a whole number written as 60.0");
    }

    #[test]
    fn schemas_come_from_the_types() {
        let s = schemas();
        assert_eq!(s["NewGroup"]["additionalProperties"], json!(false));
        assert_eq!(s["NewGroup"]["required"], json!(["name"]));
        assert_eq!(s["NewApiKey"]["properties"]["scopes"]["items"]["$ref"], "#/components/schemas/ScopeName");
        assert_eq!(s["ScopeName"]["enum"], json!(["events:write", "events:read", "viewer:mint"]));
        assert_eq!(s["PasswordChange"]["properties"]["new_password"]["minLength"], 10);
    }
}
