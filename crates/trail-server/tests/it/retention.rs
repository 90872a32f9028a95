//! Retention and archive (PRODUCT.md §8) with a driven clock: three years of events, passes at a fixed
//! "now", legal hold, verification of what remains, interrupted passes, and the HTTP surface.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use trail_model::time::{MICROS_PER_DAY, Micros, month_of, month_start, next_month, parse_rfc3339};
use trail_model::{Actor, ActorType, NewEvent, Outcome, Target};
use trail_server::archive::{self, Archive};
use trail_server::retention::{Retention, Step};
use trail_server::settings::RetentionSettings;
use trail_store::{OrgSettings, Store};
use trail_store_sqlite::SqliteStore;

use crate::TestServer;

fn now() -> Micros {
    parse_rfc3339("2026-06-15T12:00:00Z").unwrap()
}

fn event(i: i64, time: Micros) -> NewEvent {
    NewEvent {
        id: Some(format!("e-{i}")),
        time: Some(time),
        actor: Actor {
            id: format!("user-{}", i % 7),
            kind: ActorType::User,
            name: None,
            ip: None,
            user_agent: None,
        },
        action: "project.updated".into(),
        target: Target { kind: "project".into(), id: Some(format!("p-{}", i % 5)), name: None },
        project: None,
        outcome: Outcome::Success,
        reason: Some(format!("change {i}")),
        source: None,
        info: None,
    }
}

/// A store with org `acme` holding ~3 years of events (every 4 days, appended partly out of time
/// order so archived seqs are not a prefix) and org `beta` with a few recent ones.
struct Fixture {
    dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    signer: Arc<trail_merkle::Signer>,
    /// seq → time of every acme event.
    times: BTreeMap<u64, Micros>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    store.create_org("acme", "Acme", now()).await.unwrap();
    store.create_org("beta", "Beta", now()).await.unwrap();
    let start = now() - 3 * 365 * MICROS_PER_DAY;
    let mut events: Vec<(i64, Micros)> =
        (0..275).map(|i| (i, start + i * 4 * MICROS_PER_DAY + i * 7919)).collect();
    // Swap neighbours in blocks so time order and seq order disagree.
    for chunk in events.chunks_mut(6) {
        chunk.reverse();
    }
    let mut times = BTreeMap::new();
    for batch in events.chunks(25) {
        let appended =
            store.append("acme", batch.iter().map(|(i, t)| event(*i, *t)).collect(), now()).await.unwrap();
        for (a, (_, t)) in appended.iter().zip(batch) {
            times.insert(a.seq(), *t);
        }
    }
    store.append("beta", vec![event(1, now() - MICROS_PER_DAY)], now()).await.unwrap();
    let key = dir.path().join("log.key");
    let signer = Arc::new(trail_server::integrity::load_or_create_key(&key, "trail.test").unwrap());
    Fixture { dir, store, signer, times }
}

impl Fixture {
    fn retention(&self) -> Retention {
        let archive = Archive::local(&self.dir.path().join("archive")).unwrap();
        Retention::new(
            self.store.clone(),
            archive,
            self.signer.clone(),
            "trail.test",
            RetentionSettings::default(),
        )
    }

    async fn hot_seqs(&self, org: &str) -> BTreeSet<u64> {
        let mut out = BTreeSet::new();
        for m in self.store.event_months(org).await.unwrap() {
            for r in self.store.month_events(org, m, None, 100_000).await.unwrap() {
                assert!(out.insert(r.seq), "seq {} hot twice", r.seq);
            }
        }
        out
    }

    /// Every archived seq of acme, checked part by part against its signed manifest; a seq in two
    /// parts fails the test.
    async fn archived_seqs(&self) -> BTreeSet<u64> {
        let archive = Archive::local(&self.dir.path().join("archive")).unwrap();
        let key = self.signer.verifier();
        let mut out = BTreeSet::new();
        for entry in archive.list(Some("acme")).await.unwrap() {
            let data = match archive.data(&entry).await {
                Err(archive::ArchiveError::Missing(_)) => continue,
                other => other.unwrap(),
            };
            for r in archive::check_part(&entry, &data, Some(&key)).unwrap() {
                assert!(out.insert(r.seq), "seq {} archived twice", r.seq);
            }
        }
        out
    }

    /// The offline verifier over the hot store (kept leaves of archived events included).
    fn verify(&self) {
        let reports = trail_store_sqlite::verify::verify_data_dir(
            self.dir.path(),
            None,
            &self.signer.verifier(),
            &mut |_, _, _| {},
        )
        .unwrap();
        for r in reports {
            assert!(r.problem.is_none(), "{}: {:?}", r.org, r.problem);
        }
    }

    /// What a pass at `now()` must leave, by seq: (hot, archived, deleted).
    fn expected(
        &self,
        hot_days: i64,
        archive_days: i64,
        hold: bool,
    ) -> (BTreeSet<u64>, BTreeSet<u64>, BTreeSet<u64>) {
        let hot_start = now() - hot_days * MICROS_PER_DAY;
        let delete_before = now() - (hot_days + archive_days) * MICROS_PER_DAY;
        let month_end = |t: Micros| month_start(next_month(month_of(t)));
        let (mut hot, mut archived, mut deleted) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        for (&seq, &t) in &self.times {
            if month_end(t) > hot_start {
                hot.insert(seq);
            } else if month_end(t) > delete_before || hold {
                archived.insert(seq);
            } else {
                deleted.insert(seq);
            }
        }
        (hot, archived, deleted)
    }
}

#[tokio::test]
async fn three_years_leave_one_hot_one_archived_and_the_rest_deleted() {
    let f = fixture().await;
    let report = f.retention().run_pass(now()).await.unwrap();
    let (hot, archived, deleted) = f.expected(365, 365, false);
    assert!(!hot.is_empty() && !archived.is_empty() && !deleted.is_empty());
    assert_eq!(f.hot_seqs("acme").await, hot);
    assert_eq!(f.archived_seqs().await, archived);
    assert_eq!(report.deleted_events, deleted.len() as u64);
    assert_eq!(report.archived_events, (archived.len() + deleted.len()) as u64);
    // Everything hot is within a month of the hot window; nothing older than the window is queryable.
    let hot_start = now() - 365 * MICROS_PER_DAY;
    for seq in &hot {
        assert!(f.times[seq] >= month_start(month_of(hot_start)));
    }
    for (seq, t) in &f.times {
        if *t >= hot_start {
            assert!(hot.contains(seq), "seq {seq} within hot_days must stay hot");
        }
    }
    assert_eq!(f.hot_seqs("beta").await.len(), 1, "another org's recent events are untouched");
    f.verify();

    // The archived events' leaves are exactly what the hot store kept for them.
    let size = f.store.tree_size("acme").await.unwrap();
    let kept: BTreeSet<u64> =
        f.store.pruned_leaves("acme", 0, size).await.unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(kept, archived.union(&deleted).copied().collect());

    // A second pass at the same time changes nothing.
    let again = f.retention().run_pass(now()).await.unwrap();
    assert_eq!((again.archived_events, again.deleted_parts), (0, 0));
    assert_eq!(f.archived_seqs().await, archived);
}

#[tokio::test]
async fn legal_hold_deletes_nothing() {
    let f = fixture().await;
    let hold = OrgSettings {
        hot_days: 365,
        archive_days: 365,
        legal_hold: true,
        legal_hold_reason: Some("litigation 42".into()),
        read_audit: true,
        default_range: None,
        updated_at: now(),
        updated_by: None,
    };
    f.store.set_org_settings("acme", &hold).await.unwrap();
    let report = f.retention().run_pass(now()).await.unwrap();
    let (hot, archived, deleted) = f.expected(365, 365, true);
    assert!(deleted.is_empty());
    assert_eq!(report.deleted_parts, 0);
    assert_eq!(report.held, ["acme"]);
    assert_eq!(f.hot_seqs("acme").await, hot);
    assert_eq!(f.archived_seqs().await.len() + hot.len(), f.times.len(), "every event is hot or archived");
    assert_eq!(f.archived_seqs().await, archived);
    f.verify();

    // Lifting the hold lets the next pass delete what is past its retention.
    f.store
        .set_org_settings("acme", &OrgSettings { legal_hold: false, legal_hold_reason: None, ..hold })
        .await
        .unwrap();
    f.retention().run_pass(now()).await.unwrap();
    assert_eq!(f.archived_seqs().await, f.expected(365, 365, false).1);
}

#[tokio::test]
async fn an_interrupted_pass_converges_on_rerun() {
    // The clean result to converge to.
    let clean = fixture().await;
    clean.retention().run_pass(now()).await.unwrap();
    let want = (clean.hot_seqs("acme").await, clean.archived_seqs().await);

    for step in
        [Step::PartWritten, Step::MonthWritten, Step::LeftoversRemoved, Step::Pruned, Step::DataDeleted]
    {
        for nth in [1usize, 3] {
            let f = fixture().await;
            let mut r = f.retention();
            r.part_events = 7;
            let seen = Arc::new(AtomicUsize::new(0));
            let counter = seen.clone();
            r.hook = Some(Arc::new(move |s| {
                if s == step && counter.fetch_add(1, Ordering::SeqCst) + 1 == nth {
                    return Err(format!("injected crash at {s:?} #{nth}"));
                }
                Ok(())
            }));
            let e = r.run_pass(now()).await.unwrap_err();
            assert!(e.to_string().contains("injected crash"), "{e}");
            // Whatever the crash left, every event is still hot or in the archive (a copy written before
            // the prune may exist beside the hot one), unless it was due for deletion anyway.
            let (hot, archived) = (f.hot_seqs("acme").await, f.archived_seqs().await);
            let due = clean.expected(365, 365, false).2;
            for seq in f.times.keys() {
                assert!(
                    hot.contains(seq) || archived.contains(seq) || due.contains(seq),
                    "{step:?} #{nth}: seq {seq} lost"
                );
            }
            // The rerun uses other part sizes, so leftovers of the crashed attempt have other names.
            let mut rerun = f.retention();
            rerun.part_events = 5;
            rerun.run_pass(now()).await.unwrap();
            assert_eq!(
                (f.hot_seqs("acme").await, f.archived_seqs().await),
                want,
                "after a crash at {step:?} #{nth}"
            );
            f.verify();
        }
    }
}

#[tokio::test]
async fn settings_are_bounded_audited_and_drive_queries_and_restores() {
    let s = TestServer::start().await;
    let settings = s.admin.get("/v1/orgs/default/settings").await.unwrap();
    assert_eq!(settings["hot_days"], 365);
    assert_eq!(settings["server_defaults"], true);
    assert_eq!(settings["bounds"], json!({"min_days": 1, "max_days": 3650}));

    let bad = |body: serde_json::Value, field: &'static str| {
        let admin = s.admin.clone();
        async move {
            let e = admin.patch("/v1/orgs/default/settings", &body).await.unwrap_err();
            assert_eq!(e.status(), Some(400), "{body}");
            assert_eq!(e.field(), Some(field), "{body}: {e}");
        }
    };
    bad(json!({"hot_days": 0}), "hot_days").await;
    bad(json!({"archive_days": 4000}), "archive_days").await;
    bad(json!({"hot_days": "ten"}), "hot_days").await;
    bad(json!({"legal_hold": true}), "legal_hold_reason").await;
    bad(json!({"retention": 3}), "retention").await;
    bad(json!({"default_range": "2w"}), "default_range").await;
    bad(json!({"hot_days": 30.5}), "hot_days").await;
    assert_eq!(settings["default_range"], "24h");
    let opened = s
        .admin
        .patch("/v1/orgs/default/settings", &json!({"default_range": "30d", "hot_days": 365.0}))
        .await
        .unwrap();
    assert_eq!((opened["default_range"].as_str(), opened["hot_days"].as_u64()), (Some("30d"), Some(365)));

    let changed = s
        .admin
        .patch(
            "/v1/orgs/default/settings",
            &json!({"hot_days": 30, "legal_hold": true, "legal_hold_reason": "case 9"}),
        )
        .await
        .unwrap();
    assert_eq!((changed["hot_days"].clone(), changed["legal_hold"].clone()), (json!(30), json!(true)));
    assert_eq!(changed["archive_days"], 365, "unchanged settings keep their value");

    // The change is in the org's own log with old and new values.
    let log = s.admin.get("/v1/orgs/default/events?action=retention.updated").await.unwrap();
    let info = &log["events"][0]["info"];
    assert_eq!(info["before"]["hot_days"], 365);
    assert_eq!(info["after"]["hot_days"], 30);
    assert_eq!(info["after"]["legal_hold_reason"], "case 9");

    // Queries now stop at 30 days, with a message that says how to restore.
    let from = trail_model::time::format_rfc3339(trail_model::time::now() - 40 * MICROS_PER_DAY);
    let e = s.admin.get(&format!("/v1/orgs/default/events?from={from}")).await.unwrap_err();
    assert_eq!(e.code(), Some("outside_retention"));
    assert!(e.to_string().contains("archives/restore"), "{e}");

    // A restore of a window with nothing archived completes empty, as an export.
    let restore = s
        .admin
        .post(
            "/v1/orgs/default/archives/restore",
            &json!({"from": "2020-01-01T00:00:00Z", "to": "2020-02-01T00:00:00Z"}),
        )
        .await
        .unwrap();
    let id = restore["id"].as_str().unwrap().to_string();
    let done = crate::exports::wait_done(&s, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["row_count"], 0);
    let e = s
        .admin
        .post(
            "/v1/orgs/default/archives/restore",
            &json!({"from": "2020-02-01T00:00:00Z", "to": "2020-01-01T00:00:00Z"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(s.admin.get("/v1/orgs/default/archives").await.unwrap()["parts"].as_array().unwrap().is_empty());
    s.stop().await;
}
