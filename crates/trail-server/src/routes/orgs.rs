//! Organizations: created by server administrators, listed for their members.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use trail_model::time::{format_rfc3339, now};
use trail_store::Org;

use super::JsonBody;
use super::bodies::{NewOrg, typed};
use crate::AppState;
use crate::audit::Audit;
use crate::auth::{ClientAddr, Principal};
use crate::error::{ApiError, ApiResult};

fn org_json(o: &Org) -> Value {
    json!({"slug": o.slug, "name": o.name, "created_at": format_rfc3339(o.created_at)})
}

/// `[a-z0-9]` then `[a-z0-9-]`, 2–63 characters, no trailing hyphen: safe in URLs, paths and origins.
pub fn valid_slug(s: &str) -> bool {
    let b = s.as_bytes();
    (2..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

pub async fn list(State(state): State<AppState>, principal: Principal) -> ApiResult<Json<Value>> {
    let user = principal.user()?;
    let orgs = crate::auth::reachable_orgs(&state, user, principal.method()).await?;
    Ok(Json(json!({"orgs": orgs.iter().map(|(o, _)| org_json(o)).collect::<Vec<_>>()})))
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    addr: ClientAddr,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let user = principal.user()?;
    if !user.server_admin {
        return Err(ApiError::forbidden("only server administrators can create organizations"));
    }
    let body: NewOrg = typed(body)?;
    let slug = body.slug.as_str();
    if !valid_slug(slug) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "slug must be 2-63 lowercase letters, digits or hyphens, not starting or ending with a hyphen",
        )
        .with_field("slug"));
    }
    let name = body.name.as_deref().unwrap_or(slug);
    if name.trim().is_empty() || name.chars().count() > 200 {
        return Err(
            ApiError::bad_request("invalid_field", "name must be 1-200 characters").with_field("name")
        );
    }
    let org = state.store.create_org(slug, name, now()).await?;
    state.store.add_org_admin(slug, &user.id).await?;
    Audit::new(user.email.clone(), "org.created", "org")
        .target(slug, Some(name.to_string()))
        .ip(addr.text())
        .record(&state, slug)
        .await?;
    Ok((StatusCode::CREATED, Json(org_json(&org))))
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs() {
        for ok in ["default", "acme-inc", "a1"] {
            assert!(super::valid_slug(ok), "{ok}");
        }
        for bad in ["", "a", "-a", "a-", "Acme", "a_b", "a/b", "..", &"a".repeat(64)] {
            assert!(!super::valid_slug(bad), "{bad}");
        }
    }
}
