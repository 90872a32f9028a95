//! Shared test fixtures: the certificate-transparency reference vectors and an in-memory [`NodeSource`].
//!
//! Test-only. It must never be compiled into the library: the in-memory source holds a whole tree,
//! which is exactly what production code may not do.

use crate::{Hash, NodeSource, leaf_hash, node_hash};

/// The eight leaf inputs of the RFC 6962 reference test suite (certificate-transparency C++
/// `merkle_tree_test.cc`, carried over verbatim into transparency-dev/merkle `proof/verify_test.go`).
pub(crate) const REFERENCE_LEAF_INPUTS: [&[u8]; 8] = [
    b"",
    &[0x00],
    &[0x10],
    &[0x20, 0x21],
    &[0x30, 0x31],
    &[0x40, 0x41, 0x42, 0x43],
    &[0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
    &[0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f],
];

/// Expected tree roots for the first 1..=8 reference leaves; transparency-dev/merkle
/// `proof/verify_test.go`, variable `roots`.
pub(crate) const REFERENCE_ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// `(leaf index (0-based), tree size, proof)`; transparency-dev/merkle `proof/verify_test.go`,
/// variable `inclusionProofs` (which lists the leaf 1-based; converted here). Its `{0, 0, nil}` entry
/// is an invalid probe, not a proof, and is left out.
pub(crate) const REFERENCE_INCLUSION: [(u64, u64, &[&str]); 5] = [
    (0, 1, &[]),
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// `(old size, new size, proof)`; transparency-dev/merkle `proof/verify_test.go`, variable
/// `consistencyProofs`.
pub(crate) const REFERENCE_CONSISTENCY: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

pub(crate) fn reference_leaves() -> Vec<Hash> {
    REFERENCE_LEAF_INPUTS.iter().map(|d| leaf_hash(d)).collect()
}

pub(crate) fn unhex(s: &str) -> Hash {
    assert_eq!(s.len(), 64, "{s}");
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

pub(crate) fn unhex_all(hashes: &[&str]) -> Vec<Hash> {
    hashes.iter().map(|h| unhex(h)).collect()
}

/// A whole tree in memory, level by level; `levels[l][i]` is node `(l, i)`. Only complete subtrees
/// are present, exactly as a store would persist them.
#[derive(Debug, Clone)]
pub(crate) struct MemTree {
    pub(crate) levels: Vec<Vec<Hash>>,
}

/// Asked for a node that is not (yet) a complete subtree of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Missing(pub u8, pub u64);

impl MemTree {
    pub(crate) fn new(leaves: &[Hash]) -> Self {
        let mut levels = vec![leaves.to_vec()];
        while let Some(last) = levels.last().filter(|l| l.len() >= 2) {
            let next = last.chunks_exact(2).map(|p| node_hash(&p[0], &p[1])).collect();
            levels.push(next);
        }
        MemTree { levels }
    }
}

impl NodeSource for MemTree {
    type Error = Missing;

    fn node(&self, level: u8, index: u64) -> Result<Hash, Missing> {
        self.levels
            .get(usize::from(level))
            .and_then(|l| l.get(usize::try_from(index).ok()?))
            .copied()
            .ok_or(Missing(level, index))
    }
}
