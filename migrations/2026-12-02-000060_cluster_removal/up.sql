-- Clusters registered through the API, and clusters that can be removed.
--
-- A removed cluster keeps its row as a tombstone (removed_at set, credentials wiped), so that the
-- deployment history of its past instances stays readable; it no longer counts as registered and
-- its name can be used again.
ALTER TABLE clusters ADD COLUMN removed_at timestamptz;
ALTER TABLE clusters ADD CONSTRAINT clusters_removed_without_credentials
    CHECK (removed_at IS NULL OR credentials IS NULL);
DROP INDEX clusters_name_key;
CREATE UNIQUE INDEX clusters_name_key ON clusters (lower(name)) WHERE removed_at IS NULL;

-- Every gateway process is told when a cluster's credentials change or the cluster is removed
-- (payload "cluster:<uuid>"), so that it rebuilds its clients or stops its watchers at once.
CREATE FUNCTION hivegraph_notify_cluster() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.credentials IS DISTINCT FROM NEW.credentials
       OR OLD.removed_at IS DISTINCT FROM NEW.removed_at
       OR OLD.context IS DISTINCT FROM NEW.context
       OR OLD.in_cluster IS DISTINCT FROM NEW.in_cluster THEN
        PERFORM pg_notify('hivegraph_changes', 'cluster:' || NEW.id::text);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER clusters_notify AFTER UPDATE ON clusters
    FOR EACH ROW EXECUTE FUNCTION hivegraph_notify_cluster();
