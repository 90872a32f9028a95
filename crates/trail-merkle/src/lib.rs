//! RFC 6962 / RFC 9162 Merkle tree hashing for Trail's per-organization logs.
//!
//! Bytes in, hashes out: this crate never does IO and never allocates a whole tree. Callers that keep
//! a log on disk hand it complete subtree hashes through [`NodeSource`] and an O(log n) [`Frontier`];
//! everything here is deterministic and synchronous.
//!
//! The tree shape is the RFC one: a tree of `n > 1` leaves is split at the largest power of two
//! strictly less than `n`. Node `(level, index)` names the complete subtree covering leaves
//! `[index << level, (index + 1) << level)`; level 0 nodes are leaf hashes.
#![cfg_attr(test, allow(clippy::unwrap_used, reason = "tests fail loudly on purpose"))]

use sha2::{Digest, Sha256};

pub mod checkpoint;
mod frontier;
mod proof;
#[cfg(test)]
mod testutil;
mod verify;

pub use checkpoint::{Checkpoint, NoteError, Signer, Verifier};
pub use frontier::{CompletedNode, Frontier, FrontierError};
pub use proof::{NodeSource, ProofError, consistency_proof, inclusion_proof, range_root};
pub use verify::{VerifyError, verify_consistency, verify_inclusion};

/// A SHA-256 hash of a leaf or an interior node.
pub type Hash = [u8; 32];

/// The hash of a leaf: `SHA-256(0x00 ‖ data)` (RFC 6962 §2.1).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// The hash of an interior node: `SHA-256(0x01 ‖ left ‖ right)` (RFC 6962 §2.1).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: `SHA-256("")` (RFC 6962 §2.1).
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The Merkle tree hash (RFC 6962 `MTH`) of a list of leaf hashes.
///
/// Meant for small in-memory lists (tests, batches); a log on disk should use [`Frontier`] or
/// [`range_root`] instead, which never need every leaf at once.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [single] => *single,
        _ => {
            let k = split_point(leaves.len() as u64) as usize;
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The largest power of two strictly less than `n` (`n >= 2`): where RFC 6962 splits a tree of `n` leaves.
pub(crate) fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{REFERENCE_ROOTS, reference_leaves};

    #[test]
    fn split_point_is_largest_power_of_two_below() {
        for (n, k) in
            [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (1 << 40, 1 << 39), (u64::MAX, 1 << 63)]
        {
            assert_eq!(split_point(n), k, "n = {n}");
        }
    }

    #[test]
    fn empty_tree_root_is_sha256_of_nothing() {
        // RFC 6962 §2.1: MTH({}) = SHA-256(); the well-known digest of the empty string.
        assert_eq!(hex(&root(&[])), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn empty_leaf_hash_known_answer() {
        // certificate-transparency / transparency-dev/merkle rfc6962_test.go: HashLeaf("") =
        // SHA-256(0x00), which is also the well-known digest of the single byte 0x00.
        assert_eq!(hex(&leaf_hash(b"")), "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");
    }

    #[test]
    fn leaf_and_node_known_answers() {
        // transparency-dev/merkle rfc6962/rfc6962_test.go, "RFC6962 Leaf": HashLeaf("L123456").
        assert_eq!(
            hex(&leaf_hash(b"L123456")),
            "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
        );
        // Reference roots of sizes 1 and 2 (proof/verify_test.go): MTH of two leaves is one node hash.
        let leaves = reference_leaves();
        assert_eq!(hex(&node_hash(&leaves[0], &leaves[1])), REFERENCE_ROOTS[1]);
    }

    #[test]
    fn reference_roots_for_sizes_1_to_8() {
        let leaves = reference_leaves();
        for (size, want) in (1..=8).zip(REFERENCE_ROOTS) {
            assert_eq!(hex(&root(&leaves[..size])), want, "size {size}");
        }
    }

    pub(crate) fn hex(h: &[u8]) -> String {
        h.iter().map(|b| format!("{b:02x}")).collect()
    }
}
