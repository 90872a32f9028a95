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

/// An optional query parameter with its value's schema. An empty value (`limit=`) is refused
/// everywhere (400 `empty_parameter`), which `minLength` / the value schemas state.
fn query_param(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

/// A parameter that may repeat (ORed): at most [`trail_model::query::MAX_VALUES`] times.
fn repeated(name: &str, description: &str, item: Value) -> Value {
    let schema = json!({"type": "array", "items": item, "maxItems": trail_model::query::MAX_VALUES});
    let mut p = query_param(name, description, schema);
    p["explode"] = json!(true);
    p["style"] = json!("form");
    p
}

fn text(max: usize) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": max})
}

/// A required non-negative integer query parameter (proofs).
fn index_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": true, "description": description,
           "schema": {"type": "integer", "minimum": 0, "maximum": u64::MAX}})
}

/// The query's value rules for one filter field (also what a viewer token's filter may fix).
fn filter_value(field: &str) -> Value {
    match field {
        "action" => json!({"type": "string", "minLength": 1, "maxLength": 129, "pattern": "^[^*]*\\*?$"}),
        "outcome" => json!({"enum": ["success", "failure"]}),
        "target_type" | "source" => text(64),
        "project" => text(128),
        _ => text(256),
    }
}

/// A viewer token's fixed filter: each field one value or a non-empty list (never null or empty).
fn fixed_filter() -> Value {
    let mut props = serde_json::Map::new();
    for f in crate::viewer::FIXED_FIELDS {
        let item = filter_value(f);
        let many = json!({"type": "array", "items": item, "minItems": 1, "maxItems": trail_model::query::MAX_VALUES});
        props.insert(f.to_string(), json!({"anyOf": [item, many]}));
    }
    json!({"type": "object", "additionalProperties": false, "properties": props,
           "description": "what every read of the token is narrowed to: each field one value or several (ORed)"})
}

fn filter_params(extra: &[Value]) -> Value {
    use trail_model::text::{MAX_QUERY_CHARS, MAX_TERMS};
    let time = json!({"type": "string", "format": "date-time"});
    // 1 to MAX_TERMS words separated by ASCII white space (see trail_model::text).
    let words = format!(
        "^[ \\t\\n\\r]*[^ \\t\\n\\r]+([ \\t\\n\\r]+[^ \\t\\n\\r]+){{0,{}}}[ \\t\\n\\r]*$",
        MAX_TERMS - 1
    );
    let mut p = vec![
        path_param("org", "organization slug"),
        query_param(
            "from",
            "RFC 3339 start (inclusive); default: to minus 24 hours. The window is at most 92 days, and not older than the org's hot retention",
            time.clone(),
        ),
        query_param("to", "RFC 3339 end (exclusive); default: now", time),
        repeated("actor", "actor id; repeat for OR", filter_value("actor")),
        repeated(
            "action",
            "action, exact, or a prefix ending in a single * (component.*); repeat for OR",
            filter_value("action"),
        ),
        repeated("target_type", "target type; repeat for OR", filter_value("target_type")),
        repeated("target_id", "target id; repeat for OR", filter_value("target_id")),
        repeated("project", "project; repeat for OR", filter_value("project")),
        repeated("outcome", "success or failure; repeat for OR", filter_value("outcome")),
        repeated("source", "source; repeat for OR", filter_value("source")),
        query_param(
            "q",
            &format!(
                "free text: 1 to {MAX_TERMS} words (split on spaces, tabs and line breaks) that must all match; the last token of each word matches as a prefix; words without letters or digits are ignored"
            ),
            json!({"type": "string", "maxLength": MAX_QUERY_CHARS, "pattern": words}),
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

/// `T` or null: optional event fields may be sent as null, which means absent.
fn nullable(schema: Value) -> Value {
    json!({"anyOf": [schema, {"type": "null"}]})
}

fn string(max: usize) -> Value {
    json!({"type": "string", "maxLength": max})
}

/// The fields an event is sent with, as `parse_event` checks them.
fn event_fields() -> serde_json::Map<String, Value> {
    let ip = json!({"anyOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}]});
    let actor = json!({"type": "object", "additionalProperties": false, "required": ["id"], "properties": {
        "id": string(256),
        "type": nullable(json!({"enum": ["user", "service", "system"]})),
        "name": nullable(string(256)),
        "ip": nullable(ip),
        "user_agent": nullable(string(512))}});
    let target = json!({"type": "object", "additionalProperties": false, "required": ["type"], "properties": {
        "type": {"type": "string", "pattern": "^[a-z0-9_]+$", "maxLength": 64},
        "id": nullable(string(256)),
        "name": nullable(string(256))}});
    let source = json!({"type": "string", "maxLength": 64, "not": {"pattern": "^\\s*[Tt][Rr][Aa][Ii][Ll]\\s*$"},
        "description": "where the operation came from; \"trail\" (in any case) is reserved for Trail's own records"});
    let fields = json!({
        "id": nullable(json!({"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$",
            "description": "idempotency key: the same id with the same content is a duplicate, with other content a conflict; minted when absent"})),
        "time": nullable(json!({"type": "string", "format": "date-time",
            "description": "when it happened: within the org's hot retention and at most 5 minutes ahead; the receipt time when absent"})),
        "actor": actor,
        "action": {"type": "string", "pattern": "^[a-z0-9_]+(\\.[a-z0-9_]+)+$", "maxLength": 128,
            "description": "resource.verb; GET /v1/actions lists the catalogued ones"},
        "target": target,
        "project": nullable(string(128)),
        "outcome": {"enum": ["success", "failure"]},
        "reason": nullable(string(1024)),
        "source": nullable(source),
        "info": nullable(json!({"type": "object"}))
    });
    match fields {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// An event as sent to ingest.
fn new_event() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["actor", "action", "target", "outcome"],
           "properties": event_fields()})
}

/// An event as the API answers it: what was sent (absent fields left out), what the store added, and
/// the fields reads add.
fn stored_event() -> Value {
    let mut props = event_fields();
    for k in ["id", "time"] {
        props.insert(k.into(), props[k]["anyOf"][0].clone());
    }
    let extra = json!({
        "org": {"type": "string"},
        "seq": {"type": "integer", "minimum": 0},
        "received_at": {"type": "string", "format": "date-time"},
        "action_label": {"type": "string", "description": "the catalog's label, for catalogued actions"},
        "leaf_hash": {"type": "string", "description": "base64 SHA-256(0x00 ‖ canonical bytes)"},
        "self_audit": {"type": "boolean", "description": "Trail's own record (source trail, which ingest refuses)"},
        "proof": {"description": "GET by id only: inclusion proof against the latest checkpoint (null while pending)",
            "anyOf": [{"type": "object", "required": ["tree_size", "hashes", "checkpoint"], "properties": {
                "tree_size": {"type": "integer"}, "hashes": {"type": "array", "items": {"type": "string"}},
                "checkpoint": {"type": "string"}}}, {"type": "null"}]},
        "proof_pending": {"type": "boolean", "description": "GET by id only: the event is newer than the latest checkpoint"}
    });
    if let Value::Object(m) = extra {
        props.extend(m);
    }
    // Trail's own records carry source "trail".
    props.insert("source".into(), string(64));
    json!({"type": "object", "additionalProperties": false,
           "required": ["org", "seq", "id", "time", "received_at", "actor", "action", "target", "outcome", "leaf_hash", "self_audit"],
           "properties": props})
}

/// Each operation's stable name (what generated clients call their functions).
const OPERATION_IDS: &[(&str, &str, &str)] = &[
    ("get", "/healthz", "healthz"),
    ("get", "/readyz", "readyz"),
    ("get", "/metrics", "metrics"),
    ("get", "/v1/openapi.json", "openapi"),
    ("get", "/v1/actions", "list_actions"),
    ("post", "/v1/auth/login", "login"),
    ("post", "/v1/auth/login/mfa", "login_second_factor"),
    ("post", "/v1/auth/logout", "logout"),
    ("get", "/v1/me", "me"),
    ("post", "/v1/me/password", "change_password"),
    ("get", "/v1/me/mfa", "mfa_status"),
    ("post", "/v1/me/mfa/totp", "start_totp_enrolment"),
    ("post", "/v1/me/mfa/totp/confirm", "confirm_totp_enrolment"),
    ("post", "/v1/me/mfa/disable", "disable_mfa"),
    ("post", "/v1/me/mfa/recovery-codes", "renew_recovery_codes"),
    ("get", "/v1/orgs/{org}/sign-in", "get_sign_in_settings"),
    ("put", "/v1/orgs/{org}/sign-in", "update_sign_in_settings"),
    ("get", "/v1/auth/sso", "start_single_sign_on"),
    ("get", "/v1/auth/sso/callback", "finish_single_sign_on"),
    ("get", "/v1/orgs/{org}/sso", "get_identity_provider"),
    ("put", "/v1/orgs/{org}/sso", "update_identity_provider"),
    ("delete", "/v1/orgs/{org}/sso", "delete_identity_provider"),
    ("get", "/v1/orgs", "list_orgs"),
    ("post", "/v1/orgs", "create_org"),
    ("post", "/v1/orgs/{org}/events", "ingest_events"),
    ("get", "/v1/orgs/{org}/events", "query_events"),
    ("get", "/v1/orgs/{org}/events/histogram", "event_histogram"),
    ("get", "/v1/orgs/{org}/events/{id}", "get_event"),
    ("get", "/v1/orgs/{org}/api-keys", "list_api_keys"),
    ("post", "/v1/orgs/{org}/api-keys", "create_api_key"),
    ("delete", "/v1/orgs/{org}/api-keys/{id}", "revoke_api_key"),
    ("get", "/v1/log-key", "log_key"),
    ("get", "/v1/orgs/{org}/checkpoint", "checkpoint"),
    ("get", "/v1/orgs/{org}/proofs/inclusion", "inclusion_proof"),
    ("get", "/v1/orgs/{org}/proofs/consistency", "consistency_proof"),
    ("get", "/v1/orgs/{org}/roles", "list_roles"),
    ("post", "/v1/orgs/{org}/roles", "create_role"),
    ("get", "/v1/orgs/{org}/roles/{id}", "get_role"),
    ("patch", "/v1/orgs/{org}/roles/{id}", "update_role"),
    ("delete", "/v1/orgs/{org}/roles/{id}", "delete_role"),
    ("get", "/v1/orgs/{org}/groups", "list_groups"),
    ("post", "/v1/orgs/{org}/groups", "create_group"),
    ("get", "/v1/orgs/{org}/groups/{id}", "get_group"),
    ("patch", "/v1/orgs/{org}/groups/{id}", "update_group"),
    ("delete", "/v1/orgs/{org}/groups/{id}", "delete_group"),
    ("put", "/v1/orgs/{org}/groups/{id}/roles/{role_id}", "add_group_role"),
    ("delete", "/v1/orgs/{org}/groups/{id}/roles/{role_id}", "remove_group_role"),
    ("put", "/v1/orgs/{org}/groups/{id}/members/{user_id}", "add_group_member"),
    ("delete", "/v1/orgs/{org}/groups/{id}/members/{user_id}", "remove_group_member"),
    ("get", "/v1/orgs/{org}/users", "list_users"),
    ("delete", "/v1/orgs/{org}/users/{id}", "remove_user"),
    ("get", "/v1/orgs/{org}/invitations", "list_invitations"),
    ("post", "/v1/orgs/{org}/invitations", "create_invitations"),
    ("delete", "/v1/orgs/{org}/invitations/{id}", "revoke_invitation"),
    ("post", "/v1/invitations/{token}/accept", "accept_invitation"),
    ("get", "/v1/orgs/{org}/exports", "list_exports"),
    ("post", "/v1/orgs/{org}/exports", "create_export"),
    ("get", "/v1/orgs/{org}/exports/{id}", "get_export"),
    ("get", "/v1/orgs/{org}/exports/{id}/download", "download_export"),
    ("get", "/v1/orgs/{org}/exports/{id}/manifest", "export_manifest"),
    ("get", "/v1/orgs/{org}/settings", "get_settings"),
    ("patch", "/v1/orgs/{org}/settings", "update_settings"),
    ("get", "/v1/orgs/{org}/archives", "list_archives"),
    ("post", "/v1/orgs/{org}/archives/restore", "restore_archive"),
    ("get", "/v1/orgs/{org}/events/feed", "event_feed"),
    ("get", "/v1/orgs/{org}/destinations", "list_destinations"),
    ("post", "/v1/orgs/{org}/destinations", "create_destination"),
    ("get", "/v1/orgs/{org}/destinations/{id}", "get_destination"),
    ("put", "/v1/orgs/{org}/destinations/{id}", "update_destination"),
    ("delete", "/v1/orgs/{org}/destinations/{id}", "delete_destination"),
    ("post", "/v1/orgs/{org}/destinations/{id}/pause", "pause_destination"),
    ("post", "/v1/orgs/{org}/destinations/{id}/resume", "resume_destination"),
    ("post", "/v1/orgs/{org}/destinations/{id}/rotate-secret", "rotate_destination_secret"),
    ("get", "/v1/orgs/{org}/searches", "list_saved_searches"),
    ("post", "/v1/orgs/{org}/searches", "create_saved_search"),
    ("patch", "/v1/orgs/{org}/searches/{id}", "update_saved_search"),
    ("delete", "/v1/orgs/{org}/searches/{id}", "delete_saved_search"),
    ("get", "/v1/orgs/{org}/alert-rules", "list_alert_rules"),
    ("post", "/v1/orgs/{org}/alert-rules", "create_alert_rule"),
    ("get", "/v1/orgs/{org}/alert-rules/{id}", "get_alert_rule"),
    ("put", "/v1/orgs/{org}/alert-rules/{id}", "update_alert_rule"),
    ("delete", "/v1/orgs/{org}/alert-rules/{id}", "delete_alert_rule"),
    ("get", "/v1/orgs/{org}/alert-templates", "list_alert_templates"),
    ("post", "/v1/orgs/{org}/alert-templates/{id}", "enable_alert_template"),
    ("get", "/v1/orgs/{org}/alerts", "list_alert_firings"),
    ("get", "/v1/viewer", "current_viewer"),
    ("get", "/v1/orgs/{org}/viewer-tokens", "list_viewer_tokens"),
    ("post", "/v1/orgs/{org}/viewer-tokens", "mint_viewer_token"),
    ("delete", "/v1/orgs/{org}/viewer-tokens/{id}", "revoke_viewer_token"),
    ("get", "/v1/orgs/{org}/embedding", "get_embedding"),
    ("put", "/v1/orgs/{org}/embedding", "update_embedding"),
];

/// Response schemas whose every listed property is always sent (checked by schemathesis' response
/// conformance in CI), so generated clients need not treat each as optional.
const RESPONSES: &[&str] = &[
    "Session",
    "Me",
    "Org",
    "OrgList",
    "Role",
    "RoleList",
    "Group",
    "GroupList",
    "UserList",
    "UserRef",
    "CreatedInvitations",
    "InvitationList",
    "Export",
    "ExportList",
    "InclusionProof",
    "ConsistencyProof",
    "EventPage",
    "Histogram",
    "ApiKey",
    "ApiKeyList",
    "OrgSettings",
    "ArchiveList",
    "ActionList",
    "Destination",
    "DestinationList",
    "Feed",
    "SavedSearch",
    "SavedSearchList",
    "AlertRule",
    "AlertRuleList",
    "AlertTemplateList",
    "AlertFiringList",
    "ViewerToken",
    "ViewerTokenList",
    "CurrentViewer",
    "Embedding",
    "MfaChallenge",
    "MfaStatus",
    "MfaEnrolment",
    "SignInSettingsState",
];

/// Marks every property of an object schema (and of the objects inside it) required, unless the
/// schema lists its own, and gives timestamps (`*_at`, `time_min`, `time_max`, a histogram's
/// `from`, `to`, `start`) the date-time format.
fn tighten(schema: &mut Value) {
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        for (k, v) in props.iter_mut() {
            let timestamp =
                k.ends_with("_at") || matches!(k.as_str(), "time_min" | "time_max" | "from" | "to" | "start");
            let is_string = v["type"] == "string" || v["type"] == json!(["string", "null"]);
            if timestamp && is_string && v.get("format").is_none() {
                v["format"] = json!("date-time");
            }
            tighten(v);
        }
        let names: Vec<Value> = props.keys().map(|k| json!(k)).collect();
        if schema.get("required").is_none() {
            schema["required"] = Value::Array(names);
        }
    }
    if let Some(items) = schema.get_mut("items") {
        tighten(items);
    }
}

/// Adds the entries of `more` to the object at `pointer` (paths, schemas) of the document.
fn add(doc: &mut Value, pointer: &str, more: Value) {
    if let (Some(all), Value::Object(more)) = (doc.pointer_mut(pointer).and_then(Value::as_object_mut), more)
    {
        all.extend(more);
    }
}

/// Streaming destinations and the feed (README "Stream to your SIEM").
fn streaming(doc: &mut Value) {
    let session = ["session", "cookie"];
    let read = ["session", "cookie", "apiKey"];
    let one = || org_and("id", "destination id");
    let paths = json!({
        "/v1/orgs/{org}/events/feed": {"get": op("The log in seq order after after_seq, up to the latest signed checkpoint (LOG-MANAGEMENT or events:read): the way to poll without missing events whose time is late", &read,
            json!([path_param("org", "organization slug"),
                   query_param("after_seq", "the last seq you have; absent to start at the beginning of the hot log", json!({"type": "integer", "minimum": 0, "maximum": u64::MAX})),
                   query_param("limit", "most events, default 100", json!({"type": "integer", "minimum": 1, "maximum": 1000}))]), None,
            responses(("200", ok("events in seq order, with the checkpoint that covers them", "Feed")), &[400, 401, 403, 404]))},
        "/v1/orgs/{org}/destinations": {
            "get": op("Streaming destinations with their delivery state and lag (ORG-SETTINGS)", &session, org_only(), None,
                responses(("200", ok("destinations", "DestinationList")), &[401, 403, 404])),
            "post": op("Create a destination (ORG-SETTINGS); a webhook's signing secret is in this answer only", &session, org_only(), Some("NewDestination"),
                responses(("201", ok("created", "DestinationWithSecret")), &[400, 401, 403, 404, 409, 415]))
        },
        "/v1/orgs/{org}/destinations/{id}": {
            "get": op("One destination", &session, one(), None, responses(("200", ok("destination", "Destination")), &[401, 403, 404])),
            "put": op("Replace a destination's settings (not its kind); delivery goes on from its cursor", &session, one(), Some("DestinationFields"),
                responses(("200", ok("changed", "Destination")), &[400, 401, 403, 404, 415])),
            "delete": op("Delete a destination", &session, one(), None, responses(("204", json!({"description": "deleted"})), &[401, 403, 404]))
        },
        "/v1/orgs/{org}/destinations/{id}/pause": {"post": op("Pause delivery", &session, one(), None,
            responses(("200", ok("paused", "Destination")), &[401, 403, 404]))},
        "/v1/orgs/{org}/destinations/{id}/resume": {"post": op("Resume delivery, optionally replaying from a seq", &session, one(), None,
            responses(("200", ok("resumed", "Destination")), &[400, 401, 403, 404, 415]))},
        "/v1/orgs/{org}/destinations/{id}/rotate-secret": {"post": op("A new webhook signing secret, in this answer only; the old one stops at once", &session, one(), None,
            responses(("200", ok("the destination and its new secret", "DestinationWithSecret")), &[400, 401, 403, 404]))}
    });
    add(doc, "/paths", paths);
    doc["paths"]["/v1/orgs/{org}/destinations/{id}/resume"]["post"]["requestBody"] = json!({"required": false,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Resume"}}}});
    let nullable_time = json!({"type": ["string", "null"], "format": "date-time"});
    let schemas = json!({
        "Destination": {"type": "object", "additionalProperties": false,
            "required": ["id", "name", "kind", "tls", "format", "filter", "facility", "endpoint", "has_secret", "created_by", "created_at", "updated_at",
                         "state", "error", "cursor", "delivered", "delivered_at", "failing_since", "lag_events", "lag_seconds"],
            "properties": {
                "id": {"type": "string"}, "name": {"type": "string"}, "kind": {"enum": ["webhook", "syslog", "splunk_hec"]},
                "url": {"type": "string"}, "address": {"type": "string"}, "tls": {"type": "boolean"}, "ca_pem": {"type": "string"},
                "format": {"enum": ["json", "ocsf", "cef"]},
                "filter": {"type": "object", "properties": {"actions": {"type": "array", "items": {"type": "string"}},
                    "outcomes": {"type": "array", "items": {"enum": ["success", "failure"]}}, "sources": {"type": "array", "items": {"type": "string"}}}},
                "facility": {"type": "integer", "minimum": 0, "maximum": 23}, "index": {"type": "string"}, "sourcetype": {"type": "string"},
                "endpoint": {"type": "string", "description": "where it sends: the URL, or tcp:// / tls:// and the syslog address"},
                "has_secret": {"type": "boolean"}, "created_by": {"type": "string"},
                "created_at": {"type": "string", "format": "date-time"}, "updated_at": {"type": "string", "format": "date-time"},
                "state": {"enum": ["active", "failing", "paused"]}, "error": {"type": ["string", "null"], "description": "why the last attempt failed, or why it is paused"},
                "cursor": {"type": "integer", "minimum": 0, "description": "the next seq to deliver; everything below was acknowledged or filtered out"},
                "delivered": {"type": "integer", "minimum": 0}, "delivered_at": nullable_time, "failing_since": nullable_time,
                "lag_events": {"type": ["integer", "null"], "minimum": 0, "description": "events stored but not yet acknowledged (null while not delivering)"},
                "lag_seconds": {"type": ["number", "null"], "minimum": 0, "description": "age of the oldest event not yet acknowledged"}}},
        "DestinationList": {"type": "object", "properties": {"destinations": {"type": "array", "items": {"$ref": "#/components/schemas/Destination"}}}},
        "Feed": {"type": "object", "properties": {"events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
            "next_after_seq": {"type": ["integer", "null"], "minimum": 0, "description": "pass as after_seq for the next page (null before the first event)"},
            "checkpoint": {"type": ["string", "null"], "description": "the signed checkpoint (note) whose tree covers these events"},
            "tree_size": {"type": "integer", "minimum": 0, "description": "the checkpoint's size: the feed never goes past it"}}}
    });
    // The same object with the secret, answered once (a closed object cannot be extended by allOf).
    let mut with_secret = schemas["Destination"].clone();
    with_secret["properties"]["secret"] =
        json!({"type": "string", "description": "webhooks: the HMAC signing secret, shown once"});
    let mut schemas = schemas;
    schemas["DestinationWithSecret"] = with_secret;
    add(doc, "/components/schemas", schemas);
}

/// Saved searches, alert rules, templates and firings (README "Saved searches and alerts").
fn alerting(doc: &mut Value) {
    let session = ["session", "cookie"];
    let one = |what: &str| org_and("id", what);
    let paths = json!({
        "/v1/orgs/{org}/searches": {
            "get": op("Your saved searches and the shared ones (LOG-MANAGEMENT)", &session, org_only(), None,
                responses(("200", ok("searches, by name", "SavedSearchList")), &[401, 403, 404])),
            "post": op("Save a search of the Audit Logs page", &session, org_only(), Some("NewSavedSearch"),
                responses(("201", ok("saved", "SavedSearch")), &[400, 401, 403, 404, 409, 415]))
        },
        "/v1/orgs/{org}/searches/{id}": {
            "patch": op("Rename, share or change a saved search (its owner; a shared one also ORG-SETTINGS)", &session, one("saved search id"), Some("SavedSearchChange"),
                responses(("200", ok("changed", "SavedSearch")), &[400, 401, 403, 404, 415])),
            "delete": op("Delete a saved search", &session, one("saved search id"), None,
                responses(("204", json!({"description": "deleted"})), &[401, 403, 404]))
        },
        "/v1/orgs/{org}/alert-rules": {
            "get": op("Alert rules (LOG-MANAGEMENT), each with whether its notifications are failing", &session, org_only(), None,
                responses(("200", ok("rules", "AlertRuleList")), &[401, 403, 404])),
            "post": op("Create an alert rule; a webhook's signing secret is in this answer only", &session, org_only(), Some("AlertRuleBody"),
                responses(("201", ok("created", "AlertRule")), &[400, 401, 403, 404, 409, 415]))
        },
        "/v1/orgs/{org}/alert-rules/{id}": {
            "get": op("One alert rule", &session, one("rule id"), None, responses(("200", ok("rule", "AlertRule")), &[401, 403, 404])),
            "put": op("Replace an alert rule (enable or disable it with `enabled`)", &session, one("rule id"), Some("AlertRuleBody"),
                responses(("200", ok("changed", "AlertRule")), &[400, 401, 403, 404, 415])),
            "delete": op("Delete an alert rule (its firings stay in the history)", &session, one("rule id"), None,
                responses(("204", json!({"description": "deleted"})), &[401, 403, 404]))
        },
        "/v1/orgs/{org}/alert-templates": {"get": op("The built-in rules, each with whether the org has enabled it", &session, org_only(), None,
            responses(("200", ok("templates", "AlertTemplateList")), &[401, 403, 404]))},
        "/v1/orgs/{org}/alert-templates/{id}": {"post": op("Enable a template: a rule made from it, optionally with notifications", &session, one("template id"), None,
            responses(("201", ok("the rule", "AlertRule")), &[400, 401, 403, 404, 409, 415]))},
        "/v1/orgs/{org}/alerts": {"get": op("Firings, newest first (the newest 1,000 are kept)", &session,
            json!([path_param("org", "organization slug"),
                   query_param("rule", "only this rule's", json!({"type": "string", "minLength": 1})),
                   query_param("limit", "most firings, default 50", json!({"type": "integer", "minimum": 1, "maximum": 200})),
                   query_param("before", "next_before of the previous page", json!({"type": "string", "minLength": 1}))]), None,
            responses(("200", ok("firings", "AlertFiringList")), &[400, 401, 403, 404]))}
    });
    add(doc, "/paths", paths);
    doc["paths"]["/v1/orgs/{org}/alert-templates/{id}"]["post"]["requestBody"] = json!({"required": false,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EnableTemplate"}}}});
    let time = json!({"type": "string", "format": "date-time"});
    let condition = json!({"$ref": "#/components/schemas/Condition"});
    let schemas = json!({
        "SavedSearch": {"type": "object", "additionalProperties": false, "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "query": {"type": "string"}, "range": {"type": "string"},
            "shared": {"type": "boolean"}, "owner": {"type": "string", "description": "the owner's email"}, "mine": {"type": "boolean"},
            "created_at": time, "updated_at": time}},
        "SavedSearchList": {"type": "object", "properties": {"searches": {"type": "array", "items": {"$ref": "#/components/schemas/SavedSearch"}}}},
        "AlertRule": {"type": "object", "additionalProperties": false,
            "required": ["id", "name", "search", "condition", "condition_text", "cooldown_secs", "notify", "enabled", "template",
                         "created_by", "created_at", "updated_at", "delivery_failing"],
            "properties": {
                "id": {"type": "string"}, "name": {"type": "string"}, "search": {"type": "string"}, "condition": condition,
                "condition_text": {"type": "string"}, "cooldown_secs": {"type": "integer", "minimum": 0},
                "notify": {"$ref": "#/components/schemas/Notify"}, "enabled": {"type": "boolean"}, "template": {"type": ["string", "null"]},
                "created_by": {"type": "string"}, "created_at": time, "updated_at": time,
                "delivery_failing": {"type": ["string", "null"], "description": "the last notification's failure, until one succeeds"},
                "webhook_secret": {"type": "string", "description": "the webhook's signing secret, in the answer that made it only"}}},
        "AlertRuleList": {"type": "object", "properties": {"rules": {"type": "array", "items": {"$ref": "#/components/schemas/AlertRule"}}}},
        "AlertTemplateList": {"type": "object", "properties": {"templates": {"type": "array", "items": {"type": "object", "additionalProperties": false,
            "required": ["id", "name", "description", "search", "condition", "cooldown_secs", "enabled"],
            "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"}, "search": {"type": "string"},
                "condition": condition, "cooldown_secs": {"type": "integer"}, "enabled": {"type": "boolean"}}}}}},
        "AlertFiringList": {"type": "object", "properties": {
            "firings": {"type": "array", "items": {"type": "object", "additionalProperties": false,
                "required": ["id", "rule_id", "rule_name", "condition", "fired_at", "key", "count", "seqs", "time_from", "time_to", "link", "deliveries", "delivered"],
                "properties": {"id": {"type": "string"}, "rule_id": {"type": "string"}, "rule_name": {"type": "string"}, "condition": condition,
                    "fired_at": time, "key": {"type": ["string", "null"], "description": "the group (actor, target or address) of a grouped threshold"},
                    "count": {"type": "integer", "minimum": 1}, "seqs": {"type": "array", "items": {"type": "integer"}, "description": "the matching events (at most 100)"},
                    "time_from": time, "time_to": time, "link": {"type": "string", "description": "the Audit Logs page showing the matches"},
                    "deliveries": {"type": "array", "items": {"type": "object", "properties": {"channel": {"enum": ["email", "webhook"]}, "to": {"type": "string"},
                        "ok": {"type": "boolean"}, "error": {"type": "string"}, "at": time}}},
                    "delivered": {"type": "boolean", "description": "notifications finished (each may have failed: see deliveries)"}}}},
            "next_before": {"type": ["string", "null"]}}}
    });
    add(doc, "/components/schemas", schemas);
}

/// Viewer tokens and the embedding settings (README "Embed the viewer").
fn embedding(doc: &mut Value) {
    let session = ["session", "cookie"];
    let manage = ["apiKey", "session", "cookie"];
    let paths = json!({
        "/v1/viewer": {"get": op("The viewer token making the request: its user, permissions, filter and expiry", &["viewerToken"], json!([]), None,
            responses(("200", ok("the token", "CurrentViewer")), &[401, 403]))},
        "/v1/orgs/{org}/viewer-tokens": {
            "get": op("Viewer tokens not yet expired or revoked (API key with viewer:mint, or LOG-MANAGEMENT)", &manage, org_only(), None,
                responses(("200", ok("tokens", "ViewerTokenList")), &[401, 403, 404])),
            "post": op("Mint a viewer token for one of your users (API key with viewer:mint); the token is in this answer only", &["apiKey"], org_only(), Some("NewViewerToken"),
                responses(("201", ok("minted", "ViewerTokenWithSecret")), &[400, 401, 403, 404, 415, 429]))
        },
        "/v1/orgs/{org}/viewer-tokens/{id}": {"delete": op("Revoke a viewer token: it stops working at once", &manage, org_and("id", "viewer token id"), None,
            responses(("204", json!({"description": "revoked"})), &[401, 403, 404]))},
        "/v1/orgs/{org}/embedding": {
            "get": op("The origins allowed to frame the embedded viewer (ORG-SETTINGS)", &session, org_only(), None,
                responses(("200", ok("settings", "Embedding")), &[401, 403, 404])),
            "put": op("Set the origins allowed to frame the embedded viewer", &session, org_only(), Some("EmbeddingSettings"),
                responses(("200", ok("settings", "Embedding")), &[400, 401, 403, 404, 415]))
        }
    });
    add(doc, "/paths", paths);
    // What a viewer token may call besides: reads (narrowed to its filter), proofs, its own exports.
    for (method, path) in [
        ("get", "/v1/orgs/{org}/events"),
        ("get", "/v1/orgs/{org}/events/histogram"),
        ("get", "/v1/orgs/{org}/events/{id}"),
        ("get", "/v1/orgs/{org}/checkpoint"),
        ("get", "/v1/orgs/{org}/proofs/inclusion"),
        ("get", "/v1/orgs/{org}/proofs/consistency"),
        ("get", "/v1/orgs/{org}/exports"),
        ("post", "/v1/orgs/{org}/exports"),
        ("get", "/v1/orgs/{org}/exports/{id}"),
        ("get", "/v1/orgs/{org}/exports/{id}/download"),
        ("get", "/v1/orgs/{org}/exports/{id}/manifest"),
    ] {
        if let Some(s) = doc["paths"][path][method]["security"].as_array_mut() {
            s.push(json!({"viewerToken": []}));
        }
    }
    let time = json!({"type": "string", "format": "date-time"});
    let one_or_many = json!({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]});
    let mut token = json!({"type": "object", "additionalProperties": false,
        "required": ["id", "user", "permissions", "filter", "created_by", "created_at", "expires_at", "revoked_at"],
        "properties": {
            "id": {"type": "string"},
            "user": {"type": "object", "required": ["id", "name", "email"], "properties": {"id": {"type": "string"},
                "name": {"type": ["string", "null"]}, "email": {"type": ["string", "null"]}}},
            "permissions": {"type": "array", "items": {"enum": ["view", "export"]}},
            "filter": {"type": "object", "additionalProperties": one_or_many, "description": "what every read is narrowed to"},
            "created_by": {"type": "string", "description": "the API key that minted it"},
            "created_at": time, "expires_at": time, "revoked_at": {"type": ["string", "null"], "format": "date-time"}}});
    let list = json!({"type": "object", "properties": {"viewer_tokens": {"type": "array", "items": {"$ref": "#/components/schemas/ViewerToken"}}}});
    let embedding = json!({"type": "object", "additionalProperties": false, "required": ["allowed_origins", "updated_at", "updated_by"], "properties": {
        "allowed_origins": {"type": "array", "items": {"type": "string"}},
        "updated_at": {"type": ["string", "null"], "format": "date-time"}, "updated_by": {"type": ["string", "null"]}}});
    let mut schemas = json!({"ViewerToken": token.clone(), "ViewerTokenList": list, "Embedding": embedding});
    token["properties"]["token"] =
        json!({"type": "string", "description": "the bearer token for the viewer (trv_…), shown once"});
    token["properties"]["embed_path"] = json!({"type": "string", "description": "the viewer's path; pass the token in its fragment: #token=…"});
    if let Some(r) = token["required"].as_array_mut() {
        r.extend([json!("token"), json!("embed_path")]);
    }
    let mut current = schemas["ViewerToken"].clone();
    current["properties"]["org"] = json!({"type": "string"});
    if let Some(r) = current["required"].as_array_mut() {
        r.push(json!("org"));
    }
    schemas["CurrentViewer"] = current;
    schemas["ViewerTokenWithSecret"] = token;
    add(doc, "/components/schemas", schemas);
}

/// Two-factor sign-in and an org's sign-in requirements (README "Two-factor sign-in").
fn second_factor(doc: &mut Value) {
    let session = ["session", "cookie"];
    let code = || responses(("200", ok("the factor's state", "MfaStatus")), &[400, 401, 403, 409, 415, 429]);
    let paths = json!({
        "/v1/auth/login/mfa": {"post": op("Second step of a sign-in with a second factor: the password step's challenge and a code (or a recovery code)", &[], json!([]), Some("SecondFactor"),
            responses(("200", ok("signed in", "Session")), &[400, 401, 415, 429, 503]))},
        "/v1/me/mfa": {"get": op("Your second factor's state", &session, json!([]), None, responses(("200", ok("state", "MfaStatus")), &[401, 403]))},
        "/v1/me/mfa/totp": {"post": op("Start enrolling an authenticator app, with your password: its secret, otpauth URI and QR code (SVG); sign-in is unchanged until confirmed", &session, json!([]), Some("MfaStart"),
            responses(("200", ok("the enrolment", "MfaEnrolment")), &[400, 401, 403, 409, 415, 429, 503]))},
        "/v1/me/mfa/totp/confirm": {"post": op("Confirm the enrolment with a code from the app: two-factor sign-in is on, other sessions end, recovery codes are in this answer only", &session, json!([]), Some("MfaCode"), code())},
        "/v1/me/mfa/disable": {"post": op("Turn two-factor sign-in off, with a current code or a recovery code", &session, json!([]), Some("MfaCode"), code())},
        "/v1/me/mfa/recovery-codes": {"post": op("New recovery codes (the old ones stop working), with a current code or a recovery code; in this answer only", &session, json!([]), Some("MfaCode"), code())},
        "/v1/orgs/{org}/sign-in": {
            "get": op("How members sign in: whether a second factor is required, whether passwords are allowed (ORG-SETTINGS)", &session, org_only(), None,
                responses(("200", ok("settings", "SignInSettingsState")), &[401, 403, 404])),
            "put": op("Require (or stop requiring) a second factor of every member (yours must be on first); allow or refuse passwords (to refuse them, sign in with the org's identity provider first)", &session, org_only(), Some("SignInSettings"),
                responses(("200", ok("settings", "SignInSettingsState")), &[400, 401, 403, 404, 409, 415]))
        }
    });
    add(doc, "/paths", paths);
    // The password step answers a session, or a challenge when the account has a second factor.
    doc["paths"]["/v1/auth/login"]["post"]["responses"]["200"]["content"]["application/json"]["schema"] = json!({"anyOf": [
        {"$ref": "#/components/schemas/Session"}, {"$ref": "#/components/schemas/MfaChallenge"}]});
    let time = json!({"type": "string", "format": "date-time"});
    let status = json!({"type": "object", "additionalProperties": false, "required": ["enabled", "pending", "confirmed_at", "recovery_codes_left"],
        "properties": {"enabled": {"type": "boolean"}, "pending": {"type": "boolean", "description": "an enrolment waits for its confirming code"},
            "confirmed_at": {"type": ["string", "null"], "format": "date-time"}, "recovery_codes_left": {"type": "integer", "minimum": 0},
            "recovery_codes": {"type": "array", "items": {"type": "string"}, "description": "new recovery codes: in the answer that made them only"}}});
    let schemas = json!({
        "MfaChallenge": {"type": "object", "additionalProperties": false, "required": ["mfa_required", "challenge", "expires_at"], "properties": {
            "mfa_required": {"const": true}, "challenge": {"type": "string", "description": "send it with a code to /v1/auth/login/mfa"}, "expires_at": time}},
        "MfaStatus": status,
        "MfaEnrolment": {"type": "object", "additionalProperties": false, "required": ["secret", "otpauth_uri", "qr_svg"], "properties": {
            "secret": {"type": "string", "description": "base32, for typing into the app"}, "otpauth_uri": {"type": "string"},
            "qr_svg": {"type": "string", "description": "the otpauth URI as a QR code, an SVG document"}}},
        "SignInSettingsState": {"type": "object", "additionalProperties": false, "required": ["require_mfa", "password_sign_in", "updated_at", "updated_by"], "properties": {
            "require_mfa": {"type": "boolean"}, "password_sign_in": {"type": "boolean"},
            "updated_at": {"type": ["string", "null"], "format": "date-time"}, "updated_by": {"type": ["string", "null"]}}}
    });
    add(doc, "/components/schemas", schemas);
}

/// Single sign-on with OpenID Connect (README "Single sign-on").
fn single_sign_on(doc: &mut Value) {
    let session = ["session", "cookie"];
    let query = |name: &str, description: &str| json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": "string"}});
    let moved = |description: &str| json!({"description": description, "headers": {"Location": {"schema": {"type": "string"}}}});
    let paths = json!({
        "/v1/auth/sso": {"get": op("Single sign-on, for a browser: sends it to the org's identity provider (without org: the server's, for server administrators), with the flow in a short-lived cookie; a refusal goes back to /login?sso_error=…", &[],
            json!([query("org", "the org whose provider signs in"), query("next", "a path of this site to open after signing in")]), None,
            json!({"303": moved("to the provider, or back to the sign-in page with the reason")}))},
        "/v1/auth/sso/callback": {"get": op("Where the identity provider sends the browser back (register it at the provider): signs in, sets the session cookie and opens next, or goes back to the sign-in page with the reason", &[],
            json!([query("code", "the authorization code"), query("state", "the flow's state"), query("error", "the provider's refusal"), query("error_description", "its words")]), None,
            json!({"200": {"description": "signed in: a page that opens next", "content": {"text/html": {"schema": {"type": "string"}}}}, "303": moved("back to the sign-in page with the reason")}))},
        "/v1/orgs/{org}/sso": {
            "get": op("The org's OpenID Connect provider (never its client secret) and the redirect URI to register (ORG-SETTINGS)", &session, org_only(), None,
                responses(("200", ok("the provider", "SsoSettingsState")), &[401, 403, 404])),
            "put": op("Set the org's OpenID Connect provider and how its groups map to the org's groups", &session, org_only(), Some("SsoSettings"),
                responses(("200", ok("the provider", "SsoSettingsState")), &[400, 401, 403, 404, 415])),
            "delete": op("Remove the org's provider (refused while password sign-in is off)", &session, org_only(), None,
                responses(("204", json!({"description": "removed"})), &[401, 403, 404, 409]))
        }
    });
    add(doc, "/paths", paths);
    let text = json!({"type": ["string", "null"]});
    let schemas = json!({
        "SsoSettingsState": {"type": "object", "additionalProperties": false,
            "required": ["configured", "issuer", "client_id", "client_secret_set", "scopes", "groups_claim", "group_map", "redirect_uri", "updated_at", "updated_by"],
            "properties": {
                "configured": {"type": "boolean"}, "issuer": text, "client_id": text,
                "client_secret_set": {"type": "boolean"}, "scopes": {"type": "array", "items": {"type": "string"}},
                "groups_claim": text, "group_map": {"type": "array", "items": {"$ref": "#/components/schemas/GroupRule"}},
                "redirect_uri": {"type": "string", "description": "register it at the provider"},
                "updated_at": {"type": ["string", "null"], "format": "date-time"}, "updated_by": text}}
    });
    add(doc, "/components/schemas", schemas);
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
            "/metrics": {"get": op("Prometheus metrics", &[], json!([]), None, json!({"200": {"description": "text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}}))},
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
                    responses(("200", ok("per-item results; valid items are stored even when others are rejected", "IngestResults")), &[400, 401, 403, 404, 409, 413, 415, 503])),
                "get": op("Query events, newest first (LOG-MANAGEMENT or events:read)", &read,
                    filter_params(&[query_param("limit", "page size, default 50", json!({"type": "integer", "minimum": 1, "maximum": 1000})),
                        query_param("cursor", "next_cursor of the previous page, with the same filters", json!({"type": "string", "minLength": 1}))]),
                    None, responses(("200", ok("a page of events", "EventPage")), &[400, 401, 403, 404]))
            },
            "/v1/orgs/{org}/events/histogram": {"get": op("Event counts per time bucket for the same filters", &read,
                filter_params(&[query_param("interval", "bucket width: seconds, or 5m, 1h, 1d; default picked from the window; at most 1,200 buckets",
                    json!({"type": "string", "pattern": "^0*[1-9][0-9]{0,6}[smhd]?$"}))]),
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
                org_and("id", "export id"), None, responses(("200", json!({"description": "the file", "content": {"text/csv": {"schema": {"type": "string"}}, "application/x-ndjson": {"schema": {"type": "string"}}}})), &[401, 403, 404, 409, 410]))},
            "/v1/orgs/{org}/exports/{id}/manifest": {"get": op("The signed manifest: a signed note whose text is JSON with the filters, window, row count, SHA-256 and a covering checkpoint", &read,
                org_and("id", "export id"), None, responses(("200", json!({"description": "signed note", "content": {"text/plain": {"schema": {"type": "string"}}}})), &[401, 403, 404, 409]))},
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
                json!({"200": {"description": "verifier key", "content": {"text/plain": {"schema": {"type": "string"}}}}}))},
            "/v1/orgs/{org}/checkpoint": {"get": op("The latest signed checkpoint (C2SP tlog-checkpoint signed note, origin <server_name>/orgs/<org>)", &read,
                json!([path_param("org", "organization slug")]), None,
                responses(("200", json!({"description": "signed note", "content": {"text/plain": {"schema": {"type": "string"}}}})), &[401, 403, 404]))},
            "/v1/orgs/{org}/proofs/inclusion": {"get": op("RFC 9162 inclusion proof of one event in a tree size", &read,
                json!([path_param("org", "organization slug"), index_param("seq", "the event's seq, below tree_size"),
                       index_param("tree_size", "a tree size the log has reached")]), None,
                responses(("200", ok("base64 hashes, RFC 9162 order", "InclusionProof")), &[400, 401, 403, 404]))},
            "/v1/orgs/{org}/proofs/consistency": {"get": op("RFC 9162 consistency proof between two tree sizes", &read,
                json!([path_param("org", "organization slug"), index_param("from", "the older tree size, at most to"),
                       index_param("to", "a tree size the log has reached")]), None,
                responses(("200", ok("base64 hashes, RFC 9162 order", "ConsistencyProof")), &[400, 401, 403, 404]))},
            "/v1/orgs/{org}/api-keys/{id}": {"delete": op("Revoke an API key (KEY-MANAGEMENT)", &session,
                json!([path_param("org", "organization slug"), path_param("id", "key id")]), None,
                responses(("204", json!({"description": "revoked"})), &[401, 403, 404]))}
        },
        "components": {
            "securitySchemes": {
                "session": {"type": "http", "scheme": "bearer", "description": "session token from /v1/auth/login"},
                "apiKey": {"type": "http", "scheme": "bearer", "description": "API key secret (trk_…)"},
                "viewerToken": {"type": "http", "scheme": "bearer", "description": "viewer token (trv_…) of the embedded viewer: reads through its filter, its own exports"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "trail_session", "description": "console session; state-changing requests also need X-CSRF-Token"}
            },
            "responses": {"Error": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"$ref": "#/components/schemas/ErrorBody"}}},
                "ErrorBody": {"type": "object", "required": ["code", "message"], "additionalProperties": false,
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}}},
                "ActionList": {"type": "object", "required": ["actions"], "properties": {"actions": {"type": "array", "items": {"type": "object",
                    "required": ["action", "label", "category"], "properties": {"action": {"type": "string"}, "label": {"type": "string"}, "category": {"type": "string"}}}}}},
                "Session": {"type": "object", "properties": {"token": {"type": "string"}, "csrf_token": {"type": "string"}, "expires_at": {"type": "string", "format": "date-time"},
                    "user": {"type": "object", "properties": {"id": {"type": "string"}, "email": {"type": "string"}}}}},
                "Me": {"type": "object", "properties": {"id": {"type": "string"}, "email": {"type": "string"}, "server_admin": {"type": "boolean"},
                    "orgs": {"type": "array", "items": {"type": "object", "properties": {"slug": {"type": "string"}, "name": {"type": "string"}, "permissions": {"type": "array", "items": {"type": "string"}}}}}}},
                "Org": {"type": "object", "properties": {"slug": {"type": "string"}, "name": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"}}},
                "OrgList": {"type": "object", "properties": {"orgs": {"type": "array", "items": {"$ref": "#/components/schemas/Org"}}}},
                "NewEvent": new_event(),
                "IngestBody": {"oneOf": [{"$ref": "#/components/schemas/NewEvent"},
                    {"type": "object", "additionalProperties": false, "required": ["events"], "properties": {"events": {"type": "array", "minItems": 1, "maxItems": 1000, "items": {"$ref": "#/components/schemas/NewEvent"}}}}]},
                "IngestResults": {"type": "object", "required": ["results"], "properties": {"results": {"type": "array", "items": {"type": "object",
                    "required": ["index", "status"], "properties": {
                    "index": {"type": "integer", "minimum": 0}, "id": {"type": "string"}, "seq": {"type": "integer", "minimum": 0},
                    "status": {"enum": ["created", "duplicate", "conflict", "rejected"], "description": "conflict: the id is stored (at seq) with different content; nothing was stored"},
                    "error": {"$ref": "#/components/schemas/ErrorBody"}}}}}},
                "Event": stored_event(),
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
                "Export": {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "format": {"enum": ["csv", "json"]}, "kind": {"enum": ["query", "restore"], "description": "restore: archived events brought back (NDJSON)"}, "filters": {"type": "object"},
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
                    "read_audit": {"type": "boolean", "description": "searches, event views and API keys' reads are recorded in the log"},
                    "default_range": {"$ref": "#/components/schemas/RangeName"},
                    "server_defaults": {"type": "boolean"}, "bounds": {"type": "object", "properties": {"min_days": {"type": "integer"}, "max_days": {"type": "integer"}}}}},
                "ArchiveList": {"type": "object", "properties": {"parts": {"type": "array", "items": {"type": "object", "properties": {
                    "period": {"type": "string"}, "first_seq": {"type": "integer"}, "last_seq": {"type": "integer"}, "row_count": {"type": "integer"},
                    "time_min": {"type": "string"}, "time_max": {"type": "string"}, "size_bytes": {"type": "integer"}, "sha256": {"type": "string"},
                    "archived_at": {"type": "string"}, "file": {"type": "string"}, "manifest": {"type": "string"}}}}}},
            }
        }
    });
    streaming(&mut doc);
    alerting(&mut doc);
    embedding(&mut doc);
    second_factor(&mut doc);
    single_sign_on(&mut doc);
    // Request bodies: the schemas of the types the handlers deserialize into.
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        schemas.extend(crate::routes::bodies::schemas());
        // Stated by hand: each field's values follow the query's own rules.
        schemas.insert("FixedFilter".into(), fixed_filter());
    }
    for (method, path, id) in OPERATION_IDS {
        doc["paths"][*path][*method]["operationId"] = json!(id);
    }
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        for name in RESPONSES {
            if let Some(schema) = schemas.get_mut(*name) {
                tighten(schema);
            }
        }
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

    /// Every operation has its own operationId.
    #[test]
    fn every_operation_is_named_once() {
        let doc = document();
        let mut ids = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                ids.push(op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}")).to_string());
            }
        }
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n);
        assert_eq!(n, OPERATION_IDS.len());
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
