//! The command line: bootstrap, configuration, admin commands, errors and the `--help` snapshot.

use std::path::PathBuf;

use crate::{Served, trail};

/// Compares with a committed snapshot; `UPDATE_SNAPSHOTS=1` rewrites it (review the diff).
fn snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(actual, expected, "{name} changed; rerun with UPDATE_SNAPSHOTS=1 and review the diff");
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = trail().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn help_output_is_deliberate() {
    let mut all = String::new();
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["admin", "--help"],
        &["admin", "create-key", "--help"],
        &["verify", "--help"],
        &["export", "--help"],
    ] {
        let (code, out, _) = run(args);
        assert_eq!(code, 0);
        all.push_str(&format!("$ trail {}\n{out}\n", args.join(" ")));
    }
    snapshot("help.txt", &all);
}

#[test]
fn openapi_document_is_deliberate() {
    let doc = serde_json::to_string_pretty(&trail_server::openapi::document()).unwrap();
    snapshot("openapi.json", &format!("{doc}\n"));
}

#[test]
fn default_config_is_valid_toml_and_loads() {
    let (code, out, _) = run(&["default-config"]);
    assert_eq!(code, 0);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("trail.toml");
    std::fs::write(&file, &out).unwrap();
    let s = trail_server::Settings::load(Some(&file), [], toml::Table::new()).unwrap();
    assert_eq!(s.listen.port(), 7700);
}

#[test]
fn errors_are_one_readable_line_with_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, _, err) = run(&["admin", "create-key", "--org", "nope", "--data-dir", d]);
    assert_eq!(code, 1);
    assert_eq!(err.trim().lines().filter(|l| l.starts_with("error:")).count(), 1, "{err}");
    assert!(err.contains("organization nope does not exist"), "{err}");
    let (code, _, err) =
        run(&["admin", "create-key", "--org", "default", "--scopes", "events:delete", "--data-dir", d]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown scope"), "{err}");
    let (code, _, err) = run(&["serve", "--data-dir", d, "--listen", "not-an-address"]);
    assert_eq!(code, 1);
    assert!(err.contains("listen"), "{err}");
    let (code, _, _) = run(&["serve", "--no-such-flag"]);
    assert_eq!(code, 2, "usage errors exit 2");
    let (code, _, err) = run(&["admin", "create-org", "--slug", "Bad Slug", "--data-dir", d]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid slug"), "{err}");
}

#[test]
fn first_start_prints_a_generated_password_once() {
    let dir = tempfile::tempdir().unwrap();
    let first = Served::start(dir.path(), &[("TRAIL_ADMIN_PASSWORD", "")]);
    assert_eq!(first.banner.len(), 1, "{:?}", first.banner);
    assert!(first.banner[0].contains("admin@localhost with password: "), "{:?}", first.banner);
    drop(first);
    let second = Served::start(dir.path(), &[("TRAIL_ADMIN_PASSWORD", "")]);
    assert!(second.banner.is_empty(), "the password is shown only on the first start: {:?}", second.banner);
}

/// Orgs made with `trail admin create-org` before the first start: that start makes
/// `admin@localhost` an administrator of each (and no `default`), so someone can sign in and read
/// them; a later start makes no one else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_after_create_org_makes_an_administrator_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for slug in ["acme", "globex"] {
        let (code, _, err) = run(&["admin", "create-org", "--slug", slug, "--data-dir", d]);
        assert_eq!(code, 0, "{err}");
    }
    let first = Served::start(dir.path(), &[("TRAIL_ADMIN_PASSWORD", "")]);
    assert_eq!(first.banner.len(), 1, "{:?}", first.banner);
    let password = first.banner[0].rsplit("with password: ").next().unwrap().trim().to_string();
    let admin = trail_client::Client::new(&first.base).login("admin@localhost", &password).await.unwrap();
    let orgs = admin.get("/v1/orgs").await.unwrap();
    let mut slugs: Vec<&str> =
        orgs["orgs"].as_array().unwrap().iter().map(|o| o["slug"].as_str().unwrap()).collect();
    slugs.sort_unstable();
    assert_eq!(slugs, ["acme", "globex"], "{orgs}");
    for slug in ["acme", "globex"] {
        admin.query(slug, &[]).await.unwrap();
    }
    assert!(admin.me().await.unwrap()["server_admin"].as_bool().unwrap());
    drop(first);
    let second = Served::start(dir.path(), &[("TRAIL_ADMIN_PASSWORD", "")]);
    assert!(second.banner.is_empty(), "made once: {:?}", second.banner);
}

#[test]
fn environment_configures_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = trail();
    let out = cmd
        .args(["serve"])
        .env("TRAIL_DATA_DIR", dir.path())
        .env("TRAIL_LISTEN", "127.0.0.1:0")
        .env("TRAIL_LIMITS__MAX_BATCH_EVENTS", "many")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("max_batch_events"), "{err}");
}

#[test]
fn a_read_only_data_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap().keep();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED a_read_only_data_directory_is_a_clear_error: cannot mount a tmpfs (needs root)");
        return;
    }
    let unmount = |d: &std::path::Path| {
        let _ = std::process::Command::new("umount").arg("-l").arg(d).status();
    };
    // A real data directory first, then the filesystem turns read-only.
    let d = dir.to_str().unwrap();
    let (code, _, err) = run(&["admin", "create-org", "--slug", "acme", "--data-dir", d]);
    assert_eq!(code, 0, "{err}");
    // With the signing key already there, it is the store that must notice.
    std::fs::write(dir.join("log.key"), format!("{}\n", "ab".repeat(32))).unwrap();
    let ro = std::process::Command::new("mount").args(["-o", "remount,ro"]).arg(&dir).status().unwrap();
    assert!(ro.success());
    let (code, out, err) = run(&["serve", "--listen", "127.0.0.1:0", "--data-dir", d]);
    unmount(&dir);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or_default().to_string();
    assert!(line.contains(d) && line.to_lowercase().contains("readonly database"), "{err}");
    assert!(!out.contains("listening on"));
}

/// `trail import --org default --data-dir <dir> <file>`, run to the end.
fn import_offline(dir: &std::path::Path, file: &std::path::Path) -> std::process::Output {
    crate::trail().args(["import", "--org", "default", "--data-dir"]).arg(dir).arg(file).output().unwrap()
}

/// Imports two events (NDJSON lines, the second one refused) offline into a fresh data directory
/// and checks the second is skipped with `why`, the first imported, and the exit status is 2.
fn import_refuses_the_second(second: serde_json::Value, why: &str) {
    let dir = tempfile::tempdir().unwrap();
    drop(crate::Served::start(dir.path(), &[]));
    let file = dir.path().join("events.ndjson");
    let first = serde_json::json!({"actor": {"id": "alice"}, "action": "project.updated",
                                   "target": {"type": "project"}, "outcome": "success", "source": "ci"});
    std::fs::write(&file, format!("{first}\n{second}\n")).unwrap();
    let out = import_offline(dir.path(), &file);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains(&format!("events.ndjson:2: skipped: {why}")), "{text}");
    assert!(text.contains("1 imported"), "{text}");
}

/// Identical lines without an id are distinct events (each occurrence derives its own id), a line
/// with its own id is that id however often it appears, and importing the file again adds nothing.
#[test]
fn import_counts_identical_lines_and_imports_each_once() {
    let dir = tempfile::tempdir().unwrap();
    drop(crate::Served::start(dir.path(), &[]));
    let file = dir.path().join("events.ndjson");
    let yesterday = trail_model::time::format_rfc3339(trail_model::time::now() - 86_400_000_000);
    let bare = serde_json::json!({"time": yesterday, "actor": {"id": "alice"},
                                  "action": "project.updated", "target": {"type": "project"}, "outcome": "success"});
    let with_id = serde_json::json!({"id": "evt-fixed-1", "time": yesterday, "actor": {"id": "bob"},
                                     "action": "project.updated", "target": {"type": "project"}, "outcome": "success"});
    let audit = format!(
        "[{} {},249]  INFO {{AUDIT_LOG}} - {{ \"performedBy\": \"admin\", \"action\": \"created\", \"type\": \"user\", \"info\": \"{{}}\"}}",
        &yesterday[..10],
        &yesterday[11..19]
    );
    std::fs::write(&file, format!("{bare}\n{with_id}\n{bare}\n{audit}\n{with_id}\n{audit}\n{bare}\n"))
        .unwrap();
    let import = || {
        let out = import_offline(dir.path(), &file);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let first = import();
    assert!(first.contains("7 lines, 6 imported, 1 already present, 0 skipped"), "{first}");
    let again = import();
    assert!(again.contains("7 lines, 0 imported, 7 already present, 0 skipped"), "{again}");
}

/// `source: "trail"` marks Trail's own records: an offline import refuses it line by line, as ingest
/// does, and imports the rest.
#[test]
fn import_refuses_trails_own_source_line_by_line() {
    let mallory = serde_json::json!({"actor": {"id": "mallory"}, "action": "api_key.revoked",
                                     "target": {"type": "api_key"}, "outcome": "success", "source": "trail"});
    import_refuses_the_second(mallory, "source: \"trail\" is reserved");
}

/// Import admits events exactly as ingest does (`trail_model::event::admit_event`): a 70 KiB event
/// is refused with the ingest's message, the rest imported.
#[test]
fn import_refuses_an_event_larger_than_ingest_takes() {
    let big = serde_json::json!({"actor": {"id": "bob"}, "action": "project.updated", "target": {"type": "project"},
                                 "outcome": "success", "info": {"note": "x".repeat(70 * 1024)}});
    import_refuses_the_second(big, "an event may be at most 65536 bytes");
}

/// A PostgreSQL password in the URL, as a parameter or in keyword form never reaches the log, even
/// at debug level and when the connection fails.
#[test]
fn database_passwords_are_never_logged() {
    for url in [
        "postgres://trail:hunter2-secret@127.0.0.1:1/trail",
        "postgres://trail@127.0.0.1:1/trail?password=hunter2-secret",
        "host=127.0.0.1 port=1 user=trail password=hunter2-secret dbname=trail",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = crate::trail()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env("TRAIL_STORAGE__URL", url)
            .env("TRAIL_LOG", "debug")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "nothing listens on port 1: {text}");
        assert!(text.contains("starting"), "the settings were logged: {text}");
        assert!(!text.contains("hunter2"), "{url}: {text}");
    }
}

/// `trail admin compact` rewrites a data directory an earlier release made, whose files could never
/// give freed pages back (`auto_vacuum = NONE`): after it they hold no free pages and give space back
/// from then on, with every event there and the log verified. It refuses, changing nothing, while the
/// server has the directory open.
#[test]
fn compact_gives_an_earlier_releases_free_space_back() {
    let dir = tempfile::tempdir().unwrap();
    drop(crate::Served::start(dir.path(), &[]));
    let file = dir.path().join("events.ndjson");
    let yesterday = trail_model::time::format_rfc3339(trail_model::time::now() - 86_400_000_000);
    let lines: Vec<String> = (0..500)
        .map(|i| {
            serde_json::json!({"time": yesterday, "actor": {"id": format!("user-{i}")}, "action": "project.updated",
                               "target": {"type": "project", "id": format!("p-{i}")}, "outcome": "success"})
            .to_string()
        })
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let out = import_offline(dir.path(), &file);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    // Both files as an earlier release left them: made with `auto_vacuum = NONE`, holding 1,000 free
    // pages (what a pruned month or a migration's dropped rows leave).
    let files = [dir.path().join("trail.db"), dir.path().join("trail-index.db")];
    let pragma = |c: &rusqlite::Connection, name: &str| -> i64 {
        c.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0)).unwrap()
    };
    let state = |path: &std::path::Path| {
        let c = rusqlite::Connection::open(path).unwrap();
        (pragma(&c, "auto_vacuum"), pragma(&c, "freelist_count"), pragma(&c, "page_count"))
    };
    for path in &files {
        rusqlite::Connection::open(path)
            .unwrap()
            .execute_batch(
                "PRAGMA auto_vacuum = NONE; VACUUM;
                 CREATE TABLE gone(x BLOB);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
                 INSERT INTO gone SELECT zeroblob(4000) FROM n;
                 DROP TABLE gone;",
            )
            .unwrap();
    }
    let old: Vec<_> = files.iter().map(|p| state(p)).collect();
    assert!(old.iter().all(|&(mode, free, _)| mode == 0 && free >= 1000), "{old:?}");

    let d = dir.path().to_str().unwrap();
    let server = crate::Served::start(dir.path(), &[]);
    let (code, out, err) = run(&["admin", "compact", "--data-dir", d]);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert_eq!(
        err.trim(),
        format!(
            "error: {d}/trail.db is in use by another process (is the server running?): stop it and try again"
        )
    );
    drop(server);
    // Serving wrote to the log (its last start), so only the mode and the free pages are compared.
    let kept = |(mode, free, _): (i64, i64, i64)| (mode, free >= 1000);
    assert!(files.iter().all(|p| kept(state(p)) == (0, true)), "nothing changed while in use");

    let (code, out, err) = run(&["admin", "compact", "--data-dir", d]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    for (path, (_, _, pages_before)) in files.iter().zip(&old) {
        let line = out.lines().find(|l| l.starts_with(path.to_str().unwrap())).unwrap_or_default();
        assert!(line.ends_with("and gives space back from now on"), "{out}");
        let (mode, free, pages) = state(path);
        assert_eq!((mode, free), (2, 0), "{}", path.display());
        assert!(pages + 900 < *pages_before, "{}: {pages} pages of {pages_before}", path.display());
    }
    let (code, out, err) = run(&["verify", "--data-dir", d]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("default: ok, 500 events"), "{out}");
}
