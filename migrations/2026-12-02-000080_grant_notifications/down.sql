DROP TRIGGER namespace_grants_notify ON namespace_grants;
DROP FUNCTION namespace_grants_notify();
