//! The OpenAPI 3.1 description of the API, served at `/v1/openapi.json`. A test checks it names exactly
//! the routes the router serves, and a snapshot makes every interface change deliberate.

use serde_json::{Value, json};

fn op(summary: &str, security: &[&str], params: Value, body: Option<&str>, responses: Value) -> Value {
    let mut o = json!({"summary": summary, "parameters": params, "responses": responses});
    if !security.is_empty() {
        o["security"] = Value::Array(security.iter().map(|s| json!({ *s: [] })).collect());
    }
    if let Some(schema) = body {
        o["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    }
    o
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": {"type": "string"}})
}

fn query_param(name: &str, description: &str, repeat: bool) -> Value {
    let schema = if repeat {
        json!({"type": "array", "items": {"type": "string"}})
    } else {
        json!({"type": "string"})
    };
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema, "explode": true})
}

fn filter_params(extra: &[Value]) -> Value {
    let mut p = vec![
        path_param("org", "organization slug"),
        query_param("from", "RFC 3339 start (inclusive); default: to minus 24 hours", false),
        query_param("to", "RFC 3339 end (exclusive); default: now", false),
        query_param("actor", "actor id; repeat for OR", true),
        query_param("action", "action, exact or prefix with trailing *; repeat for OR", true),
        query_param("target_type", "target type; repeat for OR", true),
        query_param("target_id", "target id; repeat for OR", true),
        query_param("project", "project; repeat for OR", true),
        query_param("outcome", "success or failure", true),
        query_param("source", "source; repeat for OR", true),
        query_param(
            "q",
            "free text: words must all match; the last token of each word matches as a prefix",
            false,
        ),
    ];
    p.extend(extra.iter().cloned());
    Value::Array(p)
}

fn ok(description: &str, schema: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn errors(codes: &[u16]) -> Value {
    let mut m = serde_json::Map::new();
    for c in codes {
        m.insert(c.to_string(), json!({"$ref": "#/components/responses/Error"}));
    }
    Value::Object(m)
}

fn responses(success: (&str, Value), codes: &[u16]) -> Value {
    let mut r = errors(codes);
    r[success.0] = success.1;
    r
}

/// The whole document.
pub fn document() -> Value {
    let session = ["session", "cookie"];
    let read = ["session", "cookie", "apiKey"];
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Trail", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Self-hosted, tamper-evident audit log. Errors are {\"error\": {\"code\", \"message\", \"field\"?}}."},
        "paths": {
            "/healthz": {"get": op("Liveness", &[], json!([]), None, json!({"200": {"description": "alive"}}))},
            "/readyz": {"get": op("Readiness: the store answers reads and writes", &[], json!([]), None, json!({"200": {"description": "ready"}, "503": {"$ref": "#/components/responses/Error"}}))},
            "/metrics": {"get": op("Prometheus metrics", &[], json!([]), None, json!({"200": {"description": "text exposition format", "content": {"text/plain": {}}}}))},
            "/v1/openapi.json": {"get": op("This document", &[], json!([]), None, json!({"200": {"description": "OpenAPI 3.1"}}))},
            "/v1/auth/login": {"post": op("Sign in; answers a session token and sets the session cookie", &[], json!([]), Some("Login"),
                responses(("200", ok("signed in", "Session")), &[400, 401, 415, 429]))},
            "/v1/auth/logout": {"post": op("Sign out: revokes the session", &session, json!([]), None,
                responses(("204", json!({"description": "signed out"})), &[401, 403]))},
            "/v1/me": {"get": op("The signed-in user, their orgs and permissions", &session, json!([]), None,
                responses(("200", ok("the user", "Me")), &[401, 403]))},
            "/v1/orgs": {
                "get": op("Organizations the caller belongs to", &session, json!([]), None, responses(("200", ok("orgs", "OrgList")), &[401, 403])),
                "post": op("Create an organization (server administrators)", &session, json!([]), Some("NewOrg"),
                    responses(("201", ok("created", "Org")), &[400, 401, 403, 409, 415]))
            },
            "/v1/orgs/{org}/events": {
                "post": op("Ingest one event or a batch of up to 1000 (API key with events:write). Acknowledged means durable.",
                    &["apiKey"], json!([path_param("org", "organization slug")]), Some("IngestBody"),
                    responses(("200", ok("per-item results; valid items are stored even when others are rejected", "IngestResults")), &[400, 401, 403, 404, 413, 415, 503])),
                "get": op("Query events, newest first (LOG-MANAGEMENT or events:read)", &read,
                    filter_params(&[query_param("limit", "1-1000, default 50", false), query_param("cursor", "next_cursor of the previous page", false)]),
                    None, responses(("200", ok("a page of events", "EventPage")), &[400, 401, 403, 404]))
            },
            "/v1/orgs/{org}/events/histogram": {"get": op("Event counts per time bucket for the same filters", &read,
                filter_params(&[query_param("interval", "bucket width: seconds, or 5m, 1h, 1d; default picked from the window", false)]),
                None, responses(("200", ok("buckets", "Histogram")), &[400, 401, 403, 404]))},
            "/v1/orgs/{org}/events/{id}": {"get": op("One event by id, with its seq and leaf hash", &read,
                json!([path_param("org", "organization slug"), path_param("id", "event id")]), None,
                responses(("200", ok("the event", "Event")), &[401, 403, 404]))},
            "/v1/orgs/{org}/api-keys": {
                "get": op("The org's API keys (KEY-MANAGEMENT)", &session, json!([path_param("org", "organization slug")]), None,
                    responses(("200", ok("keys", "ApiKeyList")), &[401, 403, 404])),
                "post": op("Create an API key; the secret is in this answer only (KEY-MANAGEMENT)", &session,
                    json!([path_param("org", "organization slug")]), Some("NewApiKey"),
                    responses(("201", ok("created", "ApiKeyWithSecret")), &[400, 401, 403, 404, 415]))
            },
            "/v1/log-key": {"get": op("The log's public key, signed-note verifier format <name>+<key id>+<base64(0x01 ‖ Ed25519 key)>", &[], json!([]), None,
                json!({"200": {"description": "verifier key", "content": {"text/plain": {}}}}))},
            "/v1/orgs/{org}/checkpoint": {"get": op("The latest signed checkpoint (C2SP tlog-checkpoint signed note, origin <server_name>/orgs/<org>)", &read,
                json!([path_param("org", "organization slug")]), None,
                responses(("200", json!({"description": "signed note", "content": {"text/plain": {}}})), &[401, 403, 404]))},
            "/v1/orgs/{org}/proofs/inclusion": {"get": op("RFC 9162 inclusion proof of one event in a tree size", &read,
                json!([path_param("org", "organization slug"), {"name": "seq", "in": "query", "required": true, "schema": {"type": "integer"}},
                       {"name": "tree_size", "in": "query", "required": true, "schema": {"type": "integer"}}]), None,
                responses(("200", ok("base64 hashes, RFC 9162 order", "InclusionProof")), &[400, 401, 403, 404]))},
            "/v1/orgs/{org}/proofs/consistency": {"get": op("RFC 9162 consistency proof between two tree sizes", &read,
                json!([path_param("org", "organization slug"), {"name": "from", "in": "query", "required": true, "schema": {"type": "integer"}},
                       {"name": "to", "in": "query", "required": true, "schema": {"type": "integer"}}]), None,
                responses(("200", ok("base64 hashes, RFC 9162 order", "ConsistencyProof")), &[400, 401, 403, 404]))},
            "/v1/orgs/{org}/api-keys/{id}": {"delete": op("Revoke an API key (KEY-MANAGEMENT)", &session,
                json!([path_param("org", "organization slug"), path_param("id", "key id")]), None,
                responses(("204", json!({"description": "revoked"})), &[401, 403, 404]))}
        },
        "components": {
            "securitySchemes": {
                "session": {"type": "http", "scheme": "bearer", "description": "session token from /v1/auth/login"},
                "apiKey": {"type": "http", "scheme": "bearer", "description": "API key secret (trk_…)"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "trail_session", "description": "console session; state-changing requests also need X-CSRF-Token"}
            },
            "responses": {"Error": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}}}}},
                "Login": {"type": "object", "required": ["email", "password"], "properties": {"email": {"type": "string"}, "password": {"type": "string"}}},
                "Session": {"type": "object", "properties": {"token": {"type": "string"}, "csrf_token": {"type": "string"}, "expires_at": {"type": "string", "format": "date-time"},
                    "user": {"type": "object", "properties": {"id": {"type": "string"}, "email": {"type": "string"}}}}},
                "Me": {"type": "object", "properties": {"id": {"type": "string"}, "email": {"type": "string"}, "server_admin": {"type": "boolean"},
                    "orgs": {"type": "array", "items": {"type": "object", "properties": {"slug": {"type": "string"}, "name": {"type": "string"}, "permissions": {"type": "array", "items": {"type": "string"}}}}}}},
                "NewOrg": {"type": "object", "required": ["slug"], "properties": {"slug": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$"}, "name": {"type": "string"}}},
                "Org": {"type": "object", "properties": {"slug": {"type": "string"}, "name": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"}}},
                "OrgList": {"type": "object", "properties": {"orgs": {"type": "array", "items": {"$ref": "#/components/schemas/Org"}}}},
                "NewEvent": {"type": "object", "additionalProperties": false, "required": ["actor", "action", "target", "outcome"], "properties": {
                    "id": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
                    "time": {"type": "string", "format": "date-time"},
                    "actor": {"type": "object", "additionalProperties": false, "required": ["id"], "properties": {
                        "id": {"type": "string", "maxLength": 256}, "type": {"enum": ["user", "service", "system"]}, "name": {"type": "string", "maxLength": 256},
                        "ip": {"type": "string"}, "user_agent": {"type": "string", "maxLength": 512}}},
                    "action": {"type": "string", "pattern": "^[a-z0-9_]+(\\.[a-z0-9_]+)+$", "maxLength": 128},
                    "target": {"type": "object", "additionalProperties": false, "required": ["type"], "properties": {
                        "type": {"type": "string", "pattern": "^[a-z0-9_]+$", "maxLength": 64}, "id": {"type": "string", "maxLength": 256}, "name": {"type": "string", "maxLength": 256}}},
                    "project": {"type": "string", "maxLength": 128}, "outcome": {"enum": ["success", "failure"]},
                    "reason": {"type": "string", "maxLength": 1024}, "source": {"type": "string", "maxLength": 64}, "info": {"type": "object"}}},
                "IngestBody": {"oneOf": [{"$ref": "#/components/schemas/NewEvent"},
                    {"type": "object", "additionalProperties": false, "required": ["events"], "properties": {"events": {"type": "array", "maxItems": 1000, "items": {"$ref": "#/components/schemas/NewEvent"}}}}]},
                "IngestResults": {"type": "object", "properties": {"results": {"type": "array", "items": {"type": "object", "properties": {
                    "index": {"type": "integer"}, "id": {"type": "string"}, "seq": {"type": "integer"}, "status": {"enum": ["created", "duplicate", "rejected"]},
                    "error": {"type": "object"}}}}}},
                "Event": {"allOf": [{"$ref": "#/components/schemas/NewEvent"}, {"type": "object", "properties": {
                    "org": {"type": "string"}, "seq": {"type": "integer"}, "received_at": {"type": "string", "format": "date-time"},
                    "action_label": {"type": "string"}, "leaf_hash": {"type": "string", "description": "base64 SHA-256(0x00 ‖ canonical bytes)"},
                    "proof": {"description": "GET by id only: inclusion proof against the latest checkpoint", "type": ["object", "null"], "properties": {
                        "tree_size": {"type": "integer"}, "hashes": {"type": "array", "items": {"type": "string"}}, "checkpoint": {"type": "string"}}},
                    "proof_pending": {"type": "boolean", "description": "GET by id only: the event is newer than the latest checkpoint"}}}]},
                "InclusionProof": {"type": "object", "properties": {"seq": {"type": "integer"}, "tree_size": {"type": "integer"}, "hashes": {"type": "array", "items": {"type": "string"}}}},
                "ConsistencyProof": {"type": "object", "properties": {"from": {"type": "integer"}, "to": {"type": "integer"}, "hashes": {"type": "array", "items": {"type": "string"}}}},
                "EventPage": {"type": "object", "properties": {"events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}, "next_cursor": {"type": ["string", "null"]}}},
                "Histogram": {"type": "object", "properties": {"from": {"type": "string"}, "to": {"type": "string"}, "interval_seconds": {"type": "integer"},
                    "buckets": {"type": "array", "items": {"type": "object", "properties": {"start": {"type": "string"}, "count": {"type": "integer"}}}}}},
                "NewApiKey": {"type": "object", "required": ["name", "scopes"], "properties": {"name": {"type": "string"},
                    "scopes": {"type": "array", "items": {"enum": ["events:write", "events:read"]}}, "expires_at": {"type": "string", "format": "date-time"}}},
                "ApiKey": {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "scopes": {"type": "array", "items": {"type": "string"}},
                    "created_by": {"type": ["string", "null"]}, "created_at": {"type": "string"}, "expires_at": {"type": ["string", "null"]}, "revoked_at": {"type": ["string", "null"]}}},
                "ApiKeyWithSecret": {"allOf": [{"$ref": "#/components/schemas/ApiKey"}, {"type": "object", "properties": {"secret": {"type": "string"}}}]},
                "ApiKeyList": {"type": "object", "properties": {"api_keys": {"type": "array", "items": {"$ref": "#/components/schemas/ApiKey"}}}}
            }
        }
    })
}
