//! Hostile input for every reader and writer of the model: events (`parse_event`), query parameters
//! and cursors (`parse_query`, `parse_filter`, `Cursor::decode`), canonical bytes (`decode`, `peek`,
//! `write_json`), `audit.log` lines (`parse_line`) and CSV rows (`csv_row`).
//!
//! The properties: nothing panics, every rejection is a value that names its reason, and every round
//! trip that exists holds — event → canonical bytes → export JSON → bytes (what `trail verify
//! --export` recomputes), cursor → text → cursor, cell → RFC 4180 → cell.
//!
//! Cases per property come from `TRAIL_FUZZ_CASES` (default [`DEFAULT_CASES`]); run with a larger
//! number by hand to search longer. Failing inputs proptest finds are saved in
//! `tests/proptest-regressions/fuzz.txt` and replayed first; each bug found has its own `#[test]` at
//! the end of this file.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};
use serde_json::{Map, Value, json};
use trail_model::auditlog;
use trail_model::canonical::{self, decode, encode, write_json};
use trail_model::event::{MAX_FUTURE_SKEW, TimeBounds, parse_event};
use trail_model::export::{CSV_COLUMNS, csv_header, csv_row};
use trail_model::query::{
    Cursor, Filter, MAX_LIMIT, MAX_WINDOW_DAYS, QueryContext, parse_filter, parse_query,
};
use trail_model::time::{MICROS_PER_DAY, MICROS_PER_SECOND, Micros, format_rfc3339, parse_rfc3339};
use trail_model::{Actor, ActorType, Outcome, StoredEvent, Target};

/// Cases per property when `TRAIL_FUZZ_CASES` is not set: the whole module stays within seconds.
const DEFAULT_CASES: u32 = 2000;

const NOW: Micros = 1_800_000_000 * MICROS_PER_SECOND;
const OLDEST: Micros = NOW - 365 * MICROS_PER_DAY;
const BOUNDS: TimeBounds = TimeBounds { now: NOW, oldest: OLDEST };
const CTX: QueryContext = QueryContext { now: NOW, oldest: OLDEST };

fn config() -> Config {
    let cases = std::env::var("TRAIL_FUZZ_CASES")
        .map(|v| v.parse().expect("TRAIL_FUZZ_CASES must be a number of cases"))
        .unwrap_or(DEFAULT_CASES);
    Config { cases, ..Config::default() }
}

/// Strings known to sit on a boundary of some rule: names, formulas, paths, quotes, addresses.
const TRICKY: &[&str] = &[
    "",
    " ",
    "\u{0}",
    "\u{feff}",
    "\u{202e}",
    "=1+1",
    "+1",
    "-1",
    "@SUM(A1)",
    "\t=x",
    "\r=x",
    "\r\n",
    "a.b",
    "a..b",
    ".a",
    "a.",
    "a.b.",
    "user",
    "service",
    "system",
    "success",
    "failure",
    "../../etc/passwd",
    "..",
    "%2e%2e%2f",
    "%00",
    "\\",
    "\"",
    "“",
    "”",
    "\\\"",
    "127.0.0.1",
    "::1",
    "::ffff:1.2.3.4",
    "1.2.3.4.5",
    "2026-01-01T00:00:00Z",
    "null",
    "[]",
    "{}",
    "*",
    "a*",
    "a.*",
    "**",
    "component.deployed",
    "AQ",
    "AQAAAAAAAAA",
];

/// Text a hostile client might send: any Unicode (controls included), near-miss names, boundary
/// lengths and the tricky strings above.
fn text() -> BoxedStrategy<String> {
    let lengths = vec![1usize, 16, 63, 64, 65, 127, 128, 129, 255, 256, 257, 512, 513, 1024, 1025];
    prop_oneof![
        4 => any::<String>(),
        2 => "\\PC{0,24}",
        2 => "[a-z0-9_.]{0,12}",
        2 => prop::sample::select(TRICKY).prop_map(str::to_string),
        1 => (prop::sample::select(lengths), prop::sample::select(vec!['a', 'é', '東', '\u{0}']))
            .prop_map(|(n, c)| std::iter::repeat_n(c, n).collect()),
    ]
    .boxed()
}

/// Any JSON value, nested a few levels, with hostile strings and every kind of number.
fn json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // NaN and the infinities become null, as serde_json cannot hold them.
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec((text(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Timestamps around the edges of the accepted window, and text that only looks like one.
fn timestamp() -> BoxedStrategy<String> {
    prop_oneof![
        4 => (OLDEST - MICROS_PER_DAY..NOW + 2 * MAX_FUTURE_SKEW).prop_map(format_rfc3339),
        1 => prop::sample::select(vec![OLDEST - 1, OLDEST, NOW, NOW + MAX_FUTURE_SKEW, NOW + MAX_FUTURE_SKEW + 1])
            .prop_map(format_rfc3339),
        1 => "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})",
        1 => text(),
    ]
    .boxed()
}

fn opt<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    proptest::option::of(s).boxed()
}

/// A valid event in ingest form, every optional field present or not.
fn valid_event() -> BoxedStrategy<Value> {
    let name = "[a-z0-9_]{1,8}";
    let ips = vec!["10.0.0.1", "203.0.113.7", "::1", "2001:db8::1", "::ffff:10.0.0.1"];
    let info = prop::collection::btree_map("\\PC{0,12}", json(), 0..4)
        .prop_map(|m| m.into_iter().collect::<Map<String, Value>>());
    (
        (opt("[A-Za-z0-9._:-]{1,128}"), opt(OLDEST..NOW + MAX_FUTURE_SKEW), "\\PC{1,40}"),
        (
            opt(prop::sample::select(vec!["user", "service", "system"])),
            opt("\\PC{0,40}"),
            opt(prop::sample::select(ips)),
            opt("\\PC{0,40}"),
        ),
        (name, name, name, opt("\\PC{0,40}"), opt("\\PC{0,40}")),
        (opt("\\PC{0,40}"), any::<bool>(), opt("\\PC{0,40}"), opt("\\PC{0,20}"), opt(info)),
    )
        .prop_map(
            |((id, time, actor_id), (kind, actor_name, ip, ua), (res, verb, ttype, tid, tname), rest)| {
                let (project, failed, reason, source, info) = rest;
                let mut actor = json!({"id": actor_id});
                put(&mut actor, "type", kind.map(str::to_string));
                put(&mut actor, "name", actor_name);
                put(&mut actor, "ip", ip.map(str::to_string));
                put(&mut actor, "user_agent", ua);
                let mut target = json!({"type": ttype});
                put(&mut target, "id", tid);
                put(&mut target, "name", tname);
                let mut v = json!({"actor": actor, "action": format!("{res}.{verb}"), "target": target,
                               "outcome": if failed { "failure" } else { "success" }});
                put(&mut v, "id", id);
                put(&mut v, "time", time.map(format_rfc3339));
                put(&mut v, "project", project);
                put(&mut v, "reason", reason);
                put(&mut v, "source", source);
                if let Some(info) = info {
                    v["info"] = Value::Object(info);
                }
                v
            },
        )
        .boxed()
}

fn put(v: &mut Value, key: &str, value: Option<String>) {
    if let Some(s) = value {
        v[key] = Value::String(s);
    }
}

/// Where an edit lands: every field of an event, and two that do not exist.
const PATHS: &[&[&str]] = &[
    &["id"],
    &["time"],
    &["actor"],
    &["actor", "id"],
    &["actor", "type"],
    &["actor", "name"],
    &["actor", "ip"],
    &["actor", "user_agent"],
    &["action"],
    &["target"],
    &["target", "type"],
    &["target", "id"],
    &["target", "name"],
    &["project"],
    &["outcome"],
    &["reason"],
    &["source"],
    &["info"],
    &["colour"],
    &["actor", "shoe"],
];

/// A valid event with up to three fields replaced (by any JSON, a string or a timestamp) or removed.
fn hostile_event() -> BoxedStrategy<Value> {
    let replacement = prop_oneof![
        Just(None),
        json().prop_map(Some),
        text().prop_map(|s| Some(Value::String(s))),
        timestamp().prop_map(|s| Some(Value::String(s))),
    ];
    let edit = (prop::sample::select(PATHS), replacement);
    (valid_event(), prop::collection::vec(edit, 0..4))
        .prop_map(|(mut v, edits)| {
            for (path, value) in edits {
                apply(&mut v, path, value);
            }
            v
        })
        .boxed()
}

fn apply(v: &mut Value, path: &[&str], value: Option<Value>) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = v;
    for p in parents {
        match at.get_mut(*p) {
            Some(next) if next.is_object() => at = next,
            _ => return,
        }
    }
    if let Some(m) = at.as_object_mut() {
        match value {
            Some(x) => m.insert((*last).to_string(), x),
            None => m.remove(*last),
        };
    }
}

const EVENT_CODES: &[&str] =
    &["invalid_field", "unknown_field", "missing_field", "time_in_future", "outside_retention"];
const EVENT_FIELDS: &[&str] = &[
    "",
    "id",
    "time",
    "actor",
    "actor.id",
    "actor.type",
    "actor.name",
    "actor.ip",
    "actor.user_agent",
    "action",
    "target",
    "target.type",
    "target.id",
    "target.name",
    "project",
    "outcome",
    "reason",
    "source",
    "info",
];

/// Validation either accepts the event, and then every encoding of it round-trips, or rejects it
/// with a known code naming a field of the event (or, for an unknown field, that field).
fn check_event(v: &Value, seq: u64) -> Result<(), TestCaseError> {
    match parse_event(v, BOUNDS) {
        Err(e) => {
            prop_assert!(EVENT_CODES.contains(&e.code), "unexpected code {}", e.code);
            prop_assert!(
                EVENT_FIELDS.contains(&e.field.as_str()) || e.code == "unknown_field",
                "the error names no field of an event: {e:?}"
            );
            prop_assert!(!e.message.is_empty());
        }
        Ok(e) => {
            let id = e.id.clone().unwrap_or_else(|| "minted-id".into());
            round_trips(&StoredEvent::accept(e, "acme", seq, id, NOW))?;
        }
    }
    Ok(())
}

/// Canonical bytes decode to the event; the export's JSON line is the API's JSON byte for byte and
/// reads back to the same bytes; the CSV row reads back to the event's fields.
fn round_trips(s: &StoredEvent) -> Result<(), TestCaseError> {
    let bytes = encode(s);
    prop_assert_eq!(canonical::peek(&bytes), Ok((s.org.as_str(), s.seq)));
    prop_assert_eq!(&decode(&bytes).expect("encoded bytes decode"), s);
    let leaf = [7u8; 32];
    let mut line = Vec::new();
    write_json(&bytes, &leaf, &mut line).expect("encoded bytes write as JSON");
    let api = serde_json::to_string(&s.to_json(&leaf)).expect("JSON of an event");
    prop_assert_eq!(std::str::from_utf8(&line).expect("JSON is UTF-8"), api.as_str());
    // What `trail verify --export` does with an NDJSON line: read the event back, re-encode it, and
    // compare leaf hashes. Any difference would be reported as tampering.
    let parsed: Value = serde_json::from_slice(&line).expect("the export line is JSON");
    let back = StoredEvent::from_json(&parsed).expect("the export line reads back");
    prop_assert_eq!(encode(&back), bytes, "re-encoding the export line changed the bytes");
    check_csv(s)
}

/// A strict RFC 4180 reader for one record ending in CRLF; `None` when the text is not one record.
fn read_csv_record(s: &str) -> Option<Vec<String>> {
    let body = s.strip_suffix("\r\n")?;
    let mut cells = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        let mut cell = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        cell.push('"');
                    }
                    '"' => break,
                    c => cell.push(c),
                }
            }
            match chars.next() {
                None => {
                    cells.push(cell);
                    return Some(cells);
                }
                Some(',') => cells.push(cell),
                Some(_) => return None,
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        cells.push(cell);
                        return Some(cells);
                    }
                    Some(',') => break,
                    Some('"' | '\r' | '\n') => return None,
                    Some(c) => cell.push(c),
                }
            }
            cells.push(cell);
        }
    }
}

fn check_csv(s: &StoredEvent) -> Result<(), TestCaseError> {
    let row = csv_row(s);
    let cells =
        read_csv_record(&row).ok_or_else(|| TestCaseError::fail(format!("not one CSV record: {row:?}")))?;
    prop_assert_eq!(cells.len(), CSV_COLUMNS.len());
    prop_assert_eq!(csv_header().trim_end().split(',').count(), CSV_COLUMNS.len());
    let info = s.info.as_ref().map(|m| String::from_utf8(canonical::info_bytes(m)).expect("UTF-8"));
    let o = |v: &Option<String>| v.clone().unwrap_or_default();
    let expected = [
        format_rfc3339(s.time),
        s.org.clone(),
        s.seq.to_string(),
        s.id.clone(),
        s.actor.id.clone(),
        s.actor.kind.as_str().to_string(),
        o(&s.actor.name),
        o(&s.actor.ip),
        s.action.clone(),
        s.target.kind.clone(),
        o(&s.target.id),
        o(&s.target.name),
        o(&s.project),
        s.outcome.as_str().to_string(),
        o(&s.reason),
        o(&s.source),
        info.unwrap_or_default(),
    ];
    for ((cell, want), column) in cells.iter().zip(expected).zip(CSV_COLUMNS) {
        // A cell a spreadsheet would run as a formula is shown as text, behind a quote mark.
        let want = if want.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{want}") } else { want };
        prop_assert_eq!(cell, &want, "column {}", column);
    }
    Ok(())
}

/// Any stored event, with hostile text in every field the store would keep.
fn stored_event() -> BoxedStrategy<StoredEvent> {
    let kind = prop::sample::select(vec![ActorType::User, ActorType::Service, ActorType::System]);
    let info = opt(prop::collection::btree_map(text(), json(), 0..4)
        .prop_map(|m| m.into_iter().collect::<Map<String, Value>>()));
    (
        (text(), any::<u64>(), text(), -62_135_596_800_000_000i64..253_402_300_799_999_999, any::<i64>()),
        (text(), kind, opt(text()), opt(text()), opt(text())),
        (text(), text(), opt(text()), opt(text())),
        (opt(text()), any::<bool>(), opt(text()), opt(text()), info),
    )
        .prop_map(|((org, seq, id, time, received_at), actor, (action, ttype, tid, tname), rest)| {
            let (aid, kind, name, ip, user_agent) = actor;
            let (project, failed, reason, source, info) = rest;
            StoredEvent {
                org,
                seq,
                id,
                time,
                // Any instant the format can print, so the JSON form reads back.
                received_at: received_at.rem_euclid(253_402_300_799_999_999),
                actor: Actor { id: aid, kind, name, ip, user_agent },
                action,
                target: Target { kind: ttype, id: tid, name: tname },
                project,
                outcome: if failed { Outcome::Failure } else { Outcome::Success },
                reason,
                source,
                info,
            }
        })
        .boxed()
}

const QUERY_KEYS: &[&str] = &[
    "from",
    "to",
    "actor",
    "action",
    "target_type",
    "target_id",
    "project",
    "outcome",
    "source",
    "q",
    "limit",
    "cursor",
];
const QUERY_CODES: &[&str] =
    &["invalid_field", "unknown_parameter", "window_too_large", "outside_retention", "invalid_cursor"];

/// Query strings as pairs: mostly known keys, with values that are valid, near misses or garbage.
fn query_pairs() -> BoxedStrategy<Vec<(String, String)>> {
    let key = prop_oneof![8 => prop::sample::select(QUERY_KEYS).prop_map(str::to_string), 1 => text()];
    let value = prop_oneof![
        3 => text(),
        3 => timestamp(),
        1 => prop::sample::select(vec!["0", "1", "50", "1000", "1001", "-1", "18446744073709551616", "1e3", " 5"])
            .prop_map(str::to_string),
        1 => prop::sample::select(vec!["success", "failure", "component.*", "component.deployed", "a*b", "*"])
            .prop_map(str::to_string),
        1 => forged_cursor_bytes().prop_map(|b| base64_url(&b)),
    ];
    prop::collection::vec((key, value), 0..8).boxed()
}

fn base64_url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// 49 bytes, usually with the cursor's version byte: they get past base64 and length checks, so the
/// decoder's own checks are what is tested.
fn forged_cursor_bytes() -> BoxedStrategy<Vec<u8>> {
    (prop_oneof![4 => Just(1u8), 1 => any::<u8>()], prop::collection::vec(any::<u8>(), 48))
        .prop_map(|(v, mut rest)| {
            rest.insert(0, v);
            rest
        })
        .boxed()
}

/// A query is either refused with a known code, or is a window of at most 92 days inside retention
/// whose cursors resume it exactly, whenever asked.
fn check_query(
    pairs: &[(String, String)],
    time_seed: u64,
    seq: u64,
    as_of: u64,
) -> Result<(), TestCaseError> {
    let q = match parse_query(pairs, CTX) {
        Err(e) => {
            prop_assert!(QUERY_CODES.contains(&e.code), "unexpected code {}", e.code);
            // Every error names its parameter; an unknown parameter is named as sent, even if empty.
            prop_assert!(!e.field.is_empty() || e.code == "unknown_parameter", "{e:?}");
            prop_assert!(!e.message.is_empty());
            return Ok(());
        }
        Ok(q) => q,
    };
    let f = &q.filter;
    prop_assert!(f.from < f.to);
    prop_assert!(f.to - f.from <= MAX_WINDOW_DAYS * MICROS_PER_DAY);
    prop_assert!(f.from >= OLDEST);
    prop_assert!((1..=MAX_LIMIT).contains(&q.limit));
    let filter_only: Vec<_> = pairs.iter().filter(|(k, _)| k != "limit" && k != "cursor").cloned().collect();
    if q.cursor.is_none() {
        prop_assert_eq!(&parse_filter(&filter_only, CTX).expect("the filter alone parses"), f);
    }

    let span = u64::try_from(f.to - f.from).expect("a positive window");
    let time = f.from + i64::try_from(time_seed % span).expect("inside the window");
    let c = Cursor::new(f, time, seq, as_of);
    let text = c.encode();
    prop_assert_eq!(Cursor::decode(&text), Ok(c));
    let mut next: Vec<_> = pairs.iter().filter(|(k, _)| k != "cursor").cloned().collect();
    next.push(("cursor".into(), text));
    // An hour later: relative defaults would have moved, the cursor's window must not.
    let later = QueryContext { now: NOW + 3600 * MICROS_PER_SECOND, ..CTX };
    let resumed = parse_query(&next, later).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    prop_assert_eq!(&resumed.filter, f);
    prop_assert_eq!(resumed.cursor, Some(c));
    prop_assert_eq!(resumed.limit, q.limit);
    Ok(())
}

/// What a forged cursor can get: refused with a cursor, window or retention error — never a
/// confusing error about a parameter the caller did not send.
fn check_forged_cursor(text: &str) -> Result<(), TestCaseError> {
    let Ok(c) = Cursor::decode(text) else {
        return Ok(());
    };
    prop_assert_eq!(c.encode(), text, "a cursor has one spelling");
    match parse_query(&[("cursor".into(), text.into())], CTX) {
        Ok(q) => {
            prop_assert_eq!((q.filter.from, q.filter.to), (c.from, c.to));
            prop_assert!(q.filter.from >= OLDEST);
        }
        Err(e) => prop_assert!(
            ["invalid_cursor", "window_too_large", "outside_retention"].contains(&e.code),
            "forged cursor gave {e:?}"
        ),
    }
    Ok(())
}

/// An `audit.log` line: any text, a line shaped like a record with a hostile message, or a line Trail
/// wrote with characters changed.
fn audit_line() -> BoxedStrategy<String> {
    let stamp = prop_oneof![
        "[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}([,.][0-9]{0,11})?(Z|[+-][0-9]{2}:?[0-9]{2}|[+-][0-9]{1,3})?",
        text(),
    ];
    let level = prop::sample::select(vec!["INFO", " INFO", "WARN", "ERROR", "info", "", "TRACE"]);
    let category = prop::sample::select(vec!["{AUDIT_LOG}", "{audit_log}", "{OTHER}", "", "{", "{}"]);
    let token = prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        "\"",
        "“",
        "”",
        "\\",
        "\\\"",
        "\\“",
        ":",
        ",",
        " ",
        "performedBy",
        "action",
        "type",
        "info",
        "user",
        "created",
        "\\u00e9",
        "\\u12",
        "\\n",
        "null",
        "1e999",
        "-",
        "admin",
        "eventId",
        "seq",
        "outcome",
        "failure",
        "logged in at [",
        "logged out",
        "Failed Administrator login attempt '",
        "'",
        "[-1234]",
        "2017-06-07 22:26:22,501+0530",
        "proxyName",
        "userId",
        "_trace",
        "enabled",
        "\t",
    ]);
    let message = prop::collection::vec(prop_oneof![4 => token.prop_map(str::to_string), 1 => text()], 0..40)
        .prop_map(|t| t.concat());
    let edits = prop::collection::vec((any::<prop::sample::Index>(), opt(any::<char>())), 0..4);
    prop_oneof![
        1 => any::<String>(),
        3 => (stamp, level, category, message).prop_map(|(s, l, c, m)| format!("[{s}] {l} {c} - {m}")),
        2 => (stored_event(), -14 * 3600i32..=14 * 3600, edits).prop_map(|(e, offset, edits)| {
            let mut chars: Vec<char> = auditlog::format_line(&e, offset).chars().collect();
            for (at, c) in edits {
                let i = at.index(chars.len() + 1);
                match c {
                    Some(c) => chars.insert(i, c),
                    None if i < chars.len() => {
                        chars.remove(i);
                    }
                    None => {}
                }
            }
            chars.into_iter().collect()
        }),
    ]
    .boxed()
}

/// A line is skipped, refused with a reason, or read as an event that validates once given its
/// time; the id derived for it is always a valid event id.
fn check_audit_line(line: &str, occurrence: u32) -> Result<(), TestCaseError> {
    match auditlog::parse_line(line) {
        Err(e) => prop_assert!(!e.message.is_empty()),
        Ok(None) => {}
        Ok(Some(p)) => {
            let mut event = p.event.clone();
            event["time"] = json!(format_rfc3339(NOW));
            event["id"] = json!(auditlog::derive_id(line, occurrence));
            if let Err(e) = parse_event(&event, BOUNDS) {
                return Err(TestCaseError::fail(format!("{line:?} read as an invalid event: {e:?}")));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn events_are_accepted_and_round_trip_or_rejected_naming_the_field(v in hostile_event(), seq in any::<u64>()) {
        check_event(&v, seq)?;
    }

    #[test]
    fn any_json_value_is_validated_without_panicking(v in json()) {
        check_event(&v, 0)?;
        check_event(&json!({ "events": [v.clone()] }), 1)?;
    }

    #[test]
    fn any_body_text_is_parsed_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
            check_event(&v, 0)?;
        }
    }

    #[test]
    fn any_stored_event_encodes_and_decodes(s in stored_event()) {
        round_trips(&s)?;
    }

    #[test]
    fn canonical_bytes_with_damage_never_panic_and_agree_when_they_decode(
        s in stored_event(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let mut bytes = encode(&s);
        for (at, b, op) in edits {
            let i = at.index(bytes.len() + 1);
            match op {
                0 => bytes.insert(i, b),
                1 if i < bytes.len() => bytes[i] = b,
                _ if i < bytes.len() => {
                    bytes.remove(i);
                }
                _ => {}
            }
        }
        let decoded = decode(&bytes);
        let _ = canonical::peek(&bytes);
        let mut out = Vec::new();
        let written = write_json(&bytes, &[0; 32], &mut out);
        // Bytes that decode and are canonical (what the store writes) print exactly as the API does.
        if let Ok(d) = decoded
            && encode(&d) == bytes
        {
            prop_assert!(written.is_ok());
            prop_assert_eq!(out, serde_json::to_vec(&d.to_json(&[0; 32])).expect("JSON"));
        }
    }

    #[test]
    fn arbitrary_bytes_are_not_canonical_events_by_accident(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(d) = decode(&bytes) {
            // Decoding is strict: whatever decodes was encoded exactly so.
            prop_assert_eq!(&encode(&d), &bytes);
        }
        let _ = canonical::peek(&bytes);
        let _ = write_json(&bytes, &[0; 32], &mut Vec::new());
    }

    #[test]
    fn query_parameters_are_refused_with_a_code_or_page_exactly(
        pairs in query_pairs(), time_seed in any::<u64>(), seq in any::<u64>(), as_of in any::<u64>(),
    ) {
        check_query(&pairs, time_seed, seq, as_of)?;
    }

    #[test]
    fn forged_cursors_never_panic_and_are_refused_clearly(bytes in forged_cursor_bytes(), s in any::<String>()) {
        check_forged_cursor(&base64_url(&bytes))?;
        check_forged_cursor(&s)?;
    }

    #[test]
    fn cursors_with_a_matching_fingerprint_still_cannot_widen_the_window(
        from in any::<i64>(), len in any::<i64>(), at in any::<u64>(), seq in any::<u64>(), as_of in any::<u64>(),
    ) {
        // Anyone can compute the fingerprint of empty filters; the window must still be checked.
        let to = from.saturating_add(len.rem_euclid(400 * MICROS_PER_DAY) + 1);
        let span = u64::try_from(to - from).expect("positive");
        let time = from + i64::try_from(at % span).expect("inside");
        let f = Filter { from, to, ..Filter::default() };
        check_forged_cursor(&Cursor::new(&f, time, seq, as_of).encode())?;
    }

    #[test]
    fn audit_log_lines_are_read_or_refused(line in audit_line(), occurrence in any::<u32>()) {
        check_audit_line(&line, occurrence)?;
    }

    #[test]
    fn timestamps_parse_or_are_refused(s in timestamp()) {
        if let Some(t) = parse_rfc3339(&s)
            && (OLDEST..=NOW + MAX_FUTURE_SKEW).contains(&t)
        {
            prop_assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }
    }
}

/// A long line of quotes, braces and backslashes: the lenient reader's tries are bounded, so this
/// returns (before the bound it took exponential time in the number of quoted braces).
#[test]
fn a_pathological_audit_line_is_refused_or_read() {
    let message = "{\"a\":\"{\\\"b\\\":\\\"{".repeat(4_000);
    let line = format!("[2021-09-07 12:42:59,249]  INFO {{AUDIT_LOG}} - {message}");
    check_audit_line(&line, 0).unwrap();
    let curly = "{“a”:“{”".repeat(4_000);
    check_audit_line(&format!("[2021-09-07 12:42:59,249]  INFO {{AUDIT_LOG}} - {curly}"), 0).unwrap();
}

/// Bug found by `events_are_accepted_and_round_trip_or_rejected_naming_the_field`: without serde_json's
/// `float_roundtrip`, reading back the shortest form of some floats (`-4.822262905654148e+54`) gave the
/// neighbouring f64, so the API's JSON (decoded from the stored bytes) differed from the bytes, and
/// `trail verify --export` recomputed another leaf hash from an export line and reported tampering.
#[test]
fn a_float_in_info_reads_back_as_stored() {
    let body = r#"{"actor": {"id": "a"}, "action": "a.b", "target": {"type": "t"}, "outcome": "success",
                   "info": {"big": -4.822262905654148e54, "tiny": -4.086046721389558e-305, "n": [0.1, 1e300]}}"#;
    let e = parse_event(&serde_json::from_str(body).unwrap(), BOUNDS).unwrap();
    let stored = StoredEvent::accept(e, "acme", 3, "evt".into(), NOW);
    round_trips(&stored).unwrap();
    let info = String::from_utf8(canonical::info_bytes(stored.info.as_ref().unwrap())).unwrap();
    assert!(info.contains("-4.822262905654148e+54"), "{info}");
}

/// Bug found by `forged_cursors_never_panic_and_are_refused_clearly`: a cursor whose window lies
/// outside the years RFC 3339 can write decoded, and the query then failed with "from: must be an
/// RFC 3339 timestamp" although the caller sent no `from`. It is now refused as `invalid_cursor`.
#[test]
fn a_forged_cursor_with_an_unwritable_window_is_an_invalid_cursor() {
    for (from, to) in
        [(253_391_221_752_635_275, 253_402_300_800_000_000), (i64::MIN, i64::MIN + 10), (-1, i64::MAX)]
    {
        let c = Cursor::new(&Filter { from, to, ..Filter::default() }, from, 0, 0).encode();
        let e = parse_query(&[("cursor".into(), c)], CTX).unwrap_err();
        assert_eq!((e.code, e.field.as_str()), ("invalid_cursor", "cursor"));
    }
}
