//! Roles, groups, users and invitations of an org (PRODUCT.md §3), all behind `USER-MANAGEMENT`,
//! and every change recorded in the org's own log.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use trail_model::time::{MICROS_PER_DAY, format_rfc3339, now};
use trail_store::{Group, Invitation, Permission, Role, StoreError};

use super::JsonBody;
use super::bodies::{
    AcceptInvitation, GroupChange, NewGroup, NewInvitations, NewRole, PasswordChange, PermissionName,
    RoleChange, typed,
};
use crate::AppState;
use crate::audit::Audit;
use crate::auth::{self, ClientAddr, Principal};
use crate::error::{ApiError, ApiResult};

/// The built-in ids every org has (see the store's `create_org`).
const ADMIN_ROLE: &str = "admin";
const ADMINISTRATORS: &str = "administrators";

fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_field", message).with_field(field)
}

/// Text a person typed, trimmed: `None` when absent; an error when required and empty, or longer
/// than `max` characters.
fn text(value: Option<&str>, field: &str, required: bool, max: usize) -> ApiResult<Option<String>> {
    match value {
        None if required => Err(bad(field, format!("{field} is required"))),
        None => Ok(None),
        Some(s) if required && s.trim().is_empty() => Err(bad(field, format!("{field} must not be empty"))),
        Some(s) if s.chars().count() > max => {
            Err(bad(field, format!("{field} must be at most {max} characters")))
        }
        Some(s) => Ok(Some(s.trim().to_string())),
    }
}

/// Permissions as the store keeps them: sorted, each once.
fn permissions(names: Option<&[PermissionName]>) -> Option<Vec<Permission>> {
    names.map(|names| {
        let mut out: Vec<Permission> = names.iter().map(|p| Permission::from(*p)).collect();
        out.sort();
        out.dedup();
        out
    })
}

fn role_json(r: &Role) -> Value {
    json!({"id": r.id, "name": r.name, "description": r.description,
           "permissions": r.permissions.iter().map(Permission::as_str).collect::<Vec<_>>(), "builtin": r.builtin})
}

fn group_json(g: &Group) -> Value {
    json!({"id": g.id, "name": g.name, "description": g.description, "roles": g.roles, "members": g.members, "builtin": g.builtin})
}

async fn manage(state: &AppState, org: &str, p: &Principal) -> ApiResult<()> {
    p.require_permission(state, org, Permission::UserManagement).await
}

async fn find_role(state: &AppState, org: &str, id: &str) -> ApiResult<Role> {
    state
        .store
        .roles(org)
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| ApiError::not_found(format!("role {id}")))
}

async fn find_group(state: &AppState, org: &str, id: &str) -> ApiResult<Group> {
    state
        .store
        .groups(org)
        .await?
        .into_iter()
        .find(|g| g.id == id)
        .ok_or_else(|| ApiError::not_found(format!("group {id}")))
}

/// The rule against privilege escalation: nobody grants — through a role's permissions, a group's
/// roles, a group's members or an invitation — a permission they do not hold in the org themselves.
pub async fn require_grantable(
    state: &AppState,
    org: &str,
    p: &Principal,
    granted: &[Permission],
) -> ApiResult<()> {
    let user = p.user()?;
    let held = state.store.permissions(org, &user.id).await?.unwrap_or_default();
    let missing: Vec<&str> = granted.iter().filter(|g| !held.contains(g)).map(Permission::as_str).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "cannot_grant",
        format!("you cannot grant {} because you do not hold it yourself", missing.join(", ")),
    ))
}

/// Every permission the groups give their members (the union over their roles).
async fn group_permissions(state: &AppState, org: &str, groups: &[&Group]) -> ApiResult<Vec<Permission>> {
    let roles = state.store.roles(org).await?;
    let mut out: Vec<Permission> = groups
        .iter()
        .flat_map(|g| g.roles.iter())
        .filter_map(|id| roles.iter().find(|r| &r.id == id))
        .flat_map(|r| r.permissions.iter().copied())
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

fn conflict(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "conflict", message)
}

// --- roles -------------------------------------------------------------------------------------

pub async fn list_roles(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
) -> ApiResult<Json<Value>> {
    manage(&state, &org, &p).await?;
    let roles = state.store.roles(&org).await?;
    Ok(Json(json!({"roles": roles.iter().map(role_json).collect::<Vec<_>>()})))
}

pub async fn get_role(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    p: Principal,
) -> ApiResult<Json<Value>> {
    manage(&state, &org, &p).await?;
    Ok(Json(role_json(&find_role(&state, &org, &id).await?)))
}

pub async fn create_role(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
    addr: ClientAddr,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    manage(&state, &org, &p).await?;
    let body: NewRole = typed(body)?;
    let role = Role {
        id: auth::random_id(),
        name: text(Some(&body.name), "name", true, 100)?.unwrap_or_default(),
        description: text(body.description.as_deref(), "description", false, 500)?.unwrap_or_default(),
        permissions: permissions(body.permissions.as_deref()).unwrap_or_default(),
        builtin: false,
    };
    require_grantable(&state, &org, &p, &role.permissions).await?;
    state.store.create_role(&org, &role).await?;
    Audit::new(p.actor_id(), "role.created", "role")
        .target(&role.id, Some(role.name.clone()))
        .ip(addr.text())
        .info("permissions", role_json(&role)["permissions"].clone())
        .record(&state, &org)
        .await?;
    Ok((StatusCode::CREATED, Json(role_json(&role))))
}

pub async fn update_role(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    p: Principal,
    addr: ClientAddr,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    manage(&state, &org, &p).await?;
    let body: RoleChange = typed(body)?;
    let old = find_role(&state, &org, &id).await?;
    let mut role = old.clone();
    if let Some(n) = text(body.name.as_deref(), "name", false, 100)? {
        if n.is_empty() {
            return Err(bad("name", "name must not be empty"));
        }
        role.name = n;
    }
    if let Some(d) = text(body.description.as_deref(), "description", false, 500)? {
        role.description = d;
    }
    if let Some(ps) = permissions(body.permissions.as_deref()) {
        let added: Vec<Permission> = ps.iter().filter(|p| !old.permissions.contains(p)).copied().collect();
        require_grantable(&state, &org, &p, &added).await?;
        role.permissions = ps;
    }
    state.store.update_role(&org, &role).await?;
    Audit::new(p.actor_id(), "role.updated", "role")
        .target(&role.id, Some(role.name.clone()))
        .ip(addr.text())
        .info("before", role_json(&old))
        .info("after", role_json(&role))
        .record(&state, &org)
        .await?;
    Ok(Json(role_json(&role)))
}

pub async fn delete_role(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    p: Principal,
    addr: ClientAddr,
) -> ApiResult<StatusCode> {
    manage(&state, &org, &p).await?;
    let role = find_role(&state, &org, &id).await?;
    state.store.delete_role(&org, &id).await?;
    Audit::new(p.actor_id(), "role.deleted", "role")
        .target(&id, Some(role.name))
        .ip(addr.text())
        .record(&state, &org)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- groups ------------------------------------------------------------------------------------

pub async fn list_groups(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
) -> ApiResult<Json<Value>> {
    manage(&state, &org, &p).await?;
    let groups = state.store.groups(&org).await?;
    Ok(Json(json!({"groups": groups.iter().map(group_json).collect::<Vec<_>>()})))
}

pub async fn get_group(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    p: Principal,
) -> ApiResult<Json<Value>> {
    manage(&state, &org, &p).await?;
    Ok(Json(group_json(&find_group(&state, &org, &id).await?)))
}

pub async fn create_group(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
    addr: ClientAddr,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    manage(&state, &org, &p).await?;
    let body: NewGroup = typed(body)?;
    let group = Group {
        id: auth::random_id(),
        name: text(Some(&body.name), "name", true, 100)?.unwrap_or_default(),
        description: text(body.description.as_deref(), "description", false, 500)?.unwrap_or_default(),
        roles: vec![],
        members: vec![],
        builtin: false,
    };
    state.store.create_group(&org, &group).await?;
    Audit::new(p.actor_id(), "group.created", "group")
        .target(&group.id, Some(group.name.clone()))
        .ip(addr.text())
        .record(&state, &org)
        .await?;
    Ok((StatusCode::CREATED, Json(group_json(&group))))
}

pub async fn update_group(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    p: Principal,
    addr: ClientAddr,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    manage(&state, &org, &p).await?;
    let body: GroupChange = typed(body)?;
    let mut group = find_group(&state, &org, &id).await?;
    let before = group_json(&group);
    if let Some(n) = text(body.name.as_deref(), "name", false, 100)? {
        if n.is_empty() {
            return Err(bad("name", "name must not be empty"));
        }
        group.name = n;
    }
    if let Some(d) = text(body.description.as_deref(), "description", false, 500)? {
        group.description = d;
    }
    state.store.update_group(&org, &id, &group.name, &group.description).await?;
    Audit::new(p.actor_id(), "group.updated", "group")
        .target(&id, Some(group.name.clone()))
        .ip(addr.text())
        .info("before", json!({"name": before["name"], "description": before["description"]}))
        .info("after", json!({"name": group.name, "description": group.description}))
        .record(&state, &org)
        .await?;
    Ok(Json(group_json(&group)))
}

pub async fn delete_group(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    p: Principal,
    addr: ClientAddr,
) -> ApiResult<StatusCode> {
    manage(&state, &org, &p).await?;
    let group = find_group(&state, &org, &id).await?;
    state.store.delete_group(&org, &id).await?;
    Audit::new(p.actor_id(), "group.deleted", "group")
        .target(&id, Some(group.name))
        .ip(addr.text())
        .record(&state, &org)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn group_role(
    state: AppState,
    org: String,
    group: String,
    role: String,
    p: Principal,
    addr: ClientAddr,
    present: bool,
) -> ApiResult<StatusCode> {
    manage(&state, &org, &p).await?;
    if !present && group == ADMINISTRATORS && role == ADMIN_ROLE {
        return Err(conflict("the Administrators group always keeps the admin role"));
    }
    let g = find_group(&state, &org, &group).await?;
    if present {
        require_grantable(&state, &org, &p, &find_role(&state, &org, &role).await?.permissions).await?;
    }
    state.store.set_group_role(&org, &group, &role, present).await?;
    let action = if present { "group.role_added" } else { "group.role_removed" };
    Audit::new(p.actor_id(), action, "group")
        .target(&group, Some(g.name))
        .ip(addr.text())
        .info("role", role)
        .record(&state, &org)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn add_group_role(
    State(state): State<AppState>,
    Path((org, group, role)): Path<(String, String, String)>,
    p: Principal,
    addr: ClientAddr,
) -> ApiResult<StatusCode> {
    group_role(state, org, group, role, p, addr, true).await
}

pub async fn remove_group_role(
    State(state): State<AppState>,
    Path((org, group, role)): Path<(String, String, String)>,
    p: Principal,
    addr: ClientAddr,
) -> ApiResult<StatusCode> {
    group_role(state, org, group, role, p, addr, false).await
}

async fn group_member(
    state: AppState,
    org: String,
    group: String,
    user: String,
    p: Principal,
    addr: ClientAddr,
    present: bool,
) -> ApiResult<StatusCode> {
    manage(&state, &org, &p).await?;
    let g = find_group(&state, &org, &group).await?;
    if present {
        require_grantable(&state, &org, &p, &group_permissions(&state, &org, &[&g]).await?).await?;
    } else if !g.members.contains(&user) {
        // Nothing to remove: say so, and write nothing (not even who was named) into the log.
        return Err(ApiError::not_found(format!("user {user} in group {group}")));
    }
    state.store.set_group_member(&org, &group, &user, present).await?;
    let email = state.store.user(&user).await?.map(|u| u.email);
    let action = if present { "group.member_added" } else { "group.member_removed" };
    Audit::new(p.actor_id(), action, "group")
        .target(&group, Some(g.name))
        .ip(addr.text())
        .info("user", json!({"id": user, "email": email}))
        .record(&state, &org)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn add_group_member(
    State(state): State<AppState>,
    Path((org, group, user)): Path<(String, String, String)>,
    p: Principal,
    addr: ClientAddr,
) -> ApiResult<StatusCode> {
    group_member(state, org, group, user, p, addr, true).await
}

pub async fn remove_group_member(
    State(state): State<AppState>,
    Path((org, group, user)): Path<(String, String, String)>,
    p: Principal,
    addr: ClientAddr,
) -> ApiResult<StatusCode> {
    group_member(state, org, group, user, p, addr, false).await
}

// --- users -------------------------------------------------------------------------------------

pub async fn list_users(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
) -> ApiResult<Json<Value>> {
    manage(&state, &org, &p).await?;
    let mut users = Vec::new();
    for (u, groups) in state.store.org_users(&org).await? {
        let perms = state.store.permissions(&org, &u.id).await?.unwrap_or_default();
        users.push(json!({"id": u.id, "email": u.email, "groups": groups,
                          "permissions": perms.iter().map(Permission::as_str).collect::<Vec<_>>()}));
    }
    Ok(Json(json!({ "users": users })))
}

pub async fn remove_user(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    p: Principal,
    addr: ClientAddr,
) -> ApiResult<StatusCode> {
    manage(&state, &org, &p).await?;
    let user = state.store.user(&id).await?.ok_or_else(|| ApiError::not_found(format!("user {id}")))?;
    state.store.remove_org_user(&org, &id).await?;
    // Sessions carry no org, so a removed user's sessions all end: the next request re-authenticates.
    state.store.delete_user_sessions(&id, None).await?;
    Audit::new(p.actor_id(), "user.deleted", "user")
        .target(&id, Some(user.email))
        .ip(addr.text())
        .record(&state, &org)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/me/password` with `{"current_password", "new_password"}`: ends every other session.
pub async fn change_password(
    State(state): State<AppState>,
    p: Principal,
    addr: ClientAddr,
    JsonBody(body): JsonBody,
) -> ApiResult<StatusCode> {
    let Principal::User { user, session_id, .. } = &p else {
        return Err(ApiError::forbidden("only signed-in users have a password"));
    };
    let body: PasswordChange = typed(body)?;
    // Passwords are taken exactly as typed: never trimmed.
    let (current, new) = (body.current_password, body.new_password);
    check_password_strength(&new, "new_password")?;
    check_current_password(&state, user, &addr, current).await?;
    let hash = state.password_checks.run(move || auth::hash_password(&new)).await??;
    state.store.set_password(&user.id, &hash).await?;
    state.store.delete_user_sessions(&user.id, Some(session_id)).await?;
    let orgs: Vec<String> = state.store.user_orgs(&user.id).await?.into_iter().map(|(o, _)| o.slug).collect();
    Audit::new(user.email.clone(), "user.password_changed", "user")
        .target(&user.id, Some(user.email.clone()))
        .ip(addr.text())
        .record_in(&state, &orgs)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A signed-in person's `current_password`, for a change a stolen session alone must not make;
/// throttled like a sign-in and on the same account budget, so it is no way to guess the password
/// without limit.
pub(crate) async fn check_current_password(
    state: &AppState,
    user: &trail_store::User,
    addr: &ClientAddr,
    current: String,
) -> ApiResult<()> {
    if current.chars().count() > auth::MAX_PASSWORD_CHARS {
        return Err(bad(
            "current_password",
            format!("current_password must be at most {} characters", auth::MAX_PASSWORD_CHARS),
        ));
    }
    let factor = crate::mfa::enabled(state, &user.id).await?;
    let reservation = state.throttle.reserve(&user.email, addr.0, now()).map_err(|blocked| {
        crate::metrics::Metrics::add(&state.metrics.sign_in_throttled, 1);
        super::session::throttled(blocked)
    })?;
    let phc = user.password_hash.clone();
    if !state.password_checks.verify_reserved(&state.throttle, reservation, current, phc, factor).await? {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_credentials",
            "the current password is wrong",
        )
        .with_field("current_password"));
    }
    Ok(())
}

/// Minimum password rules: long enough to resist guessing, bounded so Argon2 input stays small.
pub fn check_password_strength(password: &str, field: &str) -> ApiResult<()> {
    let n = password.chars().count();
    if !(10..=256).contains(&n) {
        return Err(bad(field, format!("{field} must be 10 to 256 characters")));
    }
    Ok(())
}

// --- invitations -------------------------------------------------------------------------------

fn invitation_status(i: &Invitation, now: i64) -> &'static str {
    if i.accepted_at.is_some() {
        "accepted"
    } else if i.revoked_at.is_some() {
        "revoked"
    } else if i.expires_at <= now {
        "expired"
    } else {
        "pending"
    }
}

fn invitation_json(i: &Invitation, now: i64) -> Value {
    json!({"id": i.id, "email": i.email, "groups": i.groups, "created_by": i.created_by,
           "created_at": format_rfc3339(i.created_at), "expires_at": format_rfc3339(i.expires_at),
           "status": invitation_status(i, now)})
}

pub async fn list_invitations(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
) -> ApiResult<Json<Value>> {
    manage(&state, &org, &p).await?;
    let now = now();
    let list = state.store.invitations(&org).await?;
    Ok(Json(json!({"invitations": list.iter().map(|i| invitation_json(i, now)).collect::<Vec<_>>()})))
}

pub async fn create_invitations(
    State(state): State<AppState>,
    Path(org): Path<String>,
    p: Principal,
    addr: ClientAddr,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    manage(&state, &org, &p).await?;
    let body: NewInvitations = typed(body)?;
    if body.emails.is_empty() || body.emails.len() > 100 {
        return Err(bad("emails", "emails must be a list of 1 to 100 addresses"));
    }
    let emails: Vec<String> = body
        .emails
        .iter()
        .map(|e| Some(e.trim().to_lowercase()).filter(|s| crate::mail::valid_address(s)))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("emails", "every entry of emails must be an email address"))?;
    let existing: Vec<String> = state.store.groups(&org).await?.into_iter().map(|g| g.id).collect();
    if !body.groups.iter().all(|g| existing.contains(g)) {
        return Err(bad("groups", "every entry of groups must be a group id of this organization"));
    }
    let groups = body.groups;
    let all_groups = state.store.groups(&org).await?;
    let invited_to: Vec<&Group> = all_groups.iter().filter(|g| groups.contains(&g.id)).collect();
    require_grantable(&state, &org, &p, &group_permissions(&state, &org, &invited_to).await?).await?;
    let now = now();
    let expires_at = now + state.settings.auth.invitation_days as i64 * MICROS_PER_DAY;
    let mut out = Vec::with_capacity(emails.len());
    for email in emails {
        let (id, secret) = (auth::random_id(), auth::random_secret());
        let inv = Invitation {
            id: id.clone(),
            org: org.clone(),
            email: email.clone(),
            groups: groups.clone(),
            secret_hash: auth::secret_hash(&secret),
            created_by: p.actor_id(),
            created_at: now,
            expires_at,
            accepted_at: None,
            revoked_at: None,
        };
        state.store.create_invitation(&inv).await?;
        let accept_url = format!("{}/invitations/{id}.{secret}", state.public_url());
        Audit::new(p.actor_id(), "user.invited", "invitation")
            .target(&id, Some(email.clone()))
            .ip(addr.text())
            .info("groups", json!(groups))
            .record(&state, &org)
            .await?;
        if !state.settings.smtp.host.is_empty() {
            let mail = crate::mail::Mail {
                to: email.clone(),
                subject: format!("You are invited to {org} on Trail"),
                body: format!(
                    "You were invited to the organization {org} on Trail.\n\nAccept: {accept_url}\n\nThe link works once and expires {}.\n",
                    format_rfc3339(expires_at)
                ),
            };
            let smtp = state.settings.smtp.clone();
            tokio::spawn(async move {
                if let Err(e) = crate::mail::send(&smtp, &mail).await {
                    tracing::error!(error = %e, "cannot send an invitation email; the admin has the link");
                }
            });
        }
        out.push(json!({"id": id, "email": email, "groups": groups, "expires_at": format_rfc3339(expires_at), "accept_url": accept_url}));
    }
    Ok((StatusCode::CREATED, Json(json!({ "invitations": out }))))
}

pub async fn revoke_invitation(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    p: Principal,
    addr: ClientAddr,
) -> ApiResult<StatusCode> {
    manage(&state, &org, &p).await?;
    state.store.revoke_invitation(&org, &id, now()).await?;
    Audit::new(p.actor_id(), "invitation.revoked", "invitation")
        .target(&id, None)
        .ip(addr.text())
        .record(&state, &org)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/invitations/{token}/accept`: with `{"password"}` creates the invited user; an existing
/// user accepts while signed in (as that user).
pub async fn accept_invitation(
    State(state): State<AppState>,
    Path(token): Path<String>,
    principal: Option<Principal>,
    addr: ClientAddr,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    // The body is optional (signed in as the invited user, there is nothing to send).
    let body: AcceptInvitation = if body.is_empty() {
        AcceptInvitation::default()
    } else {
        super::bodies::typed(serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
        })?)?
    };
    let gone = || ApiError::not_found("invitation (the link is wrong, used, revoked or expired)");
    let (id, secret) = token.split_once('.').ok_or_else(gone)?;
    let inv = state.store.invitation(id).await?.ok_or_else(gone)?;
    let now = now();
    let valid =
        bool::from(subtle::ConstantTimeEq::ct_eq(&inv.secret_hash[..], &auth::secret_hash(secret)[..]))
            && invitation_status(&inv, now) == "pending";
    if !valid {
        return Err(gone());
    }
    let signed_in = match &principal {
        Some(Principal::User { user, .. }) if user.email == inv.email => Some(user.clone()),
        _ => None,
    };
    let user = match signed_in {
        Some(user) => user,
        // Without the invited user's session, the body's password decides: it creates the account,
        // or it must be the existing account's own. Both ways answer alike and name no account,
        // so the link does not tell whoever holds it that an account exists (and an existing
        // account joins only with its owner's password, on the sign-in throttle's budget).
        None => {
            let Some(password) = body.password else {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "password_required",
                    "sign in as the invited user and open the link again, or send {\"password\"} (10 to 256 characters)",
                )
                .with_field("password"));
            };
            check_password_strength(&password, "password")?;
            match state.store.user_by_email(&inv.email).await? {
                Some(existing) => {
                    let factor = crate::mfa::enabled(&state, &existing.id).await?;
                    let reservation = state.throttle.reserve(&existing.email, addr.0, now).map_err(|b| {
                        crate::metrics::Metrics::add(&state.metrics.sign_in_throttled, 1);
                        super::session::throttled(b)
                    })?;
                    let phc = existing.password_hash.clone();
                    if !state
                        .password_checks
                        .verify_reserved(&state.throttle, reservation, password, phc, factor)
                        .await?
                        // An account with a second factor joins only signed in (with both factors);
                        // answered as a wrong password is, so the link tells nothing of the account.
                        || factor
                    {
                        return Err(ApiError::new(
                            StatusCode::UNAUTHORIZED,
                            "invalid_credentials",
                            "the invitation cannot be accepted with this password; if you already have an account, sign in first and open the link again",
                        )
                        .with_field("password"));
                    }
                    existing
                }
                None => {
                    let hash = state.password_checks.run(move || auth::hash_password(&password)).await??;
                    state.store.create_user(&inv.email, &hash, false, now).await?
                }
            }
        }
    };
    match state.store.accept_invitation(&inv.id, &user.id, now).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Err(gone()),
        Err(e) => return Err(e.into()),
    }
    Audit::new(user.email.clone(), "invitation.accepted", "invitation")
        .target(&inv.id, Some(inv.email.clone()))
        .ip(addr.text())
        .info("groups", json!(inv.groups))
        .record(&state, &inv.org)
        .await?;
    Ok(Json(json!({"id": user.id, "email": user.email})))
}
