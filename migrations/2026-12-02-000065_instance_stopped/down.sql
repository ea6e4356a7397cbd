UPDATE instances SET status = 'pending' WHERE status = 'stopped';
ALTER TABLE instances DROP CONSTRAINT instances_status_enum;
ALTER TABLE instances ADD CONSTRAINT instances_status_enum
    CHECK (status IN ('pending', 'running', 'failed', 'terminated'));
