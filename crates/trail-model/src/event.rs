//! Audit events: the ingest form (PRODUCT.md §1), its validation, and the stored form.
//!
//! Validation never guesses: an unknown field, a wrong type or a value out of range is rejected with
//! a [`FieldError`] that names the field, so a client can fix its integration.

use serde_json::{Map, Value};

use crate::FieldError;
use crate::time::{MICROS_PER_SECOND, Micros, format_rfc3339, parse_rfc3339};

/// Largest accepted event: the canonical bytes of one event must fit in 64 KiB.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
/// The `source` of Trail's own records (sign-ins, access changes). Only the server writes it: ingest
/// and import refuse it (`reserved_source`), so an event with this source is Trail's own.
pub const SELF_AUDIT_SOURCE: &str = "trail";

/// Whether `source` would read as Trail's own (compared as people read it: case and surrounding
/// whitespace ignored).
pub fn is_reserved_source(source: &str) -> bool {
    source.trim().eq_ignore_ascii_case(SELF_AUDIT_SOURCE)
}
/// How far in the future an event's `time` may lie (clock skew allowance).
pub const MAX_FUTURE_SKEW: Micros = 5 * 60 * MICROS_PER_SECOND;

/// Who performed the operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActorType {
    User,
    Service,
    System,
}

impl ActorType {
    pub fn as_str(&self) -> &'static str {
        match self {
            ActorType::User => "user",
            ActorType::Service => "service",
            ActorType::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(ActorType::User),
            "service" => Some(ActorType::Service),
            "system" => Some(ActorType::System),
            _ => None,
        }
    }
}

/// Whether the operation succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Outcome::Success),
            "failure" => Some(Outcome::Failure),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub id: String,
    pub kind: ActorType,
    pub name: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: String,
    pub id: Option<String>,
    pub name: Option<String>,
}

/// A validated event as a client sent it, before the store gives it an `org`, a `seq` and a receipt time.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The client's idempotency key; `None` lets the store mint a UUIDv7.
    pub id: Option<String>,
    /// When the operation happened; `None` means "at receipt".
    pub time: Option<Micros>,
    pub actor: Actor,
    pub action: String,
    pub target: Target,
    pub project: Option<String>,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub source: Option<String>,
    /// A JSON object, or `None`.
    pub info: Option<Map<String, Value>>,
}

/// An event as stored: the ingest form plus `org`, `seq` and `received_at`, all covered by the leaf hash.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub org: String,
    pub seq: u64,
    pub id: String,
    pub time: Micros,
    pub received_at: Micros,
    pub actor: Actor,
    pub action: String,
    pub target: Target,
    pub project: Option<String>,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub source: Option<String>,
    pub info: Option<Map<String, Value>>,
}

impl StoredEvent {
    /// The stored form of an accepted event: `time` defaults to `received_at`.
    pub fn accept(e: NewEvent, org: &str, seq: u64, id: String, received_at: Micros) -> Self {
        Self {
            org: org.to_string(),
            seq,
            id,
            time: e.time.unwrap_or(received_at),
            received_at,
            actor: e.actor,
            action: e.action,
            target: e.target,
            project: e.project,
            outcome: e.outcome,
            reason: e.reason,
            source: e.source,
            info: e.info,
        }
    }

    /// Reads back the JSON form (`to_json`), as an export holds it, so its canonical bytes and leaf
    /// hash can be recomputed offline. Fields added by `to_json` (`action_label`, `leaf_hash`, proofs)
    /// are ignored; anything missing or mistyped is an error naming the field.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let s = |m: &Value, k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
        let req = |m: &Value, k: &str| s(m, k).ok_or_else(|| format!("{k} is missing or not a string"));
        let time = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .and_then(parse_rfc3339)
                .ok_or_else(|| format!("{k} is not a timestamp"))
        };
        let actor = v.get("actor").ok_or("actor is missing")?;
        let target = v.get("target").ok_or("target is missing")?;
        Ok(Self {
            org: req(v, "org")?,
            seq: v.get("seq").and_then(Value::as_u64).ok_or("seq is missing")?,
            id: req(v, "id")?,
            time: time("time")?,
            received_at: time("received_at")?,
            actor: Actor {
                id: req(actor, "id")?,
                kind: ActorType::parse(&req(actor, "type")?).ok_or("actor.type is unknown")?,
                name: s(actor, "name"),
                ip: s(actor, "ip"),
                user_agent: s(actor, "user_agent"),
            },
            action: req(v, "action")?,
            target: Target { kind: req(target, "type")?, id: s(target, "id"), name: s(target, "name") },
            project: s(v, "project"),
            outcome: Outcome::parse(&req(v, "outcome")?).ok_or("outcome is unknown")?,
            reason: s(v, "reason"),
            source: s(v, "source"),
            info: match v.get("info") {
                None => None,
                Some(Value::Object(m)) => Some(m.clone()),
                Some(_) => return Err("info is not an object".into()),
            },
        })
    }

    pub fn with_time(mut self, time: Micros) -> Self {
        self.time = time;
        self
    }

    /// The JSON form the query API answers (and JSON exports contain), with the given leaf hash.
    pub fn to_json(&self, leaf_hash: &[u8; 32]) -> Value {
        use base64::Engine;
        let mut actor = Map::new();
        actor.insert("id".into(), self.actor.id.clone().into());
        actor.insert("type".into(), self.actor.kind.as_str().into());
        insert_opt(&mut actor, "name", &self.actor.name);
        insert_opt(&mut actor, "ip", &self.actor.ip);
        insert_opt(&mut actor, "user_agent", &self.actor.user_agent);
        let mut target = Map::new();
        target.insert("type".into(), self.target.kind.clone().into());
        insert_opt(&mut target, "id", &self.target.id);
        insert_opt(&mut target, "name", &self.target.name);

        let mut m = Map::new();
        m.insert("org".into(), self.org.clone().into());
        m.insert("seq".into(), self.seq.into());
        m.insert("id".into(), self.id.clone().into());
        m.insert("time".into(), format_rfc3339(self.time).into());
        m.insert("received_at".into(), format_rfc3339(self.received_at).into());
        m.insert("actor".into(), Value::Object(actor));
        m.insert("action".into(), self.action.clone().into());
        if let Some(label) = crate::catalog::label(&self.action) {
            m.insert("action_label".into(), label.into());
        }
        m.insert("target".into(), Value::Object(target));
        insert_opt(&mut m, "project", &self.project);
        m.insert("outcome".into(), self.outcome.as_str().into());
        insert_opt(&mut m, "reason", &self.reason);
        insert_opt(&mut m, "source", &self.source);
        if let Some(info) = &self.info {
            m.insert("info".into(), Value::Object(info.clone()));
        }
        m.insert("leaf_hash".into(), base64::engine::general_purpose::STANDARD.encode(leaf_hash).into());
        Value::Object(m)
    }
}

fn insert_opt(m: &mut Map<String, Value>, key: &str, v: &Option<String>) {
    if let Some(v) = v {
        m.insert(key.into(), v.clone().into());
    }
}

/// The time bounds an event's `time` must fall in, fixed by the caller from the clock and the org's retention.
#[derive(Debug, Clone, Copy)]
pub struct TimeBounds {
    /// Receipt time, used when `time` is absent.
    pub now: Micros,
    /// Oldest acceptable `time` (the start of hot retention).
    pub oldest: Micros,
}

const TOP_FIELDS: &[&str] =
    &["id", "time", "actor", "action", "target", "project", "outcome", "reason", "source", "info"];
const ACTOR_FIELDS: &[&str] = &["id", "type", "name", "ip", "user_agent"];
const TARGET_FIELDS: &[&str] = &["type", "id", "name"];

/// Admits one event, the same way wherever it comes from (HTTP ingest, `trail import`): at most
/// [`MAX_EVENT_BYTES`] of compact JSON, then [`parse_event`] (fields, the retention window, the
/// reserved source).
pub fn admit_event(v: &Value, bounds: TimeBounds) -> Result<NewEvent, FieldError> {
    let e = parse_event(v, bounds)?;
    if json_len(v) > MAX_EVENT_BYTES {
        return Err(FieldError::new(
            "event_too_large",
            "",
            format!("an event may be at most {MAX_EVENT_BYTES} bytes"),
        ));
    }
    Ok(e)
}

/// Serialized (compact) size of a JSON value, without building the string.
pub fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// Validates one event in ingest form. Every error names the field it is about.
pub fn parse_event(v: &Value, bounds: TimeBounds) -> Result<NewEvent, FieldError> {
    let Value::Object(m) = v else {
        return Err(FieldError::invalid("", "an event must be a JSON object"));
    };
    reject_unknown(m, TOP_FIELDS, "")?;

    let id = opt_str(m, "id", "id", 128)?;
    if let Some(id) = &id
        && (id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)))
    {
        return Err(FieldError::invalid("id", "must be 1-128 characters of A-Z a-z 0-9 . _ : -"));
    }
    let time = match m.get("time") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let t = parse_rfc3339(s)
                .ok_or_else(|| FieldError::invalid("time", "must be an RFC 3339 timestamp"))?;
            if t > bounds.now + MAX_FUTURE_SKEW {
                return Err(FieldError::new(
                    "time_in_future",
                    "time",
                    "is more than 5 minutes in the future",
                ));
            }
            if t < bounds.oldest {
                return Err(FieldError::new(
                    "outside_retention",
                    "time",
                    "is older than the organization's hot retention",
                ));
            }
            Some(t)
        }
        Some(_) => return Err(FieldError::invalid("time", "must be a string")),
    };

    let actor = match m.get("actor") {
        Some(Value::Object(a)) => parse_actor(a)?,
        None | Some(Value::Null) => return Err(missing("actor")),
        Some(_) => return Err(FieldError::invalid("actor", "must be an object")),
    };

    let action = req_str(m, "action", "action", 128)?;
    if !is_dotted_name(&action) {
        return Err(FieldError::invalid(
            "action",
            "must be dotted lowercase resource.verb, e.g. component.deployed",
        ));
    }

    let target = match m.get("target") {
        Some(Value::Object(t)) => parse_target(t)?,
        None | Some(Value::Null) => return Err(missing("target")),
        Some(_) => return Err(FieldError::invalid("target", "must be an object")),
    };

    let project = opt_str(m, "project", "project", 128)?;
    let outcome_s = req_str(m, "outcome", "outcome", 16)?;
    let outcome = Outcome::parse(&outcome_s)
        .ok_or_else(|| FieldError::invalid("outcome", "must be \"success\" or \"failure\""))?;
    let reason = opt_str(m, "reason", "reason", 1024)?;
    let source = opt_str(m, "source", "source", 64)?;
    if source.as_deref().is_some_and(is_reserved_source) {
        return Err(FieldError::new(
            "reserved_source",
            "source",
            "\"trail\" is reserved for Trail's own records and cannot be sent",
        ));
    }
    let info = match m.get("info") {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => Some(o.clone()),
        Some(_) => return Err(FieldError::invalid("info", "must be a JSON object")),
    };

    Ok(NewEvent { id, time, actor, action, target, project, outcome, reason, source, info })
}

fn parse_actor(a: &Map<String, Value>) -> Result<Actor, FieldError> {
    reject_unknown(a, ACTOR_FIELDS, "actor.")?;
    let id = req_str(a, "id", "actor.id", 256)?;
    let kind = match opt_str(a, "type", "actor.type", 16)? {
        None => ActorType::User,
        Some(s) => ActorType::parse(&s)
            .ok_or_else(|| FieldError::invalid("actor.type", "must be user, service or system"))?,
    };
    let name = opt_str(a, "name", "actor.name", 256)?;
    let ip = opt_str(a, "ip", "actor.ip", 64)?;
    if let Some(ip) = &ip
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        return Err(FieldError::invalid("actor.ip", "must be an IPv4 or IPv6 address"));
    }
    let user_agent = opt_str(a, "user_agent", "actor.user_agent", 512)?;
    Ok(Actor { id, kind, name, ip, user_agent })
}

fn parse_target(t: &Map<String, Value>) -> Result<Target, FieldError> {
    reject_unknown(t, TARGET_FIELDS, "target.")?;
    let kind = req_str(t, "type", "target.type", 64)?;
    if kind.is_empty() || !kind.bytes().all(is_name_byte) {
        return Err(FieldError::invalid("target.type", "must be lowercase letters, digits and _"));
    }
    let id = opt_str(t, "id", "target.id", 256)?;
    let name = opt_str(t, "name", "target.name", 256)?;
    Ok(Target { kind, id, name })
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'
}

/// `[a-z0-9_]+(\.[a-z0-9_]+)+`
pub fn is_dotted_name(s: &str) -> bool {
    let mut parts = 0;
    for part in s.split('.') {
        if part.is_empty() || !part.bytes().all(is_name_byte) {
            return false;
        }
        parts += 1;
    }
    parts >= 2
}

fn reject_unknown(m: &Map<String, Value>, known: &[&str], prefix: &str) -> Result<(), FieldError> {
    match m.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => {
            Err(FieldError::new("unknown_field", format!("{prefix}{k}"), "is not a field of an event"))
        }
        None => Ok(()),
    }
}

fn missing(field: &str) -> FieldError {
    FieldError::new("missing_field", field, "is required")
}

fn req_str(m: &Map<String, Value>, key: &str, field: &str, max: usize) -> Result<String, FieldError> {
    opt_str(m, key, field, max)?.ok_or_else(|| missing(field))
}

fn opt_str(m: &Map<String, Value>, key: &str, field: &str, max: usize) -> Result<Option<String>, FieldError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() > max => {
            Err(FieldError::invalid(field, format!("must be at most {max} characters")))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(FieldError::invalid(field, "must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: Micros = 1_800_000_000 * MICROS_PER_SECOND;
    const B: TimeBounds = TimeBounds { now: NOW, oldest: NOW - 365 * crate::time::MICROS_PER_DAY };

    fn ok() -> Value {
        json!({"actor": {"id": "alice@example.com", "ip": "10.0.0.1"}, "action": "component.deployed",
               "target": {"type": "component", "id": "c-1"}, "outcome": "success"})
    }

    fn err_field(v: Value) -> String {
        parse_event(&v, B).unwrap_err().field
    }

    #[test]
    fn minimal_event_defaults() {
        let e = parse_event(&ok(), B).unwrap();
        assert_eq!(e.actor.kind, ActorType::User);
        assert_eq!(e.time, None);
        assert_eq!(e.id, None);
        assert_eq!(e.outcome, Outcome::Success);
    }

    #[test]
    fn trails_own_source_is_refused_however_it_is_spelled() {
        for source in ["trail", "Trail", " TRAIL ", "trail\t"] {
            let mut v = ok();
            v["source"] = json!(source);
            let e = parse_event(&v, B).unwrap_err();
            assert_eq!((e.code, e.field.as_str()), ("reserved_source", "source"), "{source:?}");
        }
        for source in ["trail-ci", "trails", "github"] {
            let mut v = ok();
            v["source"] = json!(source);
            assert_eq!(parse_event(&v, B).unwrap().source.as_deref(), Some(source));
        }
    }

    #[test]
    fn errors_name_the_field() {
        let mut v = ok();
        v["colour"] = json!("red");
        assert_eq!(err_field(v), "colour");
        let mut v = ok();
        v["actor"]["ip"] = json!("10.0.0.300");
        assert_eq!(err_field(v), "actor.ip");
        let mut v = ok();
        v["actor"]["shoe"] = json!(1);
        assert_eq!(err_field(v), "actor.shoe");
        let mut v = ok();
        v["action"] = json!("Component.Deployed");
        assert_eq!(err_field(v), "action");
        let mut v = ok();
        v["action"] = json!("deployed");
        assert_eq!(err_field(v), "action");
        let mut v = ok();
        v.as_object_mut().unwrap().remove("target");
        assert_eq!(err_field(v), "target");
        let mut v = ok();
        v["target"]["type"] = json!("Comp onent");
        assert_eq!(err_field(v), "target.type");
        let mut v = ok();
        v["outcome"] = json!("maybe");
        assert_eq!(err_field(v), "outcome");
        let mut v = ok();
        v["id"] = json!("has space");
        assert_eq!(err_field(v), "id");
        let mut v = ok();
        v["info"] = json!([1, 2]);
        assert_eq!(err_field(v), "info");
        let mut v = ok();
        v["reason"] = json!("x".repeat(1025));
        assert_eq!(err_field(v), "reason");
        assert_eq!(parse_event(&json!([]), B).unwrap_err().field, "");
    }

    #[test]
    fn time_window() {
        let mut v = ok();
        v["time"] = json!(format_rfc3339(NOW + 6 * 60 * MICROS_PER_SECOND));
        assert_eq!(parse_event(&v, B).unwrap_err().code, "time_in_future");
        v["time"] = json!(format_rfc3339(NOW + 4 * 60 * MICROS_PER_SECOND));
        assert!(parse_event(&v, B).is_ok());
        v["time"] = json!(format_rfc3339(B.oldest - 1));
        assert_eq!(parse_event(&v, B).unwrap_err().code, "outside_retention");
        v["time"] = json!("yesterday");
        assert_eq!(err_field(v), "time");
    }

    #[test]
    fn json_form_reads_back_to_the_same_bytes() {
        let mut v = ok();
        v["info"] =
            json!({"n": 1.5, "big": 12345678901234567890u64, "s": "x\n\"y\"", "nested": {"b": [1, null]}});
        v["actor"]["name"] = json!("Zoë");
        let e = parse_event(&v, B).unwrap();
        let stored = StoredEvent::accept(e, "acme", 42, "evt-9".into(), NOW);
        let bytes = crate::canonical::encode(&stored);
        let json = stored.to_json(&[0; 32]);
        let text = serde_json::to_string(&json).unwrap();
        let back = StoredEvent::from_json(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(crate::canonical::encode(&back), bytes);
        // The exporter's writer produces the API's bytes exactly, with and without optional fields.
        for s in
            [stored.clone(), StoredEvent::accept(parse_event(&ok(), B).unwrap(), "o", 0, "i".into(), NOW)]
        {
            let mut direct = Vec::new();
            crate::canonical::write_json(&crate::canonical::encode(&s), &[7; 32], &mut direct).unwrap();
            assert_eq!(
                String::from_utf8(direct).unwrap(),
                serde_json::to_string(&s.to_json(&[7; 32])).unwrap()
            );
        }
        assert!(StoredEvent::from_json(&json!({"org": "a"})).is_err());
    }

    #[test]
    fn dotted_names() {
        assert!(is_dotted_name("a.b"));
        assert!(is_dotted_name("api_proxy.version_created"));
        assert!(!is_dotted_name("a."));
        assert!(!is_dotted_name(".a.b"));
        assert!(!is_dotted_name("a..b"));
        assert!(!is_dotted_name("a-b.c"));
    }
}
