//! Saved searches and alert rules with real receivers: aiosmtpd (STARTTLS required, AUTH required) for
//! email, the HTTPS webhook receiver (checking every signature with README's code), and the org's own
//! log. Conditions fire exactly when they should, late events included; a SIGKILL loses and repeats
//! nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trail_client::Client;

use crate::stream::{Receiver, certs, free_port, python_receiver, received, wait_for};
use crate::{PASSWORD, Served, create_key};

/// aiosmtpd (`tests/receivers/smtp_receiver.py`): STARTTLS and AUTH required.
struct Smtp {
    child: Child,
    out: PathBuf,
    port: u16,
}

impl Smtp {
    fn start(dir: &Path, certs: &crate::stream::Certs) -> Option<Self> {
        let ok = Command::new("python3").args(["-c", "import aiosmtpd"]).status().is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: aiosmtpd is not installed (pip install aiosmtpd)");
            return None;
        }
        let args: Vec<&std::ffi::OsStr> = vec![
            "--cert".as_ref(),
            certs.cert.as_os_str(),
            "--key".as_ref(),
            certs.key.as_os_str(),
            "--user".as_ref(),
            "alerts@acme.io".as_ref(),
            "--password".as_ref(),
            "smtp-pass-1".as_ref(),
        ];
        let (child, port, out) = python_receiver("smtp_receiver.py", &args, dir);
        Some(Self { child, out, port })
    }

    fn messages(&self) -> Vec<String> {
        received(&self.out, "eml").into_iter().map(|m| String::from_utf8(m).unwrap()).collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn failed_sign_in(id: &str, actor: &str, time: i64) -> Value {
    json!({"id": id, "time": trail_model::time::format_rfc3339(time), "actor": {"id": actor, "ip": "198.51.100.7"},
           "action": "user.sign_in_failed", "target": {"type": "user", "id": actor}, "outcome": "failure"})
}

/// Every firing of a rule, page by page (newest first).
async fn firings(admin: &Client, rule: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut before = String::new();
    loop {
        let v = admin.get(&format!("/v1/orgs/default/alerts?rule={rule}&limit=200{before}")).await.unwrap();
        out.extend(v["firings"].as_array().unwrap().iter().cloned());
        match v["next_before"].as_str() {
            Some(id) => before = format!("&before={id}"),
            None => return out,
        }
    }
}

async fn wait_firings(admin: &Client, rule: &str, n: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let f = firings(admin, rule).await;
        if f.len() >= n && f.iter().all(|f| f["delivered"] == true) {
            return f;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let all = admin.get("/v1/orgs/default/alerts?limit=200").await.unwrap();
            let rules = admin.get("/v1/orgs/default/alert-rules").await.unwrap();
            let all: Vec<(Value, Value, Value)> = all["firings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| (f["rule_name"].clone(), f["seqs"].clone(), f["fired_at"].clone()))
                .collect();
            let rules: Vec<(Value, Value)> = rules["rules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (r["id"].clone(), r["name"].clone()))
                .collect();
            let log = admin.query_all("default", &[("limit", "1000")]).await.unwrap();
            let log: Vec<(Value, Value)> =
                log.iter().map(|e| (e["seq"].clone(), e["action"].clone())).collect();
            panic!(
                "expected {n} firings of {rule}, have {}; all firings: {all:?}; rules: {rules:?}; log {log:?}",
                f.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the evaluator has judged everything appended so far: appends a barrier event and waits
/// for its firing by the `barrier` rule (every event is judged in seq order, and a batch's firings are
/// written before the next is read).
async fn settle(admin: &Client, key: &Client, barrier: &str) {
    let r = key
        .ingest("default", &json!({"actor": {"id": "test"}, "action": "test.barrier", "target": {"type": "test"}, "outcome": "success"}))
        .await
        .unwrap();
    let seq = r.results[0].seq.unwrap();
    let started = Instant::now();
    while !firings(admin, barrier).await.iter().any(|f| f["seqs"][0] == seq) {
        assert!(started.elapsed() < Duration::from_secs(30), "the evaluator did not reach seq {seq}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_fire_exactly_when_they_should_and_notify() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let Some(smtp) = Smtp::start(dir.path(), &certs) else { return };
    let data = dir.path().join("data");
    let port = smtp.port.to_string();
    let ca = certs.ca.display().to_string();
    let served = Served::start(
        &data,
        &[
            ("TRAIL_SMTP__HOST", "127.0.0.1"),
            ("TRAIL_SMTP__PORT", &port),
            ("TRAIL_SMTP__FROM", "trail@acme.io"),
            ("TRAIL_SMTP__TLS", "starttls"),
            ("TRAIL_SMTP__USERNAME", "alerts@acme.io"),
            ("TRAIL_SMTP__PASSWORD", "smtp-pass-1"),
            ("TRAIL_SMTP__CA_FILE", &ca),
            ("TRAIL_PUBLIC_URL", "https://trail.acme.io"),
        ],
    );
    let admin = Client::new(&served.base).login("admin@localhost", PASSWORD).await.unwrap();
    let key = Client::new(&served.base).with_token(create_key(&data, "events:write,events:read"));
    let rx_dir = dir.path().join("rx");
    std::fs::create_dir_all(&rx_dir).unwrap();
    let hook_port = free_port();

    let barrier = admin
        .post(
            "/v1/orgs/default/alert-rules",
            &json!({"name": "Barrier", "search": "action=test.barrier", "condition": {"kind": "any"}, "cooldown_secs": 0}),
        )
        .await
        .unwrap();
    let barrier = barrier["id"].as_str().unwrap().to_string();
    // 3 failed sign-ins of one account within 60 s, mailed and posted; quiet for 10 minutes after.
    let rule = admin
        .post(
            "/v1/orgs/default/alert-rules",
            &json!({"name": "Brute force", "search": "action=user.sign_in_failed",
                    "condition": {"kind": "threshold", "count": 3, "window_secs": 60, "group_by": "actor"},
                    "cooldown_secs": 600,
                    "notify": {"emails": ["secops@acme.io"], "webhook": {"url": format!("https://127.0.0.1:{hook_port}/trail"), "ca_pem": certs.ca_pem}}}),
        )
        .await
        .unwrap();
    let rule_id = rule["id"].as_str().unwrap().to_string();
    let secret = rule["webhook_secret"].as_str().unwrap().to_string();
    let listed = admin.get("/v1/orgs/default/alert-rules").await.unwrap();
    assert!(!listed.to_string().contains(&secret), "the webhook secret is shown once");
    let rx = Receiver::start("webhook", &rx_dir, &certs, hook_port, ("--secret", &secret));
    settle(&admin, &key, &barrier).await;

    let t0 = trail_model::time::now() - 600_000_000;
    let s = 1_000_000;
    // ana at 0 s and 20 s, bob at 5 s, then ana again but *earlier* (late): 10 s. Fires for ana then.
    key.ingest_batch(
        "default",
        &[
            failed_sign_in("a1", "ana", t0),
            failed_sign_in("a2", "ana", t0 + 20 * s),
            failed_sign_in("b1", "bob", t0 + 5 * s),
        ],
    )
    .await
    .unwrap();
    settle(&admin, &key, &barrier).await;
    assert!(firings(&admin, &rule_id).await.is_empty(), "two of ana's and one of bob's: nothing yet");
    key.ingest("default", &failed_sign_in("a3", "ana", t0 + 10 * s)).await.unwrap();
    let fired = wait_firings(&admin, &rule_id, 1).await;
    assert_eq!(fired.len(), 1);
    let f = &fired[0];
    assert_eq!((f["key"].as_str(), f["count"].as_u64()), (Some("ana"), Some(3)), "{f}");
    // Inside the cool-down, five more of ana's and three spread-out of bob's: no new firing.
    let more: Vec<Value> =
        (0..5).map(|i| failed_sign_in(&format!("a{}", 10 + i), "ana", t0 + (30 + i) * s)).collect();
    key.ingest_batch("default", &more).await.unwrap();
    let spread: Vec<Value> =
        (0..3).map(|i| failed_sign_in(&format!("b{}", 10 + i), "bob", t0 + (100 + i * 90) * s)).collect();
    key.ingest_batch("default", &spread).await.unwrap();
    settle(&admin, &key, &barrier).await;
    assert_eq!(firings(&admin, &rule_id).await.len(), 1, "a burst fires once; bob's are too far apart");

    // Delivered: the email went through STARTTLS and AUTH, the webhook carried a valid signature.
    let deliveries = f["deliveries"].as_array().unwrap();
    assert!(deliveries.iter().all(|d| d["ok"] == true), "{deliveries:?}");
    wait_for("the email", 30, || !smtp.messages().is_empty()).await;
    // Quoted-printable, as mail clients read it.
    let mail = smtp.messages()[0].replace("=\r\n", "").replace("=3D", "=");
    assert!(
        mail.contains("X-Was-TLS: True") && mail.contains("X-Authenticated-As: alerts@acme.io"),
        "{mail}"
    );
    assert!(!mail.contains("smtp-pass-1"));
    assert!(mail.contains("X-Envelope-To: secops@acme.io") && mail.contains("Brute force"), "{mail}");
    assert!(
        mail.contains("https://trail.acme.io/orgs/default/logs?action=user.sign_in_failed"),
        "the firing links to its events: {mail}"
    );
    wait_for("the webhook", 30, || !rx.bodies().is_empty()).await;
    assert!(!rx_dir.join("rejected").exists(), "signed with the rule's secret");
    let hook: Value = serde_json::from_slice(&rx.bodies()[0]).unwrap();
    assert_eq!(
        (hook["type"].as_str(), hook["rule"]["id"].as_str()),
        (Some("alert.fired"), Some(rule_id.as_str()))
    );
    assert_eq!(hook["events"].as_array().unwrap().len(), 3);
    // And recorded in the org's own log.
    // (The barrier's own firings are there too; this rule fired once.)
    let log = key.query_all("default", &[("action", "alert.fired"), ("limit", "1000")]).await.unwrap();
    let log: Vec<&Value> = log.iter().filter(|e| e["target"]["id"] == rule_id.as_str()).collect();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["target"]["id"], rule_id.as_str());
    assert_eq!(log[0]["source"], "trail");

    // Templates, enabled in one click.
    for t in ["privilege-grant", "new-action", "deactivated-user-activity", "retention-weakened"] {
        admin.post(&format!("/v1/orgs/default/alert-templates/{t}"), &json!({})).await.unwrap();
    }
    let e = admin.post("/v1/orgs/default/alert-templates/new-action", &json!({})).await;
    assert!(e.is_ok(), "a template may be enabled twice (two rules)");
    let templates = admin.get("/v1/orgs/default/alert-templates").await.unwrap();
    assert!(
        templates["templates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == "privilege-grant" && t["enabled"] == true)
    );
    let rules = admin.get("/v1/orgs/default/alert-rules").await.unwrap();
    let id_of = |template: &str| -> String {
        rules["rules"].as_array().unwrap().iter().find(|r| r["template"] == template).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    settle(&admin, &key, &barrier).await;
    // A key with the events:read scope is not a privilege grant… but any new API key is.
    admin.create_api_key("default", "ci", &["events:write"]).await.unwrap();
    let now = trail_model::time::now();
    let ev = |id: &str, actor: &str, action: &str, target: &str| {
        json!({"id": id, "time": trail_model::time::format_rfc3339(now), "actor": {"id": actor}, "action": action,
               "target": {"type": "user", "id": target}, "outcome": "success"})
    };
    key.ingest_batch(
        "default",
        &[ev("n1", "ana", "billing.plan_changed", "x"), ev("n2", "ana", "billing.plan_changed", "x")],
    )
    .await
    .unwrap();
    key.ingest_batch(
        "default",
        &[
            ev("d1", "ana", "user.deleted", "carol"),
            ev("d2", "carol", "project.updated", "p1"),
            ev("d3", "dave", "project.updated", "p1"),
        ],
    )
    .await
    .unwrap();
    admin.patch("/v1/orgs/default/settings", &json!({"hot_days": 200})).await.unwrap();
    // The settings change is the last event: once its firing is written, every earlier event has
    // been judged (in seq order).
    let weakened = wait_firings(&admin, &id_of("retention-weakened"), 1).await;
    assert_eq!(weakened.len(), 1);
    let privilege = wait_firings(&admin, &id_of("privilege-grant"), 1).await;
    assert_eq!(privilege.len(), 1);
    let new_action = firings(&admin, &id_of("new-action")).await;
    let novel: Vec<&Value> = new_action.iter().filter(|f| f["count"] == 1).collect();
    assert!(!novel.is_empty());
    let deactivated = wait_firings(&admin, &id_of("deactivated-user-activity"), 1).await;
    assert_eq!(deactivated.len(), 1, "carol acted after her deletion; dave was never deleted");
    // billing.plan_changed was new once, not twice.
    let plan: Vec<Value> = {
        let log = key.query_all("default", &[("action", "alert.fired"), ("limit", "1000")]).await.unwrap();
        log.into_iter().filter(|e| e["info"]["seqs"].as_array().is_some_and(|s| s.len() == 1)).collect()
    };
    let first_plan_seq = key.query_all("default", &[("action", "billing.plan_changed")]).await.unwrap();
    let seqs: Vec<u64> = first_plan_seq.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let fired_on: Vec<u64> = plan.iter().map(|e| e["info"]["seqs"][0].as_u64().unwrap()).collect();
    assert!(fired_on.contains(seqs.iter().min().unwrap()));
    assert!(!fired_on.contains(seqs.iter().max().unwrap()), "the second plan change is not new");

    // A rule whose webhook cannot be reached says so after its retries: in the API and in /metrics.
    let closed = free_port();
    let broken = admin
        .post(
            "/v1/orgs/default/alert-rules",
            &json!({"name": "Broken hook", "search": "action=test.broken", "condition": {"kind": "any"}, "cooldown_secs": 0,
                    "notify": {"webhook": {"url": format!("https://127.0.0.1:{closed}/x")}}}),
        )
        .await
        .unwrap();
    let broken = broken["id"].as_str().unwrap().to_string();
    let metrics = admin.get_text("/metrics").await.unwrap();
    assert!(metrics.contains("trail_alert_rules_failing 0"), "{metrics}");
    key.ingest("default", &json!({"actor": {"id": "ci"}, "action": "test.broken", "target": {"type": "test"}, "outcome": "success"}))
        .await
        .unwrap();
    let fired = wait_firings(&admin, &broken, 1).await;
    assert_eq!(fired[0]["deliveries"][0]["ok"], false, "{}", fired[0]);
    let rule = admin.get(&format!("/v1/orgs/default/alert-rules/{broken}")).await.unwrap();
    let failing = rule["delivery_failing"].as_str().unwrap_or_default();
    assert!(failing.starts_with("webhook: cannot connect"), "{rule}");
    let metrics = admin.get_text("/metrics").await.unwrap();
    assert!(metrics.contains("trail_alert_rules_failing 1"), "{metrics}");
    assert!(metrics.contains("trail_alert_notification_failures_total{channel=\"webhook\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_between_events_and_alerts_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = Served::start(dir.path(), &[]);
    let admin = Client::new(&served.base).login("admin@localhost", PASSWORD).await.unwrap();
    let key = Client::new(&served.base).with_token(create_key(dir.path(), "events:write,events:read"));
    let rule = admin
        .post(
            "/v1/orgs/default/alert-rules",
            &json!({"name": "Every deploy", "search": "action=component.deployed", "condition": {"kind": "any"}, "cooldown_secs": 0}),
        )
        .await
        .unwrap();
    let rule_id = rule["id"].as_str().unwrap().to_string();
    // 300 matching events in 15 batches; killed right after the last answer.
    for b in 0..15 {
        let batch: Vec<Value> = (0..20)
            .map(|i| {
                json!({"id": format!("k{b}-{i}"), "actor": {"id": "ci"}, "action": "component.deployed",
                            "target": {"type": "component", "id": format!("c{i}")}, "outcome": "success"})
            })
            .collect();
        key.ingest_batch("default", &batch).await.unwrap();
    }
    served.signal("-KILL");
    let served = Served::start(dir.path(), &[]);
    let admin = Client::new(&served.base).login("admin@localhost", PASSWORD).await.unwrap();
    let key = Client::new(&served.base).with_token(create_key(dir.path(), "events:read"));
    let fired = wait_firings(&admin, &rule_id, 300).await;
    let mut seqs: Vec<u64> = fired.iter().map(|f| f["seqs"][0].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!((fired.len(), seqs.len()), (300, 300), "one firing per event, none twice");
    let logged = key.query_all("default", &[("action", "alert.fired"), ("limit", "1000")]).await.unwrap();
    assert_eq!(logged.len(), 300, "each firing once in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_searches_are_private_or_shared() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &[]);
    let admin = Client::new(&served.base).login("admin@localhost", PASSWORD).await.unwrap();
    let reader = Client::new(&served.base).with_token(create_key(dir.path(), "events:read"));
    assert_eq!(
        reader.get("/v1/orgs/default/searches").await.unwrap_err().status(),
        Some(403),
        "people's, not keys'"
    );
    let mine = admin
        .post(
            "/v1/orgs/default/searches",
            &json!({"name": "My failures", "query": "outcome=failure", "range": "7d"}),
        )
        .await
        .unwrap();
    let shared = admin
        .post(
            "/v1/orgs/default/searches",
            &json!({"name": "Deploys", "query": "action=component.*&q=prod", "shared": true}),
        )
        .await
        .unwrap();
    assert_eq!((mine["shared"].as_bool(), shared["range"].as_str()), (Some(false), Some("24h")));
    for (bad, field) in [
        (json!({"name": "x", "query": "from=2026-01-01T00:00:00Z"}), "query"),
        (json!({"name": "x", "query": "outcome=maybe"}), "query"),
        (json!({"name": "x", "query": "", "range": "3y"}), "range"),
        (json!({"name": " ", "query": ""}), "name"),
    ] {
        let e = admin.post("/v1/orgs/default/searches", &bad).await.unwrap_err();
        assert_eq!((e.status(), e.field()), (Some(400), Some(field)), "{bad}");
    }
    // A second reader of the org sees the shared search only, and cannot change it.
    let inv = admin
        .post(
            "/v1/orgs/default/invitations",
            &json!({"emails": ["auditor@acme.io"], "groups": ["administrators"]}),
        )
        .await
        .unwrap();
    let token = inv["invitations"][0]["accept_url"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    Client::new(&served.base)
        .post(&format!("/v1/invitations/{token}/accept"), &json!({"password": "auditor-password-1"}))
        .await
        .unwrap();
    let other = Client::new(&served.base).login("auditor@acme.io", "auditor-password-1").await.unwrap();
    let seen = other.get("/v1/orgs/default/searches").await.unwrap();
    let names: Vec<&str> =
        seen["searches"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Deploys"]);
    let e = other
        .delete(&format!("/v1/orgs/default/searches/{}", mine["id"].as_str().unwrap()))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404), "another's private search is not there for them");
    // The admin holds ORG-SETTINGS, so may tidy shared searches; the auditor here is an admin too.
    let renamed = admin
        .patch(
            &format!("/v1/orgs/default/searches/{}", mine["id"].as_str().unwrap()),
            &json!({"name": "Failures", "shared": true}),
        )
        .await
        .unwrap();
    assert_eq!((renamed["name"].as_str(), renamed["shared"].as_bool()), (Some("Failures"), Some(true)));
    admin.delete(&format!("/v1/orgs/default/searches/{}", shared["id"].as_str().unwrap())).await.unwrap();
    let left = admin.get("/v1/orgs/default/searches").await.unwrap();
    assert_eq!(left["searches"].as_array().unwrap().len(), 1);
}

/// A rule turned off and on again watches from then: events that arrived while every rule of the
/// org was off (so the evaluator stopped following it) do not fire it when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_enabled_again_watches_from_then() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let served = Served::start(&data, &[]);
    let admin = Client::new(&served.base).login("admin@localhost", PASSWORD).await.unwrap();
    let key = Client::new(&served.base).with_token(create_key(&data, "events:write,events:read"));
    let body = |enabled: bool| json!({"name": "Watch", "search": "action=test.watched", "condition": {"kind": "any"}, "cooldown_secs": 0, "enabled": enabled});
    let rule = admin.post("/v1/orgs/default/alert-rules", &body(true)).await.unwrap();
    let rule = rule["id"].as_str().unwrap().to_string();
    admin.put(&format!("/v1/orgs/default/alert-rules/{rule}"), &body(false)).await.unwrap();
    // The evaluator reloads rules every 2 s: it lets go of the org, then the event arrives.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let watched = json!({"actor": {"id": "test"}, "action": "test.watched", "target": {"type": "test"}, "outcome": "success"});
    let while_off = key.ingest("default", &watched).await.unwrap().results[0].seq.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    admin.put(&format!("/v1/orgs/default/alert-rules/{rule}"), &body(true)).await.unwrap();
    let barrier = admin
        .post(
            "/v1/orgs/default/alert-rules",
            &json!({"name": "Barrier", "search": "action=test.barrier", "condition": {"kind": "any"}, "cooldown_secs": 0}),
        )
        .await
        .unwrap();
    let barrier = barrier["id"].as_str().unwrap().to_string();
    let after = key.ingest("default", &watched).await.unwrap().results[0].seq.unwrap();
    settle(&admin, &key, &barrier).await;
    let fired: Vec<Value> = firings(&admin, &rule).await.iter().map(|f| f["seqs"][0].clone()).collect();
    assert_eq!(fired, [json!(after)], "the event at seq {while_off} arrived while the rule was off");
}
