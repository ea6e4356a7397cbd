DROP TABLE IF EXISTS namespace_grants;
