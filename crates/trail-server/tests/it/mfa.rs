//! Two-factor sign-in (issue #21): enrolment, sign-in with a code or a recovery code, codes used
//! once, throttling that covers the second factor, and an org that requires it. The codes are
//! computed by the test with Python's standard library (RFC 6238 from scratch), not by Trail's code.

use std::process::Command;

use serde_json::{Value, json};
use trail_client::Client;

use crate::{ADMIN_PASSWORD, TestServer};

/// The TOTP code of `secret` (base32) `steps` steps from now, by an independent implementation
/// (`crates/trail/tests/receivers/totp.py`, Python's standard library).
pub fn totp(secret: &str, steps: i64) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../trail/tests/receivers/totp.py");
    let out = Command::new("python3")
        .arg(script)
        .args([secret, &steps.to_string()])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Raw POST (the answer's status and body, for steps that are not a plain success).
async fn post(c: &Client, path: &str, body: Value) -> (u16, Value) {
    let r = c.request(reqwest::Method::POST, path).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Enrols `c`'s user and answers the secret and the recovery codes.
pub async fn enrol(c: &Client, password: &str) -> (String, Vec<String>) {
    let started = c.post("/v1/me/mfa/totp", &json!({"current_password": password})).await.unwrap();
    let secret = started["secret"].as_str().unwrap().to_string();
    assert!(started["otpauth_uri"].as_str().unwrap().contains(&format!("secret={secret}")));
    assert!(started["qr_svg"].as_str().unwrap().starts_with("<svg"));
    let confirmed = c.post("/v1/me/mfa/totp/confirm", &json!({"code": totp(&secret, 0)})).await.unwrap();
    let codes = confirmed["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    (secret, codes)
}

async fn password_step(s: &TestServer) -> String {
    let (status, body) =
        post(&s.anon, "/v1/auth/login", json!({"email": "admin@localhost", "password": ADMIN_PASSWORD}))
            .await;
    assert_eq!((status, &body["mfa_required"]), (200, &json!(true)), "{body}");
    assert!(body.get("token").is_none(), "no session before the code: {body}");
    body["challenge"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn enrolment_then_sign_in_with_a_code_or_a_recovery_code() {
    let s = TestServer::start().await;
    let status = s.admin.get("/v1/me/mfa").await.unwrap();
    assert_eq!((status["enabled"].as_bool(), status["pending"].as_bool()), (Some(false), Some(false)));
    // A pending enrolment changes nothing at sign-in; a wrong code does not confirm it.
    // A session alone cannot add a factor: the password is asked.
    let e = s.admin.post("/v1/me/mfa/totp", &json!({"current_password": "not it"})).await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(403), Some("invalid_credentials")));
    let started =
        s.admin.post("/v1/me/mfa/totp", &json!({"current_password": ADMIN_PASSWORD})).await.unwrap();
    let secret = started["secret"].as_str().unwrap();
    s.anon
        .login("admin@localhost", ADMIN_PASSWORD)
        .await
        .expect("pending: the password alone still signs in");
    let e = s.admin.post("/v1/me/mfa/totp/confirm", &json!({"code": totp(secret, 5)})).await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(400), Some("invalid_code")));
    let other_session = s.anon.login("admin@localhost", ADMIN_PASSWORD).await.unwrap();
    let confirmed =
        s.admin.post("/v1/me/mfa/totp/confirm", &json!({"code": totp(secret, -1)})).await.unwrap();
    let codes: Vec<String> = confirmed["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(codes.len(), 10);
    assert_eq!(s.admin.get("/v1/me/mfa").await.unwrap()["recovery_codes_left"], 10);
    assert_eq!(other_session.me().await.unwrap_err().status(), Some(401), "sessions without the code end");
    let e = s.admin.post("/v1/me/mfa/totp", &json!({"current_password": ADMIN_PASSWORD})).await.unwrap_err();
    assert_eq!(e.status(), Some(409), "one factor at a time");

    // Password, then code: a session; the same code again is refused.
    let challenge = password_step(&s).await;
    let code = totp(secret, 0);
    let (status, body) =
        post(&s.anon, "/v1/auth/login/mfa", json!({"challenge": challenge, "code": code})).await;
    assert_eq!(status, 200, "{body}");
    let session = s.anon.with_token(body["token"].as_str().unwrap());
    assert_eq!(session.me().await.unwrap()["email"], "admin@localhost");
    let (status, body) =
        post(&s.anon, "/v1/auth/login/mfa", json!({"challenge": challenge, "code": code})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_code")), "a code works once");
    // A recovery code, once, typed loosely.
    let loose = codes[0].to_uppercase().replace('-', " ");
    let (status, _) =
        post(&s.anon, "/v1/auth/login/mfa", json!({"challenge": challenge, "code": loose})).await;
    assert_eq!(status, 200);
    let (status, _) =
        post(&s.anon, "/v1/auth/login/mfa", json!({"challenge": challenge, "code": codes[0]})).await;
    assert_eq!(status, 401, "a recovery code works once");
    // A challenge that is not Trail's.
    let (status, body) =
        post(&s.anon, "/v1/auth/login/mfa", json!({"challenge": "forged", "code": code})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_challenge")));
    // The sign-ins are in the log, saying how.
    let signed_in = s.admin.query_all("default", &[("action", "user.signed_in")]).await.unwrap();
    let factors: Vec<&Value> = signed_in.iter().map(|e| &e["info"]["second_factor"]).collect();
    assert!(factors.contains(&&json!("totp")) && factors.contains(&&json!("recovery_code")), "{factors:?}");
    assert_eq!(s.admin.query_all("default", &[("action", "user.mfa_enabled")]).await.unwrap().len(), 1);

    // New recovery codes and turning it off both need a code.
    let e = s.admin.post("/v1/me/mfa/disable", &json!({"code": "000000"})).await.unwrap_err();
    assert_eq!(e.code(), Some("invalid_code"));
    let renewed = s.admin.post("/v1/me/mfa/recovery-codes", &json!({"code": codes[1]})).await.unwrap();
    assert_eq!(renewed["recovery_codes"].as_array().unwrap().len(), 10);
    let (status, _) =
        post(&s.anon, "/v1/auth/login/mfa", json!({"challenge": challenge, "code": codes[2]})).await;
    assert_eq!(status, 401, "the old recovery codes stopped");
    let off = s.admin.post("/v1/me/mfa/disable", &json!({"code": totp(secret, 1)})).await.unwrap();
    assert_eq!(off["enabled"], false);
    s.anon.login("admin@localhost", ADMIN_PASSWORD).await.expect("the password alone again");
}

#[tokio::test]
async fn wrong_codes_use_up_the_accounts_sign_in_budget() {
    let s = TestServer::start().await;
    let (secret, _) = enrol(&s.admin, ADMIN_PASSWORD).await;
    let challenge = password_step(&s).await;
    for n in 0..trail_server::throttle::ACCOUNT_LIMIT {
        let wrong = format!("{:06}", (n * 7919) % 1_000_000);
        let (status, _) =
            post(&s.anon, "/v1/auth/login/mfa", json!({"challenge": challenge, "code": wrong})).await;
        assert_eq!(status, 401);
    }
    // Now even the right code, and the right password, wait.
    let (status, body) =
        post(&s.anon, "/v1/auth/login/mfa", json!({"challenge": challenge, "code": totp(&secret, 0)})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_attempts")), "{body}");
    let (status, _) =
        post(&s.anon, "/v1/auth/login", json!({"email": "admin@localhost", "password": ADMIN_PASSWORD}))
            .await;
    assert_eq!(status, 429, "a right password does not clear failed codes");
    let failed = s.admin.query_all("default", &[("action", "user.sign_in_failed")]).await.unwrap();
    assert!(failed.iter().any(|e| e["reason"] == "wrong second-factor code"), "{failed:?}");
}

#[tokio::test]
async fn an_org_can_require_a_second_factor() {
    let s = TestServer::start().await;
    let url = "/v1/orgs/default/sign-in";
    assert_eq!(s.admin.get(url).await.unwrap()["require_mfa"], false);
    let e = s.admin.put(url, &json!({"require_mfa": true})).await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(409), Some("mfa_not_enabled")), "not without your own");
    // A member without a second factor, signed in before it is required.
    let member =
        crate::security::user_with(&s, "auditor@acme.io", &[trail_store::Permission::LogManagement]).await.0;
    assert!(member.query("default", &[]).await.is_ok());
    let (secret, _) = enrol(&s.admin, ADMIN_PASSWORD).await;
    // Enrolling ended the admin's other sessions, but not this one (it proved the code).
    assert_eq!(s.admin.put(url, &json!({"require_mfa": true})).await.unwrap()["require_mfa"], true);
    let e = member.query("default", &[]).await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(403), Some("mfa_required")));
    assert!(s.admin.query("default", &[]).await.is_ok(), "with a second factor");
    // The member sets one up (their account is not the org's) and is let in.
    let (member_secret, _) = enrol(&member, crate::security::PASSWORD).await;
    assert!(member.query("default", &[]).await.is_ok());
    assert_ne!(member_secret, secret);
    let changed = s.admin.query_all("default", &[("action", "sign_in.mfa_required")]).await.unwrap();
    assert_eq!(changed.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_code_sent_twice_at_once_signs_in_once() {
    let s = TestServer::start().await;
    let (secret, codes) = enrol(&s.admin, ADMIN_PASSWORD).await;
    for code in [totp(&secret, 1), codes[0].clone()] {
        let challenge = password_step(&s).await;
        let body = json!({"challenge": challenge, "code": code});
        let (a, b) = tokio::join!(
            post(&s.anon, "/v1/auth/login/mfa", body.clone()),
            post(&s.anon, "/v1/auth/login/mfa", body)
        );
        let mut statuses = [a.0, b.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 401], "{code}: one of two concurrent uses wins: {a:?} {b:?}");
    }
}

#[tokio::test]
async fn an_invitation_does_not_let_an_account_with_a_factor_in_by_password() {
    let s = TestServer::start().await;
    let (member, _) = crate::security::user_with(&s, "known@acme.io", &[]).await;
    enrol(&member, crate::security::PASSWORD).await;
    s.admin.create_org("globex", "Globex").await.unwrap();
    let v = s
        .admin
        .post("/v1/orgs/globex/invitations", &json!({"emails": ["known@acme.io"], "groups": []}))
        .await
        .unwrap();
    let token = v["invitations"][0]["accept_url"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    let url = format!("/v1/invitations/{token}/accept");
    // The right password answers exactly as a wrong one does: the link tells nothing of the account.
    let right = post(&s.anon, &url, json!({"password": crate::security::PASSWORD})).await;
    let wrong = post(&s.anon, &url, json!({"password": "not the password at all"})).await;
    assert_eq!((right.0, &right.1["error"]["code"]), (401, &json!("invalid_credentials")), "{right:?}");
    assert_eq!(right.1, wrong.1);
    // Signed in with both factors, the invitation is accepted.
    let accepted = member.post(&url, &json!({})).await.unwrap();
    assert_eq!(accepted["email"], "known@acme.io");
}
