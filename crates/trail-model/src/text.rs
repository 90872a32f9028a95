//! Free-text search semantics (`q`), defined once so every backend and the reference model agree.
//!
//! An event's searchable text is every string field except its `id` (and every string or number inside
//! `info`), joined by spaces in a fixed order. The id is left out on purpose: a generated UUID adds five
//! unique tokens per event, the costliest part of a full-text index, and `GET …/events/{id}` finds an
//! event by id directly. Text is split into tokens: maximal runs of Unicode letters and digits,
//! lowercased. A query is split on whitespace into terms; each term is itself tokenized, and matches
//! when its tokens occur consecutively in the event's text with the last token matching as a prefix
//! (so `req-5f2` finds `req-5f2a9c…`). All terms must match.

use serde_json::Value;

use crate::FieldError;
use crate::event::StoredEvent;

/// The longest accepted `q`, in characters.
pub const MAX_QUERY_CHARS: usize = 256;
/// At most this many terms in one `q`.
pub const MAX_TERMS: usize = 16;

/// Splits text into lowercase tokens.
pub fn tokens(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()).map(str::to_lowercase).collect()
}

/// A parsed `q`: terms, each a phrase of tokens whose last token is a prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Search {
    pub terms: Vec<Vec<String>>,
}

impl Search {
    pub fn parse(q: &str) -> Result<Self, FieldError> {
        if q.chars().count() > MAX_QUERY_CHARS {
            return Err(FieldError::invalid("q", format!("must be at most {MAX_QUERY_CHARS} characters")));
        }
        let terms: Vec<Vec<String>> =
            q.split_whitespace().map(tokens).filter(|t: &Vec<String>| !t.is_empty()).collect();
        if terms.is_empty() {
            return Err(FieldError::invalid("q", "must contain at least one letter or digit"));
        }
        if terms.len() > MAX_TERMS {
            return Err(FieldError::invalid("q", format!("must have at most {MAX_TERMS} words")));
        }
        Ok(Self { terms })
    }

    /// Whether an event's searchable text matches (the reference semantics).
    pub fn matches_text(&self, text: &str) -> bool {
        let toks = tokens(text);
        self.terms.iter().all(|term| phrase_in(term, &toks))
    }

    pub fn matches(&self, e: &StoredEvent) -> bool {
        self.matches_text(&searchable_text(e))
    }

    /// The tokens an index without positions (FTS5 `detail=none`, which cannot match phrases) can
    /// look up, the last of each term as a prefix, in FTS5 syntax: `"tok1" AND "tok2"* AND …`; `None`
    /// when there are none. Only tokens FTS5's `unicode61` tokenizer is sure to keep whole are used
    /// ([`fts_safe`]): elsewhere it splits at combining marks that [`tokens`] keeps, and a split token
    /// would be a phrase. The lookup finds a superset of [`Search::matches`] unless
    /// [`Search::tokens_are_exact`].
    pub fn to_fts5_tokens(&self) -> Option<String> {
        let mut out: Vec<String> = Vec::new();
        for term in &self.terms {
            let last = term.len() - 1;
            for (i, t) in term.iter().enumerate().filter(|(_, t)| fts_safe(t)) {
                out.push(if i == last { format!("\"{t}\"*") } else { format!("\"{t}\"") });
            }
        }
        (!out.is_empty()).then(|| out.join(" AND "))
    }

    /// Whether [`Search::to_fts5_tokens`] means exactly this search: every term is one token, and
    /// every token is looked up.
    pub fn tokens_are_exact(&self) -> bool {
        self.terms.iter().all(|t| t.len() == 1 && fts_safe(&t[0]))
    }
}

/// Whether FTS5's `unicode61` tokenizer keeps `token` (one of [`tokens`]) as one token: its letters
/// and digits are from scripts without combining marks (ASCII, Latin, Greek, Cyrillic, CJK ideographs,
/// kana, Hangul syllables). Conservative: other scripts are matched in Rust instead.
pub fn fts_safe(token: &str) -> bool {
    token.chars().all(|c| {
        c.is_ascii_alphanumeric()
            || matches!(c as u32,
                0xC0..=0xD6 | 0xD8..=0xF6 | 0xF8..=0x24F  // Latin-1 letters, Latin Extended-A and -B
                | 0x386 | 0x388..=0x3FF                      // Greek
                | 0x400..=0x481 | 0x48A..=0x52F              // Cyrillic (without its combining marks)
                | 0x3041..=0x3096 | 0x30A1..=0x30FA          // kana (without the voicing marks)
                | 0x4E00..=0x9FFF                            // CJK unified ideographs
                | 0xAC00..=0xD7A3) // Hangul syllables
    })
}

fn phrase_in(term: &[String], toks: &[String]) -> bool {
    let Some((last, head)) = term.split_last() else {
        return true;
    };
    if toks.len() < term.len() {
        return false;
    }
    (0..=toks.len() - term.len()).any(|i| {
        head.iter().zip(&toks[i..]).all(|(a, b)| a == b) && toks[i + head.len()].starts_with(last.as_str())
    })
}

/// The searchable text of an event, in a fixed field order.
pub fn searchable_text(e: &StoredEvent) -> String {
    let mut out = String::with_capacity(256);
    let mut push = |s: &str| {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(s);
    };
    push(&e.actor.id);
    push(e.actor.kind.as_str());
    for s in [&e.actor.name, &e.actor.ip, &e.actor.user_agent].into_iter().flatten() {
        push(s);
    }
    push(&e.action);
    push(&e.target.kind);
    for s in [&e.target.id, &e.target.name, &e.project].into_iter().flatten() {
        push(s);
    }
    push(e.outcome.as_str());
    for s in [&e.reason, &e.source].into_iter().flatten() {
        push(s);
    }
    if let Some(info) = &e.info {
        for v in info.values() {
            push_json(v, &mut push);
        }
    }
    out
}

fn push_json(v: &Value, push: &mut impl FnMut(&str)) {
    match v {
        Value::String(s) => push(s),
        Value::Number(n) => push(&n.to_string()),
        Value::Array(a) => a.iter().for_each(|v| push_json(v, push)),
        Value::Object(o) => o.values().for_each(|v| push_json(v, push)),
        Value::Null | Value::Bool(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizes_ids_and_emails() {
        assert_eq!(tokens("req-5F2a alice@ACME.io"), ["req", "5f2a", "alice", "acme", "io"]);
        assert_eq!(tokens("Zürich—東京"), ["zürich", "東京"]);
    }

    #[test]
    fn phrase_with_prefix() {
        let s = Search::parse("req-5f2").unwrap();
        assert!(s.matches_text("x req-5f2a9c y"));
        assert!(!s.matches_text("req x-5f2a9c"));
        assert!(!s.matches_text("5f2a9c req"));
        let s = Search::parse("alice deployed").unwrap();
        assert!(s.matches_text("component.deployed alice@x"));
        assert!(!s.matches_text("component.deployed bob"));
        assert_eq!(Search::parse("--- ").unwrap_err().field, "q");
        let s = Search::parse("req-5f2 Bob").unwrap();
        assert_eq!(s.to_fts5_tokens().unwrap(), "\"req\" AND \"5f2\"* AND \"bob\"*");
        assert!(!s.tokens_are_exact());
        assert!(Search::parse("alice Zürich 東京").unwrap().tokens_are_exact());
        // Devanagari vowel signs are letters to `tokens` but separators to FTS5's tokenizer.
        let s = Search::parse("नमस्ते deploy").unwrap();
        assert_eq!(s.to_fts5_tokens().unwrap(), "\"deploy\"*");
        assert!(!s.tokens_are_exact());
        assert_eq!(Search::parse("नमस्ते").unwrap().to_fts5_tokens(), None);
    }
}
