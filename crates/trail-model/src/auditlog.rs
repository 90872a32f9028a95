//! The integration runtime's `audit.log` line format (PRODUCT.md §9): writing a stored event as one
//! log4j2 `PatternLayout` line for the file sink, and reading such lines back for `trail import`.
//!
//! The runtime's layout is `[%d] %5p {%c} - %m%ex%n`, so a record reads
//!
//! ```text
//! [2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - {"performedBy":"admin","action":"created","type":"user","info":{"userId":"user4"}}
//! ```
//!
//! **Writing.** `performedBy` is the actor's id; `type` and `action` are the runtime's words for the
//! event's target type and action (see [`runtime_words`]); `info` is the event's `info` plus the
//! fields the runtime has no place for, under the keys in [`INFO_KEYS`]. The JSON is produced by
//! serde_json, so it is always valid and a newline inside a value is escaped: one event, one line.
//!
//! **Reading** accepts what the runtime and its documentation actually contain: Trail's own lines
//! (strict JSON), the runtime's JSON with `info` as a string of escaped JSON, the documentation's
//! curly-quoted pseudo-JSON (`“ ”` as quotes, escaped or not, mixed with `"`, a value missing its
//! closing quote before `}`, `info` as a bare object), and the older Carbon sign-in lines
//! (`admin logged in at [2017-06-07 22:26:22,501+0530]`). A line that is not an audit record is an
//! error with a reason, except blank lines and Java stack-trace continuation lines (`\tat a.B(C.java:1)`,
//! `Caused by: …`, `... 3 more`), which log4j2's `%ex` may write after a record and which describe no
//! operation: those read as `Ok(None)`.
//!
//! This module never does IO and never decides a time zone: a line's time is a local civil time, and
//! only the caller knows the zone the runtime wrote it in.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use crate::event::{ActorType, Outcome, StoredEvent, TimeBounds, parse_event};
use crate::time::Micros;

/// The `source` of events imported from a runtime's `audit.log`.
pub const SOURCE: &str = "audit.log";

/// The keys Trail adds to a line's `info` for the event fields the runtime's format has no place for.
/// They are written only when the event has a value for them (`eventId`, `seq` and `outcome` always):
///
/// | key | event field | written when |
/// |---|---|---|
/// | `eventId` | `id` | always; its presence marks a line as written by Trail |
/// | `seq` | `seq` | always |
/// | `eventAction` | `action` | the runtime words do not read back as the action (see [`runtime_words`]) |
/// | `targetType` | `target.type` | the runtime `type` does not read back as the target type |
/// | `targetId`, `targetName` | `target.id`, `target.name` | present |
/// | `actorType` | `actor.type` | not `user` |
/// | `actorName`, `actorIp`, `actorUserAgent` | `actor.name`, `actor.ip`, `actor.user_agent` | present |
/// | `project`, `outcome`, `reason`, `source` | the same fields | present |
///
/// An `info` key of the event with one of these names is overwritten by the field on writing; reading
/// takes these keys back out of `info` into the fields (when they have the right JSON type).
pub const INFO_KEYS: &[&str] = &[
    "org",
    "eventId",
    "seq",
    "eventAction",
    "targetType",
    "targetId",
    "targetName",
    "actorType",
    "actorName",
    "actorIp",
    "actorUserAgent",
    "project",
    "outcome",
    "reason",
    "source",
];

/// One event as a runtime-format line, ending in `\n`; the time is the event's, shifted by
/// `utc_offset_seconds` (the sink's zone at that instant) and truncated to milliseconds.
pub fn format_line(e: &StoredEvent, utc_offset_seconds: i32) -> String {
    let (rt_type, verb) = runtime_words(&e.action, &e.target.kind);
    let (read_action, read_type) = catalog_action(&rt_type, &verb);

    let mut info = e.info.clone().unwrap_or_default();
    for (key, value) in [
        ("targetId", &e.target.id),
        ("targetName", &e.target.name),
        ("actorName", &e.actor.name),
        ("actorIp", &e.actor.ip),
        ("actorUserAgent", &e.actor.user_agent),
        ("project", &e.project),
        ("reason", &e.reason),
        ("source", &e.source),
    ] {
        if let Some(v) = value {
            info.insert(key.into(), v.clone().into());
        }
    }
    info.insert("org".into(), e.org.clone().into());
    info.insert("eventId".into(), e.id.clone().into());
    info.insert("seq".into(), e.seq.into());
    info.insert("outcome".into(), e.outcome.as_str().into());
    if e.actor.kind != ActorType::User {
        info.insert("actorType".into(), e.actor.kind.as_str().into());
    }
    if read_action != e.action {
        info.insert("eventAction".into(), e.action.clone().into());
    }
    if read_type != e.target.kind {
        info.insert("targetType".into(), e.target.kind.clone().into());
    }

    // `Value`'s Display is compact JSON and cannot fail; the outer object is written by hand only
    // because the runtime's key order (performedBy, action, type, info) is part of the format.
    format!(
        "[{}]  INFO {{AUDIT_LOG}} - {{\"performedBy\":{},\"action\":{},\"type\":{},\"info\":{}}}\n",
        stamp(local_time_of(e.time, utc_offset_seconds)),
        Value::String(e.actor.id.clone()),
        Value::String(verb),
        Value::String(rt_type),
        Value::Object(info),
    )
}

/// One event as a line of the sink's `format = "json"`: the query API's JSON form, ending in `\n`.
pub fn format_json_line(e: &StoredEvent, leaf: &[u8; 32]) -> String {
    let mut line = e.to_json(leaf).to_string();
    line.push('\n');
    line
}

/// The runtime's `(type, action)` words for a Trail action and target type.
///
/// The action word is the action's last dotted component, except that
/// - `tracing_enabled` / `tracing_disabled` become `enabled` / `disabled` with type `<target type>_trace`,
///   as the runtime writes message-tracing changes (`proxy_service_trace`, `api_trace`, …);
/// - any `…_updated` (`access_mode_updated`, `build_config_updated`, `settings_updated`) becomes
///   `updated`, the runtime's word for every change of a resource.
///
/// So `user.created` → (`user`, `created`), `proxy_service.tracing_enabled` → (`proxy_service_trace`,
/// `enabled`), `component.deployed` → (`component`, `deployed`). Where the words do not read back as
/// the same action ([`catalog_action`]), the line keeps the action in `info.eventAction`.
pub fn runtime_words(action: &str, target_type: &str) -> (String, String) {
    let last = action.rsplit('.').next().unwrap_or(action);
    match last {
        "tracing_enabled" => (format!("{target_type}_trace"), "enabled".into()),
        "tracing_disabled" => (format!("{target_type}_trace"), "disabled".into()),
        v if v.ends_with("_updated") => (target_type.to_string(), "updated".into()),
        v => (target_type.to_string(), v.to_string()),
    }
}

/// The Trail `(action, target type)` for the runtime's `type` and `action` words, both already
/// lowercase `[a-z0-9_]+`: `<type>_trace` + `enabled`/`disabled` is `<type>.tracing_<verb>` on a
/// `<type>`, anything else is `<type>.<verb>`. Every documented runtime operation lands on a catalog
/// action this way (`user.created`, `carbon_application.deleted`, `proxy_service.tracing_enabled`,
/// `log_level.updated`, `logger.created`, `api.tracing_enabled`, …).
pub fn catalog_action(rt_type: &str, verb: &str) -> (String, String) {
    if let Some(base) = rt_type.strip_suffix("_trace")
        && !base.is_empty()
        && matches!(verb, "enabled" | "disabled")
    {
        return (format!("{base}.tracing_{verb}"), base.to_string());
    }
    (format!("{rt_type}.{verb}"), rt_type.to_string())
}

/// The civil time, to the millisecond, that `micros` reads as at `utc_offset_seconds`. Times outside
/// the years ±9999 (which validation never lets in) saturate.
/// A sign-in, sign-out or failed sign-in in the runtime's older line shape, which existing log parsers
/// read: `[2017-06-07 22:26:22,506]  INFO -  admin logged in at [2017-06-07 22:26:22,501+0530]`
/// (`Failed Administrator login attempt 'bob' at […]` for a failure). `None` for any other event.
/// [`parse_line`] reads it back as the same action, user and time (to the millisecond); the other
/// fields (the address, the org, the seq) are what this shape cannot carry.
pub fn format_sign_in_line(e: &StoredEvent, utc_offset_seconds: i32) -> Option<String> {
    let user = e.actor.id.as_str();
    let message = match e.action.as_str() {
        "user.logged_in" | "user.signed_in" if e.outcome == crate::event::Outcome::Success => {
            format!("{user} logged in")
        }
        "user.logged_out" | "user.signed_out" => format!("{user} logged out"),
        "user.sign_in_failed" | "user.logged_in" | "user.signed_in" => {
            format!("Failed Administrator login attempt '{user}'")
        }
        _ => return None,
    };
    // The shape has no quoting: a user that would read as another line or phrase keeps the JSON line.
    if user.is_empty() || user.contains(['\n', '\r', '\'', '[', ']']) || user.contains(" at ") {
        return None;
    }
    let stamp = stamp(local_time_of(e.time, utc_offset_seconds));
    let sign = if utc_offset_seconds < 0 { '-' } else { '+' };
    let off = utc_offset_seconds.unsigned_abs();
    Some(format!("[{stamp}]  INFO -  {message} at [{stamp}{sign}{:02}{:02}]\n", off / 3600, off % 3600 / 60))
}

/// log4j2's `%d`: `2017-06-07 22:26:22,501`.
fn stamp(t: PrimitiveDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02},{:03}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn local_time_of(micros: Micros, utc_offset_seconds: i32) -> PrimitiveDateTime {
    let millis = i128::from(micros.div_euclid(1_000)) + i128::from(utc_offset_seconds) * 1_000;
    let nanos = millis * 1_000_000;
    match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => PrimitiveDateTime::new(t.date(), t.time()),
        Err(_) if nanos < 0 => PrimitiveDateTime::MIN,
        Err(_) => PrimitiveDateTime::MAX,
    }
}

/// One audit record read from a line.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedLine {
    /// The civil time at the start of the line (`[2021-09-07 12:42:59,249]`), in the writer's zone.
    pub local_time: PrimitiveDateTime,
    /// The instant of the operation when the line itself says its offset: the time in
    /// `logged in at [2017-06-07 22:26:22,501+0530]` (authoritative over `local_time`), or a leading
    /// timestamp with an offset. `None` means the caller must place `local_time` in a zone.
    pub absolute_time: Option<Micros>,
    /// The event in ingest form (PRODUCT.md §1) without `id` and `time`, which the caller sets. It
    /// passes [`parse_event`] once `time` is within bounds.
    pub event: Value,
    /// The id Trail gave the event, when Trail wrote the line (`info.eventId`).
    pub event_id: Option<String>,
    /// The event's `seq` in the org that wrote the line, when Trail wrote it (`info.seq`).
    pub seq: Option<u64>,
    /// The org that wrote the line, when Trail wrote it (`info.org`).
    pub org: Option<String>,
}

/// Why a line is not an audit record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LineError {
    /// A lowercase reason, without the line itself (the caller knows which line it was).
    pub message: String,
}

impl LineError {
    fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }
}

/// Reads one line of an `audit.log` (with or without its line ending): `Ok(None)` for a blank line or
/// a stack-trace continuation line, an error for anything else that is not an audit record.
pub fn parse_line(line: &str) -> Result<Option<ParsedLine>, LineError> {
    let line = line.trim_start_matches('\u{feff}').trim_end();
    if line.trim_start().is_empty() || is_stack_trace_line(line) {
        return Ok(None);
    }
    let (header, message) = parse_header(line)?;
    let parsed = if message.starts_with('{') {
        if header.category.is_some_and(|c| !c.eq_ignore_ascii_case("AUDIT_LOG")) {
            return Err(LineError::new(format!(
                "not an audit record: its logger is {{{}}}, not {{AUDIT_LOG}}",
                header.category.unwrap_or_default()
            )));
        }
        record_event(message)?
    } else if let Some(p) = sign_in_event(message)? {
        p
    } else {
        return Err(LineError::new(
            "not an audit record: the message is neither a JSON record nor a sign-in",
        ));
    };

    // Whatever the line says must make a valid event; `time` is absent, so the bounds do not matter.
    let bounds = TimeBounds { now: 0, oldest: Micros::MIN };
    parse_event(&parsed.event, bounds)
        .map_err(|e| LineError::new(format!("the record does not make a valid event: {e}")))?;
    Ok(Some(ParsedLine {
        local_time: header.local_time,
        absolute_time: parsed.absolute_time.or(header.absolute_time),
        event: parsed.event,
        event_id: parsed.event_id,
        seq: parsed.seq,
        org: parsed.org,
    }))
}

/// A stable event id for an imported line: `imp-` and 32 hex digits of SHA-256 over a domain tag, the
/// trimmed line and `occurrence`, the number of times this exact line came before it in its file
/// (0 for the first). Importing the same file twice gives the same ids; two identical lines stay two
/// events.
pub fn derive_id(line: &str, occurrence: u32) -> String {
    let mut h = Sha256::new();
    h.update(b"trail/import/audit.log/v1\0");
    h.update(line.trim_start_matches('\u{feff}').trim().as_bytes());
    h.update(b"\0");
    h.update(occurrence.to_be_bytes());
    let digest = hex::encode(h.finalize());
    format!("imp-{}", &digest[..32])
}

/// `\tat org.Foo.bar(Foo.java:12)`, `\t... 12 more`, `Caused by: …`, `Suppressed: …`.
fn is_stack_trace_line(line: &str) -> bool {
    let indented = line.starts_with([' ', '\t']);
    let t = line.trim_start();
    (indented && t.starts_with("at ") && t.contains('(') && t.ends_with(')'))
        || (indented && t.starts_with("... ") && t.ends_with(" more"))
        || t.starts_with("Caused by: ")
        || t.starts_with("Suppressed: ")
}

struct Header<'a> {
    local_time: PrimitiveDateTime,
    absolute_time: Option<Micros>,
    category: Option<&'a str>,
}

/// `[timestamp] LEVEL {category} - message`; the category is optional (the old sign-in lines have none).
fn parse_header(line: &str) -> Result<(Header<'_>, &str), LineError> {
    let not_a_line =
        || LineError::new("not an audit log line: it does not start with [yyyy-MM-dd HH:mm:ss,SSS]");
    let rest = line.strip_prefix('[').ok_or_else(not_a_line)?;
    let (stamp, rest) = rest.split_once(']').ok_or_else(not_a_line)?;
    let (local_time, absolute_time) = parse_timestamp(stamp)?;

    let rest = rest.trim_start();
    let level_len = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
    let level = &rest[..level_len];
    if !["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"].contains(&level) {
        return Err(LineError::new("not an audit log line: no log level after the timestamp"));
    }
    let mut rest = rest[level_len..].trim_start();
    let mut category = None;
    if let Some(r) = rest.strip_prefix('{') {
        let (c, r) = r.split_once('}').ok_or_else(|| LineError::new("unclosed {logger} after the level"))?;
        category = Some(c);
        rest = r.trim_start();
    }
    let message = rest
        .strip_prefix('-')
        .ok_or_else(|| LineError::new("not an audit log line: no ' - ' before the message"))?
        .trim_start();
    Ok((Header { local_time, absolute_time, category }, message))
}

/// `yyyy-MM-dd HH:mm:ss,SSS` (log4j2's `%d`), also with `T` and `.`, and an optional offset
/// (`+0530`, `+05:30`, `Z`), which makes the time absolute.
fn parse_timestamp(s: &str) -> Result<(PrimitiveDateTime, Option<Micros>), LineError> {
    let bad = || LineError::new(format!("invalid timestamp [{s}]"));
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Result<u32, LineError> {
        let digits = b.get(from..from + len).ok_or_else(bad)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        Ok(digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let sep = |at: usize, allowed: &[u8]| b.get(at).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b" T") && sep(13, b":") && sep(16, b":")) {
        return Err(bad());
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let mut at = 19;
    let mut nanos = 0;
    if sep(at, b",.") {
        let digits = b[at + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&digits) {
            return Err(bad());
        }
        nanos = num(at + 1, digits)? * 10u32.pow(9 - digits as u32);
        at += 1 + digits;
    }
    let month = u8::try_from(month).ok().and_then(|m| Month::try_from(m).ok()).ok_or_else(bad)?;
    let date = Date::from_calendar_date(year as i32, month, day as u8).map_err(|_| bad())?;
    let time = Time::from_hms_nano(hour as u8, minute as u8, second as u8, nanos).map_err(|_| bad())?;
    let local = PrimitiveDateTime::new(date, time);

    let offset = match &s[at..] {
        "" => return Ok((local, None)),
        "Z" => 0,
        o => {
            let sign = match o.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return Err(bad()),
            };
            let hm = o[1..].replace(':', "");
            if !(hm.len() == 2 || hm.len() == 4) || !hm.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            let hours: i32 = hm[..2].parse().map_err(|_| bad())?;
            let minutes: i32 = if hm.len() == 4 { hm[2..].parse().map_err(|_| bad())? } else { 0 };
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let offset = UtcOffset::from_whole_seconds(offset).map_err(|_| bad())?;
    let micros = local.assume_offset(offset).unix_timestamp_nanos() / 1_000;
    Ok((local, Some(Micros::try_from(micros).map_err(|_| bad())?)))
}

/// What a message says, before the header's time is attached.
struct Parsed {
    event: Value,
    absolute_time: Option<Micros>,
    event_id: Option<String>,
    seq: Option<u64>,
    org: Option<String>,
}

/// The runtime's JSON record, strict or as its documentation writes it.
fn record_event(message: &str) -> Result<Parsed, LineError> {
    let mut record = match serde_json::from_str::<Value>(message) {
        Ok(Value::Object(m)) => m,
        _ => lenient::parse_object(message).map_err(|e| LineError::new(format!("unreadable record: {e}")))?,
    };
    let mut text = |key: &str| -> Result<String, LineError> {
        match record.remove(key) {
            Some(Value::String(s)) => Ok(s),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(LineError::new(format!("the record has no {key}"))),
        }
    };
    let actor_id = text("performedBy")?;
    let rt_action = name_of(&text("action")?);
    let rt_type = name_of(&text("type")?);
    if rt_action.is_empty() || rt_type.is_empty() {
        return Err(LineError::new("the record's type and action must contain letters or digits"));
    }

    let mut info = match record.remove("info") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(m)) => m,
            _ => lenient::parse_object(&s).unwrap_or_else(|_| Map::from_iter([("details".into(), s.into())])),
        },
        Some(other) => Map::from_iter([("details".to_string(), other)]),
    };
    // Keys the runtime may add in later versions are details too.
    for (k, v) in record {
        info.entry(k).or_insert(v);
    }

    let (action, target_type) = catalog_action(&rt_type, &rt_action);
    let event_id = take_str(&mut info, "eventId");
    let seq = info.get("seq").and_then(Value::as_u64);
    if seq.is_some() {
        info.remove("seq");
    }
    let written_by_trail = event_id.is_some();
    let org = if written_by_trail { take_str(&mut info, "org") } else { None };

    let action = take_str(&mut info, "eventAction").unwrap_or(action);
    let target_type = take_str(&mut info, "targetType").unwrap_or(target_type);
    let mut target_id = take_str(&mut info, "targetId");
    let mut target_name = take_str(&mut info, "targetName");
    if !written_by_trail && target_id.is_none() && target_name.is_none() {
        (target_id, target_name) = infer_target(&target_type, &mut info);
    }
    let actor_type = info.get("actorType").and_then(Value::as_str).and_then(ActorType::parse);
    if actor_type.is_some() {
        info.remove("actorType");
    }
    let outcome = info.get("outcome").and_then(Value::as_str).and_then(Outcome::parse);
    if outcome.is_some() {
        info.remove("outcome");
    }

    let mut actor = Map::new();
    actor.insert("id".into(), actor_id.into());
    actor.insert("type".into(), actor_type.unwrap_or(ActorType::User).as_str().into());
    for (key, field) in [("actorName", "name"), ("actorIp", "ip"), ("actorUserAgent", "user_agent")] {
        if let Some(v) = take_str(&mut info, key) {
            actor.insert(field.into(), v.into());
        }
    }
    let mut target = Map::new();
    target.insert("type".into(), target_type.into());
    if let Some(id) = target_id {
        target.insert("id".into(), id.into());
    }
    if let Some(name) = target_name {
        target.insert("name".into(), name.into());
    }
    let mut event = Map::new();
    event.insert("actor".into(), Value::Object(actor));
    event.insert("action".into(), action.into());
    event.insert("target".into(), Value::Object(target));
    if let Some(p) = take_str(&mut info, "project") {
        event.insert("project".into(), p.into());
    }
    event.insert("outcome".into(), outcome.unwrap_or(Outcome::Success).as_str().into());
    if let Some(r) = take_str(&mut info, "reason") {
        event.insert("reason".into(), r.into());
    }
    // A line Trail wrote without a source came from an event without one.
    let source = take_str(&mut info, "source").or_else(|| (!written_by_trail).then(|| SOURCE.to_string()));
    if let Some(source) = source {
        event.insert("source".into(), source.into());
    }
    if !info.is_empty() {
        event.insert("info".into(), Value::Object(info));
    }
    Ok(Parsed { event: Value::Object(event), absolute_time: None, event_id, seq, org })
}

/// Removes and returns `info[key]` when it is a string.
fn take_str(info: &mut Map<String, Value>, key: &str) -> Option<String> {
    match info.get(key) {
        Some(Value::String(_)) => match info.remove(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

/// The runtime names its artifacts in `info` (`proxyName`, `cAppfileName`, …); an artifact's name is
/// its identity in the runtime, so it becomes both `target.id` and `target.name`. Users are named by
/// `userId`, which becomes `target.id`. The key is taken out of `info`.
fn infer_target(target_type: &str, info: &mut Map<String, Value>) -> (Option<String>, Option<String>) {
    let camel = camel_case(target_type);
    let fits = |v: &String| !v.is_empty() && v.chars().count() <= 256;
    if let Some(id) = take_str(info, &format!("{camel}Id")) {
        if fits(&id) {
            return (Some(id), None);
        }
        info.insert(format!("{camel}Id"), id.into());
    }
    // Where the runtime's key is not the type's own name.
    let special: &[&str] = match target_type {
        "proxy_service" => &["proxyName"],
        "carbon_application" => &["cAppfileName", "cAppFileName"],
        "log_level" => &["loggerName"],
        "sequence_template" => &["sequenceName", "templateName"],
        _ => &[],
    };
    let generic = format!("{camel}Name");
    for key in special.iter().copied().chain([generic.as_str()]) {
        if let Some(name) = take_str(info, key) {
            if fits(&name) {
                return (Some(name.clone()), Some(name));
            }
            info.insert(key.to_string(), name.into());
        }
    }
    (None, None)
}

/// `message_processor` → `messageProcessor`.
fn camel_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = !out.is_empty();
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A runtime word as a name the validator accepts: kept when it is one already (`[a-z0-9_]+`), else
/// lowercased with each run of other characters as one `_` and none at either end
/// (`Proxy Service` → `proxy_service`, `logged in` → `logged_in`).
fn name_of(word: &str) -> String {
    if !word.is_empty() && word.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return word.to_string();
    }
    let mut out = String::with_capacity(word.len());
    for c in word.trim().chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    out.truncate(out.trim_end_matches('_').len());
    out
}

/// The older Carbon lines: `admin logged in at [2017-06-07 22:26:22,501+0530]`, `… logged out at […]`,
/// and `Failed Administrator login attempt 'admin[-1234]' at […]`. A user written as
/// `'admin@carbon.super [-1234]'` is `admin@carbon.super` of tenant `-1234` (`info.tenantId`).
/// `Ok(None)` when the message is none of these.
fn sign_in_event(message: &str) -> Result<Option<Parsed>, LineError> {
    // The phrase after the user, or at the start when the user is missing (an error below).
    let phrase = |p: &'static str| match message.strip_prefix(p) {
        Some(rest) => Some(("", rest)),
        None => message.split_once(&format!(" {p}")),
    };
    let (who, rest, action, outcome) = if let Some((who, rest)) = phrase("logged in") {
        (who, rest, "user.logged_in", Outcome::Success)
    } else if let Some((who, rest)) = phrase("logged out") {
        (who, rest, "user.logged_out", Outcome::Success)
    } else if message.starts_with("Failed ")
        && let Some((_, rest)) = message.split_once(" login attempt ")
    {
        let who = rest.rsplit_once(" at [").map_or(rest, |(who, _)| who);
        (who, &rest[who.len()..], "user.sign_in_failed", Outcome::Failure)
    } else {
        return Ok(None);
    };

    let absolute_time = match rest.trim() {
        "" => None,
        at => {
            let stamp = at
                .strip_prefix("at [")
                .and_then(|s| s.strip_suffix(']'))
                .ok_or_else(|| LineError::new("unexpected text after the sign-in"))?;
            parse_timestamp(stamp)?.1
        }
    };
    let who = who.trim().trim_matches('\'').trim();
    let (user, tenant) = match who.rsplit_once('[') {
        Some((user, tenant)) if tenant.ends_with(']') && !user.trim().is_empty() => {
            (user.trim(), Some(&tenant[..tenant.len() - 1]))
        }
        _ => (who, None),
    };
    if user.is_empty() {
        return Err(LineError::new("the sign-in names no user"));
    }
    let mut event = json!({
        "actor": {"id": user, "type": "user"},
        "action": action,
        "target": {"type": "user", "id": user},
        "outcome": outcome.as_str(),
        "source": SOURCE,
    });
    if outcome == Outcome::Failure {
        event["reason"] = message.split(" '").next().unwrap_or(message).trim().to_lowercase().into();
    }
    if let Some(tenant) = tenant {
        event["info"] = json!({ "tenantId": tenant });
    }
    Ok(Some(Parsed { event, absolute_time, event_id: None, seq: None, org: None }))
}

/// A forgiving reader for the JSON-like records of the runtime's documentation: `"`, `“` and `”`,
/// each optionally preceded by backslashes, all delimit strings; a string whose first character is
/// `{` is read as the object it encodes; keys may be bare; a missing closing `}` at the end of the line
/// is supplied. Only used when strict JSON fails.
mod lenient {
    use serde_json::{Map, Value};

    const QUOTES: [char; 3] = ['"', '\u{201C}', '\u{201D}'];
    const MAX_DEPTH: usize = 32;
    /// How many strings may be tried as encoded objects; each failed try re-reads its text as a
    /// string, so without a bound a hostile line could cost exponential time.
    const MAX_OBJECT_TRIES: u32 = 64;

    pub(super) fn parse_object(text: &str) -> Result<Map<String, Value>, String> {
        let mut p = Parser { s: text.chars().collect(), i: 0, tries_left: MAX_OBJECT_TRIES };
        p.ws();
        if p.peek() != Some('{') {
            return Err("it is not an object".into());
        }
        let m = p.object(0, false)?;
        p.ws();
        if p.i < p.s.len() {
            return Err(format!("unexpected text after the object at character {}", p.i + 1));
        }
        Ok(m)
    }

    struct Parser {
        s: Vec<char>,
        i: usize,
        tries_left: u32,
    }

    impl Parser {
        fn peek(&self) -> Option<char> {
            self.s.get(self.i).copied()
        }

        fn ws(&mut self) {
            while self.peek().is_some_and(char::is_whitespace) {
                self.i += 1;
            }
        }

        /// The length of the quote at `at`: backslashes, then a quote character.
        fn quote_len(&self, at: usize) -> Option<usize> {
            let slashes = self.s[at.min(self.s.len())..].iter().take_while(|&&c| c == '\\').count();
            self.s.get(at + slashes).filter(|c| QUOTES.contains(c)).map(|_| slashes + 1)
        }

        /// At `{`. `quoted`: inside an object that was written as a string.
        fn object(&mut self, depth: usize, quoted: bool) -> Result<Map<String, Value>, String> {
            if depth > MAX_DEPTH {
                return Err("it is nested too deeply".into());
            }
            self.i += 1;
            let mut m = Map::new();
            loop {
                self.ws();
                match self.peek() {
                    None => return Ok(m),
                    Some('}') => {
                        self.i += 1;
                        return Ok(m);
                    }
                    Some(',') => {
                        self.i += 1;
                        continue;
                    }
                    _ => {}
                }
                let key = self.key()?;
                self.ws();
                if self.peek() != Some(':') {
                    return Err(format!("expected ':' after the key {key:?}"));
                }
                self.i += 1;
                self.ws();
                let value = self.value(depth, quoted)?;
                m.insert(key.clone(), value);
                self.ws();
                match self.peek() {
                    None => return Ok(m),
                    Some(',') => self.i += 1,
                    Some('}') => {
                        self.i += 1;
                        return Ok(m);
                    }
                    // The string holding this object closes before its `}`.
                    _ if quoted && self.quote_len(self.i).is_some() => return Ok(m),
                    Some(c) => {
                        return Err(format!("expected ',' or '}}' after the value of {key:?}, found {c:?}"));
                    }
                }
            }
        }

        fn key(&mut self) -> Result<String, String> {
            if let Some(q) = self.quote_len(self.i) {
                self.i += q;
                return Ok(self.string(false));
            }
            let start = self.i;
            while self.peek().is_some_and(|c| c.is_alphanumeric() || "_-.$@".contains(c)) {
                self.i += 1;
            }
            if start == self.i {
                return Err(match self.peek() {
                    Some(c) => format!("expected a key at character {}, found {c:?}", self.i + 1),
                    None => "expected a key".into(),
                });
            }
            Ok(self.s[start..self.i].iter().collect())
        }

        fn value(&mut self, depth: usize, quoted: bool) -> Result<Value, String> {
            if let Some(q) = self.quote_len(self.i) {
                let after_quote = self.i + q;
                self.i = after_quote;
                self.ws();
                if self.peek() == Some('{')
                    && self.tries_left > 0
                    && let Ok(m) = {
                        self.tries_left -= 1;
                        self.object(depth + 1, true)
                    }
                {
                    self.ws();
                    if let Some(q) = self.quote_len(self.i) {
                        self.i += q;
                    }
                    return Ok(Value::Object(m));
                }
                self.i = after_quote;
                return Ok(Value::String(self.string(quoted)));
            }
            match self.peek() {
                Some('{') => self.object(depth + 1, quoted).map(Value::Object),
                Some('[') => self.array(depth + 1, quoted),
                _ => self.bare(),
            }
        }

        fn array(&mut self, depth: usize, quoted: bool) -> Result<Value, String> {
            if depth > MAX_DEPTH {
                return Err("it is nested too deeply".into());
            }
            self.i += 1;
            let mut items = Vec::new();
            loop {
                self.ws();
                match self.peek() {
                    None => return Ok(Value::Array(items)),
                    Some(']') => {
                        self.i += 1;
                        return Ok(Value::Array(items));
                    }
                    Some(',') => self.i += 1,
                    _ => items.push(self.value(depth, quoted)?),
                }
            }
        }

        /// A value without quotes: a JSON number, `true`, `false` or `null`, or else a string.
        fn bare(&mut self) -> Result<Value, String> {
            let start = self.i;
            while self.peek().is_some_and(|c| !matches!(c, ',' | '}' | ']'))
                && self.quote_len(self.i).is_none()
            {
                self.i += 1;
            }
            let token: String = self.s[start..self.i].iter().collect();
            let token = token.trim();
            if token.is_empty() {
                return Err(format!("expected a value at character {}", start + 1));
            }
            match serde_json::from_str::<Value>(token) {
                Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Null)) => Ok(v),
                _ => Ok(Value::String(token.to_string())),
            }
        }

        /// After the opening quote: up to the next quote, which is consumed. In a string-encoded
        /// object, a `}` right before a quote ends the value: its own closing quote was forgotten
        /// (`“loggingLevel\”: “WARN}”`).
        fn string(&mut self, quoted: bool) -> String {
            let mut out = String::new();
            while let Some(c) = self.peek() {
                if let Some(q) = self.quote_len(self.i) {
                    self.i += q;
                    return out;
                }
                if quoted && c == '}' && self.quote_len(self.i + 1).is_some() {
                    return out;
                }
                if c == '\\' {
                    let decoded = match self.s.get(self.i + 1) {
                        Some('n') => Some('\n'),
                        Some('t') => Some('\t'),
                        Some('r') => Some('\r'),
                        Some('b') => Some('\u{8}'),
                        Some('f') => Some('\u{c}'),
                        Some('/') => Some('/'),
                        Some('\\') => Some('\\'),
                        Some('u') => self.s.get(self.i + 2..self.i + 6).and_then(|h| {
                            u32::from_str_radix(&h.iter().collect::<String>(), 16)
                                .ok()
                                .and_then(char::from_u32)
                        }),
                        _ => None,
                    };
                    match decoded {
                        Some(d) => {
                            out.push(d);
                            self.i += if self.s.get(self.i + 1) == Some(&'u') { 6 } else { 2 };
                        }
                        None => {
                            out.push('\\');
                            self.i += 1;
                        }
                    }
                    continue;
                }
                out.push(c);
                self.i += 1;
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Actor, Target};
    use crate::time::{MICROS_PER_SECOND, parse_rfc3339};
    use proptest::prelude::*;
    use time::macros::datetime;

    /// Sign-ins written in the runtime's older shape read back as the same action, user and instant;
    /// the documentation's own sample is what the writer produces for its event.
    #[test]
    fn sign_in_lines_in_the_runtimes_shape_round_trip() {
        let at = parse_rfc3339("2017-06-07T16:56:22.501Z").unwrap();
        let ev = |action: &str, outcome: Outcome, user: &str| StoredEvent {
            org: "acme".into(),
            seq: 4,
            id: "e".into(),
            time: at,
            received_at: at,
            actor: Actor {
                id: user.into(),
                kind: ActorType::User,
                name: None,
                ip: Some("10.0.0.1".into()),
                user_agent: None,
            },
            action: action.into(),
            target: Target { kind: "user".into(), id: Some(user.into()), name: None },
            project: None,
            outcome,
            reason: None,
            source: Some("trail".into()),
            info: None,
        };
        let line = format_sign_in_line(&ev("user.logged_in", Outcome::Success, "admin"), 19_800).unwrap();
        assert_eq!(
            line,
            "[2017-06-07 22:26:22,501]  INFO -  admin logged in at [2017-06-07 22:26:22,501+0530]\n"
        );
        for (action, outcome, read) in [
            ("user.signed_in", Outcome::Success, "user.logged_in"),
            ("user.signed_out", Outcome::Success, "user.logged_out"),
            ("user.sign_in_failed", Outcome::Failure, "user.sign_in_failed"),
            ("user.signed_in", Outcome::Failure, "user.sign_in_failed"),
        ] {
            let line = format_sign_in_line(&ev(action, outcome, "bob@acme.io"), -18_000).unwrap();
            let parsed = parse_line(line.trim_end()).unwrap().unwrap();
            assert_eq!(parsed.event["action"], read, "{line}");
            assert_eq!(parsed.event["actor"]["id"], "bob@acme.io", "{line}");
            assert_eq!(parsed.absolute_time, Some(at), "{line}");
        }
        assert_eq!(format_sign_in_line(&ev("project.created", Outcome::Success, "a"), 0), None);
        assert_eq!(
            format_sign_in_line(&ev("user.signed_in", Outcome::Success, "eve] at [x"), 0),
            None,
            "kept as JSON"
        );
    }

    /// The sample lines of the runtime's documentation (shared/seeds/003, "Audit log actions"), verbatim.
    const SIGN_IN: &str =
        "[2017-06-07 22:26:22,506]  INFO -  admin logged in at [2017-06-07 22:26:22,501+0530]";
    const SIGN_OUT: &str =
        "[2017-06-07 22:26:22,506]  INFO -  admin logged out at [2017-06-07 22:26:22,501+0530]";
    const ADD_USER: &str = "[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: “created”,  “type”: “user”, “info” : “{\\“userId\\” : \\“user4\\”,\\“isAdmin\\”: \\“true\\”}”}";
    const REMOVE_USER: &str = "[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: “deleted”,  “type”: “user”, “info” : “{\\“userId\\”: \\“user4\\”}”}";
    const PROXY: &str = "[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: “enabled”,  “type”: “proxy_service”, “info” : “{\\“proxyName\\”: \\“proxy1\\”}”}";
    const PROXY_TRACE: &str = "[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: “enabled”,  “type”: “proxy_service_trace”, “info” : “{\\“proxyName\\”: \\“proxy1\\”}”}";
    const ADD_CAPP: &str = "[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: “created”,  “type”: \"carbon_application\", “info” : “{\\“cAppfileName\\”: \\“abc.car\\”}”}";
    const REMOVE_CAPP: &str = "[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: \"deleted\",  “type”: \"carbon_application\", “info” : “{\\“cAppfileName\\”: \\“abc.car\\”}”}";
    const ENDPOINT: &str = "[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: \"enabled\",  “type”: \"endpoint\", “info” : “{\\“endpointName\\”: \\“httpEP\\”}”}";
    const ENDPOINT_TRACE: &str = "[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: \"enabled\",  “type”: \"endpoint_trace\", “info” : “{\\“endpointName\\”: \\“httpEP\\”}”}";
    const API_TRACE: &str = "[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: \"enabled\",  “type”: \"api_trace\", “info” : “{\\“apiName\\”: \\“helloAPI\\”}”}";
    const SEQUENCE_TRACE: &str = "[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: \"enabled\",  “type”: \"sequence_trace\", “info” : “{\\“sequenceName\\”: \\“helloSequence\\”}”}";
    const PROCESSOR: &str = "[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: \"enabled\",  “type”: \"message_processor\", “info” : “{\\“messageProcessorName\\”: \\“processor1\\”}”}";
    const INBOUND_TRACE: &str = "[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: \"enabled\",  “type”: \"inbound_endpoint_trace\", “info” : “{\\“inboundEndpointName\\”: \\“httpIEP\\”}”}";
    const TEMPLATE_TRACE: &str = "[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: \"enabled\",  “type”: \"sequence_template_trace\", “info” : “{\\“sequenceName\\”: \\“sequenceTemplate\\”,\\“sequenceType\\”: “sequence\\”}”}";
    const LOG_LEVEL: &str = "[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: \"updated\",  “type”: \"log_level\", “info” : “{\\“loggerName\\”: \\“org-apache-hive\\”,\\“loggingLevel\\”: “WARN}”}";
    const ADD_LOGGER: &str = "[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: \"created\",  “type”: \"logger\", “info” : {“loggerName”: “synapse-api”,\\“loggingLevel\\”: \\“DEBUG\\”,\\“loggerClass\\”: \\“org.apache.rest.API\\”}}";

    fn parse(line: &str) -> ParsedLine {
        match parse_line(line) {
            Ok(Some(p)) => p,
            other => panic!("{line}\n→ {other:?}"),
        }
    }

    /// The event passes the validator once the caller gives it a time.
    fn assert_valid(p: &ParsedLine) {
        let now = 1_800_000_000 * MICROS_PER_SECOND;
        let mut e = p.event.clone();
        e["time"] = json!(crate::time::format_rfc3339(now - MICROS_PER_SECOND));
        e["id"] = json!(derive_id("x", 0));
        parse_event(&e, TimeBounds { now, oldest: 0 }).unwrap();
    }

    /// A runtime record from the documentation: the expected action, target and remaining info.
    fn assert_record(line: &str, action: &str, target: Value, info: Option<Value>) {
        let p = parse(line);
        assert_eq!(p.local_time, datetime!(2021-09-07 12:42:59.249), "{line}");
        assert_eq!(p.absolute_time, None);
        assert_eq!(p.event_id, None);
        let mut want = json!({
            "actor": {"id": "admin", "type": "user"},
            "action": action,
            "target": target,
            "outcome": "success",
            "source": "audit.log",
        });
        if let Some(info) = info {
            want["info"] = info;
        }
        assert_eq!(p.event, want, "{line}");
        assert_valid(&p);
    }

    #[test]
    fn documented_records() {
        let named = |t: &str, n: &str| json!({"type": t, "id": n, "name": n});
        assert_record(
            ADD_USER,
            "user.created",
            json!({"type": "user", "id": "user4"}),
            Some(json!({"isAdmin": "true"})),
        );
        assert_record(REMOVE_USER, "user.deleted", json!({"type": "user", "id": "user4"}), None);
        assert_record(PROXY, "proxy_service.enabled", named("proxy_service", "proxy1"), None);
        assert_record(PROXY_TRACE, "proxy_service.tracing_enabled", named("proxy_service", "proxy1"), None);
        assert_record(ADD_CAPP, "carbon_application.created", named("carbon_application", "abc.car"), None);
        assert_record(
            REMOVE_CAPP,
            "carbon_application.deleted",
            named("carbon_application", "abc.car"),
            None,
        );
        assert_record(ENDPOINT, "endpoint.enabled", named("endpoint", "httpEP"), None);
        assert_record(ENDPOINT_TRACE, "endpoint.tracing_enabled", named("endpoint", "httpEP"), None);
        assert_record(API_TRACE, "api.tracing_enabled", named("api", "helloAPI"), None);
        assert_record(SEQUENCE_TRACE, "sequence.tracing_enabled", named("sequence", "helloSequence"), None);
        assert_record(PROCESSOR, "message_processor.enabled", named("message_processor", "processor1"), None);
        assert_record(
            INBOUND_TRACE,
            "inbound_endpoint.tracing_enabled",
            named("inbound_endpoint", "httpIEP"),
            None,
        );
        assert_record(
            TEMPLATE_TRACE,
            "sequence_template.tracing_enabled",
            named("sequence_template", "sequenceTemplate"),
            Some(json!({"sequenceType": "sequence"})),
        );
        assert_record(
            LOG_LEVEL,
            "log_level.updated",
            named("log_level", "org-apache-hive"),
            Some(json!({"loggingLevel": "WARN"})),
        );
        assert_record(
            ADD_LOGGER,
            "logger.created",
            named("logger", "synapse-api"),
            Some(json!({"loggingLevel": "DEBUG", "loggerClass": "org.apache.rest.API"})),
        );
    }

    #[test]
    fn documented_actions_are_catalogued() {
        for line in [
            API_TRACE,
            ADD_USER,
            REMOVE_USER,
            PROXY,
            PROXY_TRACE,
            ADD_CAPP,
            REMOVE_CAPP,
            ENDPOINT,
            ENDPOINT_TRACE,
            SEQUENCE_TRACE,
            PROCESSOR,
            INBOUND_TRACE,
            TEMPLATE_TRACE,
            LOG_LEVEL,
            ADD_LOGGER,
            SIGN_IN,
            SIGN_OUT,
        ] {
            let action = parse(line).event["action"].as_str().unwrap().to_string();
            assert!(crate::catalog::lookup(&action).is_some(), "{action}");
        }
    }

    #[test]
    fn documented_sign_in_and_out() {
        // 22:26:22.501 at +05:30 is 16:56:22.501 UTC.
        let at = parse_rfc3339("2017-06-07T16:56:22.501Z");
        for (line, action) in [(SIGN_IN, "user.logged_in"), (SIGN_OUT, "user.logged_out")] {
            let p = parse(line);
            assert_eq!(p.local_time, datetime!(2017-06-07 22:26:22.506));
            assert_eq!(p.absolute_time, at);
            assert_eq!(
                p.event,
                json!({"actor": {"id": "admin", "type": "user"}, "action": action,
                       "target": {"type": "user", "id": "admin"}, "outcome": "success", "source": "audit.log"})
            );
            assert_valid(&p);
        }
    }

    #[test]
    fn carbon_sign_in_variants() {
        let p = parse(
            "[2015-04-01 14:51:41,558]  INFO -  'admin@carbon.super [-1234]' logged in at [2015-04-01 14:51:41,558+0530]",
        );
        assert_eq!(p.event["actor"]["id"], "admin@carbon.super");
        assert_eq!(p.event["info"], json!({"tenantId": "-1234"}));
        let p = parse(
            "[2015-04-01 14:51:57,582]  WARN -  Failed Administrator login attempt 'admin[-1234]' at [2015-04-01 14:51:57,582+0530]",
        );
        assert_eq!(p.event["action"], "user.sign_in_failed");
        assert_eq!(p.event["outcome"], "failure");
        assert_eq!(p.event["reason"], "failed administrator login attempt");
        assert_eq!(p.event["actor"]["id"], "admin");
        assert_eq!(p.absolute_time, parse_rfc3339("2015-04-01T09:21:57.582Z"));
        assert_valid(&p);
        // No time of its own: the header's local time is all there is.
        let p = parse("[2015-04-01 14:51:41,558]  INFO -  bob logged out");
        assert_eq!(p.absolute_time, None);
        assert_eq!(p.event["action"], "user.logged_out");
    }

    #[test]
    fn the_runtimes_strict_json_with_info_as_a_string() {
        let p = parse(
            r#"[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - {"performedBy":"admin","action":"created","type":"user","info":"{\"userId\":\"user4\",\"isAdmin\":false}"}"#,
        );
        assert_eq!(p.event["target"], json!({"type": "user", "id": "user4"}));
        assert_eq!(p.event["info"], json!({"isAdmin": false}));
        let p = parse(
            r#"[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - {"performedBy":"admin","action":"Logged In","type":"Dashboard","info":"plain words"}"#,
        );
        assert_eq!(p.event["action"], "dashboard.logged_in");
        assert_eq!(p.event["info"], json!({"details": "plain words"}));
        assert_valid(&p);
    }

    #[test]
    fn blank_and_stack_trace_lines_are_not_records() {
        for line in [
            "",
            "   \r\n",
            "\tat org.wso2.carbon.Foo.bar(Foo.java:42)",
            "    at java.base/java.lang.Thread.run(Thread.java:829)",
            "\t... 12 more",
            "Caused by: java.io.IOException: disk full",
        ] {
            assert_eq!(parse_line(line), Ok(None), "{line:?}");
        }
    }

    #[test]
    fn garbage_is_an_error_with_a_reason() {
        for (line, reason) in [
            ("hello world", "does not start with [yyyy-MM-dd"),
            ("[2021-13-07 12:42:59,249]  INFO {AUDIT_LOG} - {}", "invalid timestamp"),
            ("[2021-09-07 12:42:59,249]", "no log level"),
            ("[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} {\"a\":1}", "no ' - '"),
            ("[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - started the server", "neither a JSON record"),
            ("[2021-09-07 12:42:59,249]  INFO {org.apache.synapse} - {\"a\":1}", "not {AUDIT_LOG}"),
            ("[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - {", "no performedBy"),
            ("[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - {\"performedBy\":\"a\"}", "no action"),
            (
                "[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - {\"performedBy\":\"a\",\"action\":\"x\"}",
                "no type",
            ),
            ("[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - {a b c}", "expected ':'"),
            ("[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - {\"a\":1} trailing", "unexpected text"),
            (
                "[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - {\"performedBy\":\"a\",\"action\":\"!!\",\"type\":\"user\"}",
                "must contain letters",
            ),
            ("[2021-09-07 12:42:59,249]  INFO -  logged in at [2021-09-07 12:42:59,249]", "no user"),
            ("[2021-09-07 12:42:59,249]  INFO -  bob logged in at noon", "unexpected text after the sign-in"),
            ("java.lang.IllegalStateException: boom", "does not start with"),
        ] {
            let err = parse_line(line).unwrap_err();
            assert!(err.message.contains(reason), "{line}: {err}");
            assert!(
                err.message.starts_with(|c: char| c.is_lowercase()) && !err.message.ends_with('.'),
                "{err}"
            );
        }
        let deep = format!("[2021-09-07 12:42:59,249]  INFO {{AUDIT_LOG}} - {}", "{\"a\":".repeat(100));
        assert!(parse_line(&deep).is_err());
        let long = format!(
            "[2021-09-07 12:42:59,249]  INFO {{AUDIT_LOG}} - {{\"performedBy\":\"{}\",\"action\":\"a\",\"type\":\"b\"}}",
            "x".repeat(300)
        );
        assert!(parse_line(&long).unwrap_err().message.contains("actor.id"));
    }

    #[test]
    fn timestamps() {
        let (t, abs) = parse_timestamp("2021-09-07 12:42:59,249").unwrap();
        assert_eq!((t, abs), (datetime!(2021-09-07 12:42:59.249), None));
        let (_, abs) = parse_timestamp("2021-09-07T12:42:59.249-02:30").unwrap();
        assert_eq!(abs, parse_rfc3339("2021-09-07T15:12:59.249Z"));
        assert_eq!(parse_timestamp("2021-09-07 12:42:59Z").unwrap().1, parse_rfc3339("2021-09-07T12:42:59Z"));
        for bad in [
            "2021-09-07",
            "2021-02-30 00:00:00,000",
            "2021-09-07 24:00:00,000",
            "2021-09-07 12:42:59,",
            "2021-09-07 12:42:59,249+5",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn derived_ids_are_stable_valid_and_distinct() {
        let a = derive_id(ADD_USER, 0);
        assert_eq!(a, derive_id(&format!("{ADD_USER}\r\n"), 0));
        assert_ne!(a, derive_id(ADD_USER, 1));
        assert_ne!(a, derive_id(REMOVE_USER, 0));
        assert_eq!(a.len(), 36);
        assert!(a.starts_with("imp-") && a[4..].bytes().all(|b| b.is_ascii_hexdigit()));
    }

    fn stored(action: &str, target_type: &str) -> StoredEvent {
        StoredEvent {
            org: "acme".into(),
            seq: 7,
            id: "evt-1".into(),
            time: parse_rfc3339("2021-09-07T10:42:59.249999Z").unwrap(),
            received_at: 0,
            actor: Actor {
                id: "admin".into(),
                kind: ActorType::User,
                name: None,
                ip: None,
                user_agent: None,
            },
            action: action.into(),
            target: Target { kind: target_type.into(), id: Some("user4".into()), name: None },
            project: None,
            outcome: Outcome::Success,
            reason: None,
            source: Some("management_api".into()),
            info: Some(Map::from_iter([("isAdmin".to_string(), json!(true))])),
        }
    }

    #[test]
    fn writes_the_runtime_line_exactly() {
        assert_eq!(
            format_line(&stored("user.created", "user"), 2 * 3600),
            "[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - {\"performedBy\":\"admin\",\"action\":\"created\",\
             \"type\":\"user\",\"info\":{\"eventId\":\"evt-1\",\"isAdmin\":true,\"org\":\"acme\",\"outcome\":\"success\",\
             \"seq\":7,\"source\":\"management_api\",\"targetId\":\"user4\"}}\n"
        );
        let line = format_line(&stored("proxy_service.tracing_disabled", "proxy_service"), 0);
        assert!(line.contains(r#""action":"disabled","type":"proxy_service_trace""#), "{line}");
        assert!(!line.contains("eventAction"), "{line}");
        let line = format_line(&stored("component.build_config_updated", "component"), 0);
        assert!(line.contains(r#""action":"updated","type":"component""#), "{line}");
        assert!(line.contains(r#""eventAction":"component.build_config_updated""#), "{line}");
        // Before the epoch and across midnight at a negative offset.
        let mut e = stored("user.created", "user");
        e.time = parse_rfc3339("1969-12-31T23:59:59.999Z").unwrap();
        assert!(format_line(&e, -3600).starts_with("[1969-12-31 22:59:59,999]"));
    }

    #[test]
    fn json_lines_are_the_api_form() {
        let e = stored("user.created", "user");
        let line = format_json_line(&e, &[1; 32]);
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v, e.to_json(&[1; 32]));
    }

    /// `^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3}\]  INFO \{AUDIT_LOG\} - \{.*\}$`, then `\n`:
    /// the shape log4j2's `[%d] %5p {%c} - %m%n` gives, which log shippers' patterns expect.
    fn matches_layout(line: &str) -> bool {
        const SHAPE: &[u8] = b"[dddd-dd-dd dd:dd:dd,ddd]  INFO {AUDIT_LOG} - {";
        let Some(body) = line.strip_suffix('\n') else { return false };
        let b = body.as_bytes();
        !body.contains(['\n', '\r'])
            && b.len() > SHAPE.len()
            && b.ends_with(b"}")
            && SHAPE.iter().zip(b).all(|(&s, &c)| if s == b'd' { c.is_ascii_digit() } else { s == c })
    }

    #[test]
    fn the_layout_matcher_rejects_near_misses() {
        let good = "[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - {}\n";
        assert!(matches_layout(good));
        for bad in [
            "[2021-09-07 12:42:59,249] INFO {AUDIT_LOG} - {}\n",
            "[2021-09-07 12:42:59.249]  INFO {AUDIT_LOG} - {}\n",
            "[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - {}",
            "[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - {\n}\n",
            "[2021-9-07 12:42:59,249]  INFO {AUDIT_LOG} - {}\n",
        ] {
            assert!(!matches_layout(bad), "{bad:?}");
        }
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9_]{0,12}"
    }

    fn info_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<String>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            // Quarters print exactly, so they read back to the same f64 without `float_roundtrip`.
            any::<i32>().prop_map(|n| Value::from(f64::from(n) / 4.0)),
            Just(Value::Null),
        ];
        leaf.prop_recursive(2, 8, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                prop::collection::btree_map("[a-z]{1,4}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn event() -> impl Strategy<Value = StoredEvent> {
        let catalogued = prop::sample::select(crate::catalog::CATALOG).prop_map(|a| a.name.to_string());
        let action = prop_oneof![catalogued, (name(), name()).prop_map(|(a, b)| format!("{a}.{b}"))];
        let target_type = prop_oneof![name(), name().prop_map(|n| format!("{n}_trace")), Just("user".into())];
        let text = || proptest::option::of("\\PC{1,20}|[\"“”\\\\{}\n\t ]{1,8}");
        let kind = prop::sample::select(vec![ActorType::User, ActorType::Service, ActorType::System]);
        let info = proptest::option::of(
            prop::collection::btree_map("[a-zA-Z]{1,12}", info_value(), 1..5)
                .prop_filter("reserved keys are Trail's", |m| {
                    !m.keys().any(|k| INFO_KEYS.contains(&k.as_str()))
                })
                .prop_map(|m| m.into_iter().collect::<Map<String, Value>>()),
        );
        (
            ("\\PC{1,20}", kind, text(), proptest::option::of(Just("2001:db8::1".to_string())), text()),
            (action, target_type, text(), text()),
            (text(), any::<bool>(), text(), text(), info),
            ("[A-Za-z0-9._:-]{1,40}", any::<u64>(), 0i64..4_102_444_800_000_000),
        )
            .prop_map(
                |(
                    (actor_id, kind, actor_name, ip, user_agent),
                    (action, target_type, target_id, target_name),
                    (project, failed, reason, source, info),
                    (id, seq, time),
                )| StoredEvent {
                    org: "acme".into(),
                    seq,
                    id,
                    time,
                    received_at: time,
                    actor: Actor { id: actor_id, kind, name: actor_name, ip, user_agent },
                    action,
                    target: Target { kind: target_type, id: target_id, name: target_name },
                    project,
                    outcome: if failed { Outcome::Failure } else { Outcome::Success },
                    reason,
                    source,
                    info,
                },
            )
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(e in event(), offset in -14 * 3600i32..=14 * 3600) {
            let line = format_line(&e, offset);
            prop_assert!(matches_layout(&line), "{}", line);
            let p = parse_line(&line).unwrap().unwrap();
            prop_assert_eq!(p.local_time, local_time_of(e.time, offset));
            prop_assert_eq!(p.absolute_time, None);
            prop_assert_eq!(p.event_id.as_deref(), Some(e.id.as_str()));
            prop_assert_eq!(p.seq, Some(e.seq));

            // The parsed event, given back its id and time, is the event that was written.
            let mut v = p.event.clone();
            v["id"] = json!(e.id);
            v["time"] = json!(crate::time::format_rfc3339(e.time));
            let back = parse_event(&v, TimeBounds { now: e.time, oldest: 0 }).unwrap();
            let again = StoredEvent::accept(back, &e.org, e.seq, e.id.clone(), e.received_at);
            prop_assert_eq!(again, e);
        }

        #[test]
        fn parse_line_never_panics(s in "\\PC{0,80}", prefix in prop::sample::select(vec![
            "", "[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - {", "[2021-09-07 12:42:59,249]  INFO -  ",
        ])) {
            let _ = parse_line(&format!("{prefix}{s}"));
        }
    }
}
