//! A small driver for headless Chromium over the DevTools protocol: enough to navigate, run script in
//! the page, press keys, resize and take screenshots. Chromium is Debian's `chromium` package.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[allow(missing_debug_implementations, reason = "a test fixture")]
pub struct Browser {
    child: Child,
    ws: Socket,
    session: String,
    next_id: u64,
    /// Addresses requested while recording ([`Browser::record_requests`]).
    requests: Vec<String>,
    _profile: tempfile::TempDir,
}

/// The Chromium binary, if this machine has one.
pub fn chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"].into_iter().map(str::to_string).find(|b| {
        Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

impl Browser {
    /// Starts headless Chromium with one page; `None` when Chromium is not installed.
    pub async fn launch() -> Option<Self> {
        let bin = chromium()?;
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(bin)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("chromium exited before listening").unwrap();
            if let Some(u) = line.strip_prefix("DevTools listening on ") {
                break u.trim().to_string();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
        let mut b =
            Self { child, ws, session: String::new(), next_id: 0, requests: Vec::new(), _profile: profile };
        let target = b.send(None, "Target.createTarget", json!({"url": "about:blank"})).await.unwrap();
        let attached = b
            .send(None, "Target.attachToTarget", json!({"targetId": target["targetId"], "flatten": true}))
            .await
            .unwrap();
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b.call("Page.enable", json!({})).await.unwrap();
        b.call("Runtime.enable", json!({})).await.unwrap();
        Some(b)
    }

    async fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws.send(Message::text(msg.to_string())).await.map_err(|e| e.to_string())?;
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .map_err(|_| format!("no answer to {method}"))?
                .ok_or("the browser closed")?
                .map_err(|e| e.to_string())?;
            let Message::Text(text) = frame else { continue };
            let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            if v["method"] == "Page.javascriptDialogOpening" {
                // Accept confirm() dialogs the way a user clicking OK would.
                let s = v["sessionId"].as_str().map(str::to_string);
                self.next_id += 1;
                let accept = json!({"id": self.next_id, "method": "Page.handleJavaScriptDialog", "params": {"accept": true}, "sessionId": s});
                self.ws.send(Message::text(accept.to_string())).await.map_err(|e| e.to_string())?;
                continue;
            }
            if v["method"] == "Network.requestWillBeSent"
                && let Some(url) = v["params"]["request"]["url"].as_str()
            {
                self.requests.push(url.to_string());
                continue;
            }
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    return Err(format!("{method}: {e}"));
                }
                return Ok(v["result"].clone());
            }
        }
    }

    /// A command to the page.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let s = self.session.clone();
        self.send(Some(&s), method, params).await
    }

    /// Evaluates script in the page (promises awaited) and returns its JSON value.
    pub async fn eval(&mut self, js: &str) -> Value {
        let r = self
            .call("Runtime.evaluate", json!({"expression": js, "awaitPromise": true, "returnByValue": true}))
            .await
            .unwrap();
        if let Some(e) = r.get("exceptionDetails") {
            panic!("script failed: {e}\n{js}");
        }
        r["result"]["value"].clone()
    }

    /// Waits until `js` evaluates truthy; returns its value.
    pub async fn wait_for(&mut self, js: &str, what: &str) -> Value {
        for _ in 0..300 {
            // A navigation in progress answers "target navigated": not yet.
            let Ok(r) = self
                .call(
                    "Runtime.evaluate",
                    json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
                )
                .await
            else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let v = r["result"]["value"].clone();
            if r.get("exceptionDetails").is_none()
                && !v.is_null()
                && v != json!(false)
                && v != json!("")
                && v != json!(0)
            {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let url = self.eval("location.href").await;
        let body = self.eval("document.body ? document.body.innerText.slice(0, 2000) : ''").await;
        panic!("timed out waiting for {what} on {url}:\n{body}");
    }

    /// Loads a URL and waits until the page and its script ran.
    pub async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await.unwrap();
        self.wait_loaded().await;
    }

    /// Waits for the current navigation to finish.
    pub async fn wait_loaded(&mut self) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.wait_for(
            "document.readyState === 'complete' && location.href !== 'about:blank'",
            "the page to load",
        )
        .await;
    }

    /// Presses a key (e.g. `Tab`) in the page.
    pub async fn press(&mut self, key: &str, code: u32) {
        for kind in ["rawKeyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code, "nativeVirtualKeyCode": code}),
            )
            .await
            .unwrap();
        }
    }

    /// Viewport size (CSS pixels); `mobile` emulates a phone.
    pub async fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )
        .await
        .unwrap();
    }

    /// A full-page PNG written to `path`.
    pub async fn screenshot(&mut self, path: &std::path::Path) {
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png", "captureBeyondViewport": true}))
            .await
            .unwrap();
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD.decode(r["data"].as_str().unwrap()).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// The page's first child frame as `Page.getFrameTree` describes it (`Null` when there is none).
    pub async fn child_frame(&mut self) -> Value {
        let tree = self.call("Page.getFrameTree", json!({})).await.unwrap();
        tree["frameTree"]["childFrames"][0]["frame"].clone()
    }

    /// Evaluates `js` in the page's first child frame, in an isolated world: the frame's DOM (events
    /// dispatched there reach the page's own listeners), not its script's globals. Works across
    /// origins, where the page's own script could not reach in.
    pub async fn frame_eval(&mut self, js: &str) -> Result<Value, String> {
        let frame = self.child_frame().await;
        let id = frame["id"].as_str().ok_or("no child frame")?.to_string();
        let world =
            self.call("Page.createIsolatedWorld", json!({"frameId": id, "worldName": "trail-test"})).await?;
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": js, "contextId": world["executionContextId"], "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        match r.get("exceptionDetails") {
            Some(e) => Err(e.to_string()),
            None => Ok(r["result"]["value"].clone()),
        }
    }

    /// Waits until `js` evaluates truthy in the child frame; returns its value.
    pub async fn frame_wait_for(&mut self, js: &str, what: &str) -> Value {
        let mut last = Err(String::new());
        for _ in 0..300 {
            last = self.frame_eval(js).await;
            if let Ok(v) = &last
                && !v.is_null()
                && *v != json!(false)
                && *v != json!("")
                && *v != json!(0)
            {
                return v.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let body = self.frame_eval("document.body ? document.body.innerText.slice(0, 2000) : ''").await;
        panic!("timed out waiting for {what} in the frame ({last:?}):\n{body:?}");
    }

    /// Records the address of every request the page makes from now on (see [`Browser::requests`]).
    pub async fn record_requests(&mut self) {
        self.call("Network.enable", json!({})).await.unwrap();
    }

    /// The addresses requested since [`Browser::record_requests`], redirects included.
    pub fn requests(&self) -> &[String] {
        &self.requests
    }

    /// Forgets every cookie (another person at the same browser).
    pub async fn clear_cookies(&mut self) {
        self.call("Network.clearBrowserCookies", json!({})).await.unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Accessibility basics of the current page, checked in the browser: every control has a label, every
/// link and button a name, text contrast at least 4.5:1 (3:1 for large text), no positive tabindex, one
/// `h1`, a `main` landmark and a language. Returns the problems found.
pub const A11Y_CHECK: &str = r#"(() => {
  const problems = [];
  const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length) && getComputedStyle(el).visibility !== 'hidden';
  const describe = (el) => el.outerHTML.slice(0, 100);
  for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
    if (!visible(el) && !el.closest('dialog')) continue;
    const labelled = (el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`)) || el.closest('label')
      || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
    if (!labelled) problems.push('control without a label: ' + describe(el));
  }
  for (const el of document.querySelectorAll('a[href], button')) {
    if (!visible(el)) continue;
    if (!(el.textContent.trim() || el.getAttribute('aria-label'))) problems.push('link or button without a name: ' + describe(el));
  }
  for (const el of document.querySelectorAll('[tabindex]')) {
    if (Number(el.getAttribute('tabindex')) > 0) problems.push('positive tabindex breaks the focus order: ' + describe(el));
  }
  if (document.querySelectorAll('h1').length !== 1) problems.push('pages need exactly one h1');
  if (!document.querySelector('main')) problems.push('no main landmark');
  if (!document.documentElement.lang) problems.push('no page language');
  const rgba = (s) => { const m = s.match(/rgba?\(([^)]+)\)/); if (!m) return null; const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const lum = ([r, g, b]) => { const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; }; return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const background = (el) => { for (let e = el; e; e = e.parentElement) { const c = rgba(getComputedStyle(e).backgroundColor); if (c && c[3] > 0.5) return c; } return [255, 255, 255, 1]; };
  const seen = new Set();
  for (const el of document.querySelectorAll('body *')) {
    if (!visible(el) || el.closest('svg') || el.classList.contains('visually-hidden') || el.closest('.visually-hidden')) continue;
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own) continue;
    const st = getComputedStyle(el);
    const fg = rgba(st.color);
    if (!fg) continue;
    const bg = background(el);
    const [l1, l2] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (l1 + 0.05) / (l2 + 0.05);
    const size = parseFloat(st.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(st.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) {
      const key = el.tagName + st.color + st.backgroundColor;
      if (!seen.has(key)) { seen.add(key); problems.push(`contrast ${ratio.toFixed(2)}:1 too low: ` + describe(el)); }
    }
  }
  return problems;
})()"#;
