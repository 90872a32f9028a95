//! The authorization matrix: every route of the API (from the router's own table, so a new route
//! cannot escape) against no credentials, a session of another org, a session without the needed
//! permission, an API key with the wrong scope, and the right credentials.

use reqwest::Method;
use serde_json::json;
use trail_client::Client;
use trail_store::{Group, Permission, Role, Store};

use crate::TestServer;

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    /// Anyone, no credentials.
    Public,
    /// Any signed-in user (their own account).
    Session,
    /// A server administrator.
    ServerAdmin,
    /// A session holding this permission in the path's org.
    Perm(Permission),
    /// A session holding every permission in the path's org (choosing its identity provider).
    AllPerms,
    /// `LOG-MANAGEMENT` in the org, or an `events:read` key of the org.
    Read,
    /// An `events:write` key of the org.
    Write,
    /// A `viewer:mint` key of the org (people cannot mint).
    Mint,
    /// A `viewer:mint` key of the org, or `LOG-MANAGEMENT` in it.
    MintOrLog,
    /// A viewer token (any org's: it answers about itself).
    ViewerSelf,
}

/// What a viewer token may call (narrowed to its filter); everything else refuses it.
fn viewer_may(method: &str, path: &str) -> bool {
    match (method, path) {
        (
            "GET",
            "/v1/orgs/{org}/events"
            | "/v1/orgs/{org}/events/histogram"
            | "/v1/orgs/{org}/events/{id}"
            | "/v1/orgs/{org}/checkpoint"
            | "/v1/orgs/{org}/proofs/inclusion"
            | "/v1/orgs/{org}/proofs/consistency",
        ) => true,
        (_, p) => p.starts_with("/v1/orgs/{org}/exports"),
    }
}

fn rule(method: &str, path: &str) -> Rule {
    use Permission::*;
    match (method, path) {
        (
            _,
            "/healthz" | "/readyz" | "/metrics" | "/v1/openapi.json" | "/v1/actions" | "/v1/log-key"
            | "/v1/auth/login" | "/v1/auth/login/mfa",
        ) => Rule::Public,
        ("GET", "/v1/auth/sso" | "/v1/auth/sso/callback") => Rule::Public,
        ("POST", "/v1/invitations/{token}/accept") => Rule::Public,
        (_, "/v1/auth/logout" | "/v1/me" | "/v1/me/password") | ("GET", "/v1/orgs") => Rule::Session,
        (_, p) if p.starts_with("/v1/me/mfa") => Rule::Session,
        ("POST", "/v1/orgs") => Rule::ServerAdmin,
        ("POST", "/v1/orgs/{org}/events") => Rule::Write,
        (
            "GET",
            "/v1/orgs/{org}/events"
            | "/v1/orgs/{org}/events/histogram"
            | "/v1/orgs/{org}/events/feed"
            | "/v1/orgs/{org}/events/{id}"
            | "/v1/orgs/{org}/checkpoint"
            | "/v1/orgs/{org}/proofs/inclusion"
            | "/v1/orgs/{org}/proofs/consistency",
        ) => Rule::Read,
        (_, p) if p.starts_with("/v1/orgs/{org}/exports") || p.starts_with("/v1/orgs/{org}/archives") => {
            Rule::Read
        }
        ("PUT" | "DELETE", "/v1/orgs/{org}/sso") => Rule::AllPerms,
        (
            _,
            "/v1/orgs/{org}/settings"
            | "/v1/orgs/{org}/embedding"
            | "/v1/orgs/{org}/sign-in"
            | "/v1/orgs/{org}/sso",
        ) => Rule::Perm(OrgSettings),
        ("POST", "/v1/orgs/{org}/viewer-tokens") => Rule::Mint,
        ("GET", "/v1/viewer") => Rule::ViewerSelf,
        (_, p) if p.starts_with("/v1/orgs/{org}/viewer-tokens") => Rule::MintOrLog,
        (_, p) if p.starts_with("/v1/orgs/{org}/destinations") => Rule::Perm(OrgSettings),
        (_, p)
            if ["searches", "alert-rules", "alert-templates", "alerts"]
                .iter()
                .any(|s| p.starts_with(&format!("/v1/orgs/{{org}}/{s}"))) =>
        {
            Rule::Perm(LogManagement)
        }
        (_, p) if p.starts_with("/v1/orgs/{org}/api-keys") => Rule::Perm(KeyManagement),
        (_, p)
            if ["roles", "groups", "users", "invitations"]
                .iter()
                .any(|s| p.starts_with(&format!("/v1/orgs/{{org}}/{s}"))) =>
        {
            Rule::Perm(UserManagement)
        }
        other => panic!(
            "route {other:?} has no authorization rule: add it here (and deny by default in the handler)"
        ),
    }
}

async fn status(c: &Client, method: &str, path: &str) -> u16 {
    let url = path
        .replace("{org}", "default")
        .replace("{id}", "x")
        .replace("{role_id}", "x")
        .replace("{user_id}", "x")
        .replace("{token}", "x.y");
    let m: Method = method.parse().unwrap();
    let mut rb = c.request(m.clone(), &url);
    if m == Method::POST || m == Method::PATCH || m == Method::PUT {
        rb = rb.json(&json!({}));
    }
    rb.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn every_route_denies_what_it_does_not_allow() {
    let s = TestServer::start().await;
    let t = trail_model::time::now();
    // A user of another org only.
    s.store.create_org("globex", "Globex", t).await.unwrap();
    let hash = trail_server::auth::hash_password("outsider password").unwrap();
    let outsider = s.store.create_user("outsider@globex.io", &hash, false, t).await.unwrap();
    s.store.add_org_admin("globex", &outsider.id).await.unwrap();
    // A member of default whose only role grants no permission.
    let member = s.store.create_user("member@acme.io", &hash, false, t).await.unwrap();
    let role = Role {
        id: "nothing".into(),
        name: "Nothing".into(),
        description: String::new(),
        permissions: vec![],
        builtin: false,
    };
    s.store.create_role("default", &role).await.unwrap();
    let group = Group {
        id: "g-settings".into(),
        name: "Settings".into(),
        description: String::new(),
        roles: vec![],
        members: vec![],
        builtin: false,
    };
    s.store.create_group("default", &group).await.unwrap();
    s.store.set_group_role("default", "g-settings", "nothing", true).await.unwrap();
    trail_store::conformance::join(s.store.as_ref(), "default", "g-settings", &member.id).await;

    // One user per permission, holding only that one.
    let mut single = Vec::new();
    for perm in Permission::ALL {
        let name = perm.as_str().to_lowercase();
        let user = s.store.create_user(&format!("{name}@acme.io"), &hash, false, t).await.unwrap();
        let role = Role {
            id: format!("only-{name}"),
            name: format!("Only {name}"),
            description: String::new(),
            permissions: vec![perm],
            builtin: false,
        };
        s.store.create_role("default", &role).await.unwrap();
        let group = Group {
            id: format!("g-{name}"),
            name: format!("G {name}"),
            description: String::new(),
            roles: vec![],
            members: vec![],
            builtin: false,
        };
        s.store.create_group("default", &group).await.unwrap();
        s.store.set_group_role("default", &group.id, &role.id, true).await.unwrap();
        trail_store::conformance::join(s.store.as_ref(), "default", &group.id, &user.id).await;
        single.push((perm, s.anon.login(&format!("{name}@acme.io"), "outsider password").await.unwrap()));
    }
    let other_org = s.anon.login("outsider@globex.io", "outsider password").await.unwrap();
    let no_perm = s.anon.login("member@acme.io", "outsider password").await.unwrap();
    let write_key = s.admin.create_api_key("default", "w", &["events:write"]).await.unwrap();
    let write_key = s.anon.with_token(write_key["secret"].as_str().unwrap());
    let read_key = s.admin.create_api_key("default", "r", &["events:read"]).await.unwrap();
    let read_key = s.anon.with_token(read_key["secret"].as_str().unwrap());
    let mint_key = s.admin.create_api_key("default", "m", &["viewer:mint"]).await.unwrap();
    let mint_key = s.anon.with_token(mint_key["secret"].as_str().unwrap());
    let minted = mint_key
        .post(
            "/v1/orgs/default/viewer-tokens",
            &json!({"user": {"id": "u1"}, "permissions": ["view", "export"]}),
        )
        .await
        .unwrap();
    let viewer = s.anon.with_token(minted["token"].as_str().unwrap());
    // A viewer token of another org, minted by that org's own key.
    let globex_key = other_org.create_api_key("globex", "m", &["viewer:mint"]).await.unwrap();
    let globex_key = s.anon.with_token(globex_key["secret"].as_str().unwrap());
    let minted = globex_key
        .post(
            "/v1/orgs/globex/viewer-tokens",
            &json!({"user": {"id": "u1"}, "permissions": ["view", "export"]}),
        )
        .await
        .unwrap();
    let other_viewer = s.anon.with_token(minted["token"].as_str().unwrap());
    let fresh_admin_for_viewer = s.anon.login("admin@localhost", crate::ADMIN_PASSWORD).await.unwrap();

    // The administrator (of default, and a server administrator), signed in by globex's identity
    // provider: such a session reaches only globex, and makes nobody a server administrator.
    let admin_user = s.store.user_by_email("admin@localhost").await.unwrap().unwrap();
    let secret = trail_server::auth::random_secret();
    let session = trail_store::Session {
        id: "sso-elsewhere".into(),
        user_id: admin_user.id.clone(),
        secret_hash: trail_server::auth::secret_hash(&secret),
        created_at: t,
        expires_at: t + 3_600_000_000,
        last_seen: trail_model::time::now(),
        method: "sso:globex".into(),
    };
    s.store.create_session(&session).await.unwrap();
    let sso_elsewhere = s.anon.with_token(format!("trs_sso-elsewhere.{secret}"));

    let denied = |code: u16| code == 401 || code == 403;
    for (method, path) in trail_server::routes::ROUTES {
        let r = rule(method, path);
        let what = format!("{method} {path} ({r:?})");
        let anon = status(&s.anon, method, path).await;
        match r {
            Rule::Public => {
                assert!(!denied(anon), "{what}: public, got {anon}");
                continue;
            }
            _ => assert_eq!(anon, 401, "{what}: no credentials"),
        }
        if r == Rule::ViewerSelf {
            for (who, c) in [("a session", &fresh_admin_for_viewer), ("an API key", &read_key)] {
                assert_eq!(status(c, method, path).await, 403, "{what}: {who}");
            }
            assert_eq!(status(&viewer, method, path).await, 200, "{what}: a viewer token");
            assert_eq!(status(&other_viewer, method, path).await, 200, "{what}: another org's viewer token");
            continue;
        }
        assert_eq!(status(&other_viewer, method, path).await, 403, "{what}: a viewer token of another org");
        let as_viewer = status(&viewer, method, path).await;
        if viewer_may(method, path) {
            assert!(!denied(as_viewer), "{what}: a viewer token of the org, got {as_viewer}");
        } else {
            assert_eq!(as_viewer, 403, "{what}: a viewer token may only read");
        }
        let fresh_admin = s.anon.login("admin@localhost", crate::ADMIN_PASSWORD).await.unwrap();
        match r {
            Rule::Public | Rule::ViewerSelf => unreachable!(),
            Rule::Session => {
                assert_eq!(status(&write_key, method, path).await, 403, "{what}: API keys are not users");
                let ok = status(&fresh_admin, method, path).await;
                assert!(!denied(ok), "{what}: a signed-in user, got {ok}");
            }
            Rule::ServerAdmin => {
                assert_eq!(status(&no_perm, method, path).await, 403, "{what}: not a server admin");
                assert_eq!(
                    status(&sso_elsewhere, method, path).await,
                    403,
                    "{what}: an org's single sign-on"
                );
                assert_eq!(status(&read_key, method, path).await, 403, "{what}: API key");
                let ok = status(&fresh_admin, method, path).await;
                assert!(!denied(ok), "{what}: server admin, got {ok}");
            }
            Rule::Mint | Rule::MintOrLog => {
                assert_eq!(status(&other_org, method, path).await, 403, "{what}: session of another org");
                assert_eq!(status(&sso_elsewhere, method, path).await, 403, "{what}: another org's sign-on");
                assert_eq!(
                    status(&no_perm, method, path).await,
                    403,
                    "{what}: session without the permission"
                );
                assert_eq!(status(&read_key, method, path).await, 403, "{what}: key with the wrong scope");
                let ok = status(&mint_key, method, path).await;
                assert!(!denied(ok), "{what}: a viewer:mint key, got {ok}");
                for (perm, client) in &single {
                    let got = status(client, method, path).await;
                    if r == Rule::MintOrLog && *perm == Permission::LogManagement {
                        assert!(!denied(got), "{what}: a session with only LOG-MANAGEMENT, got {got}");
                    } else {
                        assert_eq!(got, 403, "{what}: a session with only {}", perm.as_str());
                    }
                }
            }
            Rule::AllPerms => {
                assert_eq!(status(&other_org, method, path).await, 403, "{what}: session of another org");
                assert_eq!(status(&sso_elsewhere, method, path).await, 403, "{what}: another org's sign-on");
                assert_eq!(status(&no_perm, method, path).await, 403, "{what}: no permission");
                assert_eq!(status(&read_key, method, path).await, 403, "{what}: API key");
                for (perm, client) in &single {
                    assert_eq!(status(client, method, path).await, 403, "{what}: only {}", perm.as_str());
                }
                let ok = status(&fresh_admin, method, path).await;
                assert!(!denied(ok), "{what}: an administrator, got {ok}");
            }
            Rule::Perm(_) | Rule::Read | Rule::Write => {
                assert_eq!(status(&other_org, method, path).await, 403, "{what}: session of another org");
                if r != Rule::Write {
                    let got = status(&sso_elsewhere, method, path).await;
                    assert_eq!(got, 403, "{what}: a session of another org's single sign-on");
                }
                if r != Rule::Write {
                    assert_eq!(
                        status(&no_perm, method, path).await,
                        403,
                        "{what}: session without the permission"
                    );
                }
                let wrong_key = if r == Rule::Write { &read_key } else { &write_key };
                assert_eq!(status(wrong_key, method, path).await, 403, "{what}: key with the wrong scope");
                let right = match r {
                    Rule::Write => &write_key,
                    Rule::Read => &read_key,
                    _ => &fresh_admin,
                };
                let ok = status(right, method, path).await;
                assert!(!denied(ok), "{what}: the right credentials, got {ok}");
                // Exactly the right permission opens the route; each other one alone does not.
                let needed = match r {
                    Rule::Perm(p) => Some(p),
                    Rule::Read => Some(Permission::LogManagement),
                    _ => None,
                };
                if let Some(needed) = needed {
                    for (perm, client) in &single {
                        let got = status(client, method, path).await;
                        if *perm == needed {
                            assert!(!denied(got), "{what}: a session with only {}, got {got}", perm.as_str());
                        } else {
                            assert_eq!(got, 403, "{what}: a session with only {}", perm.as_str());
                        }
                    }
                }
            }
        }
    }
}
