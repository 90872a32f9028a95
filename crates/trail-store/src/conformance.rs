//! The conformance suite: one set of checks, written against [`Store`], that every backend runs
//! (`trail_store::conformance_suite!` in the backend's tests). Results are compared with a simple
//! in-memory reference model built from [`Filter::matches`], with proptest generating events and queries.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc, reason = "a test suite fails by panicking")]

use std::collections::HashSet;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;
use trail_model::query::{ActionMatch, Filter, Query};
use trail_model::text::Search;
use trail_model::time::{MICROS_PER_DAY, Micros, parse_rfc3339};
use trail_model::{Actor, ActorType, NewEvent, Outcome, StoredEvent, Target};

use crate::{
    ApiKey, Appended, Export, ExportFormat, ExportKind, ExportStatus, Group, Invitation, MonthSummary,
    OrgSettings, Permission, Record, Role, Scope, Session, Store, StoreError, StoredCheckpoint,
};

/// Generates one `#[tokio::test]` per check for a backend. `$make` is an async closure returning
/// `(store, guard)`; the guard (e.g. a temporary directory) lives as long as the test.
///
/// `conformance_suite!(optional $make)` is for a backend that needs a server which may be absent
/// (PostgreSQL): `$make` returns `Option<(store, guard)>`, and a test whose `$make` gives `None`
/// returns at once (the closure says why it skipped).
#[macro_export]
macro_rules! conformance_suite {
    (optional $make:expr) => {
        $crate::conformance_suite!(@list optional $make);
    };
    ($make:expr) => {
        $crate::conformance_suite!(@list tests $make);
    };
    (@list $mode:ident $make:expr) => {
        $crate::conformance_suite!(@$mode $make;
            append_assigns_gapless_seq, duplicates_answer_original_seq, stored_bytes_round_trip,
            minted_ids_and_default_time, orgs_are_isolated, queries_match_reference_model,
            free_text_at_every_density, free_text_histograms_at_every_alignment, tree_sizes_list_every_log,
            paging_is_stable_while_appending, histogram_matches_reference_model,
            histograms_of_whole_logs_at_every_width_and_alignment, histograms_by_field_in_dense_and_sparse_slots,
            access_records,
            concurrent_appends_keep_seq_gapless, merkle_roots_and_proofs_verify,
            checkpoints_are_kept_and_never_contradict, roles_groups_and_invitations, exports_are_claimed_once,
            retention_prunes_months_and_keeps_proofs, events_after_follow_the_log_in_seq_order,
            destinations_keep_config_progress_and_lease, documents_are_kept_per_org_and_kind);
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, _guard) = ($make)().await;
                $crate::conformance::$name(std::sync::Arc::new(store)).await;
            }
        )*
    };
    (@optional $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some((store, _guard)) = ($make)().await else {
                    return;
                };
                $crate::conformance::$name(std::sync::Arc::new(store)).await;
            }
        )*
    };
}

/// A fixed "now" for the suite: 2026-03-15, so generated windows straddle month boundaries.
pub fn now() -> Micros {
    parse_rfc3339("2026-03-15T12:00:00Z").unwrap()
}

/// A valid event with the given actor, action and time.
pub fn event(actor: &str, action: &str, time: Micros) -> NewEvent {
    NewEvent {
        id: None,
        time: Some(time),
        actor: Actor { id: actor.into(), kind: ActorType::User, name: None, ip: None, user_agent: None },
        action: action.into(),
        target: Target { kind: "component".into(), id: Some("c-1".into()), name: None },
        project: None,
        outcome: Outcome::Success,
        reason: None,
        source: None,
        info: None,
    }
}

async fn org<S: Store>(store: &S, slug: &str) {
    store.create_org(slug, slug, now()).await.unwrap();
}

fn created_seqs(r: &[Appended]) -> Vec<u64> {
    r.iter()
        .map(|a| match a {
            Appended::Created { seq, .. } => *seq,
            Appended::Duplicate { .. } | Appended::Conflict { .. } => panic!("not created: {a:?}"),
        })
        .collect()
}

pub async fn append_assigns_gapless_seq<S: Store>(store: Arc<S>) {
    org(&*store, "acme").await;
    assert_eq!(store.tree_size("acme").await.unwrap(), 0);
    let t = now() - 1000;
    let r = store.append("acme", vec![event("a", "x.y", t); 3], now()).await.unwrap();
    assert_eq!(created_seqs(&r), [0, 1, 2]);
    let r = store.append("acme", vec![event("a", "x.y", t); 2], now()).await.unwrap();
    assert_eq!(created_seqs(&r), [3, 4]);
    assert_eq!(store.tree_size("acme").await.unwrap(), 5);
    assert!(matches!(
        store.append("nope", vec![event("a", "x.y", t)], now()).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn duplicates_answer_original_seq<S: Store>(store: Arc<S>) {
    org(&*store, "acme").await;
    org(&*store, "other").await;
    let t = now() - 1000;
    let mut e = event("a", "x.y", t);
    e.id = Some("evt-1".into());
    let mut changed = e.clone();
    changed.actor.id = "mallory".into();
    let r = store.append("acme", vec![event("a", "x.y", t), e.clone(), e.clone()], now()).await.unwrap();
    assert_eq!(r[1], Appended::Created { id: "evt-1".into(), seq: 1 });
    assert_eq!(r[2], Appended::Duplicate { id: "evt-1".into(), seq: 1 }, "duplicate within one batch");
    let mut changed_in_batch = changed.clone();
    changed_in_batch.reason = Some("other".into());
    let r = store.append("acme", vec![changed, e.clone(), changed_in_batch], now()).await.unwrap();
    assert_eq!(
        r,
        [
            Appended::Conflict { id: "evt-1".into(), seq: 1 },
            Appended::Duplicate { id: "evt-1".into(), seq: 1 },
            Appended::Conflict { id: "evt-1".into(), seq: 1 },
        ],
        "a reused id with other content is a conflict; the same content again is a duplicate"
    );
    // Without a time, a retry is a duplicate when the original had none either (its time was its
    // receipt), whatever the retry's receipt time.
    let mut untimed = event("a", "x.y", t);
    untimed.id = Some("evt-2".into());
    untimed.time = None;
    let first = store.append("acme", vec![untimed.clone()], now() - 5_000_000).await.unwrap();
    assert_eq!(first[0], Appended::Created { id: "evt-2".into(), seq: 2 });
    let mut timed = untimed.clone();
    timed.time = Some(t);
    let r = store.append("acme", vec![untimed, timed], now()).await.unwrap();
    assert_eq!(
        r,
        [
            Appended::Duplicate { id: "evt-2".into(), seq: 2 },
            Appended::Conflict { id: "evt-2".into(), seq: 2 }
        ]
    );
    assert_eq!(store.tree_size("acme").await.unwrap(), 3);
    let stored = store.event("acme", "evt-1").await.unwrap().unwrap();
    assert_eq!(stored.event.actor.id, "a", "the original bytes are never replaced");
    let r = store.append("other", vec![e], now()).await.unwrap();
    assert_eq!(r[0], Appended::Created { id: "evt-1".into(), seq: 0 }, "ids are per org");
}

pub async fn stored_bytes_round_trip<S: Store>(store: Arc<S>) {
    org(&*store, "acme").await;
    let mut e = event("alice@example.com", "component.deployed", now() - 5_000_123);
    e.id = Some("evt-rt".into());
    e.actor = Actor {
        id: "alice@example.com".into(),
        kind: ActorType::Service,
        name: Some("Alice \"Ops\", Zürich".into()),
        ip: Some("2001:db8::1".into()),
        user_agent: Some("curl/8.1".into()),
    };
    e.project = Some("billing".into());
    e.outcome = Outcome::Failure;
    e.reason = Some("quota exceeded\nline two".into());
    e.source = Some("console".into());
    e.info = Some(
        json!({"request_id": "req-1", "changes": {"replicas": [1, 3]}, "emoji": "🚀"})
            .as_object()
            .unwrap()
            .clone(),
    );
    store.append("acme", vec![e.clone()], now()).await.unwrap();
    let r = store.event("acme", "evt-rt").await.unwrap().unwrap();
    let s = &r.event;
    assert_eq!((s.org.as_str(), s.seq, s.time, s.received_at), ("acme", 0, now() - 5_000_123, now()));
    assert_eq!(
        (&s.actor, &s.target, &s.project, &s.reason, &s.source, &s.info),
        (&e.actor, &e.target, &e.project, &e.reason, &e.source, &e.info)
    );
    assert_eq!(Record::from_bytes(r.bytes.clone()).unwrap().event, r.event);
    assert_eq!(r.leaf_hash(), trail_merkle::leaf_hash(&r.bytes));
    assert!(store.event("acme", "missing").await.unwrap().is_none());
}

pub async fn minted_ids_and_default_time<S: Store>(store: Arc<S>) {
    org(&*store, "acme").await;
    let mut e = event("a", "x.y", 0);
    e.time = None;
    let r = store.append("acme", vec![e.clone(), e], now()).await.unwrap();
    assert_ne!(r[0].id(), r[1].id());
    let got = store.event("acme", r[1].id()).await.unwrap().unwrap();
    assert_eq!((got.event.seq, got.event.time), (1, now()));
}

pub async fn orgs_are_isolated<S: Store>(store: Arc<S>) {
    org(&*store, "acme").await;
    org(&*store, "globex").await;
    let mut e = event("a", "x.y", now() - 1000);
    e.id = Some("secret".into());
    store.append("acme", vec![e], now()).await.unwrap();
    assert!(store.event("globex", "secret").await.unwrap().is_none());
    let q = Query { filter: window(now() - MICROS_PER_DAY, now()), limit: 10, cursor: None };
    assert_eq!(store.query("globex", &q).await.unwrap().records.len(), 0);
    assert_eq!(store.query("acme", &q).await.unwrap().records.len(), 1);
    assert!(store.histogram("globex", &q.filter, MICROS_PER_DAY).await.unwrap().is_empty());
    assert!(matches!(store.create_org("acme", "again", now()).await, Err(StoreError::Conflict(_))));
}

fn window(from: Micros, to: Micros) -> Filter {
    Filter { from, to, ..Filter::default() }
}

// ---- generated events and queries against the reference model ----------------------------------

const ACTORS: &[&str] = &["alice@acme.io", "bob@acme.io", "ci-bot", "carol"];
const ACTIONS: &[&str] =
    &["component.deployed", "component.created", "project.deleted", "user.invited", "user.role_assigned"];
const TARGET_TYPES: &[&str] = &["component", "project", "user"];
const TARGET_IDS: &[&str] = &["c-1", "c-2", "p-9", "u-7"];
const PROJECTS: &[&str] = &["billing", "search"];
const SOURCES: &[&str] = &["console", "api", "cli"];
const WORDS: &[&str] = &["req-5f2a9c", "req-5f3b00", "Zürich", "timeout", "replicas", "east-1"];
/// Generated events fall within the 50 days before `now()`, crossing two month boundaries.
const SPAN_DAYS: i64 = 50;

fn arb_event() -> impl Strategy<Value = NewEvent> {
    (
        (0..SPAN_DAYS * MICROS_PER_DAY, 0..ACTORS.len(), 0..ACTIONS.len(), 0..TARGET_TYPES.len()),
        (proptest::option::of(0..TARGET_IDS.len()), proptest::option::of(0..PROJECTS.len())),
        (any::<bool>(), proptest::option::of(0..SOURCES.len()), proptest::option::of(0..WORDS.len())),
        (0..3u8),
    )
        .prop_map(|((t, a, ac, tt), (tid, p), (ok, s, w), dup)| {
            let mut e = event(ACTORS[a], ACTIONS[ac], now() - t);
            // Coarse times make (time, seq) ties common, which is where ordering bugs hide.
            if dup == 0 {
                e.time = Some(now() - (t / MICROS_PER_DAY) * MICROS_PER_DAY);
            }
            e.target =
                Target { kind: TARGET_TYPES[tt].into(), id: tid.map(|i| TARGET_IDS[i].into()), name: None };
            e.project = p.map(|i| PROJECTS[i].into());
            e.outcome = if ok { Outcome::Success } else { Outcome::Failure };
            e.source = s.map(|i| SOURCES[i].into());
            e.info = w.map(|i| json!({"note": WORDS[i], "n": i}).as_object().unwrap().clone());
            e
        })
}

fn pick<T: Clone + std::fmt::Debug + 'static>(items: &'static [T]) -> impl Strategy<Value = Vec<T>> {
    proptest::collection::vec(proptest::sample::select(items), 0..=2)
}

fn arb_filter() -> impl Strategy<Value = Filter> {
    (
        (0..SPAN_DAYS * MICROS_PER_DAY, 1..SPAN_DAYS * MICROS_PER_DAY),
        (pick(ACTORS), pick(ACTIONS), any::<bool>(), pick(TARGET_TYPES), pick(TARGET_IDS)),
        (pick(PROJECTS), pick(&[Outcome::Success, Outcome::Failure]), pick(SOURCES)),
        proptest::option::of(prop_oneof![
            proptest::sample::select(WORDS).prop_map(str::to_string),
            Just("req-5f".to_string()),
            Just("zür".to_string()),
            Just("acme deployed".to_string()),
            Just("c-1".to_string()),
        ]),
    )
        .prop_map(|((start, len), (actor, action, prefix, tt, tid), (project, outcome, source), q)| {
            Filter {
                from: now() - start - MICROS_PER_DAY,
                to: (now() - start - MICROS_PER_DAY + len).min(now() + 1),
                actor: actor.into_iter().map(str::to_string).collect(),
                action: action
                    .into_iter()
                    .map(|a| {
                        if prefix {
                            ActionMatch::Prefix(format!("{}.", a.split('.').next().unwrap_or(a)))
                        } else {
                            ActionMatch::Exact(a.to_string())
                        }
                    })
                    .collect(),
                target_type: tt.into_iter().map(str::to_string).collect(),
                target_id: tid.into_iter().map(str::to_string).collect(),
                project: project.into_iter().map(str::to_string).collect(),
                outcome,
                source: source.into_iter().map(str::to_string).collect(),
                q: q.map(|q| Search::parse(&q).unwrap()),
            }
        })
}

/// The reference model: every stored event of one org, filtered and sorted in memory.
#[derive(Default, Debug)]
pub struct Model {
    pub events: Vec<StoredEvent>,
}

impl Model {
    pub fn record(&mut self, org: &str, input: &[NewEvent], result: &[Appended], received_at: Micros) {
        for (e, r) in input.iter().zip(result) {
            if let Appended::Created { id, seq } = r {
                self.events.push(StoredEvent {
                    org: org.into(),
                    seq: *seq,
                    id: id.clone(),
                    time: e.time.unwrap_or(received_at),
                    received_at,
                    actor: e.actor.clone(),
                    action: e.action.clone(),
                    target: e.target.clone(),
                    project: e.project.clone(),
                    outcome: e.outcome,
                    reason: e.reason.clone(),
                    source: e.source.clone(),
                    info: e.info.clone(),
                });
            }
        }
    }

    /// Matching `(time, seq)` keys, newest first.
    pub fn select(&self, f: &Filter) -> Vec<(Micros, u64)> {
        let mut keys: Vec<_> = self.events.iter().filter(|e| f.matches(e)).map(|e| (e.time, e.seq)).collect();
        keys.sort_unstable_by(|a, b| b.cmp(a));
        keys
    }
}

async fn page_all<S: Store>(store: &S, org: &str, filter: &Filter, limit: usize) -> Vec<(Micros, u64)> {
    let mut out = Vec::new();
    let mut q = Query { filter: filter.clone(), limit, cursor: None };
    for _ in 0..10_000 {
        let page = store.query(org, &q).await.unwrap();
        assert!(page.records.len() <= limit);
        out.extend(page.records.iter().map(|r| (r.event.time, r.event.seq)));
        match page.next {
            Some(c) => q.cursor = Some(c),
            None => return out,
        }
    }
    panic!("paging did not terminate");
}

fn sample<T: std::fmt::Debug>(runner: &mut TestRunner, s: &impl Strategy<Value = T>) -> T {
    s.new_tree(runner).unwrap().current()
}

pub async fn queries_match_reference_model<S: Store>(store: Arc<S>) {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        proptest::test_runner::TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    for case in 0..12 {
        let slug = format!("org-{case}");
        org(&*store, &slug).await;
        let mut model = Model::default();
        let n = sample(&mut runner, &(20usize..300));
        let events = sample(&mut runner, &proptest::collection::vec(arb_event(), n));
        for chunk in events.chunks(97) {
            let r = store.append(&slug, chunk.to_vec(), now()).await.unwrap();
            model.record(&slug, chunk, &r, now());
        }
        for _ in 0..25 {
            let filter = sample(&mut runner, &arb_filter());
            let limit = sample(&mut runner, &(1usize..40));
            let want = model.select(&filter);
            let got = page_all(&*store, &slug, &filter, limit).await;
            assert_eq!(got, want, "case {case}: filter {filter:?}, limit {limit}");
            // The undecoded page is the same page.
            let q = Query { filter: filter.clone(), limit, cursor: None };
            let (page, raw) =
                (store.query(&slug, &q).await.unwrap(), store.query_raw(&slug, &q).await.unwrap());
            assert_eq!(page.next, raw.next);
            let decoded: Vec<_> =
                page.records.iter().map(|r| (r.event.time, r.event.seq, r.bytes.clone())).collect();
            let raw: Vec<_> = raw.records.into_iter().map(|r| (r.time, r.seq, r.bytes)).collect();
            assert_eq!(decoded, raw);
        }
    }
}

/// `tree_sizes` lists every org, the empty ones too, with the same size `tree_size` gives, by slug.
pub async fn tree_sizes_list_every_log<S: Store>(store: Arc<S>) {
    for slug in ["zeta", "alpha", "mid"] {
        org(&*store, slug).await;
    }
    let t = now() - MICROS_PER_DAY;
    store.append("alpha", (0..3).map(|i| event("a", "user.invited", t + i)).collect(), now()).await.unwrap();
    store.append("zeta", vec![event("z", "user.invited", t)], now()).await.unwrap();
    let sizes = store.tree_sizes().await.unwrap();
    let slugs: Vec<&str> = sizes.iter().map(|(s, _)| s.as_str()).collect();
    let mut sorted = slugs.clone();
    sorted.sort_unstable();
    assert_eq!(slugs, sorted, "by slug");
    let of = |slug: &str| sizes.iter().find(|(s, _)| s == slug).map(|(_, n)| *n);
    assert_eq!((of("alpha"), of("mid"), of("zeta")), (Some(3), Some(0), Some(1)));
    for (slug, n) in &sizes {
        assert_eq!(store.tree_size(slug).await.unwrap(), *n, "{slug}");
    }
    let orgs: Vec<String> = store.orgs().await.unwrap().into_iter().map(|o| o.slug).collect();
    assert_eq!(slugs, orgs.iter().map(String::as_str).collect::<Vec<_>>());
    // Orgs created by this release: `source: "trail"` is the server's from the first event on.
    assert_eq!(store.self_audit_from("alpha").await.unwrap(), 0);
    assert!(matches!(store.self_audit_from("nowhere").await, Err(StoreError::NotFound(_))));
}

/// Free text over enough events that a backend cannot read them all for one page: terms in every
/// event, in one event in ten or in a thousand, only in old events, only in new ones, in none, and
/// combined with other filters, paged at several sizes against the reference model. (The embedded store
/// switches between walking the time index and driving from its full-text index by how common a term
/// looks; every switch point must give the same pages.)
pub async fn free_text_at_every_density<S: Store>(store: Arc<S>) {
    org(&*store, "acme").await;
    let mut model = Model::default();
    const N: i64 = 30_000;
    // Two months, oldest first; a few events out of time order.
    let start = now() - 40 * MICROS_PER_DAY;
    let step = 40 * MICROS_PER_DAY / N;
    let events: Vec<NewEvent> = (0..N)
        .map(|i| {
            let t = if i % 997 == 0 { start + (N - i) * step } else { start + i * step };
            let mut e = event(ACTORS[(i % 4) as usize], ACTIONS[(i % 5) as usize], t);
            let mut words = vec!["every".to_string(), format!("req-{i:05x}")];
            if i % 10 == 0 {
                words.push("tenth".into());
            }
            if i % 1000 == 0 {
                words.push("thousandth".into());
            }
            if i < 40 {
                words.push("ancient Zürich काम".into());
            }
            if i < N / 2 {
                words.push("firsthalf".into());
            }
            if i >= N - 30 {
                words.push("newest".into());
            }
            // A phrase, and the same pairs of tokens apart (an index of token pairs finds both).
            if i % 7 == 0 {
                words.push("alpha beta gamma".into());
            }
            if i % 11 == 0 {
                words.push("alpha beta x beta gamma".into());
            }
            // Words with a number of one or two digits begin pairs too; numbers do not; the same apart.
            if i % 13 == 0 {
                words.push("linux x86-64 v2".into());
            }
            if i % 17 == 0 {
                words.push("x86 arm 64 v2-beta user24".into());
            }
            e.info = Some(json!({"note": words.join(" ")}).as_object().unwrap().clone());
            e
        })
        .collect();
    for chunk in events.chunks(5_000) {
        let r = store.append("acme", chunk.to_vec(), now()).await.unwrap();
        model.record("acme", chunk, &r, now());
    }
    let all = Filter { from: start - MICROS_PER_DAY, to: now(), ..Filter::default() };
    let terms = [
        "every",
        "tenth",
        "thousandth",
        "ancient",
        "firsthalf",
        "newest",
        "nowhere",
        "req-00a",
        "req",
        "zür",
        "ZÜRICH ancient",
        // One word to the reference (the vowel sign is part of it), two to FTS5's tokenizer: "म"
        // matches nothing, whichever way a backend searches.
        "काम",
        "म",
        "alpha-beta-gamma",
        "alpha.beta.gam",
        "beta-gamma",
        "x-beta-gamma alpha",
        "gamma-alpha",
        // Words beginning with a token that has digits: the index holds no pairs for them.
        "0000a-tenth",
        "00014-firsthalf",
        "x86-64",
        "x86-6",
        "64-v2",
        "v2-b",
        "user24-alpha",
        "arm-64-v",
    ];
    for q in terms {
        let f = Filter { q: Some(Search::parse(q).unwrap()), ..all.clone() };
        assert_eq!(
            store_histogram(&*store, "acme", &f, MICROS_PER_DAY).await,
            model_histogram(&model, &f, MICROS_PER_DAY),
            "histogram of q={q}"
        );
        for (limit, extra) in [(50, None), (7, None), (20, Some(ACTORS[1]))] {
            let mut f = all.clone();
            f.q = Some(Search::parse(q).unwrap());
            f.actor = extra.into_iter().map(str::to_string).collect();
            let want = model.select(&f);
            // Paging through a common term would take thousands of pages: compare the first 30.
            let got = page_first(&*store, "acme", &f, limit, 30).await;
            assert_eq!(
                got,
                want.iter().take(got.len()).copied().collect::<Vec<_>>(),
                "q={q} limit={limit} actor={extra:?}"
            );
            assert!(
                got.len() == want.len() || got.len() == 30 * limit,
                "q={q}: {} of {}",
                got.len(),
                want.len()
            );
        }
    }
}

/// Free-text histograms whose windows and buckets cut through runs of consecutive events, which a
/// backend may place by their keys rather than their rows (the embedded store's `key_blocks`): one
/// event a second across a month boundary, some late (out of time order, a few into the month
/// before); windows starting before, on, a second after and mid-run; widths from a second to a day;
/// words the index answers exactly, prefixes of one, two and ten words, a word in one event of each
/// month (fewer matches than blocks: a backend may look each one up), and a word it answers with a
/// superset; each before and after the index has caught up. Then the org's older month is pruned and
/// late events are appended to it again: only those are counted.
pub async fn free_text_histograms_at_every_alignment<S: Store>(store: Arc<S>) {
    org(&*store, "acme").await;
    org(&*store, "globex").await;
    let mut model = Model::default();
    let boundary = parse_rfc3339("2026-03-01T00:00:00Z").unwrap();
    let second = 1_000_000;
    let noted = |t: Micros, i: i64| {
        let mut e = event(ACTORS[(i % 4) as usize], ACTIONS[(i % 5) as usize], t);
        // `ten` is the prefix of two words, `w` of ten (one in every event).
        let mut words = vec!["every".to_string(), format!("w{}", i % 10)];
        words.extend(
            [
                (i % 10 == 0, "tenth"),
                (i % 600 == 5, "lone"),
                (i % 4 == 1, "tens"),
                (i % 3 == 0, "x86-64"),
                (i % 5 == 0, "alpha-beta-gamma"),
            ]
            .into_iter()
            .filter(|&(has, _)| has)
            .map(|(_, w)| w.to_string()),
        );
        e.info = Some(json!({"note": words.join(" ")}).as_object().unwrap().clone());
        e
    };
    let events: Vec<NewEvent> = (0..700)
        .map(|i| {
            let late = if i % 50 == 7 { 200 * second } else { 0 };
            noted(boundary - 350 * second + i * second - late, i)
        })
        .collect();
    for chunk in events.chunks(100) {
        let r = store.append("acme", chunk.to_vec(), now()).await.unwrap();
        model.record("acme", chunk, &r, now());
    }
    let theirs: Vec<NewEvent> = (0..50).map(|i| noted(boundary - 100 * second + i * second, 0)).collect();
    store.append("globex", theirs, now()).await.unwrap();
    free_text_histograms_around(&*store, &model, boundary, None).await;
    caught_up(&*store).await;
    free_text_histograms_around(&*store, &model, boundary, None).await;

    // February leaves the hot store; its entries may stay in a full-text index. Late events are then
    // appended to February again, after every event of March in the log.
    let february = month_all(&*store, "acme", 202602).await;
    let summary = MonthSummary { count: february.len() as u64, last_seq: february.last().unwrap().seq };
    store.prune_month("acme", 202602, summary).await.unwrap();
    let late: Vec<NewEvent> = (0..10).map(|i| noted(boundary - 30 * second + i * second, i * 10)).collect();
    let r = store.append("acme", late.clone(), now()).await.unwrap();
    model.record("acme", &late, &r, now());
    let first_late = r[0].seq();
    free_text_histograms_around(&*store, &model, boundary, Some(first_late)).await;
    caught_up(&*store).await;
    free_text_histograms_around(&*store, &model, boundary, Some(first_late)).await;
}

/// [`free_text_histograms_at_every_alignment`]'s histograms of acme around `boundary`, against the
/// model. `late`: once February is pruned, the first seq of the events appended to it again (the
/// model still holds the pruned ones).
async fn free_text_histograms_around<S: Store>(
    store: &S,
    model: &Model,
    boundary: Micros,
    late: Option<u64>,
) {
    let second = 1_000_000;
    let froms = [-400, -351, -350, -349, -287, -1, 0, 1, 63, 64, 65, 340].map(|s| boundary + s * second);
    let tos = [-300, 2, 64, 351, 86_400].map(|s| boundary + s * second);
    let widths = [second, 7 * second, 64 * second, 3_600 * second, MICROS_PER_DAY];
    let hot = |&(t, seq): &(Micros, u64)| late.is_none_or(|l| t >= boundary || seq >= l);
    for q in ["every", "tenth", "ten", "w", "w3 ten", "lone", "x86-64", "alpha-beta-gamma"] {
        for (from, to) in froms.iter().flat_map(|&f| tos.iter().map(move |&t| (f, t))).filter(|(f, t)| f < t)
        {
            let f = Filter { from, to, q: Some(Search::parse(q).unwrap()), ..Filter::default() };
            let selected: Vec<(Micros, u64)> = model.select(&f).into_iter().filter(hot).collect();
            for width in widths {
                let want = bucketed(selected.iter().map(|&(t, _)| t), f.from, width);
                let got = store_histogram(store, "acme", &f, width).await;
                assert_eq!(got, want, "q={q} from {from} to {to} width {width} late {late:?}");
            }
        }
    }
}

/// Waits until the store's full-text index holds every event (a backend that indexes inside the append
/// always does).
async fn caught_up<S: Store>(store: &S) {
    for _ in 0..600 {
        if store.search_index_lag().await.unwrap() == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the full-text index did not catch up within 30 s");
}

/// The first `pages` pages of a query, concatenated.
async fn page_first<S: Store>(
    store: &S,
    org: &str,
    filter: &Filter,
    limit: usize,
    pages: usize,
) -> Vec<(Micros, u64)> {
    let mut out = Vec::new();
    let mut q = Query { filter: filter.clone(), limit, cursor: None };
    for _ in 0..pages {
        let page = store.query(org, &q).await.unwrap();
        assert!(page.records.len() <= limit);
        out.extend(page.records.iter().map(|r| (r.event.time, r.event.seq)));
        match page.next {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    out
}

pub async fn histogram_matches_reference_model<S: Store>(store: Arc<S>) {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        proptest::test_runner::TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    org(&*store, "acme").await;
    let mut model = Model::default();
    let events = sample(&mut runner, &proptest::collection::vec(arb_event(), 400));
    let r = store.append("acme", events.clone(), now()).await.unwrap();
    model.record("acme", &events, &r, now());
    for _ in 0..30 {
        let filter = sample(&mut runner, &arb_filter());
        let width = sample(
            &mut runner,
            &prop_oneof![Just(3_600_000_000i64), Just(MICROS_PER_DAY), Just(7 * MICROS_PER_DAY)],
        );
        let (got, want) =
            (store_histogram(&*store, "acme", &filter, width).await, model_histogram(&model, &filter, width));
        assert_eq!(got, want, "filter {filter:?}, width {width}");
    }
}

/// Creates `org` and appends [`dense_then_sparse`] from two days ago in batches of 50 (the stores'
/// migration tests of counts per field value); returns the start it used.
pub async fn append_dense_then_sparse<S: Store>(store: &S, org: &str) -> Micros {
    store.create_org(org, org, now()).await.unwrap();
    let start = now() - 2 * MICROS_PER_DAY;
    for batch in dense_then_sparse(start).chunks(50) {
        store.append(org, batch.to_vec(), now()).await.unwrap();
    }
    start
}

/// Histograms by actor (with and without an outcome) over what [`append_dense_then_sparse`] appended
/// count every one of its events.
pub async fn assert_dense_then_sparse_histograms<S: Store>(store: &S, org: &str, start: Micros) {
    let window = Filter { from: start - MICROS_PER_DAY, to: now(), ..Filter::default() };
    for (actor, outcome, want) in [("al", vec![], 100), ("bo", vec![Outcome::Failure], 25)] {
        let f = Filter { actor: vec![actor.into()], outcome, ..window.clone() };
        let counted: u64 =
            store.histogram(org, &f, MICROS_PER_DAY / 24).await.unwrap().iter().map(|b| b.count).sum();
        assert_eq!(counted, want, "{actor}");
    }
}

/// 300 events from the ten minutes `start` falls in, for the stores' migration tests of counts per field value: 240 in 40
/// minutes (four dense ten minutes), then 60 ten minutes apart (sparse ones); three actors, a project
/// on every other event, a source on every fifth, every fourth a failure.
pub fn dense_then_sparse(start: Micros) -> Vec<NewEvent> {
    let slot = 600 * 1_000_000;
    let start = start.div_euclid(slot) * slot; // four whole slots, whatever `start` was
    (0..300i64)
        .map(|i| {
            let t = if i < 240 {
                start + i * 10_000_000
            } else {
                start + MICROS_PER_DAY / 2 + (i - 240) * 600_000_000
            };
            let mut e = event(["al", "bo", "cy"][i as usize % 3], "x.y", t);
            e.project = (i % 2 == 0).then(|| "billing".to_string());
            e.source = (i % 5 == 0).then(|| "api".to_string());
            if i % 4 == 0 {
                e.outcome = Outcome::Failure;
            }
            e
        })
        .collect()
}

/// The model's histogram of a filter: counts per bucket start.
fn model_histogram(model: &Model, filter: &Filter, width: Micros) -> std::collections::BTreeMap<Micros, u64> {
    bucketed(model.select(filter).into_iter().map(|(t, _)| t), filter.from, width)
}

/// Counts per bucket start of events at `times`, in buckets of `width` from `from`.
fn bucketed(
    times: impl Iterator<Item = Micros>,
    from: Micros,
    width: Micros,
) -> std::collections::BTreeMap<Micros, u64> {
    let mut counts = std::collections::BTreeMap::new();
    for t in times {
        *counts.entry(from + (t - from) / width * width).or_default() += 1;
    }
    counts
}

/// A store's histogram of a filter: counts per bucket start.
async fn store_histogram<S: Store>(
    store: &S,
    org: &str,
    filter: &Filter,
    width: Micros,
) -> std::collections::BTreeMap<Micros, u64> {
    store.histogram(org, filter, width).await.unwrap().into_iter().map(|b| (b.start, b.count)).collect()
}

/// Histograms without filters, by outcome and by action, which a backend may answer from counts per
/// unit of time: events on minute boundaries and a microsecond either side, across a month boundary,
/// late (out of time order), repeated (duplicates count once) and beside another org's; windows
/// starting on a minute, just after it and mid-minute; widths below, at and above a minute and ten
/// minutes, and not multiples of one; actions exact, by prefix and several.
pub async fn histograms_of_whole_logs_at_every_width_and_alignment<S: Store>(store: Arc<S>) {
    org(&*store, "acme").await;
    org(&*store, "globex").await;
    let minute = 60 * 1_000_000;
    let boundary = trail_model::time::month_start(trail_model::time::month_of(now()));
    let mut model = Model::default();
    let mut times = Vec::new();
    for i in 0..600i64 {
        // Spread over a day either side of the month boundary, some exactly on minutes.
        let t =
            boundary - MICROS_PER_DAY + i * 4 * minute + [0, 1, -1, 37_500_000, minute / 2][i as usize % 5];
        times.push(t);
    }
    let (early, late) = times.split_at(400);
    for batch in [late, early] {
        let events: Vec<NewEvent> = batch
            .iter()
            .map(|t| {
                let mut e = event("a", ["x.y", "x.z", "w.v"][t.rem_euclid(3) as usize], *t);
                e.id = Some(format!("e{t}"));
                // Failures too, unevenly: histograms by outcome are counted per minute as well.
                if t.rem_euclid(7) < 3 {
                    e.outcome = Outcome::Failure;
                }
                e
            })
            .collect();
        let r = store.append("acme", events.clone(), now()).await.unwrap();
        model.record("acme", &events, &r, now());
        let again = store.append("acme", events[..50].to_vec(), now()).await.unwrap();
        assert!(again.iter().all(|a| matches!(a, Appended::Duplicate { .. })));
    }
    store.append("globex", times.iter().map(|t| event("g", "x.y", *t)).collect(), now()).await.unwrap();
    let starts =
        [boundary - MICROS_PER_DAY, boundary - 3 * 3_600_000_000 + 1, boundary - 7 * minute - 123_456];
    let widths = [
        30_000_000,
        minute,
        90_000_000,
        5 * minute,
        10 * minute,
        17 * minute,
        3_600_000_000,
        MICROS_PER_DAY,
        7 * MICROS_PER_DAY,
    ];
    let actions = [
        vec![],
        vec![ActionMatch::Exact("x.y".into())],
        vec![ActionMatch::Prefix("x.".into())],
        vec![ActionMatch::Exact("w.v".into()), ActionMatch::Exact("x.z".into())],
        vec![ActionMatch::Exact("no.such".into())],
    ];
    for from in starts {
        for to in [boundary + MICROS_PER_DAY + 1, boundary + 17 * minute + 5_000_000] {
            for (width, outcome) in widths.into_iter().flat_map(|w| {
                [
                    vec![],
                    vec![Outcome::Failure],
                    vec![Outcome::Success],
                    vec![Outcome::Success, Outcome::Failure],
                ]
                .map(|o| (w, o))
            }) {
                for action in &actions {
                    let filter =
                        Filter { outcome: outcome.clone(), action: action.clone(), ..window(from, to) };
                    let (got, want) = (
                        store_histogram(&*store, "acme", &filter, width).await,
                        model_histogram(&model, &filter, width),
                    );
                    assert_eq!(got, want, "from {from}, to {to}, width {width}, {outcome:?}, {action:?}");
                }
            }
        }
    }
}

/// Histograms by actor, target type, project and source, which a backend may answer from counts per
/// value and ten minutes where an org's ten minutes are dense: slots far above, just at, just below
/// and far below 32 events; slots made dense by a later append (a batch, then single events) and
/// never; a dense slot on each side of a month boundary; missing projects and sources; duplicates;
/// another org's events in the same slots; windows and buckets on and off ten-minute boundaries; then
/// the older month pruned.
pub async fn histograms_by_field_in_dense_and_sparse_slots<S: Store>(store: Arc<S>) {
    let this_month = trail_model::time::month_start(trail_model::time::month_of(now()));
    histograms_by_field_around(store.clone(), ("acme", "globex"), this_month).await;
    // The same around 1970-01-01, a month boundary too: slots and minutes before it are negative, and
    // must round down, not towards zero.
    histograms_by_field_around(store, ("initech", "hooli"), 0).await;
}

/// Histograms by field over slots of every density on both sides of the month boundary `boundary`,
/// in the org `orgs.0` (`orgs.1` is another org, dense in the same slots), checked against the model,
/// before and after the month before `boundary` is pruned.
async fn histograms_by_field_around<S: Store>(
    store: Arc<S>,
    orgs: (&'static str, &'static str),
    boundary: Micros,
) {
    let (acme, globex) = orgs;
    org(&*store, acme).await;
    org(&*store, globex).await;
    let (minute, slot) = (60 * 1_000_000i64, 600 * 1_000_000i64);
    // Events per slot, from four slots before the boundary: dense, at the threshold, below it, alone,
    // empty, dense across two appends, dense, then one more made dense by single events.
    let per_slot = [80, 32, 31, 1, 0, 45, 120, 33];
    let first = boundary - 4 * slot;
    let make = |s: usize, i: i64| {
        let t = first + s as i64 * slot + (i * 7_919_000) % slot;
        let mut e = event(["al", "bo", "cy"][(i % 3) as usize], "x.y", t);
        e.id = Some(format!("s{s}-{i}"));
        e.target.kind = ["component", "project"][(i % 2) as usize].into();
        e.project = [None, Some("billing".to_string()), Some("search".to_string())][(i % 3) as usize].clone();
        e.source = (i % 4 != 0).then(|| ["api", "console"][(i % 5 % 2) as usize].to_string());
        if i % 5 == 2 {
            e.outcome = Outcome::Failure;
        }
        e
    };
    let mut model = Model::default();
    let append = |events: Vec<NewEvent>| {
        let store = store.clone();
        async move {
            let r = store.append(acme, events.clone(), now()).await.unwrap();
            (events, r)
        }
    };
    let mut batches: Vec<Vec<NewEvent>> = Vec::new();
    for (s, &n) in per_slot.iter().enumerate() {
        let events: Vec<NewEvent> = (0..n).map(|i| make(s, i)).collect();
        match s {
            // Below the threshold first, then past it.
            5 => {
                batches.push(events[..20].to_vec());
                batches.push(events[20..].to_vec());
            }
            // One at a time: the 32nd makes the slot dense, the last one is added to its counts.
            7 => batches.extend(events.into_iter().map(|e| vec![e])),
            _ => batches.push(events),
        }
    }
    for events in batches {
        let (events, r) = append(events).await;
        model.record(acme, &events, &r, now());
    }
    // Duplicates count once.
    let (events, r) = append((0..40).map(|i| make(0, i)).collect()).await;
    assert!(r.iter().all(|a| matches!(a, Appended::Duplicate { .. })));
    model.record(acme, &events, &r, now());
    // Another org, dense in the same slots, counts only for itself.
    store
        .append(globex, (0..100).map(|i| event("al", "x.y", first + i * 6_000_000)).collect(), now())
        .await
        .unwrap();

    let fields: Vec<(&str, Filter)> = vec![
        ("one actor", Filter { actor: vec!["al".into()], ..Filter::default() }),
        ("two actors", Filter { actor: vec!["bo".into(), "cy".into()], ..Filter::default() }),
        ("no such actor", Filter { actor: vec!["zed".into()], ..Filter::default() }),
        ("target type", Filter { target_type: vec!["project".into()], ..Filter::default() }),
        ("project", Filter { project: vec!["search".into()], ..Filter::default() }),
        ("source", Filter { source: vec!["api".into(), "console".into()], ..Filter::default() }),
        // Counts per action are pruned with the month too.
        ("action", Filter { action: vec![ActionMatch::Exact("x.y".into())], ..Filter::default() }),
    ];
    let check = |model: &Model, label: &'static str| {
        let mut cases = Vec::new();
        for from in [first - slot, first + 3 * minute + 1, first + slot] {
            for to in [boundary + 4 * slot + 1, boundary + 2 * slot - 5 * minute] {
                for width in [10 * minute, 17 * minute, 3_600_000_000, MICROS_PER_DAY] {
                    for outcome in [vec![], vec![Outcome::Failure], vec![Outcome::Success]] {
                        for (name, f) in &fields {
                            let filter = Filter { from, to, outcome: outcome.clone(), ..f.clone() };
                            let want = model_histogram(model, &filter, width);
                            let what =
                                format!("{label}: {name}, from {from}, to {to}, width {width}, {outcome:?}");
                            cases.push((filter, width, want, what));
                        }
                    }
                }
            }
        }
        let store = store.clone();
        async move {
            for (filter, width, want, what) in cases {
                assert_eq!(store_histogram(&*store, acme, &filter, width).await, want, "{what}");
            }
        }
    };
    check(&model, "stored").await;

    // Pruning the month before the boundary takes its counts with it.
    let month = trail_model::time::month_of(first);
    let stored = month_all(&*store, acme, month).await;
    let summary = MonthSummary { count: stored.len() as u64, last_seq: stored.last().unwrap().seq };
    store.prune_month(acme, month, summary).await.unwrap();
    let pruned: std::collections::HashSet<u64> = stored.iter().map(|r| r.seq).collect();
    model.events.retain(|e| !(e.org == acme && pruned.contains(&e.seq)));
    check(&model, "after pruning").await;
}

pub async fn paging_is_stable_while_appending<S: Store>(store: Arc<S>) {
    org(&*store, "acme").await;
    let base = now() - 10 * MICROS_PER_DAY;
    let events: Vec<NewEvent> = (0..3000).map(|i| event("a", "x.y", base + (i / 3) * 1000)).collect();
    for chunk in events.chunks(500) {
        store.append("acme", chunk.to_vec(), now()).await.unwrap();
    }
    // Keep appending events inside and outside the window while we page.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..60 {
                let batch = vec![event("a", "x.y", base + i * 37_000), event("a", "x.y", now() - 10)];
                store.append("acme", batch, now()).await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let filter = window(base, now());
    let got = page_all(&*store, "acme", &filter, 37).await;
    writer.await.unwrap();
    let unique: HashSet<_> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "an event was repeated");
    let originals = got.iter().filter(|(_, seq)| *seq < 3000).count();
    assert_eq!(originals, 3000, "an event that existed before paging began was skipped");
    assert!(got.windows(2).all(|w| w[0] > w[1]), "not strictly newest first");
}

pub async fn concurrent_appends_keep_seq_gapless<S: Store>(store: Arc<S>) {
    org(&*store, "acme").await;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..25 {
                let n = 1 + (t + i) % 4;
                let r = store.append("acme", vec![event("a", "x.y", now() - 1000); n], now()).await.unwrap();
                let s = created_seqs(&r);
                assert!(s.windows(2).all(|w| w[1] == w[0] + 1), "a batch's seqs must be contiguous");
                seqs.extend(s);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    let n = all.len() as u64;
    assert_eq!(all, (0..n).collect::<Vec<_>>());
    assert_eq!(store.tree_size("acme").await.unwrap(), n);
}

pub async fn access_records<S: Store>(store: Arc<S>) {
    let org = store.create_org("acme", "Acme Inc", now()).await.unwrap();
    assert_eq!((org.slug.as_str(), org.name.as_str()), ("acme", "Acme Inc"));
    assert_eq!(store.org("acme").await.unwrap(), Some(org.clone()));
    assert_eq!(store.org("nope").await.unwrap(), None);
    store.create_org("globex", "Globex", now()).await.unwrap();
    assert_eq!(store.orgs().await.unwrap().len(), 2);

    let u = store.create_user("Admin@Example.com", "$argon2id$stub", true, now()).await.unwrap();
    assert!(matches!(
        store.create_user("admin@example.com", "x", false, now()).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.user_by_email("ADMIN@example.com").await.unwrap().map(|x| x.id), Some(u.id.clone()));
    assert_eq!(store.user(&u.id).await.unwrap().map(|x| x.server_admin), Some(true));
    assert_eq!(store.permissions("acme", &u.id).await.unwrap(), None, "not a member yet");
    store.add_org_admin("acme", &u.id).await.unwrap();
    let perms = store.permissions("acme", &u.id).await.unwrap().unwrap();
    assert!(Permission::ALL.iter().all(|p| perms.contains(p)), "admins hold every permission");
    assert_eq!(store.permissions("globex", &u.id).await.unwrap(), None, "membership is per org");
    let orgs = store.user_orgs(&u.id).await.unwrap();
    assert_eq!(orgs.iter().map(|(o, _)| o.slug.as_str()).collect::<Vec<_>>(), ["acme"]);

    let s = Session {
        id: "s1".into(),
        user_id: u.id.clone(),
        secret_hash: [7; 32],
        created_at: now(),
        expires_at: now() + 10,
        last_seen: now(),
        method: "sso:acme".into(),
    };
    store.create_session(&s).await.unwrap();
    assert_eq!(store.session("s1").await.unwrap(), Some(s));
    store.delete_session("s1").await.unwrap();
    assert_eq!(store.session("s1").await.unwrap(), None);

    let k = ApiKey {
        id: "k1".into(),
        org: "acme".into(),
        name: "ingest".into(),
        scopes: vec![Scope::EventsWrite],
        secret_hash: [9; 32],
        created_by: Some(u.id.clone()),
        created_at: now(),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
    };
    store.create_api_key(&k).await.unwrap();
    assert_eq!(store.api_key("k1").await.unwrap(), Some(k.clone()));
    assert_eq!(store.api_keys("acme").await.unwrap(), vec![k]);
    assert!(store.api_keys("globex").await.unwrap().is_empty());
    assert!(matches!(store.revoke_api_key("globex", "k1", now()).await, Err(StoreError::NotFound(_))));
    store.revoke_api_key("acme", "k1", now() + 1).await.unwrap();
    assert_eq!(store.api_key("k1").await.unwrap().unwrap().revoked_at, Some(now() + 1));
}

/// Leaf hashes of every event of an org in `seq` order, taken from the records themselves.
async fn leaves<S: Store>(store: &S, org: &str) -> Vec<trail_merkle::Hash> {
    let filter = window(now() - 92 * MICROS_PER_DAY, now() + 1);
    let mut q = Query { filter, limit: 1000, cursor: None };
    let mut records = Vec::new();
    loop {
        let page = store.query(org, &q).await.unwrap();
        records.extend(page.records);
        match page.next {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    records.sort_by_key(|r| r.event.seq);
    records.iter().enumerate().for_each(|(i, r)| assert_eq!(r.event.seq, i as u64));
    records.iter().map(Record::leaf_hash).collect()
}

pub async fn merkle_roots_and_proofs_verify<S: Store>(store: Arc<S>) {
    org(&*store, "acme").await;
    assert_eq!(store.root("acme", 0).await.unwrap(), trail_merkle::empty_root());
    // Times spread over 80 days put neighbouring leaves in different month partitions.
    let mut n = 0i64;
    for batch in [1usize, 2, 5, 60, 1, 130, 101] {
        let events: Vec<NewEvent> = (0..batch)
            .map(|i| event("a", "x.y", now() - ((n + i as i64) * 7919 % 80) * MICROS_PER_DAY - 1))
            .collect();
        n += batch as i64;
        store.append("acme", events, now()).await.unwrap();
    }
    let leaves = leaves(&*store, "acme").await;
    assert_eq!(leaves.len() as i64, n);
    let sizes = [1u64, 2, 3, 4, 5, 7, 8, 9, 16, 17, 63, 64, 65, 128, 200, 255, 256, 299, 300];
    for &size in &sizes {
        let root = store.root("acme", size).await.unwrap();
        assert_eq!(root, trail_merkle::root(&leaves[..size as usize]), "root of size {size}");
        for seq in [0, size / 3, size / 2, size - 1] {
            let proof = store.inclusion_proof("acme", seq, size).await.unwrap();
            trail_merkle::verify_inclusion(&leaves[seq as usize], seq, size, &proof, &root)
                .unwrap_or_else(|e| panic!("inclusion of {seq} in {size}: {e}"));
        }
        for &old in sizes.iter().filter(|&&m| m <= size) {
            let proof = store.consistency_proof("acme", old, size).await.unwrap();
            let old_root = trail_merkle::root(&leaves[..old as usize]);
            trail_merkle::verify_consistency(old, size, &old_root, &root, &proof)
                .unwrap_or_else(|e| panic!("consistency {old} -> {size}: {e}"));
        }
    }
    assert!(matches!(store.root("acme", 301).await, Err(StoreError::OutOfRange(_))));
    assert!(matches!(store.inclusion_proof("acme", 300, 300).await, Err(StoreError::OutOfRange(_))));
    assert!(matches!(store.inclusion_proof("acme", 0, 301).await, Err(StoreError::OutOfRange(_))));
    assert!(matches!(store.consistency_proof("acme", 10, 5).await, Err(StoreError::OutOfRange(_))));
}

pub async fn checkpoints_are_kept_and_never_contradict<S: Store>(store: Arc<S>) {
    org(&*store, "acme").await;
    org(&*store, "idle").await;
    assert!(store.unsigned_heads().await.unwrap().is_empty(), "empty logs need no checkpoint");
    store.append("acme", vec![event("a", "x.y", now() - 10); 5], now()).await.unwrap();
    assert_eq!(store.unsigned_heads().await.unwrap(), vec![("acme".to_string(), 5)]);
    assert_eq!(store.latest_checkpoint("acme").await.unwrap(), None);
    let root = store.root("acme", 5).await.unwrap();
    let cp = StoredCheckpoint { size: 5, root, note: "note for 5\n".into(), created_at: now() };
    store.add_checkpoint("acme", &cp).await.unwrap();
    store.add_checkpoint("acme", &cp).await.unwrap();
    let forged = StoredCheckpoint { root: [0; 32], ..cp.clone() };
    assert!(matches!(store.add_checkpoint("acme", &forged).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.latest_checkpoint("acme").await.unwrap(), Some(cp.clone()));
    assert!(store.unsigned_heads().await.unwrap().is_empty());
    store.append("acme", vec![event("a", "x.y", now() - 10); 2], now()).await.unwrap();
    assert_eq!(store.unsigned_heads().await.unwrap(), vec![("acme".to_string(), 7)]);
    let cp7 = StoredCheckpoint {
        size: 7,
        root: store.root("acme", 7).await.unwrap(),
        note: "n7".into(),
        created_at: now(),
    };
    store.add_checkpoint("acme", &cp7).await.unwrap();
    assert_eq!(store.checkpoints("acme").await.unwrap(), vec![cp, cp7.clone()]);
    assert_eq!(store.latest_checkpoint("acme").await.unwrap(), Some(cp7));
    assert!(store.checkpoints("idle").await.unwrap().is_empty());
}

/// Puts a user into an org's group the way people join: an invitation, accepted.
pub async fn join<S: Store + ?Sized>(store: &S, org: &str, group: &str, user_id: &str) {
    let id = format!("join-{org}-{group}-{user_id}");
    let inv = Invitation {
        id: id.clone(),
        org: org.into(),
        email: "joiner@example.com".into(),
        groups: vec![group.into()],
        secret_hash: [0; 32],
        created_by: "test".into(),
        created_at: now(),
        expires_at: trail_model::time::now() + MICROS_PER_DAY,
        accepted_at: None,
        revoked_at: None,
    };
    store.create_invitation(&inv).await.unwrap();
    store.accept_invitation(&id, user_id, trail_model::time::now()).await.unwrap();
}

pub async fn roles_groups_and_invitations<S: Store>(store: Arc<S>) {
    org(&*store, "acme").await;
    org(&*store, "globex").await;
    let admin = store.create_user("admin@acme.io", "h", false, now()).await.unwrap();
    let bob = store.create_user("bob@acme.io", "h", false, now()).await.unwrap();
    store.add_org_admin("acme", &admin.id).await.unwrap();

    // Built-ins exist and cannot be changed.
    let roles = store.roles("acme").await.unwrap();
    assert_eq!(roles.len(), 1);
    assert!(roles[0].builtin && roles[0].permissions.len() == Permission::ALL.len());
    let admin_role = roles[0].clone();
    assert!(matches!(store.delete_role("acme", &admin_role.id).await, Err(StoreError::Conflict(_))));
    assert!(matches!(
        store.update_role("acme", &Role { name: "x".into(), ..admin_role.clone() }).await,
        Err(StoreError::Conflict(_))
    ));
    let groups = store.groups("acme").await.unwrap();
    assert_eq!(
        (groups.len(), groups[0].builtin, groups[0].members.clone()),
        (1, true, vec![admin.id.clone()])
    );
    assert!(matches!(store.delete_group("acme", &groups[0].id).await, Err(StoreError::Conflict(_))));

    // A custom role in a custom group grants exactly its permissions, evaluated at once.
    let auditor = Role {
        id: "r-aud".into(),
        name: "Auditor".into(),
        description: "reads logs".into(),
        permissions: vec![Permission::LogManagement],
        builtin: false,
    };
    store.create_role("acme", &auditor).await.unwrap();
    assert!(matches!(
        store.create_role("acme", &Role { id: "r-2".into(), ..auditor.clone() }).await,
        Err(StoreError::Conflict(_))
    ));
    store.create_role("globex", &auditor).await.unwrap();
    let team = Group {
        id: "g-sec".into(),
        name: "Security".into(),
        description: String::new(),
        roles: vec![],
        members: vec![],
        builtin: false,
    };
    store.create_group("acme", &team).await.unwrap();
    store.set_group_role("acme", "g-sec", "r-aud", true).await.unwrap();
    store.set_group_role("acme", "g-sec", "r-aud", true).await.unwrap();
    assert!(matches!(
        store.set_group_role("acme", "g-sec", "nope", true).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.set_group_member("acme", "g-sec", "no-such-user", true).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(
        matches!(store.set_group_member("acme", "g-sec", &bob.id, true).await, Err(StoreError::NotFound(_))),
        "outsiders join only by accepting an invitation"
    );
    join(&*store, "acme", "g-sec", &bob.id).await;
    assert_eq!(store.permissions("acme", &bob.id).await.unwrap(), Some(vec![Permission::LogManagement]));
    assert_eq!(store.permissions("globex", &bob.id).await.unwrap(), None);
    let users = store.org_users("acme").await.unwrap();
    assert_eq!(
        users.iter().map(|(u, g)| (u.email.as_str(), g.len())).collect::<Vec<_>>(),
        [("admin@acme.io", 1), ("bob@acme.io", 1)]
    );

    let mut renamed = auditor.clone();
    renamed.permissions = vec![Permission::LogManagement, Permission::KeyManagement];
    renamed.name = "Auditor+".into();
    store.update_role("acme", &renamed).await.unwrap();
    assert_eq!(
        store.permissions("acme", &bob.id).await.unwrap(),
        Some(vec![Permission::LogManagement, Permission::KeyManagement])
    );
    store.set_group_role("acme", "g-sec", "r-aud", false).await.unwrap();
    assert_eq!(
        store.permissions("acme", &bob.id).await.unwrap(),
        Some(vec![]),
        "still a member, no permissions"
    );
    store.update_group("acme", "g-sec", "SecOps", "d").await.unwrap();
    assert_eq!(store.groups("acme").await.unwrap()[1].name, "SecOps");
    store.delete_role("acme", "r-aud").await.unwrap();
    assert_eq!(store.roles("globex").await.unwrap().len(), 2, "roles are per org");
    store.remove_org_user("acme", &bob.id).await.unwrap();
    assert_eq!(store.permissions("acme", &bob.id).await.unwrap(), None);
    assert!(matches!(store.remove_org_user("acme", &bob.id).await, Err(StoreError::NotFound(_))));

    // An identity provider's group map: an outsider joins by it (groups since deleted are skipped),
    // leaves by it, and it never takes the org's last administrator (nothing changes then).
    let sync = |user: String, changes: Vec<(&str, bool)>| {
        let store = store.clone();
        let changes: Vec<(String, bool)> = changes.into_iter().map(|(g, p)| (g.to_string(), p)).collect();
        async move { store.sync_groups("acme", &user, &changes).await }
    };
    sync(bob.id.clone(), vec![("g-sec", true), ("no-such-group", true)]).await.unwrap();
    assert_eq!(store.permissions("acme", &bob.id).await.unwrap(), Some(vec![]), "a member now");
    assert_eq!(store.permissions("globex", &bob.id).await.unwrap(), None);
    sync(bob.id.clone(), vec![("g-sec", false)]).await.unwrap();
    assert_eq!(store.permissions("acme", &bob.id).await.unwrap(), None, "and out again");
    let admins = groups[0].id.as_str();
    assert!(matches!(
        sync(admin.id.clone(), vec![("g-sec", true), (admins, false)]).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.groups("acme").await.unwrap()[0].members,
        vec![admin.id.clone()],
        "still the administrator"
    );
    assert!(
        !store.groups("acme").await.unwrap()[1].members.contains(&admin.id),
        "and the refused change left nothing behind"
    );
    store.delete_group("acme", "g-sec").await.unwrap();
    assert_eq!(store.groups("acme").await.unwrap().len(), 1);

    // Invitations: single use, revocable, expiring; accepting joins the groups.
    store.create_group("acme", &team).await.unwrap();
    let inv = Invitation {
        id: "inv-1".into(),
        org: "acme".into(),
        email: "carol@acme.io".into(),
        groups: vec!["g-sec".into()],
        secret_hash: [3; 32],
        created_by: "admin@acme.io".into(),
        created_at: now(),
        expires_at: now() + 1000,
        accepted_at: None,
        revoked_at: None,
    };
    store.create_invitation(&inv).await.unwrap();
    assert_eq!(store.invitation("inv-1").await.unwrap(), Some(inv.clone()));
    let listed = store.invitations("acme").await.unwrap();
    assert!(listed.contains(&inv) && listed.iter().all(|i| i.org == "acme"));
    assert!(store.invitations("globex").await.unwrap().is_empty());
    let carol = store.create_user("carol@acme.io", "h", false, now()).await.unwrap();
    assert!(
        matches!(
            store.accept_invitation("inv-1", &carol.id, now() + 1000).await,
            Err(StoreError::Conflict(_))
        ),
        "expired"
    );
    store.accept_invitation("inv-1", &carol.id, now() + 1).await.unwrap();
    assert!(
        matches!(store.accept_invitation("inv-1", &carol.id, now() + 2).await, Err(StoreError::Conflict(_))),
        "single use"
    );
    assert_eq!(store.groups("acme").await.unwrap()[1].members, vec![carol.id.clone()]);
    let inv2 = Invitation { id: "inv-2".into(), accepted_at: None, ..inv.clone() };
    store.create_invitation(&inv2).await.unwrap();
    assert!(matches!(store.revoke_invitation("globex", "inv-2", now()).await, Err(StoreError::NotFound(_))));
    store.revoke_invitation("acme", "inv-2", now()).await.unwrap();
    assert!(
        matches!(store.accept_invitation("inv-2", &carol.id, now() + 1).await, Err(StoreError::Conflict(_))),
        "revoked"
    );

    // Sessions: renewal, revocation of all of a user's sessions but one; passwords; key use.
    for id in ["s1", "s2", "s3"] {
        let s = Session {
            id: id.into(),
            user_id: carol.id.clone(),
            secret_hash: [1; 32],
            created_at: now(),
            expires_at: now() + 99,
            last_seen: now(),
            method: "password".into(),
        };
        store.create_session(&s).await.unwrap();
    }
    store.touch_sessions(vec![("s1".into(), now() + 5)]).await.unwrap();
    assert_eq!(store.session("s1").await.unwrap().unwrap().last_seen, now() + 5);
    store.delete_user_sessions(&carol.id, Some("s2")).await.unwrap();
    assert!(store.session("s1").await.unwrap().is_none() && store.session("s3").await.unwrap().is_none());
    assert!(store.session("s2").await.unwrap().is_some());
    store.set_password(&carol.id, "new-hash").await.unwrap();
    assert_eq!(store.user(&carol.id).await.unwrap().unwrap().password_hash, "new-hash");
    let key = ApiKey {
        id: "k9".into(),
        org: "acme".into(),
        name: "n".into(),
        scopes: vec![Scope::EventsRead],
        secret_hash: [2; 32],
        created_by: None,
        created_at: now(),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
    };
    store.create_api_key(&key).await.unwrap();
    store.touch_api_keys(vec![("k9".into(), now() + 7)]).await.unwrap();
    assert_eq!(store.api_key("k9").await.unwrap().unwrap().last_used_at, Some(now() + 7));
}

pub async fn exports_are_claimed_once<S: Store>(store: Arc<S>) {
    org(&*store, "acme").await;
    org(&*store, "globex").await;
    let mk = |id: &str, org: &str, at: Micros| Export {
        id: id.into(),
        org: org.into(),
        name: format!("export {id}"),
        // The second of each org is a restore, in NDJSON: format and kind read back as written.
        format: if id.ends_with('2') { ExportFormat::Json } else { ExportFormat::Csv },
        kind: if id.ends_with('2') { ExportKind::Restore } else { ExportKind::Query },
        filters: json!({"from": "2026-03-01T00:00:00Z", "actor": ["a"]}),
        status: ExportStatus::Pending,
        error: None,
        requested_by: "admin@acme.io".into(),
        created_at: at,
        started_at: None,
        finished_at: None,
        expires_at: None,
        row_count: 0,
        size_bytes: 0,
        sha256: None,
        manifest: None,
    };
    store.create_export(&mk("e1", "acme", now())).await.unwrap();
    store.create_export(&mk("e2", "acme", now() + 1)).await.unwrap();
    store.create_export(&mk("g1", "globex", now() + 2)).await.unwrap();
    assert_eq!(
        store.exports("acme").await.unwrap().iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["e2", "e1"]
    );
    assert!(store.export("globex", "e1").await.unwrap().is_none(), "exports are per org");
    let e2 = store.export("acme", "e2").await.unwrap().unwrap();
    assert_eq!((e2.format, e2.kind), (ExportFormat::Json, ExportKind::Restore));
    let e1 = store.export("acme", "e1").await.unwrap().unwrap();
    assert_eq!((e1.format, e1.kind), (ExportFormat::Csv, ExportKind::Query));
    let first = store.claim_export(now() + 5, 1).await.unwrap().unwrap();
    assert_eq!(
        (first.id.as_str(), first.status, first.started_at),
        ("e1", ExportStatus::Running, Some(now() + 5))
    );
    let second = store.claim_export(now() + 6, 5).await.unwrap().unwrap();
    assert_eq!(second.id, "g1", "the org with fewer exports running goes first, though e2 is older");
    assert!(store.claim_export(now() + 6, 1).await.unwrap().is_none(), "both orgs are at their limit");
    let third = store.claim_export(now() + 6, 2).await.unwrap().unwrap();
    assert_eq!(third.id, "e2", "a running export is never claimed twice");
    assert!(store.claim_export(now() + 6, 9).await.unwrap().is_none());
    let mut done = first.clone();
    done.status = ExportStatus::Completed;
    done.row_count = 10;
    done.size_bytes = 99;
    done.sha256 = Some("ab".into());
    done.manifest = Some("signed".into());
    done.finished_at = Some(now() + 7);
    done.expires_at = Some(now() + 100);
    store.update_export(&done).await.unwrap();
    assert_eq!(store.export("acme", "e1").await.unwrap(), Some(done.clone()));
    assert_eq!(store.requeue_running_exports().await.unwrap(), 2, "e2 and g1 were left running");
    assert_eq!(store.export("acme", "e2").await.unwrap().unwrap().status, ExportStatus::Pending);
    assert!(store.expired_exports(now() + 99).await.unwrap().is_empty());
    assert_eq!(
        store.expired_exports(now() + 100).await.unwrap().iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["e1"]
    );
}

/// Every event of an org in a month, through `month_events` paging.
async fn month_all<S: Store>(store: &S, org: &str, month: u32) -> Vec<crate::RawRecord> {
    let mut out: Vec<crate::RawRecord> = Vec::new();
    loop {
        let page = store.month_events(org, month, out.last().map(|r| r.seq), 7).await.unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

pub async fn retention_prunes_months_and_keeps_proofs<S: Store>(store: Arc<S>) {
    org(&*store, "acme").await;
    org(&*store, "other").await;
    assert_eq!(store.org_settings("acme").await.unwrap(), None, "defaults until first changed");
    let settings = OrgSettings {
        hot_days: 30,
        archive_days: 400,
        legal_hold: true,
        legal_hold_reason: Some("case 7".into()),
        read_audit: false,
        default_range: Some("30d".into()),
        updated_at: now(),
        updated_by: Some("u-1".into()),
    };
    store.set_org_settings("acme", &settings).await.unwrap();
    assert_eq!(store.org_settings("acme").await.unwrap(), Some(settings.clone()));
    let read_again = OrgSettings { read_audit: true, ..settings.clone() };
    store.set_org_settings("acme", &read_again).await.unwrap();
    assert_eq!(store.org_settings("acme").await.unwrap(), Some(read_again));
    store.set_org_settings("acme", &settings).await.unwrap();
    assert_eq!(store.org_settings("other").await.unwrap(), None, "settings are per org");

    // acme: January, February and March, interleaved in seq order; other: January only.
    let jan = parse_rfc3339("2026-01-20T10:00:00Z").unwrap();
    let feb = parse_rfc3339("2026-02-10T10:00:00Z").unwrap();
    let mar = parse_rfc3339("2026-03-01T10:00:00Z").unwrap();
    let mut events = Vec::new();
    for i in 0..40i64 {
        let t = [jan, feb, mar][(i % 3) as usize] + i;
        let mut e = event(&format!("user-{i}"), "x.y", t);
        e.id = Some(format!("e-{i}"));
        e.reason = Some(format!("needle{}", i % 3));
        events.push(e);
    }
    store.append("acme", events, now()).await.unwrap();
    store.append("other", vec![event("o", "x.y", jan), event("o", "x.y", feb)], now()).await.unwrap();
    let size = store.tree_size("acme").await.unwrap();
    let leaves = leaves(&*store, "acme").await;
    let root = store.root("acme", size).await.unwrap();
    assert_eq!(store.event_months("acme").await.unwrap(), [202601, 202602, 202603]);

    let january = month_all(&*store, "acme", 202601).await;
    let expected: Vec<u64> = (0..40).filter(|i| i % 3 == 0).collect();
    assert_eq!(january.iter().map(|r| r.seq).collect::<Vec<_>>(), expected, "seq order, paged");
    let summary = MonthSummary { count: january.len() as u64, last_seq: 39 };

    // An archive that missed an event must not remove anything.
    let short = MonthSummary { count: summary.count - 1, ..summary };
    assert!(matches!(store.prune_month("acme", 202601, short).await, Err(StoreError::Conflict(_))));
    assert_eq!(month_all(&*store, "acme", 202601).await.len(), january.len());

    store.prune_month("acme", 202601, summary).await.unwrap();
    assert_eq!(store.event_months("acme").await.unwrap(), [202602, 202603]);
    assert!(month_all(&*store, "acme", 202601).await.is_empty());
    assert!(store.event("acme", "e-0").await.unwrap().is_none(), "pruned events are gone");
    let whole = |org: &'static str| {
        let store = store.clone();
        async move {
            let f = window(jan - MICROS_PER_DAY, mar + MICROS_PER_DAY);
            store.histogram(org, &f, 7 * MICROS_PER_DAY).await.unwrap().iter().map(|b| b.count).sum::<u64>()
        }
    };
    assert_eq!(whole("acme").await, 40 - january.len() as u64, "a pruned month leaves histograms too");
    assert_eq!(whole("other").await, 2, "another org's counts stay");
    assert!(store.event("acme", "e-1").await.unwrap().is_some());
    let pruned = store.pruned_leaves("acme", 0, size).await.unwrap();
    assert_eq!(pruned, expected.iter().map(|&s| (s, leaves[s as usize])).collect::<Vec<_>>());

    // The tree is untouched: roots and proofs over pruned and hot leaves still verify.
    assert_eq!(store.root("acme", size).await.unwrap(), root);
    for seq in [0u64, 1, 2, 3, 20, 39] {
        let proof = store.inclusion_proof("acme", seq, size).await.unwrap();
        trail_merkle::verify_inclusion(&leaves[seq as usize], seq, size, &proof, &root).unwrap();
    }
    let proof = store.consistency_proof("acme", 5, size).await.unwrap();
    let old = trail_merkle::root(&leaves[..5]);
    trail_merkle::verify_consistency(5, size, &old, &root, &proof).unwrap();

    // Queries and free text see only what is hot; the other org sharing January is untouched.
    let all = window(parse_rfc3339("2026-01-01T00:00:00Z").unwrap(), now());
    let mut f = all.clone();
    f.q = Some(Search::parse("needle0").unwrap());
    let hits = store.query("acme", &Query { filter: f, limit: 100, cursor: None }).await.unwrap();
    assert!(hits.records.is_empty(), "the pruned events left the full-text index: {:?}", hits.records.len());
    let rest = store.query("acme", &Query { filter: all.clone(), limit: 100, cursor: None }).await.unwrap();
    assert_eq!(rest.records.len(), 40 - expected.len());
    let theirs =
        store.query("other", &Query { filter: all.clone(), limit: 100, cursor: None }).await.unwrap();
    assert_eq!(theirs.records.len(), 2);
    assert_eq!(store.event_months("other").await.unwrap(), [202601, 202602]);

    // Once the other org's January goes too, the month is empty; appends continue the same tree.
    store.prune_month("other", 202601, MonthSummary { count: 1, last_seq: 0 }).await.unwrap();
    assert_eq!(store.event_months("other").await.unwrap(), [202602]);
    let r = store.append("acme", vec![event("late", "x.y", mar + 5)], now()).await.unwrap();
    assert_eq!(r[0].seq(), size);
    let mut grown = leaves.clone();
    let added = store.event("acme", r[0].id()).await.unwrap().unwrap();
    grown.push(added.leaf_hash());
    assert_eq!(store.root("acme", size + 1).await.unwrap(), trail_merkle::root(&grown));
}

pub async fn events_after_follow_the_log_in_seq_order<S: Store>(store: Arc<S>) {
    org(&*store, "acme").await;
    org(&*store, "other").await;
    // Times jump between months, so seq order crosses partitions back and forth.
    let times = [now() - 40 * MICROS_PER_DAY, now() - 1000, now() - 70 * MICROS_PER_DAY];
    let events: Vec<NewEvent> = (0..50).map(|i| event("a", "x.y", times[i % 3] + i as i64)).collect();
    store.append("acme", events, now()).await.unwrap();
    store.append("other", vec![event("b", "x.y", now() - 5); 3], now()).await.unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.events_after("acme", after, 7).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        after = page.last().map(|r| r.seq);
        seen.extend(page.into_iter().map(|r| {
            let e = trail_model::canonical::decode(&r.bytes).unwrap();
            assert_eq!((e.org.as_str(), e.seq, e.time), ("acme", r.seq, r.time));
            r.seq
        }));
    }
    assert_eq!(seen, (0..50).collect::<Vec<u64>>());
    assert_eq!(store.events_after("acme", Some(49), 10).await.unwrap(), vec![]);
    assert_eq!(store.events_after("other", None, 10).await.unwrap().len(), 3, "orgs stay apart");
}

/// Destinations: configuration replaced without touching progress, progress recorded, one lease
/// holder at a time, orgs apart.
pub async fn destinations_keep_config_progress_and_lease<S: Store>(store: Arc<S>) {
    use crate::{Destination, DestinationProgress};
    org(&*store, "acme").await;
    org(&*store, "other").await;
    let mut d = Destination {
        org: "acme".into(),
        id: "d1".into(),
        config: serde_json::json!({"kind": "webhook", "url": "https://siem.example/in"}),
        sealed_secret: Some(vec![1, 2, 3]),
        created_by: "u1".into(),
        created_at: 10,
        updated_at: 10,
        progress: DestinationProgress { cursor: 7, state: "active".into(), ..Default::default() },
    };
    store.put_destination(&d).await.unwrap();
    assert_eq!(store.destinations(Some("acme")).await.unwrap(), vec![d.clone()]);
    assert_eq!(store.destinations(Some("other")).await.unwrap(), vec![]);
    let progress = DestinationProgress {
        cursor: 120,
        state: "failing".into(),
        error: Some("HTTP 503".into()),
        failing_since: Some(50),
        delivered_at: Some(40),
        delivered: 113,
    };
    store.set_destination_progress("acme", "d1", &progress).await.unwrap();
    d.config = serde_json::json!({"kind": "webhook", "url": "https://siem.example/v2"});
    d.updated_at = 60;
    d.progress = DestinationProgress::default();
    store.put_destination(&d).await.unwrap();
    let got = store.destinations(None).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((&got[0].config, got[0].updated_at), (&d.config, 60), "configuration replaced");
    assert_eq!(got[0].progress, progress, "progress kept by a configuration change");

    assert!(store.lease_destination("acme", "d1", "node-a", 100, 200).await.unwrap());
    assert!(store.lease_destination("acme", "d1", "node-a", 150, 250).await.unwrap(), "renewed");
    assert!(!store.lease_destination("acme", "d1", "node-b", 200, 300).await.unwrap(), "held by a");
    assert!(store.lease_destination("acme", "d1", "node-b", 251, 350).await.unwrap(), "a's ran out");
    assert!(!store.lease_destination("other", "d1", "node-b", 251, 350).await.unwrap(), "orgs apart");

    assert!(matches!(store.delete_destination("other", "d1").await, Err(StoreError::NotFound(_))));
    store.delete_destination("acme", "d1").await.unwrap();
    assert!(store.destinations(None).await.unwrap().is_empty());
    assert!(matches!(
        store.set_destination_progress("acme", "d1", &progress).await,
        Err(StoreError::NotFound(_))
    ));
}

/// Documents: replaced or created once, listed newest id first with paging, orgs and kinds apart.
pub async fn documents_are_kept_per_org_and_kind<S: Store>(store: Arc<S>) {
    use crate::Document;
    org(&*store, "acme").await;
    org(&*store, "other").await;
    let doc = |org: &str, kind: &str, id: &str, n: i64| Document {
        org: org.into(),
        kind: kind.into(),
        id: id.into(),
        body: json!({"n": n}),
        updated_at: n,
    };
    for i in 0..5 {
        assert!(store.put_document(&doc("acme", "rule", &format!("r{i}"), i), true).await.unwrap());
    }
    store.put_document(&doc("acme", "search", "r9", 9), false).await.unwrap();
    store.put_document(&doc("other", "rule", "r7", 7), false).await.unwrap();
    assert!(!store.put_document(&doc("acme", "rule", "r1", 100), true).await.unwrap(), "created once");
    let ids = |v: Vec<Document>| v.into_iter().map(|d| (d.org, d.id)).collect::<Vec<_>>();
    let page = store.documents(Some("acme"), "rule", 3, None).await.unwrap();
    assert_eq!(page[0].body, json!({"n": 4}));
    assert_eq!(
        ids(page),
        [("acme".to_string(), "r4".to_string()), ("acme".into(), "r3".into()), ("acme".into(), "r2".into())]
    );
    let rest = store.documents(Some("acme"), "rule", 10, Some("r2")).await.unwrap();
    assert_eq!(rest.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["r1", "r0"]);
    assert_eq!(rest[0].body, json!({"n": 1}), "the create-only write kept the first body");
    assert_eq!(store.documents(None, "rule", 100, None).await.unwrap().len(), 6, "every org");
    store.put_document(&doc("acme", "rule", "r1", 11), false).await.unwrap();
    assert_eq!(store.documents(Some("acme"), "rule", 1, Some("r2")).await.unwrap()[0].body, json!({"n": 11}));
    let one = store.document("acme", "rule", "r1").await.unwrap().unwrap();
    assert_eq!(
        (one.org.as_str(), one.id.as_str(), &one.body, one.updated_at),
        ("acme", "r1", &json!({"n": 11}), 11)
    );
    assert!(store.document("other", "rule", "r1").await.unwrap().is_none(), "another org's id");
    assert!(store.document("acme", "search", "r1").await.unwrap().is_none(), "another kind's id");
    store.delete_document("acme", "rule", "r1").await.unwrap();
    assert!(store.document("acme", "rule", "r1").await.unwrap().is_none(), "deleted");
    assert!(matches!(store.delete_document("acme", "rule", "r1").await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.delete_document("other", "rule", "r0").await, Err(StoreError::NotFound(_))));
    assert_eq!(store.documents(Some("acme"), "search", 10, None).await.unwrap().len(), 1);
    // A user's documents: written, replaced, kept apart by kind and user, removed.
    assert!(store.user_document("u1", "totp").await.unwrap().is_none());
    store.set_user_document("u1", "totp", Some(&json!({"v": 1})), 10).await.unwrap();
    store.set_user_document("u1", "totp", Some(&json!({"v": 2})), 20).await.unwrap();
    store.set_user_document("u1", "other", Some(&json!({"v": 3})), 30).await.unwrap();
    assert_eq!(store.user_document("u1", "totp").await.unwrap(), Some((json!({"v": 2}), 20)));
    assert!(store.user_document("u2", "totp").await.unwrap().is_none());
    store.set_user_document("u1", "totp", None, 40).await.unwrap();
    assert!(store.user_document("u1", "totp").await.unwrap().is_none());
    assert_eq!(store.user_document("u1", "other").await.unwrap(), Some((json!({"v": 3}), 30)));
    store.set_user_document("u1", "absent", None, 50).await.unwrap();
}
