-- A server's instances are listed oldest first, by (created_at, id). With the server's id alone
-- indexed, every page of every server in a nested read scanned the server's instances and
-- sorted them; this index hands them over in page order, so a page is one short index scan.
-- It also serves every lookup by server (counts, the foreign key), so it replaces the old one.
CREATE INDEX instances_server_created_idx ON instances (server_id, created_at, id);
DROP INDEX instances_server_idx;
