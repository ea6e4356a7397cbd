-- Server discovery (issue 4): full-text search over name, description, categories and tool
-- names; trigram similarity for fuzzy names; and indexes that keep every filter and every sort
-- order of the `servers` list on an index scan.
--
-- The search document is an expression index over an IMMUTABLE function rather than a stored
-- column: `SELECT s.*` readers never carry the vector, and writers (the registry sync) need not
-- know about it. Queries must use exactly `servers_search_document(s.name, s.description,
-- s.capabilities, s.category)` for the planner to match the index.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Weights: A = name, B = tool names, C = categories, D = description. Names and tool names are
-- identifiers, so they use the `simple` configuration (no stemming, no stop words); the
-- description is prose and uses `english`. The text-search parser splits `create_issue` and
-- `github-remote` into their parts, and keeps the hyphenated whole too.
CREATE FUNCTION servers_search_document(name text, description text, capabilities text[], category text[])
RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT setweight(to_tsvector('simple'::regconfig, coalesce(name, '')), 'A')
        || setweight(to_tsvector('simple'::regconfig, coalesce(array_to_string(capabilities, ' '), '')), 'B')
        || setweight(to_tsvector('simple'::regconfig, coalesce(array_to_string(category, ' '), '')), 'C')
        || setweight(to_tsvector('english'::regconfig, coalesce(description, '')), 'D')
$$;

-- A user's search text as a query: web-search syntax ("quoted phrases", -exclusions, OR), matched
-- both unstemmed (names, tools) and stemmed (descriptions).
CREATE FUNCTION servers_search_query(q text)
RETURNS tsquery
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT websearch_to_tsquery('simple'::regconfig, q) || websearch_to_tsquery('english'::regconfig, q)
$$;

CREATE INDEX servers_search_document_gin ON servers
    USING gin (servers_search_document(name, description, capabilities, category));
-- Fuzzy and substring matches on names (`%`, `similarity`, `ILIKE`).
CREATE INDEX servers_name_trgm ON servers USING gin (name gin_trgm_ops);

-- Sort orders of the `servers` list, each with `id` as the tie-breaker of its keyset cursor. The
-- descending orders (stars, pulls, last updated) scan these indexes backwards.
CREATE INDEX servers_name_id_idx ON servers (name, id);
CREATE INDEX servers_stars_id_idx ON servers (stars, id);
CREATE INDEX servers_pulls_id_idx ON servers (pull_count, id);
CREATE INDEX servers_last_updated_id_idx ON servers ((coalesce(last_updated, '-infinity'::timestamptz)), id);

-- Filters on low-cardinality columns; the planner uses them when a value is selective (for
-- example DEPRECATED servers, or SSE among mostly stdio servers) and in bitmap combinations.
CREATE INDEX servers_transport_idx ON servers (transport);
CREATE INDEX servers_tier_idx ON servers (tier);
CREATE INDEX servers_status_idx ON servers (status);
