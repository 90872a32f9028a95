//! `trail export` end to end, and `trail verify --export` rejecting a tampered file or manifest.

use serde_json::json;
use trail_client::Client;

use crate::{Served, create_key, trail};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_download_verify_and_tamper() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &[]);
    let secret = create_key(dir.path(), "events:write,events:read");
    let key = Client::new(&served.base).with_token(&secret);
    let events: Vec<_> = (0..50)
        .map(|i| json!({"actor": {"id": format!("u{}", i % 3)}, "action": "component.deployed", "target": {"type": "component", "name": format!("=cmd|{i}")},
                        "outcome": "success", "info": {"i": i, "text": "a,b \"c\"\nd"}}))
        .collect();
    key.ingest_batch("default", &events).await.unwrap();
    let out = dir.path().join("audit.jsonl");
    let run = |args: &[&str]| {
        let o = trail().args(args).env("TRAIL_TOKEN", &secret).output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    };
    let (code, text) = run(&[
        "export",
        "--server",
        &served.base,
        "--org",
        "default",
        "--format",
        "json",
        "--actor",
        "u1",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("17 rows") && text.contains("verified"), "{text}");
    let manifest = format!("{}.manifest", out.display());
    let (code, text) = run(&[
        "verify",
        "--export",
        out.to_str().unwrap(),
        "--manifest",
        &manifest,
        "--server",
        &served.base,
    ]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("inclusion proofs verified"), "{text}");

    let csv = dir.path().join("audit.csv");
    let (code, text) = run(&[
        "export",
        "--server",
        &served.base,
        "--org",
        "default",
        "--format",
        "csv",
        "-o",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    assert!(std::fs::read_to_string(&csv).unwrap().contains("\"'=cmd|1\""), "formulas are neutralised");

    // One byte of one event changed: the SHA-256 no longer matches.
    let original = std::fs::read_to_string(&out).unwrap();
    std::fs::write(&out, original.replacen("\"u1\"", "\"u7\"", 1)).unwrap();
    let (code, text) = run(&[
        "verify",
        "--export",
        out.to_str().unwrap(),
        "--manifest",
        &manifest,
        "--server",
        &served.base,
    ]);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("SHA-256"), "{text}");
    // The forger also rewrites the manifest's hash: its signature breaks.
    let altered = std::fs::read_to_string(&out).unwrap();
    let sha: String = <sha2::Sha256 as sha2::Digest>::digest(altered.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let note = std::fs::read_to_string(&manifest).unwrap();
    let old_sha = note.split("\"sha256\":\"").nth(1).unwrap()[..64].to_string();
    std::fs::write(&manifest, note.replace(&old_sha, &sha)).unwrap();
    let (code, text) = run(&[
        "verify",
        "--export",
        out.to_str().unwrap(),
        "--manifest",
        &manifest,
        "--server",
        &served.base,
    ]);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("signature does not verify"), "{text}");
}
