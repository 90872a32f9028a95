//! Hostile clients over HTTP: oversized bodies and headers, slow senders, deep JSON, invalid UTF-8,
//! huge numbers, forged cursors, path traversal, requests past the deadline, clients that leave
//! mid-request, and malformed HTTP. Every attack is answered with a clear 4xx JSON error
//! (`{"error": {"code", "message"}}`) or a closed connection, and a normal request succeeds during
//! or after each one.
//!
//! Attacks below the HTTP layer are written as raw bytes on a `TcpStream`; reads are bounded by
//! [`HANG_GUARD`] only so that a server that never answers fails the test instead of hanging it —
//! nothing here asserts how fast anything is.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{TestServer, ev};

/// How long a raw read may wait for the server before the test gives up (a liveness bound).
const HANG_GUARD: Duration = Duration::from_secs(60);

/// The `Authorization` header value of a client.
fn bearer(c: &trail_client::Client) -> String {
    let req = c.request(reqwest::Method::GET, "/").build().unwrap();
    req.headers()["authorization"].to_str().unwrap().to_string()
}

fn addr(s: &TestServer) -> String {
    s.base.trim_start_matches("http://").to_string()
}

/// Reads one response: until it is complete (its `Content-Length` or last chunk arrived) or the
/// server closes (or resets) the connection.
async fn read_response(c: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while !complete(&out) {
        match tokio::time::timeout(HANG_GUARD, c.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server neither answered nor closed the connection"),
        }
    }
    out
}

fn complete(response: &[u8]) -> bool {
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
    let body = &response[end + 4..];
    if let Some(len) = head.lines().find_map(|l| l.strip_prefix("content-length:")) {
        return len.trim().parse::<usize>().is_ok_and(|n| body.len() >= n);
    }
    head.contains("transfer-encoding: chunked") && body.ends_with(b"0\r\n\r\n")
}

/// The status and body of a raw HTTP/1.1 response; `None` when the server closed without answering.
fn parse_response(bytes: &[u8]) -> (Option<u16>, Vec<u8>) {
    let text = String::from_utf8_lossy(bytes);
    let status = text.strip_prefix("HTTP/1.1 ").and_then(|r| r.get(..3)).and_then(|s| s.parse().ok());
    let body = match bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => bytes[i + 4..].to_vec(),
        None => Vec::new(),
    };
    (status, body)
}

/// Writes `request` on a fresh connection and returns the answer (see [`parse_response`]). The server
/// may answer and close before reading everything, so a failed write is not an error here.
async fn raw(s: &TestServer, request: &[u8]) -> (Option<u16>, Vec<u8>) {
    let mut c = TcpStream::connect(addr(s)).await.unwrap();
    let _ = c.write_all(request).await;
    parse_response(&read_response(&mut c).await)
}

/// The `code` of a JSON error body, checking it has the documented shape.
fn error_code(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not a JSON error ({e}): {}", String::from_utf8_lossy(body)));
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    v["error"]["code"].as_str().unwrap_or_else(|| panic!("no error code: {v}")).to_string()
}

/// The answer to a request built with reqwest: status and JSON error code.
async fn status_and_code(r: reqwest::RequestBuilder) -> (u16, String) {
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, error_code(&r.bytes().await.unwrap()))
}

/// A 4xx answer with a JSON error body, or a connection closed without an answer.
fn refused_or_closed(answer: &(Option<u16>, Vec<u8>), what: &str) {
    match answer {
        (None, _) => {}
        (Some(status), body) => {
            assert!((400..500).contains(status), "{what}: status {status}");
            // hyper answers malformed HTTP itself, before any handler: those 4xx have no body.
            if !body.is_empty() {
                error_code(body);
            }
        }
    }
}

/// The server still answers an authenticated query and stores an event.
async fn still_serves(s: &TestServer) {
    s.key.ingest("default", &ev("still", "server.checked", 0)).await.unwrap();
    let page = s.key.query("default", &[("actor", "still")]).await.unwrap();
    assert!(!page.events.is_empty());
}

#[tokio::test]
async fn oversized_bodies_are_413_with_a_json_error() {
    let s = TestServer::start().await;
    let big = format!("{{\"events\": [\"{}\"]}}", "x".repeat(5 * 1024 * 1024));
    // Declared length, on an authenticated route and on the one route that reads a body before
    // anyone is signed in.
    for (client, path) in [(&s.key, "/v1/orgs/default/events"), (&s.anon, "/v1/auth/login")] {
        let rb = client
            .request(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(big.clone());
        assert_eq!(status_and_code(rb).await, (413, "payload_too_large".into()), "{path}");
    }
    // No declared length: a chunked body that just keeps coming.
    let chunks = (0..6).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024 * 1024]));
    let rb = s
        .key
        .request(reqwest::Method::POST, "/v1/orgs/default/events")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)));
    assert_eq!(status_and_code(rb).await, (413, "payload_too_large".into()));
    // A length no integer holds.
    let answer = raw(
        &s,
        format!(
            "POST /v1/orgs/default/events HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\
             Content-Type: application/json\r\nContent-Length: 99999999999999999999999\r\n\r\n{{}}",
            bearer(&s.key)
        )
        .as_bytes(),
    )
    .await;
    refused_or_closed(&answer, "content-length overflow");
    still_serves(&s).await;
}

#[tokio::test]
async fn oversized_and_too_many_headers_are_refused_without_harm() {
    let s = TestServer::start().await;
    let huge = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(1024 * 1024));
    let answer = raw(&s, huge.as_bytes()).await;
    assert!(matches!(answer.0, None | Some(431)), "one 1 MiB header: {:?}", answer.0);
    let many: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = raw(&s, format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes()).await;
    assert!(matches!(answer.0, None | Some(431)), "500 headers: {:?}", answer.0);
    let long_target =
        format!("GET /v1/orgs/default/events?q={} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(1 << 20));
    refused_or_closed(&raw(&s, long_target.as_bytes()).await, "1 MiB request target");
    still_serves(&s).await;
}

/// A client that sends its request head one byte a second holds one connection, not the server:
/// others are served meanwhile, and it is answered normally when it finally finishes (within the
/// request deadline; see the next test for one that does not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_loris_does_not_stop_other_clients() {
    let s = TestServer::start().await;
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(addr(&s)).await.unwrap();
        c.write_all(&head[..4]).await.unwrap();
        slow.push(c);
    }
    // Four seconds of trickle, one byte per connection per second, with normal traffic between.
    for i in 4..8 {
        for c in &mut slow {
            c.write_all(&head[i..=i]).await.unwrap();
        }
        still_serves(&s).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for mut c in slow {
        c.write_all(&head[8..]).await.unwrap();
        let (status, body) = parse_response(&read_response(&mut c).await);
        assert_eq!(status, Some(200));
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["status"], "ok");
    }
    still_serves(&s).await;
}

/// A client that never finishes its request head (or sends nothing) is disconnected once the request
/// deadline passes, so such clients cannot pile up open connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_head_is_disconnected() {
    let mut settings = trail_server::Settings::default();
    settings.limits.request_timeout_secs = 1;
    let s = TestServer::start_in(tempfile::tempdir().unwrap(), settings).await;
    let mut trickle = TcpStream::connect(addr(&s)).await.unwrap();
    let mut silent = TcpStream::connect(addr(&s)).await.unwrap();
    trickle.write_all(b"GET /healthz HTTP/1.1\r\nHo").await.unwrap();
    for (name, c) in [("trickling", &mut trickle), ("silent", &mut silent)] {
        let mut buf = [0u8; 256];
        // Generous bound: the point is that it ends, not how fast.
        let read = tokio::time::timeout(Duration::from_secs(30), c.read(&mut buf)).await;
        match read {
            Ok(Ok(n)) => assert!(
                n == 0 || String::from_utf8_lossy(&buf[..n]).contains("408"),
                "{name}: closed or answered 408, got {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Ok(Err(_)) => {}
            Err(_) => panic!("{name}: the connection was still open after 30 s"),
        }
    }
    still_serves(&s).await;
}

#[tokio::test]
async fn deeply_nested_json_is_400() {
    let s = TestServer::start().await;
    let deep_array = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    let mut in_info = ev("a", "a.b", 1).to_string();
    in_info.truncate(in_info.len() - 1);
    let in_info = format!("{in_info},\"info\":{{\"x\":{}{}}}}}", "[".repeat(100_000), "]".repeat(100_000));
    for body in [deep_array, deep_object, in_info] {
        for (client, path) in [
            (&s.key, "/v1/orgs/default/events"),
            (&s.admin, "/v1/orgs/default/exports"),
            (&s.anon, "/v1/auth/login"),
        ] {
            let rb = client
                .request(reqwest::Method::POST, path)
                .header("content-type", "application/json")
                .body(body.clone());
            assert_eq!(status_and_code(rb).await, (400, "malformed_json".into()), "{path}");
        }
    }
    still_serves(&s).await;
}

#[tokio::test]
async fn invalid_utf8_in_bodies_query_strings_and_paths_is_400() {
    let s = TestServer::start().await;
    let event = ev("a", "a.b", 1).to_string();
    let mut bad_string = br#"{"actor": {"id": ""#.to_vec();
    bad_string.push(0xff);
    bad_string.extend_from_slice(br#""}, "action": "a.b", "target": {"type": "a"}, "outcome": "success"}"#);
    let bodies: Vec<Vec<u8>> = vec![
        vec![0xff, 0xfe, b'{', b'}'],
        bad_string,
        event.replacen("\"a\"", "\"\\ud800\"", 1).into_bytes(),
    ];
    for body in bodies {
        let rb = s
            .key
            .request(reqwest::Method::POST, "/v1/orgs/default/events")
            .header("content-type", "application/json")
            .body(body.clone());
        assert_eq!(
            status_and_code(rb).await,
            (400, "malformed_json".into()),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    // Percent-encoded bytes that are not UTF-8, in a value and in a key.
    for query in ["actor=%FF%FE", "%C0%AF=1", "q=%ED%A0%80"] {
        let rb = s.key.request(reqwest::Method::GET, &format!("/v1/orgs/default/events?{query}"));
        assert_eq!(status_and_code(rb).await, (400, "invalid_query".into()), "{query}");
    }
    // Raw bytes that are not UTF-8 in the request target, and in a path segment.
    let auth = bearer(&s.key);
    for target in [&b"/v1/orgs/default/events?actor=\xff\xfe"[..], b"/v1/orgs/\xff/events"] {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(target);
        req.extend_from_slice(
            format!(" HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        refused_or_closed(&raw(&s, &req).await, &String::from_utf8_lossy(target));
    }
    for path in
        ["/v1/orgs/%FF%FE/events", "/v1/orgs/default/events/%C0%AF", "/v1/orgs/default/exports/%ED%A0%80"]
    {
        let rb = s.key.request(reqwest::Method::GET, path);
        assert_eq!(status_and_code(rb).await, (400, "invalid_path".into()), "{path}");
    }
    still_serves(&s).await;
}

#[tokio::test]
async fn huge_numbers_in_parameters_are_400() {
    let s = TestServer::start().await;
    s.key.ingest("default", &ev("a", "a.b", 1)).await.unwrap();
    for limit in ["18446744073709551616", "99999999999", "-1", "1e3", "0x10"] {
        let e = s.key.query("default", &[("limit", limit)]).await.unwrap_err();
        assert_eq!(
            (e.status(), e.code(), e.field()),
            (Some(400), Some("invalid_field"), Some("limit")),
            "{limit}"
        );
    }
    for interval in
        ["9223372036854775807", "106751991167301d", "99999999999999999999", "0", "-5m", "288230376151711744"]
    {
        let e = s.key.histogram("default", &[("interval", interval)]).await.unwrap_err();
        assert_eq!(
            (e.status(), e.code(), e.field()),
            (Some(400), Some("invalid_field"), Some("interval")),
            "interval={interval}"
        );
    }
    // The widest interval (seven digits of days): one bucket, no overflow while stepping past the window.
    let h = s.key.histogram("default", &[("interval", "9999999d")]).await.unwrap();
    assert_eq!(h["buckets"].as_array().unwrap().len(), 1, "{h}");
    for (seq, size) in
        [("18446744073709551615", "18446744073709551615"), ("0", "18446744073709551615"), ("5", "2")]
    {
        let e = s
            .key
            .get(&format!("/v1/orgs/default/proofs/inclusion?seq={seq}&tree_size={size}"))
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(400), "seq={seq} tree_size={size}: {e:?}");
    }
    let e =
        s.key.get("/v1/orgs/default/proofs/consistency?from=1&to=99999999999999999999").await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(400), Some("invalid_field")));
    let e = s.key.query("default", &[("from", "+275760-09-13T00:00:00Z")]).await.unwrap_err();
    assert_eq!((e.status(), e.field()), (Some(400), Some("from")));
    still_serves(&s).await;
}

/// Cursors are checked, not trusted: garbage and tampered framing are `invalid_cursor`, a cursor
/// for other filters is refused, and no cursor reaches another org's events. (A cursor is not a
/// secret: its position fields may be edited, which pages the caller's own org from elsewhere.)
#[tokio::test]
async fn forged_and_altered_cursors_are_400_and_never_cross_orgs() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    let s = TestServer::start().await;
    let other = s.org_with_key("other", &["events:write", "events:read"]).await;
    let mine: Vec<Value> = (0..6).map(|i| ev("mine", "a.b", i + 1)).collect();
    s.key.ingest_batch("default", &mine).await.unwrap();
    let theirs: Vec<Value> = (0..6).map(|i| ev("theirs", "a.b", i + 1)).collect();
    other.ingest_batch("other", &theirs).await.unwrap();

    let first = s.key.query("default", &[("limit", "2")]).await.unwrap();
    let cursor = first.next_cursor.unwrap();
    let bytes = URL_SAFE_NO_PAD.decode(&cursor).unwrap();
    let variant = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = bytes.clone();
        f(&mut b);
        URL_SAFE_NO_PAD.encode(b)
    };
    let forged = [
        "!!!".to_string(),
        "AAAA".into(),
        format!("{cursor}="),
        format!("{cursor}A"),
        variant(&|b| b[0] = 2),
        variant(&|b| b.truncate(48)),
        variant(&|b| b.push(0)),
        variant(&|b| *b.last_mut().unwrap() ^= 1),
        variant(&|b| b[1..9].copy_from_slice(&i64::MIN.to_be_bytes())),
    ];
    for c in &forged {
        let e = s.key.query("default", &[("limit", "2"), ("cursor", c)]).await.unwrap_err();
        assert_eq!(
            (e.status(), e.code(), e.field()),
            (Some(400), Some("invalid_cursor"), Some("cursor")),
            "{c}"
        );
    }
    let e =
        s.key.query("default", &[("limit", "2"), ("actor", "mine"), ("cursor", &cursor)]).await.unwrap_err();
    assert_eq!(e.code(), Some("invalid_cursor"), "a cursor replayed with other filters");

    // Replayed against another org, by someone who may read it: that org's events only.
    let page = other.query("other", &[("limit", "2"), ("cursor", &cursor)]).await.unwrap();
    assert!(!page.events.is_empty(), "the other org's own events, not an empty page");
    assert!(
        page.events.iter().all(|e| e["org"] == "other" && e["actor"]["id"] == "theirs"),
        "{:?}",
        page.events
    );
    // By someone who may not: refused before the cursor is even read.
    let e = s.key.query("other", &[("cursor", &cursor)]).await.unwrap_err();
    assert_eq!(e.status(), Some(403));
    // Position fields edited: still only this org's own events, or refused.
    for edited in [
        variant(&|b| b[25..33].copy_from_slice(&0u64.to_be_bytes())),
        variant(&|b| b[33..41].copy_from_slice(&u64::MAX.to_be_bytes())),
    ] {
        match s.key.query("default", &[("limit", "1000"), ("cursor", &edited)]).await {
            Ok(p) => assert!(p.events.iter().all(|e| e["org"] == "default"), "{:?}", p.events),
            Err(e) => assert_eq!(e.status(), Some(400)),
        }
    }
    still_serves(&s).await;
}

#[tokio::test]
async fn export_names_and_ids_cannot_traverse_paths() {
    let s = TestServer::start().await;
    s.key.ingest_batch("default", &[ev("a", "a.b", 1), ev("b", "a.b", 2)]).await.unwrap();
    let names = [
        "../../etc/passwd",
        "..\\..\\windows\\win.ini",
        "/etc/shadow",
        "a\r\nSet-Cookie: x=y",
        "..",
        "%2e%2e%2f",
    ];
    for name in names {
        let created =
            s.admin.post("/v1/orgs/default/exports", &json!({"name": name, "format": "csv"})).await.unwrap();
        let id = created["id"].as_str().unwrap().to_string();
        let done = crate::exports::wait_done(&s, &id).await;
        assert_eq!(done["status"], "completed", "{done}");
        let r = s
            .admin
            .request(reqwest::Method::GET, &format!("/v1/orgs/default/exports/{id}/download"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let disposition = r.headers()["content-disposition"].to_str().unwrap().to_string();
        let file =
            disposition.strip_prefix("attachment; filename=\"").and_then(|f| f.strip_suffix('"')).unwrap();
        assert!(
            !file.is_empty()
                && !file.starts_with('.')
                && file.chars().all(|c| c.is_ascii_alphanumeric() || "-_. ".contains(c)),
            "{name:?} downloads as {file:?}"
        );
        assert!(r.headers().get("set-cookie").is_none());
    }
    // Files are named by export id inside the data directory, never by the name.
    let exports_dir = s.dir.path().join("exports");
    for entry in std::fs::read_dir(&exports_dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(name.ends_with(".csv") && !name.contains(".."), "{name}");
    }
    assert!(!s.dir.path().join("etc").exists() && !exports_dir.join("..").join("etc").exists());
    // Ids that try to climb out are just unknown exports.
    for id in ["..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e", "..%5C..%5Cwin.ini"] {
        let e = s.admin.get(&format!("/v1/orgs/default/exports/{id}/download")).await.unwrap_err();
        assert_eq!((e.status(), e.code()), (Some(404), Some("not_found")), "{id}");
    }
    let auth = bearer(&s.admin);
    let climb = format!(
        "GET /v1/orgs/default/exports/../../../../etc/passwd HTTP/1.1\r\nHost: x\r\n\
         Authorization: {auth}\r\nConnection: close\r\n\r\n"
    );
    let (status, body) = raw(&s, climb.as_bytes()).await;
    assert_eq!(status, Some(404));
    assert_eq!(error_code(&body), "not_found");
    still_serves(&s).await;
}

/// Issue #10 §4: a request still running at `limits.request_timeout_secs` is answered 408 with a JSON
/// error and its handler dropped. The request here is an ingest whose body never finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_deadline_is_408_with_a_json_error() {
    let mut settings = trail_server::Settings::default();
    settings.limits.request_timeout_secs = 1;
    let s = TestServer::start_in(tempfile::tempdir().unwrap(), settings).await;
    let mut c = TcpStream::connect(addr(&s)).await.unwrap();
    let head = format!(
        "POST /v1/orgs/default/events HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"events\": [",
        bearer(&s.key)
    );
    c.write_all(head.as_bytes()).await.unwrap();
    // The body stays unfinished; meanwhile the server goes on serving others.
    assert_eq!(s.anon.get("/healthz").await.unwrap()["status"], "ok");
    let (status, body) = parse_response(&read_response(&mut c).await);
    assert_eq!(status, Some(408));
    assert_eq!(error_code(&body), "request_timeout");
    // Read from the store directly: every request to this server has a one-second deadline.
    let ctx = trail_model::query::QueryContext { now: trail_model::time::now(), oldest: 0 };
    let q = trail_model::query::parse_query(&[], ctx).unwrap();
    let page = trail_store::Store::query(s.store.as_ref(), "default", &q).await.unwrap();
    assert!(page.records.is_empty(), "nothing of the timed-out request was stored");
}

/// A client that goes away mid-body: its request is dropped, nothing of it is stored, the server
/// carries on.
#[tokio::test]
async fn a_client_that_leaves_mid_request_stores_nothing() {
    let s = TestServer::start().await;
    let body = json!({"events": (0..50).map(|i| ev("gone", "a.b", i + 1)).collect::<Vec<_>>()}).to_string();
    for cut in [0, body.len() / 2, body.len() - 1] {
        let mut c = TcpStream::connect(addr(&s)).await.unwrap();
        let head = format!(
            "POST /v1/orgs/default/events HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            bearer(&s.key),
            body.len()
        );
        c.write_all(head.as_bytes()).await.unwrap();
        c.write_all(&body.as_bytes()[..cut]).await.unwrap();
        drop(c);
    }
    still_serves(&s).await;
    let gone = s.key.query("default", &[("actor", "gone")]).await.unwrap();
    assert!(gone.events.is_empty(), "{:?}", gone.events);
}

/// Requests that are not well-formed HTTP/1.1 are refused by hyper before any handler runs.
#[tokio::test]
async fn malformed_http_is_refused_or_closed() {
    let s = TestServer::start().await;
    let auth = bearer(&s.key);
    let attacks: Vec<Vec<u8>> = vec![
        // Request smuggling: both framings, and two disagreeing lengths.
        format!(
            "POST /v1/orgs/default/events HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\
             Content-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        .into_bytes(),
        format!(
            "POST /v1/orgs/default/events HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}"
        )
        .into_bytes(),
        b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
            .to_vec(),
        // Not HTTP/1.1 at all: a TLS hello, an HTTP/2 preface, a bare line, NUL bytes.
        vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        b"HELLO\r\n\r\n".to_vec(),
        vec![0u8; 4096],
        // Header names and values with bytes HTTP forbids.
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n".to_vec(),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: \x00\x01\r\n\r\n".to_vec(),
    ];
    for a in attacks {
        refused_or_closed(&raw(&s, &a).await, &String::from_utf8_lossy(&a[..a.len().min(60)]));
    }
    // Credentials that are not credentials.
    let long = "Bearer x".repeat(2000);
    for token in [
        &b"Bearer "[..],
        b"Bearer trk_",
        b"Bearer trk_x.",
        b"Bearer trs_\xe9.\xff",
        b"Basic YTpi",
        long.as_bytes(),
    ] {
        let r = reqwest::Client::new()
            .get(format!("{}/v1/orgs/default/events", s.base))
            .header("authorization", reqwest::header::HeaderValue::from_bytes(token).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{:.40}", String::from_utf8_lossy(token));
        assert_eq!(error_code(&r.bytes().await.unwrap()), "unauthenticated");
    }
    still_serves(&s).await;
}
