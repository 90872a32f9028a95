//! The access model end to end: roles, groups and invitations as an administrator uses them,
//! sign-in throttling, session lifetime, and Trail's own audit trail of all of it.

use std::time::Duration;

use serde_json::json;
use trail_client::Client;
use trail_store::{Session, Store};

use crate::{ADMIN_PASSWORD, TestServer, ev};

async fn log_actions(c: &Client) -> Vec<String> {
    let events = c.query_all("default", &[("source", "trail"), ("limit", "1000")]).await.unwrap();
    events.iter().rev().map(|e| e["action"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn an_auditor_is_invited_works_and_loses_access_at_once() {
    let s = TestServer::start().await;
    s.key.ingest("default", &ev("alice", "component.deployed", 5)).await.unwrap();
    let role = s
        .admin
        .post(
            "/v1/orgs/default/roles",
            &json!({"name": "Auditor", "description": "reads audit logs", "permissions": ["LOG-MANAGEMENT"]}),
        )
        .await
        .unwrap();
    assert_eq!((role["name"].as_str(), role["builtin"].as_bool()), (Some("Auditor"), Some(false)));
    let group = s
        .admin
        .post("/v1/orgs/default/groups", &json!({"name": "Auditors", "description": "external audit"}))
        .await
        .unwrap();
    let (role_id, group_id) = (role["id"].as_str().unwrap(), group["id"].as_str().unwrap());
    s.admin
        .request(reqwest::Method::PUT, &format!("/v1/orgs/default/groups/{group_id}/roles/{role_id}"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let inv = s
        .admin
        .post(
            "/v1/orgs/default/invitations",
            &json!({"emails": ["Auditor@Example.com"], "groups": [group_id]}),
        )
        .await
        .unwrap();
    let inv = &inv["invitations"][0];
    assert_eq!(inv["email"], "auditor@example.com");
    let url = inv["accept_url"].as_str().unwrap();
    assert!(url.starts_with(&s.base) && url.contains("/invitations/"), "{url}");
    let token = url.rsplit('/').next().unwrap();
    let pending = s.admin.get("/v1/orgs/default/invitations").await.unwrap();
    assert_eq!(pending["invitations"][0]["status"], "pending");
    assert!(!pending.to_string().contains(token.split('.').nth(1).unwrap()), "the token is never listed");

    let e = s
        .anon
        .post(&format!("/v1/invitations/{token}/accept"), &json!({"password": "short"}))
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("password"));
    let user = s
        .anon
        .post(&format!("/v1/invitations/{token}/accept"), &json!({"password": "auditor password 1"}))
        .await
        .unwrap();
    assert_eq!(user["email"], "auditor@example.com");
    let again = s
        .anon
        .post(&format!("/v1/invitations/{token}/accept"), &json!({"password": "auditor password 1"}))
        .await
        .unwrap_err();
    assert_eq!(again.status(), Some(404), "single use");

    let auditor = s.anon.login("auditor@example.com", "auditor password 1").await.unwrap();
    let me = auditor.me().await.unwrap();
    assert_eq!(me["orgs"][0]["permissions"], json!(["LOG-MANAGEMENT"]));
    assert_eq!(
        auditor.query("default", &[("actor", "alice")]).await.unwrap().events.len(),
        1,
        "can read the logs"
    );
    assert_eq!(
        auditor.get("/v1/orgs/default/users").await.unwrap_err().status(),
        Some(403),
        "cannot manage users"
    );
    assert_eq!(
        auditor.create_api_key("default", "k", &["events:read"]).await.unwrap_err().status(),
        Some(403)
    );
    let users = s.admin.get("/v1/orgs/default/users").await.unwrap();
    let listed = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "auditor@example.com")
        .unwrap()
        .clone();
    assert_eq!(
        (listed["groups"].clone(), listed["permissions"].clone()),
        (json!([group_id]), json!(["LOG-MANAGEMENT"]))
    );

    s.admin
        .request(reqwest::Method::DELETE, &format!("/v1/orgs/default/groups/{group_id}/roles/{role_id}"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    assert_eq!(
        auditor.query("default", &[]).await.unwrap_err().status(),
        Some(403),
        "removal takes effect on the next request"
    );

    let actions = log_actions(&s.admin).await;
    for expected in [
        "role.created",
        "group.created",
        "group.role_added",
        "user.invited",
        "invitation.accepted",
        "user.signed_in",
        "group.role_removed",
    ] {
        assert!(actions.iter().any(|a| a == expected), "{expected} missing from {actions:?}");
    }
    let accepted = s.admin.query_all("default", &[("action", "invitation.accepted")]).await.unwrap();
    assert_eq!(accepted[0]["actor"]["id"], "auditor@example.com");
    assert_eq!(accepted[0]["source"], "trail");
    let created = s.admin.query_all("default", &[("action", "role.created")]).await.unwrap();
    assert_eq!(
        (created[0]["actor"]["id"].as_str(), created[0]["actor"]["ip"].as_str()),
        (Some("admin@localhost"), Some("127.0.0.1"))
    );
}

#[tokio::test]
async fn repeated_wrong_passwords_are_throttled_and_recorded() {
    let s = TestServer::start().await;
    let t = trail_model::time::now();
    let hash = trail_server::auth::hash_password("bob's real password").unwrap();
    let bob = s.store.create_user("bob@acme.io", &hash, false, t).await.unwrap();
    s.store.add_org_admin("default", &bob.id).await.unwrap();
    for _ in 0..trail_server::throttle::ACCOUNT_LIMIT {
        let e = s.anon.login("bob@acme.io", "guess").await.unwrap_err();
        assert_eq!(e.code(), Some("invalid_credentials"));
    }
    let r = s
        .anon
        .request(reqwest::Method::POST, "/v1/auth/login")
        .json(&json!({"email": "bob@acme.io", "password": "bob's real password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "even the right password waits out the window");
    let wait: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(wait > 0 && wait <= 900, "{wait}");
    // Other accounts are unaffected.
    s.anon.login("admin@localhost", ADMIN_PASSWORD).await.unwrap();
    // Failures are recorded without making the caller wait (the wait would reveal that the account
    // exists), so give the records a moment; refusals after the first are not recorded at all.
    let mut failed = Vec::new();
    for _ in 0..50 {
        failed = s.admin.query_all("default", &[("action", "user.sign_in_failed")]).await.unwrap();
        if failed.len() > trail_server::throttle::ACCOUNT_LIMIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..3 {
        let r = s
            .anon
            .request(reqwest::Method::POST, "/v1/auth/login")
            .json(&json!({"email": "bob@acme.io", "password": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = s.admin.query_all("default", &[("action", "user.sign_in_failed")]).await.unwrap();
    assert_eq!(again.len(), failed.len(), "refused attempts do not grow the log");
    assert_eq!(failed.len(), trail_server::throttle::ACCOUNT_LIMIT + 1);
    assert!(failed.iter().all(|e| e["actor"]["id"] == "bob@acme.io" && e["outcome"] == "failure"));
    assert!(failed.iter().any(|e| e["reason"].as_str().unwrap().contains("throttled")));
}

#[tokio::test]
async fn sessions_end_when_idle_expired_removed_or_the_password_changes() {
    let s = TestServer::start().await;
    let t = trail_model::time::now();
    let hash = trail_server::auth::hash_password("carol password 1").unwrap();
    let carol = s.store.create_user("carol@acme.io", &hash, false, t).await.unwrap();
    s.store.add_org_admin("default", &carol.id).await.unwrap();
    let token = |id: &str| format!("trs_{id}.c2VjcmV0");
    let session = |id: &str, last_seen: i64, expires_at: i64| Session {
        id: id.into(),
        user_id: carol.id.clone(),
        secret_hash: trail_server::auth::secret_hash("c2VjcmV0"),
        created_at: t - 1,
        expires_at,
        last_seen,
        method: "password".into(),
    };
    s.store.create_session(&session("fresh", t, t + 3_600_000_000)).await.unwrap();
    s.store.create_session(&session("idle", t - 2 * 3_600_000_000, t + 3_600_000_000)).await.unwrap();
    s.store.create_session(&session("old", t, t - 1)).await.unwrap();
    assert!(s.anon.with_token(token("fresh")).me().await.is_ok());
    assert_eq!(s.anon.with_token(token("idle")).me().await.unwrap_err().status(), Some(401), "idle for 2 h");
    assert_eq!(
        s.anon.with_token(token("old")).me().await.unwrap_err().status(),
        Some(401),
        "past its lifetime"
    );

    // A password change ends every other session, and the old password stops working.
    let one = s.anon.login("carol@acme.io", "carol password 1").await.unwrap();
    let two = s.anon.login("carol@acme.io", "carol password 1").await.unwrap();
    let e = one
        .post("/v1/me/password", &json!({"current_password": "nope", "new_password": "carol password 2"}))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403));
    one.post(
        "/v1/me/password",
        &json!({"current_password": "carol password 1", "new_password": "carol password 2"}),
    )
    .await
    .unwrap();
    assert!(one.me().await.is_ok(), "the session that changed it stays");
    assert_eq!(two.me().await.unwrap_err().status(), Some(401));
    assert!(s.anon.login("carol@acme.io", "carol password 1").await.is_err());
    let three = s.anon.login("carol@acme.io", "carol password 2").await.unwrap();

    // Removing the user from the org ends their sessions.
    s.admin.delete(&format!("/v1/orgs/default/users/{}", carol.id)).await.unwrap();
    assert_eq!(three.me().await.unwrap_err().status(), Some(401));
    let actions = log_actions(&s.admin).await;
    assert!(
        actions.contains(&"user.password_changed".to_string())
            && actions.contains(&"user.deleted".to_string()),
        "{actions:?}"
    );
}

#[tokio::test]
async fn the_org_always_keeps_an_administrator_and_built_ins_stay() {
    let s = TestServer::start().await;
    let me = s.admin.me().await.unwrap();
    let my_id = me["id"].as_str().unwrap();
    let e =
        s.admin.delete(&format!("/v1/orgs/default/groups/administrators/members/{my_id}")).await.unwrap_err();
    assert_eq!(e.status(), Some(409));
    let e = s.admin.delete(&format!("/v1/orgs/default/users/{my_id}")).await.unwrap_err();
    assert_eq!(e.status(), Some(409));
    assert_eq!(s.admin.delete("/v1/orgs/default/roles/admin").await.unwrap_err().status(), Some(409));
    assert_eq!(
        s.admin.delete("/v1/orgs/default/groups/administrators").await.unwrap_err().status(),
        Some(409)
    );
    assert_eq!(
        s.admin.delete("/v1/orgs/default/groups/administrators/roles/admin").await.unwrap_err().status(),
        Some(409)
    );
    let e = s
        .admin
        .post("/v1/orgs/default/roles", &json!({"name": "X", "permissions": ["LOG-DELETION"]}))
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("permissions"));
    let e = s
        .admin
        .post("/v1/orgs/default/roles", &json!({"name": "admin", "permissions": []}))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "role names are unique");
    let e = s
        .admin
        .post("/v1/orgs/default/invitations", &json!({"emails": ["x@y.z"], "groups": ["no-such-group"]}))
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("groups"));
    let e = s
        .admin
        .post("/v1/orgs/default/invitations", &json!({"emails": ["not-an-email"], "groups": []}))
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("emails"));
}

/// A real SMTP conversation with a minimal relay on 127.0.0.1 that records what it is sent.
async fn smtp_sink() -> (u16, tokio::sync::oneshot::Receiver<String>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (r, mut w) = stream.into_split();
        let mut lines = BufReader::new(r).lines();
        w.write_all(b"220 sink ready\r\n").await.unwrap();
        let mut transcript = String::new();
        let mut in_data = false;
        while let Some(line) = lines.next_line().await.unwrap() {
            transcript.push_str(&line);
            transcript.push('\n');
            let reply: &[u8] = if in_data {
                if line == "." {
                    in_data = false;
                    b"250 queued\r\n"
                } else {
                    continue;
                }
            } else if line.starts_with("EHLO") {
                b"250-sink\r\n250 OK\r\n"
            } else if line == "DATA" {
                in_data = true;
                b"354 go ahead\r\n"
            } else if line == "QUIT" {
                w.write_all(b"221 bye\r\n").await.unwrap();
                break;
            } else {
                b"250 OK\r\n"
            };
            w.write_all(reply).await.unwrap();
        }
        let _ = tx.send(transcript);
    });
    (port, rx)
}

#[tokio::test]
async fn invitations_are_emailed_when_smtp_is_configured() {
    let (port, transcript) = smtp_sink().await;
    let mut settings = trail_server::Settings::default();
    settings.smtp.host = "127.0.0.1".into();
    settings.smtp.port = port;
    settings.smtp.from = "trail@acme.io".into();
    settings.public_url = "https://trail.acme.io/".into();
    let s = TestServer::start_in(tempfile::tempdir().unwrap(), settings).await;
    let inv = s
        .admin
        .post(
            "/v1/orgs/default/invitations",
            &json!({"emails": ["dana@acme.io"], "groups": ["administrators"]}),
        )
        .await
        .unwrap();
    let url = inv["invitations"][0]["accept_url"].as_str().unwrap().to_string();
    assert!(url.starts_with("https://trail.acme.io/invitations/"), "{url}");
    let got: String = tokio::time::timeout(Duration::from_secs(10), transcript).await.unwrap().unwrap();
    assert!(got.contains("MAIL FROM:<trail@acme.io>") && got.contains("RCPT TO:<dana@acme.io>"), "{got}");
    // The body is quoted-printable (long lines), as mail clients read it.
    let body = got.replace("=\n", "").replace("=3D", "=");
    assert!(body.contains(&url), "the mail carries the accept link: {got}");
}

#[tokio::test]
async fn api_keys_show_when_they_were_last_used() {
    let s = TestServer::start().await;
    let k = s.admin.create_api_key("default", "ci", &["events:write"]).await.unwrap();
    assert!(k["last_used_at"].is_null());
    let key = s.anon.with_token(k["secret"].as_str().unwrap());
    key.ingest("default", &ev("a", "a.b", 1)).await.unwrap();
    // Uses are written in batches every few seconds.
    for _ in 0..100 {
        let keys = s.admin.api_keys("default").await.unwrap();
        let listed =
            keys["api_keys"].as_array().unwrap().iter().find(|x| x["id"] == k["id"]).unwrap().clone();
        if !listed["last_used_at"].is_null() {
            assert!(listed["last_used_at"].as_str().unwrap() >= k["created_at"].as_str().unwrap());
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("last_used_at was never recorded");
}

#[tokio::test]
async fn api_keys_can_expire() {
    let s = TestServer::start().await;
    let soon = trail_model::time::format_rfc3339(trail_model::time::now() + 1_500_000);
    let k = s
        .admin
        .post(
            "/v1/orgs/default/api-keys",
            &json!({"name": "short-lived", "scopes": ["events:write"], "expires_at": soon}),
        )
        .await
        .unwrap();
    assert_eq!(k["expires_at"], json!(soon));
    let key = s.anon.with_token(k["secret"].as_str().unwrap());
    key.ingest("default", &ev("a", "a.b", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        key.ingest("default", &ev("a", "a.b", 1)).await.unwrap_err().status(),
        Some(401),
        "expired keys stop working"
    );
    let past = trail_model::time::format_rfc3339(trail_model::time::now() - 1);
    let e = s
        .admin
        .post(
            "/v1/orgs/default/api-keys",
            &json!({"name": "x", "scopes": ["events:write"], "expires_at": past}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("expires_at"));
}
