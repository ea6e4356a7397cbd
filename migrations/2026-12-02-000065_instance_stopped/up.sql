-- An instance scaled to zero replicas is STOPPED, not PENDING (issue #21): it runs nothing on
-- purpose and is not waiting to run.
ALTER TABLE instances DROP CONSTRAINT instances_status_enum;
ALTER TABLE instances ADD CONSTRAINT instances_status_enum
    CHECK (status IN ('pending', 'running', 'failed', 'terminated', 'stopped'));
UPDATE instances SET status = 'stopped'
    WHERE status = 'pending' AND replicas_desired = 0 AND replicas_current = 0;
