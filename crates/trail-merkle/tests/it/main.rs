//! Integration tests of the Merkle crate through its public API only: hostile-input properties
//! (`fuzz`) for checkpoints, notes, verifier keys, proofs and serialised frontiers.
#![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]

mod fuzz;
