//! Page handlers: resolve the session cookie, check the permission the page needs, read through the
//! store, render a template.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use trail_model::catalog::{self, Choice};
use trail_model::query::{Filter, Query, QueryContext, parse_query};
use trail_model::time::{MICROS_PER_SECOND, Micros, format_rfc3339, now};
use trail_store::{Permission, Record, User};

use super::Page;
use crate::AppState;
use crate::auth::{ClientAddr, cookie_session};
use crate::reads::{self, Reader};
use crate::routes::events::default_width;

/// Rows per page of the log table.
const PAGE_ROWS: usize = 50;

/// What the layout needs on every signed-in page.
pub struct Nav {
    pub user: String,
    pub csrf: String,
    pub org: String,
    pub org_name: String,
    /// (slug, name) of every org of the user, for the switcher.
    pub orgs: Vec<(String, String)>,
    pub can_logs: bool,
    pub can_users: bool,
    pub can_keys: bool,
    pub can_settings: bool,
    /// Which nav entry is current.
    pub current: &'static str,
}

impl Nav {
    pub fn is(&self, name: &str) -> bool {
        self.current == name
    }
}

fn login_redirect(next: &str) -> Page {
    let encoded: String = serde_urlencoded::to_string([("next", next)]).unwrap_or_default();
    Page::Redirect(format!("/login?{encoded}"))
}

fn render(t: &impl Template) -> Page {
    match t.render() {
        Ok(html) => Page::Html(html),
        Err(e) => {
            tracing::error!(error = %e, "a console template failed to render");
            Page::Status(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
        }
    }
}

#[derive(Template)]
#[template(path = "message.html")]
struct Message<'a> {
    nav: Option<Nav>,
    title: &'a str,
    text: String,
}

fn message(code: StatusCode, nav: Option<Nav>, title: &str, text: impl Into<String>) -> Page {
    match (Message { nav, title, text: text.into() }).render() {
        Ok(html) => Page::Status(code, html),
        Err(_) => Page::Status(code, title.to_string()),
    }
}

fn unavailable(e: impl std::fmt::Display) -> Page {
    tracing::error!(error = %e, "console page failed");
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        "Something went wrong",
        "The server could not load this page. Try again in a moment.",
    )
}

/// Resolves the signed-in user and their standing in `org`; the page needs `need` (or redirects to
/// sign-in / answers 403).
async fn nav_for(
    state: &AppState,
    headers: &HeaderMap,
    org: &str,
    need: Option<Permission>,
    current: &'static str,
    here: &str,
) -> Result<(User, Nav), Page> {
    let Some((user, session, csrf)) =
        cookie_session(state, headers).await.map_err(|e| unavailable(e.message))?
    else {
        return Err(login_redirect(here));
    };
    // A single sign-on session shows only the org whose provider signed it in (the server's
    // provider's, none).
    let memberships = crate::auth::reachable_orgs(state, &user, &session.method)
        .await
        .map_err(|e| unavailable(e.message))?;
    let orgs: Vec<(String, String)> =
        memberships.iter().map(|(o, _)| (o.slug.clone(), o.name.clone())).collect();
    let Some((this, perms)) = memberships.into_iter().find(|(o, _)| o.slug == org) else {
        let text = match crate::sso::confined_to(&session.method) {
            Some(home) => format!(
                "You signed in with the single sign-on of {home}, which opens only {home}. Sign out and sign in again for {org}."
            ),
            None if session.method == crate::sso::SERVER_METHOD => format!(
                "You signed in with the server's single sign-on, for server administration only. Sign out and sign in again for {org}."
            ),
            None => format!("You are not a member of organization {org}."),
        };
        return Err(message(StatusCode::FORBIDDEN, None, "Not a member", text));
    };
    // An org that requires a second factor sends a person without one to set it up; one that signs
    // in only with its provider sends a password session there.
    match crate::mfa::gate(state, org, &user, &session.method).await {
        Ok(()) => {}
        Err(e) if e.code == "mfa_required" => {
            let encoded: String = serde_urlencoded::to_string([("required", org)]).unwrap_or_default();
            return Err(Page::Redirect(format!("/account?{encoded}")));
        }
        Err(e) if e.code == "sso_required" => {
            let encoded: String =
                serde_urlencoded::to_string([("org", org), ("next", here)]).unwrap_or_default();
            return Err(Page::Redirect(format!("/v1/auth/sso?{encoded}")));
        }
        Err(e) => return Err(unavailable(e.message)),
    }
    let has = |p: Permission| perms.contains(&p);
    let nav = Nav {
        user: user.email.clone(),
        csrf,
        org: this.slug.clone(),
        org_name: this.name.clone(),
        orgs,
        can_logs: has(Permission::LogManagement),
        can_users: has(Permission::UserManagement),
        can_keys: has(Permission::KeyManagement),
        can_settings: has(Permission::OrgSettings),
        current,
    };
    if let Some(p) = need
        && !has(p)
    {
        let text = format!("This page needs the {} permission in {}.", p.as_str(), this.name);
        return Err(message(StatusCode::FORBIDDEN, Some(nav), "Not allowed", text));
    }
    Ok((user, nav))
}

pub async fn home(State(state): State<AppState>, headers: HeaderMap) -> Page {
    let session = match cookie_session(&state, &headers).await {
        Ok(s) => s,
        Err(e) => return unavailable(e.message),
    };
    let Some((user, _, _)) = session else { return Page::Redirect("/login".into()) };
    match state.store.user_orgs(&user.id).await {
        Ok(orgs) => match orgs.first() {
            Some((o, perms)) if perms.contains(&Permission::LogManagement) => {
                Page::Redirect(format!("/orgs/{}/logs", o.slug))
            }
            Some((o, _)) => Page::Redirect(format!("/orgs/{}/admin/users", o.slug)),
            None => message(
                StatusCode::OK,
                None,
                "No organization yet",
                "You are not a member of any organization. Ask an administrator for an invitation.",
            ),
        },
        Err(e) => unavailable(e),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct Login {
    nav: Option<Nav>,
    next: String,
    /// The org named in the address (its single sign-on form is filled in).
    org: String,
    /// Why a single sign-on was refused, in the console's words.
    sso_error: Option<&'static str>,
    /// Whether the server's own provider signs in server administrators.
    admin_sso: bool,
}

pub async fn login(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Page {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).unwrap_or_default();
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    // Only same-site paths: never an open redirect.
    let next = get("next").filter(|v| super::local_path(v)).unwrap_or_else(|| "/".into());
    let org = get("org")
        .filter(|o| o.len() <= 63 && o.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .unwrap_or_default();
    let sso_error = get("sso_error").and_then(|c| crate::sso::explain(&c));
    let admin_sso = crate::sso::server_provider(&state).is_some();
    render(&Login { nav: None, next, org, sso_error, admin_sso })
}

#[derive(Template)]
#[template(path = "account.html")]
struct Account {
    nav: Option<Nav>,
    csrf: String,
    email: String,
    enabled: bool,
    confirmed_at: Option<String>,
    recovery_left: usize,
    /// The org that sent the person here because it requires a second factor.
    required_by: Option<String>,
}

/// Your account: two-factor sign-in and your password (not an org's page: reachable by everyone
/// signed in, also when an org requires what is set up here).
pub async fn account(State(state): State<AppState>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Page {
    let Some((user, _, csrf)) = (match cookie_session(&state, &headers).await {
        Ok(s) => s,
        Err(e) => return unavailable(e.message),
    }) else {
        return login_redirect("/account");
    };
    let enrolment = match crate::mfa::enrolment(&state, &user.id).await {
        Ok(e) => e.filter(|e| e.confirmed_at.is_some()),
        Err(e) => return unavailable(e.message),
    };
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).unwrap_or_default();
    let required_by =
        pairs.into_iter().find(|(k, v)| k == "required" && crate::routes::valid_slug(v)).map(|(_, v)| v);
    render(&Account {
        nav: None,
        csrf,
        email: user.email,
        enabled: enrolment.is_some(),
        confirmed_at: enrolment.as_ref().and_then(|e| e.confirmed_at).map(format_rfc3339),
        recovery_left: enrolment.map_or(0, |e| e.recovery.len()),
        required_by,
    })
}

#[derive(Template)]
#[template(path = "accept.html")]
struct Accept {
    nav: Option<Nav>,
    token: String,
    /// (email, CSRF token) when someone is signed in: they may accept as themselves.
    signed_in: Option<(String, String)>,
}

pub async fn accept_invitation(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Page {
    let signed_in = match cookie_session(&state, &headers).await {
        Ok(s) => s.map(|(u, _, csrf)| (u.email, csrf)),
        Err(e) => return unavailable(e.message),
    };
    render(&Accept { nav: None, token, signed_in })
}

// --- Audit Logs ---------------------------------------------------------------------------------

/// The time range presets, and what each means in the API's terms.
const PRESETS: &[(&str, &str, i64)] = &[
    ("1h", "Last hour", 3600),
    ("24h", "Last 24 hours", 86_400),
    ("7d", "Last 7 days", 7 * 86_400),
    ("30d", "Last 30 days", 30 * 86_400),
    ("90d", "Last 90 days", 90 * 86_400),
];

#[cfg(test)]
mod range_tests {
    /// The presets are exactly the ranges an org may open with (`RangeName`, the settings' type).
    #[test]
    fn presets_are_the_settable_ranges() {
        let presets: Vec<&str> = super::PRESETS.iter().map(|p| p.0).collect();
        let settable: Vec<&str> = crate::routes::bodies::RangeName::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(presets, settable);
        assert!(presets.contains(&crate::retention::DEFAULT_RANGE));
    }
}

/// Filter fields the page passes to the API as they are.
const PASSED: &[&str] = &["actor", "action", "target_type", "target_id", "project", "outcome", "source", "q"];

/// Filters whose inputs take several values, separated by commas, matched with OR (as the API's
/// repeated parameters are). Free text is one value: its words must all match.
const SEVERAL: &[&str] = &["actor", "action", "target_type", "target_id", "project", "outcome", "source"];

/// The page's form state, read from its query string.
#[derive(Debug, Default, Clone)]
pub struct Form {
    pub range: String,
    pub from_local: String,
    pub to_local: String,
    /// Minutes east of UTC the custom range was entered in (set by the script; 0 without it).
    pub tz_offset: i64,
    /// Filter → its values (OR), in the order given, without repeats.
    pub fields: BTreeMap<String, Vec<String>>,
    pub cursor: Option<String>,
}

impl Form {
    /// The form of a URL; without a `range`, the org's opening range (`default_range`).
    fn parse(raw: Option<&str>, default_range: &str) -> Self {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or("")).unwrap_or_default();
        let mut f = Form { range: default_range.into(), ..Form::default() };
        for (k, v) in pairs {
            let v = v.trim().to_string();
            match k.as_str() {
                "range" if !v.is_empty() => f.range = v,
                "from_local" => f.from_local = v,
                "to_local" => f.to_local = v,
                // Real offsets only (UTC−12 to UTC+14): anything else could overflow the arithmetic.
                "tz_offset" => f.tz_offset = v.parse().ok().filter(|m| (-720..=840).contains(m)).unwrap_or(0),
                "cursor" if !v.is_empty() => f.cursor = Some(v),
                k if PASSED.contains(&k) => {
                    let values = f.fields.entry(k.to_string()).or_default();
                    let parts: Vec<&str> = if SEVERAL.contains(&k) {
                        v.split(',').map(str::trim).collect()
                    } else {
                        vec![v.as_str()]
                    };
                    for p in parts {
                        if !p.is_empty() && !values.iter().any(|x| x == p) {
                            values.push(p.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        f.fields.retain(|_, v| !v.is_empty());
        f
    }

    /// A filter's values as its text input shows them.
    pub fn get(&self, k: &str) -> String {
        self.fields.get(k).map(|v| v.join(", ")).unwrap_or_default()
    }

    /// Whether a value is among a filter's values.
    pub fn has(&self, k: &str, value: &str) -> bool {
        self.fields.get(k).is_some_and(|v| v.iter().any(|x| x == value))
    }

    /// The action filter's choice is selected when every action it stands for is asked for.
    pub fn chosen(&self, choice: &Choice) -> bool {
        choice.actions.iter().all(|a| self.has("action", a))
    }

    /// Actions asked for that no selected choice covers (prefixes, uncatalogued names, a second
    /// choice), for the "more actions" input.
    pub fn other_actions(&self, choices: &[Choice]) -> String {
        let covered: Vec<&str> =
            choices.iter().find(|c| self.chosen(c)).map(|c| c.actions.clone()).unwrap_or_default();
        let rest: Vec<&str> = self
            .fields
            .get("action")
            .into_iter()
            .flatten()
            .map(String::as_str)
            .filter(|a| !covered.contains(a))
            .collect();
        rest.join(", ")
    }

    /// `datetime-local` text (`2026-11-20T13:45`) entered at `tz_offset` to an instant.
    fn local(&self, s: &str) -> Option<Micros> {
        let t = trail_model::time::parse_rfc3339(&format!("{}:00Z", s.get(..16)?))?;
        Some(t - self.tz_offset * 60 * MICROS_PER_SECOND)
    }

    /// The API's query parameters for this form, or the message to show. A preset range starts no
    /// earlier than `floor`.
    fn pairs(&self, now: Micros, floor: Micros) -> Result<Vec<(String, String)>, String> {
        let mut out: Vec<(String, String)> = Vec::new();
        let (from, to) = match PRESETS.iter().find(|p| p.0 == self.range) {
            Some((_, _, secs)) => ((now - secs * MICROS_PER_SECOND).max(floor), now + 1),
            None if self.range == "custom" => {
                let from = self
                    .local(&self.from_local)
                    .ok_or("Enter a start date and time for the custom range.")?;
                let to =
                    self.local(&self.to_local).ok_or("Enter an end date and time for the custom range.")?;
                (from, to)
            }
            None => return Err(format!("Unknown time range {:?}.", self.range)),
        };
        out.push(("from".into(), format_rfc3339(from)));
        out.push(("to".into(), format_rfc3339(to)));
        for (k, values) in &self.fields {
            out.extend(values.iter().map(|v| (k.clone(), v.clone())));
        }
        Ok(out)
    }

    /// This form as a query string, with or without a cursor.
    /// The filters and free text alone (what a saved search or an alert rule keeps).
    pub fn search_query(&self) -> String {
        let pairs: Vec<(&str, &str)> = self
            .fields
            .iter()
            .flat_map(|(k, values)| values.iter().map(move |v| (k.as_str(), v.as_str())))
            .collect();
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }

    pub fn query_string(&self, cursor: Option<&str>) -> String {
        let mut pairs: Vec<(&str, &str)> = vec![("range", &self.range)];
        let offset = self.tz_offset.to_string();
        if self.range == "custom" {
            pairs.extend([
                ("from_local", self.from_local.as_str()),
                ("to_local", self.to_local.as_str()),
                ("tz_offset", &offset),
            ]);
        }
        for (k, values) in &self.fields {
            pairs.extend(values.iter().map(|v| (k.as_str(), v.as_str())));
        }
        if let Some(c) = cursor {
            pairs.push(("cursor", c));
        }
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }
}

/// One table row.
pub struct Row {
    pub id: String,
    pub time: String,
    pub actor: String,
    pub action: String,
    pub action_label: String,
    pub target: String,
    pub project: String,
    pub outcome: String,
    pub source: String,
}

impl Row {
    fn of(r: &Record) -> Self {
        let e = &r.event;
        let target = match (&e.target.id, &e.target.name) {
            (Some(id), Some(name)) if id != name => format!("{}: {name} ({id})", e.target.kind),
            (Some(id), _) => format!("{}: {id}", e.target.kind),
            (None, Some(name)) => format!("{}: {name}", e.target.kind),
            (None, None) => e.target.kind.clone(),
        };
        Row {
            id: e.id.clone(),
            time: format_rfc3339(e.time),
            actor: e.actor.name.clone().map_or(e.actor.id.clone(), |n| format!("{n} ({})", e.actor.id)),
            action: e.action.clone(),
            action_label: catalog::label(&e.action).unwrap_or(&e.action).to_string(),
            target,
            project: e.project.clone().unwrap_or_default(),
            outcome: e.outcome.as_str().to_string(),
            source: e.source.clone().unwrap_or_default(),
        }
    }
}

/// One histogram bar, in SVG units (the chart is 1000 × 100).
pub struct Bar {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    pub title: String,
    /// The bucket's events and start (RFC 3339), shown on hover by the script.
    pub count: u64,
    pub start: String,
}

/// The histogram's axes: the largest bucket's count, and five evenly spaced instants of the window.
#[derive(Debug, Default)]
pub struct Axes {
    pub max: u64,
    pub ticks: Vec<String>,
}

impl Axes {
    fn of(f: &Filter, bars: &[Bar]) -> Self {
        let span = f.to - f.from;
        Self {
            max: bars.iter().map(|b| b.count).max().unwrap_or(0),
            ticks: (0..5).map(|i| format_rfc3339(f.from + span / 4 * i)).collect(),
        }
    }
}

/// The range the org's Audit Logs page opens with (Settings), from the cached policy.
async fn opening_range(state: &AppState, org: &str) -> &'static str {
    state.policy(org).await.map_or(crate::retention::DEFAULT_RANGE, |p| p.default_range)
}

/// The action filter's choices by category (one choice may stand for several names of an operation).
pub fn catalog_groups() -> Vec<(&'static str, Vec<Choice>)> {
    let mut groups: Vec<(&'static str, Vec<Choice>)> = Vec::new();
    for c in catalog::choices() {
        match groups.last_mut() {
            Some((category, v)) if *category == c.category => v.push(c),
            _ => groups.push((c.category, vec![c])),
        }
    }
    groups
}

#[derive(Template)]
#[template(path = "logs.html")]
struct Logs {
    nav: Option<Nav>,
    org: String,
    form: Form,
    presets: &'static [(&'static str, &'static str, i64)],
    groups: Vec<(&'static str, Vec<Choice>)>,
    /// Every choice, for `Form::other_actions`.
    choices: Vec<Choice>,
    error: Option<String>,
    rows: Vec<Row>,
    next: Option<String>,
    /// Why nothing matched, when nothing did.
    empty: Option<String>,
    bars: Vec<Bar>,
    axes: Axes,
    window: (String, String),
    total: u64,
    /// The API's histogram query for the script, when the histogram is drawn after the page.
    deferred: Option<String>,
    /// The export request's filters (the API's parameters) as JSON.
    export_filters: String,
    query: String,
    /// This page's filters and free text, and its relative range (for saving the search).
    search_query: String,
    /// `search=<search_query>`, for making an alert rule of it.
    alert_query: String,
    /// The searches this person may open: their own and the shared ones.
    saved: Vec<SavedView>,
}

/// A saved search in the Audit Logs page's list.
pub struct SavedView {
    pub id: String,
    pub name: String,
    pub shared: bool,
    pub mine: bool,
    pub owner: String,
    /// The page with the search applied.
    pub href: String,
    /// The export API's query: the filters and the range's window as of now.
    pub export_query: String,
}

async fn saved_views(state: &AppState, org: &str, me: &str) -> Vec<SavedView> {
    let docs = state
        .store
        .documents(Some(org), crate::alerts::rules::SEARCH, usize::MAX, None)
        .await
        .unwrap_or_default();
    let mut out: Vec<SavedView> = docs
        .into_iter()
        .filter_map(|d| {
            let s: crate::alerts::rules::SavedSearch = serde_json::from_value(d.body).ok()?;
            if !(s.shared || s.owner == me) {
                return None;
            }
            let secs = PRESETS.iter().find(|p| p.0 == s.range).map_or(86_400, |p| p.2);
            let t = now();
            let window = serde_urlencoded::to_string([
                ("from", format_rfc3339(t - secs * 1_000_000)),
                ("to", format_rfc3339(t)),
            ])
            .unwrap_or_default();
            let sep = if s.query.is_empty() { "" } else { "&" };
            Some(SavedView {
                id: d.id,
                href: format!("/orgs/{org}/logs?range={}{sep}{}", s.range, s.query),
                export_query: format!("{}{sep}{window}", s.query),
                name: s.name,
                shared: s.shared,
                mine: s.owner == me,
                owner: s.owner_email,
            })
        })
        .collect();
    out.sort_by_key(|v| v.name.to_lowercase());
    out
}

fn describe_filters(form: &Form, window: &str) -> String {
    let active: Vec<String> =
        form.fields.iter().map(|(k, v)| format!("{} “{}”", k.replace('_', " "), v.join("” or “"))).collect();
    if active.is_empty() {
        format!("No events were recorded {window}. Try a longer time range.")
    } else {
        format!("No events {window} match {}. Remove a filter or widen the time range.", active.join(", "))
    }
}

pub async fn logs(
    State(state): State<AppState>,
    Path(org): Path<String>,
    headers: HeaderMap,
    addr: ClientAddr,
    RawQuery(raw): RawQuery,
) -> Page {
    let here = format!("/orgs/{org}/logs{}", raw.as_deref().map(|q| format!("?{q}")).unwrap_or_default());
    let (user, nav) =
        match nav_for(&state, &headers, &org, Some(Permission::LogManagement), "logs", &here).await {
            Ok(x) => x,
            Err(p) => return p,
        };
    let form = Form::parse(raw.as_deref(), opening_range(&state, &org).await);
    let mut page = Logs {
        nav: None,
        org: org.clone(),
        presets: PRESETS,
        groups: catalog_groups(),
        choices: catalog::choices(),
        error: None,
        rows: Vec::new(),
        next: None,
        empty: None,
        bars: Vec::new(),
        axes: Axes::default(),
        window: (String::new(), String::new()),
        total: 0,
        deferred: None,
        export_filters: "{}".into(),
        query: form.query_string(None),
        search_query: form.search_query(),
        alert_query: serde_urlencoded::to_string([("search", form.search_query())]).unwrap_or_default(),
        saved: saved_views(&state, &org, &user.id).await,
        form,
    };
    match load(&state, &org, &page.form).await {
        Ok(Loaded { query, rows, next, chart }) => {
            let f = &query.filter;
            let pairs = page.form.pairs(f.to, f.from).unwrap_or_default();
            let search = reads::Search {
                pairs: &pairs,
                filter: f,
                returned: rows.len(),
                paged: page.form.cursor.is_some(),
            };
            if let Err(e) = reads::searched(&state, &org, Reader::Person(&user), &addr, search).await {
                return unavailable(e.message);
            }
            page.window = (format_rfc3339(f.from), format_rfc3339(f.to));
            let preset = PRESETS.iter().find(|p| p.0 == page.form.range).map(|p| p.1.to_lowercase());
            let window = preset.map_or_else(|| "in the chosen range".to_string(), |p| format!("in the {p}"));
            if rows.is_empty() {
                page.empty = Some(describe_filters(&page.form, &window));
            }
            // The export covers exactly the window this page resolved, with the same filters.
            let mut filters: serde_json::Map<String, Value> =
                page.form.fields.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            filters.insert("from".into(), Value::String(page.window.0.clone()));
            filters.insert("to".into(), Value::String(page.window.1.clone()));
            page.export_filters = Value::Object(filters).to_string();
            page.rows = rows;
            page.next = next;
            match chart {
                Chart::Drawn(bars, total) => {
                    page.axes = Axes::of(f, &bars);
                    page.bars = bars;
                    page.total = total;
                }
                Chart::Deferred => {
                    page.axes = Axes::of(f, &[]);
                    let mut pairs = vec![("from", page.window.0.as_str()), ("to", page.window.1.as_str())];
                    for (k, values) in &page.form.fields {
                        pairs.extend(values.iter().map(|v| (k.as_str(), v.as_str())));
                    }
                    page.deferred = Some(serde_urlencoded::to_string(pairs).unwrap_or_default());
                }
                Chart::None => {}
            }
        }
        Err(LoadError::Invalid(m)) => page.error = Some(m),
        Err(LoadError::Failed(p)) => return p,
    }
    page.nav = Some(nav);
    render(&page)
}

struct Loaded {
    query: Query,
    rows: Vec<Row>,
    next: Option<String>,
    chart: Chart,
}

/// The histogram above the first page of rows.
enum Chart {
    /// Drawn with the page: its bars and their total.
    Drawn(Vec<Bar>, u64),
    /// Drawn by the script from the API once the page is shown: this filter's histogram counts rows
    /// (free text, target ids, several fields at once), seconds over 90 days of a 10M-event org, and
    /// the rows must not wait for it.
    Deferred,
    /// Later pages have none.
    None,
}

/// Whether the store answers this filter's histogram, at the page's bucket width, from its counts
/// per unit of time: milliseconds at any size, so it comes with the page.
fn counted(f: &Filter) -> bool {
    f.counted_at(default_width(f.to - f.from))
}

enum LoadError {
    /// The form asks for something the API refuses: the message is for the user.
    Invalid(String),
    Failed(Page),
}

async fn load(state: &AppState, org: &str, form: &Form) -> Result<Loaded, LoadError> {
    let now = now();
    let oldest = state.hot_start(org, now).await.map_err(|e| LoadError::Failed(unavailable(e.message)))?;
    // A preset reaching past hot retention shows what is hot, starting a minute inside it: a histogram
    // drawn after the page asks the API for the same window a moment later, when retention's edge
    // has moved on (the API refuses a window that starts before it).
    let mut pairs = form.pairs(now, oldest + 60 * MICROS_PER_SECOND).map_err(LoadError::Invalid)?;
    pairs.push(("limit".into(), PAGE_ROWS.to_string()));
    if let Some(c) = &form.cursor {
        // A cursor carries the window of its first page; a preset range read again now would be a
        // different window, which the API refuses.
        pairs.retain(|(k, _)| k != "from" && k != "to");
        pairs.push(("cursor".into(), c.clone()));
    }
    let query = parse_query(&pairs, QueryContext { now, oldest })
        .map_err(|e| LoadError::Invalid(capitalize(&crate::error::ApiError::from(e).message)))?;
    // The page and its histogram are read at once, on two of the store's readers.
    let (page, chart) = tokio::join!(state.store.query(org, &query), async {
        if form.cursor.is_some() {
            Ok(Chart::None)
        } else if counted(&query.filter) {
            histogram(state, org, &query.filter).await.map(|(bars, total)| Chart::Drawn(bars, total))
        } else {
            Ok(Chart::Deferred)
        }
    });
    let page = page.map_err(|e| LoadError::Failed(unavailable(e)))?;
    let rows = page.records.iter().map(Row::of).collect();
    Ok(Loaded { rows, next: page.next.map(|c| c.encode()), chart: chart?, query })
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map_or_else(String::new, |f| f.to_uppercase().collect::<String>() + c.as_str())
}

async fn histogram(state: &AppState, org: &str, f: &Filter) -> Result<(Vec<Bar>, u64), LoadError> {
    let width = default_width(f.to - f.from);
    let buckets =
        state.store.histogram(org, f, width).await.map_err(|e| LoadError::Failed(unavailable(e)))?;
    let n = ((f.to - f.from + width - 1) / width).max(1) as f64;
    let max = buckets.iter().map(|b| b.count).max().unwrap_or(0).max(1) as f64;
    let total = buckets.iter().map(|b| b.count).sum();
    let bw = 1000.0 / n;
    let bars = buckets
        .iter()
        .map(|b| {
            let i = ((b.start - f.from) / width) as f64;
            let h = (b.count as f64 / max * 96.0).max(2.0);
            Bar {
                x: i * bw + bw * 0.1,
                y: 100.0 - h,
                w: (bw * 0.8).max(0.5),
                h,
                title: format!("{} events from {}", b.count, format_rfc3339(b.start)),
                count: b.count,
                start: format_rfc3339(b.start),
            }
        })
        .collect();
    Ok((bars, total))
}

#[derive(Template)]
#[template(path = "rows.html")]
struct Rows {
    org: String,
    rows: Vec<Row>,
}

/// More rows of the table for the script's "load more": HTML rows, the next cursor in a header.
pub async fn log_rows(
    State(state): State<AppState>,
    Path(org): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Err(p) = nav_for(&state, &headers, &org, Some(Permission::LogManagement), "logs", "/").await {
        return p.into_response();
    }
    let form = Form::parse(raw.as_deref(), opening_range(&state, &org).await);
    match load(&state, &org, &form).await {
        Ok(l) => {
            let mut r = render(&Rows { org: org.clone(), rows: l.rows }).into_response();
            if let Some(next) = l.next.and_then(|n| axum::http::HeaderValue::from_str(&n).ok()) {
                r.headers_mut().insert("x-next-cursor", next);
            }
            r
        }
        // Plain text: the message may quote the request, and the script shows it as text.
        Err(LoadError::Invalid(m)) => (StatusCode::BAD_REQUEST, m).into_response(),
        Err(LoadError::Failed(p)) => p.into_response(),
    }
}

// --- Event detail ---------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "event.html")]
struct EventPage {
    nav: Option<Nav>,
    row: Row,
    seq: u64,
    received_at: String,
    actor: Vec<(&'static str, String)>,
    target: Vec<(&'static str, String)>,
    reason: String,
    info: String,
    leaf: String,
    recorded_by: &'static str,
    back: String,
}

pub async fn event(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
    addr: ClientAddr,
    RawQuery(raw): RawQuery,
) -> Page {
    let here = format!("/orgs/{org}/logs/{id}");
    let (user, nav) =
        match nav_for(&state, &headers, &org, Some(Permission::LogManagement), "logs", &here).await {
            Ok(x) => x,
            Err(p) => return p,
        };
    let record = match state.store.event(&org, &id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return message(
                StatusCode::NOT_FOUND,
                Some(nav),
                "No such event",
                format!("There is no event {id} in {org} (it may have been archived)."),
            );
        }
        Err(e) => return unavailable(e),
    };
    if let Err(e) = reads::viewed(&state, &org, Reader::Person(&user), &addr, &id, record.event.seq).await {
        return unavailable(e.message);
    }
    let self_audit_from = match state.store.self_audit_from(&org).await {
        Ok(from) => from,
        Err(e) => return unavailable(e),
    };
    let e = &record.event;
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let json = record.to_json();
    let info =
        e.info.as_ref().map_or_else(String::new, |m| serde_json::to_string_pretty(m).unwrap_or_default());
    let page = EventPage {
        row: Row::of(&record),
        seq: e.seq,
        received_at: format_rfc3339(e.received_at),
        actor: vec![
            ("Id", e.actor.id.clone()),
            ("Type", e.actor.kind.as_str().into()),
            ("Name", opt(&e.actor.name)),
            ("IP address", opt(&e.actor.ip)),
            ("User agent", opt(&e.actor.user_agent)),
        ],
        target: vec![
            ("Type", e.target.kind.clone()),
            ("Id", opt(&e.target.id)),
            ("Name", opt(&e.target.name)),
        ],
        reason: opt(&e.reason),
        info,
        leaf: json["leaf_hash"].as_str().unwrap_or_default().to_string(),
        recorded_by: crate::audit::recorded_by(e, self_audit_from),
        back: format!("/orgs/{org}/logs{}", raw.map(|q| format!("?{q}")).unwrap_or_default()),
        nav: Some(nav),
    };
    render(&page)
}

// --- Export history -------------------------------------------------------------------------------

pub struct ExportRow {
    pub id: String,
    pub name: String,
    pub format: String,
    pub requested_by: String,
    pub status: String,
    pub rows: u64,
    pub size: String,
    pub created: String,
    pub error: String,
}

pub fn human_size(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

#[derive(Template)]
#[template(path = "exports.html")]
struct Exports {
    nav: Option<Nav>,
    exports: Vec<ExportRow>,
}

pub async fn exports(State(state): State<AppState>, Path(org): Path<String>, headers: HeaderMap) -> Page {
    let (_, nav) = match nav_for(
        &state,
        &headers,
        &org,
        Some(Permission::LogManagement),
        "exports",
        &format!("/orgs/{org}/exports"),
    )
    .await
    {
        Ok(x) => x,
        Err(p) => return p,
    };
    let list = match state.store.exports(&org).await {
        Ok(l) => l,
        Err(e) => return unavailable(e),
    };
    let exports = list
        .iter()
        .map(|e| ExportRow {
            id: e.id.clone(),
            name: e.name.clone(),
            format: match (e.kind, e.format) {
                (trail_store::ExportKind::Restore, _) => "NDJSON (restored from archive)".into(),
                (_, trail_store::ExportFormat::Csv) => "CSV".into(),
                (_, trail_store::ExportFormat::Json) => "NDJSON".into(),
            },
            requested_by: e.requested_by.clone(),
            status: e.status.as_str().to_string(),
            rows: e.row_count,
            size: human_size(e.size_bytes),
            created: format_rfc3339(e.created_at),
            error: e.error.clone().unwrap_or_default(),
        })
        .collect();
    render(&Exports { nav: Some(nav), exports })
}

// --- Archive ----------------------------------------------------------------------------------------

/// One archived month (its parts together).
struct ArchivedMonth {
    period: String,
    rows: u64,
    first_seq: u64,
    last_seq: u64,
    time_min: String,
    time_max: String,
    bytes: u64,
    size: String,
    /// The month's window, for its restore.
    from: String,
    to: String,
}

#[derive(Template)]
#[template(path = "archive.html")]
struct Archive {
    nav: Option<Nav>,
    months: Vec<ArchivedMonth>,
    unavailable: Option<String>,
}

/// `YYYY-MM` → the first instant of that month and of the next.
fn month_window(period: &str) -> Option<(Micros, Micros)> {
    let (y, m) = period.split_once('-')?;
    let (y, m): (u32, u32) = (y.parse().ok()?, m.parse().ok()?);
    if !(1..=12).contains(&m) {
        return None;
    }
    let next = if m == 12 { (y + 1) * 100 + 1 } else { y * 100 + m + 1 };
    Some((trail_model::time::month_start(y * 100 + m), trail_model::time::month_start(next)))
}

/// The org's archived months, newest first, each with a Restore button (LOG-MANAGEMENT, as restores).
pub async fn archive(State(state): State<AppState>, Path(org): Path<String>, headers: HeaderMap) -> Page {
    let here = format!("/orgs/{org}/archive");
    let (_, nav) =
        match nav_for(&state, &headers, &org, Some(Permission::LogManagement), "archive", &here).await {
            Ok(x) => x,
            Err(p) => return p,
        };
    let mut page = Archive { nav: Some(nav), months: Vec::new(), unavailable: None };
    let listed = match &state.archive {
        Some(a) => a.list(Some(&org)).await.map_err(|e| e.to_string()),
        None => Err("the archive storage is not available on this server".into()),
    };
    let entries = match listed {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot list the archive");
            page.unavailable = Some("The archive cannot be read right now.".into());
            return render(&page);
        }
    };
    let mut months: BTreeMap<String, ArchivedMonth> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.manifest.org == org) {
        let m = &e.manifest;
        let Some((from, to)) = month_window(&m.period) else { continue };
        let month = months.entry(m.period.clone()).or_insert_with(|| ArchivedMonth {
            period: m.period.clone(),
            rows: 0,
            first_seq: m.first_seq,
            last_seq: m.last_seq,
            time_min: m.time_min.clone(),
            time_max: m.time_max.clone(),
            bytes: 0,
            size: String::new(),
            from: format_rfc3339(from),
            to: format_rfc3339(to),
        });
        month.rows += m.row_count;
        month.bytes += m.size_bytes;
        month.first_seq = month.first_seq.min(m.first_seq);
        month.last_seq = month.last_seq.max(m.last_seq);
        if m.time_min < month.time_min {
            month.time_min.clone_from(&m.time_min);
        }
        if m.time_max > month.time_max {
            month.time_max.clone_from(&m.time_max);
        }
    }
    page.months = months
        .into_values()
        .rev()
        .map(|mut m| {
            m.size = human_size(m.bytes);
            m
        })
        .collect();
    render(&page)
}

// --- Alerts ---------------------------------------------------------------------------------------

pub struct TemplateView {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub enabled: bool,
}

pub struct RuleView {
    pub id: String,
    pub name: String,
    pub search: String,
    pub condition_text: String,
    pub condition_json: String,
    pub notify_json: String,
    pub notify_text: String,
    pub cooldown_secs: u64,
    pub enabled: bool,
    pub failing: String,
}

pub struct FiringView {
    pub id: String,
    pub fired_at: String,
    pub rule: String,
    pub key: String,
    pub count: u64,
    pub link: String,
    pub delivery: String,
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage {
    nav: Option<Nav>,
    templates: Vec<TemplateView>,
    rules: Vec<RuleView>,
    firings: Vec<FiringView>,
    /// A search to start a new rule from (`?search=`).
    search: String,
}

/// Alert rules, templates and the history (LOG-MANAGEMENT).
pub async fn alerts(
    State(state): State<AppState>,
    Path(org): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Page {
    let here = format!("/orgs/{org}/alerts");
    let (_, nav) =
        match nav_for(&state, &headers, &org, Some(Permission::LogManagement), "alerts", &here).await {
            Ok(x) => x,
            Err(p) => return p,
        };
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).unwrap_or_default();
    let search = pairs.into_iter().find(|(k, _)| k == "search").map(|(_, v)| v).unwrap_or_default();
    let loaded: Result<AlertsPage, trail_store::StoreError> = async {
        let docs = state.store.documents(Some(&org), crate::alerts::rules::RULE, usize::MAX, None).await?;
        let failing = state.alerts.failing.lock().map(|f| f.clone()).unwrap_or_default();
        let mut rules = Vec::new();
        let mut used = Vec::new();
        let mut names = BTreeMap::new();
        for d in &docs {
            let Ok(r) = serde_json::from_value::<crate::alerts::rules::Rule>(d.body.clone()) else {
                continue;
            };
            used.extend(r.template.clone());
            names.insert(d.id.clone(), r.name.clone());
            let mut notify = r.notify.emails.clone();
            notify.extend(r.notify.webhook.as_ref().map(|w| format!("webhook {}", w.url)));
            notify.push("the log".into());
            rules.push(RuleView {
                id: d.id.clone(),
                name: r.name.clone(),
                search: r.search.clone(),
                condition_text: crate::alerts::describe(&r.condition),
                condition_json: serde_json::to_string(&r.condition).unwrap_or_default(),
                notify_json: serde_json::to_string(&r.notify).unwrap_or_default(),
                notify_text: notify.join(", "),
                cooldown_secs: r.cooldown_secs,
                enabled: r.enabled,
                failing: failing.get(&(org.clone(), d.id.clone())).cloned().unwrap_or_default(),
            });
        }
        let templates = crate::alerts::rules::templates()
            .into_iter()
            .map(|t| TemplateView {
                id: t.id,
                name: t.name,
                description: t.description,
                enabled: used.iter().any(|u| u == t.id),
            })
            .collect();
        let firings = state
            .store
            .documents(Some(&org), crate::alerts::rules::FIRING, 50, None)
            .await?
            .into_iter()
            .map(|d| {
                let b = &d.body;
                let deliveries: Vec<String> = b["deliveries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|x| {
                        let ok = if x["ok"] == true { "sent" } else { "FAILED" };
                        let err = x["error"].as_str().map(|e| format!(" ({e})")).unwrap_or_default();
                        format!(
                            "{} {}: {ok}{err}",
                            x["channel"].as_str().unwrap_or(""),
                            x["to"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                FiringView {
                    id: d.id.clone(),
                    fired_at: b["fired_at"].as_str().unwrap_or("").into(),
                    rule: names
                        .get(b["rule_id"].as_str().unwrap_or(""))
                        .cloned()
                        .unwrap_or_else(|| b["rule_name"].as_str().unwrap_or("").into()),
                    key: b["key"].as_str().unwrap_or("").into(),
                    count: b["count"].as_u64().unwrap_or(0),
                    link: b["link"].as_str().unwrap_or("").into(),
                    delivery: if b["delivered"] == true {
                        if deliveries.is_empty() { "in the log".into() } else { deliveries.join("; ") }
                    } else {
                        "sending…".into()
                    },
                }
            })
            .collect();
        Ok(AlertsPage { nav: None, templates, rules, firings, search: search.clone() })
    }
    .await;
    match loaded {
        Ok(mut page) => {
            page.nav = Some(nav);
            render(&page)
        }
        Err(e) => unavailable(e),
    }
}

// --- Administration -------------------------------------------------------------------------------

pub struct UserRow {
    pub id: String,
    pub email: String,
    pub groups: Vec<String>,
}

pub struct GroupView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub builtin: bool,
    /// (role id, role name)
    pub roles: Vec<(String, String)>,
    /// (user id, email)
    pub members: Vec<(String, String)>,
}

pub struct RoleView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub builtin: bool,
    pub permissions: Vec<String>,
}

pub struct InvitationView {
    pub id: String,
    pub email: String,
    pub groups: String,
    pub status: String,
    pub expires: String,
}

pub struct KeyView {
    pub id: String,
    pub name: String,
    pub scopes: String,
    pub created: String,
    pub last_used: String,
    pub status: String,
}

pub const PERMISSIONS: &[(&str, &str)] = &[
    ("LOG-MANAGEMENT", "View, search and export audit logs"),
    ("USER-MANAGEMENT", "Manage users, groups, roles and invitations"),
    ("KEY-MANAGEMENT", "Create and revoke API keys"),
    ("ORG-SETTINGS", "Change retention and legal hold"),
];

/// A streaming destination as its console row shows it.
pub struct DestinationView {
    pub id: String,
    pub name: String,
    pub kind: &'static str,
    pub endpoint: String,
    pub format: &'static str,
    pub filter: String,
    pub state: String,
    pub error: String,
    pub cursor: u64,
    pub delivered: u64,
    pub delivered_at: String,
    pub lag: String,
}

fn destination_view(state: &AppState, d: &trail_store::Destination) -> Option<DestinationView> {
    let cfg: crate::stream::config::DestinationConfig = serde_json::from_value(d.config.clone()).ok()?;
    let live = state.streams.live(&d.org, &d.id);
    let lag = match live {
        Some(l) if d.progress.state != crate::stream::PAUSED => {
            let events = l.lag_events.load(std::sync::atomic::Ordering::Relaxed);
            let secs = l.lag_micros.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6;
            if events == 0 { "caught up".into() } else { format!("{events} events, {secs:.1} s") }
        }
        _ => String::new(),
    };
    let f = &cfg.filter;
    let mut filter = Vec::new();
    if !f.actions.is_empty() {
        filter.push(f.actions.join(", "));
    }
    if !f.outcomes.is_empty() {
        filter.push(
            serde_json::to_value(&f.outcomes)
                .ok()?
                .as_array()?
                .iter()
                .filter_map(|o| o.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    if !f.sources.is_empty() {
        filter.push(format!("source {}", f.sources.join(", ")));
    }
    Some(DestinationView {
        id: d.id.clone(),
        name: cfg.name.clone(),
        kind: match cfg.kind {
            crate::stream::config::Kind::Webhook => "Webhook",
            crate::stream::config::Kind::Syslog => "Syslog",
            crate::stream::config::Kind::SplunkHec => "Splunk HEC",
        },
        endpoint: cfg.endpoint(),
        format: match cfg.format {
            crate::stream::config::PayloadFormat::Json => "JSON",
            crate::stream::config::PayloadFormat::Ocsf => "OCSF",
            crate::stream::config::PayloadFormat::Cef => "CEF",
        },
        filter: if filter.is_empty() { "every event".into() } else { filter.join("; ") },
        state: d.progress.state.clone(),
        error: d.progress.error.clone().unwrap_or_default(),
        cursor: d.progress.cursor,
        delivered: d.progress.delivered,
        delivered_at: d.progress.delivered_at.map(format_rfc3339).unwrap_or_default(),
        lag,
    })
}

#[derive(Template)]
#[template(path = "admin.html")]
struct Admin {
    nav: Option<Nav>,
    page: String,
    title: &'static str,
    users: Vec<UserRow>,
    groups: Vec<GroupView>,
    roles: Vec<RoleView>,
    invitations: Vec<InvitationView>,
    keys: Vec<KeyView>,
    destinations: Vec<DestinationView>,
    settings: Value,
    /// Settings: each group (id, name) with the provider groups mapped to it, comma-separated.
    sso_groups: Vec<(String, String, String)>,
    permissions: &'static [(&'static str, &'static str)],
    /// The ranges Audit Logs may open with (Settings).
    ranges: &'static [(&'static str, &'static str, i64)],
}

pub async fn admin(
    State(state): State<AppState>,
    Path((org, page)): Path<(String, String)>,
    headers: HeaderMap,
) -> Page {
    let (need, title, current): (Permission, &'static str, &'static str) = match page.as_str() {
        "users" => (Permission::UserManagement, "Users", "users"),
        "groups" => (Permission::UserManagement, "Groups", "groups"),
        "roles" => (Permission::UserManagement, "Roles", "roles"),
        "invitations" => (Permission::UserManagement, "Invitations", "invitations"),
        "keys" => (Permission::KeyManagement, "API keys", "keys"),
        "settings" => (Permission::OrgSettings, "Settings", "settings"),
        "destinations" => (Permission::OrgSettings, "Destinations", "destinations"),
        _ => return message(StatusCode::NOT_FOUND, None, "Not found", "There is no such page."),
    };
    let here = format!("/orgs/{org}/admin/{page}");
    let (_, nav) = match nav_for(&state, &headers, &org, Some(need), current, &here).await {
        Ok(x) => x,
        Err(p) => return p,
    };
    let mut a = Admin {
        nav: None,
        page: page.clone(),
        title,
        users: Vec::new(),
        groups: Vec::new(),
        roles: Vec::new(),
        invitations: Vec::new(),
        keys: Vec::new(),
        destinations: Vec::new(),
        settings: Value::Null,
        sso_groups: Vec::new(),
        permissions: PERMISSIONS,
        ranges: PRESETS,
    };
    let loaded: Result<(), trail_store::StoreError> = async {
        match page.as_str() {
            "users" | "groups" | "invitations" => {
                let users = state.store.org_users(&org).await?;
                let groups = state.store.groups(&org).await?;
                let roles = state.store.roles(&org).await?;
                let email_of = |id: &str| users.iter().find(|(u, _)| u.id == id).map_or(id.to_string(), |(u, _)| u.email.clone());
                let group_name = |id: &str| groups.iter().find(|g| g.id == id).map_or(id.to_string(), |g| g.name.clone());
                a.users = users
                    .iter()
                    .map(|(u, gs)| UserRow { id: u.id.clone(), email: u.email.clone(), groups: gs.iter().map(|g| group_name(g)).collect() })
                    .collect();
                a.groups = groups
                    .iter()
                    .map(|g| GroupView {
                        id: g.id.clone(),
                        name: g.name.clone(),
                        description: g.description.clone(),
                        builtin: g.builtin,
                        roles: g.roles.iter().map(|r| (r.clone(), roles.iter().find(|x| &x.id == r).map_or(r.clone(), |x| x.name.clone()))).collect(),
                        members: g.members.iter().map(|m| (m.clone(), email_of(m))).collect(),
                    })
                    .collect();
                a.roles = roles.iter().map(role_view).collect();
                if page == "invitations" {
                    let now = now();
                    a.invitations = state
                        .store
                        .invitations(&org)
                        .await?
                        .iter()
                        .map(|i| InvitationView {
                            id: i.id.clone(),
                            email: i.email.clone(),
                            groups: i.groups.iter().map(|g| group_name(g)).collect::<Vec<_>>().join(", "),
                            status: match (i.accepted_at, i.revoked_at) {
                                (Some(_), _) => "accepted",
                                (_, Some(_)) => "revoked",
                                _ if i.expires_at <= now => "expired",
                                _ => "pending",
                            }
                            .into(),
                            expires: format_rfc3339(i.expires_at),
                        })
                        .collect();
                }
            }
            "roles" => a.roles = state.store.roles(&org).await?.iter().map(role_view).collect(),
            "keys" => {
                a.keys = state
                    .store
                    .api_keys(&org)
                    .await?
                    .iter()
                    .map(|k| KeyView {
                        id: k.id.clone(),
                        name: k.name.clone(),
                        scopes: k.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                        created: format_rfc3339(k.created_at),
                        last_used: k.last_used_at.map(format_rfc3339).unwrap_or_default(),
                        status: if k.revoked_at.is_some() {
                            "revoked".into()
                        } else if k.expires_at.is_some_and(|t| t <= now()) {
                            "expired".into()
                        } else {
                            "active".into()
                        },
                    })
                    .collect();
            }
            "destinations" => {
                a.destinations =
                    state.store.destinations(Some(&org)).await?.iter().filter_map(|d| destination_view(&state, d)).collect();
            }
            _ => {
                let s = state.store.org_settings(&org).await?;
                let p = crate::retention::Policy::of(&state.settings.retention, s.as_ref());
                let origins = crate::viewer::allowed_origins(&state, &org)
                    .await
                    .map_err(|e| trail_store::StoreError::Unavailable(e.message))?;
                a.settings = serde_json::json!({
                    "hot_days": p.hot_days, "archive_days": p.archive_days, "legal_hold": p.legal_hold,
                    "read_audit": p.read_audit,
                    "default_range": p.default_range,
                    "legal_hold_reason": s.and_then(|s| s.legal_hold_reason).unwrap_or_default(),
                    "min_days": state.settings.retention.min_days, "max_days": state.settings.retention.max_days,
                    "allowed_origins": origins.join("\n"),
                });
                let unavailable = |e: crate::error::ApiError| trail_store::StoreError::Unavailable(e.message);
                let rules = crate::mfa::sign_in_rules(&state, &org).await.map_err(unavailable)?;
                a.settings["require_mfa"] = json!(rules.require_mfa);
                a.settings["password_sign_in"] = json!(rules.password_sign_in);
                let sso_doc = state.store.document(&org, crate::sso::KIND, "settings").await?;
                let sso = crate::routes::sso::settings_view(&state, sso_doc.as_ref());
                // Each group with the provider groups mapped to it, for one field per group.
                a.sso_groups = state
                    .store
                    .groups(&org)
                    .await?
                    .into_iter()
                    .map(|g| {
                        let values: Vec<&str> = sso["group_map"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter(|r| r["group"] == json!(g.id))
                            .filter_map(|r| r["value"].as_str())
                            .collect();
                        (g.id, g.name, values.join(", "))
                    })
                    .collect();
                let scopes: Vec<&str> = sso["scopes"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                a.settings["sso_scopes"] =
                    json!(if sso["configured"] == json!(true) { scopes.join(" ") } else { "email profile".into() });
                a.settings["sso"] = sso;
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = loaded {
        return unavailable(e);
    }
    a.nav = Some(nav);
    render(&a)
}

fn role_view(r: &trail_store::Role) -> RoleView {
    RoleView {
        id: r.id.clone(),
        name: r.name.clone(),
        description: r.description.clone(),
        builtin: r.builtin,
        permissions: r.permissions.iter().map(|p| p.as_str().to_string()).collect(),
    }
}
