//! Offline verification of a data directory (`trail verify --data-dir`): recomputes every leaf from
//! the stored bytes, every stored Merkle node and every checkpoint's root, and checks every
//! checkpoint's signature. It opens the database read-only and never changes it.
//!
//! A failed verification is a result naming the first bad position, never a panic or an IO error:
//! IO errors mean "could not verify", findings mean "verified, and this is wrong".

use std::collections::{BTreeMap, BinaryHeap};
use std::path::Path;

use rusqlite::{Connection, OpenFlags, params};
use trail_merkle::checkpoint::open;
use trail_merkle::{Frontier, Hash, Verifier, leaf_hash};
use trail_model::canonical;
use trail_store::{Result, StoreError};

use crate::schema::{MIN_STORED_LEVEL, SEQ_BITS, events_table};
use crate::{DB_FILE, sql_error};

/// What was wrong, at the first bad position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The first `seq` that is missing, altered or out of place, when one can be named.
    pub seq: Option<u64>,
    pub reason: String,
}

/// The outcome for one organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgReport {
    pub org: String,
    /// Events checked (up to the first problem).
    pub events: u64,
    /// Checkpoints whose root and signature were checked.
    pub checkpoints: usize,
    pub problem: Option<Problem>,
}

/// Progress: (org, events done, events in the org).
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, u64);

/// Verifies every org (or one) of the data directory against the log's public key.
pub fn verify_data_dir(
    dir: &Path,
    org: Option<&str>,
    key: &Verifier,
    progress: Progress<'_>,
) -> Result<Vec<OrgReport>> {
    let path = dir.join(DB_FILE);
    if !path.exists() {
        return Err(StoreError::NotFound(format!("Trail database {}", path.display())));
    }
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sql_error)?;
    conn.pragma_update(None, "cache_size", -64 * 1024)
        .map_err(sql_error)?;
    let mut orgs: Vec<(i64, String, u64)> = {
        let mut st = conn
            .prepare("SELECT id, slug, tree_size FROM orgs ORDER BY slug")
            .map_err(sql_error)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64)))
            .map_err(sql_error)?;
        rows.collect::<rusqlite::Result<_>>().map_err(sql_error)?
    };
    if let Some(only) = org {
        orgs.retain(|(_, slug, _)| slug == only);
        if orgs.is_empty() {
            return Err(StoreError::NotFound(format!("organization {only}")));
        }
    }
    let months: Vec<u32> = {
        let mut st = conn
            .prepare("SELECT month FROM partitions ORDER BY month")
            .map_err(sql_error)?;
        let rows = st.query_map([], |r| r.get(0)).map_err(sql_error)?;
        rows.collect::<rusqlite::Result<_>>().map_err(sql_error)?
    };
    orgs.into_iter()
        .map(|(id, slug, size)| verify_org(&conn, id, &slug, size, &months, key, progress))
        .collect()
}

/// One row of an event partition, in `seq` order within its partition.
struct Row {
    seq: u64,
    body: Vec<u8>,
    leaf: Vec<u8>,
    source: usize,
}

impl PartialEq for Row {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}
impl Eq for Row {}
impl PartialOrd for Row {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Row {
    // Reversed: BinaryHeap is a max-heap and we want the smallest seq first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.seq.cmp(&self.seq)
    }
}

/// Stored Merkle nodes are compared in batches per level, so the check reads `tree_nodes` in index
/// order instead of one point lookup per node.
struct NodeCheck {
    pending: BTreeMap<u8, Vec<(u64, Hash)>>,
    count: usize,
}

impl NodeCheck {
    const BATCH: usize = 8192;

    fn flush(&mut self, conn: &Connection, org_id: i64) -> Result<Option<Problem>> {
        let mut st = conn
            .prepare_cached("SELECT idx, hash FROM tree_nodes WHERE org_id = ?1 AND level = ?2 AND idx BETWEEN ?3 AND ?4 ORDER BY idx")
            .map_err(sql_error)?;
        let mut first: Option<Problem> = None;
        for (level, nodes) in std::mem::take(&mut self.pending) {
            let (lo, hi) = (nodes[0].0, nodes[nodes.len() - 1].0);
            let stored: BTreeMap<u64, Vec<u8>> = st
                .query_map(params![org_id, level, lo as i64, hi as i64], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
                })
                .map_err(sql_error)?
                .collect::<rusqlite::Result<_>>()
                .map_err(sql_error)?;
            if first.is_some() {
                break;
            }
            for (idx, hash) in nodes {
                if stored.get(&idx).map(Vec::as_slice) != Some(&hash[..]) {
                    let seq = idx << level;
                    let p = Problem {
                        seq: Some(seq),
                        reason: format!(
                            "the stored Merkle node (level {level}, index {idx}) over seqs {seq}..{} does not match the events",
                            ((idx + 1) << level) - 1
                        ),
                    };
                    // Levels ascend: the lowest mismatching node is the most precise position, and
                    // every node above it mismatches too.
                    first = Some(p);
                    break;
                }
            }
        }
        self.count = 0;
        Ok(first)
    }
}

fn verify_org(
    conn: &Connection,
    org_id: i64,
    slug: &str,
    tree_size: u64,
    months: &[u32],
    key: &Verifier,
    progress: Progress<'_>,
) -> Result<OrgReport> {
    let mut report = OrgReport {
        org: slug.to_string(),
        events: 0,
        checkpoints: 0,
        problem: None,
    };
    let checkpoints: Vec<(u64, Vec<u8>, String)> = {
        let mut st = conn
            .prepare("SELECT size, root, note FROM checkpoints WHERE org_id = ?1 ORDER BY size")
            .map_err(sql_error)?;
        let rows = st
            .query_map([org_id], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
            })
            .map_err(sql_error)?;
        rows.collect::<rusqlite::Result<_>>().map_err(sql_error)?
    };
    let fail = |mut report: OrgReport, seq: Option<u64>, reason: String| {
        report.problem = Some(Problem { seq, reason });
        Ok(report)
    };
    if let Some((size, _, _)) = checkpoints.last()
        && *size > tree_size
    {
        return fail(
            report,
            Some(tree_size),
            format!("a checkpoint covers {size} events but the log holds {tree_size}: events were removed"),
        );
    }

    // One cursor per month partition, merged by seq.
    let (lo, hi) = (org_id << SEQ_BITS, (org_id + 1) << SEQ_BITS);
    let mut statements = Vec::with_capacity(months.len());
    for m in months {
        statements.push(
            conn.prepare(&format!(
                "SELECT k, body, leaf FROM {} WHERE k >= ?1 AND k < ?2 ORDER BY k",
                events_table(*m)
            ))
            .map_err(sql_error)?,
        );
    }
    let mut cursors = Vec::with_capacity(statements.len());
    for st in &mut statements {
        cursors.push(st.query(params![lo, hi]).map_err(sql_error)?);
    }
    let mut heap = BinaryHeap::with_capacity(cursors.len());
    let next = |cursors: &mut Vec<rusqlite::Rows<'_>>, i: usize| -> Result<Option<Row>> {
        match cursors[i].next().map_err(sql_error)? {
            Some(r) => Ok(Some(Row {
                seq: (r.get::<_, i64>(0).map_err(sql_error)? - lo) as u64,
                body: r.get(1).map_err(sql_error)?,
                leaf: r.get(2).map_err(sql_error)?,
                source: i,
            })),
            None => Ok(None),
        }
    };
    for i in 0..cursors.len() {
        if let Some(r) = next(&mut cursors, i)? {
            heap.push(r);
        }
    }

    let mut frontier = Frontier::new();
    let mut nodes = NodeCheck {
        pending: BTreeMap::new(),
        count: 0,
    };
    let checkpoint_sizes: Vec<u64> = checkpoints.iter().map(|c| c.0).collect();
    let mut cps = checkpoints.iter().peekable();
    let mut last_good_checkpoint = 0u64;
    let mut check_checkpoints = |frontier: &Frontier, report: &mut OrgReport| -> Option<Problem> {
        while let Some((size, root, note)) = cps.next_if(|(size, _, _)| *size == frontier.size()) {
            report.checkpoints += 1;
            let signed = match open(note, key) {
                Ok(c) => c,
                Err(e) => {
                    return Some(Problem {
                        seq: None,
                        reason: format!(
                            "the checkpoint at size {size} does not verify with the log key: {e}"
                        ),
                    });
                }
            };
            let expected_origin = format!("/orgs/{slug}");
            if signed.size != *size
                || signed.root[..] != root[..]
                || !signed.origin.ends_with(&expected_origin)
            {
                return Some(Problem {
                    seq: None,
                    reason: format!("the stored checkpoint at size {size} does not match its signed note"),
                });
            }
            if frontier.root() != signed.root {
                return Some(Problem {
                    seq: Some(last_good_checkpoint),
                    reason: format!(
                        "the events do not hash to the signed checkpoint at size {size}: an event in seqs {last_good_checkpoint}..{} was altered, removed or reordered",
                        size - 1
                    ),
                });
            }
            last_good_checkpoint = *size;
        }
        None
    };
    if let Some(p) = check_checkpoints(&frontier, &mut report) {
        return fail(report, p.seq, p.reason);
    }

    let mut expected = 0u64;
    while let Some(row) = heap.pop() {
        if let Some(r) = next(&mut cursors, row.source)? {
            heap.push(r);
        }
        if row.seq > expected {
            return fail(report, Some(expected), format!("seq {expected} is missing"));
        }
        if row.seq < expected {
            return fail(report, Some(row.seq), format!("seq {} is stored twice", row.seq));
        }
        if row.seq >= tree_size {
            return fail(
                report,
                Some(row.seq),
                format!("seq {} lies beyond the log head ({tree_size} events)", row.seq),
            );
        }
        let event = match canonical::decode(&row.body) {
            Ok(e) => e,
            Err(e) => {
                return fail(
                    report,
                    Some(row.seq),
                    format!("seq {}: the stored bytes do not decode ({e})", row.seq),
                );
            }
        };
        if event.org != slug || event.seq != row.seq {
            return fail(
                report,
                Some(row.seq),
                format!(
                    "seq {}: the stored event says org {} seq {}: events were moved or swapped",
                    row.seq, event.org, event.seq
                ),
            );
        }
        let leaf = leaf_hash(&row.body);
        if leaf[..] != row.leaf[..] {
            return fail(
                report,
                Some(row.seq),
                format!(
                    "seq {}: the stored bytes do not match the leaf hash recorded at ingest: the event was altered",
                    row.seq
                ),
            );
        }
        for n in frontier.append(leaf) {
            if n.level >= MIN_STORED_LEVEL {
                nodes.pending.entry(n.level).or_default().push((n.index, n.hash));
                nodes.count += 1;
            }
        }
        // Compare stored nodes before a checkpoint's root, so a finer position is reported first.
        let at_checkpoint = checkpoint_sizes.binary_search(&frontier.size()).is_ok();
        if (nodes.count >= NodeCheck::BATCH || (at_checkpoint && nodes.count > 0))
            && let Some(p) = nodes.flush(conn, org_id)?
        {
            return fail(report, p.seq, p.reason);
        }
        if let Some(p) = check_checkpoints(&frontier, &mut report) {
            return fail(report, p.seq, p.reason);
        }
        expected += 1;
        report.events = expected;
        if expected.is_multiple_of(65_536) {
            progress(slug, expected, tree_size);
        }
    }
    if let Some(p) = nodes.flush(conn, org_id)? {
        return fail(report, p.seq, p.reason);
    }
    if expected < tree_size {
        return fail(
            report,
            Some(expected),
            format!(
                "seq {expected} is missing: the log head says {tree_size} events but only {expected} are stored"
            ),
        );
    }
    progress(slug, expected, tree_size);
    Ok(report)
}
