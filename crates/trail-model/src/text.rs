//! Free-text search semantics (`q`), defined once so every backend and the reference model agree.
//!
//! An event's searchable text is every string field except its `id` (and every string or number inside
//! `info`), joined by spaces in a fixed order. The id is left out on purpose: a generated UUID adds five
//! unique tokens per event, the costliest part of a full-text index, and `GET …/events/{id}` finds an
//! event by id directly. Text is split into tokens: maximal runs of Unicode letters and digits,
//! lowercased. A query is split on ASCII white space (space, tab, CR, LF: what the API document's
//! pattern can state exactly) into words, at most [`MAX_TERMS`]; each word is itself tokenized and
//! matches when its tokens occur consecutively in the event's text with the last token matching as a
//! prefix (so `req-5f2` finds `req-5f2a9c…`). All words must match; a word without letters or digits
//! (`--`) has nothing to match and is ignored, so a `q` of such words alone filters nothing.

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

/// The words of a query: split on ASCII white space.
fn words(q: &str) -> impl Iterator<Item = &str> {
    q.split([' ', '\t', '\n', '\r']).filter(|w| !w.is_empty())
}

impl Search {
    /// The `q` parameter: 1 to [`MAX_TERMS`] words in at most [`MAX_QUERY_CHARS`] characters. `None`
    /// when no word has a letter or digit (nothing to search for).
    pub fn parse_param(q: &str) -> Result<Option<Self>, FieldError> {
        if q.chars().count() > MAX_QUERY_CHARS {
            return Err(FieldError::invalid("q", format!("must be at most {MAX_QUERY_CHARS} characters")));
        }
        let n = words(q).count();
        if n == 0 {
            return Err(FieldError::invalid("q", "must contain a word"));
        }
        if n > MAX_TERMS {
            return Err(FieldError::invalid("q", format!("must have at most {MAX_TERMS} words")));
        }
        let terms: Vec<Vec<String>> = words(q).map(tokens).filter(|t| !t.is_empty()).collect();
        Ok((!terms.is_empty()).then_some(Self { terms }))
    }

    /// A query that must search for something.
    pub fn parse(q: &str) -> Result<Self, FieldError> {
        Self::parse_param(q)?
            .ok_or_else(|| FieldError::invalid("q", "must contain at least one letter or digit"))
    }

    /// Whether an event's searchable text matches (the reference semantics).
    pub fn matches_text(&self, text: &str) -> bool {
        let toks = tokens(text);
        self.terms.iter().all(|term| phrase_in(term, &toks))
    }

    pub fn matches(&self, e: &StoredEvent) -> bool {
        self.matches_text(&searchable_text(e))
    }

    /// Whether an event matches, given its [`event_tokens`] (several searches judging one event
    /// tokenize it once).
    pub fn matches_tokens(&self, toks: &[String]) -> bool {
        self.terms.iter().all(|term| phrase_in(term, toks))
    }

    /// The same query in SQLite FTS5 syntax, over [`index_text`]: a word of one token is that token as
    /// a prefix (`"bob"*`). In a longer word each pair of adjacent tokens is looked up as one term when
    /// the index holds it ([`paired`]), else as its two tokens, the last token or pair a prefix:
    /// `req-5f2` is `"_req_5f2"*`, `a.b.c` is `"_a_b" AND "_b_c"*`, `10.0.1` is `"10" AND "0" AND "1"*`. So a word whose tokens are each common but rarely adjacent
    /// is a lookup of its pair, not a check of every position of its tokens. Words are joined by `AND`.
    /// Tokens are letters and digits, so quoting them is always safe. Exact when
    /// [`Self::exact_in_index`] says so; otherwise a superset (pairs or tokens found apart), which
    /// callers check.
    pub fn to_fts5(&self) -> String {
        self.index_terms().iter().map(IndexTerm::to_fts5).collect::<Vec<_>>().join(" AND ")
    }

    /// The index terms [`Self::to_fts5`] requires, all of them, in order.
    pub fn index_terms(&self) -> Vec<IndexTerm> {
        let mut parts = Vec::new();
        for term in &self.terms {
            if let [one] = term.as_slice() {
                parts.push(IndexTerm { term: one.clone(), prefix: true });
                continue;
            }
            let last = term.len() - 2;
            for (i, w) in term.windows(2).enumerate() {
                if paired(&w[0]) {
                    parts.push(IndexTerm { term: pair(&w[0], &w[1]), prefix: i == last });
                } else {
                    parts.push(IndexTerm { term: w[0].clone(), prefix: false });
                    if i == last {
                        parts.push(IndexTerm { term: w[1].clone(), prefix: true });
                    }
                }
            }
        }
        parts
    }

    /// Whether [`Self::to_fts5`] matches exactly the events this query matches: every word is one
    /// token, or two whose pair the index holds.
    pub fn exact_in_index(&self) -> bool {
        self.terms.iter().all(|t| match t.as_slice() {
            [_] => true,
            [first, _] => paired(first),
            _ => false,
        })
    }
}

/// One term of a query in the index: a token or a pair ([`index_text`]), matched whole or as a
/// prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexTerm {
    pub term: String,
    pub prefix: bool,
}

impl IndexTerm {
    /// The term in FTS5's syntax: quoted (tokens are letters and digits, pairs add [`PAIR_MARK`], so
    /// quoting is always safe), with `*` for a prefix.
    pub fn to_fts5(&self) -> String {
        format!("\"{}\"{}", self.term, if self.prefix { "*" } else { "" })
    }
}

/// Whether the index holds the pairs a token begins ([`index_text`]): when it is a word (`req`,
/// `chrome`), or a word and a number of one or two digits (`x86`, `user24`, `v2`). Those are a small
/// vocabulary whose pairs recur (`_x86_64`, `_user4_org`); without them `x86-64` was a check of every
/// event holding `x86` and `64`. Pairs after other tokens with digits are not kept: after request ids
/// (`5f2a9c_staging`) and inside UUIDs they are nearly one new term per event, and after the numbers
/// of addresses and versions (`10_177`, `177_11`) they are many mid-frequency terms; either took a
/// third or more off the indexer's rate (BENCHMARKS.md), while a word beginning with such a token
/// (`10.0.1`) is rare, or its tokens are, so they are looked up apart.
fn paired(token: &str) -> bool {
    let word = token.trim_end_matches(char::is_numeric);
    !word.is_empty() && word.chars().all(char::is_alphabetic) && token[word.len()..].chars().count() <= 2
}

/// Marks a pair of adjacent tokens in [`index_text`]; never part of a token.
pub const PAIR_MARK: char = '_';

/// The index term of two adjacent tokens: `_a_b`. It starts with the mark, so a token's prefix
/// (`"req"*`) never expands into the pairs that begin with it.
fn pair(a: &str, b: &str) -> String {
    let mut out = String::with_capacity(a.len() + b.len() + 2);
    push_pair(&mut out, a, b);
    out
}

/// Appends [`pair`]`(a, b)` to `out`: the one spelling of a pair term, for the query and the index.
fn push_pair(out: &mut String, a: &str, b: &str) {
    out.push(PAIR_MARK);
    out.push_str(a);
    out.push(PAIR_MARK);
    out.push_str(b);
}

/// What a full-text index holds for an event, for [`Search::to_fts5`]: its tokens, then each pair of
/// adjacent tokens whose first is [`paired`] as one term ([`PAIR_MARK`]), separated by
/// spaces. The index must split this text at spaces only.
pub fn index_text(e: &StoredEvent) -> String {
    index_terms(&searchable_text(e))
}

/// [`index_text`] of a searchable text: [`tokens`], joined, then their pairs, written into two
/// buffers without a string per token (the indexer spent a tenth of its time allocating them).
fn index_terms(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut spans: Vec<(usize, usize)> = Vec::with_capacity(64);
    for token in text.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        let start = out.len();
        if token.is_ascii() {
            out.extend(token.chars().map(|c| c.to_ascii_lowercase()));
        } else {
            out.push_str(&token.to_lowercase());
        }
        spans.push((start, out.len()));
    }
    let mut pairs = String::with_capacity(out.len());
    for w in spans.windows(2) {
        let (a, b) = (&out[w[0].0..w[0].1], &out[w[1].0..w[1].1]);
        if paired(a) {
            pairs.push(' ');
            push_pair(&mut pairs, a, b);
        }
    }
    out.push_str(&pairs);
    out
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

/// The tokens of an event's searchable text.
pub fn event_tokens(e: &StoredEvent) -> Vec<String> {
    tokens(&searchable_text(e))
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
        assert_eq!(Search::parse_param("--- !!"), Ok(None), "words without letters or digits are ignored");
        assert_eq!(Search::parse_param(" \t ").unwrap_err().message, "must contain a word");
        let seventeen = vec!["a"; 17].join(" ");
        assert_eq!(Search::parse_param(&seventeen).unwrap_err().message, "must have at most 16 words");
        assert_eq!(Search::parse_param(&format!("{seventeen}-")[1..]).unwrap().unwrap().terms.len(), 16);
        // Only ASCII white space separates words; other separators are inside a word's tokens.
        assert_eq!(Search::parse("a\u{2003}b").unwrap().terms, [vec!["a".to_string(), "b".to_string()]]);
        assert_eq!(Search::parse("req-5f2 Bob").unwrap().to_fts5(), "\"_req_5f2\"* AND \"bob\"*");
        let long = Search::parse("a.b.c.d x").unwrap();
        assert_eq!(long.to_fts5(), "\"_a_b\" AND \"_b_c\" AND \"_c_d\"* AND \"x\"*");
        assert!(!long.exact_in_index(), "a word of four tokens may match its pairs apart");
        assert!(Search::parse("req-5f2 Bob").unwrap().exact_in_index());
        // Words, and words with a number of one or two digits, begin pairs; other tokens with digits
        // are looked up apart.
        let address = Search::parse("10.0.1 x86-64 user24@a").unwrap();
        assert_eq!(address.to_fts5(), "\"10\" AND \"0\" AND \"1\"* AND \"_x86_64\"* AND \"_user24_a\"*");
        assert!(!address.exact_in_index());
        assert!(Search::parse("x86-64 Zürich-2 v2-beta").unwrap().exact_in_index());
        assert_eq!(
            Search::parse("5f2a-b user123-x").unwrap().to_fts5(),
            "\"5f2a\" AND \"b\"* AND \"user123\" AND \"x\"*"
        );
        assert_eq!(Search::parse("a.5f2a.b").unwrap().to_fts5(), "\"_a_5f2a\" AND \"5f2a\" AND \"b\"*");
    }

    #[test]
    fn the_index_text_holds_tokens_then_pairs() {
        assert_eq!(
            index_terms("Req-5F2a9 alice@x 10.1 abcd1234-z"),
            "req 5f2a9 alice x 10 1 abcd1234 z _req_5f2a9 _alice_x _x_10"
        );
        assert!(paired("user٤٢") && !paired("user٤٢٣"), "digits are counted as characters");
        assert!(!paired("42") && !paired("a4b"));
        assert_eq!(index_terms("alone"), "alone");
        assert_eq!(index_terms(" -- "), "");
        assert!(tokens("a_b c—d").iter().all(|t| !t.contains(PAIR_MARK)), "no token holds the mark");
        // The same terms as `tokens`, joined, then the pairs of `paired` first tokens, whatever the
        // text: case mappings that change a token's length or script, digits of other scripts, marks.
        for text in [
            "İstanbul x86-64 ǅemal ΣΊΣΥΦΟΣ straße ﬁle",
            "Zürich—東京 user٤٢-x Ⅻ-1 a\u{301}b ÀB12-c",
            "req-5f2a9c alice@acme.io 10.177.11.241 Mozilla/5.0 (X11; Linux x86_64)",
        ] {
            let toks = tokens(text);
            let mut want = toks.join(" ");
            for w in toks.windows(2).filter(|w| paired(&w[0])) {
                want.push_str(&format!(" {}", pair(&w[0], &w[1])));
            }
            assert_eq!(index_terms(text), want, "{text}");
        }
    }
}
