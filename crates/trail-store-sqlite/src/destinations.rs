//! SQL for streaming destinations: the server's configuration kept whole as JSON, and delivery progress
//! in columns of their own (written after every acknowledged batch).

use rusqlite::{Connection, Row, params};
use trail_store::{Destination, DestinationProgress, Result, StoreError};

use crate::sql_error;

const COLUMNS: &str = "o.slug, d.id, d.config, d.secret, d.created_by, d.created_at, d.updated_at, d.cursor, \
     d.state, d.error, d.failing_since, d.delivered_at, d.delivered";

fn row(r: &Row) -> rusqlite::Result<(Destination, String)> {
    let config: String = r.get(2)?;
    let d = Destination {
        org: r.get(0)?,
        id: r.get(1)?,
        config: serde_json::Value::Null,
        sealed_secret: r.get(3)?,
        created_by: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
        progress: DestinationProgress {
            cursor: r.get::<_, i64>(7)? as u64,
            state: r.get(8)?,
            error: r.get(9)?,
            failing_since: r.get(10)?,
            delivered_at: r.get(11)?,
            delivered: r.get::<_, i64>(12)? as u64,
        },
    };
    Ok((d, config))
}

pub fn list(c: &Connection, org_id: Option<i64>) -> Result<Vec<Destination>> {
    let mut st = c
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM destinations d JOIN orgs o ON o.id = d.org_id
             WHERE ?1 IS NULL OR d.org_id = ?1 ORDER BY d.created_at, d.id"
        ))
        .map_err(sql_error)?;
    let rows = st.query_map([org_id], row).map_err(sql_error)?;
    rows.map(|r| {
        let (mut d, config) = r.map_err(sql_error)?;
        d.config = serde_json::from_str(&config)
            .map_err(|e| StoreError::Corrupt(format!("destination {}: configuration: {e}", d.id)))?;
        Ok(d)
    })
    .collect()
}

pub fn put(c: &Connection, org_id: i64, d: &Destination) -> Result<()> {
    let p = &d.progress;
    c.execute(
        "INSERT INTO destinations(org_id, id, config, secret, created_by, created_at, updated_at, cursor, state,
                                  error, failing_since, delivered_at, delivered)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT(org_id, id) DO UPDATE SET config = excluded.config, secret = excluded.secret,
             updated_at = excluded.updated_at",
        params![
            org_id,
            d.id,
            d.config.to_string(),
            d.sealed_secret,
            d.created_by,
            d.created_at,
            d.updated_at,
            p.cursor as i64,
            p.state,
            p.error,
            p.failing_since,
            p.delivered_at,
            p.delivered as i64
        ],
    )
    .map_err(sql_error)?;
    Ok(())
}

pub fn delete(c: &Connection, org_id: i64, id: &str) -> Result<()> {
    match c.execute("DELETE FROM destinations WHERE org_id = ?1 AND id = ?2", params![org_id, id]) {
        Ok(0) => Err(StoreError::NotFound(format!("destination {id}"))),
        Ok(_) => Ok(()),
        Err(e) => Err(sql_error(e)),
    }
}

pub fn set_progress(c: &Connection, org_id: i64, id: &str, p: &DestinationProgress) -> Result<()> {
    let n = c
        .execute(
            "UPDATE destinations SET cursor = ?3, state = ?4, error = ?5, failing_since = ?6, delivered_at = ?7,
                 delivered = ?8 WHERE org_id = ?1 AND id = ?2",
            params![
                org_id,
                id,
                p.cursor as i64,
                p.state,
                p.error,
                p.failing_since,
                p.delivered_at,
                p.delivered as i64
            ],
        )
        .map_err(sql_error)?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("destination {id}")));
    }
    Ok(())
}

pub fn lease(c: &Connection, org_id: i64, id: &str, owner: &str, now: i64, until: i64) -> Result<bool> {
    let n = c
        .execute(
            "UPDATE destinations SET lease_owner = ?3, lease_until = ?5
             WHERE org_id = ?1 AND id = ?2 AND (lease_owner IS NULL OR lease_owner = ?3 OR lease_until < ?4)",
            params![org_id, id, owner, now, until],
        )
        .map_err(sql_error)?;
    Ok(n == 1)
}
