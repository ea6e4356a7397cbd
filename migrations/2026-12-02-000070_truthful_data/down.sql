ALTER TABLE deployments DROP CONSTRAINT deployments_operation_enum,
    ADD CONSTRAINT deployments_operation_enum
    CHECK (operation IN ('deploy', 'scale', 'restart', 'rollback', 'delete'));
ALTER TABLE deployments DROP CONSTRAINT deployments_instance_id_fkey,
    ADD CONSTRAINT deployments_instance_id_fkey FOREIGN KEY (instance_id) REFERENCES instances (id) ON DELETE CASCADE,
    DROP CONSTRAINT deployments_server_id_fkey,
    ADD CONSTRAINT deployments_server_id_fkey FOREIGN KEY (server_id) REFERENCES servers (id) ON DELETE CASCADE;
ALTER TABLE instances DROP CONSTRAINT instances_server_id_fkey,
    ADD CONSTRAINT instances_server_id_fkey FOREIGN KEY (server_id) REFERENCES servers (id) ON DELETE CASCADE;
ALTER TABLE servers DROP CONSTRAINT servers_registry_id_fkey,
    ADD CONSTRAINT servers_registry_id_fkey FOREIGN KEY (registry_id) REFERENCES registries (id) ON DELETE CASCADE;
DROP INDEX registries_name_key;
CREATE UNIQUE INDEX registries_name_key ON registries (lower(name));
ALTER TABLE servers DROP COLUMN archived_at;
ALTER TABLE registries DROP COLUMN archived_at;
DROP TRIGGER deployments_status_transition ON deployments;
DROP FUNCTION deployments_status_transition();
ALTER TABLE instances ADD COLUMN resource_usage jsonb NOT NULL DEFAULT '{}'::jsonb;
