-- Instance.resourceUsage is read from the newest monitoring sample; the column nothing wrote goes.
ALTER TABLE instances DROP COLUMN resource_usage;

-- The deployment operation state machine (dataloaders::enums::DeploymentStatus), enforced by the
-- database for every writer: INITIATED -> IN_PROGRESS -> COMPLETED | FAILED, INITIATED |
-- IN_PROGRESS -> CANCELLED, and INITIATED -> FAILED (refused before its first step, for example
-- when the cluster is unreachable at take-over). An ended operation never changes status again.
CREATE FUNCTION deployments_status_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status AND NOT (
        (OLD.status = 'initiated' AND NEW.status IN ('in_progress', 'failed', 'cancelled'))
        OR (OLD.status = 'in_progress' AND NEW.status IN ('completed', 'failed', 'cancelled'))
    ) THEN
        RAISE EXCEPTION 'deployment % cannot move from % to %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER deployments_status_transition BEFORE UPDATE OF status ON deployments
    FOR EACH ROW EXECUTE FUNCTION deployments_status_transition();

-- Configuration history is kept forever: deleting a registry archives it and its servers
-- (hidden from lists and search, still reachable from the instances and deployments that
-- reference them), and nothing that an instance or operation references can be deleted.
ALTER TABLE registries ADD COLUMN archived_at timestamptz;
ALTER TABLE servers ADD COLUMN archived_at timestamptz;
DROP INDEX registries_name_key;
CREATE UNIQUE INDEX registries_name_key ON registries (lower(name)) WHERE archived_at IS NULL;
ALTER TABLE servers DROP CONSTRAINT servers_registry_id_fkey,
    ADD CONSTRAINT servers_registry_id_fkey FOREIGN KEY (registry_id) REFERENCES registries (id) ON DELETE RESTRICT;
ALTER TABLE instances DROP CONSTRAINT instances_server_id_fkey,
    ADD CONSTRAINT instances_server_id_fkey FOREIGN KEY (server_id) REFERENCES servers (id) ON DELETE RESTRICT;
ALTER TABLE deployments DROP CONSTRAINT deployments_server_id_fkey,
    ADD CONSTRAINT deployments_server_id_fkey FOREIGN KEY (server_id) REFERENCES servers (id) ON DELETE RESTRICT,
    DROP CONSTRAINT deployments_instance_id_fkey,
    ADD CONSTRAINT deployments_instance_id_fkey FOREIGN KEY (instance_id) REFERENCES instances (id) ON DELETE RESTRICT;

-- upgradeInstance records an UPGRADE operation.
ALTER TABLE deployments DROP CONSTRAINT deployments_operation_enum,
    ADD CONSTRAINT deployments_operation_enum
    CHECK (operation IN ('deploy', 'scale', 'restart', 'rollback', 'delete', 'upgrade'));
