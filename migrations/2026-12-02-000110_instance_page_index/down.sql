CREATE INDEX instances_server_idx ON instances (server_id);
DROP INDEX instances_server_created_idx;
