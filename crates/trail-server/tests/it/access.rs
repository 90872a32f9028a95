//! Authentication and isolation: credentials, scopes, orgs, sessions, cookies and CSRF.

use serde_json::json;
use trail_client::Client;
use trail_store::Store;

use crate::{ADMIN_PASSWORD, TestServer, ev};

async fn status_of<T: std::fmt::Debug>(f: impl std::future::Future<Output = trail_client::Result<T>>) -> u16 {
    f.await.unwrap_err().status().unwrap()
}

#[tokio::test]
async fn missing_and_wrong_credentials_are_401() {
    let s = TestServer::start().await;
    assert_eq!(status_of(s.anon.query("default", &[])).await, 401);
    assert_eq!(status_of(s.anon.ingest("default", &ev("a", "a.b", 1))).await, 401);
    for bad in ["garbage", "trk_nope.nope", "trs_nope.nope", ""] {
        let c = s.anon.with_token(bad);
        assert_eq!(status_of(c.query("default", &[])).await, 401, "{bad:?}");
    }
    // A real key id with a wrong secret.
    let keys = s.admin.api_keys("default").await.unwrap();
    let id = keys["api_keys"][0]["id"].as_str().unwrap();
    let forged = s.anon.with_token(format!("trk_{id}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
    assert_eq!(status_of(forged.ingest("default", &ev("a", "a.b", 1))).await, 401);
    let e = s.anon.login("admin@localhost", "wrong").await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(401), Some("invalid_credentials")));
    let e = s.anon.login("nobody@localhost", ADMIN_PASSWORD).await.unwrap_err();
    assert_eq!(e.code(), Some("invalid_credentials"), "unknown accounts answer the same");
}

#[tokio::test]
async fn keys_are_scoped_and_bound_to_their_org() {
    let s = TestServer::start().await;
    let acme_write = s.org_with_key("acme", &["events:write"]).await;
    let acme_read = s.admin.create_api_key("acme", "reader", &["events:read"]).await.unwrap();
    let acme_read = s.anon.with_token(acme_read["secret"].as_str().unwrap());
    acme_write.ingest("acme", &ev("a", "a.b", 1)).await.unwrap();

    assert_eq!(status_of(acme_write.query("acme", &[])).await, 403, "write-only key cannot read");
    assert_eq!(
        status_of(acme_read.ingest("acme", &ev("a", "a.b", 1))).await,
        403,
        "read-only key cannot write"
    );
    let mine = acme_read.query("acme", &[]).await.unwrap().events;
    assert_eq!(
        mine.iter().filter(|e| e["source"] != "trail").count(),
        1,
        "plus Trail's own records of the setup"
    );
    // Keys of one org see and change nothing of another.
    assert_eq!(status_of(acme_write.ingest("default", &ev("a", "a.b", 1))).await, 403);
    assert_eq!(status_of(acme_read.query("default", &[])).await, 403);
    assert_eq!(status_of(s.key.query("acme", &[])).await, 403);
    assert_eq!(status_of(s.key.event("acme", "anything")).await, 403);
    assert_eq!(status_of(s.key.histogram("acme", &[])).await, 403);
    // Keys cannot manage keys or act as users.
    assert_eq!(status_of(s.key.api_keys("default")).await, 403);
    assert_eq!(status_of(s.key.me()).await, 403);
    // Sessions cannot ingest: integrations use keys.
    assert_eq!(status_of(s.admin.ingest("default", &ev("a", "a.b", 1))).await, 403);
}

#[tokio::test]
async fn sessions_only_reach_orgs_their_user_belongs_to() {
    let s = TestServer::start().await;
    s.key.ingest("default", &ev("a", "a.b", 1)).await.unwrap();
    let hash = trail_server::auth::hash_password("outsider-password").unwrap();
    let t = trail_model::time::now();
    s.store.create_org("globex", "Globex", t).await.unwrap();
    let u = s.store.create_user("outsider@globex.io", &hash, false, t).await.unwrap();
    s.store.add_org_admin("globex", &u.id).await.unwrap();
    let outsider = s.anon.login("outsider@globex.io", "outsider-password").await.unwrap();
    let me = outsider.me().await.unwrap();
    assert_eq!(me["orgs"].as_array().unwrap().len(), 1);
    assert_eq!(me["orgs"][0]["slug"], "globex");
    assert_eq!(status_of(outsider.query("default", &[])).await, 403);
    assert_eq!(status_of(outsider.event("default", "x")).await, 403);
    assert_eq!(status_of(outsider.api_keys("default")).await, 403);
    assert_eq!(status_of(outsider.create_api_key("default", "x", &["events:read"])).await, 403);
    assert_eq!(status_of(outsider.create_org("evil", "Evil")).await, 403, "only server admins create orgs");
    // An admin of default cannot pull globex's user into a group: people join by invitation only.
    let pulled = s
        .admin
        .request(reqwest::Method::PUT, &format!("/v1/orgs/default/groups/administrators/members/{}", u.id))
        .send()
        .await
        .unwrap();
    assert_eq!(pulled.status(), 404);
    assert!(outsider.me().await.is_ok(), "and cannot end their sessions by removing them again");
    let globex = outsider.query("globex", &[]).await.unwrap().events;
    assert_eq!(globex.iter().map(|e| e["action"].as_str().unwrap()).collect::<Vec<_>>(), ["user.signed_in"]);
    assert_eq!(
        status_of(s.admin.query("globex", &[])).await,
        403,
        "even the server admin is not a member of globex"
    );
}

#[tokio::test]
async fn logout_revokes_and_keys_can_be_revoked() {
    let s = TestServer::start().await;
    let second = s.anon.login("admin@localhost", ADMIN_PASSWORD).await.unwrap();
    second.logout().await.unwrap();
    assert_eq!(status_of(second.me()).await, 401);
    s.admin.me().await.unwrap();

    let k = s.admin.create_api_key("default", "temp", &["events:write"]).await.unwrap();
    assert!(k["secret"].as_str().unwrap().starts_with("trk_"));
    let temp = s.anon.with_token(k["secret"].as_str().unwrap());
    temp.ingest("default", &ev("a", "a.b", 1)).await.unwrap();
    let listed = s.admin.api_keys("default").await.unwrap();
    assert!(listed.to_string().find("trk_").is_none(), "secrets are never listed");
    s.admin.revoke_api_key("default", k["id"].as_str().unwrap()).await.unwrap();
    assert_eq!(status_of(temp.ingest("default", &ev("a", "a.b", 1))).await, 401);
    assert_eq!(status_of(s.admin.revoke_api_key("default", "no-such-key")).await, 404);
    let e = s
        .admin
        .post("/v1/orgs/default/api-keys", &json!({"name": "x", "scopes": ["events:delete"]}))
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("scopes"));
}

#[tokio::test]
async fn cookie_sessions_need_the_csrf_token_to_change_state() {
    let s = TestServer::start().await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/v1/auth/login", s.base))
        .json(&json!({"email": "admin@localhost", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let body: serde_json::Value = resp.json().await.unwrap();
    let csrf = body["csrf_token"].as_str().unwrap().to_string();
    let pair = cookie.split(';').next().unwrap().to_string();
    let get = http.get(format!("{}/v1/me", s.base)).header("cookie", &pair).send().await.unwrap();
    assert_eq!(get.status(), 200, "reads work with the cookie alone");
    let url = format!("{}/v1/orgs/default/api-keys", s.base);
    let body = json!({"name": "from-console", "scopes": ["events:read"]});
    let without = http.post(&url).header("cookie", &pair).json(&body).send().await.unwrap();
    assert_eq!(without.status(), 403);
    let wrong = http
        .post(&url)
        .header("cookie", &pair)
        .header("x-csrf-token", "nope")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);
    let right = http
        .post(&url)
        .header("cookie", &pair)
        .header("x-csrf-token", &csrf)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 201);
}

#[tokio::test]
async fn server_admins_create_orgs() {
    let s = TestServer::start().await;
    let org = s.admin.create_org("acme", "Acme").await.unwrap();
    assert_eq!(org["slug"], "acme");
    assert_eq!(status_of(s.admin.create_org("acme", "Again")).await, 409);
    let e = s.admin.create_org("Bad Slug", "x").await.unwrap_err();
    assert_eq!((e.status(), e.field()), (Some(400), Some("slug")));
    let orgs = s.admin.get("/v1/orgs").await.unwrap();
    assert_eq!(orgs["orgs"].as_array().unwrap().len(), 2);
    let _: Client = s.org_with_key("globex", &["events:read"]).await;
}
