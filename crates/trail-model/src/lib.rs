//! Trail's event model: what an audit event is, how it is validated, and the exact bytes that are
//! stored and hashed into the organization's Merkle log.
//!
//! This crate does no IO and knows nothing of HTTP, SQL or async runtimes. Everything here is a pure
//! function of its inputs (the current time is always passed in), so the store backends, the server
//! and `trail verify` agree on one definition.
#![cfg_attr(test, allow(clippy::unwrap_used, reason = "tests fail loudly on purpose"))]

pub mod auditlog;
pub mod canonical;
pub mod catalog;
pub mod error;
pub mod event;
pub mod export;
pub mod query;
pub mod siem;
pub mod text;
pub mod time;

pub use error::FieldError;
pub use event::{Actor, ActorType, NewEvent, Outcome, StoredEvent, Target};
