//! SQL for organizations, users, groups, roles, sessions and API keys.

use rusqlite::{Connection, OptionalExtension, Row, params};
use trail_model::time::Micros;
use trail_store::{ApiKey, Org, Permission, Result, Scope, Session, StoreError, User};

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
        "INSERT INTO sessions(id, user_id, secret_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![s.id, s.user_id, &s.secret_hash[..], s.created_at, s.expires_at],
    )
    .map_err(sql_error)?;
    Ok(())
}

fn hash32(v: Vec<u8>) -> rusqlite::Result<[u8; 32]> {
    v.try_into()
        .map_err(|_| rusqlite::Error::InvalidColumnType(0, "secret_hash".into(), rusqlite::types::Type::Blob))
}

pub fn session(c: &Connection, id: &str) -> Result<Option<Session>> {
    c.prepare_cached("SELECT id, user_id, secret_hash, created_at, expires_at FROM sessions WHERE id = ?1")
        .and_then(|mut st| {
            st.query_row([id], |r| {
                Ok(Session {
                    id: r.get(0)?,
                    user_id: r.get(1)?,
                    secret_hash: hash32(r.get(2)?)?,
                    created_at: r.get(3)?,
                    expires_at: r.get(4)?,
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

const KEY_COLUMNS: &str =
    "k.id, o.slug, k.name, k.scopes, k.secret_hash, k.created_by, k.created_at, k.expires_at, k.revoked_at";

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
