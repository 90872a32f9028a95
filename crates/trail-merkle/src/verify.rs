//! Verification of inclusion and consistency proofs, transcribed step by step from RFC 9162
//! §2.1.3.2 ("Verifying an Inclusion Proof") and §2.1.4.2 ("Verifying Consistency between Two Tree
//! Heads").
//!
//! This is the code clients trust, so it must never share logic with the proof generator in
//! `proof.rs`: a bug mirrored in both would make bad proofs verify. It must never panic on hostile
//! input and never accept a proof with spare or missing hashes.

use crate::{Hash, empty_root, node_hash};

/// Why a proof was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The leaf index is not inside the tree (RFC 9162 §2.1.3.2 step 1).
    #[error("leaf index {index} is out of range for tree size {tree_size}")]
    IndexOutOfRange {
        /// The claimed leaf index.
        index: u64,
        /// The claimed tree size.
        tree_size: u64,
    },
    /// The old tree is larger than the new one: logs only grow.
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    OldSizeTooLarge {
        /// The claimed old tree size.
        old_size: u64,
        /// The claimed new tree size.
        new_size: u64,
    },
    /// The proof has more hashes than the tree shape allows.
    #[error("proof has more hashes than the tree shape allows")]
    ProofTooLong,
    /// The proof has fewer hashes than the tree shape requires.
    #[error("proof has fewer hashes than the tree shape requires")]
    ProofTooShort,
    /// The proof hashes up to a root other than the one claimed (inclusion), or to a new root other
    /// than the one claimed (consistency).
    #[error("proof does not lead to the claimed root")]
    RootMismatch,
    /// The consistency proof does not reproduce the claimed old root.
    #[error("proof does not lead to the claimed old root")]
    OldRootMismatch,
}

/// Checks that `leaf_hash` is the leaf at `index` of the tree of `tree_size` leaves whose root is
/// `root`, given the RFC 9162 inclusion `proof` (audit path, leaf-level sibling first).
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), VerifyError> {
    // 1. If leaf_index >= tree_size, fail.
    if index >= tree_size {
        return Err(VerifyError::IndexOutOfRange { index, tree_size });
    }
    // 2. Set fn to leaf_index and sn to tree_size - 1.
    let (mut fnode, mut snode) = (index, tree_size - 1);
    // 3. Set r to hash.
    let mut r = *leaf_hash;
    // 4. For each value p in the inclusion_path array:
    for p in proof {
        // a. If sn is 0, stop the iteration and fail.
        if snode == 0 {
            return Err(VerifyError::ProofTooLong);
        }
        // b. If LSB(fn) is set, or if fn is equal to sn, then:
        if fnode & 1 == 1 || fnode == snode {
            // i. Set r to HASH(0x01 || p || r).
            r = node_hash(p, &r);
            // ii. If LSB(fn) is not set, right-shift both fn and sn equally until either LSB(fn) is
            // set or fn is 0.
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            // Otherwise: i. Set r to HASH(0x01 || r || p).
            r = node_hash(&r, p);
        }
        // c. Finally, right-shift both fn and sn one time.
        fnode >>= 1;
        snode >>= 1;
    }
    // 5. Compare sn to 0. Compare r against the root_hash.
    if snode != 0 {
        return Err(VerifyError::ProofTooShort);
    }
    if r != *root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `new_size` leaves with root `new_root` extends the tree of `old_size`
/// leaves with root `old_root`, given the RFC 9162 consistency `proof`.
///
/// The RFC algorithm covers `0 < old_size < new_size`. The trivial cases are decided without it, and
/// their proof must be empty: equal sizes need equal roots, and an empty old tree (whose root must be
/// the empty-tree hash) is a prefix of every tree.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), VerifyError> {
    if old_size > new_size {
        return Err(VerifyError::OldSizeTooLarge { old_size, new_size });
    }
    if old_size == 0 || old_size == new_size {
        if !proof.is_empty() {
            return Err(VerifyError::ProofTooLong);
        }
        if old_size == 0 && *old_root != empty_root() {
            return Err(VerifyError::OldRootMismatch);
        }
        if old_size == new_size && old_root != new_root {
            return Err(VerifyError::RootMismatch);
        }
        return Ok(());
    }

    // 1. If consistency_path is an empty array, stop and fail the proof verification.
    let Some((first_path, rest)) = proof.split_first() else {
        return Err(VerifyError::ProofTooShort);
    };
    // 2. If first is an exact power of 2, then prepend first_hash to the consistency_path array.
    // Done by choosing the starting value and the remaining hashes instead of copying the proof.
    let (start, path) = if old_size.is_power_of_two() { (old_root, proof) } else { (first_path, rest) };
    // 3. Set fn to first - 1 and sn to second - 1.
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    // 4. If LSB(fn) is set, then right-shift both fn and sn equally until LSB(fn) is not set.
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    // 5. Set both fr and sr to the first value in the consistency_path array.
    let (mut fr, mut sr) = (*start, *start);
    // 6. For each subsequent value c in the consistency_path array:
    for c in path {
        // a. If sn is 0, then stop the iteration and fail the proof verification.
        if snode == 0 {
            return Err(VerifyError::ProofTooLong);
        }
        // b. If LSB(fn) is set, or if fn is equal to sn, then:
        if fnode & 1 == 1 || fnode == snode {
            // i. Set fr to HASH(0x01 || c || fr). ii. Set sr to HASH(0x01 || c || sr).
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            // iii. If LSB(fn) is not set, then right-shift both fn and sn equally until either
            // LSB(fn) is set or fn is 0.
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            // Otherwise: i. Set sr to HASH(0x01 || sr || c).
            sr = node_hash(&sr, c);
        }
        // c. Finally, right-shift both fn and sn one time.
        fnode >>= 1;
        snode >>= 1;
    }
    // 7. Verify that fr equals first_hash, sr equals second_hash, and sn is 0.
    if snode != 0 {
        return Err(VerifyError::ProofTooShort);
    }
    if fr != *old_root {
        return Err(VerifyError::OldRootMismatch);
    }
    if sr != *new_root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leaf_hash;
    use crate::testutil::{
        REFERENCE_CONSISTENCY, REFERENCE_INCLUSION, REFERENCE_ROOTS, reference_leaves, unhex, unhex_all,
    };

    fn ref_root(size: u64) -> Hash {
        unhex(REFERENCE_ROOTS[usize::try_from(size).unwrap() - 1])
    }

    #[test]
    fn reference_inclusion_proofs_verify() {
        let leaves = reference_leaves();
        for (index, size, proof) in REFERENCE_INCLUSION {
            let proof = unhex_all(proof);
            let leaf = leaves[usize::try_from(index).unwrap()];
            let root = ref_root(size);
            assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()), "{index}/{size}");
            // Probes from the reference suite's corruptInclusionProof: wrong index, size, leaf, root,
            // extra or missing hashes, flipped bits.
            assert!(verify_inclusion(&leaf, index + 1, size, &proof, &root).is_err());
            assert!(verify_inclusion(&leaf, index ^ 2, size, &proof, &root).is_err());
            assert!(verify_inclusion(&leaf, index, size * 2, &proof, &root).is_err());
            assert!(verify_inclusion(&leaf_hash(b"WrongLeaf"), index, size, &proof, &root).is_err());
            assert!(verify_inclusion(&leaf, index, size, &proof, &empty_root()).is_err());
            let longer = [proof.clone(), vec![root]].concat();
            assert_eq!(verify_inclusion(&leaf, index, size, &longer, &root), Err(VerifyError::ProofTooLong));
            let prefixed = [vec![root], proof.clone()].concat();
            assert!(verify_inclusion(&leaf, index, size, &prefixed, &root).is_err());
            if let Some((_, shorter)) = proof.split_last() {
                assert_eq!(
                    verify_inclusion(&leaf, index, size, shorter, &root),
                    Err(VerifyError::ProofTooShort)
                );
                assert!(verify_inclusion(&leaf, index, size / 2, &proof, &root).is_err());
            }
            for i in 0..proof.len() {
                let mut bad = proof.clone();
                bad[i][0] ^= 8;
                assert_eq!(verify_inclusion(&leaf, index, size, &bad, &root), Err(VerifyError::RootMismatch));
            }
        }
    }

    #[test]
    fn reference_consistency_proofs_verify() {
        for (old, new, proof) in REFERENCE_CONSISTENCY {
            let proof = unhex_all(proof);
            let (r1, r2) = (ref_root(old), ref_root(new));
            assert_eq!(verify_consistency(old, new, &r1, &r2, &proof), Ok(()), "{old}->{new}");
            if proof.is_empty() {
                continue;
            }
            // Probes from the reference suite's corruptConsistencyProof.
            for (o, n) in [(old - 1, new), (old + 1, new), (old ^ 2, new), (old, new * 2), (old, new / 2)] {
                assert!(verify_consistency(o, n, &r1, &r2, &proof).is_err(), "{o}->{n}");
            }
            assert!(verify_consistency(old, new, &r2, &r1, &proof).is_err());
            assert!(verify_consistency(old, new, &leaf_hash(b"x"), &r2, &proof).is_err());
            assert_eq!(
                verify_consistency(old, new, &r1, &leaf_hash(b"x"), &proof),
                Err(VerifyError::RootMismatch)
            );
            assert_eq!(verify_consistency(old, new, &r1, &r2, &[]), Err(VerifyError::ProofTooShort));
            for extra in [r1, r2, proof[0]] {
                let longer = [proof.clone(), vec![extra]].concat();
                assert!(verify_consistency(old, new, &r1, &r2, &longer).is_err());
                let prefixed = [vec![extra], proof.clone()].concat();
                assert!(verify_consistency(old, new, &r1, &r2, &prefixed).is_err());
            }
            let shorter = &proof[..proof.len() - 1];
            assert!(verify_consistency(old, new, &r1, &r2, shorter).is_err());
            for i in 0..proof.len() {
                let mut bad = proof.clone();
                bad[i][0] ^= 16;
                assert!(verify_consistency(old, new, &r1, &r2, &bad).is_err());
            }
        }
    }

    #[test]
    fn trivial_consistency_cases() {
        // Mirrors TestVerifyConsistency in transparency-dev/merkle proof/verify_test.go, except that an
        // empty old tree must claim the empty-tree root here.
        let (a, b, e) = (leaf_hash(b"a"), leaf_hash(b"b"), empty_root());
        assert_eq!(verify_consistency(0, 0, &e, &e, &[]), Ok(()));
        assert_eq!(verify_consistency(0, 5, &e, &b, &[]), Ok(()));
        assert_eq!(verify_consistency(0, 5, &a, &b, &[]), Err(VerifyError::OldRootMismatch));
        assert_eq!(verify_consistency(1, 1, &a, &a, &[]), Ok(()));
        assert_eq!(verify_consistency(1, 1, &a, &b, &[]), Err(VerifyError::RootMismatch));
        assert_eq!(verify_consistency(1, 1, &a, &a, &[e]), Err(VerifyError::ProofTooLong));
        assert_eq!(verify_consistency(0, 1, &e, &a, &[e]), Err(VerifyError::ProofTooLong));
        assert_eq!(
            verify_consistency(2, 1, &a, &b, &[]),
            Err(VerifyError::OldSizeTooLarge { old_size: 2, new_size: 1 })
        );
        assert_eq!(verify_consistency(1, 2, &a, &b, &[]), Err(VerifyError::ProofTooShort));
    }

    #[test]
    fn inclusion_rejects_out_of_range_and_empty_trees() {
        let h = leaf_hash(b"data");
        // A one-leaf tree: root is the leaf hash and the proof is empty.
        assert_eq!(verify_inclusion(&h, 0, 1, &[], &h), Ok(()));
        assert_eq!(verify_inclusion(&h, 0, 1, &[], &empty_root()), Err(VerifyError::RootMismatch));
        for (index, tree_size) in [(0, 0), (1, 0), (1, 1), (2, 1), (u64::MAX, u64::MAX)] {
            assert_eq!(
                verify_inclusion(&h, index, tree_size, &[], &h),
                Err(VerifyError::IndexOutOfRange { index, tree_size })
            );
        }
    }
}
