//! Tampering with a real data directory is found by `trail verify`, with the right seq or reason and
//! exit code 3; an auditor with a trusted checkpoint detects a rewritten history over HTTP.

use std::path::Path;

use rusqlite::{Connection, params};
use serde_json::{Value, json};
use trail_client::Client;

use crate::{Served, create_key, trail};

const EVENTS: u64 = 300;
/// The log's size: Trail's record of `trail admin create-key` (seq 0) and the events.
const LOGGED: u64 = EVENTS + 1;

/// A stopped server's data directory holding 300 events spread over three months, all checkpointed.
async fn populated() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut served = Served::start(dir.path(), &[]);
    let key = Client::new(&served.base).with_token(create_key(dir.path(), "events:write,events:read"));
    let now = trail_model::time::now();
    let events: Vec<Value> = (0..EVENTS as i64)
        .map(|i| {
            json!({"time": trail_model::time::format_rfc3339(now - i * 6 * 3_600_000_000 - 1_000_000),
                   "actor": {"id": format!("user-{}@acme.io", i % 9)}, "action": "component.deployed",
                   "target": {"type": "component", "id": format!("c-{i}")}, "outcome": "success"})
        })
        .collect();
    for chunk in events.chunks(70) {
        key.ingest_batch("default", chunk).await.unwrap();
    }
    wait_for_checkpoint(&key, LOGGED).await;
    assert!(served.signal("-TERM").success());
    dir
}

async fn wait_for_checkpoint(key: &Client, size: u64) -> String {
    for _ in 0..100 {
        let r = key.request(reqwest::Method::GET, "/v1/orgs/default/checkpoint").send().await.unwrap();
        if r.status() == 200 {
            let note = r.text().await.unwrap();
            if note.lines().nth(1).and_then(|l| l.parse::<u64>().ok()).is_some_and(|n| n >= size) {
                return note;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no checkpoint of size {size}");
}

fn verify(dir: &Path) -> (i32, String) {
    let out = trail().args(["verify", "--data-dir"]).arg(dir).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap(),
    )
}

fn db(dir: &Path) -> Connection {
    Connection::open(dir.join("trail.db")).unwrap()
}

/// (table, k) of the row holding `seq` of org `default` (org id 1).
fn locate(c: &Connection, seq: u64) -> (String, i64) {
    let k = (1i64 << 40) | seq as i64;
    let months: Vec<u32> = c
        .prepare("SELECT month FROM partitions")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for m in months {
        let table = format!("ev_{m}");
        let n: i64 =
            c.query_row(&format!("SELECT count(*) FROM {table} WHERE k = ?1"), [k], |r| r.get(0)).unwrap();
        if n == 1 {
            return (table, k);
        }
    }
    panic!("seq {seq} not found");
}

fn body(c: &Connection, seq: u64) -> (String, i64, Vec<u8>, Vec<u8>) {
    let (t, k) = locate(c, seq);
    let (b, l) = c
        .query_row(&format!("SELECT body, leaf FROM {t} WHERE k = ?1"), [k], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    (t, k, b, l)
}

fn varint(bytes: &[u8]) -> (u64, &[u8]) {
    let end = bytes.iter().position(|b| b & 0x80 == 0).unwrap();
    let n = bytes[..=end].iter().rev().fold(0u64, |n, b| (n << 7) | u64::from(b & 0x7f));
    (n, &bytes[end + 1..])
}

/// The canonical bytes of a stored body at `seq`. Bodies stored once the store had a dictionary are
/// packed (0xFE, the dictionary's id and the canonical length as varints, then an LZ4 block of the
/// bytes with seq 0, against `body_dicts.dict`): a forger with the file expands them like this.
fn expand(c: &Connection, stored: &[u8], seq: u64) -> Vec<u8> {
    if stored[0] != 0xFE {
        return stored.to_vec();
    }
    let (id, rest) = varint(&stored[1..]);
    let (len, block) = varint(rest);
    let dict: Vec<u8> =
        c.query_row("SELECT dict FROM body_dicts WHERE id = ?1", [id as i64], |r| r.get(0)).unwrap();
    let mut bytes = lz4_flex::block::decompress_with_dict(block, len as usize, &dict).unwrap();
    trail_model::canonical::set_seq(&mut bytes, seq).unwrap();
    bytes
}

/// Stores canonical bytes the way `like` was stored.
fn repack(c: &Connection, like: &[u8], canonical: &[u8]) -> Vec<u8> {
    if like[0] != 0xFE {
        return canonical.to_vec();
    }
    let (id, _) = varint(&like[1..]);
    let dict: Vec<u8> =
        c.query_row("SELECT dict FROM body_dicts WHERE id = ?1", [id as i64], |r| r.get(0)).unwrap();
    let mut zeroed = canonical.to_vec();
    trail_model::canonical::set_seq(&mut zeroed, 0).unwrap();
    let mut out = vec![0xFE];
    for mut n in [id, canonical.len() as u64] {
        while n >= 0x80 {
            out.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    out.extend(lz4_flex::block::compress_with_dict(&zeroed, &dict));
    out
}

/// Changes one byte of an event's canonical bytes (`user` becomes `User`) and stores it back.
fn alter(c: &Connection, seq: u64, with_leaf: bool) {
    let (t, k, stored, kept) = body(c, seq);
    let mut b = expand(c, &stored, seq);
    let at = b.windows(4).position(|w| w == b"user").unwrap();
    b[at] = b'U';
    let leaf = trail_merkle::leaf_hash(&b);
    let new = repack(c, &stored, &b);
    if with_leaf {
        // The row keeps as much of the hash as it did (its first 8 bytes, or all 32 before schema 14).
        let leaf = &leaf[..kept.len()];
        c.execute(&format!("UPDATE {t} SET body = ?1, leaf = ?2 WHERE k = ?3"), params![new, leaf, k])
            .unwrap();
    } else {
        c.execute(&format!("UPDATE {t} SET body = ?1 WHERE k = ?2"), params![new, k]).unwrap();
    }
}

/// Alters one event and recomputes its leaf hash, as a forger with write access would.
fn rewrite_with_leaf(c: &Connection, seq: u64) {
    alter(c, seq, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_tampering_is_reported() {
    let dir = populated().await;
    let (code, out) = verify(dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("default: ok, {LOGGED} events")), "{out}");
    let months: i64 = db(dir.path()).query_row("SELECT count(*) FROM partitions", [], |r| r.get(0)).unwrap();
    assert!(months >= 3, "the events must span several month partitions, got {months}");

    let case = |name: &str, tamper: &dyn Fn(&Path), expect: &[&str]| {
        let copy = tempfile::tempdir().unwrap();
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let f = f.unwrap();
            if f.file_type().unwrap().is_file() {
                std::fs::copy(f.path(), copy.path().join(f.file_name())).unwrap();
            }
        }
        tamper(copy.path());
        let (code, out) = verify(copy.path());
        assert_eq!(code, 3, "{name}: {out}");
        for e in expect {
            assert!(out.contains(e), "{name}: expected {e:?} in {out}");
        }
    };

    case("one byte changed", &|d| alter(&db(d), 123, false), &["FAILED at seq 123", "altered"]);

    case(
        "one byte changed in an event stored before the dictionary",
        &|d| alter(&db(d), 12, false),
        &["FAILED at seq 12", "altered"],
    );

    case(
        "a packed body cut short",
        &|d| {
            let c = db(d);
            let (t, k, mut b, _) = body(&c, 200);
            assert_eq!(b[0], 0xFE, "seq 200 was stored packed");
            b.truncate(b.len() - 5);
            c.execute(&format!("UPDATE {t} SET body = ?1 WHERE k = ?2"), params![b, k]).unwrap();
        },
        &["FAILED at seq 200", "do not decode"],
    );

    case(
        "an event deleted",
        &|d| {
            let c = db(d);
            let (t, k) = locate(&c, 50);
            c.execute(&format!("DELETE FROM {t} WHERE k = ?1"), [k]).unwrap();
        },
        &["FAILED at seq 50", "missing"],
    );

    case(
        "two events swapped",
        &|d| {
            let c = db(d);
            let (t1, k1, b1, l1) = body(&c, 10);
            let (t2, k2, b2, l2) = body(&c, 20);
            c.execute(&format!("UPDATE {t1} SET body = ?1, leaf = ?2 WHERE k = ?3"), params![b2, l2, k1])
                .unwrap();
            c.execute(&format!("UPDATE {t2} SET body = ?1, leaf = ?2 WHERE k = ?3"), params![b1, l1, k2])
                .unwrap();
        },
        &["FAILED at seq 10", "swapped"],
    );

    case(
        "the log truncated",
        &|d| {
            let c = db(d);
            for seq in 250..LOGGED {
                let (t, k) = locate(&c, seq);
                c.execute(&format!("DELETE FROM {t} WHERE k = ?1"), [k]).unwrap();
            }
            c.execute("UPDATE orgs SET tree_size = 250 WHERE slug = 'default'", []).unwrap();
        },
        &["FAILED at seq 250", "removed"],
    );

    case(
        "the signing key replaced",
        &|d| {
            std::fs::write(d.join("log.key"), format!("{}\n", "ab".repeat(32))).unwrap();
        },
        &["FAILED", "does not verify with the log key"],
    );

    case(
        "an event and its leaf hash rewritten together",
        &|d| {
            let c = db(d);
            rewrite_with_leaf(&c, 77);
        },
        // Found by the lowest stored node above it: level 6, 64 events.
        &["FAILED at seq 64", "over seqs 64..127", "does not match the events"],
    );

    // A forger who also rewrites the tree nodes is still caught by the signed checkpoint.
    case(
        "an event, its leaf and every tree node rewritten",
        &|d| {
            let c = db(d);
            rewrite_with_leaf(&c, 77);
            let leaves: Vec<trail_merkle::Hash> =
                (0..LOGGED).map(|s| trail_merkle::leaf_hash(&expand(&c, &body(&c, s).2, s))).collect();
            let mut f = trail_merkle::Frontier::new();
            c.execute("DELETE FROM tree_nodes", []).unwrap();
            for l in leaves {
                for n in f.append(l).into_iter().filter(|n| n.level >= 6) {
                    c.execute(
                        "INSERT INTO tree_nodes VALUES (1, ?1, ?2, ?3)",
                        params![n.level, n.index as i64, &n.hash[..]],
                    )
                    .unwrap();
                }
            }
        },
        &["FAILED at seq 0", "do not hash to the signed checkpoint"],
    );

    // Pinning the key catches a wholesale re-signing with a new key.
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("log.key"), copy.path().join("orig.key")).unwrap();
    let pinned = {
        let seed = std::fs::read_to_string(dir.path().join("log.key")).unwrap();
        let bytes: Vec<u8> =
            (0..32).map(|i| u8::from_str_radix(&seed[2 * i..2 * i + 2], 16).unwrap()).collect();
        trail_merkle::Signer::from_secret_bytes("trail.localhost", &bytes.try_into().unwrap())
            .unwrap()
            .verifier_key()
    };
    let out = trail().args(["verify", "--key", &pinned, "--data-dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let other = trail_merkle::Signer::from_secret_bytes("trail.localhost", &[9; 32]).unwrap().verifier_key();
    let out = trail().args(["verify", "--key", &other, "--data-dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "a pinned key that did not sign the log fails");
    let out = trail().args(["verify", "--data-dir"]).arg(copy.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a directory without a database cannot be verified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_with_a_trusted_checkpoint_detects_a_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &[]);
    let secret = create_key(dir.path(), "events:write,events:read");
    let key = Client::new(&served.base).with_token(&secret);
    let ev = |i: usize| json!({"actor": {"id": format!("u{i}")}, "action": "a.b", "target": {"type": "t"}, "outcome": "success"});
    key.ingest_batch("default", &(0..20).map(ev).collect::<Vec<_>>()).await.unwrap();
    wait_for_checkpoint(&key, 21).await;
    let trusted = dir.path().join("trusted.checkpoint");
    let audit = || {
        trail()
            .args(["verify", "--server", &served.base, "--org", "default", "--trusted"])
            .arg(&trusted)
            .env("TRAIL_TOKEN", &secret)
            .output()
            .unwrap()
    };
    let out = audit();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("saved as the first trusted checkpoint"));
    key.ingest_batch("default", &(20..45).map(ev).collect::<Vec<_>>()).await.unwrap();
    wait_for_checkpoint(&key, 46).await;
    let out = audit();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("consistent with the trusted one of 21 events"));
    assert!(
        std::fs::read_to_string(&trusted).unwrap().contains("\n46\n"),
        "the new checkpoint is now trusted"
    );

    // The log operator rewrites history: a checkpoint of 20 events with another root, signed with the
    // real key, is what the auditor had trusted. The server's history is not an extension of it.
    let seed = std::fs::read_to_string(dir.path().join("log.key")).unwrap();
    let bytes: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&seed[2 * i..2 * i + 2], 16).unwrap()).collect();
    let signer =
        trail_merkle::Signer::from_secret_bytes("trail.localhost", &bytes.try_into().unwrap()).unwrap();
    let other_history =
        trail_merkle::Checkpoint { origin: "trail.localhost/orgs/default".into(), size: 20, root: [3; 32] };
    std::fs::write(&trusted, signer.sign(&other_history).unwrap()).unwrap();
    let out = audit();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("rewritten"));

    // A trusted checkpoint from a forger's key is refused outright.
    let forger = trail_merkle::Signer::from_secret_bytes("trail.localhost", &[5; 32]).unwrap();
    std::fs::write(&trusted, forger.sign(&other_history).unwrap()).unwrap();
    let out = audit();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not verify"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
