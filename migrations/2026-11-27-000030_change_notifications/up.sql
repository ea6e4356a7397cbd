-- Change notifications for live subscriptions. Every committed change of a registry, instance or
-- deployment, and every new monitoring sample, sends a NOTIFY on channel `hivegraph_changes`
-- whose payload is a reference to the row ("<topic>:<uuid>"), never the row itself. Gateway
-- processes LISTEN once each and fan the change out to their subscribers, so a change made by
-- any process (or by hand in psql) reaches every subscriber of every process.

CREATE FUNCTION hivegraph_notify_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    topic text := TG_ARGV[0];
    key   uuid;
BEGIN
    -- Field references are resolved only on the branch taken, so each table reads its own key.
    IF topic = 'metrics' THEN
        key := NEW.instance_id;
    ELSIF TG_OP = 'DELETE' THEN
        key := OLD.id;
    ELSE
        key := NEW.id;
    END IF;
    PERFORM pg_notify('hivegraph_changes', topic || ':' || key::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER registries_notify AFTER INSERT OR UPDATE OR DELETE ON registries
    FOR EACH ROW EXECUTE FUNCTION hivegraph_notify_change('registry');
CREATE TRIGGER instances_notify AFTER INSERT OR UPDATE OR DELETE ON instances
    FOR EACH ROW EXECUTE FUNCTION hivegraph_notify_change('instance');
CREATE TRIGGER deployments_notify AFTER INSERT OR UPDATE OR DELETE ON deployments
    FOR EACH ROW EXECUTE FUNCTION hivegraph_notify_change('deployment');
CREATE TRIGGER metrics_notify AFTER INSERT ON monitoring_metrics
    FOR EACH ROW EXECUTE FUNCTION hivegraph_notify_change('metrics');
