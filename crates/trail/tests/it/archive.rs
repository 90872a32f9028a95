//! `trail archive run | list | restore` and `trail verify --archive` on a real data directory: events
//! of the last 200 days, a pass with 30 hot days, the hot store and the archive both verified, a restore
//! that verifies, and a tampered part that does not.

use std::path::Path;

use serde_json::{Value, json};
use trail_client::Client;

use crate::{Served, create_key, trail};

const DAY: i64 = 86_400_000_000;

fn run_with(dir: &Path, env: &[(&str, String)], args: &[&str]) -> (i32, String) {
    let mut cmd = trail();
    cmd.env("TRAIL_RETENTION__HOT_DAYS", "30").envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let out = cmd.args(args).arg("--data-dir").arg(dir).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap(),
    )
}

fn run(dir: &Path, args: &[&str]) -> (i32, String) {
    run_with(dir, &[], args)
}

/// `trail archive restore` of the days 120 to 90 ago into `file`; returns the window it asked for.
fn restore_days_90_to_120(dir: &Path, env: &[(&str, String)], now: i64, file: &Path) -> (String, String) {
    let from = trail_model::time::format_rfc3339(now - 120 * DAY);
    let to = trail_model::time::format_rfc3339(now - 90 * DAY);
    let args = [
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
    ];
    let (code, out) = run_with(dir, env, &args);
    assert_eq!(code, 0, "{out}");
    (from, to)
}

/// A stopped server's data directory with one event a day for the last 200 days.
async fn populated() -> (tempfile::TempDir, i64) {
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
    (dir, now)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_run_list_restore_and_verify() {
    let (dir, now) = populated().await;
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
    let (from, to) = restore_days_90_to_120(dir.path(), &[], now, &file);
    let lines: Vec<Value> =
        std::fs::read_to_string(&file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 30);
    assert!(
        lines.iter().all(
            |e| e["time"].as_str().unwrap() >= from.as_str() && e["time"].as_str().unwrap() < to.as_str()
        )
    );
    let manifest = format!("{}.manifest", file.display());
    let (code, out) =
        run(dir.path(), &["verify", "--export", file.to_str().unwrap(), "--manifest", &manifest]);
    assert_eq!(code, 0, "{out}");

    // The same through a running server: the list, and a restore run as an export, downloaded and
    // verified by the CLI, holding the same events.
    {
        let served = Served::start(dir.path(), &[("TRAIL_RETENTION__HOT_DAYS", "30")]);
        let token = create_key(dir.path(), "events:read");
        let remote = |args: &[&str]| {
            let out =
                trail().args(args).args(["--server", &served.base, "--token", &token]).output().unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
            )
        };
        let (code, listed) = remote(&["archive", "list", "--org", "default"]);
        assert_eq!(code, 0, "{listed}");
        assert!(listed.lines().count() >= 5, "{listed}");
        let via_server = dir.path().join("via-server.jsonl");
        let (code, out) = remote(&[
            "archive",
            "restore",
            "--org",
            "default",
            "--from",
            &from,
            "--to",
            &to,
            "-o",
            via_server.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{out}");
        let ids = |f: &Path| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_str().unwrap().to_string())
                .collect();
            v.sort();
            v
        };
        assert_eq!(ids(&via_server), ids(&file), "the server's restore holds the same events");
    }

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

/// The same pass, list and restore against an S3-compatible server (moto) on 127.0.0.1. Needs the `s3`
/// feature and `moto_server` on PATH (`pip install 'moto[server]'`); `.ci/run` provides both.
#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_in_s3_compatible_storage() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let Ok(mut moto) = std::process::Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        eprintln!(
            "SKIPPED archive_in_s3_compatible_storage: moto_server is not installed (pip install 'moto[server]')"
        );
        return;
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if http.put(format!("{endpoint}/trail-archive")).send().await.is_ok_and(|r| r.status().is_success()) {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(up, "moto_server did not start");
    let (dir, now) = populated().await;
    let env = [
        ("TRAIL_RETENTION__ARCHIVE", "s3://trail-archive/trail".to_string()),
        ("TRAIL_RETENTION__S3_ENDPOINT", endpoint.clone()),
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
    ];
    let (code, out) = run_with(dir.path(), &env, &["archive", "run"]);
    assert_eq!(code, 0, "{out}");
    let archived: u64 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(archived >= 140, "{out}");
    assert!(!dir.path().join("archive").join("default").exists(), "nothing went to the local directory");
    let listing = http
        .get(format!("{endpoint}/trail-archive?list-type=2&prefix=trail/default/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listing.contains(".events.zst") && listing.contains(".manifest"), "{listing}");
    let (code, out) = run_with(dir.path(), &env, &["archive", "list", "--org", "default"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = run_with(dir.path(), &env, &["verify"]);
    assert_eq!(code, 0, "{out}");
    let file = dir.path().join("from-s3.jsonl");
    restore_days_90_to_120(dir.path(), &env, now, &file);
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 30);
    let _ = moto.kill();
    let _ = moto.wait();
}

/// Says so when the S3 test is not compiled in.
#[cfg(not(feature = "s3"))]
#[test]
fn archive_in_s3_compatible_storage() {
    eprintln!(
        "SKIPPED archive_in_s3_compatible_storage: build with --features s3 (and moto_server on PATH) to run it"
    );
}
