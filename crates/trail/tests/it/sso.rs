//! Single sign-on with OpenID Connect (issue #21), against a real provider the tests start: Node's
//! `oidc-provider` from npm (`tests/oidc/provider.mjs`, installed by `.ci/run` with `npm ci`), with
//! its development login and consent pages. Over HTTP: the provider settings, just-in-time members
//! and the group map, the session confined to its org, password sign-in turned off, server
//! administrators' sign-in. In Chromium: the sign-in page's flow, a replayed state, a token for
//! another audience, an expired token, and a group removed at the provider.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use trail_client::Client;

use crate::browser::{A11Y_CHECK, Browser};
use crate::console::{fill, sign_in, submit};
use crate::stream::free_port;
use crate::{PASSWORD, Served};

const CLIENT_ID: &str = "trail-test";
const CLIENT_SECRET: &str = "provider-secret-1";

/// The provider: `node provider.mjs`, its users and tamper mode in files the tests rewrite.
struct Idp {
    child: Child,
    issuer: String,
    dir: tempfile::TempDir,
}

impl Idp {
    /// Starts the provider for Trail at `base`; `None` (the test says SKIPPED) without Node or the
    /// npm package.
    fn start(test: &str, base: &str, users: &Value) -> Option<Self> {
        let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
        let node_ok = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
        if !node_ok || !here.join("node_modules/oidc-provider").is_dir() {
            eprintln!(
                "SKIPPED {test}: Node or oidc-provider is missing (cd crates/trail/tests/oidc && npm ci)"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("users.json"), users.to_string()).unwrap();
        std::fs::write(dir.path().join("tamper"), "").unwrap();
        let mut child = Command::new("node")
            .arg(here.join("provider.mjs"))
            .current_dir(&here)
            .env("CLIENT_ID", CLIENT_ID)
            .env("CLIENT_SECRET", CLIENT_SECRET)
            .env("REDIRECT_URI", format!("{base}/v1/auth/sso/callback"))
            .env("USERS_FILE", dir.path().join("users.json"))
            .env("TAMPER_FILE", dir.path().join("tamper"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let issuer = loop {
            let line = lines.next().expect("the provider exited before listening").unwrap();
            if line.starts_with("http://") {
                break line.trim().to_string();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Some(Self { child, issuer, dir })
    }

    fn users(&self, users: &Value) {
        std::fs::write(self.dir.path().join("users.json"), users.to_string()).unwrap();
    }

    fn tamper(&self, mode: &str) {
        std::fs::write(self.dir.path().join("tamper"), mode).unwrap();
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser over plain HTTP: follows nothing by itself, keeps cookies (every server here is
/// 127.0.0.1, and cookies do not tell ports apart).
struct Http {
    client: reqwest::Client,
    jar: HashMap<String, String>,
    trail_port: u16,
}

struct Answer {
    status: StatusCode,
    location: String,
    body: String,
}

impl Http {
    fn new(trail_port: u16) -> Self {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { client, jar: HashMap::new(), trail_port }
    }

    async fn send(&mut self, rb: reqwest::RequestBuilder) -> Answer {
        let cookies: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let rb = if cookies.is_empty() { rb } else { rb.header(COOKIE, cookies.join("; ")) };
        let resp = rb.send().await.unwrap();
        for c in resp.headers().get_all(SET_COOKIE) {
            let c = c.to_str().unwrap();
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") || attrs.to_ascii_lowercase().contains("expires=thu, 01 jan 1970")
            {
                self.jar.remove(k.trim());
            } else {
                self.jar.insert(k.trim().to_string(), v.to_string());
            }
        }
        let status = resp.status();
        let location =
            resp.headers().get(LOCATION).map(|l| l.to_str().unwrap().to_string()).unwrap_or_default();
        // The provider answers relative addresses (Trail's own are kept as they are, to compare).
        let origin = resp.url().origin().ascii_serialization();
        let location = if location.starts_with('/') && !origin.ends_with(&format!(":{}", self.trail_port)) {
            format!("{origin}{location}")
        } else {
            location
        };
        Answer { status, location, body: resp.text().await.unwrap() }
    }

    async fn get(&mut self, url: &str) -> Answer {
        let rb = self.client.get(url);
        self.send(rb).await
    }

    async fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> Answer {
        let rb = self.client.post(url).form(form);
        self.send(rb).await
    }

    /// From Trail's start address through the provider's login and consent pages to the address the
    /// provider sends the browser back to (not yet followed).
    async fn through_provider(&mut self, start: &str, login: &str) -> String {
        let to_idp = self.get(start).await;
        assert_eq!(to_idp.status, StatusCode::SEE_OTHER, "{}", to_idp.body);
        let interaction = self.get(&to_idp.location).await.location;
        let after_login =
            self.post_form(&interaction, &[("prompt", "login"), ("login", login), ("password", "any")]).await;
        let consent = self.get(&after_login.location).await.location;
        let after_consent = self.post_form(&consent, &[("prompt", "consent")]).await;
        let back = self.get(&after_consent.location).await;
        assert!(
            back.location.contains("/v1/auth/sso/callback?"),
            "the provider answers Trail: {}",
            back.location
        );
        back.location
    }

    /// The session token a finished sign-in set.
    fn session(&self) -> Option<String> {
        self.jar.get("trail_session").cloned()
    }
}

fn users(groups: &[&str]) -> Value {
    json!({
        "ada": {"email": "ada@example.com", "name": "Ada", "groups": groups},
        "bob": {"email": "bob@example.com", "name": "Bob", "groups": ["trail-admins"]},
    })
}

/// An `Auditors` group (LOG-MANAGEMENT) of the default org for the provider's `trail-auditors`.
async fn auditors(admin: &Client) -> String {
    let role = admin
        .post("/v1/orgs/default/roles", &json!({"name": "Auditor", "permissions": ["LOG-MANAGEMENT"]}))
        .await
        .unwrap();
    let group = admin.post("/v1/orgs/default/groups", &json!({"name": "Auditors"})).await.unwrap();
    let (role, group) = (role["id"].as_str().unwrap(), group["id"].as_str().unwrap().to_string());
    admin.put(&format!("/v1/orgs/default/groups/{group}/roles/{role}"), &json!({})).await.unwrap();
    group
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_sign_on_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let Some(idp) =
        Idp::start("single_sign_on_over_http", &base, &users(&["trail-auditors", "trail-admins"]))
    else {
        return;
    };
    // The server's provider signs in server administrators (members of trail-admins there).
    let env = [
        ("TRAIL_AUTH__SSO__ISSUER", idp.issuer.as_str()),
        ("TRAIL_AUTH__SSO__CLIENT_ID", CLIENT_ID),
        ("TRAIL_AUTH__SSO__CLIENT_SECRET", CLIENT_SECRET),
        ("TRAIL_AUTH__SSO__SCOPES", r#"["email", "profile", "groups"]"#),
        ("TRAIL_AUTH__SSO__ADMIN_GROUPS", r#"["trail-admins"]"#),
    ];
    let served = Served::start_at(dir.path(), &format!("127.0.0.1:{port}"), &env);
    assert_eq!(served.base, base);
    let admin = Client::new(&base).login("admin@localhost", PASSWORD).await.unwrap();
    let group = auditors(&admin).await;

    // Settings: checked, the secret never answered back, the redirect URI to register shown.
    let bad = |body: Value| {
        let admin = admin.clone();
        async move { admin.put("/v1/orgs/default/sso", &body).await.unwrap_err() }
    };
    let good = json!({"issuer": idp.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
        "scopes": ["email", "profile", "groups"], "group_map": [{"value": "trail-auditors", "group": group}]});
    let mut plain_http = good.clone();
    plain_http["issuer"] = json!("http://idp.example.com");
    assert_eq!(bad(plain_http).await.field(), Some("issuer"));
    let mut no_secret = good.clone();
    no_secret.as_object_mut().unwrap().remove("client_secret");
    assert_eq!(bad(no_secret.clone()).await.field(), Some("client_secret"), "needed the first time");
    let mut unknown_group = good.clone();
    unknown_group["group_map"][0]["group"] = json!("no-such-group");
    assert_eq!(bad(unknown_group).await.field(), Some("group_map[0].group"));
    let saved = admin.put("/v1/orgs/default/sso", &good).await.unwrap();
    assert_eq!(saved["client_secret_set"], json!(true));
    assert_eq!(saved["redirect_uri"], json!(format!("{base}/v1/auth/sso/callback")));
    assert!(!saved.to_string().contains(CLIENT_SECRET), "the secret is never answered: {saved}");
    // Saved again without it, the stored secret is kept.
    admin.put("/v1/orgs/default/sso", &no_secret).await.unwrap();
    assert_eq!(admin.get("/v1/orgs/default/sso").await.unwrap()["client_secret_set"], json!(true));

    // A new person signs in: created, put in the mapped group, a session of this org only.
    let mut ada = Http::new(port);
    let back = ada.through_provider(&format!("{base}/v1/auth/sso?org=default"), "ada").await;
    let flow_cookie = ada.jar.get("trail_sso").cloned().expect("the flow's cookie");
    let page = ada.get(&back).await;
    assert_eq!(page.status, StatusCode::OK, "{} {}", page.location, page.body);
    assert!(page.body.contains("url=/orgs/default/logs"), "{}", page.body);
    assert!(!ada.jar.contains_key("trail_sso"), "the flow's cookie is cleared");
    let ada_api = Client::new(&base).with_token(ada.session().expect("signed in"));
    let me = ada_api.me().await.unwrap();
    assert_eq!(me["email"], json!("ada@example.com"));
    assert_eq!(me["server_admin"], json!(false), "an org's provider never makes a server administrator");
    ada_api.get("/v1/orgs/default/events?limit=1").await.unwrap();
    let members = admin.get(&format!("/v1/orgs/default/groups/{group}")).await.unwrap();
    assert!(members.to_string().contains(&me["id"].as_str().unwrap().to_string()), "{members}");
    let signed_in = admin.get("/v1/orgs/default/events?action=user.signed_in&limit=1").await.unwrap();
    assert_eq!(signed_in["events"][0]["actor"]["id"], json!("ada@example.com"));
    assert_eq!(signed_in["events"][0]["info"]["method"], json!("sso"));
    assert_eq!(signed_in["events"][0]["info"]["groups_joined"], json!([group]));

    // The same answer again, with the same flow cookie: refused before the provider is asked.
    ada.jar.insert("trail_sso".into(), flow_cookie);
    ada.jar.remove("trail_session");
    let replayed = ada.get(&back).await;
    assert_eq!(replayed.location, "/login?sso_error=sso_state_replayed&org=default");
    assert!(ada.session().is_none());
    // Without the flow cookie (another browser): refused too.
    let mut other = Http::new(port);
    assert_eq!(other.get(&back).await.location, "/login?sso_error=sso_no_flow");

    // The session reaches only its org.
    admin.post("/v1/orgs", &json!({"slug": "globex", "name": "Globex"})).await.unwrap();
    let e = ada_api.get("/v1/orgs/globex/events").await.unwrap_err();
    assert_eq!(e.status(), Some(403));

    // Password sign-in off: only sessions of the org's own provider reach it. The admin's password
    // session cannot turn it off (nor would it reach the org after).
    let off = json!({"require_mfa": false, "password_sign_in": false});
    let e = admin.put("/v1/orgs/default/sign-in", &off).await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(409), Some("sso_not_used")));
    // Ada gets the settings permission through a second mapped group, and turns it off.
    let admins_map = json!({"issuer": idp.issuer, "client_id": CLIENT_ID,
        "scopes": ["email", "profile", "groups"],
        "group_map": [{"value": "trail-auditors", "group": group}, {"value": "trail-admins", "group": "administrators"}]});
    admin.put("/v1/orgs/default/sso", &admins_map).await.unwrap();
    let mut ada = Http::new(port);
    let back = ada.through_provider(&format!("{base}/v1/auth/sso?org=default"), "ada").await;
    ada.get(&back).await;
    let ada_api = Client::new(&base).with_token(ada.session().expect("signed in"));
    let rules = ada_api.put("/v1/orgs/default/sign-in", &off).await.unwrap();
    assert_eq!(rules["password_sign_in"], json!(false));
    let e = admin.get("/v1/orgs/default/events").await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(403), Some("sso_required")), "a password session");
    ada_api.get("/v1/orgs/default/events?limit=1").await.unwrap();
    let e = ada_api.delete("/v1/orgs/default/sso").await.unwrap_err();
    assert_eq!(e.status(), Some(409), "the provider stays while it is the only way in");
    // The console sends a password session to the provider.
    let mut console = Http::new(port);
    console.jar.insert("trail_session".into(), password_token(&base).await);
    let page = console.get(&format!("{base}/orgs/default/logs")).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(page.location.starts_with("/v1/auth/sso?org=default"), "{}", page.location);
    ada_api.put("/v1/orgs/default/sign-in", &json!({"require_mfa": false})).await.unwrap();
    admin.get("/v1/orgs/default/events?limit=1").await.unwrap();

    // Server administrators sign in with the server's provider; people outside its admin group cannot.
    let mut bob = Http::new(port);
    let back = bob.through_provider(&format!("{base}/v1/auth/sso"), "bob").await;
    bob.get(&back).await;
    let bob_api = Client::new(&base).with_token(bob.session().expect("signed in"));
    assert_eq!(bob_api.me().await.unwrap()["server_admin"], json!(true));
    bob_api.post("/v1/orgs", &json!({"slug": "initech", "name": "Initech"})).await.unwrap();
    idp.users(&users(&["trail-auditors"]));
    let mut ada = Http::new(port);
    let back = ada.through_provider(&format!("{base}/v1/auth/sso"), "ada").await;
    assert_eq!(ada.get(&back).await.location, "/login?sso_error=sso_not_admin");

    // An org without a provider sends the browser back to the sign-in page.
    let mut anon = Http::new(port);
    let none = anon.get(&format!("{base}/v1/auth/sso?org=globex")).await;
    assert_eq!(none.location, "/login?sso_error=sso_not_configured&org=globex");
    let page = anon.get(&format!("{base}{}", none.location)).await;
    assert!(page.body.contains("This organization has no single sign-on"), "{}", page.body);
}

/// A new password session of the administrator (its token, for a cookie).
async fn password_token(base: &str) -> String {
    let answer: Value = reqwest::Client::new()
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"email": "admin@localhost", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["token"].as_str().unwrap().to_string()
}

/// Signs in through the sign-in page's single sign-on form and the provider's pages; the caller
/// waits for where it ends.
async fn console_sso(b: &mut Browser, base: &str, login: &str) {
    b.clear_cookies().await;
    b.goto(&format!("{base}/login")).await;
    fill(b, "#sso-org", "default").await;
    submit(b, "form[data-sso]").await;
    b.wait_for("!!document.querySelector('input[name=login]')", "the provider's login page").await;
    fill(b, "input[name=login]", login).await;
    fill(b, "input[name=password]", "any").await;
    submit(b, "form").await;
    b.wait_for(
        "!!document.querySelector('input[name=prompt][value=consent]')",
        "the provider's consent page",
    )
    .await;
    submit(b, "form").await;
}

async fn refused_with(b: &mut Browser, text: &str) {
    let shown = b
        .wait_for(
            "location.pathname === '/login' && document.querySelector('[data-sso-error]')?.textContent",
            "the refusal",
        )
        .await;
    assert!(shown.as_str().unwrap().contains(text), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_sign_on_in_the_console() {
    let Some(mut b) = Browser::launch().await else {
        eprintln!(
            "SKIPPED single_sign_on_in_the_console: Chromium is not installed (apt-get install -y chromium)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let Some(idp) = Idp::start("single_sign_on_in_the_console", &base, &users(&["trail-auditors"])) else {
        return;
    };
    let served = Served::start_at(dir.path(), &format!("127.0.0.1:{port}"), &[]);
    let admin = Client::new(&served.base).login("admin@localhost", PASSWORD).await.unwrap();
    let group = auditors(&admin).await;

    // The administrator sets the provider up on the Settings page.
    sign_in(&mut b, &base, "admin@localhost", PASSWORD).await;
    b.goto(&format!("{base}/orgs/default/admin/settings")).await;
    let shown = b.eval("document.querySelector('[data-redirect-uri]').textContent").await;
    assert_eq!(shown, json!(format!("{base}/v1/auth/sso/callback")));
    assert_eq!(b.eval(A11Y_CHECK).await, json!([]), "accessibility basics of the settings page");
    fill(&mut b, "#sso-issuer", &idp.issuer).await;
    fill(&mut b, "#sso-client", CLIENT_ID).await;
    fill(&mut b, "#sso-secret", CLIENT_SECRET).await;
    fill(&mut b, "#sso-scopes", "email profile groups").await;
    let field = b
        .eval("[...document.querySelectorAll('[data-map]')].find((el) => el.labels[0].textContent === 'Auditors').id")
        .await;
    fill(&mut b, &format!("#{}", field.as_str().unwrap()), "trail-auditors").await;
    submit(&mut b, "form[data-sso-settings]").await;
    // Saved when the API answers it (the page shows no error either).
    let mut saved = Value::Null;
    for _ in 0..50 {
        saved = admin.get("/v1/orgs/default/sso").await.unwrap();
        if saved["configured"] == json!(true) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(saved["group_map"], json!([{"value": "trail-auditors", "group": group}]), "{saved}");
    assert_eq!(saved["scopes"], json!(["email", "profile", "groups"]));
    let error = b.eval("document.querySelector('form[data-sso-settings] [data-error]').textContent").await;
    assert_eq!(error, json!(""), "the settings page shows no error");
    b.goto(&format!("{base}/login?org=default")).await;
    assert_eq!(b.eval(A11Y_CHECK).await, json!([]), "accessibility basics of the sign-in page");

    // A member of trail-auditors at the provider signs in and lands on the org's Audit Logs.
    b.clear_cookies().await;
    b.record_requests().await;
    b.goto(&format!("{base}/login")).await;
    fill(&mut b, "#sso-org", "default").await;
    submit(&mut b, "form[data-sso]").await;
    b.wait_for("!!document.querySelector('input[name=login]')", "the provider's login page").await;
    // The flow's cookie, as an attacker who copied it would have it.
    let cookies = b
        .call("Network.getCookies", json!({"urls": [format!("{base}/v1/auth/sso/callback")]}))
        .await
        .unwrap();
    let flow = cookies["cookies"].as_array().unwrap().iter().find(|c| c["name"] == "trail_sso").cloned();
    let flow = flow.expect("the flow's cookie")["value"].as_str().unwrap().to_string();
    fill(&mut b, "input[name=login]", "ada").await;
    fill(&mut b, "input[name=password]", "any").await;
    submit(&mut b, "form").await;
    b.wait_for(
        "!!document.querySelector('input[name=prompt][value=consent]')",
        "the provider's consent page",
    )
    .await;
    submit(&mut b, "form").await;
    b.wait_for(
        "location.pathname === '/orgs/default/logs' && document.readyState === 'complete'",
        "Audit Logs",
    )
    .await;
    let who = b.eval("document.body.innerText.includes('ada@example.com')").await;
    assert_eq!(who, json!(true), "signed in as the provider's person");
    let callback = b
        .requests()
        .iter()
        .find(|u| u.contains("/v1/auth/sso/callback?"))
        .expect("the provider's answer was requested")
        .clone();

    // The provider's answer replayed with the flow's cookie: refused.
    b.clear_cookies().await;
    let set = json!({"name": "trail_sso", "value": flow, "url": format!("{base}/v1/auth"), "path": "/v1/auth", "httpOnly": true});
    b.call("Network.setCookie", set).await.unwrap();
    b.goto(&callback).await;
    refused_with(&mut b, "already used").await;

    // ID tokens for another audience, or expired: refused, and recorded in the org's log.
    idp.tamper("audience");
    console_sso(&mut b, &base, "ada").await;
    refused_with(&mut b, "issued for another application").await;
    idp.tamper("expired");
    console_sso(&mut b, &base, "ada").await;
    refused_with(&mut b, "has expired").await;
    idp.tamper("");
    let failed = admin.get("/v1/orgs/default/events?action=user.sign_in_failed&limit=5").await.unwrap();
    let text = failed.to_string();
    assert!(text.contains("Invalid audiences") && text.contains("ID token expired"), "{text}");

    // Removed from the group at the provider: refused at the next sign-in, and out of the group.
    idp.users(&users(&[]));
    console_sso(&mut b, &base, "ada").await;
    refused_with(&mut b, "no group").await;
    let members = admin.get(&format!("/v1/orgs/default/groups/{group}")).await.unwrap();
    assert_eq!(members["members"], json!([]), "{members}");
    // Back in the group: signed in again.
    idp.users(&users(&["trail-auditors"]));
    console_sso(&mut b, &base, "ada").await;
    b.wait_for(
        "location.pathname === '/orgs/default/logs' && document.readyState === 'complete'",
        "Audit Logs",
    )
    .await;
}
