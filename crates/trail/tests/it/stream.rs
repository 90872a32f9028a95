//! Streaming to SIEMs with real receivers: an HTTPS webhook receiver and a Splunk HEC receiver (Python,
//! TLS with a CA made by openssl here, the webhook signature checked by README's example code), and
//! Debian's rsyslogd over TCP and TLS. Receivers and Trail are killed mid-stream; nothing acknowledged
//! is lost, and `trail verify --stream` accepts what the receiver holds.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trail_client::Client;

use crate::{PASSWORD, Served, create_key, trail};

/// A private CA and a certificate for 127.0.0.1 / localhost signed by it, made with openssl.
pub struct Certs {
    pub ca_pem: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn certs(dir: &Path) -> Certs {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=Trail test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    Certs {
        ca_pem: std::fs::read_to_string(dir.join("ca.pem")).unwrap(),
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The Python HTTPS receiver (`tests/receivers/https_receiver.py`).
pub struct Receiver {
    child: Child,
    pub out: PathBuf,
}

/// Starts `tests/receivers/<script>` with `args` and `--out OUT --port-file FILE`, and waits until it
/// has written the port it listens on. Its files land in `dir/out`.
pub fn python_receiver(script: &str, args: &[&std::ffi::OsStr], dir: &Path) -> (Child, u16, PathBuf) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/receivers").join(script);
    let (port_file, out) = (dir.join(format!("{script}.port")), dir.join("out"));
    let _ = std::fs::remove_file(&port_file);
    let child = Command::new("python3")
        .arg(path)
        .args(args)
        .arg("--out")
        .arg(&out)
        .arg("--port-file")
        .arg(&port_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let started = Instant::now();
    while !port_file.exists() {
        assert!(started.elapsed() < Duration::from_secs(20), "{script} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let port = std::fs::read_to_string(&port_file).unwrap().trim().parse().unwrap();
    (child, port, out)
}

/// The files of `dir` ending in `.ext`, in name (arrival) order, read whole.
pub fn received(dir: &Path, ext: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|x| x == ext));
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

impl Receiver {
    pub fn start(mode: &str, dir: &Path, certs: &Certs, port: u16, credential: (&str, &str)) -> Self {
        let port = port.to_string();
        let args: Vec<&std::ffi::OsStr> = vec![
            mode.as_ref(),
            "--cert".as_ref(),
            certs.cert.as_os_str(),
            "--key".as_ref(),
            certs.key.as_os_str(),
            "--port".as_ref(),
            port.as_ref(),
            credential.0.as_ref(),
            credential.1.as_ref(),
        ];
        let (child, _, out) = python_receiver("https_receiver.py", &args, dir);
        Self { child, out }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Every request body received so far, in arrival order.
    pub fn bodies(&self) -> Vec<Vec<u8>> {
        received(&self.out, "json")
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn wait_for<F: FnMut() -> bool>(what: &str, secs: u64, mut done: F) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(secs), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn event(i: usize, action: &str) -> Value {
    json!({"id": format!("s-{i}"), "actor": {"id": format!("user-{}", i % 5), "ip": "192.0.2.9"}, "action": action,
           "target": {"type": "component", "id": format!("c-{i}")}, "outcome": if i.is_multiple_of(4) { "failure" } else { "success" }})
}

async fn ingest(key: &Client, from: usize, n: usize) {
    for chunk in (from..from + n).collect::<Vec<_>>().chunks(50) {
        let batch: Vec<Value> = chunk.iter().map(|i| event(*i, "component.deployed")).collect();
        key.ingest_batch("default", &batch).await.unwrap();
    }
}

/// The seqs of a webhook receiver's batches, checking that each arrives no later than it may: a batch
/// starts at most one past everything received before it (a resend starts earlier, never later).
fn webhook_seqs(bodies: &[Vec<u8>]) -> BTreeSet<u64> {
    let mut seen = BTreeSet::new();
    let mut next = None::<u64>;
    for b in bodies {
        let batch: Value = serde_json::from_slice(b).unwrap();
        let (first, last) = (batch["first_seq"].as_u64().unwrap(), batch["last_seq"].as_u64().unwrap());
        if let Some(n) = next {
            assert!(
                first <= n,
                "a batch starting at {first} arrived while {n} was the next seq: out of order"
            );
        }
        next = Some(next.unwrap_or(0).max(last + 1));
        let mut prev = None;
        for e in batch["events"].as_array().unwrap() {
            let seq = e["seq"].as_u64().unwrap();
            assert!(prev.is_none_or(|p| p < seq), "events inside a batch are in seq order");
            prev = Some(seq);
            seen.insert(seq);
        }
        seen.extend(batch["skipped"].as_array().unwrap().iter().map(|s| s["seq"].as_u64().unwrap()));
    }
    seen
}

/// The size of the log once a checkpoint covers everything appended so far (it is signed every 250 ms).
async fn log_size(admin: &Client) -> u64 {
    let mut last = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Ok(cp) = admin.get_text("/v1/orgs/default/checkpoint").await {
            let size: u64 = cp.lines().nth(1).unwrap().parse().unwrap();
            if last == Some(size) {
                return size;
            }
            last = Some(size);
        }
    }
    panic!("the checkpoint never settled")
}

fn verify_stream(dir: &Path, key: &str) -> (bool, String) {
    let out = trail().args(["verify", "--stream"]).arg(dir).args(["--key", key]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_gets_every_event_in_order_through_receiver_and_server_kills() {
    let dir = tempfile::tempdir().unwrap();
    let (data, rx_dir) = (dir.path().join("data"), dir.path().join("rx"));
    std::fs::create_dir_all(&rx_dir).unwrap();
    let certs = certs(dir.path());
    // Small batches, so the stream is many of them.
    let env = [("TRAIL_STREAMING__BATCH_MAX_EVENTS", "64")];
    let mut served = Served::start(&data, &env);
    let admin = Client::new(&served.base).login("admin@localhost", PASSWORD).await.unwrap();
    let key = Client::new(&served.base).with_token(create_key(&data, "events:write,events:read"));
    ingest(&key, 0, 100).await;

    let port = free_port();
    let created = admin
        .post(
            "/v1/orgs/default/destinations",
            &json!({"name": "SIEM", "kind": "webhook", "url": format!("https://127.0.0.1:{port}/trail"),
                    "ca_pem": certs.ca_pem, "start_seq": 0}),
        )
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    let listed = admin.get("/v1/orgs/default/destinations").await.unwrap();
    assert!(listed.to_string().find("whsec_").is_none(), "the secret is shown once, never listed");

    let mut rx = Receiver::start("webhook", &rx_dir, &certs, port, ("--secret", &secret));
    let backfilled = log_size(&admin).await;
    wait_for("the backfill", 30, || webhook_seqs(&rx.bodies()).len() as u64 >= backfilled).await;

    // The receiver dies mid-stream and comes back on the same port.
    ingest(&key, 100, 100).await;
    rx.kill();
    ingest(&key, 200, 100).await;
    let rx = Receiver::start("webhook", &rx_dir, &certs, port, ("--secret", &secret));
    // Trail is SIGKILLed while delivering.
    ingest(&key, 300, 300).await;
    served.signal("-KILL");
    let served = Served::start(&data, &env);
    let admin = Client::new(&served.base).login("admin@localhost", PASSWORD).await.unwrap();
    let key = Client::new(&served.base).with_token(create_key(&data, "events:write"));
    ingest(&key, 600, 50).await;
    let size = log_size(&admin).await;
    wait_for("every event", 60, || webhook_seqs(&rx.bodies()).len() as u64 >= size).await;
    let seqs = webhook_seqs(&rx.bodies());
    assert_eq!(
        seqs.range(..size).copied().collect::<Vec<_>>(),
        (0..size).collect::<Vec<_>>(),
        "every seq, none missing"
    );
    assert!(!rx_dir.join("rejected").exists(), "every request carried a valid signature");

    let d = admin.get(&format!("/v1/orgs/default/destinations/{id}")).await.unwrap();
    assert_eq!(d["state"], "active");
    assert!(d["cursor"].as_u64().unwrap() >= size, "{d}");

    // TLS is verified: the same receiver without its private CA is refused, and the reason is shown.
    let untrusted = admin
        .post(
            "/v1/orgs/default/destinations",
            &json!({"name": "No CA", "kind": "webhook", "url": format!("https://127.0.0.1:{port}/trail"), "start_seq": 0}),
        )
        .await
        .unwrap();
    let path = format!("/v1/orgs/default/destinations/{}", untrusted["id"].as_str().unwrap());
    let started = Instant::now();
    let failing = loop {
        let d = admin.get(&path).await.unwrap();
        if d["state"] == "failing" {
            break d;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "never failing: {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(failing["error"].as_str().unwrap().contains("certificate"), "{failing}");
    assert_eq!(failing["delivered"], 0);
    admin.delete(&path).await.unwrap();

    let log_key = admin.get_text("/v1/log-key").await.unwrap();
    let (ok, text) = verify_stream(&rx.out, log_key.trim());
    assert!(ok, "{text}");
    // Complete from 0 to at least the size counted above: the destination made and deleted since
    // (their self-audit events) may have been delivered too by the time the copy is verified.
    let last: u64 = text
        .split("default: seq 0 to ")
        .nth(1)
        .and_then(|rest| rest.split(" complete").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no complete range: {text}"));
    assert!(last >= size - 1, "{text}");

    // A receiver's copy altered, or with a batch gone, fails and says where.
    let forged = dir.path().join("forged");
    std::fs::create_dir_all(&forged).unwrap();
    let bodies = rx.bodies();
    for (i, b) in bodies.iter().enumerate() {
        std::fs::write(forged.join(format!("{:06}.json", i + 1)), b).unwrap();
    }
    let mut first: Value = serde_json::from_slice(&bodies[0]).unwrap();
    first["events"][3]["actor"]["id"] = json!("mallory");
    std::fs::write(forged.join("000001.json"), first.to_string()).unwrap();
    let (ok, text) = verify_stream(&forged, log_key.trim());
    assert!(!ok && text.contains("000001.json") && text.contains("not the log's"), "{text}");
    std::fs::write(forged.join("000001.json"), &bodies[0]).unwrap();
    assert!(bodies.len() > 5, "the stream came in many batches ({})", bodies.len());
    let middle = bodies.len() / 2;
    let gone: Value = serde_json::from_slice(&bodies[middle]).unwrap();
    // Remove every copy of that range (a resend may have delivered it twice).
    for (i, b) in bodies.iter().enumerate() {
        let v: Value = serde_json::from_slice(b).unwrap();
        if v["first_seq"] == gone["first_seq"] {
            std::fs::remove_file(forged.join(format!("{:06}.json", i + 1))).unwrap();
        }
    }
    let (ok, text) = verify_stream(&forged, log_key.trim());
    assert!(
        !ok && text.contains(&format!("seq {} to", gone["first_seq"])) && text.contains("missing"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_forever_is_paused_and_ingest_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (data, rx_dir) = (dir.path().join("data"), dir.path().join("rx"));
    std::fs::create_dir_all(&rx_dir).unwrap();
    let certs = certs(dir.path());
    let served = Served::start(
        &data,
        &[("TRAIL_STREAMING__PAUSE_AFTER_SECS", "3"), ("TRAIL_STREAMING__MAX_BACKOFF_SECS", "1")],
    );
    let admin = Client::new(&served.base).login("admin@localhost", PASSWORD).await.unwrap();
    let key = Client::new(&served.base).with_token(create_key(&data, "events:write"));
    std::fs::write(rx_dir.join("fail"), "").unwrap();
    let port = free_port();
    let created = admin
        .post(
            "/v1/orgs/default/destinations",
            &json!({"name": "Down", "kind": "webhook", "url": format!("https://127.0.0.1:{port}/trail"), "ca_pem": certs.ca_pem}),
        )
        .await
        .unwrap();
    let (id, secret) =
        (created["id"].as_str().unwrap().to_string(), created["secret"].as_str().unwrap().to_string());
    let rx = Receiver::start("webhook", &rx_dir, &certs, port, ("--secret", &secret));
    ingest(&key, 0, 50).await;
    let path = format!("/v1/orgs/default/destinations/{id}");
    let started = Instant::now();
    let paused = loop {
        let d = admin.get(&path).await.unwrap();
        if d["state"] == "paused" {
            break d;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "never paused: {d}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(paused["error"].as_str().unwrap().contains("HTTP 500"), "{paused}");
    // Ingest is untouched by the dead receiver.
    ingest(&key, 50, 200).await;
    let ready = admin.get("/readyz").await.unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["destinations"][0]["state"], "paused");
    let metrics = admin.get_text("/metrics").await.unwrap();
    assert!(metrics.contains("trail_destinations{kind=\"webhook\",state=\"paused\"} 1"), "{metrics}");
    assert!(rx.bodies().is_empty());

    // Back up and resumed: everything since the destination's start arrives.
    std::fs::remove_file(rx_dir.join("fail")).unwrap();
    admin.post(&format!("{path}/resume"), &json!({})).await.unwrap();
    let size = log_size(&admin).await;
    let start = paused["cursor"].as_u64().unwrap();
    wait_for("delivery after resume", 30, || webhook_seqs(&rx.bodies()).len() as u64 >= size - start).await;
    let seqs = webhook_seqs(&rx.bodies());
    assert_eq!(seqs.range(..size).copied().collect::<Vec<_>>(), (start..size).collect::<Vec<_>>());
    let ready = admin.get("/readyz").await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");

    // Replay from an earlier seq: those events come again (the receiver dedups by seq).
    let before = rx.bodies().len();
    admin.post(&format!("{path}/resume"), &json!({"from_seq": start})).await.unwrap();
    wait_for("the replay", 30, || {
        let again = webhook_seqs(&rx.bodies()[before..]);
        again.contains(&start) && again.contains(&(size - 1))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_hec_gets_filtered_ocsf_events_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (data, rx_dir) = (dir.path().join("data"), dir.path().join("rx"));
    std::fs::create_dir_all(&rx_dir).unwrap();
    let certs = certs(dir.path());
    let served = Served::start(&data, &[]);
    let admin = Client::new(&served.base).login("admin@localhost", PASSWORD).await.unwrap();
    let key = Client::new(&served.base).with_token(create_key(&data, "events:write"));
    let port = free_port();
    let rx = Receiver::start("hec", &rx_dir, &certs, port, ("--token", "hec-token-1"));
    admin
        .post(
            "/v1/orgs/default/destinations",
            &json!({"name": "Splunk", "kind": "splunk_hec", "url": format!("https://localhost:{port}/services/collector/event"),
                    "token": "hec-token-1", "ca_pem": certs.ca_pem, "format": "ocsf", "sourcetype": "trail:ocsf",
                    "filter": {"actions": ["user.*"], "outcomes": ["failure"]}}),
        )
        .await
        .unwrap();
    let batch: Vec<Value> = (0..200)
        .map(|i| event(i, if i % 2 == 0 { "user.sign_in_failed" } else { "project.created" }))
        .collect();
    key.ingest_batch("default", &batch).await.unwrap();
    // Failures among the sign-ins: every 4th event (i % 4 == 0), all of them even.
    let expected: Vec<String> = (0..200).filter(|i| i % 4 == 0).map(|i| format!("s-{i}")).collect();
    let received = || -> Vec<Value> {
        rx.bodies()
            .iter()
            .flat_map(|b| {
                String::from_utf8(b.clone())
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect::<Vec<Value>>()
            })
            .collect()
    };
    wait_for("the HEC events", 30, || received().len() >= expected.len()).await;
    let got = received();
    let ids: Vec<String> =
        got.iter().map(|e| e["event"]["metadata"]["uid"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, expected, "only failed sign-ins, in seq order, each once");
    let first = &got[0];
    assert_eq!(first["sourcetype"], "trail:ocsf");
    assert_eq!(first["event"]["class_uid"], 3002);
    assert_eq!(first["event"]["status_id"], 2);
    assert_eq!(first["event"]["src_endpoint"]["ip"], "192.0.2.9");
    assert!(!rx_dir.join("rejected").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_are_authorized_validated_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &[]);
    let admin = Client::new(&served.base).login("admin@localhost", PASSWORD).await.unwrap();
    admin.create_org("other", "Other").await.unwrap();
    let writer = Client::new(&served.base).with_token(create_key(dir.path(), "events:write"));
    let reader = Client::new(&served.base).with_token(create_key(dir.path(), "events:read"));
    let body = json!({"name": "SIEM", "kind": "syslog", "address": "127.0.0.1:6514"});
    // API keys hold no ORG-SETTINGS: destinations are managed by people.
    for c in [&writer, &reader] {
        let e = c.post("/v1/orgs/default/destinations", &body).await.unwrap_err();
        assert_eq!(e.status(), Some(403), "{e:?}");
        assert_eq!(c.get("/v1/orgs/default/destinations").await.unwrap_err().status(), Some(403));
    }
    // The feed needs events:read, in the key's own org.
    assert_eq!(writer.get("/v1/orgs/default/events/feed").await.unwrap_err().status(), Some(403));
    assert_eq!(reader.get("/v1/orgs/other/events/feed").await.unwrap_err().status(), Some(403));
    for (bad, field) in [
        (json!({"name": "x", "kind": "webhook", "url": "http://siem.example/in"}), "url"),
        (json!({"name": "x", "kind": "syslog", "address": "nohost"}), "address"),
        (
            json!({"name": "x", "kind": "splunk_hec", "url": "https://siem.example/services/collector/event"}),
            "token",
        ),
        (
            json!({"name": "x", "kind": "webhook", "url": "https://siem.example/in", "format": "cef"}),
            "format",
        ),
        (json!({"name": "x", "kind": "syslog", "address": "h:514", "ca_pem": "nope"}), "ca_pem"),
        (json!({"name": "x", "kind": "syslog", "address": "h:514", "colour": "red"}), "colour"),
        (json!({"name": "x", "kind": "syslog", "address": "h:514", "start_seq": 999}), "start_seq"),
    ] {
        let e = admin.post("/v1/orgs/default/destinations", &bad).await.unwrap_err();
        assert_eq!((e.status(), e.field()), (Some(400), Some(field)), "{bad}: {e:?}");
    }
    // A backfill from a time starts at the first event received then; from the future, at the end.
    let mut from_time = body.clone();
    from_time["start_time"] = json!("2000-01-01T00:00:00Z");
    let d = admin.post("/v1/orgs/default/destinations", &from_time).await.unwrap();
    assert_eq!(d["cursor"], 0);
    admin.delete(&format!("/v1/orgs/default/destinations/{}", d["id"].as_str().unwrap())).await.unwrap();
    from_time["start_time"] = json!("2100-01-01T00:00:00Z");
    let d = admin.post("/v1/orgs/default/destinations", &from_time).await.unwrap();
    assert!(d["cursor"].as_u64().unwrap() >= 2, "after the events already there: {d}");
    admin.delete(&format!("/v1/orgs/default/destinations/{}", d["id"].as_str().unwrap())).await.unwrap();
    let d = admin.post("/v1/orgs/default/destinations", &body).await.unwrap();
    let id = d["id"].as_str().unwrap();
    assert_eq!(d["tls"], true);
    assert!(d.get("secret").is_none(), "syslog has no secret");
    // Another org's admin view cannot reach it by id.
    let e = admin.get(&format!("/v1/orgs/other/destinations/{id}")).await.unwrap_err();
    assert_eq!(e.status(), Some(404));
    admin.post(&format!("/v1/orgs/default/destinations/{id}/pause"), &json!({})).await.unwrap();
    let e = admin
        .post(&format!("/v1/orgs/default/destinations/{id}/resume"), &json!({"from_seq": 10_000}))
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("from_seq"));
    // Only a webhook has a signing secret to rotate.
    let e = admin
        .post(&format!("/v1/orgs/default/destinations/{id}/rotate-secret"), &json!({}))
        .await
        .unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(400), Some("not_a_webhook")));
    admin.delete(&format!("/v1/orgs/default/destinations/{id}")).await.unwrap();
    let hook = admin
        .post(
            "/v1/orgs/default/destinations",
            &json!({"name": "hook", "kind": "webhook", "url": "https://siem.example/in"}),
        )
        .await
        .unwrap();
    let rotated = admin
        .post(
            &format!("/v1/orgs/default/destinations/{}/rotate-secret", hook["id"].as_str().unwrap()),
            &json!({}),
        )
        .await
        .unwrap();
    let (old, new) = (hook["secret"].as_str().unwrap(), rotated["secret"].as_str().unwrap());
    assert!(new.starts_with("whsec_") && new != old, "a new secret, shown once more");
    assert!(!admin.get("/v1/orgs/default/destinations").await.unwrap().to_string().contains(new));

    // The feed serves what a signed checkpoint covers (signed within a second).
    let started = Instant::now();
    let page = loop {
        let page = reader.get("/v1/orgs/default/events/feed?limit=1000").await.unwrap();
        if page.to_string().contains("destination.secret_rotated")
            || started.elapsed() > Duration::from_secs(10)
        {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let actions: Vec<&str> =
        page["events"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for a in
        ["destination.created", "destination.paused", "destination.deleted", "destination.secret_rotated"]
    {
        assert!(actions.contains(&a), "{a} is in the org's own log: {actions:?}");
    }
    let seqs: Vec<u64> =
        page["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "the feed is in seq order");
    let after = seqs[1];
    let next = reader.get(&format!("/v1/orgs/default/events/feed?after_seq={after}&limit=2")).await.unwrap();
    assert_eq!(next["events"][0]["seq"], after + 1);
    assert_eq!(next["next_after_seq"], after + 2);
    assert!(next["checkpoint"].as_str().unwrap().contains("/orgs/default"));
}

/// Debian's rsyslogd, listening on 127.0.0.1 over TCP or TLS, writing what it parsed of each message
/// (PRI, APP-NAME, MSGID, STRUCTURED-DATA, MSG) one per line.
struct Rsyslog {
    child: Child,
    out: PathBuf,
    port: u16,
}

impl Rsyslog {
    /// Starts rsyslogd on a free port. A port found free can be taken by another test before rsyslogd
    /// binds it, and rsyslogd then runs on without listening: after 10 s it is stopped and started
    /// again on another port, three times at most, and what it said is in the failure.
    fn start(dir: &Path, tls: Option<&Certs>) -> Option<Self> {
        if Command::new("rsyslogd").arg("-v").output().is_err() {
            assert!(std::env::var_os("CI").is_none(), "rsyslogd is not installed");
            eprintln!("SKIPPED: rsyslogd is not installed (apt-get install rsyslog rsyslog-gnutls)");
            return None;
        }
        let out = dir.join("received.log");
        let (global, module) = match tls {
            Some(c) => (
                format!(
                    " DefaultNetstreamDriverCAFile=\"{}\" DefaultNetstreamDriverCertFile=\"{}\" DefaultNetstreamDriverKeyFile=\"{}\"",
                    c.ca.display(),
                    c.cert.display(),
                    c.key.display()
                ),
                " StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"anon\"",
            ),
            None => (String::new(), ""),
        };
        let mut said = String::new();
        for _ in 0..3 {
            let port = free_port();
            let conf = format!(
                "global(workDirectory=\"{dir}\"{global})\nmodule(load=\"imtcp\"{module})\ninput(type=\"imtcp\" port=\"{port}\")\n\
                 template(name=\"t\" type=\"string\" string=\"%pri%|%app-name%|%msgid%|%structured-data%|%msg%\\n\")\n\
                 *.* action(type=\"omfile\" file=\"{out}\" template=\"t\")\n",
                dir = dir.display(),
                out = out.display()
            );
            std::fs::write(dir.join("rsyslog.conf"), conf).unwrap();
            let _ = std::fs::remove_file(&out);
            let _ = std::fs::remove_file(dir.join("rsyslog.pid"));
            let err = dir.join("rsyslogd.err");
            let mut child = Command::new("rsyslogd")
                .arg("-n")
                .arg("-f")
                .arg(dir.join("rsyslog.conf"))
                .arg("-i")
                .arg(dir.join("rsyslog.pid"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&err).unwrap())
                .spawn()
                .unwrap();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) && child.try_wait().unwrap().is_none() {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(Self { child, out, port });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let status = child.wait().unwrap();
            said += &format!(
                "port {port}, {status}: {}{}\n",
                std::fs::read_to_string(&err).unwrap_or_default(),
                std::fs::read_to_string(&out).unwrap_or_default()
            );
        }
        panic!("rsyslogd did not listen in three tries:\n{said}");
    }

    /// Each received message: (pri, app, msgid, structured data, msg without its BOM).
    fn lines(&self) -> Vec<(u32, String, String, String, String)> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .map(|l| {
                let mut p = l.splitn(5, '|');
                let mut next = || p.next().unwrap_or_default().to_string();
                let pri = next().parse().unwrap();
                (pri, next(), next(), next(), next().trim_start_matches('\u{feff}').to_string())
            })
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_receives_every_event_over_tcp_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let data = dir.path().join("data");
    let served = Served::start(&data, &[]);
    let admin = Client::new(&served.base).login("admin@localhost", PASSWORD).await.unwrap();
    let key = Client::new(&served.base).with_token(create_key(&data, "events:write,events:read"));
    let (tcp_dir, tls_dir) = (dir.path().join("tcp"), dir.path().join("tls"));
    std::fs::create_dir_all(&tcp_dir).unwrap();
    std::fs::create_dir_all(&tls_dir).unwrap();
    let Some(plain) = Rsyslog::start(&tcp_dir, None) else { return };
    let Some(tls) = Rsyslog::start(&tls_dir, Some(&certs)) else { return };
    let (tcp_port, tls_port) = (plain.port, tls.port);
    let start = log_size(&admin).await;
    admin
        .post(
            "/v1/orgs/default/destinations",
            &json!({"name": "rsyslog", "kind": "syslog", "address": format!("127.0.0.1:{tcp_port}"), "tls": false,
                    "format": "json", "filter": {"sources": ["api"]}}),
        )
        .await
        .unwrap();
    admin
        .post(
            "/v1/orgs/default/destinations",
            &json!({"name": "rsyslog TLS", "kind": "syslog", "address": format!("localhost:{tls_port}"),
                    "ca_pem": certs.ca_pem, "format": "cef", "facility": 4, "filter": {"sources": ["api"]}}),
        )
        .await
        .unwrap();
    let batch: Vec<Value> = (0..300)
        .map(|i| {
            let mut e = event(i, "component.deployed");
            e["source"] = json!("api");
            e["actor"]["name"] = json!(format!("Ana | {i} = \\ \u{e9}"));
            e
        })
        .collect();
    key.ingest_batch("default", &batch).await.unwrap();
    wait_for("rsyslog over TCP", 30, || plain.lines().len() >= 300).await;
    wait_for("rsyslog over TLS", 30, || tls.lines().len() >= 300).await;

    let page =
        key.get(&format!("/v1/orgs/default/events/feed?after_seq={}&limit=1000", start)).await.unwrap();
    let stored: Vec<&Value> =
        page["events"].as_array().unwrap().iter().filter(|e| e["source"] == "api").collect();
    assert_eq!(stored.len(), 300);
    let plain_lines = plain.lines();
    assert_eq!(plain_lines.len(), 300, "each event once");
    for (line, e) in plain_lines.iter().zip(&stored) {
        let (pri, app, msgid, sd, msg) = line;
        let failed = e["outcome"] == "failure";
        assert_eq!(*pri, 13 * 8 + if failed { 4 } else { 6 }, "facility log audit; warning for a failure");
        assert_eq!((app.as_str(), msgid.as_str()), ("trail", "component.deployed"));
        assert!(sd.contains(&format!("seq=\"{}\"", e["seq"])), "{sd}");
        let got: Value = serde_json::from_str(msg).unwrap();
        let mut want = (*e).clone();
        want.as_object_mut().unwrap().remove("self_audit");
        assert_eq!(got, want, "the event exactly as the API has it, in seq order");
    }
    let tls_lines = tls.lines();
    assert_eq!(tls_lines.len(), 300);
    for (line, e) in tls_lines.iter().zip(&stored) {
        let (pri, _, _, _, msg) = line;
        assert_eq!(*pri / 8, 4, "the facility asked for");
        let name = e["actor"]["name"].as_str().unwrap().replace('\\', "\\\\").replace('=', "\\=");
        assert!(msg.starts_with("CEF:0|Trail|Trail|"), "{msg}");
        assert!(msg.contains(&format!("suser={name} ")), "{msg} lacks {name}");
        assert!(msg.contains(&format!("externalId={} ", e["id"].as_str().unwrap())), "{msg}");
    }
}
