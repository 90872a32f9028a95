//! A destination's configuration: what the API accepts (checked here, with errors naming the field),
//! what the store keeps (as JSON), and the filter that picks the events it receives.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use trail_model::query::ActionMatch;
use trail_model::{Outcome, StoredEvent};

use crate::error::ApiError;

/// Where events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// JSON batches POSTed over HTTPS, signed with HMAC-SHA256, with proofs of completeness.
    Webhook,
    /// RFC 5424 messages over TCP or TCP+TLS, octet-counted.
    Syslog,
    /// Splunk's HTTP Event Collector (`/services/collector/event`), with its token.
    SplunkHec,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::Syslog => "syslog",
            Kind::SplunkHec => "splunk_hec",
        }
    }
}

/// How each event is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// The event as the API answers it (with its leaf hash).
    #[default]
    Json,
    /// OCSF 1.8.0 (class per action; Trail's event in `raw_data`).
    Ocsf,
    /// ArcSight CEF (syslog only).
    Cef,
}

impl PayloadFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadFormat::Json => "json",
            PayloadFormat::Ocsf => "ocsf",
            PayloadFormat::Cef => "cef",
        }
    }
}

/// Which events a destination receives. Each list is OR within itself; lists AND together; empty = all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StreamFilter {
    /// Actions, exact or a prefix ending in `*` (`user.*`).
    #[schemars(length(max = 100))]
    pub actions: Vec<String>,
    #[schemars(length(max = 2))]
    pub outcomes: Vec<OutcomeName>,
    /// Event sources (`console`, `api`, `trail` for Trail's own records…).
    #[schemars(length(max = 100))]
    pub sources: Vec<String>,
}

impl StreamFilter {
    pub fn check(&self) -> Result<(), ApiError> {
        for a in &self.actions {
            let stem = a.strip_suffix('*').unwrap_or(a);
            if a.is_empty() || a.len() > 129 || stem.contains('*') {
                return Err(ApiError::bad_request(
                    "invalid_field",
                    format!("filter.actions: {a:?} must be an action, or a prefix ending in a single *"),
                )
                .with_field("filter"));
            }
        }
        if self.sources.iter().any(|s| s.is_empty() || s.len() > 64) {
            return Err(ApiError::bad_request("invalid_field", "filter.sources: 1 to 64 characters each")
                .with_field("filter"));
        }
        Ok(())
    }

    pub fn passes(&self, e: &StoredEvent) -> bool {
        let action = self.actions.is_empty()
            || self.actions.iter().any(|a| match a.strip_suffix('*') {
                Some(p) => ActionMatch::Prefix(p.to_string()).matches(&e.action),
                None => a == &e.action,
            });
        let outcome = self.outcomes.is_empty() || self.outcomes.iter().any(|o| o.outcome() == e.outcome);
        let source =
            self.sources.is_empty() || self.sources.iter().any(|s| e.source.as_deref() == Some(s.as_str()));
        action && outcome && source
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty() && self.outcomes.is_empty() && self.sources.is_empty()
    }
}

/// An event's outcome, as filters name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeName {
    Success,
    Failure,
}

impl OutcomeName {
    fn outcome(self) -> Outcome {
        match self {
            OutcomeName::Success => Outcome::Success,
            OutcomeName::Failure => Outcome::Failure,
        }
    }
}

/// What the store keeps of a destination (its `config` JSON) and the API shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    pub name: String,
    pub kind: Kind,
    /// Webhook and HEC: the URL POSTed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Syslog: `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Syslog: TCP+TLS (RFC 5425 framing) rather than plain TCP.
    #[serde(default)]
    pub tls: bool,
    /// A PEM CA certificate trusted besides the system's roots (a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    pub format: PayloadFormat,
    #[serde(default)]
    pub filter: StreamFilter,
    /// Syslog facility (0-23); 13 is "log audit".
    #[serde(default = "default_facility")]
    pub facility: u8,
    /// HEC: the index and sourcetype events are given (the token's defaults when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sourcetype: Option<String>,
}

fn default_facility() -> u8 {
    trail_model::siem::FACILITY_LOG_AUDIT
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_field", message).with_field(field)
}

/// Whether an http:// URL is allowed: only to this machine (a local relay or a test receiver).
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl DestinationConfig {
    /// Checks everything a type cannot say; the error names the field.
    pub fn check(&self) -> Result<(), ApiError> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(invalid("name", "name must be 1 to 100 characters"));
        }
        match self.kind {
            Kind::Webhook | Kind::SplunkHec => {
                let Some(url) = self.url.as_deref() else {
                    return Err(invalid("url", format!("a {} destination needs a url", self.kind.as_str())));
                };
                let u =
                    reqwest::Url::parse(url).map_err(|e| invalid("url", format!("url is not a URL: {e}")))?;
                let host = u.host_str().unwrap_or_default();
                match u.scheme() {
                    "https" => {}
                    "http" if is_loopback(host) => {}
                    _ => return Err(invalid("url", "url must be https:// (http:// only to this machine)")),
                }
                if !u.username().is_empty() || u.password().is_some() {
                    return Err(invalid(
                        "url",
                        "url must not carry credentials; a webhook is signed instead",
                    ));
                }
                if self.address.is_some() {
                    return Err(invalid("address", "address is for syslog destinations; use url"));
                }
                if self.format == PayloadFormat::Cef {
                    return Err(invalid("format", "cef is for syslog destinations; use json or ocsf"));
                }
            }
            Kind::Syslog => {
                let Some(addr) = self.address.as_deref() else {
                    return Err(invalid("address", "a syslog destination needs an address, host:port"));
                };
                let ok = addr
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
                if !ok || addr.len() > 300 {
                    return Err(invalid("address", format!("address {addr:?} must be host:port")));
                }
                if self.url.is_some() {
                    return Err(invalid("url", "url is for webhook and HEC destinations; use address"));
                }
                if self.facility > 23 {
                    return Err(invalid("facility", "facility must be 0 to 23"));
                }
            }
        }
        if self.kind != Kind::SplunkHec && (self.index.is_some() || self.sourcetype.is_some()) {
            return Err(invalid("index", "index and sourcetype are for splunk_hec destinations"));
        }
        if let Some(pem) = &self.ca_pem {
            crate::stream::deliver::parse_ca(pem).map_err(|e| invalid("ca_pem", e))?;
        }
        self.filter.check()
    }

    /// Where it sends, for lists and logs (never a secret).
    pub fn endpoint(&self) -> String {
        match self.kind {
            Kind::Syslog => {
                format!(
                    "{}://{}",
                    if self.tls { "tls" } else { "tcp" },
                    self.address.as_deref().unwrap_or("")
                )
            }
            _ => self.url.clone().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kind: Kind) -> DestinationConfig {
        DestinationConfig {
            name: "SIEM".into(),
            kind,
            url: None,
            address: None,
            tls: true,
            ca_pem: None,
            format: PayloadFormat::Json,
            filter: StreamFilter::default(),
            facility: 13,
            index: None,
            sourcetype: None,
        }
    }

    fn field(c: &DestinationConfig) -> Option<String> {
        c.check().err().and_then(|e| e.field)
    }

    #[test]
    fn urls_must_be_https_except_to_this_machine() {
        let mut c = config(Kind::Webhook);
        assert_eq!(field(&c).as_deref(), Some("url"));
        for (url, ok) in [
            ("https://siem.example/in", true),
            ("http://siem.example/in", false),
            ("http://127.0.0.1:9000/in", true),
            ("http://[::1]:9000/in", true),
            ("http://localhost/in", true),
            ("https://user:pw@siem.example/in", false),
            ("ftp://siem.example", false),
        ] {
            c.url = Some(url.into());
            assert_eq!(c.check().is_ok(), ok, "{url}");
        }
        c.url = Some("https://siem.example/in".into());
        c.format = PayloadFormat::Cef;
        assert_eq!(field(&c).as_deref(), Some("format"));
    }

    #[test]
    fn syslog_needs_host_and_port() {
        let mut c = config(Kind::Syslog);
        for (addr, ok) in
            [("siem:6514", true), ("siem", false), (":514", false), ("siem:0", false), ("[::1]:514", true)]
        {
            c.address = Some(addr.into());
            assert_eq!(c.check().is_ok(), ok, "{addr}");
        }
        c.format = PayloadFormat::Cef;
        c.facility = 24;
        assert_eq!(field(&c).as_deref(), Some("facility"));
    }

    #[test]
    fn filters_pick_by_action_prefix_outcome_and_source() {
        let f = StreamFilter {
            actions: vec!["user.*".into(), "project.created".into()],
            outcomes: vec![OutcomeName::Failure],
            sources: vec![],
        };
        let mut e = trail_model::StoredEvent::from_json(&serde_json::json!({
            "org": "a", "seq": 0, "id": "x", "time": "2026-01-01T00:00:00Z", "received_at": "2026-01-01T00:00:00Z",
            "actor": {"id": "u", "type": "user"}, "action": "user.sign_in_failed", "target": {"type": "user"},
            "outcome": "failure"
        }))
        .unwrap();
        assert!(f.passes(&e));
        e.outcome = Outcome::Success;
        assert!(!f.passes(&e));
        e.outcome = Outcome::Failure;
        e.action = "project.updated".into();
        assert!(!f.passes(&e));
        let bad = StreamFilter { actions: vec!["us*er".into()], ..Default::default() };
        assert!(bad.check().is_err());
    }
}
