-- Every change of a namespace grant is announced to every gateway process (payload "grants"),
-- so that open websockets re-read their rights at once after a revocation.
CREATE FUNCTION namespace_grants_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('hivegraph_changes', 'grants');
    RETURN NULL;
END
$$;
CREATE TRIGGER namespace_grants_notify AFTER INSERT OR UPDATE OR DELETE ON namespace_grants
    FOR EACH STATEMENT EXECUTE FUNCTION namespace_grants_notify();
