//! Canonical event bytes, format version 1: the exact bytes that are stored, hashed into the Merkle
//! log (`leaf = SHA-256(0x00 ‖ bytes)`) and verified offline. They never change after acknowledgement.
//!
//! The format is deliberately simple and independent of any serializer's whims:
//!
//! ```text
//! event   = version field*          ; version = 0x01
//! field   = tag len value           ; tags strictly ascending, absent optional fields omitted
//! tag     = u8                      ; see the TAG_* constants
//! len     = unsigned LEB128         ; byte length of value
//! value   = UTF-8 text | u64/i64 big-endian (8 bytes) for seq, time, received_at
//! ```
//!
//! `time` and `received_at` are microseconds since the Unix epoch (UTC). `info` is the event's JSON
//! object serialized compactly with object keys in ascending byte order (no insignificant whitespace;
//! numbers as given). Because `org` and `seq` are inside the bytes, an event cannot be moved to another
//! organization or position without changing its leaf hash.
//!
//! Decoding is strict: an unknown version or tag, a repeated or out-of-order tag, a missing required
//! field, invalid UTF-8 or trailing bytes are errors, so a flipped byte is detected even before hashing.

use serde_json::{Map, Value};

use crate::event::{Actor, ActorType, Outcome, StoredEvent, Target};

pub const VERSION: u8 = 1;

pub const TAG_ORG: u8 = 0x01;
pub const TAG_SEQ: u8 = 0x02;
pub const TAG_ID: u8 = 0x03;
pub const TAG_TIME: u8 = 0x04;
pub const TAG_RECEIVED_AT: u8 = 0x05;
pub const TAG_ACTOR_ID: u8 = 0x10;
pub const TAG_ACTOR_TYPE: u8 = 0x11;
pub const TAG_ACTOR_NAME: u8 = 0x12;
pub const TAG_ACTOR_IP: u8 = 0x13;
pub const TAG_ACTOR_USER_AGENT: u8 = 0x14;
pub const TAG_ACTION: u8 = 0x20;
pub const TAG_TARGET_TYPE: u8 = 0x30;
pub const TAG_TARGET_ID: u8 = 0x31;
pub const TAG_TARGET_NAME: u8 = 0x32;
pub const TAG_PROJECT: u8 = 0x40;
pub const TAG_OUTCOME: u8 = 0x41;
pub const TAG_REASON: u8 = 0x42;
pub const TAG_SOURCE: u8 = 0x43;
pub const TAG_INFO: u8 = 0x50;

/// Why stored bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported canonical format version {0}")]
    Version(u8),
    #[error("truncated event bytes")]
    Truncated,
    #[error("tag {0:#04x} is unknown or out of order")]
    BadTag(u8),
    #[error("field with tag {0:#04x} has an invalid value")]
    BadValue(u8),
    #[error("required field with tag {0:#04x} is missing")]
    Missing(u8),
}

/// Encodes a stored event. Only the store calls this, once, when it accepts the event.
pub fn encode(e: &StoredEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(VERSION);
    put(&mut out, TAG_ORG, e.org.as_bytes());
    put(&mut out, TAG_SEQ, &e.seq.to_be_bytes());
    put(&mut out, TAG_ID, e.id.as_bytes());
    put(&mut out, TAG_TIME, &e.time.to_be_bytes());
    put(&mut out, TAG_RECEIVED_AT, &e.received_at.to_be_bytes());
    put(&mut out, TAG_ACTOR_ID, e.actor.id.as_bytes());
    put(&mut out, TAG_ACTOR_TYPE, e.actor.kind.as_str().as_bytes());
    put_opt(&mut out, TAG_ACTOR_NAME, &e.actor.name);
    put_opt(&mut out, TAG_ACTOR_IP, &e.actor.ip);
    put_opt(&mut out, TAG_ACTOR_USER_AGENT, &e.actor.user_agent);
    put(&mut out, TAG_ACTION, e.action.as_bytes());
    put(&mut out, TAG_TARGET_TYPE, e.target.kind.as_bytes());
    put_opt(&mut out, TAG_TARGET_ID, &e.target.id);
    put_opt(&mut out, TAG_TARGET_NAME, &e.target.name);
    put_opt(&mut out, TAG_PROJECT, &e.project);
    put(&mut out, TAG_OUTCOME, e.outcome.as_str().as_bytes());
    put_opt(&mut out, TAG_REASON, &e.reason);
    put_opt(&mut out, TAG_SOURCE, &e.source);
    if let Some(info) = &e.info {
        put(&mut out, TAG_INFO, &info_bytes(info));
    }
    out
}

/// Checks the framing of canonical bytes (version, ascending tags, lengths, nothing trailing) and
/// returns their `org` and `seq` without decoding the rest. `trail verify` uses it: the leaf hash
/// already covers every byte, so a full decode per event would only cost time.
pub fn peek(bytes: &[u8]) -> Result<(&str, u64), DecodeError> {
    let (mut org, mut seq) = (None, None);
    let mut fields = Fields::new(bytes)?;
    while let Some((tag, v)) = fields.next_field()? {
        match tag {
            TAG_ORG => org = Some(std::str::from_utf8(v).map_err(|_| DecodeError::BadValue(tag))?),
            TAG_SEQ => seq = Some(u64::from_be_bytes(fixed(tag, v)?)),
            t if t > TAG_INFO => return Err(DecodeError::BadTag(t)),
            _ => {}
        }
    }
    Ok((org.ok_or(DecodeError::Missing(TAG_ORG))?, seq.ok_or(DecodeError::Missing(TAG_SEQ))?))
}

/// The client id of canonical bytes, read without decoding the rest (the id map keys ids by a hash,
/// so a caller checks what an entry's event says).
pub fn id_of(bytes: &[u8]) -> Result<&str, DecodeError> {
    for field in Fields::new(bytes)? {
        match field? {
            (TAG_ID, v) => return std::str::from_utf8(v).map_err(|_| DecodeError::BadValue(TAG_ID)),
            (tag, _) if tag > TAG_ID => break,
            _ => {}
        }
    }
    Err(DecodeError::Missing(TAG_ID))
}

/// Writes the JSON form of stored bytes — byte for byte what `StoredEvent::write_json` writes for the
/// decoded event — straight from the fields, without decoding: strings are escaped from their slices
/// and `info` is copied as stored (it already is the compact, key-sorted JSON the API prints).
/// Exports use it; invalid bytes are an error, never a panic.
pub fn write_json<W: std::io::Write>(
    bytes: &[u8],
    leaf_hash: &[u8; 32],
    w: &mut W,
) -> Result<(), WriteError> {
    use base64::Engine;
    let mut f: [Option<&[u8]>; 0x51] = [None; 0x51];
    let mut fields = Fields::new(bytes)?;
    while let Some((tag, v)) = fields.next_field()? {
        match f.get_mut(usize::from(tag)) {
            Some(slot) => *slot = Some(v),
            None => return Err(DecodeError::BadTag(tag).into()),
        }
    }
    let text = |tag: u8| -> Result<Option<&str>, DecodeError> {
        f[usize::from(tag)]
            .map(|v| std::str::from_utf8(v).map_err(|_| DecodeError::BadValue(tag)))
            .transpose()
    };
    let req = |tag: u8| -> Result<&str, DecodeError> { text(tag)?.ok_or(DecodeError::Missing(tag)) };
    let int = |tag: u8| -> Result<[u8; 8], DecodeError> {
        fixed(tag, f[usize::from(tag)].ok_or(DecodeError::Missing(tag))?)
    };
    fn field<W: std::io::Write>(w: &mut W, first: &mut bool, key: &str, v: &str) -> std::io::Result<()> {
        w.write_all(if *first { b"\"" } else { b",\"" })?;
        *first = false;
        w.write_all(key.as_bytes())?;
        w.write_all(b"\":")?;
        serde_json::to_writer(&mut *w, v).map_err(std::io::Error::other)
    }
    let mut first = true;
    let action = req(TAG_ACTION)?;
    w.write_all(b"{")?;
    field(w, &mut first, "action", action)?;
    if let Some(label) = crate::catalog::label(action) {
        field(w, &mut first, "action_label", label)?;
    }
    w.write_all(b",\"actor\":{")?;
    let mut a = true;
    field(w, &mut a, "id", req(TAG_ACTOR_ID)?)?;
    if let Some(v) = text(TAG_ACTOR_IP)? {
        field(w, &mut a, "ip", v)?;
    }
    if let Some(v) = text(TAG_ACTOR_NAME)? {
        field(w, &mut a, "name", v)?;
    }
    field(w, &mut a, "type", req(TAG_ACTOR_TYPE)?)?;
    if let Some(v) = text(TAG_ACTOR_USER_AGENT)? {
        field(w, &mut a, "user_agent", v)?;
    }
    w.write_all(b"}")?;
    field(w, &mut first, "id", req(TAG_ID)?)?;
    if let Some(info) = f[usize::from(TAG_INFO)] {
        w.write_all(b",\"info\":")?;
        w.write_all(info)?;
    }
    field(w, &mut first, "leaf_hash", &base64::engine::general_purpose::STANDARD.encode(leaf_hash))?;
    field(w, &mut first, "org", req(TAG_ORG)?)?;
    field(w, &mut first, "outcome", req(TAG_OUTCOME)?)?;
    if let Some(v) = text(TAG_PROJECT)? {
        field(w, &mut first, "project", v)?;
    }
    if let Some(v) = text(TAG_REASON)? {
        field(w, &mut first, "reason", v)?;
    }
    field(
        w,
        &mut first,
        "received_at",
        &crate::time::format_rfc3339(i64::from_be_bytes(int(TAG_RECEIVED_AT)?)),
    )?;
    write!(w, ",\"seq\":{}", u64::from_be_bytes(int(TAG_SEQ)?))?;
    if let Some(v) = text(TAG_SOURCE)? {
        field(w, &mut first, "source", v)?;
    }
    w.write_all(b",\"target\":{")?;
    let mut t = true;
    if let Some(v) = text(TAG_TARGET_ID)? {
        field(w, &mut t, "id", v)?;
    }
    if let Some(v) = text(TAG_TARGET_NAME)? {
        field(w, &mut t, "name", v)?;
    }
    field(w, &mut t, "type", req(TAG_TARGET_TYPE)?)?;
    w.write_all(b"}")?;
    field(w, &mut first, "time", &crate::time::format_rfc3339(i64::from_be_bytes(int(TAG_TIME)?)))?;
    w.write_all(b"}")?;
    Ok(())
}

/// Why [`write_json`] failed: bad stored bytes, or the writer.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Overwrites the `seq` of encoded bytes in place. Lets a store encode an event before it knows the
/// position it will take (off its single writer thread), then stamp the position in: `seq` is a fixed
/// 8-byte field, so the rest of the bytes do not move.
pub fn set_seq(bytes: &mut [u8], seq: u64) -> Result<(), DecodeError> {
    let mut fields = Fields::new(bytes)?;
    let offset = loop {
        match fields.next_field()? {
            Some((TAG_SEQ, v)) if v.len() == 8 => break bytes.len() - fields.rest.len() - 8,
            Some((TAG_ORG, _)) => continue,
            Some((tag, _)) => return Err(DecodeError::BadTag(tag)),
            None => return Err(DecodeError::Missing(TAG_SEQ)),
        }
    };
    bytes[offset..offset + 8].copy_from_slice(&seq.to_be_bytes());
    Ok(())
}

/// Whether `retry`, encoded for an id the org already has, carries the same content as the `stored`
/// bytes: equal apart from what the store assigns (`seq`, `received_at`). A retry that left `time` out
/// matches only an original that left it out too (its `time` is then its `received_at`). Different
/// content under a reused id is a client bug, answered `conflict` rather than hidden as a duplicate.
pub fn same_content(stored: &[u8], retry: &[u8], retry_time_given: bool) -> Result<bool, DecodeError> {
    let mut original = decode(stored)?;
    let mut again = decode(retry)?;
    if !retry_time_given {
        again.time = original.received_at;
    }
    original.seq = again.seq;
    original.received_at = again.received_at;
    Ok(original == again)
}

/// The canonical JSON of an `info` object: compact, keys ascending (serde_json's map is ordered).
pub fn info_bytes(info: &Map<String, Value>) -> Vec<u8> {
    // A Map of Values always serializes; an error here would be a serde_json bug.
    serde_json::to_vec(info).unwrap_or_default()
}

fn put(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// Appends `n` as an unsigned LEB128 varint (the lengths of the canonical format).
pub fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Reads an unsigned LEB128 varint of at most 64 bits; returns it and the bytes after it.
pub fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut n: u64 = 0;
    let mut rest = bytes;
    for shift in (0..64).step_by(7) {
        let (&b, r) = rest.split_first()?;
        rest = r;
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some((n, rest));
        }
    }
    None
}

fn put_opt(out: &mut Vec<u8>, tag: u8, value: &Option<String>) {
    if let Some(v) = value {
        put(out, tag, v.as_bytes());
    }
}

/// Reads the raw fields of canonical bytes, checking framing and tag order.
#[derive(Debug)]
pub struct Fields<'a> {
    rest: &'a [u8],
    last: u8,
}

impl<'a> Fields<'a> {
    pub fn new(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        match bytes.split_first() {
            Some((&VERSION, rest)) => Ok(Self { rest, last: 0 }),
            Some((&v, _)) => Err(DecodeError::Version(v)),
            None => Err(DecodeError::Truncated),
        }
    }

    fn next_field(&mut self) -> Result<Option<(u8, &'a [u8])>, DecodeError> {
        let Some((&tag, mut rest)) = self.rest.split_first() else {
            return Ok(None);
        };
        if tag <= self.last {
            return Err(DecodeError::BadTag(tag));
        }
        let mut len: u64 = 0;
        let mut shift = 0;
        loop {
            let (&b, r) = rest.split_first().ok_or(DecodeError::Truncated)?;
            rest = r;
            if shift > 56 {
                return Err(DecodeError::BadValue(tag));
            }
            len |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
        if rest.len() < len {
            return Err(DecodeError::Truncated);
        }
        let (value, rest) = rest.split_at(len);
        self.rest = rest;
        self.last = tag;
        Ok(Some((tag, value)))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u8, &'a [u8]), DecodeError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_field().transpose()
    }
}

/// Decodes canonical bytes back into the stored event.
pub fn decode(bytes: &[u8]) -> Result<StoredEvent, DecodeError> {
    let mut org = None;
    let mut seq = None;
    let mut id = None;
    let mut time = None;
    let mut received_at = None;
    let mut actor_id = None;
    let mut actor_type = None;
    let (mut actor_name, mut actor_ip, mut actor_ua) = (None, None, None);
    let mut action = None;
    let mut target_type = None;
    let (mut target_id, mut target_name) = (None, None);
    let mut project = None;
    let mut outcome = None;
    let (mut reason, mut source, mut info) = (None, None, None);

    for field in Fields::new(bytes)? {
        let (tag, v) = field?;
        match tag {
            TAG_ORG => org = Some(text(tag, v)?),
            TAG_SEQ => seq = Some(u64::from_be_bytes(fixed(tag, v)?)),
            TAG_ID => id = Some(text(tag, v)?),
            TAG_TIME => time = Some(i64::from_be_bytes(fixed(tag, v)?)),
            TAG_RECEIVED_AT => received_at = Some(i64::from_be_bytes(fixed(tag, v)?)),
            TAG_ACTOR_ID => actor_id = Some(text(tag, v)?),
            TAG_ACTOR_TYPE => {
                actor_type = Some(ActorType::parse(&text(tag, v)?).ok_or(DecodeError::BadValue(tag))?)
            }
            TAG_ACTOR_NAME => actor_name = Some(text(tag, v)?),
            TAG_ACTOR_IP => actor_ip = Some(text(tag, v)?),
            TAG_ACTOR_USER_AGENT => actor_ua = Some(text(tag, v)?),
            TAG_ACTION => action = Some(text(tag, v)?),
            TAG_TARGET_TYPE => target_type = Some(text(tag, v)?),
            TAG_TARGET_ID => target_id = Some(text(tag, v)?),
            TAG_TARGET_NAME => target_name = Some(text(tag, v)?),
            TAG_PROJECT => project = Some(text(tag, v)?),
            TAG_OUTCOME => outcome = Some(Outcome::parse(&text(tag, v)?).ok_or(DecodeError::BadValue(tag))?),
            TAG_REASON => reason = Some(text(tag, v)?),
            TAG_SOURCE => source = Some(text(tag, v)?),
            TAG_INFO => match serde_json::from_slice(v) {
                Ok(Value::Object(m)) => info = Some(m),
                _ => return Err(DecodeError::BadValue(tag)),
            },
            other => return Err(DecodeError::BadTag(other)),
        }
    }
    Ok(StoredEvent {
        org: org.ok_or(DecodeError::Missing(TAG_ORG))?,
        seq: seq.ok_or(DecodeError::Missing(TAG_SEQ))?,
        id: id.ok_or(DecodeError::Missing(TAG_ID))?,
        time: time.ok_or(DecodeError::Missing(TAG_TIME))?,
        received_at: received_at.ok_or(DecodeError::Missing(TAG_RECEIVED_AT))?,
        actor: Actor {
            id: actor_id.ok_or(DecodeError::Missing(TAG_ACTOR_ID))?,
            kind: actor_type.ok_or(DecodeError::Missing(TAG_ACTOR_TYPE))?,
            name: actor_name,
            ip: actor_ip,
            user_agent: actor_ua,
        },
        action: action.ok_or(DecodeError::Missing(TAG_ACTION))?,
        target: Target {
            kind: target_type.ok_or(DecodeError::Missing(TAG_TARGET_TYPE))?,
            id: target_id,
            name: target_name,
        },
        project,
        outcome: outcome.ok_or(DecodeError::Missing(TAG_OUTCOME))?,
        reason,
        source,
        info,
    })
}

fn text(tag: u8, v: &[u8]) -> Result<String, DecodeError> {
    String::from_utf8(v.to_vec()).map_err(|_| DecodeError::BadValue(tag))
}

fn fixed(tag: u8, v: &[u8]) -> Result<[u8; 8], DecodeError> {
    v.try_into().map_err(|_| DecodeError::BadValue(tag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{NewEvent, TimeBounds, parse_event};
    use proptest::prelude::*;

    #[test]
    fn varints_round_trip_and_refuse_overlong_or_cut_input() {
        for n in [0u64, 1, 127, 128, 300, 16_384, u32::MAX as u64, u64::MAX] {
            let mut out = vec![];
            put_varint(&mut out, n);
            out.push(0xAB);
            assert_eq!(read_varint(&out), Some((n, &[0xAB][..])), "{n}");
        }
        // LEB128, low group first: 300 is 0xAC 0x02.
        let mut out = vec![];
        put_varint(&mut out, 300);
        assert_eq!(out, [0xAC, 0x02]);
        assert_eq!(read_varint(&[0x80, 0x80]), None, "cut short");
        assert_eq!(read_varint(&[0xFF; 11]), None, "longer than 64 bits");
    }
    use serde_json::json;

    fn sample() -> NewEvent {
        let v = json!({"id": "evt-1", "actor": {"id": "alice", "type": "service", "name": "Alice", "ip": "::1",
            "user_agent": "curl/8"}, "action": "component.deployed",
            "target": {"type": "component", "id": "c-1", "name": "Billing"}, "project": "p", "outcome": "failure",
            "reason": "quota exceeded", "source": "console", "info": {"z": 1, "a": {"y": [1, "x"], "b": null}}});
        parse_event(&v, TimeBounds { now: 0, oldest: i64::MIN }).unwrap()
    }

    fn stored(e: NewEvent) -> StoredEvent {
        StoredEvent::accept(e, "acme", 7, "evt-1".into(), 1_631_018_580_000_000)
            .with_time(1_631_018_579_249_000)
    }

    /// A fixed known answer: if this changes, every stored leaf hash in the world would change with it.
    #[test]
    fn known_bytes() {
        let e = NewEvent { info: None, reason: None, ..sample() };
        let bytes = encode(&stored(e));
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            concat!(
                "01",
                "0104 61636d65",
                "0208 0000000000000007",
                "0305 6576742d31",
                "0408 0005cb671b09c768",
                "0508 0005cb671b153d00",
                "1005 616c696365",
                "1107 73657276696365",
                "1205 416c696365",
                "1303 3a3a31",
                "1406 6375726c2f38",
                "2012 636f6d706f6e656e742e6465706c6f796564",
                "3009 636f6d706f6e656e74",
                "3103 632d31",
                "3207 42696c6c696e67",
                "4001 70",
                "4107 6661696c757265",
                "4307 636f6e736f6c65"
            )
            .replace(' ', "")
        );
    }

    #[test]
    fn same_content_ignores_what_the_store_assigns_and_nothing_else() {
        let received = 1_631_018_580_000_000;
        let original = encode(&StoredEvent::accept(sample(), "acme", 7, "evt-1".into(), received));
        let retry =
            |e: NewEvent| encode(&StoredEvent::accept(e, "acme", 0, "evt-1".into(), received + 5_000_000));
        assert_eq!(
            same_content(&original, &retry(sample()), false),
            Ok(true),
            "another seq and receipt time"
        );
        let changed = NewEvent { reason: Some("a different reason".into()), ..sample() };
        assert_eq!(same_content(&original, &retry(changed), false), Ok(false));
        let mut info = sample();
        info.info.as_mut().unwrap().insert("z".into(), json!(2));
        assert_eq!(same_content(&original, &retry(info), false), Ok(false), "info is content");
        // Time: given on both sides it must be equal; left out on both sides it is no difference.
        let timed = |t| {
            encode(&StoredEvent::accept(
                NewEvent { time: Some(t), ..sample() },
                "acme",
                7,
                "evt-1".into(),
                received,
            ))
        };
        let t = received - 60_000_000;
        let retry_timed = |t| {
            encode(&StoredEvent::accept(
                NewEvent { time: Some(t), ..sample() },
                "acme",
                0,
                "evt-1".into(),
                received + 1,
            ))
        };
        assert_eq!(same_content(&timed(t), &retry_timed(t), true), Ok(true));
        assert_eq!(same_content(&timed(t), &retry_timed(t + 1), true), Ok(false));
        assert_eq!(same_content(&timed(t), &retry(sample()), false), Ok(false), "the original had a time");
        assert_eq!(
            same_content(&original, &retry_timed(received + 1), true),
            Ok(false),
            "the original had none"
        );
    }

    #[test]
    fn peek_reads_org_and_seq_and_checks_framing() {
        let bytes = encode(&stored(sample()));
        assert_eq!(peek(&bytes).unwrap(), ("acme", 7));
        for i in 0..bytes.len() {
            // Every strict prefix either fails or is a valid event that lost trailing fields.
            if let Ok(d) = decode(&bytes[..i]) {
                assert_eq!(peek(&bytes[..i]).unwrap(), (d.org.as_str(), d.seq));
            } else if i < 16 {
                assert!(peek(&bytes[..i]).is_err(), "prefix {i}");
            }
        }
        let mut extra = bytes.clone();
        extra.extend_from_slice(&[0x60, 0x01, 0x00]);
        assert!(peek(&extra).is_err(), "unknown trailing tag");
    }

    #[test]
    fn raw_json_is_the_decoded_json_byte_for_byte() {
        let full = stored(sample());
        let bare = StoredEvent { info: None, reason: None, source: None, project: None, ..stored(sample()) };
        for e in [full, bare] {
            let bytes = encode(&e);
            let mut raw = Vec::new();
            write_json(&bytes, &[9; 32], &mut raw).unwrap();
            let decoded = serde_json::to_string(&decode(&bytes).unwrap().to_json(&[9; 32])).unwrap();
            assert_eq!(String::from_utf8(raw).unwrap(), decoded);
        }
        assert!(write_json(&[1, 0x60, 0], &[0; 32], &mut Vec::new()).is_err());
    }

    proptest! {
        #[test]
        fn raw_json_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = write_json(&bytes, &[0; 32], &mut Vec::new());
        }
    }

    #[test]
    fn set_seq_stamps_the_position() {
        let mut s = stored(sample());
        let mut bytes = encode(&s);
        set_seq(&mut bytes, 0x0102_0304_0506_0708).unwrap();
        s.seq = 0x0102_0304_0506_0708;
        assert_eq!(bytes, encode(&s));
        assert!(set_seq(&mut [2u8, 1, 0], 1).is_err());
    }

    #[test]
    fn round_trip_and_info_order() {
        let e = sample();
        let bytes = encode(&stored(e.clone()));
        let s = decode(&bytes).unwrap();
        assert_eq!((s.org.as_str(), s.seq, s.id.as_str()), ("acme", 7, "evt-1"));
        assert_eq!(s.actor, e.actor);
        assert_eq!(s.target, e.target);
        assert_eq!(s.info, e.info);
        assert!(bytes.ends_with(br#"{"a":{"b":null,"y":[1,"x"]},"z":1}"#));
    }

    #[test]
    fn every_single_byte_truncation_or_flip_is_noticed_or_changes_the_event() {
        let bytes = encode(&stored(sample()));
        let original = decode(&bytes).unwrap();
        for i in 0..bytes.len() {
            // Cutting at a field boundary can leave a valid, smaller event; it must never be the same one.
            if let Ok(d) = decode(&bytes[..i]) {
                assert_ne!(d, original, "truncation at {i} went unnoticed");
            }
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            if let Ok(d) = decode(&b) {
                assert_ne!(d, original, "flip at {i} went unnoticed");
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn encode_decode_round_trip(actor in "\\PC{1,40}", name in proptest::option::of("\\PC{0,40}"),
                                    seq in any::<u64>(), time in any::<i64>(), n in any::<i64>(),
                                    key in "\\PC{0,10}") {
            let mut e = sample();
            e.actor.id = actor;
            e.actor.name = name;
            let mut info = Map::new();
            info.insert(key, json!(n));
            e.info = Some(info);
            let mut s = stored(e.clone()).with_time(time);
            s.seq = seq;
            let d = decode(&encode(&s)).unwrap();
            prop_assert_eq!(d.seq, seq);
            prop_assert_eq!(d.time, time);
            prop_assert_eq!(&d.actor, &e.actor);
            prop_assert_eq!(&d.info, &e.info);
        }
    }
}
