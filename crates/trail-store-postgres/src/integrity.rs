//! Merkle nodes, roots, proofs and checkpoints over the PostgreSQL schema.
//!
//! `trail_merkle` asks a synchronous [`NodeSource`] for nodes, and which nodes a root, proof or
//! frontier needs depends only on sizes and indexes, never on hash values. So each operation runs
//! twice: once against a [`Recorder`] that notes the requested nodes, then, after those are fetched in
//! two queries (stored nodes of level 2 and up, and the leaves for levels 0 and 1), against the
//! fetched map. O(log n) rows and two round trips per proof; never a whole tree.
//! Checkpoints are never replaced: one root per size, a different one is a `Conflict`.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use deadpool_postgres::GenericClient;
use trail_merkle::{Frontier, Hash, NodeSource, ProofError, node_hash};
use trail_store::{Result, StoreError, StoredCheckpoint};

use crate::{hash32, pg_error, signed, unsigned};

/// The lowest Merkle level stored in `tree_nodes`; lower levels are derived from leaf hashes.
pub const MIN_STORED_LEVEL: u8 = 2;

/// Notes which nodes an operation asks for, answering each with a placeholder.
#[derive(Debug, Default)]
struct Recorder {
    asked: RefCell<BTreeSet<(u8, u64)>>,
}

impl NodeSource for Recorder {
    type Error = StoreError;

    fn node(&self, level: u8, index: u64) -> Result<Hash> {
        self.asked.borrow_mut().insert((level, index));
        Ok([0; 32])
    }
}

/// Nodes fetched from the database.
#[derive(Debug, Default)]
struct Fetched {
    nodes: HashMap<(u8, u64), Hash>,
}

impl NodeSource for Fetched {
    type Error = StoreError;

    fn node(&self, level: u8, index: u64) -> Result<Hash> {
        self.nodes.get(&(level, index)).copied().ok_or_else(|| match level {
            0 => StoreError::Corrupt(format!("the leaf hash of seq {index} is missing")),
            _ => StoreError::Corrupt(format!("Merkle node ({level}, {index}) is missing")),
        })
    }
}

/// Runs `op` over the org's stored nodes, fetching exactly the nodes it needs.
async fn with_nodes<C, T>(
    client: &C,
    org: i64,
    op: impl Fn(&dyn NodeSource<Error = StoreError>) -> Result<T, ProofError<StoreError>>,
) -> Result<T>
where
    C: GenericClient,
{
    let recorder = Recorder::default();
    op(&recorder).map_err(proof_error)?;
    let asked = recorder.asked.into_inner();
    let fetched = fetch(client, org, &asked).await?;
    op(&fetched).map_err(proof_error)
}

/// Fetches the given nodes of an org's tree: levels 2+ from `tree_nodes`, levels 0 and 1 from the leaf
/// hashes of hot events or, for events retention removed, `pruned_leaves`.
async fn fetch<C: GenericClient>(client: &C, org: i64, asked: &BTreeSet<(u8, u64)>) -> Result<Fetched> {
    let mut leaves: BTreeSet<u64> = BTreeSet::new();
    let (mut levels, mut indexes): (Vec<i16>, Vec<i64>) = (Vec::new(), Vec::new());
    for &(level, index) in asked {
        match level {
            0 => {
                leaves.insert(index);
            }
            1 => {
                leaves.insert(2 * index);
                leaves.insert(2 * index + 1);
            }
            _ => {
                levels.push(i16::from(level));
                indexes.push(signed(index, "node index")?);
            }
        }
    }
    let mut out = Fetched::default();
    if !levels.is_empty() {
        let st = client
            .prepare_cached(
                "SELECT n.level, n.idx, n.hash FROM tree_nodes n
                 JOIN unnest($2::int2[], $3::int8[]) AS w(level, idx) ON n.level = w.level AND n.idx = w.idx
                 WHERE n.org = $1",
            )
            .await
            .map_err(pg_error)?;
        for r in client.query(&st, &[&org, &levels, &indexes]).await.map_err(pg_error)? {
            let level: i16 = r.try_get(0).map_err(pg_error)?;
            let idx: i64 = r.try_get(1).map_err(pg_error)?;
            let level =
                u8::try_from(level).map_err(|_| StoreError::Corrupt(format!("node level {level}")))?;
            let hash = hash32(r.try_get(2).map_err(pg_error)?, "a Merkle node")?;
            out.nodes.insert((level, unsigned(idx, "node index")?), hash);
        }
    }
    if !leaves.is_empty() {
        let seqs: Vec<i64> = leaves.iter().map(|s| signed(*s, "seq")).collect::<Result<_>>()?;
        let found = leaf_hashes(client, org, &seqs).await?;
        for &(level, index) in asked.iter().filter(|(l, _)| *l < MIN_STORED_LEVEL) {
            let leaf = |seq: u64| {
                found
                    .get(&seq)
                    .copied()
                    .ok_or_else(|| StoreError::Corrupt(format!("the event at seq {seq} is missing")))
            };
            let hash = match level {
                0 => leaf(index)?,
                _ => node_hash(&leaf(2 * index)?, &leaf(2 * index + 1)?),
            };
            out.nodes.insert((level, index), hash);
        }
    }
    Ok(out)
}

/// Leaf hashes of the given seqs, from hot events or kept by retention.
async fn leaf_hashes<C: GenericClient>(client: &C, org: i64, seqs: &[i64]) -> Result<HashMap<u64, Hash>> {
    let st = client
        .prepare_cached(
            "SELECT seq, leaf FROM events WHERE org = $1 AND seq = ANY($2)
             UNION ALL SELECT seq, leaf FROM pruned_leaves WHERE org = $1 AND seq = ANY($2)",
        )
        .await
        .map_err(pg_error)?;
    let mut out = HashMap::with_capacity(seqs.len());
    for r in client.query(&st, &[&org, &seqs]).await.map_err(pg_error)? {
        let seq = unsigned(r.try_get(0).map_err(pg_error)?, "seq")?;
        out.insert(seq, hash32(r.try_get(1).map_err(pg_error)?, "a leaf hash")?);
    }
    Ok(out)
}

/// The frontier of the org's tree at `size`, from at most 64 stored nodes. Called inside the append
/// transaction, with the log head locked, so the nodes cannot change meanwhile.
pub(crate) async fn load_frontier<C: GenericClient>(client: &C, org: i64, size: u64) -> Result<Frontier> {
    with_nodes(client, org, |src| Frontier::from_source(size, src).map_err(ProofError::Source)).await
}

fn proof_error(e: ProofError<StoreError>) -> StoreError {
    match e {
        ProofError::Source(e) => e,
        other => StoreError::OutOfRange(other.to_string()),
    }
}

async fn check_size<C: GenericClient>(client: &C, org: i64, size: u64) -> Result<()> {
    let tree_size = crate::read::tree_size(client, org).await?;
    if size > tree_size {
        return Err(StoreError::OutOfRange(format!(
            "tree size {size} is larger than the log ({tree_size} events)"
        )));
    }
    Ok(())
}

pub(crate) async fn root<C: GenericClient>(client: &C, org: i64, size: u64) -> Result<Hash> {
    check_size(client, org, size).await?;
    with_nodes(client, org, |src| trail_merkle::range_root(0, size, src)).await
}

pub(crate) async fn inclusion<C: GenericClient>(
    client: &C,
    org: i64,
    seq: u64,
    size: u64,
) -> Result<Vec<Hash>> {
    check_size(client, org, size).await?;
    with_nodes(client, org, |src| trail_merkle::inclusion_proof(seq, size, src)).await
}

pub(crate) async fn consistency<C: GenericClient>(
    client: &C,
    org: i64,
    from: u64,
    to: u64,
) -> Result<Vec<Hash>> {
    check_size(client, org, to).await?;
    with_nodes(client, org, |src| trail_merkle::consistency_proof(from, to, src)).await
}

fn to_checkpoint(r: &tokio_postgres::Row) -> Result<StoredCheckpoint> {
    Ok(StoredCheckpoint {
        size: unsigned(r.try_get(0).map_err(pg_error)?, "checkpoint size")?,
        root: hash32(r.try_get(1).map_err(pg_error)?, "a checkpoint root")?,
        note: r.try_get(2).map_err(pg_error)?,
        created_at: r.try_get(3).map_err(pg_error)?,
    })
}

pub(crate) async fn latest_checkpoint<C: GenericClient>(
    client: &C,
    org: i64,
) -> Result<Option<StoredCheckpoint>> {
    let st = client
        .prepare_cached(
            "SELECT size, root, note, created_at FROM checkpoints WHERE org = $1 ORDER BY size DESC LIMIT 1",
        )
        .await
        .map_err(pg_error)?;
    client.query_opt(&st, &[&org]).await.map_err(pg_error)?.as_ref().map(to_checkpoint).transpose()
}

pub(crate) async fn checkpoints<C: GenericClient>(client: &C, org: i64) -> Result<Vec<StoredCheckpoint>> {
    let st = client
        .prepare_cached("SELECT size, root, note, created_at FROM checkpoints WHERE org = $1 ORDER BY size")
        .await
        .map_err(pg_error)?;
    client.query(&st, &[&org]).await.map_err(pg_error)?.iter().map(to_checkpoint).collect()
}

/// Stores a checkpoint. The same size with the same root is a no-op (another node signed it first);
/// the same size with another root is refused: there are never two inconsistent checkpoints.
pub(crate) async fn add_checkpoint<C: GenericClient>(
    client: &C,
    org: i64,
    cp: &StoredCheckpoint,
) -> Result<()> {
    let size = signed(cp.size, "checkpoint size")?;
    let st = client
        .prepare_cached(
            "INSERT INTO checkpoints(org, size, root, note, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (org, size) DO NOTHING",
        )
        .await
        .map_err(pg_error)?;
    let inserted = client
        .execute(&st, &[&org, &size, &&cp.root[..], &cp.note, &cp.created_at])
        .await
        .map_err(pg_error)?;
    if inserted == 1 {
        return Ok(());
    }
    let existing: Vec<u8> = client
        .query_one("SELECT root FROM checkpoints WHERE org = $1 AND size = $2", &[&org, &size])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(pg_error)?;
    if existing == cp.root {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!("a checkpoint for size {} with another root exists", cp.size)))
    }
}

/// Orgs whose log has grown past their latest checkpoint, with the current size.
pub(crate) async fn unsigned_heads<C: GenericClient>(client: &C) -> Result<Vec<(String, u64)>> {
    let rows = client
        .query(
            "SELECT o.slug, h.tree_size FROM log_heads h JOIN orgs o ON o.org = h.org
             WHERE h.tree_size > coalesce((SELECT max(size) FROM checkpoints c WHERE c.org = h.org), 0)
             ORDER BY o.slug",
            &[],
        )
        .await
        .map_err(pg_error)?;
    rows.iter()
        .map(|r| {
            Ok((r.try_get(0).map_err(pg_error)?, unsigned(r.try_get(1).map_err(pg_error)?, "tree size")?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_asks_only_for_nodes_inside_the_tree() {
        let recorder = Recorder::default();
        trail_merkle::inclusion_proof(5, 13, &recorder as &dyn NodeSource<Error = StoreError>).unwrap();
        let asked = recorder.asked.into_inner();
        assert!(!asked.is_empty());
        assert!(asked.iter().all(|&(level, index)| (index + 1) << level <= 13), "{asked:?}");
    }
}
