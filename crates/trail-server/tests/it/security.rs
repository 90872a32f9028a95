//! Issue 15's promises as an attacker tests them, each failing on the release before it: the sign-in
//! throttle under concurrency, password changes on the same budget, Trail's own source reserved,
//! no granting of what one does not hold, per-org export limits and fairness, authentication beside
//! slow reads, and the small leaks (file modes, answers that tell who has an account, nosniff).

use std::time::Duration;

use serde_json::{Value, json};
use trail_client::Client;
use trail_store::{Group, Permission, Role, Store};

use crate::{ADMIN_PASSWORD, TestServer, ev};

pub const PASSWORD: &str = "a long test password";

/// A user of org `default` holding exactly `perms` (through a role and a group of their own),
/// signed in.
pub async fn user_with(s: &TestServer, email: &str, perms: &[Permission]) -> (Client, String) {
    let t = trail_model::time::now();
    let hash = trail_server::auth::hash_password(PASSWORD).unwrap();
    let user = s.store.create_user(email, &hash, false, t).await.unwrap();
    let id = format!("r-{}", user.id);
    let role = Role {
        id: id.clone(),
        name: id.clone(),
        description: String::new(),
        permissions: perms.to_vec(),
        builtin: false,
    };
    s.store.create_role("default", &role).await.unwrap();
    let group = Group {
        id: format!("g-{}", user.id),
        name: format!("g-{}", user.id),
        description: String::new(),
        roles: vec![],
        members: vec![],
        builtin: false,
    };
    s.store.create_group("default", &group).await.unwrap();
    s.store.set_group_role("default", &group.id, &role.id, true).await.unwrap();
    trail_store::conformance::join(s.store.as_ref(), "default", &group.id, &user.id).await;
    (s.anon.login(email, PASSWORD).await.unwrap(), user.id)
}

async fn send(r: reqwest::RequestBuilder) -> (u16, Value) {
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn login_request(s: &TestServer, email: &str, password: &str) -> reqwest::RequestBuilder {
    s.anon
        .request(reqwest::Method::POST, "/v1/auth/login")
        .json(&json!({"email": email, "password": password}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_cannot_pass_the_account_limit() {
    let s = TestServer::start().await;
    let guesses = (0..40).map(|i| send(login_request(&s, "admin@localhost", &format!("guess number {i}"))));
    let answers = futures_util::future::join_all(guesses).await;
    let checked = answers.iter().filter(|(status, _)| *status == 401).count();
    let refused = answers
        .iter()
        .filter(|(status, b)| *status == 429 && b["error"]["code"] == "too_many_attempts")
        .count();
    assert!(
        checked <= trail_server::throttle::ACCOUNT_LIMIT,
        "{checked} of 40 concurrent guesses were checked"
    );
    assert!(refused >= 40 - trail_server::throttle::ACCOUNT_LIMIT - 2, "{answers:?}");
    assert!(answers.iter().all(|(status, _)| [401, 429, 503].contains(status)), "{answers:?}");
    let (status, _) = send(login_request(&s, "admin@localhost", ADMIN_PASSWORD)).await;
    assert_eq!(status, 429, "the account is blocked, even for the right password");
}

#[tokio::test]
async fn password_changes_are_throttled_like_sign_ins() {
    let s = TestServer::start().await;
    let (alice, _) = user_with(&s, "alice@acme.io", &[]).await;
    let change = |current: &str| {
        alice.request(reqwest::Method::POST, "/v1/me/password").json(&json!({
            "current_password": current, "new_password": "a brand new password"
        }))
    };
    for i in 0..trail_server::throttle::ACCOUNT_LIMIT {
        let (status, body) = send(change(&format!("wrong guess {i}"))).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("invalid_credentials")));
    }
    let (status, body) = send(change(PASSWORD)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_attempts")), "{body}");
    // The budget is the account's: signing in is blocked too.
    assert_eq!(send(login_request(&s, "alice@acme.io", PASSWORD)).await.0, 429);
}

#[tokio::test]
async fn oversized_emails_are_refused_before_any_work() {
    let s = TestServer::start().await;
    let long = format!("{}@example.com", "a".repeat(250));
    let (status, body) = send(login_request(&s, &long, "whatever password")).await;
    assert_eq!((status, body["error"]["field"].as_str()), (400, Some("email")), "{body}");
    // Refused before the throttle: it is not counted against the address either.
    for _ in 0..trail_server::throttle::ADDRESS_LIMIT + 5 {
        assert_eq!(send(login_request(&s, &long, "whatever password")).await.0, 400);
    }
    s.anon.login("admin@localhost", ADMIN_PASSWORD).await.unwrap();
}

#[tokio::test]
async fn trails_own_source_cannot_be_sent_and_the_api_tells_records_apart() {
    let s = TestServer::start().await;
    let mut forged = ev("mallory", "api_key.revoked", 1);
    forged["source"] = json!("trail");
    let (status, body) =
        send(s.key.request(reqwest::Method::POST, "/v1/orgs/default/events").json(&forged)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "reserved_source", "{body}");
    let mut shouting = forged.clone();
    shouting["source"] = json!(" TRAIL ");
    let batch = json!({"events": [ev("alice", "component.deployed", 1), shouting]});
    let (status, body) =
        send(s.key.request(reqwest::Method::POST, "/v1/orgs/default/events").json(&batch)).await;
    assert!(status < 300 || status == 207, "{status} {body}");
    assert_eq!(body["results"][0]["status"], "created", "{body}");
    assert_eq!(body["results"][1]["status"], "rejected", "{body}");
    assert_eq!(body["results"][1]["error"]["code"], "reserved_source", "{body}");
    assert!(s.admin.query_all("default", &[("actor", "mallory")]).await.unwrap().is_empty());

    // Trail's own records say so; sent events say not.
    s.anon.login("admin@localhost", ADMIN_PASSWORD).await.unwrap();
    let own = s.admin.query_all("default", &[("action", "user.signed_in")]).await.unwrap();
    assert!(
        !own.is_empty() && own.iter().all(|e| e["self_audit"] == true && e["source"] == "trail"),
        "{own:?}"
    );
    let sent = s.admin.query_all("default", &[("actor", "alice")]).await.unwrap();
    assert_eq!(sent[0]["self_audit"], false);
    let one = s.admin.event("default", own[0]["id"].as_str().unwrap()).await.unwrap();
    assert_eq!(one["self_audit"], true);
    let signed_in = reqwest::Client::new()
        .post(format!("{}/v1/auth/login", s.base))
        .json(&json!({"email": "admin@localhost", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let page = reqwest::Client::new()
        .get(format!("{}/orgs/default/logs/{}", s.base, own[0]["id"].as_str().unwrap()))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Trail (its own record)"), "the console says who recorded it: {page}");
}

#[tokio::test]
async fn nobody_grants_a_permission_they_do_not_hold() {
    let s = TestServer::start().await;
    let (um, um_id) = user_with(&s, "um@acme.io", &[Permission::UserManagement]).await;
    let cannot = |(status, body): (u16, Value)| {
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("cannot_grant")), "{body}");
    };
    // Joining Administrators (every permission) through a group membership…
    cannot(
        send(um.request(
            reqwest::Method::PUT,
            &format!("/v1/orgs/default/groups/administrators/members/{um_id}"),
        ))
        .await,
    );
    // …giving one's own group the admin role…
    cannot(
        send(um.request(reqwest::Method::PUT, &format!("/v1/orgs/default/groups/g-{um_id}/roles/admin")))
            .await,
    );
    // …a role with a permission one lacks, new or widened…
    cannot(
        send(
            um.request(reqwest::Method::POST, "/v1/orgs/default/roles")
                .json(&json!({"name": "Settings", "permissions": ["ORG-SETTINGS"]})),
        )
        .await,
    );
    cannot(
        send(
            um.request(reqwest::Method::PATCH, &format!("/v1/orgs/default/roles/r-{um_id}"))
                .json(&json!({"permissions": ["USER-MANAGEMENT", "LOG-MANAGEMENT"]})),
        )
        .await,
    );
    // …or an invitation into a group that holds more.
    cannot(
        send(
            um.request(reqwest::Method::POST, "/v1/orgs/default/invitations")
                .json(&json!({"emails": ["friend@acme.io"], "groups": ["administrators"]})),
        )
        .await,
    );
    let perms = s.store.permissions("default", &um_id).await.unwrap().unwrap();
    assert_eq!(perms, vec![Permission::UserManagement], "nothing was granted");
    // What one holds can be granted.
    let (status, _) = send(
        um.request(reqwest::Method::POST, "/v1/orgs/default/invitations")
            .json(&json!({"emails": ["friend@acme.io"], "groups": [format!("g-{um_id}")]})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = send(
        um.request(reqwest::Method::POST, "/v1/orgs/default/roles")
            .json(&json!({"name": "Managers", "permissions": ["USER-MANAGEMENT"]})),
    )
    .await;
    assert_eq!(status, 201);

    // A key that reads events is LOG-MANAGEMENT in another form.
    let (km, _) = user_with(&s, "km@acme.io", &[Permission::KeyManagement]).await;
    cannot(
        send(
            km.request(reqwest::Method::POST, "/v1/orgs/default/api-keys")
                .json(&json!({"name": "r", "scopes": ["events:read"]})),
        )
        .await,
    );
    let (status, _) = send(
        km.request(reqwest::Method::POST, "/v1/orgs/default/api-keys")
            .json(&json!({"name": "w", "scopes": ["events:write"]})),
    )
    .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn removing_someone_who_is_not_a_member_is_404_and_writes_nothing() {
    let s = TestServer::start().await;
    let (_, bob) = user_with(&s, "bob@acme.io", &[]).await;
    let before = s.store.tree_size("default").await.unwrap();
    let (status, body) =
        send(s.admin.request(
            reqwest::Method::DELETE,
            &format!("/v1/orgs/default/groups/administrators/members/{bob}"),
        ))
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    assert_eq!(s.store.tree_size("default").await.unwrap(), before, "nothing was written to the log");
    let (status, _) = send(
        s.admin.request(reqwest::Method::DELETE, &format!("/v1/orgs/default/groups/g-{bob}/members/{bob}")),
    )
    .await;
    assert_eq!(status, 204, "a member is removed as before");
}

#[tokio::test]
async fn accepting_an_invitation_does_not_name_an_existing_account() {
    let s = TestServer::start().await;
    let (_, _) = user_with(&s, "known@acme.io", &[]).await;
    let invite = |email: &str| {
        let admin = s.admin.clone();
        let email = email.to_string();
        async move {
            let v = admin
                .post("/v1/orgs/default/invitations", &json!({"emails": [email], "groups": []}))
                .await
                .unwrap();
            v["invitations"][0]["accept_url"].as_str().unwrap().rsplit('/').next().unwrap().to_string()
        }
    };
    let accept = |token: String, body: Value| {
        send(s.anon.request(reqwest::Method::POST, &format!("/v1/invitations/{token}/accept")).json(&body))
    };
    // Without a password both answer the same; nothing names the account.
    let (known, new) = (invite("known@acme.io").await, invite("new@acme.io").await);
    let a = accept(known.clone(), json!({})).await;
    let b = accept(new.clone(), json!({})).await;
    assert_eq!((a.0, &a.1["error"]["code"]), (b.0, &b.1["error"]["code"]), "{a:?} {b:?}");
    assert!(!a.1.to_string().contains("known@acme.io"), "{a:?}");
    // The existing account joins with its own password, never another's.
    let wrong = accept(known.clone(), json!({"password": "someone else's password"})).await;
    assert_eq!(wrong.0, 401, "{wrong:?}");
    assert!(!wrong.1.to_string().contains("known@acme.io"), "{wrong:?}");
    let ok = accept(known, json!({"password": PASSWORD})).await;
    assert_eq!((ok.0, ok.1["email"].as_str()), (200, Some("known@acme.io")), "{ok:?}");
    let ok = accept(new, json!({"password": "the newcomer's password"})).await;
    assert_eq!((ok.0, ok.1["email"].as_str()), (200, Some("new@acme.io")), "{ok:?}");
}

async fn create_export(c: &Client, org: &str, name: &str) -> (u16, Value) {
    send(
        c.request(reqwest::Method::POST, &format!("/v1/orgs/{org}/exports"))
            .json(&json!({"name": name, "format": "csv"})),
    )
    .await
}

#[tokio::test]
async fn one_org_cannot_fill_the_export_queue_or_make_others_wait() {
    let s = TestServer::start().await;
    let globex = s.org_with_key("globex", &["events:write", "events:read"]).await;
    let limit = trail_server::Settings::default().exports.max_pending_per_org;
    let mut ids = Vec::new();
    let mut refused = None;
    for i in 0..limit + 5 {
        let (status, body) = create_export(&s.key, "default", &format!("e{i}")).await;
        match status {
            202 => ids.push(body["id"].as_str().unwrap().to_string()),
            _ => {
                refused = Some((status, body));
                break;
            }
        }
    }
    let (status, body) = refused.expect("the org's queue is bounded");
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_exports")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("pending or running"), "{body}");
    // The other org is not behind the first one's queue.
    let (status, theirs) = create_export(&globex, "globex", "theirs").await;
    assert_eq!(status, 202, "{theirs}");
    let theirs = theirs["id"].as_str().unwrap().to_string();
    let started = |org: &'static str, id: String| {
        let c = if org == "globex" { globex.clone() } else { s.key.clone() };
        async move {
            for _ in 0..400 {
                let e = c.get(&format!("/v1/orgs/{org}/exports/{id}")).await.unwrap();
                if e["status"] == "completed" {
                    return e["started_at"].as_str().unwrap().to_string();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("export {id} did not complete");
        }
    };
    let theirs_started = started("globex", theirs).await;
    let last_started = started("default", ids.last().unwrap().clone()).await;
    assert!(
        theirs_started < last_started,
        "globex's export started {theirs_started}, after default's last at {last_started}"
    );
}

#[tokio::test]
async fn export_bytes_kept_per_org_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = trail_server::Settings::default();
    settings.exports.max_bytes_per_org = 1;
    let s = TestServer::start_in(dir, settings).await;
    s.key.ingest("default", &ev("alice", "component.deployed", 1)).await.unwrap();
    let (_, e) = create_export(&s.key, "default", "too big").await;
    let done = crate::exports::wait_done(&s, e["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(done["error"].as_str().unwrap().contains("max_bytes_per_org"), "{done}");
    // A completed export that holds the org's budget refuses the next.
    let mut kept = s.store.export("default", e["id"].as_str().unwrap()).await.unwrap().unwrap();
    kept.status = trail_store::ExportStatus::Completed;
    kept.size_bytes = 10;
    s.store.update_export(&kept).await.unwrap();
    let (status, body) = create_export(&s.key, "default", "next").await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_exports")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("bytes of export files"), "{body}");
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_and_export_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let s = TestServer::start().await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(s.dir.path()), 0o700);
    assert_eq!(mode(&s.dir.path().join("trail.db")), 0o600);
    assert_eq!(mode(&s.dir.path().join("trail-index.db")), 0o600, "the full-text index holds event text");
    s.key.ingest("default", &ev("alice", "component.deployed", 1)).await.unwrap();
    let (_, e) = create_export(&s.key, "default", "private").await;
    let id = e["id"].as_str().unwrap();
    assert_eq!(crate::exports::wait_done(&s, id).await["status"], "completed");
    assert_eq!(mode(&s.dir.path().join("exports")), 0o700);
    assert_eq!(mode(&s.dir.path().join("exports").join(format!("{id}.csv"))), 0o600);
}

#[cfg(unix)]
#[tokio::test]
async fn a_data_directory_written_with_the_umask_is_tightened_at_open() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    drop(trail_store_sqlite::SqliteStore::open(dir.path()).unwrap());
    let set = |p: std::path::PathBuf, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    set(dir.path().to_path_buf(), 0o755);
    set(dir.path().join("trail.db"), 0o644);
    set(dir.path().join("trail-index.db"), 0o644);
    drop(trail_store_sqlite::SqliteStore::open(dir.path()).unwrap());
    let mode = |p: std::path::PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(dir.path().to_path_buf()), mode(dir.path().join("trail.db"))), (0o700, 0o600));
    assert_eq!(mode(dir.path().join("trail-index.db")), 0o600);
}

#[tokio::test]
async fn plain_text_answers_are_not_sniffed() {
    let s = TestServer::start().await;
    for path in ["/v1/orgs/default/events", "/no/such/route", "/login", "/v1/log-key"] {
        let r = s.anon.request(reqwest::Method::GET, path).send().await.unwrap();
        assert_eq!(
            r.headers().get("x-content-type-options").map(|v| v.to_str().unwrap()),
            Some("nosniff"),
            "{path}"
        );
    }
    // axum's own text/plain rejection (a body that is not JSON where JSON is required).
    let r = s
        .key
        .request(reqwest::Method::POST, "/v1/orgs/default/events")
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
}
