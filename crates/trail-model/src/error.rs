//! The validation error shared by event and query parsing: it always names the offending field.

/// A rejected input, naming the field (dotted path, e.g. `actor.ip`) and saying what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct FieldError {
    /// Machine-readable reason, snake_case (`invalid_field`, `unknown_field`, `window_too_large`, …).
    pub code: &'static str,
    /// The dotted path of the field, e.g. `actor.ip`, or the query parameter name.
    pub field: String,
    /// A human sentence for the caller.
    pub message: String,
}

impl FieldError {
    pub fn new(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code, field: field.into(), message: message.into() }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new("invalid_field", field, message)
    }
}
