//! SQL for organizations, users, sessions, API keys, roles, groups, invitations and exports, with the
//! same semantics as the embedded store.
//!
//! Rules that span rows are enforced inside one transaction, safely against other nodes: removing a
//! member locks the org's `Administrators` group row first, so two concurrent removals cannot both
//! see "another administrator is left"; accepting an invitation is one conditional `UPDATE` (the row
//! lock makes a second acceptance see the first); claiming an export uses `FOR UPDATE SKIP LOCKED` so
//! two nodes never take the same one. Secrets are only ever stored as hashes; nothing here logs them.

use std::collections::HashMap;

use deadpool_postgres::{GenericClient, Object};
use tokio_postgres::Row;
use trail_model::time::Micros;
use trail_store::{
    ApiKey, Export, ExportFormat, ExportKind, ExportStatus, Group, Invitation, Org, Permission, Result, Role,
    Scope, Session, StoreError, User,
};

use crate::{Inner, hash32, pg_error, unsigned};

/// Ids of the built-in role and group every org gets.
pub const ADMIN_ROLE_ID: &str = "admin";
pub const ADMIN_GROUP_ID: &str = "administrators";

fn conflict_as(e: tokio_postgres::Error, what: impl FnOnce() -> String) -> StoreError {
    match pg_error(e) {
        StoreError::Conflict(_) => StoreError::Conflict(what()),
        other => other,
    }
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(r: &'a Row, i: usize) -> Result<T> {
    r.try_get(i).map_err(pg_error)
}

pub(crate) async fn lookup_org_id<C: GenericClient>(c: &C, slug: &str) -> Result<i64> {
    let st = c.prepare_cached("SELECT org FROM orgs WHERE slug = $1").await.map_err(pg_error)?;
    match c.query_opt(&st, &[&slug]).await.map_err(pg_error)? {
        Some(r) => get(&r, 0),
        None => Err(StoreError::NotFound(format!("organization {slug}"))),
    }
}

pub(crate) async fn create_org(inner: &Inner, slug: &str, name: &str, now: Micros) -> Result<Org> {
    let mut client = inner.conn().await?;
    let tx = client.transaction().await.map_err(pg_error)?;
    let org: i64 = tx
        .query_one(
            "INSERT INTO orgs(slug, name, created_at) VALUES ($1, $2, $3) RETURNING org",
            &[&slug, &name, &now],
        )
        .await
        .map_err(|e| conflict_as(e, || format!("organization {slug} already exists")))
        .and_then(|r| get(&r, 0))?;
    let all: Vec<&str> = Permission::ALL.iter().map(Permission::as_str).collect();
    tx.execute("INSERT INTO log_heads(org) VALUES ($1)", &[&org]).await.map_err(pg_error)?;
    tx.execute(
        "INSERT INTO roles(org, id, name, description, permissions, builtin)
         VALUES ($1, $2, 'admin', 'All permissions', $3, true)",
        &[&org, &ADMIN_ROLE_ID, &all],
    )
    .await
    .map_err(pg_error)?;
    tx.execute(
        "INSERT INTO groups(org, id, name, description, builtin)
         VALUES ($1, $2, 'Administrators', 'Organization administrators', true)",
        &[&org, &ADMIN_GROUP_ID],
    )
    .await
    .map_err(pg_error)?;
    tx.execute(
        "INSERT INTO group_roles(org, group_id, role_id) VALUES ($1, $2, $3)",
        &[&org, &ADMIN_GROUP_ID, &ADMIN_ROLE_ID],
    )
    .await
    .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)?;
    inner.remember_org(slug, org);
    Ok(Org { slug: slug.into(), name: name.into(), created_at: now })
}

fn org_row(r: &Row) -> Result<Org> {
    Ok(Org { slug: get(r, 0)?, name: get(r, 1)?, created_at: get(r, 2)? })
}

pub(crate) async fn org<C: GenericClient>(c: &C, slug: &str) -> Result<Option<Org>> {
    let st = c
        .prepare_cached("SELECT slug, name, created_at FROM orgs WHERE slug = $1")
        .await
        .map_err(pg_error)?;
    c.query_opt(&st, &[&slug]).await.map_err(pg_error)?.as_ref().map(org_row).transpose()
}

pub(crate) async fn orgs<C: GenericClient>(c: &C) -> Result<Vec<Org>> {
    let rows =
        c.query("SELECT slug, name, created_at FROM orgs ORDER BY slug", &[]).await.map_err(pg_error)?;
    rows.iter().map(org_row).collect()
}

pub(crate) async fn create_user<C: GenericClient>(
    c: &C,
    email: &str,
    hash: &str,
    server_admin: bool,
    now: Micros,
) -> Result<User> {
    let id = trail_store::mint_event_id();
    c.execute(
        "INSERT INTO users(id, email, password_hash, server_admin, created_at) VALUES ($1, $2, $3, $4, $5)",
        &[&id, &email, &hash, &server_admin, &now],
    )
    .await
    .map_err(|e| conflict_as(e, || format!("a user with email {email} already exists")))?;
    Ok(User { id, email: email.into(), password_hash: hash.into(), server_admin, created_at: now })
}

/// Which column a user is looked up by.
#[derive(Debug, Clone, Copy)]
pub(crate) enum UserKey {
    Id,
    Email,
}

const USER_COLUMNS: &str = "u.id, u.email, u.password_hash, u.server_admin, u.created_at";

fn user_row(r: &Row) -> Result<User> {
    Ok(User {
        id: get(r, 0)?,
        email: get(r, 1)?,
        password_hash: get(r, 2)?,
        server_admin: get(r, 3)?,
        created_at: get(r, 4)?,
    })
}

pub(crate) async fn user_where<C: GenericClient>(c: &C, key: UserKey, value: &str) -> Result<Option<User>> {
    let column = match key {
        UserKey::Id => "id",
        UserKey::Email => "email",
    };
    let st = c
        .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users u WHERE u.{column} = $1"))
        .await
        .map_err(pg_error)?;
    c.query_opt(&st, &[&value]).await.map_err(pg_error)?.as_ref().map(user_row).transpose()
}

pub(crate) async fn add_member<C: GenericClient>(c: &C, org: i64, group: &str, user: &str) -> Result<()> {
    let st = c
        .prepare_cached(
            "INSERT INTO group_members(org, group_id, user_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .await
        .map_err(pg_error)?;
    c.execute(&st, &[&org, &group, &user]).await.map_err(pg_error)?;
    Ok(())
}

fn parse_permissions(list: &[String], into: &mut Vec<Permission>) {
    for p in list.iter().filter_map(|p| Permission::parse(p)) {
        if !into.contains(&p) {
            into.push(p);
        }
    }
}

pub(crate) async fn permissions<C: GenericClient>(
    c: &C,
    org: i64,
    user: &str,
) -> Result<Option<Vec<Permission>>> {
    // One row per membership: the role's permissions, or NULL for a group without roles.
    let st = c
        .prepare_cached(
            "SELECT r.permissions FROM group_members m
             LEFT JOIN group_roles gr ON gr.org = m.org AND gr.group_id = m.group_id
             LEFT JOIN roles r ON r.org = gr.org AND r.id = gr.role_id
             WHERE m.org = $1 AND m.user_id = $2",
        )
        .await
        .map_err(pg_error)?;
    let rows = c.query(&st, &[&org, &user]).await.map_err(pg_error)?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for r in &rows {
        if let Some(list) = get::<Option<Vec<String>>>(r, 0)? {
            parse_permissions(&list, &mut out);
        }
    }
    out.sort();
    Ok(Some(out))
}

pub(crate) async fn user_orgs<C: GenericClient>(c: &C, user: &str) -> Result<Vec<(Org, Vec<Permission>)>> {
    let rows = c
        .query(
            "SELECT DISTINCT o.org, o.slug, o.name, o.created_at FROM group_members m JOIN orgs o ON o.org = m.org
             WHERE m.user_id = $1 ORDER BY o.slug",
            &[&user],
        )
        .await
        .map_err(pg_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: i64 = get(r, 0)?;
        let org = Org { slug: get(r, 1)?, name: get(r, 2)?, created_at: get(r, 3)? };
        let perms = permissions(c, id, user).await?.unwrap_or_default();
        out.push((org, perms));
    }
    Ok(out)
}

pub(crate) async fn create_session<C: GenericClient>(c: &C, s: &Session) -> Result<()> {
    c.execute(
        "INSERT INTO sessions(id, user_id, secret_hash, created_at, expires_at, last_seen, method)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[&s.id, &s.user_id, &&s.secret_hash[..], &s.created_at, &s.expires_at, &s.last_seen, &s.method],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

pub(crate) async fn session<C: GenericClient>(c: &C, id: &str) -> Result<Option<Session>> {
    let st = c
        .prepare_cached(
            "SELECT id, user_id, secret_hash, created_at, expires_at, last_seen, method FROM sessions WHERE id = $1",
        )
        .await
        .map_err(pg_error)?;
    let Some(r) = c.query_opt(&st, &[&id]).await.map_err(pg_error)? else {
        return Ok(None);
    };
    Ok(Some(Session {
        id: get(&r, 0)?,
        user_id: get(&r, 1)?,
        secret_hash: hash32(get(&r, 2)?, "a session's secret hash")?,
        created_at: get(&r, 3)?,
        expires_at: get(&r, 4)?,
        last_seen: get(&r, 5)?,
        method: get(&r, 6)?,
    }))
}

pub(crate) async fn delete_session<C: GenericClient>(c: &C, id: &str) -> Result<()> {
    c.execute("DELETE FROM sessions WHERE id = $1", &[&id]).await.map_err(pg_error)?;
    Ok(())
}

pub(crate) async fn create_api_key<C: GenericClient>(c: &C, org: i64, k: &ApiKey) -> Result<()> {
    let scopes: Vec<&str> = k.scopes.iter().map(Scope::as_str).collect();
    c.execute(
        "INSERT INTO api_keys(org, id, name, scopes, secret_hash, created_by, created_at, expires_at, revoked_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &org,
            &k.id,
            &k.name,
            &scopes,
            &&k.secret_hash[..],
            &k.created_by,
            &k.created_at,
            &k.expires_at,
            &k.revoked_at,
        ],
    )
    .await
    .map_err(|e| conflict_as(e, || format!("API key {} already exists", k.id)))?;
    Ok(())
}

const KEY_COLUMNS: &str = "k.id, o.slug, k.name, k.scopes, k.secret_hash, k.created_by, k.created_at, \
     k.expires_at, k.revoked_at, k.last_used_at";

fn key_row(r: &Row) -> Result<ApiKey> {
    let scopes: Vec<String> = get(r, 3)?;
    Ok(ApiKey {
        id: get(r, 0)?,
        org: get(r, 1)?,
        name: get(r, 2)?,
        scopes: scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
        secret_hash: hash32(get(r, 4)?, "an API key's secret hash")?,
        created_by: get(r, 5)?,
        created_at: get(r, 6)?,
        expires_at: get(r, 7)?,
        revoked_at: get(r, 8)?,
        last_used_at: get(r, 9)?,
    })
}

pub(crate) async fn api_key<C: GenericClient>(c: &C, id: &str) -> Result<Option<ApiKey>> {
    let st = c
        .prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k JOIN orgs o ON o.org = k.org WHERE k.id = $1"
        ))
        .await
        .map_err(pg_error)?;
    c.query_opt(&st, &[&id]).await.map_err(pg_error)?.as_ref().map(key_row).transpose()
}

pub(crate) async fn api_keys<C: GenericClient>(c: &C, org: i64) -> Result<Vec<ApiKey>> {
    let st = c
        .prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k JOIN orgs o ON o.org = k.org WHERE k.org = $1 ORDER BY k.created_at, k.id"
        ))
        .await
        .map_err(pg_error)?;
    c.query(&st, &[&org]).await.map_err(pg_error)?.iter().map(key_row).collect()
}

pub(crate) async fn revoke_api_key<C: GenericClient>(c: &C, org: i64, id: &str, now: Micros) -> Result<()> {
    let n = c
        .execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, $3) WHERE org = $1 AND id = $2",
            &[&org, &id, &now],
        )
        .await
        .map_err(pg_error)?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("API key {id}")));
    }
    Ok(())
}

/// What [`touch`] records a time of use for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Touched {
    Sessions,
    ApiKeys,
}

/// Records the latest use of each session or key in one statement (the latest per id wins, and a
/// time never moves backwards).
pub(crate) async fn touch<C: GenericClient>(c: &C, what: Touched, seen: Vec<(String, Micros)>) -> Result<()> {
    let mut latest: HashMap<String, Micros> = HashMap::with_capacity(seen.len());
    for (id, t) in seen {
        let e = latest.entry(id).or_insert(t);
        *e = (*e).max(t);
    }
    if latest.is_empty() {
        return Ok(());
    }
    let (ids, times): (Vec<String>, Vec<Micros>) = latest.into_iter().unzip();
    let sql = match what {
        Touched::Sessions => {
            "UPDATE sessions s SET last_seen = greatest(s.last_seen, v.t)
             FROM unnest($1::text[], $2::int8[]) AS v(id, t) WHERE s.id = v.id"
        }
        Touched::ApiKeys => {
            "UPDATE api_keys k SET last_used_at = greatest(coalesce(k.last_used_at, 0), v.t)
             FROM unnest($1::text[], $2::int8[]) AS v(id, t) WHERE k.id = v.id"
        }
    };
    let st = c.prepare_cached(sql).await.map_err(pg_error)?;
    c.execute(&st, &[&ids, &times]).await.map_err(pg_error)?;
    Ok(())
}

pub(crate) async fn delete_user_sessions<C: GenericClient>(
    c: &C,
    user: &str,
    keep: Option<&str>,
) -> Result<()> {
    c.execute("DELETE FROM sessions WHERE user_id = $1 AND id IS DISTINCT FROM $2", &[&user, &keep])
        .await
        .map_err(pg_error)?;
    Ok(())
}

pub(crate) async fn set_password<C: GenericClient>(c: &C, user: &str, hash: &str) -> Result<()> {
    let n = c
        .execute("UPDATE users SET password_hash = $2 WHERE id = $1", &[&user, &hash])
        .await
        .map_err(pg_error)?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("user {user}")));
    }
    Ok(())
}

fn permission_names(p: &[Permission]) -> Vec<&'static str> {
    p.iter().map(Permission::as_str).collect()
}

pub(crate) async fn roles<C: GenericClient>(c: &C, org: i64) -> Result<Vec<Role>> {
    let st = c
        .prepare_cached(
            "SELECT id, name, description, permissions, builtin FROM roles WHERE org = $1 ORDER BY builtin DESC, name",
        )
        .await
        .map_err(pg_error)?;
    let mut out = Vec::new();
    for r in c.query(&st, &[&org]).await.map_err(pg_error)? {
        let mut permissions = Vec::new();
        parse_permissions(&get::<Vec<String>>(&r, 3)?, &mut permissions);
        permissions.sort();
        out.push(Role {
            id: get(&r, 0)?,
            name: get(&r, 1)?,
            description: get(&r, 2)?,
            permissions,
            builtin: get(&r, 4)?,
        });
    }
    Ok(out)
}

pub(crate) async fn create_role<C: GenericClient>(c: &C, org: i64, role: &Role) -> Result<()> {
    c.execute(
        "INSERT INTO roles(org, id, name, description, permissions, builtin) VALUES ($1, $2, $3, $4, $5, false)",
        &[&org, &role.id, &role.name, &role.description, &permission_names(&role.permissions)],
    )
    .await
    .map_err(|e| conflict_as(e, || format!("a role named {} already exists", role.name)))?;
    Ok(())
}

/// Which table [`require_custom`] looks in.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Role,
    Group,
}

impl Kind {
    fn table(self) -> &'static str {
        match self {
            Kind::Role => "roles",
            Kind::Group => "groups",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Role => "role",
            Kind::Group => "group",
        }
    }
}

async fn require_custom<C: GenericClient>(c: &C, org: i64, kind: Kind, id: &str) -> Result<()> {
    let sql = format!("SELECT builtin FROM {} WHERE org = $1 AND id = $2", kind.table());
    let builtin: Option<bool> = match c.query_opt(&sql, &[&org, &id]).await.map_err(pg_error)? {
        Some(r) => Some(get(&r, 0)?),
        None => None,
    };
    match builtin {
        None => Err(StoreError::NotFound(format!("{} {id}", kind.name()))),
        Some(true) => {
            Err(StoreError::Conflict(format!("the built-in {} cannot be changed or deleted", kind.name())))
        }
        Some(false) => Ok(()),
    }
}

pub(crate) async fn update_role<C: GenericClient>(c: &C, org: i64, role: &Role) -> Result<()> {
    require_custom(c, org, Kind::Role, &role.id).await?;
    c.execute(
        "UPDATE roles SET name = $3, description = $4, permissions = $5 WHERE org = $1 AND id = $2 AND NOT builtin",
        &[&org, &role.id, &role.name, &role.description, &permission_names(&role.permissions)],
    )
    .await
    .map_err(|e| conflict_as(e, || format!("a role named {} already exists", role.name)))?;
    Ok(())
}

pub(crate) async fn delete_role(client: &mut Object, org: i64, id: &str) -> Result<()> {
    let tx = client.transaction().await.map_err(pg_error)?;
    require_custom(&tx, org, Kind::Role, id).await?;
    tx.execute("DELETE FROM group_roles WHERE org = $1 AND role_id = $2", &[&org, &id])
        .await
        .map_err(pg_error)?;
    tx.execute("DELETE FROM roles WHERE org = $1 AND id = $2", &[&org, &id]).await.map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)
}

pub(crate) async fn groups<C: GenericClient>(c: &C, org: i64) -> Result<Vec<Group>> {
    let st = c
        .prepare_cached(
            "SELECT g.id, g.name, g.description, g.builtin,
                    ARRAY(SELECT role_id FROM group_roles r WHERE r.org = g.org AND r.group_id = g.id ORDER BY role_id),
                    ARRAY(SELECT user_id FROM group_members m WHERE m.org = g.org AND m.group_id = g.id ORDER BY user_id)
             FROM groups g WHERE g.org = $1 ORDER BY g.builtin DESC, g.name",
        )
        .await
        .map_err(pg_error)?;
    let mut out = Vec::new();
    for r in c.query(&st, &[&org]).await.map_err(pg_error)? {
        out.push(Group {
            id: get(&r, 0)?,
            name: get(&r, 1)?,
            description: get(&r, 2)?,
            builtin: get(&r, 3)?,
            roles: get(&r, 4)?,
            members: get(&r, 5)?,
        });
    }
    Ok(out)
}

pub(crate) async fn create_group<C: GenericClient>(c: &C, org: i64, g: &Group) -> Result<()> {
    c.execute(
        "INSERT INTO groups(org, id, name, description, builtin) VALUES ($1, $2, $3, $4, false)",
        &[&org, &g.id, &g.name, &g.description],
    )
    .await
    .map_err(|e| conflict_as(e, || format!("a group named {} already exists", g.name)))?;
    Ok(())
}

async fn exists<C: GenericClient>(c: &C, kind: Kind, org: i64, id: &str) -> Result<bool> {
    let sql = format!("SELECT EXISTS(SELECT 1 FROM {} WHERE org = $1 AND id = $2)", kind.table());
    let st = c.prepare_cached(&sql).await.map_err(pg_error)?;
    c.query_one(&st, &[&org, &id]).await.map_err(pg_error).and_then(|r| get(&r, 0))
}

pub(crate) async fn update_group<C: GenericClient>(
    c: &C,
    org: i64,
    id: &str,
    name: &str,
    description: &str,
) -> Result<()> {
    let n = c
        .execute(
            "UPDATE groups SET name = $3, description = $4 WHERE org = $1 AND id = $2",
            &[&org, &id, &name, &description],
        )
        .await
        .map_err(|e| conflict_as(e, || format!("a group named {name} already exists")))?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("group {id}")));
    }
    Ok(())
}

pub(crate) async fn delete_group(client: &mut Object, org: i64, id: &str) -> Result<()> {
    let tx = client.transaction().await.map_err(pg_error)?;
    lock_administrators(&tx, org).await?; // see set_group_member
    require_custom(&tx, org, Kind::Group, id).await?;
    for table in ["group_roles", "group_members"] {
        tx.execute(&format!("DELETE FROM {table} WHERE org = $1 AND group_id = $2"), &[&org, &id])
            .await
            .map_err(pg_error)?;
    }
    tx.execute("DELETE FROM groups WHERE org = $1 AND id = $2", &[&org, &id]).await.map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)
}

pub(crate) async fn set_group_role<C: GenericClient>(
    c: &C,
    org: i64,
    group: &str,
    role: &str,
    present: bool,
) -> Result<()> {
    if !exists(c, Kind::Group, org, group).await? {
        return Err(StoreError::NotFound(format!("group {group}")));
    }
    if !exists(c, Kind::Role, org, role).await? {
        return Err(StoreError::NotFound(format!("role {role}")));
    }
    let sql = if present {
        "INSERT INTO group_roles(org, group_id, role_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
    } else {
        "DELETE FROM group_roles WHERE org = $1 AND group_id = $2 AND role_id = $3"
    };
    c.execute(sql, &[&org, &group, &role]).await.map_err(pg_error)?;
    Ok(())
}

async fn is_member<C: GenericClient>(c: &C, org: i64, user: &str) -> Result<bool> {
    let st = c
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM group_members WHERE org = $1 AND user_id = $2)")
        .await
        .map_err(pg_error)?;
    c.query_one(&st, &[&org, &user]).await.map_err(pg_error).and_then(|r| get(&r, 0))
}

async fn remove_member<C: GenericClient>(c: &C, org: i64, group: &str, user: &str) -> Result<()> {
    c.execute(
        "DELETE FROM group_members WHERE org = $1 AND group_id = $2 AND user_id = $3",
        &[&org, &group, &user],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

pub(crate) async fn sync_groups(
    client: &mut Object,
    org: i64,
    user: &str,
    groups: &[(String, bool)],
) -> Result<()> {
    let tx = client.transaction().await.map_err(pg_error)?;
    lock_administrators(&tx, org).await?;
    for (group, present) in groups {
        if !exists(&tx, Kind::Group, org, group).await? {
            continue;
        }
        if *present {
            add_member(&tx, org, group, user).await?;
        } else {
            remove_member(&tx, org, group, user).await?;
        }
    }
    keep_an_administrator(&tx, org).await?;
    tx.commit().await.map_err(pg_error)
}

pub(crate) async fn set_group_member(
    client: &mut Object,
    org: i64,
    group: &str,
    user: &str,
    present: bool,
) -> Result<()> {
    // Every membership change takes the same lock, so a user removed from the org or a group deleted
    // on another node meanwhile cannot come back through an addition checked before it.
    let tx = client.transaction().await.map_err(pg_error)?;
    lock_administrators(&tx, org).await?;
    if !exists(&tx, Kind::Group, org, group).await? {
        return Err(StoreError::NotFound(format!("group {group}")));
    }
    if present {
        // Only members move between groups; people join an org through an invitation they accept.
        if !is_member(&tx, org, user).await? {
            return Err(StoreError::NotFound(format!(
                "user {user} in this organization (invite them first)"
            )));
        }
        add_member(&tx, org, group, user).await?;
    } else {
        remove_member(&tx, org, group, user).await?;
        keep_an_administrator(&tx, org).await?;
    }
    tx.commit().await.map_err(pg_error)
}

pub(crate) async fn org_users<C: GenericClient>(c: &C, org: i64) -> Result<Vec<(User, Vec<String>)>> {
    let st = c
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS}, array_agg(m.group_id ORDER BY m.group_id)
             FROM group_members m JOIN users u ON u.id = m.user_id WHERE m.org = $1
             GROUP BY u.id ORDER BY u.email"
        ))
        .await
        .map_err(pg_error)?;
    let mut out = Vec::new();
    for r in c.query(&st, &[&org]).await.map_err(pg_error)? {
        out.push((user_row(&r)?, get(&r, 5)?));
    }
    Ok(out)
}

pub(crate) async fn remove_org_user(client: &mut Object, org: i64, user: &str) -> Result<()> {
    let tx = client.transaction().await.map_err(pg_error)?;
    lock_administrators(&tx, org).await?;
    let n = tx
        .execute("DELETE FROM group_members WHERE org = $1 AND user_id = $2", &[&org, &user])
        .await
        .map_err(pg_error)?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("user {user} in this organization")));
    }
    keep_an_administrator(&tx, org).await?;
    tx.commit().await.map_err(pg_error)
}

/// Serializes membership removals of one org (on any node) on its `Administrators` group row, so the
/// check after the removal sees every earlier removal committed.
async fn lock_administrators<C: GenericClient>(c: &C, org: i64) -> Result<()> {
    c.query_opt("SELECT 1 FROM groups WHERE org = $1 AND id = $2 FOR UPDATE", &[&org, &ADMIN_GROUP_ID])
        .await
        .map_err(pg_error)?;
    Ok(())
}

/// Checked inside the same transaction as a removal (an error rolls it back), after
/// [`lock_administrators`], so concurrent removals can never leave an org without administrators.
async fn keep_an_administrator<C: GenericClient>(c: &C, org: i64) -> Result<()> {
    let left: i64 = c
        .query_one(
            "SELECT count(*) FROM group_members WHERE org = $1 AND group_id = $2",
            &[&org, &ADMIN_GROUP_ID],
        )
        .await
        .map_err(pg_error)
        .and_then(|r| get(&r, 0))?;
    if left == 0 {
        return Err(StoreError::Conflict(
            "an organization keeps at least one member in Administrators".into(),
        ));
    }
    Ok(())
}

const INVITATION_COLUMNS: &str = "i.id, o.slug, i.email, i.groups, i.secret_hash, i.created_by, i.created_at, \
     i.expires_at, i.accepted_at, i.revoked_at";

fn invitation_row(r: &Row) -> Result<Invitation> {
    Ok(Invitation {
        id: get(r, 0)?,
        org: get(r, 1)?,
        email: get(r, 2)?,
        groups: get(r, 3)?,
        secret_hash: hash32(get(r, 4)?, "an invitation's secret hash")?,
        created_by: get(r, 5)?,
        created_at: get(r, 6)?,
        expires_at: get(r, 7)?,
        accepted_at: get(r, 8)?,
        revoked_at: get(r, 9)?,
    })
}

pub(crate) async fn create_invitation<C: GenericClient>(c: &C, org: i64, i: &Invitation) -> Result<()> {
    c.execute(
        "INSERT INTO invitations(org, id, email, groups, secret_hash, created_by, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[&org, &i.id, &i.email, &i.groups, &&i.secret_hash[..], &i.created_by, &i.created_at, &i.expires_at],
    )
    .await
    .map_err(|e| conflict_as(e, || format!("invitation {} already exists", i.id)))?;
    Ok(())
}

pub(crate) async fn invitation<C: GenericClient>(c: &C, id: &str) -> Result<Option<Invitation>> {
    let st = c
        .prepare_cached(&format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations i JOIN orgs o ON o.org = i.org WHERE i.id = $1"
        ))
        .await
        .map_err(pg_error)?;
    c.query_opt(&st, &[&id]).await.map_err(pg_error)?.as_ref().map(invitation_row).transpose()
}

pub(crate) async fn invitations<C: GenericClient>(c: &C, org: i64) -> Result<Vec<Invitation>> {
    let st = c
        .prepare_cached(&format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations i JOIN orgs o ON o.org = i.org WHERE i.org = $1
             ORDER BY i.created_at DESC, i.id"
        ))
        .await
        .map_err(pg_error)?;
    c.query(&st, &[&org]).await.map_err(pg_error)?.iter().map(invitation_row).collect()
}

pub(crate) async fn revoke_invitation<C: GenericClient>(
    c: &C,
    org: i64,
    id: &str,
    now: Micros,
) -> Result<()> {
    let n = c
        .execute(
            "UPDATE invitations SET revoked_at = coalesce(revoked_at, $3) WHERE org = $1 AND id = $2",
            &[&org, &id, &now],
        )
        .await
        .map_err(pg_error)?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("invitation {id}")));
    }
    Ok(())
}

/// Marks the invitation used and joins its groups in one transaction. The conditional UPDATE takes
/// the invitation's row lock, so of two concurrent acceptances the second sees the first and fails.
pub(crate) async fn accept_invitation(client: &mut Object, id: &str, user: &str, now: Micros) -> Result<()> {
    let tx = client.transaction().await.map_err(pg_error)?;
    let accepted = tx
        .query_opt(
            "UPDATE invitations SET accepted_at = $2
             WHERE id = $1 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $2
             RETURNING org, groups",
            &[&id, &now],
        )
        .await
        .map_err(pg_error)?;
    let Some(row) = accepted else {
        let known = tx
            .query_opt("SELECT 1 FROM invitations WHERE id = $1", &[&id])
            .await
            .map_err(pg_error)?
            .is_some();
        return Err(if known {
            StoreError::Conflict("this invitation was already used, revoked or has expired".into())
        } else {
            StoreError::NotFound(format!("invitation {id}"))
        });
    };
    let (org, groups): (i64, Vec<String>) = (get(&row, 0)?, get(&row, 1)?);
    // A group deleted since the invitation was sent is skipped, not an error.
    tx.execute(
        "INSERT INTO group_members(org, group_id, user_id)
         SELECT g.org, g.id, $3 FROM groups g WHERE g.org = $1 AND g.id = ANY($2)
         ON CONFLICT DO NOTHING",
        &[&org, &groups, &user],
    )
    .await
    .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)
}

const EXPORT_COLUMNS: &str = "e.id, (SELECT slug FROM orgs o WHERE o.org = e.org), e.name, e.format, e.filters, \
     e.status, e.error, e.requested_by, e.created_at, e.started_at, e.finished_at, e.expires_at, e.row_count, \
     e.size_bytes, e.sha256, e.manifest, e.kind";

fn export_row(r: &Row) -> Result<Export> {
    let filters: String = get(r, 4)?;
    let status: String = get(r, 5)?;
    let (format, kind): (String, String) = (get(r, 3)?, get(r, 16)?);
    Ok(Export {
        id: get(r, 0)?,
        org: get(r, 1)?,
        name: get(r, 2)?,
        format: ExportFormat::parse(&format)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown export format {format:?}")))?,
        kind: ExportKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown export kind {kind:?}")))?,
        filters: serde_json::from_str(&filters)
            .map_err(|e| StoreError::Corrupt(format!("an export's filters are not JSON: {e}")))?,
        status: ExportStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown export status {status:?}")))?,
        error: get(r, 6)?,
        requested_by: get(r, 7)?,
        created_at: get(r, 8)?,
        started_at: get(r, 9)?,
        finished_at: get(r, 10)?,
        expires_at: get(r, 11)?,
        row_count: unsigned(get(r, 12)?, "row count")?,
        size_bytes: unsigned(get(r, 13)?, "export size")?,
        sha256: get(r, 14)?,
        manifest: get(r, 15)?,
    })
}

/// One statement, so an export is never stored half-written.
pub(crate) async fn create_export<C: GenericClient>(c: &C, org: i64, e: &Export) -> Result<()> {
    let row_count = i64::try_from(e.row_count).map_err(|_| StoreError::OutOfRange("row count".into()))?;
    let size = i64::try_from(e.size_bytes).map_err(|_| StoreError::OutOfRange("export size".into()))?;
    c.execute(
        "INSERT INTO exports(org, id, name, format, filters, status, requested_by, created_at, error,
                             started_at, finished_at, expires_at, row_count, size_bytes, sha256, manifest, kind)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        &[
            &org,
            &e.id,
            &e.name,
            &e.format.as_str(),
            &e.filters.to_string(),
            &e.status.as_str(),
            &e.requested_by,
            &e.created_at,
            &e.error,
            &e.started_at,
            &e.finished_at,
            &e.expires_at,
            &row_count,
            &size,
            &e.sha256,
            &e.manifest,
            &e.kind.as_str(),
        ],
    )
    .await
    .map_err(|err| conflict_as(err, || format!("export {} already exists", e.id)))?;
    Ok(())
}

pub(crate) async fn export<C: GenericClient>(c: &C, org: i64, id: &str) -> Result<Option<Export>> {
    let st = c
        .prepare_cached(&format!("SELECT {EXPORT_COLUMNS} FROM exports e WHERE e.org = $1 AND e.id = $2"))
        .await
        .map_err(pg_error)?;
    c.query_opt(&st, &[&org, &id]).await.map_err(pg_error)?.as_ref().map(export_row).transpose()
}

pub(crate) async fn exports<C: GenericClient>(c: &C, org: i64) -> Result<Vec<Export>> {
    let st = c
        .prepare_cached(&format!(
            "SELECT {EXPORT_COLUMNS} FROM exports e WHERE e.org = $1 ORDER BY e.created_at DESC, e.id DESC"
        ))
        .await
        .map_err(pg_error)?;
    c.query(&st, &[&org]).await.map_err(pg_error)?.iter().map(export_row).collect()
}

/// Takes a pending export, fairly across orgs (see `Store::claim_export`). `SKIP LOCKED` lets two
/// nodes claim at once without waiting for each other, and never the same export; two nodes claiming
/// for one org at the same instant may each see it below its limit (a soft limit across nodes).
pub(crate) async fn claim_export<C: GenericClient>(
    c: &C,
    now: Micros,
    node: i32,
    max_running_per_org: usize,
) -> Result<Option<Export>> {
    const RUNNING: &str = "(SELECT count(*) FROM exports r WHERE r.org = p.org AND r.status = 'running')";
    let limit = i64::try_from(max_running_per_org).unwrap_or(i64::MAX);
    let sql = format!(
        "UPDATE exports e SET status = 'running', started_at = $1, claimed_by = $2
         FROM (SELECT p.org, p.id FROM exports p WHERE p.status = 'pending' AND {RUNNING} < $3
               ORDER BY {RUNNING}, p.created_at, p.id
               LIMIT 1 FOR UPDATE OF p SKIP LOCKED) AS next
         WHERE e.org = next.org AND e.id = next.id
         RETURNING {EXPORT_COLUMNS}"
    );
    c.query_opt(&sql, &[&now, &node, &limit]).await.map_err(pg_error)?.as_ref().map(export_row).transpose()
}

pub(crate) async fn update_export<C: GenericClient>(c: &C, org: i64, e: &Export) -> Result<()> {
    let row_count = i64::try_from(e.row_count).map_err(|_| StoreError::OutOfRange("row count".into()))?;
    let size = i64::try_from(e.size_bytes).map_err(|_| StoreError::OutOfRange("export size".into()))?;
    let n = c
        .execute(
            "UPDATE exports SET status = $3, error = $4, started_at = $5, finished_at = $6, expires_at = $7,
             row_count = $8, size_bytes = $9, sha256 = $10, manifest = $11 WHERE org = $1 AND id = $2",
            &[
                &org,
                &e.id,
                &e.status.as_str(),
                &e.error,
                &e.started_at,
                &e.finished_at,
                &e.expires_at,
                &row_count,
                &size,
                &e.sha256,
                &e.manifest,
            ],
        )
        .await
        .map_err(pg_error)?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("export {}", e.id)));
    }
    Ok(())
}

/// Puts running exports back to pending when the node running them is gone: this node's own (it
/// calls this as it starts), or another node's whose liveness lock is no longer held. A live node's
/// running exports are left alone, so a node starting never makes two nodes run one export.
pub(crate) async fn requeue_running<C: GenericClient>(c: &C, node: i32) -> Result<u64> {
    c.execute(
        "UPDATE exports e SET status = 'pending', started_at = NULL, claimed_by = NULL
         WHERE e.status = 'running' AND (e.claimed_by IS NULL OR e.claimed_by = $2 OR NOT EXISTS (
             SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
               AND l.classid = $1::int4::oid AND l.objid = e.claimed_by::oid))",
        &[&crate::schema::NODE_LOCK, &node],
    )
    .await
    .map_err(pg_error)
}

pub(crate) async fn expired_exports<C: GenericClient>(c: &C, now: Micros) -> Result<Vec<Export>> {
    let st = c
        .prepare_cached(&format!(
            "SELECT {EXPORT_COLUMNS} FROM exports e WHERE e.status = 'completed' AND e.expires_at <= $1"
        ))
        .await
        .map_err(pg_error)?;
    c.query(&st, &[&now]).await.map_err(pg_error)?.iter().map(export_row).collect()
}
