ALTER TABLE instances DROP COLUMN endpoint;
