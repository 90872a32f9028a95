//! Hostile input for everything that reads bytes from outside: checkpoint bodies
//! (`Checkpoint::parse_body`), signed notes (`Verifier::open_note`, `checkpoint::open`), verifier keys
//! (`Verifier::from_key`), inclusion and consistency proofs (`verify_inclusion`,
//! `verify_consistency`) and serialised frontiers (`Frontier::from_bytes`).
//!
//! The properties: nothing panics; whatever parses has exactly one spelling (it prints back to the
//! same text), so no two parsers can read a note differently; no damaged note or proof is accepted
//! as anything but the original. Cases per property come from `TRAIL_FUZZ_CASES` (default
//! [`DEFAULT_CASES`]); failing inputs are saved in `tests/proptest-regressions/fuzz.txt` and
//! replayed first.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use proptest::prelude::*;
use proptest::test_runner::Config;
use trail_merkle::checkpoint::open;
use trail_merkle::{
    Checkpoint, Frontier, Hash, NodeSource, Signer, Verifier, consistency_proof, inclusion_proof, leaf_hash,
    range_root, root, verify_consistency, verify_inclusion,
};

/// Cases per property when `TRAIL_FUZZ_CASES` is not set: the whole module stays within seconds.
const DEFAULT_CASES: u32 = 1000;

fn config() -> Config {
    let cases = std::env::var("TRAIL_FUZZ_CASES")
        .map(|v| v.parse().expect("TRAIL_FUZZ_CASES must be a number of cases"))
        .unwrap_or(DEFAULT_CASES);
    Config { cases, ..Config::default() }
}

fn signer() -> Signer {
    Signer::from_secret_bytes("trail.example/orgs/acme", &[42; 32]).unwrap()
}

/// Text with the characters notes are made of: newlines, em dashes, spaces, `+`, base64.
fn note_text() -> BoxedStrategy<String> {
    let token = prop::sample::select(vec![
        "\n",
        "\n\n",
        "— ",
        "—",
        " ",
        "+",
        "=",
        "/",
        "0",
        "00",
        "18446744073709551615",
        "18446744073709551616",
        "trail.example/orgs/acme",
        "AAAA",
        "\r",
        "\t",
        "\u{0}",
        "\u{2028}",
        "é",
    ]);
    prop_oneof![
        2 => any::<String>(),
        3 => prop::collection::vec(prop_oneof![3 => token.prop_map(str::to_string), 1 => "[A-Za-z0-9+/=]{0,60}"], 0..24)
            .prop_map(|t| t.concat()),
    ]
    .boxed()
}

/// Up to four character insertions, deletions or replacements.
fn damage(text: &str, edits: &[(prop::sample::Index, Option<char>, bool)]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for (at, c, replace) in edits {
        let i = at.index(chars.len() + 1);
        match (c, i < chars.len()) {
            (Some(c), true) if *replace => chars[i] = *c,
            (Some(c), _) => chars.insert(i, *c),
            (None, true) => {
                chars.remove(i);
            }
            (None, false) => {}
        }
    }
    chars.into_iter().collect()
}

fn edits() -> impl Strategy<Value = Vec<(prop::sample::Index, Option<char>, bool)>> {
    let c = prop_oneof![any::<char>(), prop::sample::select(vec!['\n', '—', ' ', '+', '0', '1', 'A', '='])];
    prop::collection::vec((any::<prop::sample::Index>(), proptest::option::of(c), any::<bool>()), 1..5)
}

fn checkpoint() -> impl Strategy<Value = Checkpoint> {
    ("[a-z0-9./-]{1,30}", any::<u64>(), any::<[u8; 32]>()).prop_map(|(origin, size, root)| Checkpoint {
        origin,
        size,
        root,
    })
}

/// The leaves' own tree as a node source: node `(level, index)` hashed from its leaves.
struct Leaves(Vec<Hash>);

impl NodeSource for Leaves {
    type Error = String;

    fn node(&self, level: u8, index: u64) -> Result<Hash, String> {
        let start = usize::try_from(index << level).map_err(|e| e.to_string())?;
        let end = start + (1usize << level);
        self.0.get(start..end).map(root).ok_or_else(|| format!("node ({level}, {index}) is outside the tree"))
    }
}

/// Any node, of a tree of any size: a hash derived from its position. Proofs built from it are
/// nonsense, which is the point.
struct Garbage;

impl NodeSource for Garbage {
    type Error = std::convert::Infallible;

    fn node(&self, level: u8, index: u64) -> Result<Hash, Self::Error> {
        let mut b = [0u8; 9];
        b[0] = level;
        b[1..].copy_from_slice(&index.to_be_bytes());
        Ok(leaf_hash(&b))
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn checkpoint_bodies_parse_to_their_one_spelling(text in note_text()) {
        if let Ok(c) = Checkpoint::parse_body(&text) {
            prop_assert_eq!(c.body(), text);
        }
    }

    #[test]
    fn damaged_checkpoint_bodies_never_read_as_another_checkpoint(c in checkpoint(), e in edits()) {
        let damaged = damage(&c.body(), &e);
        if let Ok(read) = Checkpoint::parse_body(&damaged) {
            prop_assert_eq!(read.body(), damaged);
        }
    }

    #[test]
    fn verifier_keys_parse_to_their_one_spelling(text in note_text(), e in edits()) {
        for k in [text, damage(&signer().verifier_key(), &e)] {
            if let Ok(v) = Verifier::from_key(&k) {
                prop_assert_eq!(v.key_string(), k);
            }
        }
    }

    #[test]
    fn garbage_notes_are_refused(text in note_text()) {
        let v = signer().verifier();
        prop_assert!(v.open_note(&text).is_err());
        prop_assert!(open(&text, &v).is_err());
    }

    #[test]
    fn damaged_signed_checkpoints_open_as_the_original_or_not_at_all(c in checkpoint(), e in edits()) {
        let s = signer();
        let note = s.sign(&c).unwrap();
        let v = Verifier::from_key(&s.verifier_key()).unwrap();
        prop_assert_eq!(open(&note, &v), Ok(c.clone()));
        // A change to the text breaks the signature; a change to the signature lines may at most
        // turn ours into another key's (ignored) — then ours is missing.
        if let Ok(read) = open(&damage(&note, &e), &v) {
            prop_assert_eq!(read, c);
        }
    }

    #[test]
    fn inclusion_proofs_verify_and_every_damage_is_refused(
        n in 1usize..300, i in any::<prop::sample::Index>(), which in any::<prop::sample::Index>(),
        bit in 0u8..8, extra in any::<[u8; 32]>(),
    ) {
        let leaves: Vec<Hash> = (0..n).map(|k| leaf_hash(&k.to_be_bytes())).collect();
        let (size, index) = (n as u64, i.index(n) as u64);
        let src = Leaves(leaves.clone());
        let r = range_root(0, size, &src).unwrap();
        let proof = inclusion_proof(index, size, &src).unwrap();
        let leaf = leaves[i.index(n)];
        prop_assert_eq!(verify_inclusion(&leaf, index, size, &proof, &r), Ok(()));
        prop_assert!(verify_inclusion(&leaf, index ^ 1, size, &proof, &r).is_err() || size == 1);
        prop_assert!(verify_inclusion(&extra, index, size, &proof, &r).is_err());
        prop_assert!(verify_inclusion(&leaf, index, size, &[proof.clone(), vec![extra]].concat(), &r).is_err());
        if !proof.is_empty() {
            let mut bad = proof.clone();
            bad[which.index(proof.len())][0] ^= 1 << bit;
            prop_assert!(verify_inclusion(&leaf, index, size, &bad, &r).is_err());
            prop_assert!(verify_inclusion(&leaf, index, size, &proof[1..], &r).is_err());
        }
    }

    #[test]
    fn consistency_proofs_verify_and_every_damage_is_refused(
        n in 1usize..300, m in any::<prop::sample::Index>(), which in any::<prop::sample::Index>(),
        bit in 0u8..8, extra in any::<[u8; 32]>(),
    ) {
        let leaves: Vec<Hash> = (0..n).map(|k| leaf_hash(&k.to_be_bytes())).collect();
        let src = Leaves(leaves);
        let (new, old) = (n as u64, m.index(n + 1) as u64);
        let (r_old, r_new) = (range_root(0, old, &src).unwrap(), range_root(0, new, &src).unwrap());
        let proof = consistency_proof(old, new, &src).unwrap();
        prop_assert_eq!(verify_consistency(old, new, &r_old, &r_new, &proof), Ok(()));
        prop_assert!(verify_consistency(old, new, &extra, &r_new, &proof).is_err());
        // An empty old tree is a prefix of every tree, so only then may the new root be anything.
        prop_assert!(verify_consistency(old, new, &r_old, &extra, &proof).is_err() || old == 0);
        prop_assert!(verify_consistency(old, new, &r_old, &r_new, &[proof.clone(), vec![extra]].concat()).is_err());
        if !proof.is_empty() {
            let mut bad = proof.clone();
            bad[which.index(proof.len())][0] ^= 1 << bit;
            prop_assert!(verify_consistency(old, new, &r_old, &r_new, &bad).is_err());
            prop_assert!(verify_consistency(old, new, &r_old, &r_new, &proof[1..]).is_err());
        }
    }

    #[test]
    fn garbage_proofs_of_any_size_are_refused(
        index in any::<u64>(), size in any::<u64>(), old in any::<u64>(),
        leaf in any::<[u8; 32]>(), r in any::<[u8; 32]>(), r2 in any::<[u8; 32]>(),
        proof in prop::collection::vec(any::<[u8; 32]>(), 0..70),
    ) {
        prop_assert!(verify_inclusion(&leaf, index, size, &proof, &r).is_err());
        prop_assert!(verify_consistency(old, size, &r, &r2, &proof).is_err() || (old == size && r == r2 && proof.is_empty()));
        // Generating from nonsense nodes never panics either, whatever the sizes, and gives a proof
        // no longer than the tree is high.
        if let Ok(p) = inclusion_proof(index, size, &Garbage) {
            prop_assert!(p.len() <= 64);
            prop_assert!(verify_inclusion(&leaf, index, size, &p, &r).is_err());
        }
        if let Ok(p) = consistency_proof(old, size, &Garbage) {
            prop_assert!(p.len() <= 128);
        }
        let _ = range_root(index.min(size), size.max(index), &Garbage);
    }

    #[test]
    fn serialised_frontiers_parse_to_their_one_spelling(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        size in 0u64..2000,
    ) {
        if let Ok(f) = Frontier::from_bytes(&bytes) {
            prop_assert_eq!(f.to_bytes(), bytes);
        }
        let mut f = Frontier::new();
        for k in 0..size {
            f.append(leaf_hash(&k.to_be_bytes()));
        }
        prop_assert_eq!(Frontier::from_bytes(&f.to_bytes()), Ok(f));
    }
}

/// Base64 that decodes to the right length but is not canonical (non-zero padding bits) must not
/// give a second spelling of the same root.
#[test]
fn a_root_has_one_base64_spelling() {
    let root64 = BASE64.encode([9u8; 32]);
    assert!(Checkpoint::parse_body(&format!("o\n1\n{root64}\n")).is_ok());
    let last = root64.len() - 2;
    let mut other = root64.clone().into_bytes();
    other[last] += 1;
    let other = String::from_utf8(other).unwrap();
    assert!(Checkpoint::parse_body(&format!("o\n1\n{other}\n")).is_err(), "{other}");
}
