//! The embedded viewer in headless Chromium (issue #21): the example host product
//! (`examples/embed-host/host.py`, Python) mints a viewer token with its `viewer:mint` key and frames
//! `/embed/orgs/default/logs` from a second 127.0.0.1 port. Inside the frame: only the token's
//! project, the host's theme and time zone, no navigation, the detail with a verified integrity badge,
//! an export followed to completion in the export history, and a filter outside the token refused.
//! The same host on a port the org does not allow cannot frame it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trail_client::Client;

use crate::browser::{A11Y_CHECK, Browser};
use crate::console::{fill, sign_in, submit};
use crate::{PASSWORD, Served, create_key};

/// The example host on a port of its own; killed when dropped.
struct Host {
    child: Child,
    origin: String,
}

impl Host {
    fn start(trail: &str, mint_key: &str) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/embed-host/host.py");
        let mut child = Command::new("python3")
            .arg(script)
            .env("TRAIL_URL", trail)
            .env("TRAIL_ORG", "default")
            .env("TRAIL_MINT_KEY", mint_key)
            .env("PORT", "0")
            .env("VIEWER_FILTER", r#"{"project": "payments"}"#)
            .env("VIEWER_EXPORT", "1")
            .env("THEME", "accent=%23aa3300&density=compact&tz=Asia/Tokyo&font=Georgia")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the example host");
        let mut line = String::new();
        let started = Instant::now();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line)
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(20), "the host did not start");
        let origin = line.trim().strip_prefix("listening on ").expect("the host's banner").to_string();
        Self { child, origin }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 6 events in project payments (one failed), 4 in billing.
async fn seed(key: &Client) {
    let now = trail_model::time::now();
    let events: Vec<Value> = (0..10i64)
        .map(|i| {
            json!({
                "time": trail_model::time::format_rfc3339(now - (i + 1) * 600_000_000),
                "actor": {"id": format!("dev{i}@acme.io"), "name": format!("Dev {i}")},
                "action": "component.deployed",
                "target": {"type": "component", "id": format!("c-{i}"), "name": format!("svc-{i}")},
                "project": if i < 6 { "payments" } else { "billing" },
                "outcome": if i == 2 { "failure" } else { "success" },
            })
        })
        .collect();
    key.ingest_batch("default", &events).await.unwrap();
}

#[tokio::test]
async fn embedded_viewer_in_a_host_page() {
    let Some(mut b) = Browser::launch().await else {
        eprintln!(
            "SKIPPED embedded_viewer_in_a_host_page: Chromium is not installed (apt-get install -y chromium)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &[]);
    let key = create_key(dir.path(), "events:write,viewer:mint");
    let anon = Client::new(&served.base);
    seed(&anon.with_token(&key)).await;
    let admin = anon.login("admin@localhost", PASSWORD).await.unwrap();
    let allowed = Host::start(&served.base, &key);
    let refused = Host::start(&served.base, &key);
    // The org's administrator allows the host's origin on the console's settings page.
    sign_in(&mut b, &served.base, "admin@localhost", PASSWORD).await;
    b.goto(&format!("{}/orgs/default/admin/settings", served.base)).await;
    fill(&mut b, "#embed-origins", &allowed.origin).await;
    submit(&mut b, "form[data-api$='/embedding']").await;
    let mut set = Value::Null;
    for _ in 0..100 {
        set = admin.get("/v1/orgs/default/embedding").await.unwrap();
        if set["allowed_origins"] != json!([]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(set["allowed_origins"], json!([allowed.origin]), "saved from the settings page");
    b.goto(&format!("{}/orgs/default/admin/settings", served.base)).await;
    assert_eq!(
        b.eval("document.querySelector('#embed-origins').value").await,
        json!(allowed.origin),
        "shown again"
    );

    b.goto(&format!("{}/", allowed.origin)).await;
    let frame = b.child_frame().await;
    assert!(
        frame["url"].as_str().unwrap().starts_with(&format!("{}/embed/orgs/default/logs", served.base)),
        "{frame}"
    );
    b.frame_wait_for("document.body.dataset.ready === 'true'", "the viewer to load").await;
    let seen = b
        .frame_eval(
            r#"({rows: document.querySelectorAll('[data-rows] tr').length,
                 projects: [...new Set([...document.querySelectorAll('[data-rows] tr td:nth-child(5)')].map((td) => td.textContent))],
                 fixed: document.querySelector('[data-fixed]').textContent,
                 caption: document.querySelector('[data-caption]').textContent,
                 nav: document.querySelectorAll('nav, header.top').length,
                 hash: location.hash,
                 accent: getComputedStyle(document.documentElement).getPropertyValue('--accent').trim(),
                 font: document.documentElement.style.fontFamily,
                 compact: document.body.classList.contains('compact'),
                 exportable: !document.querySelector('[data-export-tools]').hidden,
                 firstTime: document.querySelector('[data-rows] tr td').textContent,
                 firstIso: document.querySelector('[data-rows] tr td').title})"#,
        )
        .await
        .unwrap();
    assert_eq!(seen["rows"], 6, "only the token's project: {seen}");
    assert_eq!(seen["projects"], json!(["payments"]));
    assert_eq!(seen["fixed"], "Showing only project payments.");
    assert_eq!(seen["nav"], 0, "no Trail navigation inside the host");
    assert_eq!(seen["hash"], "", "the token is dropped from the address");
    assert_eq!((seen["accent"].as_str(), seen["compact"].as_bool()), (Some("#aa3300"), Some(true)), "{seen}");
    assert_eq!(seen["font"], "Georgia");
    assert!(seen["caption"].as_str().unwrap().contains("(Asia/Tokyo)"), "{seen}");
    assert_eq!(seen["exportable"], true);
    assert_eq!(b.frame_eval(A11Y_CHECK).await, Ok(json!([])), "accessibility basics inside the frame");
    // Times in the viewer's zone: Tokyo is UTC+9 all year.
    let iso = seen["firstIso"].as_str().unwrap().trim_end_matches(" (UTC)");
    let utc = trail_model::time::parse_rfc3339(iso).unwrap();
    let tokyo = trail_model::time::format_rfc3339(utc + 9 * 3_600_000_000);
    assert_eq!(seen["firstTime"].as_str().unwrap(), &tokyo[..19].replace('T', " "), "{seen}");

    // The detail of the first event, with its integrity verified in the browser.
    b.frame_eval("document.querySelector('[data-rows] tr').click(), true").await.unwrap();
    let badge = b
        .frame_wait_for(
            "document.querySelector('[data-badge].ok, [data-badge].bad')?.textContent",
            "the integrity badge",
        )
        .await;
    assert!(badge.as_str().unwrap().starts_with("Integrity verified"), "{badge}");
    b.frame_eval("document.querySelector('[data-detail] [data-close]').click(), true").await.unwrap();

    // A filter outside the token is refused with the server's reason.
    b.frame_eval(
        "document.querySelector('#project').value = 'billing'; document.querySelector('[data-filters]').requestSubmit(), true",
    )
    .await
    .unwrap();
    let refused_filter =
        b.frame_wait_for("document.querySelector('[data-error]').textContent", "the refusal").await;
    assert!(refused_filter.as_str().unwrap().contains("may only see project payments"), "{refused_filter}");
    b.frame_eval("document.querySelector('#project').value = ''; document.querySelector('[data-filters]').requestSubmit(), true")
        .await
        .unwrap();
    b.frame_wait_for("document.querySelectorAll('[data-rows] tr').length === 6", "the rows again").await;

    // An export, followed in the export history until it can be downloaded.
    b.frame_eval(
        "document.querySelector('[data-open-export]').click(); document.querySelector('#export-name').value = 'payments deploys'; document.querySelector('[data-export]').requestSubmit(), true",
    )
    .await
    .unwrap();
    b.frame_wait_for(
        "document.querySelector('[data-export-rows] tr[data-status=completed] button')?.textContent === 'Download'",
        "the completed export",
    )
    .await;
    let exports = admin.get("/v1/orgs/default/exports").await.unwrap();
    let e = &exports["exports"][0];
    assert_eq!(
        (e["name"].as_str(), e["requested_by"].as_str()),
        (Some("payments deploys"), Some("viewer:user-42"))
    );
    assert_eq!(e["row_count"], 6, "{e}");
    let recorded = admin.query_all("default", &[("action", "export.created")]).await.unwrap();
    assert_eq!(recorded[0]["actor"]["name"], "Ada Lovelace");

    // The same host on an origin the org did not allow: the browser refuses to frame the viewer.
    b.goto(&format!("{}/", refused.origin)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let frame = b.child_frame().await;
    assert_eq!(
        frame["url"], "chrome-error://chromewebdata/",
        "a page from {} framed the viewer: {frame}",
        refused.origin
    );
    assert!(
        frame["unreachableUrl"].as_str().unwrap().starts_with(&format!("{}/embed/", served.base)),
        "{frame}"
    );
    assert_eq!(b.frame_eval("!!document.querySelector('[data-viewer]')").await, Ok(json!(false)));
}
