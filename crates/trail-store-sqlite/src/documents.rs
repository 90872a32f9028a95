//! SQL for org documents: JSON bodies the server types, keyed by (org, kind, id).

use rusqlite::{Connection, params};
use trail_store::{Document, Result, StoreError};

use crate::sql_error;

pub fn list(
    c: &Connection,
    org_id: Option<i64>,
    kind: &str,
    limit: usize,
    before: Option<&str>,
) -> Result<Vec<Document>> {
    let mut st = c
        .prepare_cached(
            "SELECT o.slug, d.kind, d.id, d.body, d.updated_at FROM documents d JOIN orgs o ON o.id = d.org_id
             WHERE (?1 IS NULL OR d.org_id = ?1) AND d.kind = ?2 AND (?3 IS NULL OR d.id < ?3)
             ORDER BY d.id DESC LIMIT ?4",
        )
        .map_err(sql_error)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = st
        .query_map(params![org_id, kind, before, limit], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get(4)?,
            ))
        })
        .map_err(sql_error)?;
    rows.map(|r| {
        let (org, kind, id, body, updated_at) = r.map_err(sql_error)?;
        let body =
            serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(format!("{kind} {id}: {e}")))?;
        Ok(Document { org, kind, id, body, updated_at })
    })
    .collect()
}

pub fn get(c: &Connection, org_id: i64, slug: &str, kind: &str, id: &str) -> Result<Option<Document>> {
    use rusqlite::OptionalExtension;
    let row: Option<(String, i64)> = c
        .prepare_cached("SELECT body, updated_at FROM documents WHERE org_id = ?1 AND kind = ?2 AND id = ?3")
        .and_then(|mut st| st.query_row(params![org_id, kind, id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(sql_error)?;
    row.map(|(body, updated_at)| {
        let body =
            serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(format!("{kind} {id}: {e}")))?;
        Ok(Document { org: slug.to_string(), kind: kind.to_string(), id: id.to_string(), body, updated_at })
    })
    .transpose()
}

pub fn user_get(c: &Connection, user_id: &str, kind: &str) -> Result<Option<(serde_json::Value, i64)>> {
    use rusqlite::OptionalExtension;
    let row: Option<(String, i64)> = c
        .prepare_cached("SELECT body, updated_at FROM user_documents WHERE user_id = ?1 AND kind = ?2")
        .and_then(|mut st| st.query_row(params![user_id, kind], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(sql_error)?;
    row.map(|(body, at)| {
        serde_json::from_str(&body)
            .map(|b| (b, at))
            .map_err(|e| StoreError::Corrupt(format!("{kind} of user {user_id}: {e}")))
    })
    .transpose()
}

pub fn user_set(
    c: &Connection,
    user_id: &str,
    kind: &str,
    body: Option<&serde_json::Value>,
    now: i64,
) -> Result<()> {
    match body {
        Some(b) => c.execute(
            "INSERT INTO user_documents(user_id, kind, body, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(user_id, kind) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
            params![user_id, kind, b.to_string(), now],
        ),
        None => {
            c.execute("DELETE FROM user_documents WHERE user_id = ?1 AND kind = ?2", params![user_id, kind])
        }
    }
    .map(drop)
    .map_err(sql_error)
}

pub fn put(c: &Connection, org_id: i64, d: &Document, create_only: bool) -> Result<bool> {
    let sql = if create_only {
        "INSERT INTO documents(org_id, kind, id, body, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(org_id, kind, id) DO NOTHING"
    } else {
        "INSERT INTO documents(org_id, kind, id, body, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(org_id, kind, id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at"
    };
    let n =
        c.execute(sql, params![org_id, d.kind, d.id, d.body.to_string(), d.updated_at]).map_err(sql_error)?;
    Ok(n == 1)
}

pub fn delete(c: &Connection, org_id: i64, kind: &str, id: &str) -> Result<()> {
    match c.execute(
        "DELETE FROM documents WHERE org_id = ?1 AND kind = ?2 AND id = ?3",
        params![org_id, kind, id],
    ) {
        Ok(0) => Err(StoreError::NotFound(format!("{kind} {id}"))),
        Ok(_) => Ok(()),
        Err(e) => Err(sql_error(e)),
    }
}
