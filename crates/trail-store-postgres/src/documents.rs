//! SQL for org documents, with the embedded store's semantics.

use deadpool_postgres::GenericClient;
use trail_store::{Document, Result, StoreError};

use crate::pg_error;

pub(crate) async fn list<C: GenericClient>(
    c: &C,
    org: Option<i64>,
    kind: &str,
    limit: usize,
    before: Option<&str>,
) -> Result<Vec<Document>> {
    let st = c
        .prepare_cached(
            "SELECT o.slug, d.kind, d.id, d.body, d.updated_at FROM documents d JOIN orgs o ON o.org = d.org
             WHERE ($1::bigint IS NULL OR d.org = $1) AND d.kind = $2 AND ($3::text IS NULL OR d.id < $3)
             ORDER BY d.id DESC LIMIT $4",
        )
        .await
        .map_err(pg_error)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = c.query(&st, &[&org, &kind, &before, &limit]).await.map_err(pg_error)?;
    rows.iter()
        .map(|r| {
            let (kind, id, body): (String, String, String) = (
                r.try_get(1).map_err(pg_error)?,
                r.try_get(2).map_err(pg_error)?,
                r.try_get(3).map_err(pg_error)?,
            );
            let body =
                serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(format!("{kind} {id}: {e}")))?;
            Ok(Document {
                org: r.try_get(0).map_err(pg_error)?,
                kind,
                id,
                body,
                updated_at: r.try_get(4).map_err(pg_error)?,
            })
        })
        .collect()
}

pub(crate) async fn get<C: GenericClient>(
    c: &C,
    org: i64,
    slug: &str,
    kind: &str,
    id: &str,
) -> Result<Option<Document>> {
    let st = c
        .prepare_cached("SELECT body, updated_at FROM documents WHERE org = $1 AND kind = $2 AND id = $3")
        .await
        .map_err(pg_error)?;
    let Some(r) = c.query_opt(&st, &[&org, &kind, &id]).await.map_err(pg_error)? else { return Ok(None) };
    let body: String = r.try_get(0).map_err(pg_error)?;
    let body = serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(format!("{kind} {id}: {e}")))?;
    Ok(Some(Document {
        org: slug.to_string(),
        kind: kind.to_string(),
        id: id.to_string(),
        body,
        updated_at: r.try_get(1).map_err(pg_error)?,
    }))
}

pub(crate) async fn user_get<C: GenericClient>(
    c: &C,
    user_id: &str,
    kind: &str,
) -> Result<Option<(serde_json::Value, i64)>> {
    let st = c
        .prepare_cached("SELECT body, updated_at FROM user_documents WHERE user_id = $1 AND kind = $2")
        .await
        .map_err(pg_error)?;
    let Some(r) = c.query_opt(&st, &[&user_id, &kind]).await.map_err(pg_error)? else { return Ok(None) };
    let body: String = r.try_get(0).map_err(pg_error)?;
    let body = serde_json::from_str(&body)
        .map_err(|e| StoreError::Corrupt(format!("{kind} of user {user_id}: {e}")))?;
    Ok(Some((body, r.try_get(1).map_err(pg_error)?)))
}

pub(crate) async fn user_set<C: GenericClient>(
    c: &C,
    user_id: &str,
    kind: &str,
    body: Option<&serde_json::Value>,
    now: i64,
) -> Result<()> {
    match body {
        Some(b) => c
            .execute(
                "INSERT INTO user_documents(user_id, kind, body, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (user_id, kind) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
                &[&user_id, &kind, &b.to_string(), &now],
            )
            .await,
        None => c.execute("DELETE FROM user_documents WHERE user_id = $1 AND kind = $2", &[&user_id, &kind]).await,
    }
    .map(drop)
    .map_err(pg_error)
}

pub(crate) async fn put<C: GenericClient>(c: &C, org: i64, d: &Document, create_only: bool) -> Result<bool> {
    let sql = if create_only {
        "INSERT INTO documents(org, kind, id, body, updated_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (org, kind, id) DO NOTHING"
    } else {
        "INSERT INTO documents(org, kind, id, body, updated_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (org, kind, id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at"
    };
    let n = c
        .execute(sql, &[&org, &d.kind, &d.id, &d.body.to_string(), &d.updated_at])
        .await
        .map_err(pg_error)?;
    Ok(n == 1)
}

pub(crate) async fn delete<C: GenericClient>(c: &C, org: i64, kind: &str, id: &str) -> Result<()> {
    match c
        .execute("DELETE FROM documents WHERE org = $1 AND kind = $2 AND id = $3", &[&org, &kind, &id])
        .await
    {
        Ok(0) => Err(StoreError::NotFound(format!("{kind} {id}"))),
        Ok(_) => Ok(()),
        Err(e) => Err(pg_error(e)),
    }
}
