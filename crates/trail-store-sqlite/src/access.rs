//! SQL for organizations, users, groups, roles, sessions and API keys.

use rusqlite::{Connection, OptionalExtension, Row, params};
use trail_model::time::Micros;
use trail_store::{
    ApiKey, Export, ExportFormat, ExportKind, ExportStatus, Group, Invitation, Org, Permission, Result, Role,
    Scope, Session, StoreError, User,
};

use crate::sql_error;
use crate::writer::Writer;

/// Ids of the built-in role and group every org gets.
pub const ADMIN_ROLE_ID: &str = "admin";
pub const ADMIN_GROUP_ID: &str = "administrators";

fn conflict_as(e: rusqlite::Error, what: impl FnOnce() -> String) -> StoreError {
    match sql_error(e) {
        StoreError::Conflict(_) => StoreError::Conflict(what()),
        other => other,
    }
}

pub fn create_org(w: &mut Writer, slug: &str, name: &str, now: Micros) -> Result<Org> {
    w.conn
        .execute("INSERT INTO orgs(slug, name, created_at) VALUES (?1, ?2, ?3)", params![slug, name, now])
        .map_err(|e| conflict_as(e, || format!("organization {slug} already exists")))?;
    let id = w.conn.last_insert_rowid();
    let all: Vec<&str> = Permission::ALL.iter().map(Permission::as_str).collect();
    w.conn
        .execute(
            "INSERT INTO roles(org_id, id, name, description, permissions, builtin) VALUES (?1, ?2, 'admin', 'All permissions', ?3, 1)",
            params![id, ADMIN_ROLE_ID, all.join(",")],
        )
        .map_err(sql_error)?;
    w.conn
        .execute(
            "INSERT INTO groups(org_id, id, name, description, builtin) VALUES (?1, ?2, 'Administrators', 'Organization administrators', 1)",
            params![id, ADMIN_GROUP_ID],
        )
        .map_err(sql_error)?;
    w.conn
        .execute(
            "INSERT INTO group_roles(org_id, group_id, role_id) VALUES (?1, ?2, ?3)",
            params![id, ADMIN_GROUP_ID, ADMIN_ROLE_ID],
        )
        .map_err(sql_error)?;
    w.add_org(slug, id);
    Ok(Org { slug: slug.into(), name: name.into(), created_at: now })
}

fn org_row(r: &Row<'_>) -> rusqlite::Result<Org> {
    Ok(Org { slug: r.get(0)?, name: r.get(1)?, created_at: r.get(2)? })
}

pub fn org(c: &Connection, slug: &str) -> Result<Option<Org>> {
    c.prepare_cached("SELECT slug, name, created_at FROM orgs WHERE slug = ?1")
        .and_then(|mut st| st.query_row([slug], org_row).optional())
        .map_err(sql_error)
}

pub fn orgs(c: &Connection) -> Result<Vec<Org>> {
    let mut st =
        c.prepare_cached("SELECT slug, name, created_at FROM orgs ORDER BY slug").map_err(sql_error)?;
    let rows = st.query_map([], org_row).map_err(sql_error)?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql_error)
}

pub fn create_user(c: &Connection, email: &str, hash: &str, server_admin: bool, now: Micros) -> Result<User> {
    let id = trail_store::mint_event_id();
    c.execute(
        "INSERT INTO users(id, email, password_hash, server_admin, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, email, hash, server_admin, now],
    )
    .map_err(|e| conflict_as(e, || format!("a user with email {email} already exists")))?;
    Ok(User { id, email: email.into(), password_hash: hash.into(), server_admin, created_at: now })
}

pub fn user_where(c: &Connection, column: &str, value: &str) -> Result<Option<User>> {
    let sql =
        format!("SELECT id, email, password_hash, server_admin, created_at FROM users WHERE {column} = ?1");
    c.prepare_cached(&sql)
        .and_then(|mut st| {
            st.query_row([value], |r| {
                Ok(User {
                    id: r.get(0)?,
                    email: r.get(1)?,
                    password_hash: r.get(2)?,
                    server_admin: r.get(3)?,
                    created_at: r.get(4)?,
                })
            })
            .optional()
        })
        .map_err(sql_error)
}

pub fn add_member(c: &Connection, org_id: i64, group: &str, user: &str) -> Result<()> {
    c.execute(
        "INSERT OR IGNORE INTO group_members(org_id, group_id, user_id) VALUES (?1, ?2, ?3)",
        params![org_id, group, user],
    )
    .map_err(sql_error)?;
    Ok(())
}

fn remove_member(c: &Connection, org_id: i64, group: &str, user: &str) -> Result<()> {
    c.execute(
        "DELETE FROM group_members WHERE org_id = ?1 AND group_id = ?2 AND user_id = ?3",
        params![org_id, group, user],
    )
    .map_err(sql_error)?;
    Ok(())
}

fn parse_permissions(joined: &str, into: &mut Vec<Permission>) {
    for p in joined.split(',').filter_map(Permission::parse) {
        if !into.contains(&p) {
            into.push(p);
        }
    }
}

pub fn permissions(c: &Connection, org_id: i64, user: &str) -> Result<Option<Vec<Permission>>> {
    let member: bool = c
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM group_members WHERE org_id = ?1 AND user_id = ?2)")
        .and_then(|mut st| st.query_row(params![org_id, user], |r| r.get(0)))
        .map_err(sql_error)?;
    if !member {
        return Ok(None);
    }
    let mut st = c
        .prepare_cached(
            "SELECT r.permissions FROM group_members m
             JOIN group_roles gr ON gr.org_id = m.org_id AND gr.group_id = m.group_id
             JOIN roles r ON r.org_id = gr.org_id AND r.id = gr.role_id
             WHERE m.org_id = ?1 AND m.user_id = ?2",
        )
        .map_err(sql_error)?;
    let mut out = Vec::new();
    let rows = st.query_map(params![org_id, user], |r| r.get::<_, String>(0)).map_err(sql_error)?;
    for row in rows {
        parse_permissions(&row.map_err(sql_error)?, &mut out);
    }
    out.sort();
    Ok(Some(out))
}

pub fn user_orgs(c: &Connection, user: &str) -> Result<Vec<(Org, Vec<Permission>)>> {
    let mut st = c
        .prepare_cached(
            "SELECT DISTINCT o.id, o.slug, o.name, o.created_at FROM group_members m JOIN orgs o ON o.id = m.org_id
             WHERE m.user_id = ?1 ORDER BY o.slug",
        )
        .map_err(sql_error)?;
    let rows: Vec<(i64, Org)> = st
        .query_map([user], |r| {
            Ok((r.get(0)?, Org { slug: r.get(1)?, name: r.get(2)?, created_at: r.get(3)? }))
        })
        .map_err(sql_error)?
        .collect::<rusqlite::Result<_>>()
        .map_err(sql_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, org) in rows {
        let perms = permissions(c, id, user)?.unwrap_or_default();
        out.push((org, perms));
    }
    Ok(out)
}

pub fn create_session(c: &Connection, s: &Session) -> Result<()> {
    c.execute(
        "INSERT INTO sessions(id, user_id, secret_hash, created_at, expires_at, last_seen, method)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![s.id, s.user_id, &s.secret_hash[..], s.created_at, s.expires_at, s.last_seen, s.method],
    )
    .map_err(sql_error)?;
    Ok(())
}

fn hash32(v: Vec<u8>) -> rusqlite::Result<[u8; 32]> {
    v.try_into()
        .map_err(|_| rusqlite::Error::InvalidColumnType(0, "secret_hash".into(), rusqlite::types::Type::Blob))
}

pub fn session(c: &Connection, id: &str) -> Result<Option<Session>> {
    c.prepare_cached(
        "SELECT id, user_id, secret_hash, created_at, expires_at, last_seen, method FROM sessions WHERE id = ?1",
    )
    .and_then(|mut st| {
        st.query_row([id], |r| {
            Ok(Session {
                id: r.get(0)?,
                user_id: r.get(1)?,
                secret_hash: hash32(r.get(2)?)?,
                created_at: r.get(3)?,
                expires_at: r.get(4)?,
                last_seen: r.get(5)?,
                method: r.get(6)?,
            })
        })
        .optional()
    })
    .map_err(sql_error)
}

pub fn delete_session(c: &Connection, id: &str) -> Result<()> {
    c.execute("DELETE FROM sessions WHERE id = ?1", [id]).map_err(sql_error)?;
    Ok(())
}

pub fn create_api_key(c: &Connection, org_id: i64, k: &ApiKey) -> Result<()> {
    let scopes: Vec<&str> = k.scopes.iter().map(Scope::as_str).collect();
    c.execute(
        "INSERT INTO api_keys(id, org_id, name, scopes, secret_hash, created_by, created_at, expires_at, revoked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![k.id, org_id, k.name, scopes.join(","), &k.secret_hash[..], k.created_by, k.created_at, k.expires_at, k.revoked_at],
    )
    .map_err(|e| conflict_as(e, || format!("API key {} already exists", k.id)))?;
    Ok(())
}

const KEY_COLUMNS: &str = "k.id, o.slug, k.name, k.scopes, k.secret_hash, k.created_by, k.created_at, k.expires_at, k.revoked_at, k.last_used_at";

fn key_row(r: &Row<'_>) -> rusqlite::Result<ApiKey> {
    let scopes: String = r.get(3)?;
    Ok(ApiKey {
        id: r.get(0)?,
        org: r.get(1)?,
        name: r.get(2)?,
        scopes: scopes.split(',').filter_map(Scope::parse).collect(),
        secret_hash: hash32(r.get(4)?)?,
        created_by: r.get(5)?,
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
        revoked_at: r.get(8)?,
        last_used_at: r.get(9)?,
    })
}

pub fn api_key(c: &Connection, id: &str) -> Result<Option<ApiKey>> {
    c.prepare_cached(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys k JOIN orgs o ON o.id = k.org_id WHERE k.id = ?1"
    ))
    .and_then(|mut st| st.query_row([id], key_row).optional())
    .map_err(sql_error)
}

pub fn api_keys(c: &Connection, org: &str) -> Result<Vec<ApiKey>> {
    let mut st = c
        .prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k JOIN orgs o ON o.id = k.org_id WHERE o.slug = ?1 ORDER BY k.created_at, k.id"
        ))
        .map_err(sql_error)?;
    let rows = st.query_map([org], key_row).map_err(sql_error)?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql_error)
}

pub fn revoke_api_key(c: &Connection, org_id: i64, id: &str, now: Micros) -> Result<()> {
    let n = c
        .execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?3) WHERE org_id = ?1 AND id = ?2",
            params![org_id, id, now],
        )
        .map_err(sql_error)?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("API key {id}")));
    }
    Ok(())
}

pub fn touch_sessions(c: &Connection, seen: &[(String, Micros)]) -> Result<()> {
    let mut st = c
        .prepare_cached("UPDATE sessions SET last_seen = max(last_seen, ?2) WHERE id = ?1")
        .map_err(sql_error)?;
    for (id, t) in seen {
        st.execute(params![id, t]).map_err(sql_error)?;
    }
    Ok(())
}

pub fn delete_user_sessions(c: &Connection, user: &str, keep: Option<&str>) -> Result<()> {
    c.execute("DELETE FROM sessions WHERE user_id = ?1 AND id IS NOT ?2", params![user, keep])
        .map_err(sql_error)?;
    Ok(())
}

pub fn touch_api_keys(c: &Connection, used: &[(String, Micros)]) -> Result<()> {
    let mut st = c
        .prepare_cached("UPDATE api_keys SET last_used_at = max(coalesce(last_used_at, 0), ?2) WHERE id = ?1")
        .map_err(sql_error)?;
    for (id, t) in used {
        st.execute(params![id, t]).map_err(sql_error)?;
    }
    Ok(())
}

pub fn set_password(c: &Connection, user: &str, hash: &str) -> Result<()> {
    let n = c
        .execute("UPDATE users SET password_hash = ?2 WHERE id = ?1", params![user, hash])
        .map_err(sql_error)?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("user {user}")));
    }
    Ok(())
}

fn join_permissions(p: &[Permission]) -> String {
    p.iter().map(Permission::as_str).collect::<Vec<_>>().join(",")
}

pub fn roles(c: &Connection, org_id: i64) -> Result<Vec<Role>> {
    let mut st = c
        .prepare_cached("SELECT id, name, description, permissions, builtin FROM roles WHERE org_id = ?1 ORDER BY builtin DESC, name")
        .map_err(sql_error)?;
    let rows = st
        .query_map([org_id], |r| {
            let mut permissions = Vec::new();
            parse_permissions(&r.get::<_, String>(3)?, &mut permissions);
            permissions.sort();
            Ok(Role {
                id: r.get(0)?,
                name: r.get(1)?,
                description: r.get(2)?,
                permissions,
                builtin: r.get(4)?,
            })
        })
        .map_err(sql_error)?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql_error)
}

pub fn create_role(c: &Connection, org_id: i64, role: &Role) -> Result<()> {
    c.execute(
        "INSERT INTO roles(org_id, id, name, description, permissions, builtin) VALUES (?1, ?2, ?3, ?4, ?5, 0)",
        params![org_id, role.id, role.name, role.description, join_permissions(&role.permissions)],
    )
    .map_err(|e| conflict_as(e, || format!("a role named {} already exists", role.name)))?;
    Ok(())
}

fn require_custom(c: &Connection, org_id: i64, table: &str, id: &str, what: &str) -> Result<()> {
    let builtin: Option<bool> = c
        .prepare_cached(&format!("SELECT builtin FROM {table} WHERE org_id = ?1 AND id = ?2"))
        .and_then(|mut st| st.query_row(params![org_id, id], |r| r.get(0)).optional())
        .map_err(sql_error)?;
    match builtin {
        None => Err(StoreError::NotFound(format!("{what} {id}"))),
        Some(true) => Err(StoreError::Conflict(format!("the built-in {what} cannot be changed or deleted"))),
        Some(false) => Ok(()),
    }
}

pub fn update_role(c: &Connection, org_id: i64, role: &Role) -> Result<()> {
    require_custom(c, org_id, "roles", &role.id, "role")?;
    c.execute(
        "UPDATE roles SET name = ?3, description = ?4, permissions = ?5 WHERE org_id = ?1 AND id = ?2",
        params![org_id, role.id, role.name, role.description, join_permissions(&role.permissions)],
    )
    .map_err(|e| conflict_as(e, || format!("a role named {} already exists", role.name)))?;
    Ok(())
}

pub fn delete_role(c: &Connection, org_id: i64, id: &str) -> Result<()> {
    require_custom(c, org_id, "roles", id, "role")?;
    c.execute("DELETE FROM group_roles WHERE org_id = ?1 AND role_id = ?2", params![org_id, id])
        .map_err(sql_error)?;
    c.execute("DELETE FROM roles WHERE org_id = ?1 AND id = ?2", params![org_id, id]).map_err(sql_error)?;
    Ok(())
}

fn ids(c: &Connection, sql: &str, org_id: i64, key: &str) -> Result<Vec<String>> {
    let mut st = c.prepare_cached(sql).map_err(sql_error)?;
    let rows = st.query_map(params![org_id, key], |r| r.get(0)).map_err(sql_error)?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql_error)
}

pub fn groups(c: &Connection, org_id: i64) -> Result<Vec<Group>> {
    let mut st = c
        .prepare_cached(
            "SELECT id, name, description, builtin FROM groups WHERE org_id = ?1 ORDER BY builtin DESC, name",
        )
        .map_err(sql_error)?;
    let base: Vec<(String, String, String, bool)> = st
        .query_map([org_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .map_err(sql_error)?
        .collect::<rusqlite::Result<_>>()
        .map_err(sql_error)?;
    let mut out = Vec::with_capacity(base.len());
    for (id, name, description, builtin) in base {
        let roles = ids(
            c,
            "SELECT role_id FROM group_roles WHERE org_id = ?1 AND group_id = ?2 ORDER BY role_id",
            org_id,
            &id,
        )?;
        let members = ids(
            c,
            "SELECT user_id FROM group_members WHERE org_id = ?1 AND group_id = ?2 ORDER BY user_id",
            org_id,
            &id,
        )?;
        out.push(Group { id, name, description, roles, members, builtin });
    }
    Ok(out)
}

pub fn create_group(c: &Connection, org_id: i64, g: &Group) -> Result<()> {
    c.execute(
        "INSERT INTO groups(org_id, id, name, description, builtin) VALUES (?1, ?2, ?3, ?4, 0)",
        params![org_id, g.id, g.name, g.description],
    )
    .map_err(|e| conflict_as(e, || format!("a group named {} already exists", g.name)))?;
    Ok(())
}

fn exists(c: &Connection, table: &str, org_id: i64, id: &str) -> Result<bool> {
    c.prepare_cached(&format!("SELECT EXISTS(SELECT 1 FROM {table} WHERE org_id = ?1 AND id = ?2)"))
        .and_then(|mut st| st.query_row(params![org_id, id], |r| r.get(0)))
        .map_err(sql_error)
}

pub fn update_group(c: &Connection, org_id: i64, id: &str, name: &str, description: &str) -> Result<()> {
    if !exists(c, "groups", org_id, id)? {
        return Err(StoreError::NotFound(format!("group {id}")));
    }
    c.execute(
        "UPDATE groups SET name = ?3, description = ?4 WHERE org_id = ?1 AND id = ?2",
        params![org_id, id, name, description],
    )
    .map_err(|e| conflict_as(e, || format!("a group named {name} already exists")))?;
    Ok(())
}

pub fn delete_group(c: &Connection, org_id: i64, id: &str) -> Result<()> {
    require_custom(c, org_id, "groups", id, "group")?;
    for table in ["group_roles", "group_members"] {
        c.execute(&format!("DELETE FROM {table} WHERE org_id = ?1 AND group_id = ?2"), params![org_id, id])
            .map_err(sql_error)?;
    }
    c.execute("DELETE FROM groups WHERE org_id = ?1 AND id = ?2", params![org_id, id]).map_err(sql_error)?;
    Ok(())
}

pub fn set_group_role(c: &Connection, org_id: i64, group: &str, role: &str, present: bool) -> Result<()> {
    if !exists(c, "groups", org_id, group)? {
        return Err(StoreError::NotFound(format!("group {group}")));
    }
    if !exists(c, "roles", org_id, role)? {
        return Err(StoreError::NotFound(format!("role {role}")));
    }
    let sql = if present {
        "INSERT OR IGNORE INTO group_roles(org_id, group_id, role_id) VALUES (?1, ?2, ?3)"
    } else {
        "DELETE FROM group_roles WHERE org_id = ?1 AND group_id = ?2 AND role_id = ?3"
    };
    c.execute(sql, params![org_id, group, role]).map_err(sql_error)?;
    Ok(())
}

pub fn set_group_member(c: &Connection, org_id: i64, group: &str, user: &str, present: bool) -> Result<()> {
    if !exists(c, "groups", org_id, group)? {
        return Err(StoreError::NotFound(format!("group {group}")));
    }
    if present {
        // Only members move between groups; people join an org through an invitation they accept.
        let member: bool = c
            .prepare_cached("SELECT EXISTS(SELECT 1 FROM group_members WHERE org_id = ?1 AND user_id = ?2)")
            .and_then(|mut st| st.query_row(params![org_id, user], |r| r.get(0)))
            .map_err(sql_error)?;
        if !member {
            return Err(StoreError::NotFound(format!(
                "user {user} in this organization (invite them first)"
            )));
        }
        add_member(c, org_id, group, user)
    } else {
        remove_member(c, org_id, group, user)?;
        keep_an_administrator(c, org_id)
    }
}

/// (In the write's own savepoint: a refusal leaves nothing changed.)
pub fn sync_groups(c: &Connection, org_id: i64, user: &str, groups: &[(String, bool)]) -> Result<()> {
    for (group, present) in groups {
        if !exists(c, "groups", org_id, group)? {
            continue;
        }
        if *present {
            add_member(c, org_id, group, user)?;
        } else {
            remove_member(c, org_id, group, user)?;
        }
    }
    keep_an_administrator(c, org_id)
}

pub fn org_users(c: &Connection, org_id: i64) -> Result<Vec<(User, Vec<String>)>> {
    let mut st = c
        .prepare_cached(
            "SELECT u.id, u.email, u.password_hash, u.server_admin, u.created_at, group_concat(m.group_id, ',')
             FROM group_members m JOIN users u ON u.id = m.user_id WHERE m.org_id = ?1 GROUP BY u.id ORDER BY u.email",
        )
        .map_err(sql_error)?;
    let rows = st
        .query_map([org_id], |r| {
            let groups: String = r.get(5)?;
            let mut groups: Vec<String> = groups.split(',').map(str::to_string).collect();
            groups.sort();
            Ok((
                User {
                    id: r.get(0)?,
                    email: r.get(1)?,
                    password_hash: r.get(2)?,
                    server_admin: r.get(3)?,
                    created_at: r.get(4)?,
                },
                groups,
            ))
        })
        .map_err(sql_error)?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql_error)
}

pub fn remove_org_user(c: &Connection, org_id: i64, user: &str) -> Result<()> {
    let n = c
        .execute("DELETE FROM group_members WHERE org_id = ?1 AND user_id = ?2", params![org_id, user])
        .map_err(sql_error)?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("user {user} in this organization")));
    }
    keep_an_administrator(c, org_id)
}

/// Checked inside the same write as a removal (the job's savepoint rolls it back), so two
/// concurrent removals can never leave an org without administrators.
fn keep_an_administrator(c: &Connection, org_id: i64) -> Result<()> {
    let left: i64 = c
        .prepare_cached("SELECT count(*) FROM group_members WHERE org_id = ?1 AND group_id = ?2")
        .and_then(|mut st| st.query_row(params![org_id, ADMIN_GROUP_ID], |r| r.get(0)))
        .map_err(sql_error)?;
    if left == 0 {
        return Err(StoreError::Conflict(
            "an organization keeps at least one member in Administrators".into(),
        ));
    }
    Ok(())
}

const INVITATION_COLUMNS: &str = "i.id, o.slug, i.email, i.groups, i.secret_hash, i.created_by, i.created_at, i.expires_at, i.accepted_at, i.revoked_at";

fn invitation_row(r: &Row<'_>) -> rusqlite::Result<Invitation> {
    let groups: String = r.get(3)?;
    Ok(Invitation {
        id: r.get(0)?,
        org: r.get(1)?,
        email: r.get(2)?,
        groups: groups.split(',').filter(|g| !g.is_empty()).map(str::to_string).collect(),
        secret_hash: hash32(r.get(4)?)?,
        created_by: r.get(5)?,
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
        accepted_at: r.get(8)?,
        revoked_at: r.get(9)?,
    })
}

pub fn create_invitation(c: &Connection, org_id: i64, i: &Invitation) -> Result<()> {
    c.execute(
        "INSERT INTO invitations(id, org_id, email, groups, secret_hash, created_by, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            i.id,
            org_id,
            i.email,
            i.groups.join(","),
            &i.secret_hash[..],
            i.created_by,
            i.created_at,
            i.expires_at
        ],
    )
    .map_err(sql_error)?;
    Ok(())
}

pub fn invitation(c: &Connection, id: &str) -> Result<Option<Invitation>> {
    c.prepare_cached(&format!(
        "SELECT {INVITATION_COLUMNS} FROM invitations i JOIN orgs o ON o.id = i.org_id WHERE i.id = ?1"
    ))
    .and_then(|mut st| st.query_row([id], invitation_row).optional())
    .map_err(sql_error)
}

pub fn invitations(c: &Connection, org_id: i64) -> Result<Vec<Invitation>> {
    let mut st = c
        .prepare_cached(&format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations i JOIN orgs o ON o.id = i.org_id WHERE i.org_id = ?1 ORDER BY i.created_at DESC, i.id"
        ))
        .map_err(sql_error)?;
    let rows = st.query_map([org_id], invitation_row).map_err(sql_error)?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql_error)
}

pub fn revoke_invitation(c: &Connection, org_id: i64, id: &str, now: Micros) -> Result<()> {
    let n = c
        .execute(
            "UPDATE invitations SET revoked_at = coalesce(revoked_at, ?3) WHERE org_id = ?1 AND id = ?2",
            params![org_id, id, now],
        )
        .map_err(sql_error)?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("invitation {id}")));
    }
    Ok(())
}

pub fn accept_invitation(c: &Connection, id: &str, user: &str, now: Micros) -> Result<()> {
    let inv = invitation(c, id)?.ok_or_else(|| StoreError::NotFound(format!("invitation {id}")))?;
    let n = c
        .execute(
            "UPDATE invitations SET accepted_at = ?2 WHERE id = ?1 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > ?2",
            params![id, now],
        )
        .map_err(sql_error)?;
    if n == 0 {
        return Err(StoreError::Conflict("this invitation was already used, revoked or has expired".into()));
    }
    let org_id: i64 =
        c.query_row("SELECT org_id FROM invitations WHERE id = ?1", [id], |r| r.get(0)).map_err(sql_error)?;
    for g in &inv.groups {
        // A group deleted since the invitation was sent is skipped, not an error.
        if exists(c, "groups", org_id, g)? {
            add_member(c, org_id, g, user)?;
        }
    }
    Ok(())
}

const EXPORT_COLUMNS: &str = "e.id, o.slug, e.name, e.format, e.filters, e.status, e.error, e.requested_by, e.created_at, \
     e.started_at, e.finished_at, e.expires_at, e.row_count, e.size_bytes, e.sha256, e.manifest, e.kind";

fn export_row(r: &Row<'_>) -> rusqlite::Result<Export> {
    let bad = |i: usize, what: &str| {
        rusqlite::Error::InvalidColumnType(i, what.into(), rusqlite::types::Type::Text)
    };
    let filters: String = r.get(4)?;
    let status: String = r.get(5)?;
    let (format, kind): (String, String) = (r.get(3)?, r.get(16)?);
    Ok(Export {
        id: r.get(0)?,
        org: r.get(1)?,
        name: r.get(2)?,
        format: ExportFormat::parse(&format).ok_or_else(|| bad(3, "format"))?,
        kind: ExportKind::parse(&kind).ok_or_else(|| bad(16, "kind"))?,
        filters: serde_json::from_str(&filters).map_err(|_| bad(4, "filters"))?,
        status: ExportStatus::parse(&status).ok_or_else(|| bad(5, "status"))?,
        error: r.get(6)?,
        requested_by: r.get(7)?,
        created_at: r.get(8)?,
        started_at: r.get(9)?,
        finished_at: r.get(10)?,
        expires_at: r.get(11)?,
        row_count: r.get::<_, i64>(12)? as u64,
        size_bytes: r.get::<_, i64>(13)? as u64,
        sha256: r.get(14)?,
        manifest: r.get(15)?,
    })
}

fn exports_where(c: &Connection, condition: &str, args: impl rusqlite::Params) -> Result<Vec<Export>> {
    let mut st = c
        .prepare_cached(&format!(
            "SELECT {EXPORT_COLUMNS} FROM exports e JOIN orgs o ON o.id = e.org_id WHERE {condition}"
        ))
        .map_err(sql_error)?;
    let rows = st.query_map(args, export_row).map_err(sql_error)?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql_error)
}

pub fn create_export(c: &Connection, org_id: i64, e: &Export) -> Result<()> {
    c.execute(
        "INSERT INTO exports(id, org_id, name, format, filters, status, requested_by, created_at, kind) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![e.id, org_id, e.name, e.format.as_str(), e.filters.to_string(), e.status.as_str(), e.requested_by, e.created_at, e.kind.as_str()],
    )
    .map_err(sql_error)?;
    update_export(c, e)
}

pub fn export(c: &Connection, org_id: i64, id: &str) -> Result<Option<Export>> {
    Ok(exports_where(c, "e.org_id = ?1 AND e.id = ?2", params![org_id, id])?.pop())
}

pub fn exports(c: &Connection, org_id: i64) -> Result<Vec<Export>> {
    exports_where(c, "e.org_id = ?1 ORDER BY e.created_at DESC, e.id DESC", [org_id])
}

pub fn claim_export(c: &Connection, now: Micros, max_running_per_org: usize) -> Result<Option<Export>> {
    const RUNNING: &str =
        "(SELECT count(*) FROM exports r WHERE r.org_id = e.org_id AND r.status = 'running')";
    let limit = i64::try_from(max_running_per_org).unwrap_or(i64::MAX);
    let condition =
        format!("e.status = 'pending' AND {RUNNING} < ?1 ORDER BY {RUNNING}, e.created_at, e.id LIMIT 1");
    let Some(mut e) = exports_where(c, &condition, [limit])?.pop() else {
        return Ok(None);
    };
    e.status = ExportStatus::Running;
    e.started_at = Some(now);
    update_export(c, &e)?;
    Ok(Some(e))
}

pub fn update_export(c: &Connection, e: &Export) -> Result<()> {
    let n = c
        .execute(
            "UPDATE exports SET status = ?2, error = ?3, started_at = ?4, finished_at = ?5, expires_at = ?6,
             row_count = ?7, size_bytes = ?8, sha256 = ?9, manifest = ?10 WHERE id = ?1",
            params![
                e.id,
                e.status.as_str(),
                e.error,
                e.started_at,
                e.finished_at,
                e.expires_at,
                e.row_count as i64,
                e.size_bytes as i64,
                e.sha256,
                e.manifest
            ],
        )
        .map_err(sql_error)?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("export {}", e.id)));
    }
    Ok(())
}

pub fn requeue_running(c: &Connection) -> Result<u64> {
    let n = c
        .execute("UPDATE exports SET status = 'pending', started_at = NULL WHERE status = 'running'", [])
        .map_err(sql_error)?;
    Ok(n as u64)
}

pub fn expired_exports(c: &Connection, now: Micros) -> Result<Vec<Export>> {
    exports_where(c, "e.status = 'completed' AND e.expires_at <= ?1", [now])
}
