//! Trail audits itself (PRODUCT.md §3): sign-ins, sign-outs and every change to access are events in
//! the org's own log, with `source: "trail"`, stored through the same durable path as any event.

use serde_json::{Map, Value};
use trail_model::event::{SELF_AUDIT_SOURCE, StoredEvent};
use trail_model::time::now;
use trail_model::{Actor, ActorType, NewEvent, Outcome, Target};

use crate::AppState;
use crate::error::ApiResult;

/// One self-audit event, built up by the handler that made the change.
#[derive(Debug)]
pub struct Audit {
    pub actor: String,
    /// `service` for an API key or the command line; a person otherwise.
    pub actor_kind: ActorType,
    pub actor_name: Option<String>,
    pub ip: Option<String>,
    pub action: &'static str,
    pub target_type: &'static str,
    pub target_id: Option<String>,
    pub target_name: Option<String>,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub info: Map<String, Value>,
    /// A fixed event id, so the same record appended twice is stored once (a firing after a restart).
    pub id: Option<String>,
}

impl Audit {
    pub fn new(actor: impl Into<String>, action: &'static str, target_type: &'static str) -> Self {
        Self {
            actor: actor.into(),
            actor_kind: ActorType::User,
            actor_name: None,
            ip: None,
            action,
            target_type,
            target_id: None,
            target_name: None,
            outcome: Outcome::Success,
            reason: None,
            info: Map::new(),
            id: None,
        }
    }

    /// Trail itself is the actor (a background job), with a name to show.
    pub fn system(mut self, name: &str) -> Self {
        self.actor_kind = ActorType::System;
        self.actor_name = Some(name.to_string());
        self
    }

    /// The event's id, for a record that must be stored once however often it is appended.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The actor is not a person (an API key, the command line), with a name to show.
    pub fn service(mut self, name: Option<String>) -> Self {
        self.actor_kind = ActorType::Service;
        self.actor_name = name;
        self
    }

    pub fn target(mut self, id: impl Into<String>, name: Option<String>) -> Self {
        self.target_id = Some(id.into());
        self.target_name = name;
        self
    }

    pub fn ip(mut self, ip: Option<String>) -> Self {
        self.ip = ip;
        self
    }

    pub fn failed(mut self, reason: impl Into<String>) -> Self {
        self.outcome = Outcome::Failure;
        self.reason = Some(reason.into());
        self
    }

    pub fn info(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.info.insert(key.to_string(), value.into());
        self
    }

    fn event(&self) -> NewEvent {
        NewEvent {
            id: self.id.clone(),
            time: None,
            actor: Actor {
                id: self.actor.clone(),
                kind: self.actor_kind.clone(),
                name: self.actor_name.clone(),
                ip: self.ip.clone(),
                user_agent: None,
            },
            action: self.action.to_string(),
            target: Target {
                kind: self.target_type.to_string(),
                id: self.target_id.clone(),
                name: self.target_name.clone(),
            },
            project: None,
            outcome: self.outcome,
            reason: self.reason.clone(),
            source: Some(SELF_AUDIT_SOURCE.into()),
            info: (!self.info.is_empty()).then(|| self.info.clone()),
        }
    }

    /// Appends the event to `org`'s log; the change is not acknowledged until its record is durable.
    pub async fn record(self, state: &AppState, org: &str) -> ApiResult<()> {
        Ok(self.append(state.store.as_ref(), org).await?)
    }

    /// Appends the event straight to a store (the command line, background jobs).
    pub async fn append(
        self,
        store: &dyn trail_store::Store,
        org: &str,
    ) -> Result<(), trail_store::StoreError> {
        store.append(org, vec![self.event()], now()).await.map(|_| ())
    }

    /// Appends the event to several orgs' logs (a sign-in concerns every org of the user).
    pub async fn record_in(self, state: &AppState, orgs: &[String]) -> ApiResult<()> {
        for org in orgs {
            state.store.append(org, vec![self.event()], now()).await?;
        }
        Ok(())
    }
}

/// Whether a stored event is Trail's own record. Ingest and import refuse `source: "trail"`, so from
/// the org's `self_audit_from` on (0 for orgs created since) that source is the server's alone;
/// before it, a release that accepted the source from any key may have stored a look-alike.
pub fn is_self_audit(e: &StoredEvent, self_audit_from: u64) -> bool {
    e.source.as_deref() == Some(SELF_AUDIT_SOURCE) && e.seq >= self_audit_from
}

/// How the console names who recorded an event.
pub fn recorded_by(e: &StoredEvent, self_audit_from: u64) -> &'static str {
    if is_self_audit(e, self_audit_from) {
        "Trail (its own record)"
    } else if e.source.as_deref() == Some(SELF_AUDIT_SOURCE) {
        "sent to the API before Trail reserved the source \"trail\": not proven to be Trail's own record"
    } else {
        "sent to the API"
    }
}
