//! A typed HTTP client for Trail's API, used by the CLI and the end-to-end tests.
//!
//! It speaks JSON over HTTP and nothing else: no store, no model types, so it can be used from any
//! program that wants to send or read audit events.

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

/// An error answer from Trail, or a transport failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{status} {code}: {message}")]
    Api { status: u16, code: String, message: String, field: Option<String>, body: Value },
    #[error("cannot reach Trail: {0}")]
    Transport(#[from] reqwest::Error),
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            ClientError::Transport(_) => None,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            ClientError::Transport(_) => None,
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            ClientError::Api { field, .. } => field.as_deref(),
            ClientError::Transport(_) => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// One item of an ingest answer.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct IngestResult {
    pub index: Option<usize>,
    pub id: Option<String>,
    pub seq: Option<u64>,
    pub status: String,
    pub error: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IngestResponse {
    pub results: Vec<IngestResult>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventPage {
    pub events: Vec<Value>,
    pub next_cursor: Option<String>,
}

/// A client bound to one server and (optionally) one credential.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

/// The credential is a secret: `Debug` says whether there is one, never what it is.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(base: impl Into<String>) -> Self {
        let base = base.into().trim_end_matches('/').to_string();
        Self { base, http: reqwest::Client::new(), token: None }
    }

    /// The same client sending `token` (a session token or an API key secret) as Bearer.
    pub fn with_token(&self, token: impl Into<String>) -> Self {
        Self { token: Some(token.into()), ..self.clone() }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request builder with the credential applied, for anything this client has no method for.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut rb = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        rb
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<Value> {
        let (status, text) = Self::send_text(rb).await?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(if status == StatusCode::NO_CONTENT { Value::Null } else { body })
    }

    /// The answer's status and text when it succeeded, else the API's error.
    async fn send_text(rb: reqwest::RequestBuilder) -> Result<(StatusCode, String)> {
        let resp = rb.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if status.is_success() {
            return Ok((status, text));
        }
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        let err = &body["error"];
        Err(ClientError::Api {
            status: status.as_u16(),
            code: err["code"].as_str().unwrap_or("unknown").to_string(),
            message: err["message"].as_str().unwrap_or("").to_string(),
            field: err["field"].as_str().map(str::to_string),
            body: body.clone(),
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    /// A GET whose answer is text (checkpoints, manifests, downloads), or the API's error.
    pub async fn get_text(&self, path: &str) -> Result<String> {
        Self::send_text(self.request(Method::GET, path)).await.map(|(_, text)| text)
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.request(Method::PATCH, path).json(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.request(Method::PUT, path).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value> {
        self.send(self.request(Method::DELETE, path)).await
    }

    /// Signs in and returns a client carrying the session token.
    pub async fn login(&self, email: &str, password: &str) -> Result<Client> {
        let v = self.post("/v1/auth/login", &json!({"email": email, "password": password})).await?;
        Ok(self.with_token(v["token"].as_str().unwrap_or_default()))
    }

    pub async fn logout(&self) -> Result<()> {
        self.send(self.request(Method::POST, "/v1/auth/logout")).await.map(|_| ())
    }

    pub async fn me(&self) -> Result<Value> {
        self.get("/v1/me").await
    }

    /// Ingests one event object or a `{"events": [...]}` batch.
    pub async fn ingest(&self, org: &str, body: &Value) -> Result<IngestResponse> {
        let v = self.post(&format!("/v1/orgs/{org}/events"), body).await?;
        serde_json::from_value(v).map_err(|e| ClientError::Api {
            status: 200,
            code: "unexpected_answer".into(),
            message: e.to_string(),
            field: None,
            body: Value::Null,
        })
    }

    /// Ingests a batch of events.
    pub async fn ingest_batch(&self, org: &str, events: &[Value]) -> Result<IngestResponse> {
        self.ingest(org, &json!({ "events": events })).await
    }

    /// One page of a query; `params` are query-string pairs (repeat a key for OR).
    pub async fn query(&self, org: &str, params: &[(&str, &str)]) -> Result<EventPage> {
        let v = self.send(self.request(Method::GET, &format!("/v1/orgs/{org}/events")).query(params)).await?;
        Ok(EventPage {
            events: v["events"].as_array().cloned().unwrap_or_default(),
            next_cursor: v["next_cursor"].as_str().map(str::to_string),
        })
    }

    /// Every page of a query, following cursors.
    pub async fn query_all(&self, org: &str, params: &[(&str, &str)]) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut p: Vec<(&str, &str)> = params.to_vec();
            if let Some(c) = &cursor {
                p.push(("cursor", c));
            }
            let page = self.query(org, &p).await?;
            out.extend(page.events);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    pub async fn event(&self, org: &str, id: &str) -> Result<Value> {
        self.get(&format!("/v1/orgs/{org}/events/{id}")).await
    }

    pub async fn histogram(&self, org: &str, params: &[(&str, &str)]) -> Result<Value> {
        self.send(self.request(Method::GET, &format!("/v1/orgs/{org}/events/histogram")).query(params)).await
    }

    /// Creates an API key; the answer holds the secret (shown once).
    pub async fn create_api_key(&self, org: &str, name: &str, scopes: &[&str]) -> Result<Value> {
        self.post(&format!("/v1/orgs/{org}/api-keys"), &json!({"name": name, "scopes": scopes})).await
    }

    pub async fn api_keys(&self, org: &str) -> Result<Value> {
        self.get(&format!("/v1/orgs/{org}/api-keys")).await
    }

    pub async fn revoke_api_key(&self, org: &str, id: &str) -> Result<()> {
        self.delete(&format!("/v1/orgs/{org}/api-keys/{id}")).await.map(|_| ())
    }

    pub async fn create_org(&self, slug: &str, name: &str) -> Result<Value> {
        self.post("/v1/orgs", &json!({"slug": slug, "name": name})).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn debug_never_shows_the_token() {
        let c = super::Client::new("http://127.0.0.1:1").with_token("trk_abc.s3cr3t-value");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("[redacted]") && shown.contains("127.0.0.1:1"), "{shown}");
    }
}
