//! Query parameters (PRODUCT.md §4): parsing, the reference filter semantics, and paging cursors.
//!
//! The time window is half-open, `[from, to)`. Results are newest first, ordered by `(time, seq)`
//! descending. A cursor pins the window, the position, and the log size at the first page
//! (`as_of`), so paging is a stable snapshot: no event is skipped or repeated while new ones arrive.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::FieldError;
use crate::event::{Outcome, StoredEvent};
use crate::text::Search;
use crate::time::{MICROS_PER_DAY, Micros, format_rfc3339, parse_rfc3339};

/// The longest window one query or export may cover.
pub const MAX_WINDOW_DAYS: i64 = 92;
pub const DEFAULT_WINDOW: Micros = MICROS_PER_DAY;
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 1000;
/// At most this many values for one repeatable filter parameter.
pub const MAX_VALUES: usize = 100;

/// `action=component.deployed` or `action=component.*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ActionMatch {
    Exact(String),
    Prefix(String),
}

impl ActionMatch {
    pub fn matches(&self, action: &str) -> bool {
        match self {
            ActionMatch::Exact(a) => a == action,
            ActionMatch::Prefix(p) => action.starts_with(p.as_str()),
        }
    }
}

/// The unit a backend counts every event (and failures) in for histograms: a minute.
pub const COUNTED_MINUTE: Micros = 60 * crate::time::MICROS_PER_SECOND;
/// The unit it counts events per action and per field value in: ten minutes.
pub const COUNTED_SLOT: Micros = 10 * COUNTED_MINUTE;

/// A filter field whose events a backend may count per value and time (for histograms), where an
/// org's events are dense enough for counts to be cheaper than rows. Target ids are not among them:
/// nearly every event has its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CountedField {
    Actor,
    TargetType,
    Project,
    Source,
}

impl CountedField {
    pub const ALL: [CountedField; 4] =
        [CountedField::Actor, CountedField::TargetType, CountedField::Project, CountedField::Source];

    /// How a store records the field: a small number that never changes.
    pub fn code(self) -> i16 {
        match self {
            CountedField::Actor => 0,
            CountedField::TargetType => 1,
            CountedField::Project => 2,
            CountedField::Source => 3,
        }
    }

    /// The values a filter selects for this field (empty: any).
    pub fn values(self, f: &Filter) -> &[String] {
        match self {
            CountedField::Actor => &f.actor,
            CountedField::TargetType => &f.target_type,
            CountedField::Project => &f.project,
            CountedField::Source => &f.source,
        }
    }
}

/// What to select. Each list is OR within itself; different fields AND together; empty = any.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Filter {
    pub from: Micros,
    pub to: Micros,
    pub actor: Vec<String>,
    pub action: Vec<ActionMatch>,
    pub target_type: Vec<String>,
    pub target_id: Vec<String>,
    pub project: Vec<String>,
    pub outcome: Vec<Outcome>,
    pub source: Vec<String>,
    pub q: Option<Search>,
}

impl Filter {
    /// True when the filter selects every event of its window (no field filter, no free text): what
    /// a backend can answer from per-time counts.
    pub fn is_window_only(&self) -> bool {
        self.actor.is_empty()
            && self.action.is_empty()
            && self.target_type.is_empty()
            && self.target_id.is_empty()
            && self.project.is_empty()
            && self.outcome.is_empty()
            && self.source.is_empty()
            && self.q.is_none()
    }

    /// What per-minute counts of every event and of failures can answer: `Some(None)` when the filter
    /// selects every event of its window, `Some(Some(outcome))` when it selects one outcome and
    /// nothing else, `None` for anything else.
    pub fn counted_by_minute(&self) -> Option<Option<Outcome>> {
        let only_outcome = Filter { outcome: Vec::new(), ..self.clone() };
        if !only_outcome.is_window_only() {
            return None;
        }
        let (s, f) = (self.outcome.contains(&Outcome::Success), self.outcome.contains(&Outcome::Failure));
        Some(match (s, f) {
            (true, false) => Some(Outcome::Success),
            (false, true) => Some(Outcome::Failure),
            _ => None,
        })
    }

    /// What counts per action and time can answer: `Some(outcome)` when the filter selects actions (and
    /// at most one outcome) and nothing else, `None` for anything else.
    pub fn counted_by_action(&self) -> Option<Option<Outcome>> {
        if self.action.is_empty() {
            return None;
        }
        Filter { action: Vec::new(), ..self.clone() }.counted_by_minute()
    }

    /// What counts per value of one field and time can answer: `Some((field, values, outcome))` when
    /// the filter selects values of exactly one [`CountedField`] (and at most one outcome) and nothing
    /// else, `None` for anything else.
    pub fn counted_by_field(&self) -> Option<(CountedField, &[String], Option<Outcome>)> {
        let mut chosen = None;
        for field in CountedField::ALL {
            let values = field.values(self);
            if values.is_empty() {
                continue;
            }
            if chosen.is_some() {
                return None;
            }
            chosen = Some((field, values));
        }
        let (field, values) = chosen?;
        let mut rest = self.clone();
        match field {
            CountedField::Actor => rest.actor.clear(),
            CountedField::TargetType => rest.target_type.clear(),
            CountedField::Project => rest.project.clear(),
            CountedField::Source => rest.source.clear(),
        }
        Some((field, values, rest.counted_by_minute()?))
    }

    /// Whether a backend answers this filter's histogram with buckets of `width` from its counts per
    /// unit of time (cost following the window's units, not its events): buckets must be at least
    /// the unit the filter's counts are kept in.
    pub fn counted_at(&self, width: Micros) -> bool {
        (self.counted_by_minute().is_some() && width >= COUNTED_MINUTE)
            || ((self.counted_by_action().is_some() || self.counted_by_field().is_some())
                && width >= COUNTED_SLOT)
    }

    /// The reference semantics every backend must reproduce.
    pub fn matches(&self, e: &StoredEvent) -> bool {
        fn any_of(list: &[String], v: Option<&String>) -> bool {
            list.is_empty() || v.is_some_and(|v| list.contains(v))
        }
        e.time >= self.from
            && e.time < self.to
            && any_of(&self.actor, Some(&e.actor.id))
            && (self.action.is_empty() || self.action.iter().any(|a| a.matches(&e.action)))
            && any_of(&self.target_type, Some(&e.target.kind))
            && any_of(&self.target_id, e.target.id.as_ref())
            && any_of(&self.project, e.project.as_ref())
            && (self.outcome.is_empty() || self.outcome.contains(&e.outcome))
            && any_of(&self.source, e.source.as_ref())
            && self.q.as_ref().is_none_or(|q| q.matches(e))
    }

    /// A fingerprint of everything but the window, so a cursor cannot be replayed against other filters.
    fn fingerprint(&self) -> u64 {
        // FNV-1a over a canonical rendering; not a security boundary, only a consistency check.
        let rendered = format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.actor,
            self.action,
            self.target_type,
            self.target_id,
            self.project,
            self.outcome,
            self.source,
            self.q
        );
        rendered
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
    }
}

/// Where the previous page ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub from: Micros,
    pub to: Micros,
    /// `(time, seq)` of the last event returned; the next page starts strictly below it.
    pub time: Micros,
    pub seq: u64,
    /// Only events with `seq < as_of` belong to this paging session.
    pub as_of: u64,
    fingerprint: u64,
}

const CURSOR_VERSION: u8 = 1;
const CURSOR_LEN: usize = 1 + 8 * 6;

impl Cursor {
    pub fn new(filter: &Filter, time: Micros, seq: u64, as_of: u64) -> Self {
        Self { from: filter.from, to: filter.to, time, seq, as_of, fingerprint: filter.fingerprint() }
    }

    pub fn encode(&self) -> String {
        let mut b = Vec::with_capacity(CURSOR_LEN);
        b.push(CURSOR_VERSION);
        for v in [self.from as u64, self.to as u64, self.time as u64, self.seq, self.as_of, self.fingerprint]
        {
            b.extend_from_slice(&v.to_be_bytes());
        }
        URL_SAFE_NO_PAD.encode(b)
    }

    pub fn decode(s: &str) -> Result<Self, FieldError> {
        let bad = || FieldError::new("invalid_cursor", "cursor", "is not a cursor this server issued");
        let b = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
        if b.len() != CURSOR_LEN || b[0] != CURSOR_VERSION {
            return Err(bad());
        }
        let n = |i: usize| u64::from_be_bytes(b[1 + 8 * i..9 + 8 * i].try_into().unwrap_or_default());
        let c = Self {
            from: n(0) as i64,
            to: n(1) as i64,
            time: n(2) as i64,
            seq: n(3),
            as_of: n(4),
            fingerprint: n(5),
        };
        if c.from >= c.to || c.time < c.from || c.time >= c.to {
            return Err(bad());
        }
        // The window is handed on as `from`/`to` text (`parse_query`), so a forged cursor holding
        // instants RFC 3339 cannot write must be refused here, as a cursor, not there as a parameter
        // the caller never sent.
        let printable = |t: Micros| parse_rfc3339(&format_rfc3339(t)) == Some(t);
        if !printable(c.from) || !printable(c.to) {
            return Err(bad());
        }
        Ok(c)
    }
}

/// A parsed query: filters, page size, and where to continue.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub filter: Filter,
    pub limit: usize,
    pub cursor: Option<Cursor>,
}

/// What the parser needs from outside: the clock and the org's retention.
#[derive(Debug, Clone, Copy)]
pub struct QueryContext {
    pub now: Micros,
    /// The oldest queryable instant (start of hot retention).
    pub oldest: Micros,
}

/// Parses filter parameters (everything but `limit` and `cursor`) into a [`Filter`], checking the window.
/// Every parameter [`parse_filter`] takes.
pub const FILTER_PARAMETERS: &[&str] =
    &["from", "to", "actor", "action", "target_type", "target_id", "project", "outcome", "source", "q"];

pub fn parse_filter(pairs: &[(String, String)], ctx: QueryContext) -> Result<Filter, FieldError> {
    let mut f = Filter::default();
    let (mut from, mut to, mut q) = (None, None, None);
    // Every repeat counts, the same value twice included (as the document's maxItems does).
    let mut repeats: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (k, _) in pairs {
        let n = repeats.entry(k.as_str()).or_default();
        *n += 1;
        if *n > MAX_VALUES {
            return Err(FieldError::invalid(
                k.as_str(),
                format!("may be repeated at most {MAX_VALUES} times"),
            ));
        }
    }
    for (k, v) in pairs {
        let single = |slot: &Option<Micros>| {
            if slot.is_some() {
                return Err(FieldError::invalid(k.as_str(), "may be given only once"));
            }
            parse_rfc3339(v).map(Some).ok_or_else(|| {
                FieldError::invalid(k.as_str(), "must be an RFC 3339 timestamp, e.g. 2026-01-31T09:00:00Z")
            })
        };
        match k.as_str() {
            "from" => from = single(&from)?,
            "to" => to = single(&to)?,
            "actor" => push(&mut f.actor, k, v, 256)?,
            "target_type" => push(&mut f.target_type, k, v, 64)?,
            "target_id" => push(&mut f.target_id, k, v, 256)?,
            "project" => push(&mut f.project, k, v, 128)?,
            "source" => push(&mut f.source, k, v, 64)?,
            "action" => {
                let m = match v.strip_suffix('*') {
                    Some(p) if !p.contains('*') => ActionMatch::Prefix(p.to_string()),
                    _ if !v.contains('*') => ActionMatch::Exact(v.clone()),
                    _ => return Err(FieldError::invalid("action", "may only end with a single *")),
                };
                if v.chars().count() > 129 || f.action.len() >= MAX_VALUES {
                    return Err(FieldError::invalid("action", "is too long or repeated too often"));
                }
                f.action.push(m);
            }
            "outcome" => {
                let o = Outcome::parse(v)
                    .ok_or_else(|| FieldError::invalid("outcome", "must be \"success\" or \"failure\""))?;
                if !f.outcome.contains(&o) {
                    f.outcome.push(o);
                }
            }
            "q" => {
                if q.is_some() {
                    return Err(FieldError::invalid("q", "may be given only once"));
                }
                q = Some(Search::parse_param(v)?);
            }
            other => {
                return Err(FieldError::new("unknown_parameter", other, "is not a query parameter"));
            }
        }
    }
    f.q = q.flatten();
    let to = to.unwrap_or(ctx.now);
    let from = from.unwrap_or(to.saturating_sub(DEFAULT_WINDOW));
    if from >= to {
        return Err(FieldError::invalid("from", "must be before to"));
    }
    if to - from > MAX_WINDOW_DAYS * MICROS_PER_DAY {
        return Err(FieldError::new(
            "window_too_large",
            "from",
            format!("the time window may be at most {MAX_WINDOW_DAYS} days; narrow from/to"),
        ));
    }
    if from < ctx.oldest {
        return Err(FieldError::new(
            "outside_retention",
            "from",
            format!(
                "from is older than hot retention (oldest queryable time is {}); older events are archived: restore them as an export with POST /v1/orgs/<org>/archives/restore or `trail archive restore`",
                format_rfc3339(ctx.oldest)
            ),
        ));
    }
    f.from = from;
    f.to = to;
    Ok(f)
}

/// Parses a whole query string's pairs: filters plus `limit` and `cursor`.
pub fn parse_query(pairs: &[(String, String)], ctx: QueryContext) -> Result<Query, FieldError> {
    let mut limit = None;
    let mut cursor = None;
    let mut rest = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        match k.as_str() {
            "limit" => {
                let n: usize = v.parse().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
                    FieldError::invalid("limit", format!("must be an integer from 1 to {MAX_LIMIT}"))
                })?;
                if limit.replace(n).is_some() {
                    return Err(FieldError::invalid("limit", "may be given only once"));
                }
            }
            "cursor" => {
                if cursor.replace(Cursor::decode(v)?).is_some() {
                    return Err(FieldError::invalid("cursor", "may be given only once"));
                }
            }
            _ => rest.push((k.clone(), v.clone())),
        }
    }
    // A cursor carries the window of its first page, so relative defaults do not drift between pages.
    if let Some(c) = &cursor {
        for (k, v) in &rest {
            let expected = if k == "from" {
                c.from
            } else if k == "to" {
                c.to
            } else {
                continue;
            };
            if parse_rfc3339(v) != Some(expected) {
                return Err(FieldError::new(
                    "invalid_cursor",
                    "cursor",
                    "was issued for a different time window",
                ));
            }
        }
        rest.retain(|(k, _)| k != "from" && k != "to");
        rest.push(("from".into(), format_rfc3339(c.from)));
        rest.push(("to".into(), format_rfc3339(c.to)));
    }
    let filter = parse_filter(&rest, ctx)?;
    if let Some(c) = &cursor
        && c.fingerprint != filter.fingerprint()
    {
        return Err(FieldError::new("invalid_cursor", "cursor", "was issued for different filters"));
    }
    Ok(Query { filter, limit: limit.unwrap_or(DEFAULT_LIMIT), cursor })
}

fn push(list: &mut Vec<String>, k: &str, v: &str, max: usize) -> Result<(), FieldError> {
    if v.chars().count() > max {
        return Err(FieldError::invalid(k, format!("must be at most {max} characters")));
    }
    if list.len() >= MAX_VALUES {
        return Err(FieldError::invalid(k, format!("may be repeated at most {MAX_VALUES} times")));
    }
    if !list.iter().any(|x| x == v) {
        list.push(v.to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: Micros = 1_800_000_000_000_000;
    const CTX: QueryContext = QueryContext { now: NOW, oldest: NOW - 365 * MICROS_PER_DAY };

    #[test]
    fn what_per_minute_counts_can_answer() {
        let f = |outcome: Vec<Outcome>| Filter { outcome, ..Filter::default() };
        assert_eq!(f(vec![]).counted_by_minute(), Some(None));
        assert_eq!(f(vec![Outcome::Failure]).counted_by_minute(), Some(Some(Outcome::Failure)));
        assert_eq!(f(vec![Outcome::Success]).counted_by_minute(), Some(Some(Outcome::Success)));
        assert_eq!(f(vec![Outcome::Failure, Outcome::Success]).counted_by_minute(), Some(None));
        let by_actor = Filter { actor: vec!["alice".into()], ..f(vec![Outcome::Failure]) };
        assert_eq!(by_actor.counted_by_minute(), None);
        let text = Filter { q: Some(Search::parse("x").unwrap()), ..Filter::default() };
        assert_eq!(text.counted_by_minute(), None);
    }

    #[test]
    fn what_counts_per_field_can_answer() {
        let by = |f: Filter| {
            f.counted_by_field().map(|(field, values, outcome)| (field, values.to_vec(), outcome))
        };
        let alice = vec!["alice".to_string()];
        let actor = Filter { actor: alice.clone(), ..Filter::default() };
        assert_eq!(by(actor.clone()), Some((CountedField::Actor, alice.clone(), None)));
        let failures = Filter { outcome: vec![Outcome::Failure], ..actor.clone() };
        assert_eq!(by(failures), Some((CountedField::Actor, alice.clone(), Some(Outcome::Failure))));
        let source = Filter { source: vec!["api".into(), "console".into()], ..Filter::default() };
        assert_eq!(by(source).map(|(f, v, _)| (f, v.len())), Some((CountedField::Source, 2)));
        // Two counted fields, or anything else beside one, are not counts of one field.
        assert_eq!(by(Filter { project: vec!["p".into()], ..actor.clone() }), None);
        assert_eq!(by(Filter { target_id: vec!["t".into()], ..actor.clone() }), None);
        assert_eq!(by(Filter { action: vec![ActionMatch::Exact("a".into())], ..actor.clone() }), None);
        assert_eq!(by(Filter { q: Some(Search::parse("x").unwrap()), ..actor }), None);
        assert_eq!(by(Filter::default()), None);
        assert_eq!(by(Filter { target_id: vec!["t".into()], ..Filter::default() }), None);
    }

    #[test]
    fn counts_answer_only_buckets_as_wide_as_their_unit() {
        let actor = Filter { actor: vec!["al".into()], ..Filter::default() };
        assert!(actor.counted_at(COUNTED_SLOT) && !actor.counted_at(COUNTED_SLOT - 1));
        let action = Filter { action: vec![ActionMatch::Prefix("x.".into())], ..Filter::default() };
        assert!(action.counted_at(COUNTED_SLOT) && !action.counted_at(5 * COUNTED_MINUTE));
        assert!(Filter::default().counted_at(COUNTED_MINUTE) && !Filter::default().counted_at(30_000_000));
        let text = Filter { q: Some(Search::parse("x").unwrap()), ..Filter::default() };
        assert!(!text.counted_at(crate::time::MICROS_PER_DAY));
    }

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_to_last_24_hours() {
        let q = parse_query(&[], CTX).unwrap();
        assert_eq!((q.filter.from, q.filter.to, q.limit), (NOW - MICROS_PER_DAY, NOW, 50));
    }

    #[test]
    fn window_and_retention_errors() {
        let e = parse_query(&p(&[("from", "2026-01-01T00:00:00Z"), ("to", "2026-06-01T00:00:00Z")]), CTX);
        assert_eq!(e.unwrap_err().code, "window_too_large");
        let old = format_rfc3339(CTX.oldest - 1);
        let e =
            parse_query(&p(&[("from", &old), ("to", &format_rfc3339(CTX.oldest + 1000))]), CTX).unwrap_err();
        assert_eq!(e.code, "outside_retention");
        assert!(e.message.contains("restore"));
        assert_eq!(parse_query(&p(&[("limit", "0")]), CTX).unwrap_err().field, "limit");
        assert_eq!(parse_query(&p(&[("limit", "1001")]), CTX).unwrap_err().field, "limit");
        assert_eq!(parse_query(&p(&[("colour", "x")]), CTX).unwrap_err().code, "unknown_parameter");
        // The list of parameters names exactly what the parser takes.
        let valid = |k: &str| match k {
            "from" => format_rfc3339(NOW - 1000),
            "to" => format_rfc3339(NOW),
            "outcome" => "failure".into(),
            _ => "x".into(),
        };
        for k in FILTER_PARAMETERS {
            assert!(parse_filter(&p(&[(k, &valid(k))]), CTX).is_ok(), "{k}");
        }
        assert_eq!(parse_query(&p(&[("action", "a*b*")]), CTX).unwrap_err().field, "action");
        assert_eq!(parse_query(&p(&[("outcome", "meh")]), CTX).unwrap_err().field, "outcome");
    }

    #[test]
    fn cursor_binds_window_and_filters() {
        let q = parse_query(&p(&[("actor", "alice")]), CTX).unwrap();
        let c = Cursor::new(&q.filter, NOW - 5, 9, 100).encode();
        let later = QueryContext { now: NOW + 3_600_000_000, ..CTX };
        let q2 = parse_query(&p(&[("actor", "alice"), ("cursor", &c)]), later).unwrap();
        assert_eq!((q2.filter.from, q2.filter.to), (q.filter.from, q.filter.to));
        assert_eq!(q2.cursor.unwrap().seq, 9);
        let e = parse_query(&p(&[("actor", "bob"), ("cursor", &c)]), CTX).unwrap_err();
        assert_eq!(e.code, "invalid_cursor");
        assert_eq!(parse_query(&p(&[("cursor", "garbage!")]), CTX).unwrap_err().code, "invalid_cursor");
    }

    proptest! {
        #[test]
        fn forged_cursors_are_rejected_not_panics(s in "\\PC{0,80}") {
            let _ = Cursor::decode(&s);
        }

        #[test]
        fn cursor_round_trips(time in 0i64..1_000_000, seq in any::<u64>(), as_of in any::<u64>()) {
            let f = Filter { from: 0, to: 1_000_000, actor: vec!["a".into()], ..Filter::default() };
            let c = Cursor::new(&f, time, seq, as_of);
            prop_assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        }
    }
}
