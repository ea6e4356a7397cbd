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
