//! Registry sync: fetching registries and storing their servers.

use dataloaders::DbPool;
use dataloaders::models::RegistryRow;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::registries::store::Actor;

/// Runs and schedules registry syncs.
#[derive(Clone)]
pub struct SyncService {
    #[allow(dead_code)]
    pool: DbPool,
}

impl SyncService {
    /// A sync service over `pool`.
    pub fn new(pool: DbPool) -> Self {
        SyncService { pool }
    }

    /// Starts a sync of one registry and returns it in SYNCING.
    pub async fn trigger(&self, id: Uuid, actor: &Actor) -> AppResult<RegistryRow> {
        let _ = (id, actor);
        Err(AppError::Unavailable("registry sync is not available in this gateway version yet".into()))
    }
}
