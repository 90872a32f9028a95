//! Notifying a firing: email through the server's SMTP settings (lettre: STARTTLS or TLS, AUTH), and a
//! webhook signed like the streaming destinations' (`Trail-Timestamp`, `Trail-Signature`). Each
//! channel is tried three times (after 1 s and 5 s) before it counts as failed.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use trail_model::time::{Micros, format_rfc3339, now};
use trail_store::{Document, Store};

use super::rules::Rule;
use crate::settings::SmtpSettings;
use crate::stream::seal::Sealer;

/// One channel's result, kept in the firing.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub channel: String,
    pub to: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub at: String,
}

/// Sends notifications.
#[derive(Clone)]
pub struct Notifier {
    smtp: SmtpSettings,
    sealer: Sealer,
    /// The console's base URL for links (known once the server is bound).
    base: Arc<RwLock<String>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").field("smtp_host", &self.smtp.host).finish_non_exhaustive()
    }
}

const ATTEMPTS: [Duration; 3] = [Duration::ZERO, Duration::from_secs(1), Duration::from_secs(5)];

impl Notifier {
    pub fn new(smtp: SmtpSettings, sealer: Sealer) -> Self {
        Self { smtp, sealer, base: Arc::default() }
    }

    pub fn set_base(&self, base: &str) {
        if let Ok(mut b) = self.base.write() {
            *b = base.trim_end_matches('/').to_string();
        }
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// The Audit Logs page showing a firing's matches: the rule's search over their time, a minute wider.
    pub fn link(&self, org: &str, search: &str, from: Micros, to: Micros) -> String {
        let base = self.base.read().map(|b| b.clone()).unwrap_or_default();
        let window = serde_urlencoded::to_string([
            ("from", format_rfc3339(from - 60_000_000)),
            ("to", format_rfc3339(to + 60_000_000)),
        ])
        .unwrap_or_default();
        let search = if search.is_empty() { String::new() } else { format!("{search}&") };
        format!("{base}/orgs/{org}/logs?{search}{window}")
    }

    /// Sends every channel of the rule; the results, one per channel.
    pub async fn send(&self, store: &Arc<dyn Store>, firing: &Document, rule: &Rule) -> Vec<Delivery> {
        let mut out = Vec::new();
        let events = matched_events(store.as_ref(), &firing.org, &firing.body).await;
        for to in &rule.notify.emails {
            let r = retry(|| self.email(to, firing, rule, &events)).await;
            out.push(delivery("email", to, r));
        }
        if let Some(w) = &rule.notify.webhook {
            let r = retry(|| self.webhook(w, firing, rule, &events)).await;
            out.push(delivery("webhook", &w.url, r));
        }
        out
    }

    async fn email(&self, to: &str, firing: &Document, rule: &Rule, events: &[Value]) -> Result<(), String> {
        use lettre::message::header::ContentType;
        use lettre::{AsyncTransport, Message};
        if self.smtp.host.is_empty() {
            return Err("no SMTP server is configured (smtp.host)".into());
        }
        let b = &firing.body;
        let mut text = format!(
            "Alert rule \"{}\" fired in organization {}.\n\nCondition: {}\nMatching events: {}{}\nBetween {} and {}\nFired at {}\n\nSee them: {}\n",
            rule.name,
            firing.org,
            super::describe(&rule.condition),
            b["count"],
            b["key"].as_str().map(|k| format!(" (group {k})")).unwrap_or_default(),
            b["time_from"].as_str().unwrap_or(""),
            b["time_to"].as_str().unwrap_or(""),
            b["fired_at"].as_str().unwrap_or(""),
            b["link"].as_str().unwrap_or(""),
        );
        if !events.is_empty() {
            text.push_str("\nThe first of them:\n");
            for e in events.iter().take(10) {
                text.push_str(&format!(
                    "  seq {}  {}  {} by {}  ({})\n",
                    e["seq"],
                    e["time"].as_str().unwrap_or(""),
                    e["action"].as_str().unwrap_or(""),
                    e["actor"]["id"].as_str().unwrap_or(""),
                    e["outcome"].as_str().unwrap_or("")
                ));
            }
        }
        let subject: String = format!("[Trail] {} fired in {}", rule.name, firing.org)
            .chars()
            .filter(|c| !c.is_control())
            .collect();
        let msg = Message::builder()
            .from(self.smtp.from.parse().map_err(|e| format!("smtp.from {:?}: {e}", self.smtp.from))?)
            .to(to.parse().map_err(|e| format!("{to:?}: {e}"))?)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(text)
            .map_err(|e| e.to_string())?;
        let transport = crate::mail::transport(&self.smtp)?;
        transport.send(msg).await.map(|_| ()).map_err(|e| crate::mail::describe(&e))
    }

    async fn webhook(
        &self,
        w: &super::rules::RuleWebhook,
        firing: &Document,
        rule: &Rule,
        events: &[Value],
    ) -> Result<(), String> {
        let secret = match &rule.sealed_secret {
            Some(s) => {
                use base64::Engine;
                let sealed =
                    base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| e.to_string())?;
                String::from_utf8(self.sealer.open(&sealed)?).map_err(|e| e.to_string())?
            }
            None => return Err("the rule's webhook has no signing secret".into()),
        };
        let cfg = w.destination(&rule.name);
        let mut transport = crate::stream::deliver::Transport::new(&cfg, secret)?;
        let mut body = firing.body.clone();
        body["id"] = json!(firing.id);
        if let Some(m) = body.as_object_mut() {
            m.remove("fired_at_micros");
            m.remove("deliveries");
            m.remove("delivered");
        }
        let payload = json!({
            "type": "alert.fired",
            "org": firing.org,
            "rule": {"id": body["rule_id"], "name": rule.name, "condition": super::describe(&rule.condition)},
            "firing": body,
            "events": events,
        });
        let bytes = serde_json::to_vec(&payload).map_err(|e| e.to_string())?;
        transport.post(bytes, &format!("{}/alert/{}", firing.org, firing.id)).await
    }
}

async fn retry<F, Fut>(mut attempt: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut last = Err("not tried".to_string());
    for wait in ATTEMPTS {
        tokio::time::sleep(wait).await;
        last = attempt().await;
        if last.is_ok() {
            break;
        }
    }
    last
}

fn delivery(channel: &str, to: &str, r: Result<(), String>) -> Delivery {
    Delivery {
        channel: channel.into(),
        to: to.into(),
        ok: r.is_ok(),
        error: r.err(),
        at: format_rfc3339(now()),
    }
}

/// The first matched events of a firing, as the API shows them (at most 10).
async fn matched_events(store: &dyn Store, org: &str, body: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for seq in body["seqs"].as_array().into_iter().flatten().filter_map(Value::as_u64).take(10) {
        if let Ok(records) = store.events_after(org, seq.checked_sub(1), 1).await
            && let Some(r) = records.first().filter(|r| r.seq == seq)
            && let Ok(e) = trail_model::canonical::decode(&r.bytes)
        {
            out.push(e.to_json(&trail_merkle::leaf_hash(&r.bytes)));
        }
    }
    out
}
