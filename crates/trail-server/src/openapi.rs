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

fn org_only() -> Value {
    json!([path_param("org", "organization slug")])
}

fn org_and(name: &str, description: &str) -> Value {
    json!([path_param("org", "organization slug"), path_param(name, description)])
}

fn group_and(name: &str, description: &str) -> Value {
    json!([
        path_param("org", "organization slug"),
        path_param("id", "group id"),
        path_param(name, description)
    ])
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
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {"title": "Trail", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Self-hosted, tamper-evident audit log. Errors are {\"error\": {\"code\", \"message\", \"field\"?}}."},
        "paths": {
            "/healthz": {"get": op("Liveness", &[], json!([]), None, json!({"200": {"description": "alive"}}))},
            "/readyz": {"get": op("Readiness: the store answers reads and writes", &[], json!([]), None, json!({"200": {"description": "ready"}, "503": {"$ref": "#/components/responses/Error"}}))},
            "/metrics": {"get": op("Prometheus metrics", &[], json!([]), None, json!({"200": {"description": "text exposition format", "content": {"text/plain": {}}}}))},
            "/v1/openapi.json": {"get": op("This document", &[], json!([]), None, json!({"200": {"description": "OpenAPI 3.1"}}))},
            "/v1/actions": {"get": op("The action catalog: each catalogued action with the label the console shows and its category", &[], json!([]), None,
                json!({"200": ok("the catalog, sorted by action", "ActionList")}))},
            "/v1/auth/login": {"post": op("Sign in; answers a session token and sets the session cookie", &[], json!([]), Some("Login"),
                responses(("200", ok("signed in", "Session")), &[400, 401, 415, 429, 503]))},
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
            "/v1/me/password": {"post": op("Change your password; every other session ends", &session, json!([]), Some("PasswordChange"),
                responses(("204", json!({"description": "changed"})), &[400, 401, 403, 415, 429, 503]))},
            "/v1/orgs/{org}/roles": {
                "get": op("Roles of the org (USER-MANAGEMENT)", &session, org_only(), None, responses(("200", ok("roles", "RoleList")), &[401, 403, 404])),
                "post": op("Create a custom role (USER-MANAGEMENT)", &session, org_only(), Some("NewRole"), responses(("201", ok("created", "Role")), &[400, 401, 403, 409, 415]))
            },
            "/v1/orgs/{org}/roles/{id}": {
                "get": op("One role", &session, org_and("id", "role id"), None, responses(("200", ok("role", "Role")), &[401, 403, 404])),
                "patch": op("Change a custom role's name, description or permissions", &session, org_and("id", "role id"), Some("RoleChange"),
                    responses(("200", ok("changed", "Role")), &[400, 401, 403, 404, 409, 415])),
                "delete": op("Delete a custom role (the built-in admin role cannot be deleted)", &session, org_and("id", "role id"), None,
                    responses(("204", json!({"description": "deleted"})), &[401, 403, 404, 409]))
            },
            "/v1/orgs/{org}/groups": {
                "get": op("Groups with their roles and members (USER-MANAGEMENT)", &session, org_only(), None, responses(("200", ok("groups", "GroupList")), &[401, 403, 404])),
                "post": op("Create a group", &session, org_only(), Some("NewGroup"), responses(("201", ok("created", "Group")), &[400, 401, 403, 409, 415]))
            },
            "/v1/orgs/{org}/groups/{id}": {
                "get": op("One group", &session, org_and("id", "group id"), None, responses(("200", ok("group", "Group")), &[401, 403, 404])),
                "patch": op("Rename or describe a group", &session, org_and("id", "group id"), Some("GroupChange"), responses(("200", ok("changed", "Group")), &[400, 401, 403, 404, 409, 415])),
                "delete": op("Delete a group (not Administrators)", &session, org_and("id", "group id"), None, responses(("204", json!({"description": "deleted"})), &[401, 403, 404, 409]))
            },
            "/v1/orgs/{org}/groups/{id}/roles/{role_id}": {
                "put": op("Give a group a role", &session, group_and("role_id", "role id"), None, responses(("204", json!({"description": "added"})), &[401, 403, 404])),
                "delete": op("Take a role from a group", &session, group_and("role_id", "role id"), None, responses(("204", json!({"description": "removed"})), &[401, 403, 404, 409]))
            },
            "/v1/orgs/{org}/groups/{id}/members/{user_id}": {
                "put": op("Add a user to a group", &session, group_and("user_id", "user id"), None, responses(("204", json!({"description": "added"})), &[401, 403, 404])),
                "delete": op("Remove a user from a group (Administrators keeps at least one)", &session, group_and("user_id", "user id"), None,
                    responses(("204", json!({"description": "removed"})), &[401, 403, 404, 409]))
            },
            "/v1/orgs/{org}/users": {"get": op("Members of the org with their groups and effective permissions", &session, org_only(), None,
                responses(("200", ok("users", "UserList")), &[401, 403, 404]))},
            "/v1/orgs/{org}/users/{id}": {"delete": op("Remove a user from the org; their sessions end", &session, org_and("id", "user id"), None,
                responses(("204", json!({"description": "removed"})), &[401, 403, 404, 409]))},
            "/v1/orgs/{org}/invitations": {
                "get": op("Invitations with their status", &session, org_only(), None, responses(("200", ok("invitations", "InvitationList")), &[401, 403, 404])),
                "post": op("Invite emails into groups; each gets a single-use accept link (also emailed when SMTP is configured)", &session, org_only(), Some("NewInvitations"),
                    responses(("201", ok("links", "CreatedInvitations")), &[400, 401, 403, 415]))
            },
            "/v1/orgs/{org}/invitations/{id}": {"delete": op("Revoke an invitation", &session, org_and("id", "invitation id"), None,
                responses(("204", json!({"description": "revoked"})), &[401, 403, 404]))},
            "/v1/invitations/{token}/accept": {"post": op("Accept an invitation: signed in as the invited user, or with {\"password\"} that creates the account or is the existing account's own", &[],
                json!([path_param("token", "the token at the end of accept_url")]), None,
                responses(("200", ok("the user", "UserRef")), &[400, 401, 404, 409, 429, 503]))},
            "/v1/orgs/{org}/exports": {
                "get": op("Export history, newest first (LOG-MANAGEMENT or events:read)", &read, org_only(), None, responses(("200", ok("exports", "ExportList")), &[401, 403, 404])),
                "post": op("Request an export of the events matching filters (the query parameters); runs in the background", &read, org_only(), Some("NewExport"),
                    responses(("202", ok("accepted, pending", "Export")), &[400, 401, 403, 415, 429]))
            },
            "/v1/orgs/{org}/exports/{id}": {"get": op("One export and its status", &read, org_and("id", "export id"), None,
                responses(("200", ok("export", "Export")), &[401, 403, 404]))},
            "/v1/orgs/{org}/exports/{id}/download": {"get": op("The export file (CSV or NDJSON), streamed; 409 until completed, 410 once expired", &read,
                org_and("id", "export id"), None, responses(("200", json!({"description": "the file", "content": {"text/csv": {}, "application/x-ndjson": {}}})), &[401, 403, 404, 409, 410]))},
            "/v1/orgs/{org}/exports/{id}/manifest": {"get": op("The signed manifest: a signed note whose text is JSON with the filters, window, row count, SHA-256 and a covering checkpoint", &read,
                org_and("id", "export id"), None, responses(("200", json!({"description": "signed note", "content": {"text/plain": {}}})), &[401, 403, 404, 409]))},
            "/v1/orgs/{org}/settings": {
                "get": op("Retention settings (ORG-SETTINGS): hot_days, archive_days, legal hold, and the server's bounds", &session, org_only(), None,
                    responses(("200", ok("settings", "OrgSettings")), &[401, 403, 404])),
                "patch": op("Change retention settings (ORG-SETTINGS); recorded in the org's log with old and new values", &session, org_only(), Some("OrgSettingsChange"),
                    responses(("200", ok("the new settings", "OrgSettings")), &[400, 401, 403, 404, 415]))
            },
            "/v1/orgs/{org}/archives": {"get": op("Archived parts of the org (events past hot retention): period, seq range, rows, SHA-256", &read, org_only(), None,
                responses(("200", ok("parts", "ArchiveList")), &[401, 403, 404, 503]))},
            "/v1/orgs/{org}/archives/restore": {"post": op("Bring archived events of a time window back as an NDJSON export with a signed manifest (see exports)", &read, org_only(), Some("NewRestore"),
                responses(("202", ok("accepted, pending", "Export")), &[400, 401, 403, 415, 429, 503]))},
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
                "ActionList": {"type": "object", "required": ["actions"], "properties": {"actions": {"type": "array", "items": {"type": "object",
                    "required": ["action", "label", "category"], "properties": {"action": {"type": "string"}, "label": {"type": "string"}, "category": {"type": "string"}}}}}},
                "Session": {"type": "object", "properties": {"token": {"type": "string"}, "csrf_token": {"type": "string"}, "expires_at": {"type": "string", "format": "date-time"},
                    "user": {"type": "object", "properties": {"id": {"type": "string"}, "email": {"type": "string"}}}}},
                "Me": {"type": "object", "properties": {"id": {"type": "string"}, "email": {"type": "string"}, "server_admin": {"type": "boolean"},
                    "orgs": {"type": "array", "items": {"type": "object", "properties": {"slug": {"type": "string"}, "name": {"type": "string"}, "permissions": {"type": "array", "items": {"type": "string"}}}}}}},
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
                    "self_audit": {"type": "boolean", "description": "Trail's own record (source trail, which ingest refuses); false for every event sent to the API"},
                    "proof": {"description": "GET by id only: inclusion proof against the latest checkpoint", "type": ["object", "null"], "properties": {
                        "tree_size": {"type": "integer"}, "hashes": {"type": "array", "items": {"type": "string"}}, "checkpoint": {"type": "string"}}},
                    "proof_pending": {"type": "boolean", "description": "GET by id only: the event is newer than the latest checkpoint"}}}]},
                "Role": {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"},
                    "permissions": {"type": "array", "items": {"type": "string"}}, "builtin": {"type": "boolean"}}},
                "RoleList": {"type": "object", "properties": {"roles": {"type": "array", "items": {"$ref": "#/components/schemas/Role"}}}},
                "Group": {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"},
                    "roles": {"type": "array", "items": {"type": "string"}}, "members": {"type": "array", "items": {"type": "string"}}, "builtin": {"type": "boolean"}}},
                "GroupList": {"type": "object", "properties": {"groups": {"type": "array", "items": {"$ref": "#/components/schemas/Group"}}}},
                "UserList": {"type": "object", "properties": {"users": {"type": "array", "items": {"type": "object", "properties": {
                    "id": {"type": "string"}, "email": {"type": "string"}, "groups": {"type": "array", "items": {"type": "string"}},
                    "permissions": {"type": "array", "items": {"type": "string"}}}}}}},
                "UserRef": {"type": "object", "properties": {"id": {"type": "string"}, "email": {"type": "string"}}},
                "CreatedInvitations": {"type": "object", "properties": {"invitations": {"type": "array", "items": {"type": "object", "properties": {
                    "id": {"type": "string"}, "email": {"type": "string"}, "groups": {"type": "array", "items": {"type": "string"}},
                    "expires_at": {"type": "string"}, "accept_url": {"type": "string"}}}}}},
                "InvitationList": {"type": "object", "properties": {"invitations": {"type": "array", "items": {"type": "object", "properties": {
                    "id": {"type": "string"}, "email": {"type": "string"}, "groups": {"type": "array", "items": {"type": "string"}}, "created_by": {"type": "string"},
                    "created_at": {"type": "string"}, "expires_at": {"type": "string"}, "status": {"enum": ["pending", "accepted", "revoked", "expired"]}}}}}},
                "Export": {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "format": {"type": "string"}, "filters": {"type": "object"},
                    "status": {"enum": ["pending", "running", "completed", "failed", "expired"]}, "error": {"type": ["string", "null"]},
                    "requested_by": {"type": "string"}, "created_at": {"type": "string"}, "started_at": {"type": ["string", "null"]},
                    "finished_at": {"type": ["string", "null"]}, "expires_at": {"type": ["string", "null"]}, "row_count": {"type": "integer"},
                    "size_bytes": {"type": "integer"}, "sha256": {"type": ["string", "null"]}}},
                "ExportList": {"type": "object", "properties": {"exports": {"type": "array", "items": {"$ref": "#/components/schemas/Export"}}}},
                "InclusionProof": {"type": "object", "properties": {"seq": {"type": "integer"}, "tree_size": {"type": "integer"}, "hashes": {"type": "array", "items": {"type": "string"}}}},
                "ConsistencyProof": {"type": "object", "properties": {"from": {"type": "integer"}, "to": {"type": "integer"}, "hashes": {"type": "array", "items": {"type": "string"}}}},
                "EventPage": {"type": "object", "properties": {"events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}, "next_cursor": {"type": ["string", "null"]}}},
                "Histogram": {"type": "object", "properties": {"from": {"type": "string"}, "to": {"type": "string"}, "interval_seconds": {"type": "integer"},
                    "buckets": {"type": "array", "items": {"type": "object", "properties": {"start": {"type": "string"}, "count": {"type": "integer"}}}}}},
                "ApiKey": {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "scopes": {"type": "array", "items": {"type": "string"}},
                    "created_by": {"type": ["string", "null"]}, "created_at": {"type": "string"}, "expires_at": {"type": ["string", "null"]}, "revoked_at": {"type": ["string", "null"]}}},
                "ApiKeyWithSecret": {"allOf": [{"$ref": "#/components/schemas/ApiKey"}, {"type": "object", "properties": {"secret": {"type": "string"}}}]},
                "ApiKeyList": {"type": "object", "properties": {"api_keys": {"type": "array", "items": {"$ref": "#/components/schemas/ApiKey"}}}},
                "OrgSettings": {"type": "object", "properties": {"hot_days": {"type": "integer"}, "archive_days": {"type": "integer"}, "legal_hold": {"type": "boolean"},
                    "legal_hold_reason": {"type": ["string", "null"]}, "updated_at": {"type": ["string", "null"]}, "updated_by": {"type": ["string", "null"]},
                    "server_defaults": {"type": "boolean"}, "bounds": {"type": "object", "properties": {"min_days": {"type": "integer"}, "max_days": {"type": "integer"}}}}},
                "ArchiveList": {"type": "object", "properties": {"parts": {"type": "array", "items": {"type": "object", "properties": {
                    "period": {"type": "string"}, "first_seq": {"type": "integer"}, "last_seq": {"type": "integer"}, "row_count": {"type": "integer"},
                    "time_min": {"type": "string"}, "time_max": {"type": "string"}, "size_bytes": {"type": "integer"}, "sha256": {"type": "string"},
                    "archived_at": {"type": "string"}, "file": {"type": "string"}, "manifest": {"type": "string"}}}}}},
            }
        }
    });
    // Request bodies: the schemas of the types the handlers deserialize into.
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        schemas.extend(crate::routes::bodies::schemas());
    }
    doc["paths"]["/v1/invitations/{token}/accept"]["post"]["requestBody"] = json!({"required": false,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AcceptInvitation"}}}});
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    /// Every reference points at something the document defines (a generated schema referring to a
    /// type that was not collected would otherwise only fail in a client generator).
    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 50);
        for r in all {
            let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{r} is not local"));
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }
}
