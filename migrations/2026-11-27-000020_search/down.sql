DROP INDEX IF EXISTS servers_status_idx;
DROP INDEX IF EXISTS servers_tier_idx;
DROP INDEX IF EXISTS servers_transport_idx;
DROP INDEX IF EXISTS servers_last_updated_id_idx;
DROP INDEX IF EXISTS servers_pulls_id_idx;
DROP INDEX IF EXISTS servers_stars_id_idx;
DROP INDEX IF EXISTS servers_name_id_idx;
DROP INDEX IF EXISTS servers_name_trgm;
DROP INDEX IF EXISTS servers_search_document_gin;
DROP FUNCTION IF EXISTS servers_search_query(text);
DROP FUNCTION IF EXISTS servers_search_document(text, text, text[], text[]);
-- pg_trgm stays installed: other objects of the database may use it, and it is harmless.
