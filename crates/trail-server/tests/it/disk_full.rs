//! A full disk: ingest answers 503 `storage_unavailable` (never 200 for what was not stored), reads
//! keep working, and ingest recovers by itself once space returns. Runs on a small tmpfs, which needs
//! root; without it the test says so and checks nothing else.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::{TestServer, ev};

struct Mount(PathBuf);

impl Mount {
    fn tmpfs(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?.keep();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .ok()?
            .success();
        ok.then_some(Mount(dir))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_ingest_then_recovers() {
    let Some(mount) = Mount::tmpfs("24m") else {
        eprintln!("SKIPPED a_full_disk_refuses_ingest_then_recovers: cannot mount a tmpfs (needs root)");
        return;
    };
    let data = tempfile::TempDir::new_in(&mount.0).unwrap();
    let s = TestServer::start_in(data, trail_server::Settings::default()).await;
    // Fill the filesystem, leaving a little room.
    let filler = mount.0.join("filler");
    let free = || {
        let out = Command::new("df").args(["--output=avail", "-B1"]).arg(&mount.0).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().trim().parse::<u64>().unwrap()
    };
    std::fs::write(&filler, vec![0u8; (free() - 2 * 1024 * 1024) as usize]).unwrap();

    let mut acked = Vec::new();
    let mut refused = None;
    for round in 0..400 {
        let batch: Vec<Value> = (0..200)
            .map(|i| {
                let mut e = ev(&format!("user-{round}-{i}"), "component.deployed", 1);
                e["info"] = serde_json::json!({"padding": "x".repeat(2000)});
                e
            })
            .collect();
        match s.key.ingest_batch("default", &batch).await {
            Ok(r) => acked.extend(r.results.into_iter().map(|x| (x.id.unwrap(), x.seq.unwrap()))),
            Err(e) => {
                refused = Some((e.status(), e.code().map(str::to_string)));
                break;
            }
        }
    }
    let (status, code) = refused.expect("the disk never filled up");
    assert_eq!((status, code.as_deref()), (Some(503), Some("storage_unavailable")));
    assert!(!acked.is_empty());
    // Reads keep working, and every acknowledged event is there. Each view's self-audit record is
    // written or, once even a small record no longer fits (SQLite first reuses its log file's space),
    // counted as failed; views go on until one has failed.
    let failures = || async {
        let metrics = reqwest::get(format!("{}/metrics", s.base)).await.unwrap().text().await.unwrap();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("trail_read_audit_failures_total ")?.parse::<u64>().ok())
            .unwrap()
    };
    let mut views = 0;
    for (id, seq) in acked.iter().step_by(7) {
        assert_eq!(s.admin.event("default", id).await.unwrap()["seq"], *seq);
        views += 1;
        if views % 20 == 0 && failures().await > 0 {
            break;
        }
    }
    assert!(s.admin.get("/healthz").await.is_ok());
    let failures = failures().await;
    assert!(failures >= 1, "{views} views, none refused by the full disk");

    // Space returns: ingest recovers without a restart, and seq continues without a gap.
    std::fs::remove_file(&filler).unwrap();
    let r = s.key.ingest("default", &ev("after", "a.b", 0)).await.unwrap();
    let seq = r.results[0].seq.unwrap();
    // Each view was answered, and its self-audit record either written or counted as failed: a small
    // record may still fit where the refused batch did not (SQLite reuses its log file's space once
    // checkpointed), so how many of each depends on timing, but never their sum.
    let recorded = seq - acked.len() as u64;
    assert_eq!(recorded + failures, views, "{recorded} views recorded, {failures} counted as failed");
    let all = s.admin.query_all("default", &[("limit", "1000")]).await.unwrap();
    assert_eq!(all.len() as u64, seq + 1, "nothing half-stored");
    drop(s);
    drop(mount);
}
