//! The frontier (compact range) of a log: the roots of the complete subtrees along the tree's right
//! edge, one per set bit of the tree size, largest first.
//!
//! It is all an appender needs: appending and computing the root are O(log n), and each append
//! reports the subtree nodes it completed so a store can persist them for proof generation. It must
//! never hold more than O(log n) hashes and never need an earlier leaf again.

use crate::{Hash, NodeSource, empty_root, node_hash};

/// A complete subtree node that an append finished: node `(level, index)` covers leaves
/// `[index << level, (index + 1) << level)` and will never change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedNode {
    /// Height of the subtree; 0 for the leaf itself.
    pub level: u8,
    /// Position of the subtree among those of its level, from the left.
    pub index: u64,
    /// The subtree's root hash.
    pub hash: Hash,
}

/// Why frontier parts or bytes were rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrontierError {
    /// The number of hashes does not match the tree size (one per set bit).
    #[error("a tree of size {size} has {expected} frontier hashes, got {got}")]
    WrongHashCount {
        /// The claimed tree size.
        size: u64,
        /// The number of hashes that size requires.
        expected: usize,
        /// The number of hashes supplied.
        got: usize,
    },
    /// The serialised frontier is truncated or has trailing bytes.
    #[error("a serialised frontier must be 8 bytes of size then 32 bytes per hash; got {len} bytes")]
    BadLength {
        /// The length of the input.
        len: usize,
    },
}

/// The right edge of a Merkle tree of `size` leaves; see the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// `hashes[i]` is the root of the `i`-th complete subtree from the left; their heights are the set
    /// bits of `size`, highest first, so heights need not be stored.
    hashes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a frontier from a tree size and its frontier hashes (largest subtree first), as
    /// returned by [`Frontier::hashes`].
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Result<Self, FrontierError> {
        let expected = size.count_ones() as usize;
        if hashes.len() != expected {
            return Err(FrontierError::WrongHashCount { size, expected, got: hashes.len() });
        }
        Ok(Frontier { size, hashes })
    }

    /// Reads the frontier of the tree of `size` leaves from stored complete subtrees: one node per set
    /// bit of `size`.
    pub fn from_source<S: NodeSource + ?Sized>(size: u64, src: &S) -> Result<Self, S::Error> {
        let mut hashes = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0u64;
        for level in (0..64u8).rev() {
            if size >> level & 1 == 1 {
                hashes.push(src.node(level, start >> level)?);
                start += 1 << level;
            }
        }
        Ok(Frontier { size, hashes })
    }

    /// The number of leaves in the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The frontier hashes, largest (leftmost) subtree first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Appends a leaf hash (see [`crate::leaf_hash`]) and returns every node it completed, from the
    /// leaf itself (level 0) upward, so a store can persist them for [`NodeSource`].
    ///
    /// # Panics
    ///
    /// If the tree already holds `u64::MAX` leaves.
    pub fn append(&mut self, leaf: Hash) -> Vec<CompletedNode> {
        let index = self.size;
        self.size = index.checked_add(1).expect("a Merkle tree holds at most u64::MAX leaves");
        let mut completed = vec![CompletedNode { level: 0, index, hash: leaf }];
        // Each trailing one bit of the old size is a subtree of the height the new node now has: merge
        // it in, as binary addition carries.
        let mut acc = leaf;
        let mut level = 0u8;
        while index >> level & 1 == 1 {
            let left = self.hashes.pop().expect("one frontier hash per set bit of the size");
            acc = node_hash(&left, &acc);
            level += 1;
            completed.push(CompletedNode { level, index: index >> level, hash: acc });
        }
        self.hashes.push(acc);
        completed
    }

    /// The tree's root hash (RFC 6962 `MTH`), folded from the frontier right to left because the
    /// RFC split puts the complete subtree on the left.
    pub fn root(&self) -> Hash {
        self.hashes
            .iter()
            .rev()
            .copied()
            .reduce(|right, left| node_hash(&left, &right))
            .unwrap_or_else(empty_root)
    }

    /// Serialises as the tree size (8 bytes, big-endian) followed by the frontier hashes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 32 * self.hashes.len());
        out.extend_from_slice(&self.size.to_be_bytes());
        for h in &self.hashes {
            out.extend_from_slice(h);
        }
        out
    }

    /// Parses the output of [`Frontier::to_bytes`], rejecting any other length.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FrontierError> {
        let bad = FrontierError::BadLength { len: bytes.len() };
        let (size, rest) = bytes.split_first_chunk::<8>().ok_or(bad)?;
        let size = u64::from_be_bytes(*size);
        let (hashes, remainder) = rest.as_chunks::<32>();
        if !remainder.is_empty() || hashes.len() != size.count_ones() as usize {
            return Err(bad);
        }
        Self::from_parts(size, hashes.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{MemTree, REFERENCE_ROOTS, reference_leaves, unhex};
    use crate::{leaf_hash, root};
    use proptest::prelude::*;

    #[test]
    fn reference_roots_for_sizes_1_to_8() {
        let mut f = Frontier::new();
        assert_eq!(f.root(), empty_root());
        for (leaf, want) in reference_leaves().into_iter().zip(REFERENCE_ROOTS) {
            f.append(leaf);
            assert_eq!(f.root(), unhex(want), "size {}", f.size());
        }
    }

    #[test]
    fn append_reports_completed_nodes() {
        let leaves: Vec<Hash> = (0u8..4).map(|i| leaf_hash(&[i])).collect();
        let mut f = Frontier::new();
        f.append(leaves[0]);
        f.append(leaves[1]);
        f.append(leaves[2]);
        let got = f.append(leaves[3]);
        let n01 = node_hash(&leaves[0], &leaves[1]);
        let n23 = node_hash(&leaves[2], &leaves[3]);
        let want = vec![
            CompletedNode { level: 0, index: 3, hash: leaves[3] },
            CompletedNode { level: 1, index: 1, hash: n23 },
            CompletedNode { level: 2, index: 0, hash: node_hash(&n01, &n23) },
        ];
        assert_eq!(got, want);
        assert_eq!(f.hashes(), &[node_hash(&n01, &n23)]);
    }

    #[test]
    fn parts_and_bytes_reject_mismatched_input() {
        assert_eq!(
            Frontier::from_parts(3, vec![[0; 32]]),
            Err(FrontierError::WrongHashCount { size: 3, expected: 2, got: 1 })
        );
        assert_eq!(Frontier::from_bytes(&[0; 7]), Err(FrontierError::BadLength { len: 7 }));
        let mut bytes = vec![0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(Frontier::from_bytes(&bytes), Err(FrontierError::BadLength { len: 8 }));
        bytes.extend_from_slice(&[7; 32]);
        assert_eq!(Frontier::from_bytes(&bytes).map(|f| f.root()), Ok([7; 32]));
        bytes.push(0);
        assert_eq!(Frontier::from_bytes(&bytes), Err(FrontierError::BadLength { len: 41 }));
        assert_eq!(Frontier::from_bytes(&0u64.to_be_bytes()), Ok(Frontier::new()));
    }

    proptest! {
        // root() of every prefix is quadratic, hence the smaller trees here than in the proof tests.
        #![proptest_config(ProptestConfig::with_cases(12))]

        #[test]
        fn frontier_matches_root_and_node_source(n in 0usize..1200) {
            let leaves: Vec<Hash> = (0..n as u64).map(|i| leaf_hash(&i.to_le_bytes())).collect();
            let tree = MemTree::new(&leaves);
            let mut f = Frontier::new();
            let mut reported = 0usize;
            for (i, leaf) in leaves.iter().enumerate() {
                for node in f.append(*leaf) {
                    prop_assert_eq!(Ok(node.hash), tree.node(node.level, node.index));
                    reported += 1;
                }
                let size = i + 1;
                prop_assert_eq!(f.size(), size as u64);
                prop_assert_eq!(f.root(), root(&leaves[..size]));
                // Every 97th prefix, check the other ways of building the same frontier.
                if size % 97 == 0 {
                    prop_assert_eq!(&Frontier::from_source(size as u64, &tree).unwrap(), &f);
                    prop_assert_eq!(&Frontier::from_bytes(&f.to_bytes()).unwrap(), &f);
                    prop_assert_eq!(&Frontier::from_parts(f.size(), f.hashes().to_vec()).unwrap(), &f);
                }
            }
            // Each complete node is reported exactly once: all of them, at every level.
            prop_assert_eq!(reported, tree.levels.iter().map(Vec::len).sum::<usize>());
        }
    }
}
