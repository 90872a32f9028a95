//! The web console over plain HTTP: what needs no browser (the end-to-end browser test is in
//! `crates/trail/tests/it/console.rs`).

use reqwest::StatusCode;
use serde_json::json;

use crate::{ADMIN_PASSWORD, TestServer, ev};

/// The admin's session cookie, from signing in as the console's script does.
async fn session_cookie(s: &TestServer) -> String {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/auth/login", s.base))
        .json(&json!({"email": "admin@localhost", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let set = r.headers()["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

async fn get(s: &TestServer, cookie: &str, path_and_query: &str) -> reqwest::Response {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}{path_and_query}", s.base))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

fn rows_in(html: &str) -> usize {
    html.matches("<tr>").count()
}

/// "Load more" on a preset range (the default view is "last 24 hours"): the next page is read with
/// the first page's window, both by the script (`/logs/rows`) and by the link that works without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_more_pages_a_preset_range() {
    let s = TestServer::start().await;
    let events: Vec<_> = (0..70).map(|i| ev("alice", "project.updated", 1 + i)).collect();
    s.key.ingest_batch("default", &events).await.unwrap();
    let cookie = session_cookie(&s).await;

    let first = get(&s, &cookie, "/orgs/default/logs/rows").await;
    assert_eq!(first.status(), StatusCode::OK);
    let cursor = first.headers()["x-next-cursor"].to_str().unwrap().to_string();
    assert_eq!(rows_in(&first.text().await.unwrap()), 50);
    // Time moves on between the two requests, so "last 24 hours" is another window now.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    let more = get(&s, &cookie, &format!("/orgs/default/logs/rows?range=24h&cursor={cursor}")).await;
    assert_eq!(more.status(), StatusCode::OK);
    let rest = rows_in(&more.text().await.unwrap());
    // 70 events, plus the admin's sign-in recorded in the org's log.
    assert_eq!(rest, 21);

    let page = get(&s, &cookie, &format!("/orgs/default/logs?range=24h&cursor={cursor}")).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert_eq!(rows_in(&html), 1 + 21, "the header row and the second page: {html}");
}

/// A refused form answers the script in plain text (the message may quote the request) and names
/// the field the API names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_forms_are_plain_text_naming_the_field() {
    let s = TestServer::start().await;
    let cookie = session_cookie(&s).await;
    let r = get(&s, &cookie, "/orgs/default/logs/rows?range=%3Ch1%3Ehi%3C%2Fh1%3E").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert!(r.text().await.unwrap().contains("<h1>hi</h1>"), "quoted as text");

    let many = vec!["a"; 17].join("+");
    let r = get(&s, &cookie, &format!("/orgs/default/logs/rows?q={many}")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let text = r.text().await.unwrap();
    assert_eq!(text, "Q must have at most 16 words", "names the field");
}

/// Custom ranges with a forged time-zone offset are refused or read as UTC, never a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_time_zone_offset_does_not_overflow() {
    let s = TestServer::start().await;
    let cookie = session_cookie(&s).await;
    let day = trail_model::time::format_rfc3339(trail_model::time::now());
    let (d, _) = day.split_at(10);
    for offset in ["999999999999999", "-999999999999999", "9223372036854775807"] {
        let q = format!("range=custom&from_local={d}T00%3A00&to_local={d}T23%3A59&tz_offset={offset}");
        let r = get(&s, &cookie, &format!("/orgs/default/logs/rows?{q}")).await;
        assert!(matches!(r.status(), StatusCode::OK | StatusCode::BAD_REQUEST), "{offset}: {}", r.status());
    }
}

/// After sign-in the console goes only to a path on this site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_goes_back_only_to_this_site() {
    let s = TestServer::start().await;
    let next_of = |html: String| {
        let at = html.find("data-next=\"").unwrap() + "data-next=\"".len();
        html[at..at + html[at..].find('"').unwrap()].to_string()
    };
    for (next, want) in [
        ("%2Forgs%2Fdefault%2Flogs", "/orgs/default/logs"),
        ("%2F%09%2Fevil.example", "/"),
        ("%2F%0A%2Fevil.example", "/"),
        ("%2F%2Fevil.example", "/"),
        ("https%3A%2F%2Fevil.example", "/"),
        ("%2F%5Cevil.example", "/"),
    ] {
        let html = get(&s, "", &format!("/login?next={next}")).await.text().await.unwrap();
        assert_eq!(next_of(html), want, "next={next}");
    }
}
