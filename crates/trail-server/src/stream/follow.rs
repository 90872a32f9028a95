//! Following an org's log from a saved position, in `seq` order: the one mechanism under the file sink
//! and the streaming destinations. A reader asks for what comes after its position, up to an end it
//! chooses (the log's size, or a signed checkpoint's), and gets every seq in between exactly once:
//! stored events with their canonical bytes, and — when asked — the leaves of archived (pruned) events,
//! so a reader that must account for every leaf sees no gap.

use trail_store::{RawRecord, Store, StoreError};

/// One position of the log.
#[derive(Debug, Clone)]
pub enum Entry {
    Event(RawRecord),
    /// An event archived and pruned from the hot store: only its leaf hash is left.
    Archived {
        seq: u64,
        leaf: trail_merkle::Hash,
    },
}

impl Entry {
    pub fn seq(&self) -> u64 {
        match self {
            Entry::Event(r) => r.seq,
            Entry::Archived { seq, .. } => *seq,
        }
    }
}

/// Reads the org's log from seq `next` up to `end` (exclusive), at most `limit` entries. Without
/// `archived`, pruned events are passed over silently (the file sink); with it they come back as
/// [`Entry::Archived`] so the entries are contiguous from `next`.
pub async fn read(
    store: &dyn Store,
    org: &str,
    next: u64,
    end: u64,
    limit: usize,
    archived: bool,
) -> Result<Vec<Entry>, StoreError> {
    if next >= end || limit == 0 {
        return Ok(Vec::new());
    }
    let records = store.events_after(org, next.checked_sub(1), limit).await?;
    let mut out = Vec::with_capacity(records.len());
    let mut expect = next;
    for r in records.into_iter().filter(|r| r.seq < end) {
        // A gap whose leaves cannot all be read yet ends the read there: entries stay contiguous.
        if archived && r.seq > expect && !fill_archived(store, org, expect, r.seq, &mut out).await? {
            return Ok(out);
        }
        expect = r.seq + 1;
        out.push(Entry::Event(r));
        if out.len() >= limit {
            out.truncate(limit);
            return Ok(out);
        }
    }
    // Past the last stored event below `end`: whatever is left of the range was pruned.
    if archived && expect < end && out.len() < limit {
        let to = end.min(expect + (limit - out.len()) as u64);
        fill_archived(store, org, expect, to, &mut out).await?;
    }
    out.truncate(limit);
    Ok(out)
}

/// Appends the archived leaves of seqs `from..to`; `false` when not all of them could be read (events
/// below the log's size another node has not committed yet), so the caller stops there.
async fn fill_archived(
    store: &dyn Store,
    org: &str,
    from: u64,
    to: u64,
    out: &mut Vec<Entry>,
) -> Result<bool, StoreError> {
    let mut expect = from;
    for (seq, leaf) in store.pruned_leaves(org, from, to).await? {
        if seq != expect {
            return Err(StoreError::Corrupt(format!("seq {expect} of {org} is neither stored nor archived")));
        }
        out.push(Entry::Archived { seq, leaf });
        expect += 1;
    }
    Ok(expect == to)
}
