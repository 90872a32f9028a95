//! Two-factor sign-in in the console, in headless Chromium (issue #21): enrolment on the account page
//! (QR code, key, a code computed by the test's own RFC 6238 in Python), the recovery codes shown
//! once, sign-in with password then code, then with a recovery code, and requiring it of an org on
//! the settings page.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use trail_client::Client;

use crate::browser::{A11Y_CHECK, Browser};
use crate::console::{fill, sign_in, submit};
use crate::{PASSWORD, Served};

fn totp(secret: &str, steps: i64) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/receivers/totp.py");
    let out = Command::new("python3")
        .arg(script)
        .args([secret, &steps.to_string()])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn sign_out(b: &mut Browser, base: &str) {
    b.clear_cookies().await;
    b.goto(&format!("{base}/login")).await;
}

/// Password, then the code form.
async fn password_then_code(b: &mut Browser, code: &str) {
    fill(b, "#email", "admin@localhost").await;
    fill(b, "#password", PASSWORD).await;
    submit(b, "form[data-login]").await;
    b.wait_for("!document.querySelector('[data-login-code]').hidden", "the code step").await;
    fill(b, "#code", code).await;
    submit(b, "form[data-login-code]").await;
    b.wait_for("location.pathname.startsWith('/orgs/') && document.readyState === 'complete'", "the console")
        .await;
}

#[tokio::test]
async fn two_factor_sign_in_in_the_console() {
    let Some(mut b) = Browser::launch().await else {
        eprintln!(
            "SKIPPED two_factor_sign_in_in_the_console: Chromium is not installed (apt-get install -y chromium)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &[]);
    let base = served.base.clone();
    sign_in(&mut b, &base, "admin@localhost", PASSWORD).await;
    b.goto(&format!("{base}/account")).await;
    assert_eq!(b.eval("document.querySelector('[data-mfa-state]').dataset.mfaState").await, json!("off"));
    fill(&mut b, "#mfa-password", PASSWORD).await;
    submit(&mut b, "form[data-mfa-start]").await;
    let secret = b.wait_for("document.querySelector('[data-secret]').textContent", "the key").await;
    let secret = secret.as_str().unwrap().to_string();
    // The QR code is an image the browser decoded (an SVG of the otpauth URI).
    b.wait_for("document.querySelector('[data-qr]').complete && document.querySelector('[data-qr]').naturalWidth > 0", "the QR code")
        .await;
    assert_eq!(b.eval(A11Y_CHECK).await, json!([]), "accessibility basics of the account page");
    // A wrong code is refused on the page; the right one turns it on and shows the codes once.
    fill(&mut b, "#confirm-code", &totp(&secret, 10)).await;
    submit(&mut b, "form[data-api$='/totp/confirm']").await;
    b.wait_for(
        "document.querySelector('form[data-api$=\"/totp/confirm\"] [data-error]').textContent",
        "the refusal",
    )
    .await;
    fill(&mut b, "#confirm-code", &totp(&secret, 0)).await;
    submit(&mut b, "form[data-api$='/totp/confirm']").await;
    let codes = b
        .wait_for(
            "document.querySelectorAll('[data-recovery-codes] li').length && [...document.querySelectorAll('[data-recovery-codes] li')].map((li) => li.textContent)",
            "the recovery codes",
        )
        .await;
    let codes: Vec<String> =
        codes.as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    assert_eq!(codes.len(), 10);
    b.goto(&format!("{base}/account")).await;
    assert_eq!(b.eval("document.querySelector('[data-mfa-state]').dataset.mfaState").await, json!("on"));

    // Signing in now takes the password and then a code (the next step's: this one was used).
    sign_out(&mut b, &base).await;
    password_then_code(&mut b, &totp(&secret, 1)).await;
    // And with a recovery code instead.
    sign_out(&mut b, &base).await;
    password_then_code(&mut b, &codes[0]).await;
    // A wrong code keeps the person on the code step with the reason.
    sign_out(&mut b, &base).await;
    fill(&mut b, "#email", "admin@localhost").await;
    fill(&mut b, "#password", PASSWORD).await;
    submit(&mut b, "form[data-login]").await;
    b.wait_for("!document.querySelector('[data-login-code]').hidden", "the code step").await;
    fill(&mut b, "#code", &codes[0]).await;
    submit(&mut b, "form[data-login-code]").await;
    let refused = b
        .wait_for("document.querySelector('[data-login-code] [data-error]').textContent", "the refusal")
        .await;
    assert!(refused.as_str().unwrap().contains("already used"), "{refused}");

    // The org's settings page requires it of every member.
    password_then_code(&mut b, &codes[1]).await;
    b.goto(&format!("{base}/orgs/default/admin/settings")).await;
    b.eval("document.querySelector('input[name=require_mfa]').checked = true, true").await;
    submit(&mut b, "form[data-api$='/sign-in']").await;
    let reader = Client::new(&base).with_token(crate::create_key(dir.path(), "events:read"));
    let mut required = false;
    for _ in 0..100 {
        let events = reader.query_all("default", &[("action", "sign_in.mfa_required")]).await;
        if events.is_ok_and(|e| !e.is_empty()) {
            required = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(required, "the requirement was saved and recorded");
}
