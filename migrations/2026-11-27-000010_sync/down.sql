DROP INDEX IF EXISTS registries_syncing_idx;
ALTER TABLE servers DROP COLUMN IF EXISTS sync_hash;
ALTER TABLE registries
    DROP CONSTRAINT IF EXISTS registries_sync_report_object,
    DROP CONSTRAINT IF EXISTS registries_sync_state_object,
    DROP COLUMN IF EXISTS sync_state,
    DROP COLUMN IF EXISTS last_sync_report;
