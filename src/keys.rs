//! `hivegraph keys rotate`: re-encrypts every sealed secret under the current key.
//!
//! Rotation: set `HIVEGRAPH_SECRET_KEY` to the new key and `HIVEGRAPH_SECRET_KEY_PREVIOUS` to the
//! old one(s), restart the gateways, run `hivegraph keys rotate`, then drop the old keys from
//! `HIVEGRAPH_SECRET_KEY_PREVIOUS`. Each value is opened (with whichever key sealed it) and sealed
//! again with a fresh data key under the current key, bound to the same row and column; values
//! already under the current key are left alone. Every row is rewritten in its own short
//! transaction with `FOR UPDATE`, so the command is safe to run while gateways serve, and safe to
//! run again after an interruption.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use dataloaders::schema::{clusters, registries};

use crate::secrets::{Binding, Keyring, Sealed};

/// What a rotation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RotationReport {
    /// Values re-encrypted under the current key.
    pub rotated: u64,
    /// Values that were already under the current key.
    pub current: u64,
}

/// Re-encrypts the sealed column of `table` (`registries.auth_config` or
/// `clusters.credentials`), row by row.
async fn rotate_column(
    conn: &mut AsyncPgConnection,
    keys: &Keyring,
    table: &'static str,
    report: &mut RotationReport,
) -> anyhow::Result<()> {
    let ids: Vec<Uuid> = match table {
        "registries" => {
            registries::table
                .filter(registries::auth_config.is_not_null())
                .select(registries::id)
                .load(conn)
                .await?
        }
        _ => {
            clusters::table
                .filter(clusters::credentials.is_not_null())
                .select(clusters::id)
                .load(conn)
                .await?
        }
    };
    for id in ids {
        let rotated = conn
            .transaction::<_, anyhow::Error, _>(async move |c| {
                let raw: Option<serde_json::Value> = match table {
                    "registries" => {
                        registries::table
                            .find(id)
                            .select(registries::auth_config)
                            .for_update()
                            .first(c)
                            .await?
                    }
                    _ => {
                        clusters::table
                            .find(id)
                            .select(clusters::credentials)
                            .for_update()
                            .first(c)
                            .await?
                    }
                };
                let column = if table == "registries" {
                    "auth_config"
                } else {
                    "credentials"
                };
                let Some(raw) = raw else {
                    return Ok(None);
                };
                let sealed: Sealed = serde_json::from_value(raw)
                    .map_err(|_| anyhow::anyhow!("{table} {id}: malformed sealed {column}"))?;
                if sealed.kid == keys.current_key_id() {
                    return Ok(Some(false));
                }
                let fresh = keys
                    .rewrap(
                        &sealed,
                        Binding {
                            table,
                            row: id,
                            column,
                        },
                    )
                    .map_err(|e| anyhow::anyhow!("{table} {id}: {e}"))?;
                let value = serde_json::to_value(fresh)?;
                match table {
                    "registries" => {
                        diesel::update(registries::table.find(id))
                            .set(registries::auth_config.eq(Some(value)))
                            .execute(c)
                            .await?
                    }
                    _ => {
                        diesel::update(clusters::table.find(id))
                            .set(clusters::credentials.eq(Some(value)))
                            .execute(c)
                            .await?
                    }
                };
                Ok(Some(true))
            })
            .await?;
        match rotated {
            Some(true) => report.rotated += 1,
            Some(false) => report.current += 1,
            None => {}
        }
    }
    Ok(())
}

/// Re-encrypts every sealed value (registry credentials, cluster credentials) under the current
/// key of `keys`.
pub async fn rotate(database_url: &str, keys: &Keyring) -> anyhow::Result<RotationReport> {
    let mut conn = AsyncPgConnection::establish(database_url).await?;
    let mut report = RotationReport::default();
    rotate_column(&mut conn, keys, "registries", &mut report).await?;
    rotate_column(&mut conn, keys, "clusters", &mut report).await?;
    Ok(report)
}
