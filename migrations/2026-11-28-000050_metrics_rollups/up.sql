-- Metrics collection claims and the rollup watermark.
--
-- Several gateway processes may run: each collection interval of each cluster is claimed by one
-- of them (the first to insert its row), so an instance is measured once per interval.
CREATE TABLE metrics_claims (
    job         text NOT NULL,
    scope       text NOT NULL,
    slot        bigint NOT NULL,
    holder      text NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job, scope, slot)
);
CREATE INDEX metrics_claims_claimed_at_idx ON metrics_claims (claimed_at);

-- How far raw samples have been rolled up into monitoring_metrics_hourly (one row).
CREATE TABLE metrics_rollup_state (
    id            smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    rolled_until  timestamptz,
    ran_at        timestamptz
);
INSERT INTO metrics_rollup_state (id) VALUES (1);

-- Health of each hour: the share of samples whose MCP health check passed.
ALTER TABLE monitoring_metrics_hourly
    ADD COLUMN healthy_ratio double precision,
    ADD CONSTRAINT metrics_hourly_healthy_ratio CHECK (healthy_ratio IS NULL OR (healthy_ratio BETWEEN 0 AND 1));
