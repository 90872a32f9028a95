//! Merkle nodes, roots, proofs and checkpoints over the embedded schema.

use std::cell::RefCell;

use rusqlite::{Connection, OptionalExtension, params};
use trail_merkle::{Hash, NodeSource, ProofError, leaf_hash};
use trail_store::{Result, StoreError, StoredCheckpoint};

use crate::schema::{MIN_STORED_LEVEL, events_table, rowid, seq_of};
use crate::sql_error;

/// Complete subtree hashes of one org's log: levels [`MIN_STORED_LEVEL`] and up from `tree_nodes`,
/// lower ones hashed from the leaves of their block of `2^MIN_STORED_LEVEL` events. A proof asks for
/// one node per level below the stored ones, all in the block of the event it proves, so the last
/// block read is kept.
#[derive(Debug)]
pub struct Nodes<'c> {
    pub conn: &'c Connection,
    pub org_id: i64,
    /// Month partitions to look for a leaf in, newest first.
    pub months: Vec<u32>,
    block: RefCell<Option<Block>>,
}

/// The leaf hashes of one block: its first seq, and each seq's leaf (`None` where nothing is stored).
#[derive(Debug)]
struct Block {
    first: u64,
    leaves: Vec<Option<Hash>>,
}

const BLOCK: u64 = 1 << MIN_STORED_LEVEL;

impl<'c> Nodes<'c> {
    pub fn new(conn: &'c Connection, org_id: i64) -> Result<Self> {
        let mut st =
            conn.prepare_cached("SELECT month FROM partitions ORDER BY month DESC").map_err(sql_error)?;
        let months = st
            .query_map([], |r| r.get(0))
            .map_err(sql_error)?
            .collect::<rusqlite::Result<_>>()
            .map_err(sql_error)?;
        Ok(Self { conn, org_id, months, block: RefCell::new(None) })
    }

    /// The hash of the complete subtree of `2^level` leaves at `index`, for a level below the stored
    /// ones: from the leaves of its block.
    fn hashed(&self, level: u8, index: u64) -> Result<Hash> {
        let from = index << level;
        let first = from & !(BLOCK - 1);
        let mut cached = self.block.borrow_mut();
        if cached.as_ref().is_none_or(|b| b.first != first) {
            *cached = Some(Block { first, leaves: self.read_block(first)? });
        }
        let block = cached.as_ref().expect("just read");
        let start = (from - first) as usize;
        let leaves = block.leaves[start..start + (1 << level)]
            .iter()
            .enumerate()
            .map(|(i, leaf)| {
                leaf.ok_or_else(|| {
                    StoreError::Corrupt(format!("the event at seq {} is missing", from + i as u64))
                })
            })
            .collect::<Result<Vec<Hash>>>()?;
        Ok(trail_merkle::root(&leaves))
    }

    /// The leaf hashes of the block of events from `first`, from whichever month partitions hold them
    /// (or `pruned_leaves`, for events retention archived). A row that keeps its whole leaf hash
    /// (written before schema 14) gives it; any other is hashed from its canonical bytes.
    fn read_block(&self, first: u64) -> Result<Vec<Option<Hash>>> {
        let mut leaves = vec![None; BLOCK as usize];
        let range = [rowid(self.org_id, first), rowid(self.org_id, first + BLOCK - 1)];
        let tables =
            self.months.iter().map(|m| (events_table(*m), "body")).chain([("pruned_leaves".into(), "x''")]);
        for (table, body) in tables {
            let mut st = self
                .conn
                .prepare_cached(&format!("SELECT k, leaf, {body} FROM {table} WHERE k BETWEEN ?1 AND ?2"))
                .map_err(sql_error)?;
            let mut rows = st.query(range).map_err(sql_error)?;
            while let Some(r) = rows.next().map_err(sql_error)? {
                let seq = seq_of(r.get(0).map_err(sql_error)?);
                let stored = r.get_ref(1).and_then(|v| Ok(v.as_blob()?)).map_err(sql_error)?;
                let leaf = match Hash::try_from(stored) {
                    Ok(whole) => whole,
                    Err(_) => leaf_hash(&crate::body::unpack(self.conn, r.get(2).map_err(sql_error)?, seq)?),
                };
                leaves[(seq - first) as usize] = Some(leaf);
            }
        }
        Ok(leaves)
    }
}

impl NodeSource for Nodes<'_> {
    type Error = StoreError;

    fn node(&self, level: u8, index: u64) -> Result<Hash> {
        if level < MIN_STORED_LEVEL {
            return self.hashed(level, index);
        }
        let h: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT hash FROM tree_nodes WHERE org_id = ?1 AND level = ?2 AND idx = ?3")
            .and_then(|mut st| {
                st.query_row(params![self.org_id, level, index as i64], |r| r.get(0)).optional()
            })
            .map_err(sql_error)?;
        let h = h.ok_or_else(|| StoreError::Corrupt(format!("Merkle node ({level}, {index}) is missing")))?;
        h.try_into()
            .map_err(|_| StoreError::Corrupt(format!("Merkle node ({level}, {index}) is not 32 bytes")))
    }
}

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
