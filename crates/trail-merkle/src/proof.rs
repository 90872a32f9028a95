//! Inclusion and consistency proof generation (RFC 9162 §2.1.3.1 `PATH` and §2.1.4.1 `PROOF`) over
//! a [`NodeSource`] of complete subtree hashes.
//!
//! Generation reads only complete subtrees, O(log n) of them per proof, so a store can serve proofs
//! for a tree of any size straight from disk. This module must never ask for a node outside the
//! requested tree size (that node may not exist yet) and never load or rebuild a whole tree.

use crate::{Hash, node_hash, split_point};

/// Supplies the hashes of complete subtrees of one log.
///
/// `node(level, index)` is the root of the complete subtree covering leaves
/// `[index << level, (index + 1) << level)`; level 0 is the leaf hashes. Such a node never changes once
/// its last leaf is appended, which is what lets a store persist it (see [`crate::Frontier::append`]).
pub trait NodeSource {
    /// The store's error, passed through unchanged in [`ProofError::Source`].
    type Error;

    /// The hash of complete subtree `(level, index)`.
    fn node(&self, level: u8, index: u64) -> Result<Hash, Self::Error>;
}

impl<S: NodeSource + ?Sized> NodeSource for &S {
    type Error = S::Error;

    fn node(&self, level: u8, index: u64) -> Result<Hash, S::Error> {
        (**self).node(level, index)
    }
}

/// Why a proof or subtree root could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError<E> {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is out of range for tree size {tree_size}")]
    IndexOutOfRange {
        /// The requested leaf index.
        index: u64,
        /// The requested tree size.
        tree_size: u64,
    },
    /// The old tree is larger than the new one.
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    OldSizeTooLarge {
        /// The requested old tree size.
        old_size: u64,
        /// The requested new tree size.
        new_size: u64,
    },
    /// The leaf range is not a subtree of the log's tree: `start` must be a multiple of the largest
    /// power of two not above `end - start`, and `start <= end`.
    #[error("leaf range [{start}, {end}) is not a subtree of the log")]
    UnalignedRange {
        /// First leaf of the range.
        start: u64,
        /// One past the last leaf of the range.
        end: u64,
    },
    /// The node source failed.
    #[error("node source failed")]
    Source(#[source] E),
}

/// The RFC 6962 Merkle tree hash of leaves `[start, end)` taken as a tree of their own, read from
/// complete subtrees only (one node per set bit of `end - start`).
///
/// With `start = 0` this is the root of the log at size `end`. Other ranges must be subtrees of the
/// log's tree (see [`ProofError::UnalignedRange`]), as every range inside a proof is. An empty range
/// has the empty-tree root.
pub fn range_root<S: NodeSource + ?Sized>(
    start: u64,
    end: u64,
    src: &S,
) -> Result<Hash, ProofError<S::Error>> {
    let len = end.checked_sub(start).ok_or(ProofError::UnalignedRange { start, end })?;
    // The range's own RFC split would not line up with stored subtrees otherwise.
    if len != 0 && !start.is_multiple_of(1 << len.ilog2()) {
        return Err(ProofError::UnalignedRange { start, end });
    }
    // The range is its set bits' complete subtrees, largest leftmost; the RFC split puts the complete
    // part on the left, so the root folds them together from the right (smallest subtree first).
    let mut acc: Option<Hash> = None;
    let mut right_end = end;
    for level in 0..64u8 {
        if len >> level & 1 == 1 {
            let node_start = right_end - (1 << level);
            let node = src.node(level, node_start >> level).map_err(ProofError::Source)?;
            acc = Some(acc.map_or(node, |right| node_hash(&node, &right)));
            right_end = node_start;
        }
    }
    Ok(acc.unwrap_or_else(crate::empty_root))
}

/// The inclusion proof (RFC 9162 `PATH`) of leaf `index` in the tree of `tree_size` leaves: sibling
/// hashes from the leaf's level upward.
pub fn inclusion_proof<S: NodeSource + ?Sized>(
    index: u64,
    tree_size: u64,
    src: &S,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if index >= tree_size {
        return Err(ProofError::IndexOutOfRange { index, tree_size });
    }
    // Walk down from the root (the RFC recursion unrolled), collecting siblings top-down; the RFC lists
    // them bottom-up, hence the reversal. Only the first right sibling can be incomplete: after it
    // the walk stays inside a power-of-two subtree.
    let mut path = Vec::new();
    let (mut start, mut n, mut m) = (0u64, tree_size, index);
    while n > 1 {
        let k = split_point(n);
        if m < k {
            path.push(range_root(start + k, start + n, src)?);
            n = k;
        } else {
            path.push(range_root(start, start + k, src)?);
            start += k;
            m -= k;
            n -= k;
        }
    }
    path.reverse();
    Ok(path)
}

/// The consistency proof (RFC 9162 `PROOF`) that the tree of `new_size` leaves extends the tree of
/// `old_size` leaves. Empty when there is nothing to prove (`old_size` is 0 or equals `new_size`).
pub fn consistency_proof<S: NodeSource + ?Sized>(
    old_size: u64,
    new_size: u64,
    src: &S,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if old_size > new_size {
        return Err(ProofError::OldSizeTooLarge { old_size, new_size });
    }
    if old_size == 0 || old_size == new_size {
        return Ok(Vec::new());
    }
    // SUBPROOF(m, D[start..start+n], b) unrolled. Each step appends one hash after the recursive part,
    // so hashes are collected outermost-first and reversed at the end.
    let mut proof = Vec::new();
    let (mut start, mut n, mut m, mut old_is_whole_left_subtree) = (0u64, new_size, old_size, true);
    while m != n {
        let k = split_point(n);
        if m <= k {
            proof.push(range_root(start + k, start + n, src)?);
            n = k;
        } else {
            proof.push(range_root(start, start + k, src)?);
            start += k;
            m -= k;
            n -= k;
            old_is_whole_left_subtree = false;
        }
    }
    // SUBPROOF(m, D[m], true) is empty: the verifier already knows the old root. With b = false the
    // old tree's last subtree root is needed.
    if !old_is_whole_left_subtree {
        proof.push(range_root(start, start + m, src)?);
    }
    proof.reverse();
    Ok(proof)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{
        MemTree, Missing, REFERENCE_CONSISTENCY, REFERENCE_INCLUSION, REFERENCE_ROOTS, reference_leaves,
        unhex, unhex_all,
    };
    use crate::{VerifyError, leaf_hash, root, verify_consistency, verify_inclusion};
    use proptest::prelude::*;
    use std::cell::Cell;

    #[test]
    fn reference_inclusion_proofs_are_generated() {
        let leaves = reference_leaves();
        for (index, size, want) in REFERENCE_INCLUSION {
            // Build from exactly `size` leaves so that reading any node beyond the tree fails.
            let tree = MemTree::new(&leaves[..usize::try_from(size).unwrap()]);
            assert_eq!(inclusion_proof(index, size, &tree).unwrap(), unhex_all(want), "{index}/{size}");
        }
    }

    #[test]
    fn reference_consistency_proofs_are_generated() {
        let leaves = reference_leaves();
        for (old, new, want) in REFERENCE_CONSISTENCY {
            let tree = MemTree::new(&leaves[..usize::try_from(new).unwrap()]);
            assert_eq!(consistency_proof(old, new, &tree).unwrap(), unhex_all(want), "{old}->{new}");
        }
    }

    #[test]
    fn reference_roots_from_range_root() {
        let leaves = reference_leaves();
        for (size, want) in (1..=8u64).zip(REFERENCE_ROOTS) {
            let tree = MemTree::new(&leaves[..usize::try_from(size).unwrap()]);
            assert_eq!(range_root(0, size, &tree).unwrap(), unhex(want), "size {size}");
        }
    }

    #[test]
    fn argument_errors() {
        let tree = MemTree::new(&reference_leaves());
        assert_eq!(inclusion_proof(8, 8, &tree), Err(ProofError::IndexOutOfRange { index: 8, tree_size: 8 }));
        assert_eq!(inclusion_proof(0, 0, &tree), Err(ProofError::IndexOutOfRange { index: 0, tree_size: 0 }));
        assert_eq!(
            consistency_proof(5, 4, &tree),
            Err(ProofError::OldSizeTooLarge { old_size: 5, new_size: 4 })
        );
        assert_eq!(consistency_proof(0, 8, &tree), Ok(vec![]));
        assert_eq!(consistency_proof(8, 8, &tree), Ok(vec![]));
        assert_eq!(range_root(1, 3, &tree), Err(ProofError::UnalignedRange { start: 1, end: 3 }));
        assert_eq!(range_root(3, 2, &tree), Err(ProofError::UnalignedRange { start: 3, end: 2 }));
        assert_eq!(range_root(4, 7, &tree), Ok(root(&reference_leaves()[4..7])));
        assert_eq!(range_root(5, 5, &tree), Ok(crate::empty_root()));
        // A tree larger than the source holds surfaces the source's own error.
        assert_eq!(inclusion_proof(0, 9, &tree), Err(ProofError::Source(Missing(0, 8))));
    }

    /// A tree of `size` identical leaves: every complete subtree at a level has the same hash, so a
    /// source for a tree far too big to build can still answer truthfully. Counts reads.
    struct Uniform {
        size: u64,
        by_level: Vec<Hash>,
        reads: Cell<u64>,
    }

    impl Uniform {
        fn new(size: u64) -> Self {
            let mut by_level = vec![leaf_hash(b"same")];
            for _ in 1..64 {
                let h = *by_level.last().unwrap();
                by_level.push(node_hash(&h, &h));
            }
            Uniform { size, by_level, reads: Cell::new(0) }
        }
    }

    impl NodeSource for Uniform {
        type Error = Missing;

        fn node(&self, level: u8, index: u64) -> Result<Hash, Missing> {
            self.reads.set(self.reads.get() + 1);
            if (index + 1) << level > self.size {
                return Err(Missing(level, index));
            }
            Ok(self.by_level[usize::from(level)])
        }
    }

    #[test]
    fn proofs_for_a_hundred_million_leaves_read_few_nodes() {
        let (old, new) = (77_777_777u64, 100_000_001u64);
        let src = Uniform::new(new);
        let (old_root, new_root) = (range_root(0, old, &src).unwrap(), range_root(0, new, &src).unwrap());
        let log2 = u64::from(new.ilog2() + 1);

        src.reads.set(0);
        let proof = inclusion_proof(12_345_678, new, &src).unwrap();
        assert!(src.reads.get() <= 2 * log2, "{} reads", src.reads.get());
        verify_inclusion(&leaf_hash(b"same"), 12_345_678, new, &proof, &new_root).unwrap();

        src.reads.set(0);
        let proof = consistency_proof(old, new, &src).unwrap();
        assert!(src.reads.get() <= 2 * log2, "{} reads", src.reads.get());
        verify_consistency(old, new, &old_root, &new_root, &proof).unwrap();
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    /// Size changes a verifier must notice. Inclusion and consistency proofs bind the tree sizes only
    /// through the shape of the hash path (the signed checkpoint binds size to root), so a wrong size
    /// with the same path shape legitimately verifies; one whose proof has a different length cannot.
    /// `proof_len` is the generator's proof length for a candidate size, `None` when not applicable.
    fn size_changes(size: u64, flip: u64, proof_len: impl Fn(u64) -> Option<usize>, len: usize) -> Vec<u64> {
        [size.wrapping_sub(1), size + 1, size + 1 + flip % 100, size * 2, size / 2]
            .into_iter()
            .filter(|&s| s != size && proof_len(s).is_some_and(|l| l != len))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn generated_inclusion_proofs_verify(size in 1u64..3000, index_seed in any::<u64>(), flip in any::<u64>()) {
            let index = index_seed % size;
            let all = leaves(size * 2);
            // Exactly `size` leaves, so that a read past the tree fails the test.
            let tree = MemTree::new(&all[..usize::try_from(size).unwrap()]);
            let big = MemTree::new(&all);
            let root = range_root(0, size, &tree).unwrap();
            prop_assert_eq!(root, crate::root(&all[..usize::try_from(size).unwrap()]));
            let leaf = all[usize::try_from(index).unwrap()];
            let proof = inclusion_proof(index, size, &tree).unwrap();
            prop_assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));

            // Any single change must be caught.
            prop_assert!(verify_inclusion(&leaf_hash(b"other"), index, size, &proof, &root).is_err());
            // A different index in the same tree always has a different path (length or directions).
            let other_index = (index + 1 + flip % size) % size;
            if other_index != index {
                prop_assert!(verify_inclusion(&leaf, other_index, size, &proof, &root).is_err());
            }
            // Doubling the size always lengthens the path by one.
            prop_assert!(verify_inclusion(&leaf, index, size * 2, &proof, &root).is_err());
            let len_at = |s: u64| inclusion_proof(index, s, &big).ok().map(|p| p.len());
            for s in size_changes(size, flip, len_at, proof.len()) {
                prop_assert!(verify_inclusion(&leaf, index, s, &proof, &root).is_err(), "size {}", s);
            }
            let mut bad_root = root;
            bad_root[usize::try_from(flip % 32).unwrap()] ^= 1;
            prop_assert_eq!(verify_inclusion(&leaf, index, size, &proof, &bad_root), Err(VerifyError::RootMismatch));
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let i = usize::try_from(flip % bad.len() as u64).unwrap();
                bad[i][usize::try_from(flip % 32).unwrap()] ^= 0x80;
                prop_assert_eq!(verify_inclusion(&leaf, index, size, &bad, &root), Err(VerifyError::RootMismatch));
                prop_assert!(verify_inclusion(&leaf, index, size, &proof[1..], &root).is_err());
            }
            let longer = [proof.clone(), vec![root]].concat();
            prop_assert!(verify_inclusion(&leaf, index, size, &longer, &root).is_err());
        }

        #[test]
        fn generated_consistency_proofs_verify(new in 1u64..3000, old_seed in any::<u64>(), flip in any::<u64>()) {
            let old = old_seed % (new + 1);
            let all = leaves(new * 2);
            let (old_len, new_len) = (usize::try_from(old).unwrap(), usize::try_from(new).unwrap());
            let tree = MemTree::new(&all[..new_len]);
            let big = MemTree::new(&all);
            let old_root = crate::root(&all[..old_len]);
            let new_root = crate::root(&all[..new_len]);
            let proof = consistency_proof(old, new, &tree).unwrap();
            prop_assert_eq!(verify_consistency(old, new, &old_root, &new_root, &proof), Ok(()));

            let mut bad_old = old_root;
            bad_old[usize::try_from(flip % 32).unwrap()] ^= 1;
            let mut bad_new = new_root;
            bad_new[usize::try_from(flip % 32).unwrap()] ^= 1;
            prop_assert!(verify_consistency(old, new, &bad_old, &new_root, &proof).is_err());
            if old > 0 {
                // An empty old tree is consistent with every tree, whatever its root or size.
                prop_assert!(verify_consistency(old, new, &old_root, &bad_new, &proof).is_err());
                let new_len_at = |s: u64| consistency_proof(old, s, &big).ok().map(|p| p.len());
                for s in size_changes(new, flip, new_len_at, proof.len()) {
                    prop_assert!(verify_consistency(old, s, &old_root, &new_root, &proof).is_err(), "new {}", s);
                }
            }
            let old_len_at = |s: u64| consistency_proof(s, new, &big).ok().map(|p| p.len());
            for s in size_changes(old, flip, old_len_at, proof.len()) {
                prop_assert!(verify_consistency(s, new, &old_root, &new_root, &proof).is_err(), "old {}", s);
            }
            prop_assert!(verify_consistency(new + 1, new, &old_root, &new_root, &proof).is_err());
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let i = usize::try_from(flip % bad.len() as u64).unwrap();
                bad[i][usize::try_from(flip % 32).unwrap()] ^= 0x80;
                prop_assert!(verify_consistency(old, new, &old_root, &new_root, &bad).is_err());
                prop_assert!(verify_consistency(old, new, &old_root, &new_root, &proof[1..]).is_err());
            }
            let longer = [proof.clone(), vec![new_root]].concat();
            prop_assert!(verify_consistency(old, new, &old_root, &new_root, &longer).is_err());
        }
    }
}
