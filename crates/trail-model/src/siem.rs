//! How an event looks to a SIEM: OCSF 1.8.0 JSON, ArcSight CEF, and RFC 5424 syslog messages with
//! octet-counted framing (RFC 6587). The streaming destinations send these; nothing here does IO.
//!
//! **OCSF class per action** (README "Stream to your SIEM" shows the table):
//! - sign-ins and sign-outs (`user.logged_in`, `user.signed_in`, `user.sign_in_failed`, `…_out`) →
//!   Authentication (3002), Logon or Logoff, status Failure when the outcome is;
//! - `user.created`, `user.deleted`, `user.password_changed`, `user.invited` → Account Change (3001);
//! - `user.role_assigned`, `user.role_revoked` → User Access Management (3005);
//! - `group.*` → Group Management (3006);
//! - everything else → Entity Management (3004), the activity chosen by the action's verb (created →
//!   Create, deleted/revoked/removed → Delete, updated/… → Update, enabled → Enable, disabled → Disable,
//!   viewed/searched/read → Read, else Other).
//!
//! Every OCSF event carries Trail's own event, exactly as the API answers it, in `raw_data`, so a
//! receiver can recompute its leaf hash; `metadata.uid` is the event id and `metadata.sequence` its seq.

use serde_json::{Map, Value, json};

use crate::catalog;
use crate::event::{Outcome, StoredEvent};
use crate::time::format_rfc3339;

/// The OCSF schema version the mapping follows.
pub const OCSF_VERSION: &str = "1.8.0";

/// An OCSF class and activity for an action: `(class_uid, class_name, activity_id, activity_name)`.
pub fn ocsf_class(action: &str) -> (u32, &'static str, u32, &'static str) {
    let verb = action.rsplit('.').next().unwrap_or(action);
    match action {
        "user.logged_in" | "user.signed_in" | "user.sign_in_failed" => (3002, "Authentication", 1, "Logon"),
        "user.logged_out" | "user.signed_out" => (3002, "Authentication", 2, "Logoff"),
        "user.created" => (3001, "Account Change", 1, "Create"),
        "user.deleted" => (3001, "Account Change", 6, "Delete"),
        "user.password_changed" => (3001, "Account Change", 3, "Password Change"),
        "user.invited" => (3001, "Account Change", 99, "Other"),
        "user.role_assigned" => (3005, "User Access Management", 1, "Assign Privileges"),
        "user.role_revoked" => (3005, "User Access Management", 2, "Revoke Privileges"),
        "group.created" => (3006, "Group Management", 6, "Create"),
        "group.deleted" => (3006, "Group Management", 5, "Delete"),
        "group.member_added" => (3006, "Group Management", 3, "Add User"),
        "group.member_removed" => (3006, "Group Management", 4, "Remove User"),
        "group.role_added" => (3006, "Group Management", 1, "Assign Privileges"),
        "group.role_removed" => (3006, "Group Management", 2, "Revoke Privileges"),
        _ if action.starts_with("group.") => (3006, "Group Management", 99, "Other"),
        _ => {
            let (id, name) = match verb {
                "created" | "version_created" | "invited" => (1, "Create"),
                "viewed" | "event_viewed" | "searched" | "read_by_key" | "downloaded" => (2, "Read"),
                "deleted" | "revoked" | "removed" => (4, "Delete"),
                "enabled" | "auto_deploy_enabled" | "tracing_enabled" | "read_audit_enabled" => (8, "Enable"),
                "disabled" | "auto_deploy_disabled" | "tracing_disabled" | "read_audit_disabled" => {
                    (9, "Disable")
                }
                v if v.ends_with("updated") || v == "rotated" || v == "accepted" => (3, "Update"),
                _ => (99, "Other"),
            };
            (3004, "Entity Management", id, name)
        }
    }
}

fn put(m: &mut Map<String, Value>, key: &str, v: &Option<String>) {
    if let Some(v) = v {
        m.insert(key.into(), v.clone().into());
    }
}

/// The OCSF user for an actor or a target: `uid` and `name` (OCSF needs one of them; `uid` is always there).
fn user(uid: &str, name: &Option<String>) -> Value {
    let mut u = Map::new();
    u.insert("uid".into(), uid.into());
    put(&mut u, "name", name);
    Value::Object(u)
}

/// The event as OCSF 1.8.0 JSON; `api_json` is the event as the API answers it (with its leaf hash).
pub fn ocsf(e: &StoredEvent, api_json: &Value, product_version: &str) -> Value {
    let (class_uid, class_name, activity_id, activity_name) = ocsf_class(&e.action);
    let failed = e.outcome == Outcome::Failure;
    let mut m = Map::new();
    m.insert("class_uid".into(), class_uid.into());
    m.insert("class_name".into(), class_name.into());
    m.insert("category_uid".into(), (class_uid / 1000).into());
    m.insert(
        "category_name".into(),
        // Every class the mapping chooses is in category 3.
        "Identity & Access Management".into(),
    );
    m.insert("activity_id".into(), activity_id.into());
    m.insert("activity_name".into(), activity_name.into());
    m.insert("type_uid".into(), (u64::from(class_uid) * 100 + u64::from(activity_id)).into());
    m.insert("type_name".into(), format!("{class_name}: {activity_name}").into());
    m.insert("time".into(), (e.time / 1000).into());
    m.insert("severity_id".into(), if failed { 3 } else { 1 }.into());
    m.insert("severity".into(), if failed { "Medium" } else { "Informational" }.into());
    m.insert("status_id".into(), if failed { 2 } else { 1 }.into());
    m.insert("status".into(), if failed { "Failure" } else { "Success" }.into());
    put(&mut m, "status_detail", &e.reason);
    m.insert("message".into(), catalog::label(&e.action).unwrap_or(&e.action).into());
    m.insert(
        "metadata".into(),
        json!({
            "version": OCSF_VERSION,
            "uid": e.id,
            "sequence": e.seq,
            "tenant_uid": e.org,
            "logged_time": e.received_at / 1000,
            "original_time": format_rfc3339(e.time),
            "product": {"name": "Trail", "vendor_name": "Trail", "version": product_version},
        }),
    );
    let mut actor = Map::new();
    actor.insert("user".into(), user(&e.actor.id, &e.actor.name));
    m.insert("actor".into(), Value::Object(actor));
    if e.actor.ip.is_some() || e.actor.user_agent.is_some() {
        let mut src = Map::new();
        put(&mut src, "ip", &e.actor.ip);
        m.insert("src_endpoint".into(), Value::Object(src));
        if let Some(ua) = &e.actor.user_agent {
            m.insert("http_request".into(), json!({"user_agent": ua}));
        }
    }
    let target_uid = e.target.id.clone().unwrap_or_else(|| e.target.kind.clone());
    match class_uid {
        3002 => {
            m.insert("user".into(), user(&e.actor.id, &e.actor.name));
            m.insert("service".into(), json!({"name": e.source.as_deref().unwrap_or("Trail")}));
        }
        3001 => {
            m.insert("user".into(), user(&target_uid, &e.target.name));
        }
        3005 => {
            m.insert("user".into(), user(&target_uid, &e.target.name));
            m.insert("privileges".into(), privileges(e).into());
        }
        3006 => {
            let mut g = Map::new();
            g.insert("uid".into(), target_uid.into());
            put(&mut g, "name", &e.target.name);
            m.insert("group".into(), Value::Object(g));
        }
        _ => {
            let mut entity = Map::new();
            entity.insert("uid".into(), target_uid.into());
            put(&mut entity, "name", &e.target.name);
            entity.insert("type".into(), e.target.kind.clone().into());
            entity.insert("type_id".into(), 99.into());
            m.insert("entity".into(), Value::Object(entity));
        }
    }
    let mut trail = Map::new();
    trail.insert("action".into(), e.action.clone().into());
    trail.insert("seq".into(), e.seq.into());
    put(&mut trail, "project", &e.project);
    put(&mut trail, "source", &e.source);
    if let Some(info) = &e.info {
        trail.insert("info".into(), Value::Object(info.clone()));
    }
    m.insert("unmapped".into(), json!({"trail": trail}));
    m.insert("raw_data".into(), api_json.to_string().into());
    Value::Object(m)
}

/// The privileges a role change grants or revokes, from `info.role`/`info.roles`, else the target's name.
fn privileges(e: &StoredEvent) -> Vec<String> {
    let info = e.info.as_ref();
    let from_info = info.and_then(|i| match (i.get("roles"), i.get("role")) {
        (Some(Value::Array(a)), _) => Some(a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()),
        (_, Some(Value::String(s))) => Some(vec![s.clone()]),
        _ => None,
    });
    match from_info {
        Some(v) if !v.is_empty() => v,
        _ => vec![e.target.name.clone().or_else(|| e.target.id.clone()).unwrap_or_else(|| e.action.clone())],
    }
}

/// Escapes a CEF header field (`\` and `|`).
fn cef_header(s: &str) -> String {
    s.replace('\\', "\\\\").replace('|', "\\|").replace(['\r', '\n'], " ")
}

/// Escapes a CEF extension value (`\`, `=`, and line breaks as `\n`/`\r`).
fn cef_value(s: &str) -> String {
    s.replace('\\', "\\\\").replace('=', "\\=").replace('\n', "\\n").replace('\r', "\\r")
}

/// The event as one ArcSight CEF:0 record (no line break): vendor `Trail`, product `Trail`, the action as
/// signature id, the catalog label as name, severity 3 (success) or 6 (failure).
pub fn cef(e: &StoredEvent, leaf_hash_b64: &str, product_version: &str) -> String {
    let name = catalog::label(&e.action).unwrap_or(&e.action);
    let severity = if e.outcome == Outcome::Failure { 6 } else { 3 };
    let mut ext: Vec<(&str, String)> =
        vec![("rt", (e.time / 1000).to_string()), ("externalId", e.id.clone()), ("suid", e.actor.id.clone())];
    if let Some(n) = &e.actor.name {
        ext.push(("suser", n.clone()));
    }
    if let Some(ip) = e.actor.ip.as_ref().filter(|ip| ip.parse::<std::net::IpAddr>().is_ok()) {
        ext.push(("src", ip.clone()));
    }
    if let Some(ua) = &e.actor.user_agent {
        ext.push(("requestClientApplication", ua.clone()));
    }
    ext.push(("outcome", e.outcome.as_str().to_string()));
    if let Some(r) = &e.reason {
        ext.push(("reason", r.clone()));
    }
    ext.push(("cs1Label", "org".into()));
    ext.push(("cs1", e.org.clone()));
    ext.push(("cs2Label", "targetType".into()));
    ext.push(("cs2", e.target.kind.clone()));
    if let Some(id) = &e.target.id {
        ext.push(("cs3Label", "targetId".into()));
        ext.push(("cs3", id.clone()));
    }
    if let Some(n) = &e.target.name {
        ext.push(("cs4Label", "targetName".into()));
        ext.push(("cs4", n.clone()));
    }
    if let Some(p) = &e.project {
        ext.push(("cs5Label", "project".into()));
        ext.push(("cs5", p.clone()));
    }
    ext.push(("cs6Label", "leafHash".into()));
    ext.push(("cs6", leaf_hash_b64.to_string()));
    ext.push(("cn1Label", "seq".into()));
    ext.push(("cn1", e.seq.to_string()));
    if let Some(s) = &e.source {
        ext.push(("sourceServiceName", s.clone()));
    }
    let ext: Vec<String> = ext.into_iter().map(|(k, v)| format!("{k}={}", cef_value(&v))).collect();
    format!(
        "CEF:0|Trail|Trail|{}|{}|{}|{severity}|{}",
        cef_header(product_version),
        cef_header(&e.action),
        cef_header(name),
        ext.join(" ")
    )
}

/// Syslog facility 13, "log audit" (RFC 5424 table 1).
pub const FACILITY_LOG_AUDIT: u8 = 13;

/// The RFC 5424 field rules for HOSTNAME, APP-NAME and MSGID: printable US-ASCII without spaces, at
/// most `max` characters, `-` when empty.
fn header_field(s: &str, max: usize) -> String {
    let t: String = s.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if t.is_empty() { "-".into() } else { t }
}

/// One RFC 5424 message for an event: `<PRI>1 TIMESTAMP HOSTNAME trail - MSGID [trail@… seq= org=] MSG`,
/// with severity informational (6) or warning (4) for a failure, MSGID the action, the event's `time` as
/// TIMESTAMP, and `msg` (JSON or CEF) as the UTF-8 message with its BOM.
///
/// The structured-data element names Trail's seq and org so a collector can order and deduplicate;
/// its SD-ID uses the documentation enterprise number 32473 (RFC 5612) until Trail has its own.
pub fn rfc5424(e: &StoredEvent, facility: u8, hostname: &str, msg: &str) -> String {
    let severity = if e.outcome == Outcome::Failure { 4 } else { 6 };
    let pri = u32::from(facility) * 8 + severity;
    let sd_value = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"").replace(']', "\\]");
    format!(
        "<{pri}>1 {} {} trail - {} [trail@32473 org=\"{}\" seq=\"{}\" id=\"{}\"] \u{feff}{msg}",
        format_rfc3339(e.time),
        header_field(hostname, 255),
        header_field(&e.action, 32),
        sd_value(&e.org),
        e.seq,
        sd_value(&e.id),
    )
}

/// Octet-counted framing (RFC 6587 §3.4.1, RFC 5425): `LEN SP MSG`, with no trailing line break.
pub fn octet_counted(msg: &str) -> String {
    format!("{} {msg}", msg.len())
}

/// What a webhook destination POSTs: a contiguous range of one org's log with the proof that it is
/// complete and unaltered (README "Checking a stream is complete").
///
/// Every seq from `first_seq` to `last_seq` is either in `events` (those the destination's filters
/// pass) or in `skipped` with its leaf hash (filtered out, or archived). `frontier` is the log's
/// compact range before `first_seq`: the roots of the complete subtrees of leaves `0..first_seq`,
/// largest first. From it and the range's leaves a receiver computes the root of the log at
/// `last_seq + 1` leaves; `consistency` proves that root is a prefix of the signed `checkpoint`. So each
/// batch is checkable alone, and consecutive batches must join (`first_seq` = the previous
/// `last_seq + 1`, or overlap when a batch was sent again).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// This format's version: 1.
    pub trail_batch: u32,
    pub org: String,
    pub destination: String,
    pub first_seq: u64,
    pub last_seq: u64,
    /// `json` (events as the API answers them) or `ocsf` (OCSF objects, Trail's event in `raw_data`).
    pub format: String,
    pub events: Vec<Value>,
    pub skipped: Vec<Skipped>,
    /// Base64 hashes.
    pub frontier: Vec<String>,
    /// The C2SP signed note of a checkpoint whose size is above `last_seq`.
    pub checkpoint: String,
    /// Base64 hashes: RFC 9162 consistency from `last_seq + 1` leaves to the checkpoint's size.
    pub consistency: Vec<String>,
}

/// A leaf of a batch's range that is not delivered as an event.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Skipped {
    pub seq: u64,
    /// Base64.
    pub leaf_hash: String,
    /// `filtered` or `archived`.
    pub why: String,
}

impl Batch {
    pub const VERSION: u32 = 1;

    /// The Trail event inside one of `events`: the event itself (`json`), or OCSF's `raw_data`.
    pub fn trail_event(&self, v: &Value) -> Result<StoredEvent, String> {
        let owned;
        let event = if self.format == "ocsf" {
            let raw = v.get("raw_data").and_then(Value::as_str).ok_or("an OCSF event has no raw_data")?;
            owned = serde_json::from_str::<Value>(raw).map_err(|e| format!("raw_data is not JSON: {e}"))?;
            &owned
        } else {
            v
        };
        StoredEvent::from_json(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Actor, ActorType, Target};

    fn event(action: &str) -> StoredEvent {
        StoredEvent {
            org: "acme".into(),
            seq: 41,
            id: "e-1".into(),
            time: 1_700_000_000_123_456,
            received_at: 1_700_000_001_000_000,
            actor: Actor {
                id: "u1".into(),
                kind: ActorType::User,
                name: Some("Ana = admin | ops".into()),
                ip: Some("10.0.0.1".into()),
                user_agent: None,
            },
            action: action.into(),
            target: Target { kind: "project".into(), id: Some("p1".into()), name: Some("Web\nshop".into()) },
            project: None,
            outcome: Outcome::Failure,
            reason: Some("bad \\ password".into()),
            source: Some("console".into()),
            info: None,
        }
    }

    #[test]
    fn cef_escapes_header_and_extension_values() {
        let line = cef(&event("project.created"), "AAAA", "0.1.0");
        assert!(
            line.starts_with("CEF:0|Trail|Trail|0.1.0|project.created|Project created|6|rt=1700000000123 ")
        );
        assert!(line.contains(" suser=Ana \\= admin | ops "), "{line}");
        assert!(line.contains(" cs4=Web\\nshop "), "{line}");
        assert!(line.contains(" reason=bad \\\\ password "), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn rfc5424_header_and_octet_count() {
        let msg = rfc5424(&event("user.sign_in_failed"), FACILITY_LOG_AUDIT, "host one", "hé");
        assert_eq!(
            msg,
            "<108>1 2023-11-14T22:13:20.123456Z hostone trail - user.sign_in_failed \
             [trail@32473 org=\"acme\" seq=\"41\" id=\"e-1\"] \u{feff}hé"
        );
        let framed = octet_counted(&msg);
        let (len, rest) = framed.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), rest.len(), "the count is in bytes, not characters");
    }
}
