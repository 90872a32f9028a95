//! The `audit.log` sink and `trail import` as an operator runs them: the seed document's sample lines
//! imported (twice), written back by the sink in lines a log4j2 pattern accepts; a SIGKILL during ingest,
//! a SIGHUP after an external rotation and a sink directory that disappears, with every event written
//! exactly once in the end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use trail_client::Client;
use trail_model::auditlog;

use crate::{Served, create_key, trail};

/// The sample lines of the integration runtime's audit-log documentation, as written there (curly
/// quotes, quoted `info`, the malformed log-level sample and the old sign-in lines included).
const SEED: &str = r#"[2017-06-07 22:26:22,506]  INFO -  admin logged in at [2017-06-07 22:26:22,501+0530]
[2017-06-07 22:26:22,506]  INFO -  admin logged out at [2017-06-07 22:26:22,501+0530]
[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: “created”,  “type”: “user”, “info” : “{\“userId\” : \“user4\”,\“isAdmin\”: \“true\”}”}
[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: “deleted”,  “type”: “user”, “info” : “{\“userId\”: \“user4\”}”}
[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: “enabled”,  “type”: “proxy_service”, “info” : “{\“proxyName\”: \“proxy1\”}”}
[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: “enabled”,  “type”: “proxy_service_trace”, “info” : “{\“proxyName\”: \“proxy1\”}”}
[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: “created”,  “type”: "carbon_application", “info” : “{\“cAppfileName\”: \“abc.car\”}”}
[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: "deleted",  “type”: "carbon_application", “info” : “{\“cAppfileName\”: \“abc.car\”}”}
[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: "enabled",  “type”: "endpoint", “info” : “{\“endpointName\”: \“httpEP\”}”}
[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: "enabled",  “type”: "endpoint_trace", “info” : “{\“endpointName\”: \“httpEP\”}”}
[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: "enabled",  “type”: "api_trace", “info” : “{\“apiName\”: \“helloAPI\”}”}
[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: "enabled",  “type”: "sequence_trace", “info” : “{\“sequenceName\”: \“helloSequence\”}”}
[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: "enabled",  “type”: "message_processor", “info” : “{\“messageProcessorName\”: \“processor1\”}”}
[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: "enabled",  “type”: "inbound_endpoint_trace", “info” : “{\“inboundEndpointName\”: \“httpIEP\”}”}
[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: "enabled",  “type”: "sequence_template_trace", “info” : “{\“sequenceName\”: \“sequenceTemplate\”,\“sequenceType\”: “sequence\”}”}
[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: "updated",  “type”: "log_level", “info” : “{\“loggerName\”: \“org-apache-hive\”,\“loggingLevel\”: “WARN}”}
[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - { “performedBy”: “admin”, “action”: "created",  “type”: "logger", “info” : {“loggerName”: “synapse-api”,\“loggingLevel\”: \“DEBUG\”,\“loggerClass\”: \“org.apache.rest.API\”}}
"#;

/// (action, target type, target id) each seed line must import as, in order.
const EXPECTED: &[(&str, &str, &str)] = &[
    ("user.logged_in", "user", "admin"),
    ("user.logged_out", "user", "admin"),
    ("user.created", "user", "user4"),
    ("user.deleted", "user", "user4"),
    ("proxy_service.enabled", "proxy_service", "proxy1"),
    ("proxy_service.tracing_enabled", "proxy_service", "proxy1"),
    ("carbon_application.created", "carbon_application", "abc.car"),
    ("carbon_application.deleted", "carbon_application", "abc.car"),
    ("endpoint.enabled", "endpoint", "httpEP"),
    ("endpoint.tracing_enabled", "endpoint", "httpEP"),
    ("api.tracing_enabled", "api", "helloAPI"),
    ("sequence.tracing_enabled", "sequence", "helloSequence"),
    ("message_processor.enabled", "message_processor", "processor1"),
    ("inbound_endpoint.tracing_enabled", "inbound_endpoint", "httpIEP"),
    ("sequence_template.tracing_enabled", "sequence_template", "sequenceTemplate"),
    ("log_level.updated", "log_level", "org-apache-hive"),
    ("logger.created", "logger", "synapse-api"),
];

fn sink_env(dir: &Path, max_size: &str) -> Vec<(String, String)> {
    vec![
        ("TRAIL_SINKS__FILE__PATH".into(), dir.join("logs/audit.log").display().to_string()),
        ("TRAIL_SINKS__FILE__MAX_SIZE".into(), max_size.into()),
        ("TRAIL_SINKS__FILE__MAX_FILES".into(), "1000".into()),
        ("TRAIL_SINKS__FILE__TIME_ZONE".into(), "UTC".into()),
        ("TRAIL_SINKS__FILE__FROM_START".into(), "true".into()),
        ("TRAIL_RETENTION__HOT_DAYS".into(), "3650".into()),
    ]
}

fn serve(dir: &Path, env: &[(String, String)]) -> Served {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Served::start(dir, &env)
}

/// Every line of every audit*.log file under `logs/`, oldest file first.
fn sink_lines(dir: &Path) -> Vec<String> {
    let logs = dir.join("logs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name().unwrap().to_string_lossy().starts_with("audit")
                && p.extension().is_some_and(|e| e == "log")
        })
        .collect();
    // Size rolls of one day are numbered in order; the active file comes last.
    let n = |p: &PathBuf| -> u64 {
        let stem = p.file_stem().unwrap().to_string_lossy().to_string();
        stem.rsplit('-')
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|_| stem.matches('-').count() == 4)
            .unwrap_or(0)
    };
    files.sort_by_key(|p| (p.file_name().unwrap() == "audit.log", n(p)));
    files
        .iter()
        // A file rolled away between listing and reading is read on the next poll.
        .flat_map(|p| {
            std::fs::read_to_string(p).unwrap_or_default().lines().map(str::to_string).collect::<Vec<_>>()
        })
        .collect()
}

/// A log4j2 `[%d] %5p {%c} - %m` line with the runtime's JSON message, checked by hand.
fn log4j2_accepts(line: &str) -> bool {
    let b = line.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    b.first() == Some(&b'[')
        && digits(1..5)
        && b[5] == b'-'
        && digits(6..8)
        && b[8] == b'-'
        && digits(9..11)
        && b[11] == b' '
        && digits(12..14)
        && digits(15..17)
        && digits(18..20)
        && b[20] == b','
        && digits(21..24)
        && line[24..].starts_with("]  INFO {AUDIT_LOG} - {")
        && serde_json::from_str::<Value>(&line[45..]).is_ok_and(|v| {
            v["performedBy"].is_string()
                && v["action"].is_string()
                && v["type"].is_string()
                && v["info"].is_object()
        })
}

async fn wait_for_lines(dir: &Path, n: usize) -> Vec<String> {
    for _ in 0..200 {
        let lines = sink_lines(dir);
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the sink wrote {} lines, expected {n}", sink_lines(dir).len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_lines_import_and_come_back_through_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let env = sink_env(dir.path(), "10MB");
    let served = serve(dir.path(), &env);
    let token = create_key(dir.path(), "events:write,events:read");
    let file = dir.path().join("seed.log");
    std::fs::write(&file, format!("{SEED}this is not an audit line\n")).unwrap();
    let import = |token: &str| {
        trail()
            .args(["import", "--server", &served.base, "--org", "default", "--key", token])
            .arg(&file)
            .output()
            .unwrap()
    };
    let out = import(&token);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "an unparseable line makes the exit status 2: {text}");
    assert!(text.contains("seed.log:18: skipped"), "{text}");
    assert!(text.contains("17 imported, 0 already present, 1 skipped"), "{text}");
    let again = import(&token);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 imported, 17 already present"),
        "ids come from content"
    );

    // Each line is the expected event.
    let key = Client::new(&served.base).with_token(&token);
    let page = key
        .query("default", &[("from", "2017-06-01T00:00:00Z"), ("to", "2017-06-30T00:00:00Z")])
        .await
        .unwrap();
    assert_eq!(page.events.len(), 2);
    let mut events = page.events;
    let rest = key
        .query(
            "default",
            &[("from", "2021-09-01T00:00:00Z"), ("to", "2021-09-30T00:00:00Z"), ("limit", "100")],
        )
        .await
        .unwrap();
    events.extend(rest.events);
    events.sort_by_key(|e| e["seq"].as_u64());
    let got: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (s(&e["action"]), s(&e["target"]["type"]), s(&e["target"]["id"]))
        })
        .collect();
    let want: Vec<(String, String, String)> =
        EXPECTED.iter().map(|(a, t, i)| (a.to_string(), t.to_string(), i.to_string())).collect();
    assert_eq!(got, want);
    assert_eq!(events[0]["time"], "2017-06-07T16:56:22.501Z", "the sign-in's own offset wins");
    assert_eq!(events[2]["time"], "2021-09-07T12:42:59.249Z", "other lines are read in --time-zone (UTC)");
    assert_eq!(events[2]["actor"]["id"], "admin");
    assert_eq!(events[15]["info"]["loggingLevel"], "WARN");

    // The sink writes them back in the runtime's format; each line parses back to its event. The
    // first line is Trail's own record of `trail admin create-key`.
    let lines = wait_for_lines(dir.path(), 18).await;
    assert_eq!(lines.len(), 18);
    assert!(lines[0].contains("api_key.created") || lines[0].contains("\"created\""), "{}", lines[0]);
    let lines = &lines[1..];
    for (line, stored) in lines.iter().zip(&events) {
        assert!(log4j2_accepts(line), "{line}");
        let parsed = auditlog::parse_line(line).unwrap().unwrap();
        assert_eq!(parsed.event_id.as_deref(), stored["id"].as_str());
        assert_eq!(parsed.event["action"], stored["action"], "{line}");
        assert_eq!(parsed.event["target"], stored["target"], "{line}");
    }
    assert!(lines[2].starts_with("[2021-09-07 12:42:59,249]  INFO {AUDIT_LOG} - {\"performedBy\":\"admin\",\"action\":\"created\",\"type\":\"user\""), "{}", lines[2]);
}

fn ev(i: usize) -> Value {
    json!({"actor": {"id": format!("user-{}", i % 7)}, "action": "component.deployed",
           "target": {"type": "component", "id": format!("c-{i}")}, "outcome": "success",
           "info": {"n": i, "text": "x".repeat(i % 50)}})
}

/// Every event of org default appears in the sink's files exactly once, in seq order: Trail's
/// record of the key's creation (seq 0, which import would refuse as `source: "trail"`), then the
/// events sent.
fn assert_exactly_once(dir: &Path, events: u64) {
    let lines = sink_lines(dir);
    assert!(auditlog::parse_line(&lines[0]).is_err(), "Trail's own record first: {}", lines[0]);
    let mut seqs = Vec::new();
    for line in &lines[1..] {
        let p = auditlog::parse_line(line).unwrap().unwrap();
        seqs.push(p.seq.unwrap());
    }
    let want: Vec<u64> = (1..=events).collect();
    assert_eq!(seqs, want, "each event once, in order ({} lines)", seqs.len());
}

async fn tree_size(key: &Client) -> u64 {
    let cp = key.get_text("/v1/orgs/default/checkpoint").await.unwrap();
    cp.lines().nth(1).and_then(|l| l.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_survives_kill_rotation_and_a_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let env = sink_env(dir.path(), "8KB");
    let mut served = serve(dir.path(), &env);
    let token = create_key(dir.path(), "events:write,events:read");
    let key = Client::new(&served.base).with_token(&token);
    let batch: Vec<Value> = (0..400).map(ev).collect();
    for chunk in batch.chunks(50) {
        key.ingest_batch("default", chunk).await.unwrap();
    }
    // SIGKILL while the sink is still writing (or just after): no line may be lost or doubled.
    served.signal("-KILL");
    let mut served = serve(dir.path(), &env);
    let key = Client::new(&served.base).with_token(&token);
    for chunk in (400..600).map(ev).collect::<Vec<_>>().chunks(50) {
        key.ingest_batch("default", chunk).await.unwrap();
    }
    wait_for_lines(dir.path(), 601).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_exactly_once(dir.path(), 600);
    let rolled = std::fs::read_dir(dir.path().join("logs")).unwrap().count();
    assert!(rolled > 3, "8KB files rolled on size: {rolled} files");

    // External rotation: move audit.log away, SIGHUP, and new lines go to a new audit.log.
    let logs = dir.path().join("logs");
    std::fs::rename(logs.join("audit.log"), dir.path().join("rotated-away.log")).unwrap();
    Command::new("kill").args(["-HUP", &served.child.id().to_string()]).status().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    key.ingest_batch("default", &(600..610).map(ev).collect::<Vec<_>>()).await.unwrap();
    for _ in 0..100 {
        if logs.join("audit.log").exists()
            && std::fs::read_to_string(logs.join("audit.log")).unwrap().lines().count() >= 10
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fresh = std::fs::read_to_string(logs.join("audit.log")).unwrap();
    let seqs: Vec<u64> =
        fresh.lines().map(|l| auditlog::parse_line(l).unwrap().unwrap().seq.unwrap()).collect();
    assert_eq!(seqs, (601..611).collect::<Vec<_>>(), "after SIGHUP the new file holds exactly the new lines");

    // The directory disappears (a file in its way): readyz and metrics say so, ingest goes on, and
    // the sink catches up once the directory is back.
    let parked = dir.path().join("logs-parked");
    std::fs::rename(&logs, &parked).unwrap();
    std::fs::write(&logs, b"not a directory").unwrap();
    Command::new("kill").args(["-HUP", &served.child.id().to_string()]).status().unwrap();
    key.ingest_batch("default", &(610..650).map(ev).collect::<Vec<_>>()).await.unwrap();
    let anon = Client::new(&served.base);
    // Wait for three failed cycles with the 40 events waiting (the sink retries once a second, and
    // the lag it reports is its last cycle's): each retry must write nothing to the moved file.
    let mut degraded = Value::Null;
    let (mut metrics, mut errors) = (String::new(), 0);
    for _ in 0..100 {
        degraded = anon.get("/readyz").await.unwrap();
        metrics = anon.request(reqwest::Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
        errors = metrics
            .lines()
            .find_map(|l| l.strip_prefix("trail_sink_errors_total "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if degraded["status"] == "degraded"
            && degraded["sink"]["lag_events"].as_u64() >= Some(40)
            && errors >= 3
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(degraded["status"], "degraded", "{degraded}");
    assert_eq!(degraded["sink"]["status"], "failing");
    assert!(degraded["sink"]["lag_events"].as_u64().unwrap() >= 40, "{degraded}");
    assert!(errors >= 3 && metrics.contains("trail_sink_up 0"), "{metrics}");
    std::fs::remove_file(&logs).unwrap();
    std::fs::rename(&parked, &logs).unwrap();
    for _ in 0..100 {
        if anon.get("/readyz").await.unwrap()["status"] == "ready" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(anon.get("/readyz").await.unwrap()["sink"]["status"], "ok");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(tree_size(&key).await, 651, "the key's creation and 650 events");
    let mut by_seq: BTreeMap<u64, usize> = BTreeMap::new();
    let rotated = std::fs::read_to_string(dir.path().join("rotated-away.log")).unwrap();
    // (Trail's record of the key's creation, seq 0, is a line import would refuse.)
    for line in sink_lines(dir.path()).into_iter().chain(rotated.lines().map(str::to_string)).skip(1) {
        *by_seq.entry(auditlog::parse_line(&line).unwrap().unwrap().seq.unwrap()).or_default() += 1;
    }
    assert_eq!(
        by_seq.keys().copied().collect::<Vec<_>>(),
        (1..=650).collect::<Vec<_>>(),
        "every event written"
    );
    assert!(by_seq.values().all(|n| *n == 1), "none twice");
    served.signal("-TERM");
}

/// `sign_in_lines = "carbon"`: sign-ins, sign-outs and failed sign-ins are written in the runtime's
/// older shape (`admin logged in at […]`) that existing parsers read; everything else stays an
/// `{AUDIT_LOG}` line. Both read back through the same parser `trail import` uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_in_the_runtimes_own_line_shape() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = sink_env(dir.path(), "10MB");
    env.push(("TRAIL_SINKS__FILE__SIGN_IN_LINES".into(), "carbon".into()));
    let served = serve(dir.path(), &env);
    create_key(dir.path(), "events:read");
    let anon = Client::new(&served.base);
    let login = |password: &str| json!({"email": "admin@localhost", "password": password});
    assert!(anon.post("/v1/auth/login", &login("not the password")).await.is_err());
    let token = anon.post("/v1/auth/login", &login(crate::PASSWORD)).await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    anon.with_token(&token).post("/v1/auth/logout", &json!({})).await.ok();
    // The key's creation (seq 0), the failed sign-in, the sign-in and the sign-out.
    let lines = wait_for_lines(dir.path(), 4).await;
    assert!(lines[0].contains("{AUDIT_LOG}"), "other events keep the JSON line: {}", lines[0]);
    let carbon: Vec<&String> = lines.iter().filter(|l| !l.contains("{AUDIT_LOG}")).collect();
    assert_eq!(carbon.len(), 3, "{lines:#?}");
    assert!(
        carbon[0].contains("INFO -  Failed Administrator login attempt 'admin@localhost' at ["),
        "{}",
        carbon[0]
    );
    assert!(carbon[1].contains("INFO -  admin@localhost logged in at ["), "{}", carbon[1]);
    assert!(carbon[2].contains("INFO -  admin@localhost logged out at ["), "{}", carbon[2]);
    let actions: Vec<String> = carbon
        .iter()
        .map(|l| auditlog::parse_line(l).unwrap().unwrap().event["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(actions, ["user.sign_in_failed", "user.logged_in", "user.logged_out"]);
}
