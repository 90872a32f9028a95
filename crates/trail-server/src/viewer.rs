//! Viewer tokens (README "Embed the viewer"): the host product's backend, with an API key holding
//! `viewer:mint`, mints a short-lived token for one of its users; the embedded viewer
//! (`/embed/orgs/{org}/logs`) sends it as a bearer token. A token reads one org's events through a
//! fixed filter the viewer cannot widen, exports when minted to, and can do nothing else.
//!
//! Tokens are `trv_<org>.<id>.<secret>`. The store keeps `SHA-256(secret)` in an org document
//! (`viewer_token`), compared in constant time as API keys are; revoking marks the document, and
//! expired documents are removed as new tokens are minted. Nothing here logs a token.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use trail_model::StoredEvent;
use trail_model::time::{Micros, now};
use trail_store::Document;

use crate::AppState;
use crate::auth::{random_id, random_secret, secret_hash};
use crate::error::{ApiError, ApiResult};

pub const PREFIX: &str = "trv_";
/// The documents holding minted tokens.
pub const KIND: &str = "viewer_token";
/// The org document holding the origins allowed to frame the viewer.
pub const EMBEDDING: &str = "embedding";
/// The longest lifetime a token may be minted with, and the default.
pub const MAX_TTL_SECS: u32 = 3600;
pub const DEFAULT_TTL_SECS: u32 = 900;
/// The fields a token's filter may fix (each exact, `action` also as a `prefix.*`).
pub const FIXED_FIELDS: &[&str] =
    &["actor", "action", "target_type", "target_id", "project", "outcome", "source"];

/// The host product's user a token was minted for: the actor of what they do in Trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndUser {
    pub id: String,
    pub name: Option<String>,
    pub email: Option<String>,
}

/// What a minted token may do, as its document keeps it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Hex SHA-256 of the token's secret.
    pub secret_hash: String,
    pub user: EndUser,
    pub can_export: bool,
    /// Query parameters every read is narrowed to (`[["project", "payments"]]`).
    pub filter: Vec<(String, String)>,
    /// The API key that minted it.
    pub created_by: String,
    pub created_at: Micros,
    pub expires_at: Micros,
    pub revoked_at: Option<Micros>,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("user", &self.user)
            .field("can_export", &self.can_export)
            .field("filter", &self.filter)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A request made with a valid viewer token.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub org: String,
    pub id: String,
    pub grant: Grant,
}

/// A new token for `org`: its document and the token, shown once.
pub fn mint(org: &str, mut grant: Grant) -> (Document, String) {
    let (id, secret) = (random_id(), random_secret());
    grant.secret_hash = hex::encode(secret_hash(&secret));
    let doc = Document {
        org: org.to_string(),
        kind: KIND.into(),
        id: id.clone(),
        body: serde_json::to_value(&grant).unwrap_or_default(),
        updated_at: grant.created_at,
    };
    (doc, format!("{PREFIX}{org}.{id}.{secret}"))
}

/// The org, id and secret of a token-shaped string.
fn split(token: &str) -> Option<(&str, &str, &str)> {
    let mut parts = token.strip_prefix(PREFIX)?.splitn(3, '.');
    let (org, id, secret) = (parts.next()?, parts.next()?, parts.next()?);
    (crate::routes::valid_slug(org) && !id.is_empty() && id.len() <= 64 && !secret.is_empty())
        .then_some((org, id, secret))
}

pub fn is_token(token: &str) -> bool {
    token.starts_with(PREFIX)
}

/// The viewer a token stands for, if it is valid now (known, not revoked, not expired).
pub async fn resolve(state: &AppState, token: &str) -> ApiResult<Option<Viewer>> {
    let Some((org, id, secret)) = split(token) else { return Ok(None) };
    let doc = match state.store.document(org, KIND, id).await {
        Ok(Some(d)) => d,
        Ok(None) | Err(trail_store::StoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Ok(grant) = serde_json::from_value::<Grant>(doc.body) else { return Ok(None) };
    let valid = bool::from(grant.secret_hash.as_bytes().ct_eq(hex::encode(secret_hash(secret)).as_bytes()))
        && grant.revoked_at.is_none()
        && grant.expires_at > now();
    if !valid {
        return Ok(None);
    }
    // Revoking (or the expiry of) the key that minted a token ends the token too.
    let minter = state.store.api_key(&grant.created_by).await?;
    let live = minter.is_some_and(|k| k.revoked_at.is_none() && k.expires_at.is_none_or(|t| t > now()));
    Ok(live.then(|| Viewer { org: org.to_string(), id: id.to_string(), grant }))
}

/// Whether `value` of `field` lies within the fixed values (an action prefix within a fixed prefix).
fn covered(field: &str, value: &str, fixed: &[&str]) -> bool {
    fixed.iter().any(|f| {
        if field != "action" {
            return *f == value;
        }
        match (f.strip_suffix('*'), value.strip_suffix('*')) {
            (None, None) => *f == value,
            (None, Some(_)) => false,
            (Some(fp), None) => value.starts_with(fp),
            (Some(fp), Some(vp)) => vp.starts_with(fp),
        }
    })
}

impl Viewer {
    /// The actor of what this viewer does: the host product's user.
    pub fn actor_id(&self) -> String {
        self.grant.user.id.clone()
    }

    /// A self-audit event of this viewer: the host product's user as the actor, the token named.
    pub fn audit(&self, action: &'static str, target_type: &'static str) -> crate::audit::Audit {
        let mut a = crate::audit::Audit::new(self.actor_id(), action, target_type)
            .info("viewer_token", self.id.clone());
        a.actor_name = self.grant.user.name.clone();
        a
    }

    /// Who exports made through any token for this user belong to.
    pub fn owner(&self) -> String {
        format!("viewer:{}", self.grant.user.id)
    }

    /// Narrows query parameters to the token's filter: a fixed field the viewer left out is added;
    /// one the viewer gave must stay within the fixed values (else 403 `outside_viewer_filter`).
    pub fn constrain(&self, pairs: &mut Vec<(String, String)>) -> ApiResult<()> {
        for field in FIXED_FIELDS {
            let fixed: Vec<&str> =
                self.grant.filter.iter().filter(|(k, _)| k == field).map(|(_, v)| v.as_str()).collect();
            if fixed.is_empty() {
                continue;
            }
            let asked: Vec<&str> =
                pairs.iter().filter(|(k, _)| k == field).map(|(_, v)| v.as_str()).collect();
            if let Some(outside) = asked.iter().find(|a| !covered(field, a, &fixed)) {
                return Err(ApiError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    "outside_viewer_filter",
                    format!(
                        "this viewer may only see {field} {}; {outside} is outside it",
                        fixed.join(" or ")
                    ),
                )
                .with_field(*field));
            }
            if asked.is_empty() {
                pairs.extend(fixed.iter().map(|v| (field.to_string(), v.to_string())));
            }
        }
        Ok(())
    }

    /// Whether this viewer sees an export: one of its user's, made through a token whose filter lies
    /// within this one's (a user id the host reuses across tenants sees no other tenant's exports).
    pub fn sees_export(&self, e: &trail_store::Export) -> bool {
        if e.requested_by != self.owner() {
            return false;
        }
        let Ok(mut pairs) = crate::exports::filter_pairs(&e.filters) else { return false };
        let given = pairs.len();
        self.constrain(&mut pairs).is_ok() && pairs.len() == given
    }

    /// Whether the token's filter admits an event (an event opened by id).
    pub fn admits(&self, e: &StoredEvent) -> bool {
        FIXED_FIELDS.iter().all(|field| {
            let fixed: Vec<&str> =
                self.grant.filter.iter().filter(|(k, _)| k == field).map(|(_, v)| v.as_str()).collect();
            if fixed.is_empty() {
                return true;
            }
            let value = match *field {
                "actor" => Some(e.actor.id.as_str()),
                "action" => Some(e.action.as_str()),
                "target_type" => Some(e.target.kind.as_str()),
                "target_id" => e.target.id.as_deref(),
                "project" => e.project.as_deref(),
                "outcome" => Some(e.outcome.as_str()),
                _ => e.source.as_deref(),
            };
            value.is_some_and(|v| !v.ends_with('*') && covered(field, v, &fixed))
        })
    }
}

/// An end user's email as the token shows it (never mailed): `local@domain`, 3 to 254 characters,
/// without white space or angle brackets — exactly the document's pattern, `\s` as JSON Schema
/// validators read it (Unicode white space and the separators U+001C to U+001F).
pub fn email_like(e: &str) -> bool {
    let space = |c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c);
    let plain = |s: &str, at: bool| {
        !s.is_empty() && !s.chars().any(|c| space(c) || c == '<' || c == '>' || (at && c == '@'))
    };
    (3..=254).contains(&e.chars().count())
        && e.split_once('@').is_some_and(|(l, d)| plain(l, true) && plain(d, false))
}

/// Checks a filter to fix in a token: known fields, values a query would take.
pub fn check_filter(pairs: &[(String, String)]) -> ApiResult<()> {
    for (k, v) in pairs {
        if !FIXED_FIELDS.contains(&k.as_str()) {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("filter.{k} cannot be fixed; the fields are {}", FIXED_FIELDS.join(", ")),
            )
            .with_field(format!("filter.{k}")));
        }
        if v.is_empty() {
            return Err(crate::routes::empty_parameter(&format!("filter.{k}")));
        }
    }
    // The same parser as every query, so a token's filter is one a query can run.
    let ctx = trail_model::query::QueryContext { now: now(), oldest: i64::MIN / 2 };
    trail_model::query::parse_filter(pairs, ctx).map(drop).map_err(|e| {
        let mut err = ApiError::from(e);
        err.field = err.field.map(|f| format!("filter.{f}"));
        err
    })
}

/// The origins an org lets frame the viewer (none until set).
pub async fn allowed_origins(state: &AppState, org: &str) -> ApiResult<Vec<String>> {
    Ok(origins_of(state.store.document(org, EMBEDDING, "settings").await?.as_ref()))
}

/// The allowed origins an embedding settings document holds.
pub fn origins_of(doc: Option<&Document>) -> Vec<String> {
    doc.and_then(|d| serde_json::from_value::<Vec<String>>(d.body["allowed_origins"].clone()).ok())
        .unwrap_or_default()
}

/// `scheme://host[:port]`: the part of [`ORIGIN_PATTERN`] an issuer URL shares.
macro_rules! origin_grammar {
    () => {
        r"^https?://(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])|([A-Za-z0-9-]+\.)*[A-Za-z0-9-]*[A-Za-z][A-Za-z0-9-]*)(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
    };
}
pub(crate) use origin_grammar;

/// The origins the API takes, as a JSON Schema pattern (what [`check_origin`] checks): http or https, a
/// host name (whose last label has a letter) or a dotted IPv4 address, an optional port, nothing after.
pub const ORIGIN_PATTERN: &str = concat!(origin_grammar!(), "/?$");

/// An origin as browsers send it — `scheme://host[:port]` — lowercased, without a trailing slash.
/// Host names have letters, digits, hyphens and dots only: nothing that could widen or end the
/// `frame-ancestors` directive it goes into (a URL parser would let `*`, `;` and `,` through).
pub fn check_origin(o: &str) -> Result<String, String> {
    let bad = |why: &str| format!("{o} is not an origin: {why}");
    let (scheme, rest) = if let Some(r) = o.strip_prefix("https://") {
        ("https", r)
    } else if let Some(r) = o.strip_prefix("http://") {
        ("http", r)
    } else {
        return Err(bad("it must start with http:// or https://"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    let number = |s: &str, max: u32| {
        !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s == "0" || !s.starts_with('0'))
            && s.len() <= 5
            && s.parse::<u32>().is_ok_and(|n| n <= max)
    };
    let ipv4 = host.split('.').count() == 4 && host.split('.').all(|p| number(p, 255));
    let labels: Vec<&str> = host.split('.').collect();
    let name =
        labels.iter().all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            && labels.last().is_some_and(|l| l.bytes().any(|b| b.is_ascii_alphabetic()));
    if !ipv4 && !name {
        return Err(bad(
            "give a host name (letters, digits, hyphens and dots) or an IPv4 address, then only a port",
        ));
    }
    match port {
        Some(p) if !(number(p, 65_535) && p != "0") => Err(bad("the port must be 1 to 65535")),
        Some(p) => Ok(format!("{scheme}://{}:{p}", host.to_ascii_lowercase())),
        None => Ok(format!("{scheme}://{}", host.to_ascii_lowercase())),
    }
}

/// Most token documents an org keeps (minting beyond answers 429 until some expire).
pub const MAX_TOKENS: usize = 10_000;

/// Every token document of an org, page by page (at most [`MAX_TOKENS`]).
pub async fn grants(state: &AppState, org: &str) -> ApiResult<Vec<Document>> {
    let mut all: Vec<Document> = Vec::new();
    loop {
        let before = all.last().map(|d| d.id.clone());
        let page = state.store.documents(Some(org), KIND, 1000, before.as_deref()).await?;
        let done = page.len() < 1000;
        all.extend(page);
        if done || all.len() >= MAX_TOKENS {
            return Ok(all);
        }
    }
}

/// Removes expired tokens' documents of an org (called when minting); answers how many are left.
pub async fn prune(state: &AppState, org: &str) -> ApiResult<usize> {
    let t = now();
    let mut left = 0;
    for d in grants(state, org).await? {
        if d.body["expires_at"].as_i64().is_none_or(|e| e <= t) {
            state.store.delete_document(org, KIND, &d.id).await?;
        } else {
            left += 1;
        }
    }
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer(filter: &[(&str, &str)]) -> Viewer {
        Viewer {
            org: "acme".into(),
            id: "t1".into(),
            grant: Grant {
                secret_hash: String::new(),
                user: EndUser { id: "u1".into(), name: None, email: None },
                can_export: false,
                filter: filter.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                created_by: "k".into(),
                created_at: 0,
                expires_at: i64::MAX,
                revoked_at: None,
            },
        }
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_fixed_filter_is_added_or_must_contain_what_is_asked() {
        let v = viewer(&[("project", "payments"), ("action", "component.*")]);
        let mut p = pairs(&[("q", "deploy")]);
        v.constrain(&mut p).unwrap();
        assert_eq!(p, pairs(&[("q", "deploy"), ("action", "component.*"), ("project", "payments")]));
        let mut p = pairs(&[("action", "component.deployed"), ("action", "component.dep*")]);
        v.constrain(&mut p).unwrap();
        assert_eq!(p.len(), 3, "narrower actions are kept, the project added");
        for wider in [("action", "component*"), ("action", "user.created"), ("project", "other")] {
            let e = v.constrain(&mut pairs(&[wider])).unwrap_err();
            assert_eq!((e.code, e.field.as_deref()), ("outside_viewer_filter", Some(wider.0)), "{wider:?}");
        }
        let mut none = pairs(&[("actor", "a")]);
        viewer(&[]).constrain(&mut none).unwrap();
        assert_eq!(none, pairs(&[("actor", "a")]), "no filter, nothing changed");
    }

    #[test]
    fn tokens_split_into_org_id_and_secret() {
        assert_eq!(split("trv_acme.abc.s3cr-et_"), Some(("acme", "abc", "s3cr-et_")));
        assert_eq!(split("trv_acme.abc.se.cret"), Some(("acme", "abc", "se.cret")));
        for bad in ["trk_acme.abc.s", "trv_acme.abc", "trv_Acme.abc.s", "trv_acme..s", "trv_acme.abc."] {
            assert_eq!(split(bad), None, "{bad}");
        }
    }

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        assert_eq!(check_origin("https://app.example.com").unwrap(), "https://app.example.com");
        assert_eq!(check_origin("http://127.0.0.1:8080/").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(check_origin("https://App.Example.com:8443").unwrap(), "https://app.example.com:8443");
        for bad in [
            "app.example.com",
            "ftp://x.example",
            "https://x.example/path",
            "https://x.example?q",
            "*",
            "https://*",
            "https://*.example.com",
            "https://a.example;sandbox",
            "https://a,script-src",
            "https://a'b.example",
            "http://[::1]:8080",
            "http://1.2.3",
            "http://256.1.1.1",
            "http://a.example:0",
            "http://a.example:65536",
            "http://a..example",
            "",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }
}
