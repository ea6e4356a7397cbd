ALTER TABLE monitoring_metrics_hourly
    DROP CONSTRAINT metrics_hourly_healthy_ratio,
    DROP COLUMN healthy_ratio;
DROP TABLE metrics_rollup_state;
DROP TABLE metrics_claims;
