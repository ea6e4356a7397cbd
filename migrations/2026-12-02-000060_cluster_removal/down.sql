DROP TRIGGER clusters_notify ON clusters;
DROP FUNCTION hivegraph_notify_cluster();
DELETE FROM clusters c WHERE removed_at IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.cluster_id = c.id);
DROP INDEX clusters_name_key;
CREATE UNIQUE INDEX clusters_name_key ON clusters (lower(name));
ALTER TABLE clusters DROP CONSTRAINT clusters_removed_without_credentials;
ALTER TABLE clusters DROP COLUMN removed_at;
