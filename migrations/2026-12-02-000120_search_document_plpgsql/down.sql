CREATE OR REPLACE FUNCTION servers_search_document(name text, description text, capabilities text[], category text[])
RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT setweight(to_tsvector('simple'::regconfig, coalesce(name, '')), 'A')
        || setweight(to_tsvector('simple'::regconfig, coalesce(array_to_string(capabilities, ' '), '')), 'B')
        || setweight(to_tsvector('simple'::regconfig, coalesce(array_to_string(category, ' '), '')), 'C')
        || setweight(to_tsvector('english'::regconfig, coalesce(description, '')), 'D')
$$;
