//! Every catalogued action, mapped to OCSF, has what the OCSF 1.8.0 schema requires of its class.
//!
//! `tests/ocsf/ocsf-1.8.0-required.json` was extracted from ocsf/ocsf-schema at tag 1.8.0 with the
//! official ocsf-schema-compiler (its `source` names the commit): per class, the required attributes
//! after inheritance, the activity ids and the "at least one of" constraints; per object, the same.
#![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]

use serde_json::{Value, json};
use trail_model::siem::{OCSF_VERSION, ocsf};
use trail_model::{Actor, ActorType, Outcome, StoredEvent, Target};

fn schema() -> Value {
    serde_json::from_str(include_str!("ocsf/ocsf-1.8.0-required.json")).unwrap()
}

fn class_key(schema: &Value, uid: u64) -> String {
    let classes = schema["classes"].as_object().unwrap();
    classes.iter().find(|(_, c)| c["class_uid"] == uid).map(|(k, _)| k.clone()).unwrap_or_else(|| {
        panic!("class {uid} is not in the extract");
    })
}

/// Checks a value against an OCSF type name: scalars by their JSON kind, objects recursively.
fn check_type(schema: &Value, path: &str, ty: &str, v: &Value, errors: &mut Vec<String>) {
    if let Some(inner) = ty.strip_suffix("[]") {
        match v.as_array() {
            Some(items) if !items.is_empty() => {
                for (i, item) in items.iter().enumerate() {
                    check_type(schema, &format!("{path}[{i}]"), inner, item, errors);
                }
            }
            _ => errors.push(format!("{path}: expected a non-empty array of {inner}")),
        }
        return;
    }
    let ok = match ty {
        "integer_t" | "long_t" | "timestamp_t" => v.is_i64() || v.is_u64(),
        "string_t" | "username_t" | "ip_t" | "hostname_t" | "datetime_t" => v.is_string(),
        "json_t" => true,
        object => {
            if !v.is_object() {
                errors.push(format!("{path}: expected a {object} object"));
                return;
            }
            check_object(schema, path, &schema["objects"][object], v, errors);
            true
        }
    };
    if !ok {
        errors.push(format!("{path}: {v} is not a {ty}"));
    }
}

/// Required attributes and at-least-one constraints of a class or object definition.
fn check_object(schema: &Value, path: &str, def: &Value, v: &Value, errors: &mut Vec<String>) {
    if let Some(required) = def["required"].as_object() {
        for (attr, ty) in required {
            match v.get(attr) {
                Some(x) => check_type(schema, &format!("{path}.{attr}"), ty.as_str().unwrap(), x, errors),
                None => errors.push(format!("{path}: required {attr} is missing")),
            }
        }
    }
    let groups: Vec<Vec<String>> = match &def["at_least_one"] {
        Value::Array(a) if a.first().is_some_and(Value::is_array) => {
            a.iter().map(|g| serde_json::from_value(g.clone()).unwrap()).collect()
        }
        Value::Array(a) => vec![serde_json::from_value(Value::Array(a.clone())).unwrap()],
        _ => vec![],
    };
    for group in groups {
        if !group.iter().any(|attr| v.get(attr).is_some()) {
            errors.push(format!("{path}: needs at least one of {group:?}"));
        }
    }
    // Present objects that the extract describes are checked too, required or not.
    if let Some(fields) = v.as_object() {
        for (k, x) in fields {
            let known =
                schema["objects"].get(k).filter(|_| x.is_object() && def["required"].get(k).is_none());
            if let Some(obj) = known {
                check_object(schema, &format!("{path}.{k}"), obj, x, errors);
            }
        }
    }
}

fn event(action: &str, outcome: Outcome) -> StoredEvent {
    StoredEvent {
        org: "acme".into(),
        seq: 7,
        id: "0190a1b2-0000-7000-8000-000000000007".into(),
        time: 1_733_400_000_000_000,
        received_at: 1_733_400_000_250_000,
        actor: Actor {
            id: "u-1".into(),
            kind: ActorType::User,
            name: Some("Ana".into()),
            ip: Some("192.0.2.4".into()),
            user_agent: Some("Mozilla/5.0".into()),
        },
        action: action.into(),
        target: Target { kind: action.split('.').next().unwrap().into(), id: Some("t-1".into()), name: None },
        project: Some("p-1".into()),
        outcome,
        reason: None,
        source: Some("console".into()),
        info: Some(json!({"role": "admin"}).as_object().unwrap().clone()),
    }
}

#[test]
fn every_catalogued_action_meets_its_ocsf_class() {
    let schema = schema();
    assert_eq!(schema["version"], OCSF_VERSION);
    let mut actions: Vec<&str> = trail_model::catalog::CATALOG.iter().map(|a| a.name).collect();
    actions.extend(["deployment.started", "something"]);
    let mut classes_seen = std::collections::BTreeSet::new();
    for action in actions {
        for outcome in [Outcome::Success, Outcome::Failure] {
            let e = event(action, outcome);
            let api = e.to_json(&[7; 32]);
            let v = ocsf(&e, &api, "0.1.0");
            let uid = v["class_uid"].as_u64().unwrap();
            let key = class_key(&schema, uid);
            let class = &schema["classes"][&key];
            let mut errors = Vec::new();
            check_object(&schema, &key, class, &v, &mut errors);
            let activity = v["activity_id"].as_u64().unwrap();
            assert!(
                class["activities"].get(activity.to_string()).is_some(),
                "{action}: activity {activity} is not one of {key}'s"
            );
            assert_eq!(v["category_uid"], class["category_uid"], "{action}");
            assert_eq!(v["type_uid"].as_u64().unwrap(), uid * 100 + activity, "{action}: type_uid");
            assert!(schema["enums"]["severity_id"].get(v["severity_id"].to_string()).is_some());
            assert!(schema["enums"]["status_id"].get(v["status_id"].to_string()).is_some());
            assert!(errors.is_empty(), "{action} as {key}: {errors:#?}");
            let raw: Value = serde_json::from_str(v["raw_data"].as_str().unwrap()).unwrap();
            assert_eq!(StoredEvent::from_json(&raw).unwrap(), e, "raw_data carries the event whole");
            classes_seen.insert(key);
        }
    }
    assert_eq!(
        classes_seen.into_iter().collect::<Vec<_>>(),
        ["account_change", "authentication", "entity_management", "group_management", "user_access"],
        "the classes the mapping uses"
    );
}

#[test]
fn sign_ins_are_logons_and_failures_say_so() {
    let e = event("user.sign_in_failed", Outcome::Failure);
    let v = ocsf(&e, &e.to_json(&[0; 32]), "0.1.0");
    assert_eq!(
        (v["class_uid"].as_u64(), v["activity_id"].as_u64(), v["status_id"].as_u64()),
        (Some(3002), Some(1), Some(2))
    );
    assert_eq!(v["user"]["uid"], "u-1");
    assert_eq!(v["src_endpoint"]["ip"], "192.0.2.4");
    assert_eq!(v["time"], 1_733_400_000_000i64);
}
