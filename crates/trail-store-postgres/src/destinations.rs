//! SQL for streaming destinations, with the embedded store's semantics; the lease is one conditional
//! `UPDATE`, so two nodes never both hold it.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use trail_store::{Destination, DestinationProgress, Result, StoreError};

use crate::{pg_error, signed, unsigned};

const COLUMNS: &str = "o.slug, d.id, d.config, d.secret, d.created_by, d.created_at, d.updated_at, d.cursor, \
     d.state, d.error, d.failing_since, d.delivered_at, d.delivered";

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(r: &'a Row, i: usize) -> Result<T> {
    r.try_get(i).map_err(pg_error)
}

fn row(r: &Row) -> Result<Destination> {
    let id: String = get(r, 1)?;
    let config: String = get(r, 2)?;
    let config = serde_json::from_str(&config)
        .map_err(|e| StoreError::Corrupt(format!("destination {id}: configuration: {e}")))?;
    Ok(Destination {
        org: get(r, 0)?,
        id,
        config,
        sealed_secret: get(r, 3)?,
        created_by: get(r, 4)?,
        created_at: get(r, 5)?,
        updated_at: get(r, 6)?,
        progress: DestinationProgress {
            cursor: unsigned(get(r, 7)?, "destination cursor")?,
            state: get(r, 8)?,
            error: get(r, 9)?,
            failing_since: get(r, 10)?,
            delivered_at: get(r, 11)?,
            delivered: unsigned(get(r, 12)?, "delivered count")?,
        },
    })
}

pub(crate) async fn list<C: GenericClient>(c: &C, org: Option<i64>) -> Result<Vec<Destination>> {
    let st = c
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM destinations d JOIN orgs o ON o.org = d.org
             WHERE $1::bigint IS NULL OR d.org = $1 ORDER BY d.created_at, d.id"
        ))
        .await
        .map_err(pg_error)?;
    c.query(&st, &[&org]).await.map_err(pg_error)?.iter().map(row).collect()
}

pub(crate) async fn put<C: GenericClient>(c: &C, org: i64, d: &Destination) -> Result<()> {
    let p = &d.progress;
    c.execute(
        "INSERT INTO destinations(org, id, config, secret, created_by, created_at, updated_at, cursor, state,
                                  error, failing_since, delivered_at, delivered)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (org, id) DO UPDATE SET config = excluded.config, secret = excluded.secret,
             updated_at = excluded.updated_at",
        &[
            &org,
            &d.id,
            &d.config.to_string(),
            &d.sealed_secret,
            &d.created_by,
            &d.created_at,
            &d.updated_at,
            &signed(p.cursor, "destination cursor")?,
            &p.state,
            &p.error,
            &p.failing_since,
            &p.delivered_at,
            &signed(p.delivered, "delivered count")?,
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

pub(crate) async fn delete<C: GenericClient>(c: &C, org: i64, id: &str) -> Result<()> {
    match c.execute("DELETE FROM destinations WHERE org = $1 AND id = $2", &[&org, &id]).await {
        Ok(0) => Err(StoreError::NotFound(format!("destination {id}"))),
        Ok(_) => Ok(()),
        Err(e) => Err(pg_error(e)),
    }
}

pub(crate) async fn set_progress<C: GenericClient>(
    c: &C,
    org: i64,
    id: &str,
    p: &DestinationProgress,
) -> Result<()> {
    let n = c
        .execute(
            "UPDATE destinations SET cursor = $3, state = $4, error = $5, failing_since = $6, delivered_at = $7,
                 delivered = $8 WHERE org = $1 AND id = $2",
            &[
                &org,
                &id,
                &signed(p.cursor, "destination cursor")?,
                &p.state,
                &p.error,
                &p.failing_since,
                &p.delivered_at,
                &signed(p.delivered, "delivered count")?,
            ],
        )
        .await
        .map_err(pg_error)?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("destination {id}")));
    }
    Ok(())
}

pub(crate) async fn lease<C: GenericClient>(
    c: &C,
    org: i64,
    id: &str,
    owner: &str,
    now: i64,
    until: i64,
) -> Result<bool> {
    let n = c
        .execute(
            "UPDATE destinations SET lease_owner = $3, lease_until = $5
             WHERE org = $1 AND id = $2 AND (lease_owner IS NULL OR lease_owner = $3 OR lease_until < $4)",
            &[&org, &id, &owner, &now, &until],
        )
        .await
        .map_err(pg_error)?;
    Ok(n == 1)
}
