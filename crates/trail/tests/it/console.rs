//! The web console end to end in headless Chromium (Debian's `chromium`): sign in, the default view,
//! filters and search, the event detail with its integrity badge, a CSV export followed to completion
//! and compared with the API, and the administrator's role → group → invitation path to an invited
//! auditor who sees logs but no administration. Every page passes the accessibility basics check and a
//! keyboard focus-order walk; screenshots go to `target/tmp/console-screenshots/` (not committed).

use std::path::PathBuf;

use serde_json::{Value, json};
use trail_client::Client;

use crate::browser::{A11Y_CHECK, Browser};
use crate::{PASSWORD, Served, create_key};

const REQUEST_ID: &str = "req-7f3a9c2e";

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
}

/// 30 events in the last 24 hours (alice, bob, carol; some failures; one with a request id) and 8 from
/// three days ago, which the default view must not show.
async fn seed(key: &Client) {
    let now = trail_model::time::now();
    let mut events = Vec::new();
    for i in 0..30i64 {
        let actor = ["alice@acme.io", "bob@acme.io", "carol@acme.io"][(i % 3) as usize];
        let action = ["component.deployed", "project.updated", "api_key.created"][(i % 3) as usize];
        let mut e = json!({
            "time": trail_model::time::format_rfc3339(now - (i * 40 + 5) * 60_000_000),
            "actor": {"id": actor, "type": "user", "ip": "10.0.0.7"},
            "action": action,
            "target": {"type": "component", "id": format!("c-{i}"), "name": format!("payments-{i}")},
            "project": "payments",
            "outcome": if i % 4 == 0 { "failure" } else { "success" },
            "info": {"build": i, "region": "eu-west-1"},
        });
        if i == 7 {
            e["info"]["request_id"] = json!(REQUEST_ID);
        }
        if i % 4 == 0 {
            e["reason"] = json!("quota exceeded");
        }
        events.push(e);
    }
    for i in 0..8i64 {
        events.push(json!({
            "time": trail_model::time::format_rfc3339(now - 3 * 86_400_000_000 - i * 60_000_000),
            "actor": {"id": "old@acme.io"}, "action": "project.created",
            "target": {"type": "project", "id": format!("p-{i}")}, "outcome": "success"}));
    }
    key.ingest_batch("default", &events).await.unwrap();
}

async fn api_count(key: &Client, params: &[(&str, &str)]) -> Vec<Value> {
    let mut p: Vec<(&str, &str)> = params.to_vec();
    p.push(("limit", "1000"));
    key.query("default", &p).await.unwrap().events
}

/// The accessibility basics and a keyboard walk: Tab moves through the focusable elements in document
/// order, each with a visible focus outline.
async fn check_accessibility(b: &mut Browser, page: &str) {
    let problems = b.eval(A11Y_CHECK).await;
    assert_eq!(problems, json!([]), "{page}: accessibility problems");
    let n = b
        .eval(
            r#"(() => { const vis = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
              const f = [...document.querySelectorAll('a[href], button, input:not([type=hidden]), select, textarea, summary, [tabindex]')]
                .filter((el) => !el.disabled && el.tabIndex >= 0 && vis(el) && !el.closest('dialog'));
              f.forEach((el, i) => { el.dataset.a11yIdx = String(i); });
              // Start the walk at the top, as a keyboard user arriving at the page does.
              f[0].focus(); return f.length; })()"#,
        )
        .await
        .as_u64()
        .unwrap();
    let steps = n.saturating_sub(1).min(25);
    let mut last: i64 = 0;
    for step in 0..steps {
        b.press("Tab", 9).await;
        let v = b
            .eval(
                r#"(() => { const el = document.activeElement; const st = getComputedStyle(el);
                  return { idx: el.dataset.a11yIdx ?? null, outline: st.outlineStyle !== 'none' && parseFloat(st.outlineWidth) > 0,
                           html: el.outerHTML.slice(0, 80) }; })()"#,
            )
            .await;
        let idx: i64 = v["idx"]
            .as_str()
            .unwrap_or_else(|| panic!("{page}: Tab {step} reached an unexpected element {v}"))
            .parse()
            .unwrap();
        assert!(idx > last, "{page}: focus went backwards at Tab {step}: {v}");
        assert!(v["outline"].as_bool().unwrap(), "{page}: no visible focus on {v}");
        last = idx;
    }
}

/// Headless Chromium, or `None` (the test says SKIPPED) where it is not installed.
async fn browser(test: &str) -> Option<Browser> {
    let b = Browser::launch().await;
    if b.is_none() {
        eprintln!("SKIPPED {test}: Chromium is not installed (apt-get install -y chromium)");
    }
    b
}

async fn shoot(b: &mut Browser, name: &str) {
    b.viewport(1280, 900, false).await;
    b.screenshot(&shots().join(format!("{name}-1280.png"))).await;
    b.viewport(390, 844, true).await;
    b.screenshot(&shots().join(format!("{name}-phone.png"))).await;
    b.viewport(1280, 900, false).await;
}

pub async fn fill(b: &mut Browser, selector: &str, value: &str) {
    let js = format!(
        "(() => {{ const el = document.querySelector({sel}); el.value = {val}; el.dispatchEvent(new Event('input', {{bubbles: true}})); el.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()",
        sel = json!(selector),
        val = json!(value)
    );
    b.eval(&js).await;
}

pub async fn submit(b: &mut Browser, form: &str) {
    b.eval(&format!("document.querySelector({}).requestSubmit(), true", json!(form))).await;
}

pub async fn sign_in(b: &mut Browser, base: &str, email: &str, password: &str) {
    b.goto(&format!("{base}/login")).await;
    fill(b, "#email", email).await;
    fill(b, "#password", password).await;
    submit(b, "form[data-login]").await;
    b.wait_for(
        "location.pathname.startsWith('/orgs/') && document.readyState === 'complete'",
        "the signed-in start page",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_end_to_end() {
    let Some(mut b) = browser("console_end_to_end").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &[]);
    let base = served.base.clone();
    let key = Client::new(&base).with_token(create_key(dir.path(), "events:write,events:read"));
    seed(&key).await;

    // Sign in: the start page is the sign-in form, then the org's Audit Logs.
    b.goto(&format!("{base}/")).await;
    assert_eq!(b.eval("location.pathname").await, "/login");
    check_accessibility(&mut b, "sign-in").await;
    shoot(&mut b, "sign-in").await;
    sign_in(&mut b, &base, "admin@localhost", PASSWORD).await;
    assert_eq!(b.eval("location.pathname").await, "/orgs/default/logs");

    // The default view: the last 24 hours, newest first (the seed's 30 events, Trail's records of the
    // key's creation and of the sign-in). The search that loaded the page is recorded once it was
    // answered: the newest event, not on the page it produced.
    let day = api_count(&key, &[]).await;
    assert_eq!(day.len(), 33, "30 seeded events, the key's creation, the sign-in and the search");
    assert_eq!(
        (day[0]["action"].as_str(), day[0]["actor"]["id"].as_str()),
        (Some("log.searched"), Some("admin@localhost"))
    );
    assert_eq!(day[0]["info"]["returned"], 32, "{}", day[0]);
    let rows = b.wait_for("document.querySelectorAll('[data-rows] tr').length", "rows").await;
    assert_eq!(rows, json!(32));
    let first = b.eval("document.querySelector('[data-rows] tr a').getAttribute('href')").await;
    assert_eq!(first, json!(format!("/orgs/default/logs/{}", day[1]["id"].as_str().unwrap())));
    assert_eq!(b.eval("document.querySelectorAll('.histogram rect').length > 0").await, json!(true));
    check_accessibility(&mut b, "audit logs").await;

    // Times show in the viewer's zone by default; UTC on request, remembered across pages.
    b.call("Emulation.setTimezoneOverride", json!({"timezoneId": "Asia/Tokyo"})).await.unwrap();
    b.goto(&format!("{base}/orgs/default/logs")).await;
    let utc_time = day[1]["time"].as_str().unwrap().to_string();
    let local = b.eval("document.querySelectorAll('[data-rows] time')[1].textContent").await;
    let t = trail_model::time::parse_rfc3339(&utc_time).unwrap() + 9 * 3_600_000_000;
    let expect = trail_model::time::format_rfc3339(t).replace('T', " ");
    assert_eq!(local.as_str().unwrap(), format!("{} Asia/Tokyo", &expect[..19]), "the browser's zone");
    b.eval("document.querySelector('[data-tz-toggle]').click(), true").await;
    let utc = b.eval("document.querySelectorAll('[data-rows] time')[1].textContent").await;
    assert_eq!(utc.as_str().unwrap(), format!("{} UTC", &utc_time.replace('T', " ")[..19]));
    b.goto(&format!("{base}/orgs/default/exports")).await;
    b.goto(&format!("{base}/orgs/default/logs")).await;
    let kept = b.eval("document.querySelectorAll('[data-rows] time')[1].textContent").await;
    assert!(kept.as_str().unwrap().ends_with(" UTC"), "UTC is remembered: {kept}");
    b.eval("document.querySelector('[data-tz-toggle]').click(), true").await;
    shoot(&mut b, "audit-logs").await;

    // Filter by actor and outcome: the URL keeps the filters.
    fill(&mut b, "#actor", "alice@acme.io").await;
    fill(&mut b, "#outcome", "failure").await;
    submit(&mut b, "form[data-filters]").await;
    b.wait_for(
        "location.search.includes('outcome=failure') && document.readyState === 'complete'",
        "filtered page",
    )
    .await;
    let want = api_count(&key, &[("actor", "alice@acme.io"), ("outcome", "failure")]).await;
    assert!(!want.is_empty());
    let shown = b
        .eval("[...document.querySelectorAll('[data-rows] tr')].map((tr) => [tr.cells[1].textContent.trim(), tr.cells[5].textContent.trim()])")
        .await;
    let shown = shown.as_array().unwrap();
    assert_eq!(shown.len(), want.len());
    assert!(shown.iter().all(|r| r[0] == "alice@acme.io" && r[1] == "failure"), "{shown:?}");
    let url = b.eval("location.href").await;
    b.goto(url.as_str().unwrap()).await;
    assert_eq!(
        b.eval("document.querySelector('#actor').value").await,
        "alice@acme.io",
        "a shared URL restores the view"
    );

    // Nothing matches: the empty state says why.
    fill(&mut b, "#actor", "nobody@acme.io").await;
    submit(&mut b, "form[data-filters]").await;
    b.wait_for("document.querySelector('.empty')", "empty state").await;
    let why = b.eval("document.querySelector('.empty').textContent").await;
    assert!(why.as_str().unwrap().contains("nobody@acme.io"), "{why}");

    // A window the API refuses shows its message.
    b.goto(&format!("{base}/orgs/default/logs?range=custom&from_local=2020-01-01T00:00&to_local=2020-12-31T00:00&tz_offset=0")).await;
    let err = b.eval("document.querySelector('.banner').textContent").await;
    assert!(err.as_str().unwrap().contains("92 days"), "{err}");

    // Search a request id: exactly that event.
    b.goto(&format!("{base}/orgs/default/logs?q={REQUEST_ID}")).await;
    assert_eq!(b.eval("document.querySelectorAll('[data-rows] tr').length").await, json!(1));

    // Its detail: every field, and the integrity badge checks the inclusion proof and the checkpoint.
    b.eval("document.querySelector('[data-rows] tr a').click(), true").await;
    b.wait_for(
        "location.pathname.split('/').length === 5 && document.readyState === 'complete'",
        "detail page",
    )
    .await;
    let text = b.eval("document.querySelector('main').innerText").await;
    for part in [REQUEST_ID, "payments-7", "10.0.0.7", "eu-west-1", "Sequence number"] {
        assert!(text.as_str().unwrap().contains(part), "the detail shows {part}: {text}");
    }
    let badge = b
        .wait_for(
            "document.querySelector('[data-badge].ok, [data-badge].bad')?.textContent",
            "the integrity badge",
        )
        .await;
    // The inclusion proof against the checkpoint's root and the checkpoint's signature, both checked in
    // the browser (Chromium has Ed25519 in WebCrypto since version 137).
    let why = b.eval("window.trailSignatureError || ''").await;
    assert!(badge.as_str().unwrap().starts_with("Integrity verified"), "{badge} {why}");
    // Who read the log is in the log: the search and the opened event, as the admin's own records.
    let opened = b.eval("location.pathname.split('/').pop()").await;
    let viewed = api_count(&key, &[("action", "log.event_viewed")]).await;
    assert_eq!((&viewed[0]["actor"]["id"], &viewed[0]["target"]["id"]), (&json!("admin@localhost"), &opened));
    let searches = api_count(&key, &[("action", "log.searched")]).await;
    assert!(searches.iter().any(|e| e["info"]["filters"]["q"] == REQUEST_ID), "{searches:?}");
    check_accessibility(&mut b, "event detail").await;
    shoot(&mut b, "event-detail").await;

    // Export the default view as CSV, follow it in Export History, download it and compare.
    b.goto(&format!("{base}/orgs/default/logs")).await;
    b.eval("document.querySelector('[data-open-export]').click(), true").await;
    fill(&mut b, "#export-name", "last day").await;
    submit(&mut b, "form[data-export]").await;
    b.wait_for("location.pathname === '/orgs/default/exports'", "export history").await;
    b.wait_for("document.querySelector('tr[data-status=completed] a[download]')", "the export to complete")
        .await;
    check_accessibility(&mut b, "export history").await;
    shoot(&mut b, "export-history").await;
    let csv = b
        .eval("(async () => { const a = document.querySelector('tr[data-status=completed] a[download]'); return await (await fetch(a.href)).text(); })()")
        .await;
    let lines: Vec<&str> = csv.as_str().unwrap().lines().collect();
    assert!(lines[0].starts_with("time,"), "a header row: {}", lines[0]);
    let in_window = api_count(&key, &[]).await;
    // The export's window was fixed when it was requested: everything of the day the page showed.
    let exported = lines.len() - 1;
    assert!(exported >= day.len() && exported <= in_window.len(), "{exported} rows");
    for e in &day {
        assert!(csv.as_str().unwrap().contains(e["id"].as_str().unwrap()), "the CSV has event {}", e["id"]);
    }

    // Administration: a role with LOG-MANAGEMENT, a group with it, an invitation into the group.
    b.goto(&format!("{base}/orgs/default/admin/roles")).await;
    check_accessibility(&mut b, "roles").await;
    fill(&mut b, "#role-name", "Auditor").await;
    b.eval(
        "document.querySelector('form[data-api$=\"/roles\"] input[value=\"LOG-MANAGEMENT\"]').checked = true",
    )
    .await;
    submit(&mut b, "form[data-api$=\"/roles\"]").await;
    b.wait_for(
        "[...document.querySelectorAll('h2')].some((h) => h.textContent.trim() === 'Auditor')",
        "the new role",
    )
    .await;
    shoot(&mut b, "roles").await;

    b.goto(&format!("{base}/orgs/default/admin/groups")).await;
    fill(&mut b, "#group-name", "Auditors").await;
    submit(&mut b, "form[data-api$=\"/groups\"]").await;
    b.wait_for(
        "[...document.querySelectorAll('section.group h2')].some((h) => h.textContent.trim() === 'Auditors') && document.readyState === 'complete'",
        "the new group",
    )
    .await;
    let form = b
        .eval("(() => { const s = [...document.querySelectorAll('section.group')].find((s) => s.querySelector('h2').textContent.trim() === 'Auditors'); const f = s.querySelector('form[data-api$=\"{role_id}\"]'); const sel = f.querySelector('select'); sel.value = [...sel.options].find((o) => o.text === 'Auditor').value; f.id = 'add-auditor-role'; return true; })()")
        .await;
    assert_eq!(form, json!(true));
    submit(&mut b, "#add-auditor-role").await;
    b.wait_for("[...document.querySelectorAll('section.group')].some((s) => s.querySelector('h2').textContent.trim() === 'Auditors' && s.querySelector('.chips li')?.textContent.includes('Auditor'))", "the role in the group").await;
    check_accessibility(&mut b, "groups").await;
    shoot(&mut b, "groups").await;

    b.goto(&format!("{base}/orgs/default/admin/invitations")).await;
    fill(&mut b, "#invite-emails", "auditor@acme.io").await;
    b.eval("(() => { const l = [...document.querySelectorAll('form[data-show=links] label.check')].find((l) => l.textContent.trim() === 'Auditors'); l.querySelector('input').checked = true; return true; })()").await;
    submit(&mut b, "form[data-show=links]").await;
    let link =
        b.wait_for("document.querySelector('[data-accept-url]')?.textContent", "the accept link").await;
    let link = link.as_str().unwrap().to_string();
    assert!(link.starts_with(&format!("{base}/invitations/")), "{link}");
    check_accessibility(&mut b, "invitations").await;
    shoot(&mut b, "invitations").await;
    for page in ["users", "keys", "settings"] {
        b.goto(&format!("{base}/orgs/default/admin/{page}")).await;
        check_accessibility(&mut b, page).await;
        shoot(&mut b, page).await;
    }

    // The invited auditor accepts, signs in, sees the logs and no administration.
    b.clear_cookies().await;
    b.goto(&link).await;
    check_accessibility(&mut b, "accept invitation").await;
    fill(&mut b, "#new-password", "auditor-password-1").await;
    fill(&mut b, "#confirm-password", "auditor-password-1").await;
    submit(&mut b, "form[data-accept]").await;
    b.wait_for("!document.querySelector('[data-done]').hidden", "the acceptance").await;
    sign_in(&mut b, &base, "auditor@acme.io", "auditor-password-1").await;
    assert_eq!(b.eval("location.pathname").await, "/orgs/default/logs");
    assert!(b.eval("document.querySelectorAll('[data-rows] tr').length").await.as_u64().unwrap() >= 31);
    let nav = b.eval("[...document.querySelectorAll('nav.tabs a')].map((a) => a.textContent.trim())").await;
    assert_eq!(
        nav,
        json!(["Audit Logs", "Export History", "Archive", "Alerts"]),
        "no admin pages for an auditor"
    );
    b.goto(&format!("{base}/orgs/default/admin/roles")).await;
    assert_eq!(b.eval("document.querySelector('h1').textContent").await, "Not allowed");
    let status = b.eval("(async () => (await fetch('/v1/orgs/default/roles')).status)()").await;
    assert_eq!(status, json!(403), "and the API refuses it too");
    drop(served);
}

/// The ids of the rows the Audit Logs page shows, in order.
async fn shown_ids(b: &mut Browser) -> Vec<String> {
    let ids = b
        .eval("[...document.querySelectorAll('[data-rows] tr a')].map((a) => a.getAttribute('href').split('/').pop())")
        .await;
    ids.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

fn ids_of(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()
}

async fn apply(b: &mut Browser) {
    b.eval("window.__applied = true, true").await;
    submit(b, "form[data-filters]").await;
    b.wait_for("!window.__applied && document.readyState === 'complete'", "the filtered page").await;
}

/// The console filters as the API does: one action choice finds every name of an operation
/// (`user.logged_in` and `user.signed_in`), several values of a filter are ORed, and prefixes and
/// uncatalogued actions can be asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_filters_like_the_api() {
    let Some(mut b) = browser("console_filters_like_the_api").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &[]);
    let base = served.base.clone();
    let key = Client::new(&base).with_token(create_key(dir.path(), "events:write,events:read"));
    seed(&key).await;
    let now = trail_model::time::now();
    let extra: Vec<Value> =
        ["user.logged_in", "user.logged_out", "component.spun_up", "custom.widget_turned"]
            .iter()
            .enumerate()
            .map(|(i, a)| {
                json!({"time": trail_model::time::format_rfc3339(now - (i as i64 + 1) * 60_000_000),
                   "actor": {"id": "dave@acme.io"}, "action": a, "target": {"type": "user", "id": "dave"},
                   "outcome": "success", "source": "integration-runtime"})
            })
            .collect();
    key.ingest_batch("default", &extra).await.unwrap();
    sign_in(&mut b, &base, "admin@localhost", PASSWORD).await;

    // "User signed in" is one choice standing for both names: the runtime's and the console's own.
    let choice = b
        .eval("[...document.querySelectorAll('#action option')].filter((o) => o.text === 'User signed in').map((o) => o.value)")
        .await;
    assert_eq!(choice, json!(["user.logged_in,user.signed_in"]));
    fill(&mut b, "#action", "user.logged_in,user.signed_in").await;
    apply(&mut b).await;
    let want = api_count(&key, &[("action", "user.logged_in"), ("action", "user.signed_in")]).await;
    let actions: Vec<&str> = want.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"user.logged_in") && actions.contains(&"user.signed_in"), "{actions:?}");
    assert_eq!(shown_ids(&mut b).await, ids_of(&want));
    assert_eq!(
        b.eval("document.querySelector('#action').selectedOptions[0].text").await,
        "User signed in",
        "the page keeps the choice"
    );

    // Prefixes and uncatalogued names in "More actions", ORed with the chosen action.
    fill(&mut b, "#action_more", "component.*, custom.widget_turned").await;
    apply(&mut b).await;
    let want = api_count(
        &key,
        &[
            ("action", "user.logged_in"),
            ("action", "user.signed_in"),
            ("action", "component.*"),
            ("action", "custom.widget_turned"),
        ],
    )
    .await;
    assert!(want.iter().any(|e| e["action"] == "component.spun_up"));
    assert_eq!(shown_ids(&mut b).await, ids_of(&want));
    assert_eq!(
        b.eval("document.querySelector('#action_more').value").await,
        "component.*, custom.widget_turned"
    );

    // Several actors, separated by commas, are ORed.
    fill(&mut b, "#action", "").await;
    fill(&mut b, "#action_more", "").await;
    fill(&mut b, "#actor", "dave@acme.io, bob@acme.io").await;
    apply(&mut b).await;
    let want = api_count(&key, &[("actor", "dave@acme.io"), ("actor", "bob@acme.io")]).await;
    assert_eq!(want.len(), 4 + 10);
    assert_eq!(shown_ids(&mut b).await, ids_of(&want));
    assert_eq!(b.eval("document.querySelector('#actor').value").await, "dave@acme.io, bob@acme.io");
}

/// The histogram's axes and hover, the org's opening time range (Settings), and the Archive page
/// restoring an archived month into Export History.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_histogram_settings_and_archive() {
    let Some(mut b) = browser("console_histogram_settings_and_archive").await else { return };
    // Events of the last 100 days; then a retention pass with 30 hot days archives the older months.
    let dir = tempfile::tempdir().unwrap();
    let day = 86_400_000_000i64;
    {
        let mut served = Served::start(dir.path(), &[]);
        let key = Client::new(&served.base).with_token(create_key(dir.path(), "events:write,events:read"));
        let now = trail_model::time::now();
        let events: Vec<Value> = (0..100i64)
            .map(|i| {
                json!({"time": trail_model::time::format_rfc3339(now - i * day - 3_600_000_000 * (i % 5) - 60_000_000),
                       "actor": {"id": format!("user-{}", i % 3)}, "action": "project.updated",
                       "target": {"type": "project", "id": format!("p-{i}")}, "outcome": "success"})
            })
            .collect();
        key.ingest_batch("default", &events).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        assert!(served.signal("-TERM").success());
    }
    let env = [("TRAIL_RETENTION__HOT_DAYS", "30")];
    let out =
        crate::trail().envs(env).args(["archive", "run", "--data-dir"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let served = Served::start(dir.path(), &env);
    let base = served.base.clone();
    let key = Client::new(&base).with_token(create_key(dir.path(), "events:write,events:read"));
    sign_in(&mut b, &base, "admin@localhost", PASSWORD).await;

    // The histogram of the last 30 days: a count axis topped by the largest bar, five time ticks, and
    // a bar's count shown on hover.
    b.goto(&format!("{base}/orgs/default/logs?range=30d")).await;
    let counts =
        b.eval("[...document.querySelectorAll('.histogram rect')].map((r) => Number(r.dataset.count))").await;
    let max = counts.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).max().unwrap();
    assert!(max >= 1);
    assert_eq!(
        b.eval("document.querySelector('.histogram .y-axis span').textContent").await,
        json!(max.to_string())
    );
    let ticks =
        b.eval("[...document.querySelectorAll('.histogram .x-axis time')].map((t) => t.textContent)").await;
    let ticks = ticks.as_array().unwrap();
    assert_eq!(ticks.len(), 5);
    assert!(ticks.iter().all(|t| t.as_str().unwrap().len() == 11), "MM-DD HH:MM: {ticks:?}");
    let hovered = b
        .eval("(() => { const r = [...document.querySelectorAll('.histogram rect')].find((r) => Number(r.dataset.count) > 0); r.dispatchEvent(new MouseEvent('mouseenter')); return [r.dataset.count, document.querySelector('[data-hover]').textContent]; })()")
        .await;
    let count = hovered[0].as_str().unwrap();
    assert!(hovered[1].as_str().unwrap().starts_with(&format!("{count} event")), "{hovered}");
    check_accessibility(&mut b, "audit logs with a histogram").await;

    // A histogram that counts rows (here by action and actor) is not in the page: the script draws it from the
    // API once the rows are shown, for the window the page resolved, as the server draws the one of
    // the same events by action alone (counted per time unit, so in the page).
    let now = trail_model::time::now();
    let local = |t: i64| trail_model::time::format_rfc3339(t)[..16].to_string();
    let window =
        format!("range=custom&from_local={}&to_local={}&tz_offset=0", local(now - 29 * day), local(now));
    const BARS: &str = "(() => { const f = document.querySelector('.histogram'); return [f.hasAttribute('data-histogram'), f.querySelector('[data-total]').textContent, f.querySelector('[data-max]').textContent, f.querySelector('svg').getAttribute('aria-label'), [...f.querySelectorAll('rect')].map((r) => [...r.attributes].map((a) => `${a.name}=${a.value}`).join(' ') + ' ' + r.textContent)]; })()";
    b.goto(&format!("{base}/orgs/default/logs?{window}&action=project.updated")).await;
    let drawn = b.eval(BARS).await;
    assert_eq!(drawn[0], json!(false), "by action: drawn with the page");
    assert!(drawn[4].as_array().unwrap().len() >= 20, "{drawn}");
    let by_actor =
        format!("/orgs/default/logs?{window}&action=project.updated&actor=user-0&actor=user-1&actor=user-2");
    let html = b.eval(&format!("fetch('{by_actor}').then((r) => r.text())")).await;
    let html = html.as_str().unwrap();
    assert!(html.contains("data-histogram=\"from=") && !html.contains("<rect"), "by actor: not in the page");
    b.goto(&format!(
        "{base}/orgs/default/logs?{window}&action=project.updated&actor=user-0&actor=user-1&actor=user-2"
    ))
    .await;
    b.wait_for(
        "document.querySelector('.histogram[aria-busy]') === null",
        "the histogram drawn by the script",
    )
    .await;
    let later = b.eval(BARS).await;
    assert_eq!(later[0], json!(true));
    assert_eq!(
        later.as_array().unwrap()[1..],
        drawn.as_array().unwrap()[1..],
        "the same bars, total, axis, label"
    );
    let hovered = b
        .eval("(() => { const r = document.querySelector('.histogram rect'); r.dispatchEvent(new MouseEvent('mouseenter')); return [r.dataset.count, document.querySelector('[data-hover]').textContent]; })()")
        .await;
    assert!(
        hovered[1].as_str().unwrap().starts_with(&format!("{} event", hovered[0].as_str().unwrap())),
        "{hovered}"
    );
    let by_actor = format!("{base}/orgs/default/logs?range=7d&actor=user-0");
    let html = b.eval(&format!("fetch('{by_actor}').then((r) => r.text())")).await;
    assert!(html.as_str().unwrap().contains("<rect"), "by actor alone: counted per value, in the page");
    b.goto(&format!("{base}/orgs/default/logs?range=7d&actor=user-0&action=project.updated")).await;
    b.wait_for(
        "document.querySelector('.histogram[aria-busy]') === null",
        "the histogram drawn by the script",
    )
    .await;
    check_accessibility(&mut b, "audit logs with a histogram drawn after the page").await;
    // Hot retention here is 30 days: the last 30 days start a minute inside it, so the API, asked a
    // moment after the page, still takes the page's window.
    b.goto(&format!("{base}/orgs/default/logs?range=30d&actor=user-0&action=project.updated")).await;
    b.wait_for(
        "document.querySelector('.histogram[aria-busy]') === null",
        "the histogram drawn by the script",
    )
    .await;
    let total = b.eval("document.querySelector('.histogram [data-total]').textContent").await;
    let hovered = b.eval("document.querySelector('[data-hover]').textContent").await;
    assert!(total.as_str().unwrap().parse::<u64>().unwrap() >= 5, "{total} {hovered}");

    // Settings: Audit Logs opens with the last 7 days from now on.
    b.goto(&format!("{base}/orgs/default/admin/settings")).await;
    fill(&mut b, "#default-range", "7d").await;
    b.eval("window.__saved = true, true").await;
    submit(&mut b, "form[data-api]").await;
    b.wait_for("!window.__saved && document.readyState === 'complete'", "the saved settings").await;
    b.goto(&format!("{base}/orgs/default/logs")).await;
    assert_eq!(b.eval("document.querySelector('#range').value").await, "7d");
    let week =
        api_count(&key, &[("from", &trail_model::time::format_rfc3339(trail_model::time::now() - 7 * day))])
            .await;
    let shown = b.eval("document.querySelectorAll('[data-rows] tr').length").await.as_u64().unwrap();
    assert!(shown as usize >= week.len().saturating_sub(1), "{shown} rows for {} events", week.len());

    // The Archive page lists the archived months; restoring one leads to Export History, where it
    // completes with that month's events.
    b.goto(&format!("{base}/orgs/default/archive")).await;
    check_accessibility(&mut b, "archive").await;
    shoot(&mut b, "archive").await;
    let periods = b.eval("[...document.querySelectorAll('[data-period]')].map((tr) => [tr.dataset.period, Number(tr.cells[1].textContent)])").await;
    let periods = periods.as_array().unwrap();
    assert!(periods.len() >= 2, "{periods:?}");
    let (period, rows) = (periods[0][0].as_str().unwrap().to_string(), periods[0][1].as_u64().unwrap());
    assert!(rows > 0);
    b.eval(&format!("document.querySelector('[data-period=\"{period}\"] button').click(), true")).await;
    b.wait_for("location.pathname === '/orgs/default/exports'", "export history").await;
    b.wait_for("document.querySelector('tr[data-status=completed]')", "the restore to complete").await;
    let restored = b.eval("document.querySelector('tr[data-status=completed]').cells[4].textContent").await;
    assert_eq!(restored, json!(rows.to_string()), "the month's events, all restored");
    assert!(
        b.eval("document.querySelector('tr[data-status=completed]').cells[0].textContent")
            .await
            .as_str()
            .unwrap()
            .contains(&period)
    );
}

/// Destinations in the console: add a webhook (its secret shown once), see it deliver, pause and
/// resume it; a syslog collector that refuses connections shows as failing with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_destinations() {
    let Some(mut b) = browser("console_destinations").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rx_dir = dir.path().join("rx");
    std::fs::create_dir_all(&rx_dir).unwrap();
    let certs = crate::stream::certs(dir.path());
    let served = Served::start(&data, &[]);
    let base = served.base.clone();
    let key = Client::new(&base).with_token(create_key(&data, "events:write"));
    let events: Vec<Value> = (0..20)
        .map(|i| json!({"actor": {"id": "ana"}, "action": "project.created", "target": {"type": "project", "id": format!("p-{i}")}, "outcome": "success"}))
        .collect();
    key.ingest_batch("default", &events).await.unwrap();
    sign_in(&mut b, &base, "admin@localhost", PASSWORD).await;
    b.goto(&format!("{base}/orgs/default/admin/destinations")).await;
    check_accessibility(&mut b, "destinations, empty").await;

    let port = crate::stream::free_port();
    fill(&mut b, "#dst-name", "Security SIEM").await;
    fill(&mut b, "#dst-url", &format!("https://127.0.0.1:{port}/trail")).await;
    fill(&mut b, "#dst-ca", &certs.ca_pem).await;
    fill(&mut b, "#dst-start", "0").await;
    b.eval("document.querySelector('[data-new-destination] button[type=submit]').click(), true").await;
    let secret =
        b.wait_for("document.querySelector('[data-secret]')?.textContent", "the signing secret").await;
    let secret = secret.as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    let rx = crate::stream::Receiver::start("webhook", &rx_dir, &certs, port, ("--secret", &secret));
    crate::stream::wait_for("the first batch", 30, || !rx.bodies().is_empty()).await;
    // The page shows what delivery recorded, once the receiver's answer is in.
    let mut state = Value::Null;
    for _ in 0..50 {
        b.goto(&format!("{base}/orgs/default/admin/destinations")).await;
        state = b.eval("document.querySelector('[data-destination]').dataset.state").await;
        if state == "active" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(state, json!("active"));
    assert!(b.eval("document.body.textContent").await.as_str().unwrap().contains("https://127.0.0.1"));
    assert!(
        !b.eval("document.body.textContent").await.as_str().unwrap().contains(&secret),
        "never shown again"
    );
    check_accessibility(&mut b, "destinations").await;
    shoot(&mut b, "destinations").await;

    // Pause, then resume.
    b.eval("document.querySelector('[data-destination] form[data-api$=\"/pause\"] button').click(), true")
        .await;
    // Each action reloads the page: the next click waits for its script, or the form would be
    // submitted by the browser itself (to `destinations?`, the pause or resume lost).
    b.wait_for(
        "document.querySelector('[data-destination]')?.dataset.state === 'paused' && document.readyState === 'complete'",
        "paused",
    )
    .await;
    b.eval("document.querySelector('[data-destination] form[data-api$=\"/resume\"]:not([data-replay]) button').click(), true").await;
    b.wait_for(
        "document.querySelector('[data-destination]')?.dataset.state === 'active' && document.readyState === 'complete'",
        "resumed",
    )
    .await;

    // A syslog collector that is not there: failing, with the reason, while ingest goes on.
    fill(&mut b, "#dst-name", "Old collector").await;
    b.eval("document.querySelector('#dst-kind').value = 'syslog', true").await;
    fill(&mut b, "#dst-url", "").await;
    fill(&mut b, "#dst-ca", "").await;
    fill(&mut b, "#dst-start", "").await;
    fill(&mut b, "#dst-address", &format!("127.0.0.1:{}", crate::stream::free_port())).await;
    b.eval("document.querySelector('[name=tls]').checked = false, true").await;
    b.eval("document.querySelector('[data-new-destination] button[type=submit]').click(), true").await;
    b.wait_for("document.querySelectorAll('[data-destination]').length === 2", "the second destination")
        .await;
    key.ingest_batch("default", &events[..1]).await.unwrap();
    let mut failing = Value::Null;
    for _ in 0..50 {
        b.goto(&format!("{base}/orgs/default/admin/destinations")).await;
        failing = b.eval("[...document.querySelectorAll('[data-destination]')].map((r) => [r.dataset.state, r.querySelector('[data-destination-error]')?.textContent ?? ''])").await;
        if failing.to_string().contains("failing") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(failing.to_string().contains("cannot connect"), "{failing}");
}

/// Saved searches and alerts in the console: save a search and share it, open it, create a rule from
/// it, see the rule fire in the history with a link to its events, and enable a template.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_saved_searches_and_alerts() {
    let Some(mut b) = browser("console_saved_searches_and_alerts").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &[]);
    let base = served.base.clone();
    let key = Client::new(&base).with_token(create_key(dir.path(), "events:write"));
    seed(&key).await;
    sign_in(&mut b, &base, "admin@localhost", PASSWORD).await;

    // Filter to failures, then save the search, shared.
    b.goto(&format!("{base}/orgs/default/logs?range=24h&outcome=failure")).await;
    fill(&mut b, "#save-name", "Failures today").await;
    b.eval("document.querySelector('[data-save-search] [name=shared]').checked = true, true").await;
    b.eval("document.querySelector('[data-save-search] button[type=submit]').click(), true").await;
    b.wait_for(
        "document.querySelector('[data-saved-search] [data-open-search]')?.textContent === 'Failures today'",
        "the saved search",
    )
    .await;
    check_accessibility(&mut b, "audit logs with saved searches").await;
    assert!(
        b.eval("document.querySelector('[data-saved-search]').textContent")
            .await
            .as_str()
            .unwrap()
            .contains("shared")
    );
    // Opening it from a plain page applies its filters.
    b.goto(&format!("{base}/orgs/default/logs")).await;
    b.eval("document.querySelector('[data-open-search]').click(), true").await;
    b.wait_for(
        "location.search.includes('outcome=failure') && document.readyState === 'complete'",
        "the search opened",
    )
    .await;
    let outcomes = b.eval("[...document.querySelectorAll('tbody[data-rows] tr')].map((r) => r.textContent.includes('failure'))").await;
    assert!(outcomes.as_array().unwrap().iter().all(|v| v == true), "only failures: {outcomes}");

    // A rule from this search, firing on every failure.
    b.eval("document.querySelector('[data-alert-from-search]').click(), true").await;
    b.wait_for(
        "location.pathname === '/orgs/default/alerts' && document.readyState === 'complete'",
        "the alerts page",
    )
    .await;
    assert_eq!(b.eval("document.querySelector('#rule-search').value").await, json!("outcome=failure"));
    fill(&mut b, "#rule-name", "Any failure").await;
    fill(&mut b, "#rule-cooldown", "0").await;
    b.eval("document.querySelector('[data-new-rule] button[type=submit]').click(), true").await;
    b.wait_for("document.querySelector('[data-rule]')", "the rule").await;
    check_accessibility(&mut b, "alerts").await;
    let failure = json!({"actor": {"id": "mallory"}, "action": "user.sign_in_failed", "target": {"type": "user", "id": "mallory"}, "outcome": "failure"});
    key.ingest("default", &failure).await.unwrap();
    let mut fired = Value::Null;
    for _ in 0..50 {
        b.goto(&format!("{base}/orgs/default/alerts")).await;
        fired = b.eval("[...document.querySelectorAll('[data-firing]')].map((r) => [r.cells[1].textContent, r.querySelector('[data-firing-link]').getAttribute('href')])").await;
        if fired.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let first = &fired[0];
    assert!(first[0].as_str().unwrap().contains("Any failure"), "{fired}");
    shoot(&mut b, "alerts").await;
    // The link shows the matching events.
    let link = first[1].as_str().unwrap().to_string();
    b.goto(&link).await;
    assert!(b.eval("document.body.textContent").await.as_str().unwrap().contains("mallory"), "{link}");

    // A template in one click.
    b.goto(&format!("{base}/orgs/default/alerts")).await;
    b.eval("document.querySelector('[data-template=\"new-action\"] button').click(), true").await;
    b.wait_for(
        "document.querySelector('[data-template=\"new-action\"] .state-active')",
        "the template enabled",
    )
    .await;
    assert_eq!(b.eval("document.querySelectorAll('[data-rule]').length").await, json!(2));
}

/// By hand, never in CI: how long the Audit Logs page takes to render in Chromium against a running
/// server holding a large org (BENCHMARKS.md, issue #16). Point it at the server with
/// `TRAIL_BENCH_CONSOLE_URL`, `TRAIL_BENCH_CONSOLE_ORG` and the administrator's password in
/// `TRAIL_BENCH_CONSOLE_PASSWORD`, then run
/// `cargo test -p trail --release --test it console_timing_at_scale -- --ignored --nocapture`.
/// Each page is loaded once cold, then 10 times; the figure is the browser's own navigation timing
/// (request sent to the load event: the server's rendering, the transfer, the page's script).
#[tokio::test]
#[ignore = "needs a server with a large org; run by hand"]
async fn console_timing_at_scale() {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("set {k}"));
    let (base, org, password) =
        (var("TRAIL_BENCH_CONSOLE_URL"), var("TRAIL_BENCH_CONSOLE_ORG"), var("TRAIL_BENCH_CONSOLE_PASSWORD"));
    let Some(mut b) = browser("console_timing_at_scale").await else { return };
    sign_in(&mut b, &base, "admin@localhost", &password).await;
    println!(
        "| page | first load ms | p50 of 10 ms | max of 10 ms | histogram drawn, p50 of 10 ms | rows shown |\n|---|---|---|---|---|---|"
    );
    for (name, query) in [
        ("Audit Logs, last 90 days", "range=90d"),
        ("Audit Logs, last 30 days", "range=30d"),
        ("Audit Logs, 90 days, one action", "range=90d&action=component.deployed"),
        ("Audit Logs, 90 days, failures", "range=90d&outcome=failure"),
        ("Audit Logs, 90 days, free text", "range=90d&q=req-0"),
        ("Audit Logs, 90 days, one actor", "range=90d&actor=user3@org-000.example.com"),
        ("Audit Logs, 90 days, one target type", "range=90d&target_type=runbook"),
    ] {
        let url = format!("{base}/orgs/{org}/logs?{query}");
        let (mut loads, mut drawn) = (Vec::new(), Vec::new());
        for _ in 0..11 {
            b.goto(&url).await;
            // The page's load event; then the histogram, in the page (drawn at load) or drawn by the
            // script from the API after it (the mark it sets).
            let ms = b
                .wait_for(
                    "(() => { const n = performance.getEntriesByType('navigation')[0]; return n && n.loadEventEnd > 0 && n.loadEventEnd - n.startTime; })()",
                    "the navigation timing",
                )
                .await;
            loads.push(ms.as_f64().unwrap());
            let chart = b
                .wait_for(
                    "document.querySelector('.histogram[aria-busy]') === null && (performance.getEntriesByName('trail-histogram-drawn')[0]?.startTime ?? performance.getEntriesByType('navigation')[0].loadEventEnd)",
                    "the histogram",
                )
                .await;
            drawn.push(chart.as_f64().unwrap());
        }
        let rows = b.eval("document.querySelectorAll('table tbody tr').length").await;
        let first = loads.remove(0);
        drawn.remove(0);
        loads.sort_by(f64::total_cmp);
        drawn.sort_by(f64::total_cmp);
        println!(
            "| {name} | {first:.0} | {:.0} | {:.0} | {:.0} | {rows} |",
            loads[loads.len() / 2],
            loads[loads.len() - 1],
            drawn[drawn.len() / 2]
        );
    }
}
