//! Viewer tokens (issue #21): minted by a `viewer:mint` key, they read one org through a fixed filter
//! that cannot be widened, export only when minted to (and see only their user's exports), stop at
//! expiry or revocation, and everything done with them is recorded with the host product's user as
//! the actor. The embed page's framing follows the org's allowed origins.

use std::time::Duration;

use serde_json::{Value, json};
use trail_client::Client;

use crate::{TestServer, ev};

async fn mint_key(s: &TestServer) -> Client {
    let k = s.admin.create_api_key("default", "host backend", &["viewer:mint"]).await.unwrap();
    s.anon.with_token(k["secret"].as_str().unwrap())
}

async fn mint(key: &Client, body: Value) -> (Value, Client) {
    let minted = key.post("/v1/orgs/default/viewer-tokens", &body).await.unwrap();
    let viewer = key.with_token(minted["token"].as_str().unwrap());
    (minted, viewer)
}

/// Events of two projects: 6 in payments, 4 in billing.
async fn seed(s: &TestServer) {
    let mut events = Vec::new();
    for i in 0..10 {
        let mut e = ev(&format!("user{i}"), "component.deployed", 5);
        e["project"] = json!(if i < 6 { "payments" } else { "billing" });
        e["id"] = json!(format!("e{i}"));
        events.push(e);
    }
    s.key.ingest_batch("default", &events).await.unwrap();
}

fn code(e: &trail_client::ClientError) -> (Option<u16>, Option<&str>, Option<&str>) {
    (e.status(), e.code(), e.field())
}

#[tokio::test]
async fn minting_checks_what_it_is_given() {
    let s = TestServer::start().await;
    let key = mint_key(&s).await;
    let url = "/v1/orgs/default/viewer-tokens";
    let bad = [
        (json!({"user": {"id": "u"}, "ttl_secs": 3601}), "ttl_secs"),
        (json!({"user": {"id": " "}}), "user.id"),
        (json!({"user": {"id": "u", "email": "not an address"}}), "user.email"),
        (json!({"user": {"id": "u"}, "filter": {"q": "free text"}}), "filter.q"),
        (json!({"user": {"id": "u"}, "filter": {"outcome": "maybe"}}), "filter.outcome"),
        (json!({"user": {"id": "u"}, "filter": {"project": ""}}), "filter.project"),
        // A field without a value would fix nothing: the whole org would be open.
        (json!({"user": {"id": "u"}, "filter": {"project": null}}), "filter.project"),
        (json!({"user": {"id": "u"}, "filter": {"project": []}}), "filter.project"),
        (json!({"user": {"id": "u"}, "permissions": ["view", "delete"]}), "permissions"),
        (json!({"user": {"id": "u"}, "lifetime": 5}), "lifetime"),
    ];
    for (body, field) in bad {
        let e = key.post(url, &body).await.unwrap_err();
        assert_eq!((e.status(), e.field()), (Some(400), Some(field)), "{body}: {e:?}");
    }
    // People cannot mint, not even the admin; another org's key cannot mint here.
    let e = s.admin.post(url, &json!({"user": {"id": "u"}})).await.unwrap_err();
    assert_eq!(e.status(), Some(403));
    let (minted, _) =
        mint(&key, json!({"user": {"id": "u-1", "name": "Ada", "email": "ada@example.com"}})).await;
    assert!(minted["token"].as_str().unwrap().starts_with("trv_default."), "{minted}");
    assert_eq!(minted["permissions"], json!(["view"]));
    assert_eq!(minted["embed_path"], "/embed/orgs/default/logs");
    let expires = trail_model::time::parse_rfc3339(minted["expires_at"].as_str().unwrap()).unwrap();
    let ttl = (expires - trail_model::time::now()) / 1_000_000;
    assert!((890..=900).contains(&ttl), "default lifetime 15 minutes, got {ttl} s");
    // Listed without its secret; the mint is in the org's log with the key as the actor.
    let list = key.get(url).await.unwrap();
    assert_eq!(list["viewer_tokens"][0]["id"], minted["id"]);
    assert!(list.to_string().find("trv_").is_none(), "no token in the list: {list}");
    let log = s.admin.query_all("default", &[("action", "viewer_token.created")]).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["actor"]["type"], "service");
    assert_eq!(log[0]["info"]["for"], "u-1");
    assert!(!log[0].to_string().contains(minted["token"].as_str().unwrap()), "the token is never recorded");
}

#[tokio::test]
async fn a_fixed_filter_narrows_every_read_and_cannot_be_widened() {
    let s = TestServer::start().await;
    seed(&s).await;
    let key = mint_key(&s).await;
    let (_, viewer) =
        mint(&key, json!({"user": {"id": "u-1", "name": "Ada"}, "filter": {"project": "payments"}})).await;

    let all = viewer.query_all("default", &[]).await.unwrap();
    assert_eq!(all.len(), 6, "only payments");
    assert!(all.iter().all(|e| e["project"] == "payments"));
    let narrower = viewer.query_all("default", &[("project", "payments"), ("actor", "user1")]).await.unwrap();
    assert_eq!(narrower.len(), 1);
    let e = viewer.query("default", &[("project", "billing")]).await.unwrap_err();
    assert_eq!(code(&e), (Some(403), Some("outside_viewer_filter"), Some("project")));
    let e = viewer.query("default", &[("project", "payments"), ("project", "billing")]).await.unwrap_err();
    assert_eq!(e.status(), Some(403), "one value outside is enough");
    let h = viewer.histogram("default", &[]).await.unwrap();
    let counted: u64 = h["buckets"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, 6, "the histogram counts what the filter admits");
    // By id: an event outside the filter is not there; one inside comes with its proof.
    let e = viewer.event("default", "e7").await.unwrap_err();
    assert_eq!(e.status(), Some(404));
    let one = viewer.event("default", "e1").await.unwrap();
    assert_eq!(one["project"], "payments");
    assert!(one.get("proof_pending").is_some());
    // Proofs and the checkpoint serve the integrity badge.
    for _ in 0..50 {
        if viewer.get_text("/v1/orgs/default/checkpoint").await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(viewer.get_text("/v1/orgs/default/checkpoint").await.is_ok());
    // Nothing else: the org's keys, settings, the feed, another org.
    for path in
        ["/v1/orgs/default/api-keys", "/v1/orgs/default/settings", "/v1/orgs/default/events/feed", "/v1/me"]
    {
        assert_eq!(viewer.get(path).await.unwrap_err().status(), Some(403), "{path}");
    }
    s.admin.create_org("globex", "Globex").await.unwrap();
    assert_eq!(viewer.query("globex", &[]).await.unwrap_err().status(), Some(403));
    // Its reads are recorded with the host product's user as the actor.
    let searched =
        s.admin.query_all("default", &[("action", "log.searched"), ("actor", "u-1")]).await.unwrap();
    assert!(!searched.is_empty());
    assert_eq!(searched[0]["actor"]["name"], "Ada");
    assert!(searched[0]["info"]["viewer_token"].is_string(), "{}", searched[0]);
    assert_eq!(searched[0]["info"]["filters"]["project"], "payments", "the narrowed filter is what was run");
}

#[tokio::test]
async fn exports_need_the_permission_and_hold_only_the_filtered_events() {
    let s = TestServer::start().await;
    seed(&s).await;
    let key = mint_key(&s).await;
    let body = |filters: Value| json!({"name": "mine", "format": "json", "filters": filters});
    let (_, view_only) = mint(&key, json!({"user": {"id": "u-1"}, "filter": {"project": "payments"}})).await;
    let e = view_only.post("/v1/orgs/default/exports", &body(json!({}))).await.unwrap_err();
    assert_eq!(e.status(), Some(403));

    // An export of the admin's own is not the viewer's to see.
    let theirs = s.admin.post("/v1/orgs/default/exports", &body(json!({}))).await.unwrap();
    let (_, viewer) = mint(
        &key,
        json!({"user": {"id": "u-2"}, "permissions": ["view", "export"], "filter": {"project": "payments"}}),
    )
    .await;
    let e = viewer.post("/v1/orgs/default/exports", &body(json!({"project": "billing"}))).await.unwrap_err();
    assert_eq!(code(&e), (Some(403), Some("outside_viewer_filter"), Some("filters.project")));
    let mine = viewer
        .post("/v1/orgs/default/exports", &body(json!({"actor": ["user1", "user2", "user7"]})))
        .await
        .unwrap();
    assert_eq!(mine["filters"]["project"], "payments", "the stored filters are narrowed: {mine}");
    assert_eq!(mine["requested_by"], "viewer:u-2");
    let id = mine["id"].as_str().unwrap();
    crate::exports::wait_done(&s, id).await;
    let listed = viewer.get("/v1/orgs/default/exports").await.unwrap();
    let ids: Vec<&str> =
        listed["exports"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [id], "only this user's exports");
    let other = format!("/v1/orgs/default/exports/{}", theirs["id"].as_str().unwrap());
    assert_eq!(viewer.get(&other).await.unwrap_err().status(), Some(404));
    let file = viewer.get_text(&format!("/v1/orgs/default/exports/{id}/download")).await.unwrap();
    let actors: Vec<String> = file
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["actor"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(actors.len(), 2, "user7 is in billing: {file}");
    assert!(actors.contains(&"user1".to_string()) && actors.contains(&"user2".to_string()));
    let downloaded = s.admin.query_all("default", &[("action", "export.downloaded")]).await.unwrap();
    assert_eq!(downloaded[0]["actor"]["id"], "u-2");
    // The same user id in another tenant's token (another project) sees none of these exports, and a
    // token without export sees no history at all.
    let (_, other_tenant) = mint(
        &key,
        json!({"user": {"id": "u-2"}, "permissions": ["view", "export"], "filter": {"project": "billing"}}),
    )
    .await;
    let listed = other_tenant.get("/v1/orgs/default/exports").await.unwrap();
    assert_eq!(listed["exports"], json!([]), "another tenant's exports stay hidden");
    let e = other_tenant.get_text(&format!("/v1/orgs/default/exports/{id}/download")).await.unwrap_err();
    assert_eq!(e.status(), Some(404));
    let (_, no_export) = mint(&key, json!({"user": {"id": "u-2"}, "filter": {"project": "payments"}})).await;
    assert_eq!(no_export.get("/v1/orgs/default/exports").await.unwrap_err().status(), Some(403));
}

#[tokio::test]
async fn revoked_and_expired_tokens_stop_at_once() {
    let s = TestServer::start().await;
    seed(&s).await;
    let key = mint_key(&s).await;
    let (minted, viewer) = mint(&key, json!({"user": {"id": "u-1"}})).await;
    let deployed = [("action", "component.deployed")];
    assert_eq!(viewer.query_all("default", &deployed).await.unwrap().len(), 10, "no filter: all of them");
    let path = format!("/v1/orgs/default/viewer-tokens/{}", minted["id"].as_str().unwrap());
    key.delete(&path).await.unwrap();
    assert_eq!(viewer.query("default", &[]).await.unwrap_err().status(), Some(401));
    assert!(
        key.get("/v1/orgs/default/viewer-tokens").await.unwrap()["viewer_tokens"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let revoked = s.admin.query_all("default", &[("action", "viewer_token.revoked")]).await.unwrap();
    assert_eq!(revoked.len(), 1);
    // A person with LOG-MANAGEMENT may revoke too; an unknown id is 404.
    let e = s.admin.delete("/v1/orgs/default/viewer-tokens/nope").await.unwrap_err();
    assert_eq!(e.status(), Some(404));

    let (_, short) = mint(&key, json!({"user": {"id": "u-1"}, "ttl_secs": 1})).await;
    assert!(short.query("default", &[]).await.is_ok());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(short.query("default", &[]).await.unwrap_err().status(), Some(401));
    // Revoking the key that minted a token ends the token.
    let (_, live) = mint(&key, json!({"user": {"id": "u-1"}})).await;
    assert!(live.query("default", &[]).await.is_ok());
    let keys = s.admin.get("/v1/orgs/default/api-keys").await.unwrap();
    let key_id =
        keys["api_keys"].as_array().unwrap().iter().find(|k| k["name"] == "host backend").unwrap()["id"]
            .clone();
    s.admin.revoke_api_key("default", key_id.as_str().unwrap()).await.unwrap();
    assert_eq!(live.query("default", &[]).await.unwrap_err().status(), Some(401));
    // A made-up token of the right shape, and a real one's secret altered.
    let forged = key.with_token(format!("trv_default.{}.x", minted["id"].as_str().unwrap()));
    assert_eq!(forged.query("default", &[]).await.unwrap_err().status(), Some(401));
}

#[tokio::test]
async fn the_embed_page_may_be_framed_only_by_allowed_origins() {
    let s = TestServer::start().await;
    let csp = |page: reqwest::Response| {
        page.headers()
            .get("content-security-policy")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let page = s.anon.request(reqwest::Method::GET, "/embed/orgs/default/logs").send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(csp(page).contains("frame-ancestors 'none'"), "no origin allowed until one is set");
    let missing = s.anon.request(reqwest::Method::GET, "/embed/orgs/nope/logs").send().await.unwrap();
    assert_eq!(missing.status(), 404);

    let url = "/v1/orgs/default/embedding";
    for (origins, field) in [
        (json!(["app.example.com"]), "allowed_origins[0]"),
        (json!(["https://ok.example", "https://x.example/path"]), "allowed_origins[1]"),
        (json!(["https://x.example; script-src *"]), "allowed_origins[0]"),
    ] {
        let e = s.admin.put(url, &json!({"allowed_origins": origins})).await.unwrap_err();
        assert_eq!((e.status(), e.field()), (Some(400), Some(field)), "{origins}");
    }
    let set = s
        .admin
        .put(url, &json!({"allowed_origins": ["https://app.example.com", "http://127.0.0.1:8080/"]}))
        .await
        .unwrap();
    assert_eq!(set["allowed_origins"], json!(["https://app.example.com", "http://127.0.0.1:8080"]));
    assert_eq!(s.admin.get(url).await.unwrap()["allowed_origins"], set["allowed_origins"]);
    let page = s.anon.request(reqwest::Method::GET, "/embed/orgs/default/logs").send().await.unwrap();
    assert!(
        csp(page).contains("frame-ancestors https://app.example.com http://127.0.0.1:8080;"),
        "the allowed origins frame it"
    );
    let changed = s.admin.query_all("default", &[("action", "embedding.updated")]).await.unwrap();
    assert_eq!(changed[0]["info"]["after"], set["allowed_origins"]);
}
