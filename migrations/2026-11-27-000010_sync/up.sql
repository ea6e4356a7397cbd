-- Registry sync (issue 3): the report of the last sync attempt, the upstream sync state
-- (incremental watermark of the MCP Registry API), and a content hash per server so that an
-- unchanged entry is not rewritten.

ALTER TABLE registries
    ADD COLUMN last_sync_report jsonb,
    ADD COLUMN sync_state jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD CONSTRAINT registries_sync_state_object CHECK (jsonb_typeof(sync_state) = 'object'),
    ADD CONSTRAINT registries_sync_report_object CHECK (last_sync_report IS NULL OR jsonb_typeof(last_sync_report) = 'object');

ALTER TABLE servers ADD COLUMN sync_hash text;

-- The scheduler's recovery pass looks for registries left in SYNCING.
CREATE INDEX registries_syncing_idx ON registries (id) WHERE status = 'syncing';
