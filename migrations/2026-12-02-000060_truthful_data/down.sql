DROP TRIGGER deployments_status_transition ON deployments;
DROP FUNCTION deployments_status_transition();
ALTER TABLE instances ADD COLUMN resource_usage jsonb NOT NULL DEFAULT '{}'::jsonb;
