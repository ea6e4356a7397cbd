DROP TRIGGER IF EXISTS metrics_notify ON monitoring_metrics;
DROP TRIGGER IF EXISTS deployments_notify ON deployments;
DROP TRIGGER IF EXISTS instances_notify ON instances;
DROP TRIGGER IF EXISTS registries_notify ON registries;
DROP FUNCTION IF EXISTS hivegraph_notify_change();
