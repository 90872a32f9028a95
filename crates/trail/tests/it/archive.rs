//! `trail archive run | list | restore` and `trail verify --archive` on a real data directory: events
//! of the last 200 days, a pass with 30 hot days, the hot store and the archive both verified, a restore
//! that verifies, and a tampered part that does not.

use std::path::Path;

use serde_json::{Value, json};
use trail_client::Client;

use crate::{Served, create_key, trail};

const DAY: i64 = 86_400_000_000;

fn run(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = trail()
        .env("TRAIL_RETENTION__HOT_DAYS", "30")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_run_list_restore_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = Served::start(dir.path(), &[]);
    let key = Client::new(&served.base).with_token(create_key(dir.path(), "events:write,events:read"));
    let now = trail_model::time::now();
    let events: Vec<Value> = (0..200i64)
        .map(|i| {
            json!({"time": trail_model::time::format_rfc3339(now - i * DAY - 60_000_000),
                   "actor": {"id": format!("user-{}", i % 5)}, "action": "project.updated",
                   "target": {"type": "project", "id": format!("p-{i}")}, "outcome": "success"})
        })
        .collect();
    key.ingest_batch("default", &events).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert!(served.signal("-TERM").success());

    let (code, out) = run(dir.path(), &["archive", "run"]);
    assert_eq!(code, 0, "{out}");
    let archived: u64 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    // Whole months older than 30 days go: at least the ~140 events older than 60 days.
    assert!((140..=170).contains(&archived), "{out}");

    let (code, out) = run(dir.path(), &["archive", "list", "--org", "default"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.lines().count() >= 5, "one line per monthly part: {out}");

    let (code, out) = run(dir.path(), &["verify"]);
    assert_eq!(code, 0, "the hot store still verifies: {out}");
    assert!(out.contains(&format!("{archived} archived")), "{out}");
    let archive = dir.path().join("archive");
    let (code, out) = run(dir.path(), &["verify", "--archive", archive.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("{archived} events")) && out.contains("matches the leaf"), "{out}");

    // Restore a window back to a file that `trail verify --export` accepts.
    let file = dir.path().join("restored.jsonl");
    let from = trail_model::time::format_rfc3339(now - 120 * DAY);
    let to = trail_model::time::format_rfc3339(now - 90 * DAY);
    let (code, out) = run(
        dir.path(),
        &[
            "archive",
            "restore",
            "--org",
            "default",
            "--from",
            &from,
            "--to",
            &to,
            "-o",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    let lines: Vec<Value> =
        std::fs::read_to_string(&file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 30, "{out}");
    assert!(
        lines.iter().all(
            |e| e["time"].as_str().unwrap() >= from.as_str() && e["time"].as_str().unwrap() < to.as_str()
        )
    );
    let manifest = format!("{}.manifest", file.display());
    let (code, out) =
        run(dir.path(), &["verify", "--export", file.to_str().unwrap(), "--manifest", &manifest]);
    assert_eq!(code, 0, "{out}");

    // A changed byte in an archived part is found and named.
    let part = walk(&archive).into_iter().find(|p| p.extension().is_some_and(|e| e == "zst")).unwrap();
    let mut bytes = std::fs::read(&part).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&part, bytes).unwrap();
    let (code, out) = run(dir.path(), &["verify", "--archive", archive.to_str().unwrap()]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("FAILED") && out.contains("altered"), "{out}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
