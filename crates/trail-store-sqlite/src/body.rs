//! Compressed event bodies.
//!
//! A row's `body` is the event's only full copy. Audit events are small (~300 canonical bytes) and
//! alike, so each is compressed on its own (LZ4, `lz4_flex`) against a dictionary sampled from the
//! store's own events: 8 KiB of recent bodies, kept in `body_dicts` and never changed. Measured on
//! 200,000 stored events: 308 bytes become 131 (2.4×), at ~2 µs to compress (on the request's thread,
//! not the writer's) and ~0.16 µs to expand; without a dictionary LZ4 saves 4%, and zstd blocks of 64
//! events (106 bytes) would make every point read expand a block. See ARCHITECTURE.md.
//!
//! Stored form: [`MARKER`], the dictionary's id and the canonical length as varints, then the LZ4
//! block of the canonical bytes *with `seq` 0*, so the bytes can be packed before the writer assigns
//! the position. [`unpack`] stamps the row's `seq` back in: what it returns is exactly the canonical
//! bytes the leaf hash was computed over. Bytes that do not start with [`MARKER`] are canonical bytes
//! as they are (rows written before the store had a dictionary, or by earlier releases; canonical
//! bytes start with their format version, 1). Unpacking never guesses: a missing dictionary or a
//! block that does not expand to its stated length is an error naming the row.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, RwLock};

use rusqlite::{Connection, OptionalExtension};
use trail_model::canonical;
use trail_store::StoreError;

/// First byte of a packed body; never the first byte of canonical bytes.
pub const MARKER: u8 = 0xFE;
const _: () = assert!(canonical::VERSION != MARKER);

/// Bytes of sampled bodies a dictionary holds: 4 KiB packed to 137 bytes at 1.3 µs, 8 KiB to 131 at
/// 2.1 µs, 16 KiB to 125 at 3.7 µs (LZ4 hashes the whole dictionary for every body).
const DICT_BYTES: usize = 8 * 1024;
/// Bodies the writer samples before it makes the first dictionary (8 KiB holds ~26 of them; the
/// newest are kept).
pub const SAMPLE: usize = 64;

pub const CREATE: &str = "
    CREATE TABLE IF NOT EXISTS body_dicts(
        id INTEGER PRIMARY KEY AUTOINCREMENT, dict BLOB NOT NULL, created_at INTEGER NOT NULL) STRICT;
";

/// A dictionary bodies are packed against.
#[derive(Debug)]
pub struct Dict {
    pub id: i64,
    pub bytes: Arc<[u8]>,
}

/// The dictionary new bodies are packed with: made by the writer, read by every append.
#[derive(Debug, Default)]
pub struct Current(RwLock<Option<Arc<Dict>>>);

impl Current {
    pub fn get(&self) -> Option<Arc<Dict>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, dict: Arc<Dict>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(dict);
    }
}

/// Packs canonical bytes whose `seq` is 0.
pub fn pack(dict: &Dict, bytes: &[u8]) -> Vec<u8> {
    let block = lz4_flex::block::compress_with_dict(bytes, &dict.bytes);
    let mut out = Vec::with_capacity(block.len() + 6);
    out.push(MARKER);
    canonical::put_varint(&mut out, dict.id as u64);
    canonical::put_varint(&mut out, bytes.len() as u64);
    out.extend_from_slice(&block);
    out
}

/// Dictionaries read by any connection of the process, by database file and id (a dictionary never
/// changes once written; tests open many stores in one process). A store opening a file forgets what
/// was cached for its path ([`forget`]): the file may be a new one where a deleted one was.
type DictCache = HashMap<String, HashMap<i64, Arc<[u8]>>>;
static DICTS: LazyLock<Mutex<DictCache>> = LazyLock::new(Default::default);

/// Drops the cached dictionaries of the database at `path` (called when a store opens it).
pub fn forget(path: &str) {
    DICTS.lock().unwrap_or_else(|p| p.into_inner()).remove(path);
}

fn dict(conn: &Connection, id: i64) -> Result<Arc<[u8]>, StoreError> {
    // An in-memory database has no name to tell it from another: not cached. (Looked up by `&str`:
    // this runs for every packed row a query or `trail verify` reads.)
    let path = conn.path().filter(|p| !p.is_empty());
    if let Some(path) = path
        && let Some(d) = DICTS.lock().unwrap_or_else(|p| p.into_inner()).get(path).and_then(|m| m.get(&id))
    {
        return Ok(d.clone());
    }
    let bytes: Option<Vec<u8>> = conn
        .prepare_cached("SELECT dict FROM main.body_dicts WHERE id = ?1")
        .and_then(|mut st| st.query_row([id], |r| r.get(0)).optional())
        .map_err(crate::sql_error)?;
    let bytes: Arc<[u8]> = bytes
        .ok_or_else(|| {
            StoreError::Corrupt(format!("a stored event names compression dictionary {id}, which is missing"))
        })?
        .into();
    if let Some(path) = path {
        DICTS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(path.to_string())
            .or_default()
            .insert(id, bytes.clone());
    }
    Ok(bytes)
}

/// The canonical bytes of a stored body at `seq`.
pub fn unpack(conn: &Connection, stored: Vec<u8>, seq: u64) -> Result<Vec<u8>, StoreError> {
    if stored.first() != Some(&MARKER) {
        return Ok(stored);
    }
    let damaged = || StoreError::Corrupt(format!("the stored body of seq {seq} does not expand"));
    let (id, rest) = canonical::read_varint(&stored[1..]).ok_or_else(damaged)?;
    let (len, block) = canonical::read_varint(rest).ok_or_else(damaged)?;
    let dict = dict(conn, id as i64)?;
    let mut bytes =
        lz4_flex::block::decompress_with_dict(block, len as usize, &dict).map_err(|_| damaged())?;
    if bytes.len() as u64 != len {
        return Err(damaged());
    }
    canonical::set_seq(&mut bytes, seq).map_err(|_| damaged())?;
    Ok(bytes)
}

/// The newest dictionary, if the store has one.
pub fn newest(conn: &Connection) -> rusqlite::Result<Option<Arc<Dict>>> {
    conn.query_row("SELECT id, dict FROM body_dicts ORDER BY id DESC LIMIT 1", [], |r| {
        Ok(Arc::new(Dict { id: r.get(0)?, bytes: r.get::<_, Vec<u8>>(1)?.into() }))
    })
    .optional()
}

/// Makes a dictionary from sampled bodies (each at most once, newest last: LZ4 finds the nearest
/// match first) and stores it. Inside the writer's transaction.
pub fn make(conn: &Connection, sample: &[Vec<u8>], now: i64) -> rusqlite::Result<Arc<Dict>> {
    let mut bytes: Vec<u8> = Vec::with_capacity(DICT_BYTES);
    for body in sample.iter().rev() {
        if bytes.len() + body.len() > DICT_BYTES {
            break;
        }
        bytes.splice(0..0, body.iter().copied());
    }
    conn.execute("INSERT INTO body_dicts(dict, created_at) VALUES (?1, ?2)", rusqlite::params![bytes, now])?;
    Ok(Arc::new(Dict { id: conn.last_insert_rowid(), bytes: bytes.into() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical_bytes(n: u64) -> Vec<u8> {
        let e = trail_model::NewEvent {
            id: Some(format!("evt-{n}")),
            time: Some(1_700_000_000_000_000 + n as i64),
            actor: trail_model::Actor {
                id: format!("user{}@example.com", n % 7),
                kind: trail_model::ActorType::User,
                name: None,
                ip: Some("10.0.0.1".into()),
                user_agent: None,
            },
            action: "component.deployed".into(),
            target: trail_model::Target { kind: "component".into(), id: Some(format!("c-{n}")), name: None },
            project: Some("proj-1".into()),
            outcome: trail_model::Outcome::Success,
            reason: None,
            source: None,
            info: None,
        };
        let s = trail_model::StoredEvent::accept(e, "acme", 0, format!("evt-{n}"), 1_700_000_000_000_000);
        canonical::encode(&s)
    }

    #[test]
    fn a_packed_body_unpacks_to_its_canonical_bytes_at_its_seq() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(CREATE).unwrap();
        let sample: Vec<Vec<u8>> = (0..300).map(canonical_bytes).collect();
        let dict = make(&conn, &sample, 0).unwrap();
        assert!(dict.bytes.len() <= DICT_BYTES && dict.bytes.len() > DICT_BYTES / 2);
        for n in [0u64, 1, 299, 5_000] {
            let body = canonical_bytes(n);
            let packed = pack(&dict, &body);
            assert!(packed.len() < body.len() / 2, "{} of {} bytes", packed.len(), body.len());
            let mut expected = body.clone();
            canonical::set_seq(&mut expected, n * 3).unwrap();
            assert_eq!(unpack(&conn, packed, n * 3).unwrap(), expected);
        }
        // Bodies stored before the dictionary are canonical bytes as they are.
        let raw = canonical_bytes(1);
        assert_eq!(unpack(&conn, raw.clone(), 0).unwrap(), raw);
    }

    #[test]
    fn damage_and_missing_dictionaries_are_named_errors() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(CREATE).unwrap();
        let dict = make(&conn, &[canonical_bytes(1)], 0).unwrap();
        let mut packed = pack(&dict, &canonical_bytes(2));
        let last = packed.len() - 1;
        packed.truncate(last);
        assert!(matches!(unpack(&conn, packed, 2), Err(StoreError::Corrupt(m)) if m.contains("seq 2")));
        let other = Dict { id: 99, bytes: dict.bytes.clone() };
        let packed = pack(&other, &canonical_bytes(2));
        assert!(
            matches!(unpack(&conn, packed, 2), Err(StoreError::Corrupt(m)) if m.contains("dictionary 99"))
        );
    }
}
