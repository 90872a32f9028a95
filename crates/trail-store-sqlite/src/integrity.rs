//! Merkle nodes, roots, proofs and checkpoints over the embedded schema.

use rusqlite::{Connection, OptionalExtension, params};
use trail_merkle::{Hash, NodeSource, ProofError, node_hash};
use trail_store::{Result, StoreError, StoredCheckpoint};

use crate::schema::{MIN_STORED_LEVEL, events_table, rowid};
use crate::sql_error;

/// Complete subtree hashes of one org's log, read from `tree_nodes` and the events' `leaf` columns.
#[derive(Debug)]
pub struct Nodes<'c> {
    pub conn: &'c Connection,
    pub org_id: i64,
    /// Month partitions to look for a leaf in, newest first.
    pub months: Vec<u32>,
}

impl<'c> Nodes<'c> {
    pub fn new(conn: &'c Connection, org_id: i64) -> Result<Self> {
        let mut st =
            conn.prepare_cached("SELECT month FROM partitions ORDER BY month DESC").map_err(sql_error)?;
        let months = st
            .query_map([], |r| r.get(0))
            .map_err(sql_error)?
            .collect::<rusqlite::Result<_>>()
            .map_err(sql_error)?;
        Ok(Self { conn, org_id, months })
    }

    /// The leaf hash of `seq`, from whichever month partition holds the event.
    pub fn leaf(&self, seq: u64) -> Result<Hash> {
        let k = rowid(self.org_id, seq);
        for m in &self.months {
            let found: Option<Vec<u8>> = self
                .conn
                .prepare_cached(&format!("SELECT leaf FROM {} WHERE k = ?1", events_table(*m)))
                .and_then(|mut st| st.query_row([k], |r| r.get(0)).optional())
                .map_err(sql_error)?;
            if let Some(h) = found {
                return h
                    .try_into()
                    .map_err(|_| StoreError::Corrupt(format!("leaf hash of seq {seq} is not 32 bytes")));
            }
        }
        // Archived by retention: the event is gone, its leaf hash stays.
        let pruned: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT leaf FROM pruned_leaves WHERE k = ?1")
            .and_then(|mut st| st.query_row([k], |r| r.get(0)).optional())
            .map_err(sql_error)?;
        match pruned {
            Some(h) => h
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("leaf hash of seq {seq} is not 32 bytes"))),
            None => Err(StoreError::Corrupt(format!("the event at seq {seq} is missing"))),
        }
    }
}

impl NodeSource for Nodes<'_> {
    type Error = StoreError;

    fn node(&self, level: u8, index: u64) -> Result<Hash> {
        match level {
            0 => self.leaf(index),
            1 => Ok(node_hash(&self.leaf(2 * index)?, &self.leaf(2 * index + 1)?)),
            _ => {
                let h: Option<Vec<u8>> = self
                    .conn
                    .prepare_cached(
                        "SELECT hash FROM tree_nodes WHERE org_id = ?1 AND level = ?2 AND idx = ?3",
                    )
                    .and_then(|mut st| {
                        st.query_row(params![self.org_id, level, index as i64], |r| r.get(0)).optional()
                    })
                    .map_err(sql_error)?;
                let h = h.ok_or_else(|| {
                    StoreError::Corrupt(format!("Merkle node ({level}, {index}) is missing"))
                })?;
                h.try_into().map_err(|_| {
                    StoreError::Corrupt(format!("Merkle node ({level}, {index}) is not 32 bytes"))
                })
            }
        }
    }
}

const _: () = assert!(MIN_STORED_LEVEL == 2, "Nodes::node derives exactly levels 0 and 1");

fn proof_error(e: ProofError<StoreError>) -> StoreError {
    match e {
        ProofError::Source(e) => e,
        other => StoreError::OutOfRange(other.to_string()),
    }
}

fn check_size(size: u64, tree_size: u64) -> Result<()> {
    if size > tree_size {
        return Err(StoreError::OutOfRange(format!(
            "tree size {size} is larger than the log ({tree_size} events)"
        )));
    }
    Ok(())
}

pub fn root(nodes: &Nodes<'_>, size: u64, tree_size: u64) -> Result<Hash> {
    check_size(size, tree_size)?;
    trail_merkle::range_root(0, size, nodes).map_err(proof_error)
}

pub fn inclusion(nodes: &Nodes<'_>, seq: u64, size: u64, tree_size: u64) -> Result<Vec<Hash>> {
    check_size(size, tree_size)?;
    trail_merkle::inclusion_proof(seq, size, nodes).map_err(proof_error)
}

pub fn consistency(nodes: &Nodes<'_>, from: u64, to: u64, tree_size: u64) -> Result<Vec<Hash>> {
    check_size(to, tree_size)?;
    trail_merkle::consistency_proof(from, to, nodes).map_err(proof_error)
}

fn checkpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, Vec<u8>, String, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_checkpoint((size, root, note, created_at): (i64, Vec<u8>, String, i64)) -> Result<StoredCheckpoint> {
    let root = root.try_into().map_err(|_| StoreError::Corrupt("checkpoint root is not 32 bytes".into()))?;
    Ok(StoredCheckpoint { size: size as u64, root, note, created_at })
}

pub fn latest_checkpoint(conn: &Connection, org_id: i64) -> Result<Option<StoredCheckpoint>> {
    conn.prepare_cached(
        "SELECT size, root, note, created_at FROM checkpoints WHERE org_id = ?1 ORDER BY size DESC LIMIT 1",
    )
    .and_then(|mut st| st.query_row([org_id], checkpoint_row).optional())
    .map_err(sql_error)?
    .map(to_checkpoint)
    .transpose()
}

pub fn checkpoints(conn: &Connection, org_id: i64) -> Result<Vec<StoredCheckpoint>> {
    let mut st = conn
        .prepare_cached(
            "SELECT size, root, note, created_at FROM checkpoints WHERE org_id = ?1 ORDER BY size",
        )
        .map_err(sql_error)?;
    let rows = st.query_map([org_id], checkpoint_row).map_err(sql_error)?;
    rows.map(|r| r.map_err(sql_error).and_then(to_checkpoint)).collect()
}

/// Stores a checkpoint. The same size with the same root is a no-op (another node may have signed it
/// first); the same size with another root is refused: there are never two inconsistent checkpoints.
pub fn add_checkpoint(conn: &Connection, org_id: i64, cp: &StoredCheckpoint) -> Result<()> {
    let existing: Option<Vec<u8>> = conn
        .prepare_cached("SELECT root FROM checkpoints WHERE org_id = ?1 AND size = ?2")
        .and_then(|mut st| st.query_row(params![org_id, cp.size as i64], |r| r.get(0)).optional())
        .map_err(sql_error)?;
    match existing {
        Some(root) if root == cp.root => Ok(()),
        Some(_) => {
            Err(StoreError::Conflict(format!("a checkpoint for size {} with another root exists", cp.size)))
        }
        None => {
            conn.execute(
                "INSERT INTO checkpoints(org_id, size, root, note, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![org_id, cp.size as i64, &cp.root[..], cp.note, cp.created_at],
            )
            .map_err(sql_error)?;
            Ok(())
        }
    }
}

/// Orgs whose log has grown past their latest checkpoint, with the current size.
pub fn unsigned_heads(conn: &Connection) -> Result<Vec<(String, u64)>> {
    let mut st = conn
        .prepare_cached(
            "SELECT o.slug, o.tree_size FROM orgs o
             WHERE o.tree_size > coalesce((SELECT max(size) FROM checkpoints c WHERE c.org_id = o.id), 0)",
        )
        .map_err(sql_error)?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))).map_err(sql_error)?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql_error)
}
