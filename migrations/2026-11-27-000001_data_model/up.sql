-- hivegraph data model: every entity of shared/DATA-MODEL.md, with the constraints the database
-- can enforce itself. Enums are stored as lower-case text guarded by CHECK constraints so that a
-- bad value can never be written, whichever code path writes it.

CREATE TABLE registries (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                   text NOT NULL,
    url                    text NOT NULL,
    description            text,
    status                 text NOT NULL DEFAULT 'inactive',
    format                 text NOT NULL DEFAULT 'auto',
    server_count           integer NOT NULL DEFAULT 0,
    last_sync_at           timestamptz,
    last_sync_attempt_at   timestamptz,
    last_error             text,
    sync_interval_seconds  integer NOT NULL DEFAULT 3600,
    next_sync_at           timestamptz,
    consecutive_failures   integer NOT NULL DEFAULT 0,
    metadata               jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Sealed (encrypted) authentication configuration; never stored in clear text.
    auth_config            jsonb,
    auth_kind              text NOT NULL DEFAULT 'none',
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT registries_name_format CHECK (name ~ '^[A-Za-z0-9-]{1,64}$'),
    CONSTRAINT registries_url_scheme CHECK (url ~* '^(https?|file)://.+'),
    CONSTRAINT registries_status_enum CHECK (status IN ('active', 'inactive', 'error', 'syncing')),
    CONSTRAINT registries_format_enum CHECK (format IN ('auto', 'toolhive', 'toolhive_upstream', 'mcp_registry', 'toolhive_registry_server')),
    CONSTRAINT registries_auth_kind_enum CHECK (auth_kind IN ('none', 'bearer', 'basic', 'header')),
    CONSTRAINT registries_auth_sealed CHECK ((auth_kind = 'none') = (auth_config IS NULL)),
    CONSTRAINT registries_server_count_nonneg CHECK (server_count >= 0),
    CONSTRAINT registries_failures_nonneg CHECK (consecutive_failures >= 0),
    CONSTRAINT registries_sync_interval CHECK (sync_interval_seconds BETWEEN 60 AND 604800),
    CONSTRAINT registries_metadata_object CHECK (jsonb_typeof(metadata) = 'object')
);
CREATE UNIQUE INDEX registries_name_key ON registries (lower(name));
CREATE INDEX registries_status_idx ON registries (status);
CREATE INDEX registries_next_sync_idx ON registries (next_sync_at) WHERE status <> 'syncing';

CREATE TABLE servers (
    id                       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    registry_id              uuid NOT NULL REFERENCES registries (id) ON DELETE CASCADE,
    -- DNS-label form of the name, unique within a registry.
    name                     text NOT NULL,
    -- The name exactly as the registry spells it, e.g. io.github.stacklok/fetch.
    original_name            text NOT NULL,
    description              text NOT NULL DEFAULT '',
    version                  text,
    image                    text,
    url                      text,
    transport                text NOT NULL,
    tier                     text NOT NULL DEFAULT 'community',
    status                   text NOT NULL DEFAULT 'available',
    category                 text[] NOT NULL DEFAULT '{}',
    capabilities             text[] NOT NULL DEFAULT '{}',
    repository_url           text,
    network_permissions      jsonb NOT NULL DEFAULT '{}'::jsonb,
    pull_count               bigint NOT NULL DEFAULT 0,
    stars                    bigint NOT NULL DEFAULT 0,
    last_updated             timestamptz,
    deployment_requirements  jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Set when the server vanished upstream; kept while instances of it exist.
    removed_upstream_at      timestamptz,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT servers_name_dns_label CHECK (name ~ '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'),
    CONSTRAINT servers_original_name_nonempty CHECK (length(original_name) BETWEEN 1 AND 255),
    CONSTRAINT servers_transport_enum CHECK (transport IN ('stdio', 'http', 'sse')),
    CONSTRAINT servers_tier_enum CHECK (tier IN ('official', 'community')),
    CONSTRAINT servers_status_enum CHECK (status IN ('available', 'deprecated', 'experimental')),
    CONSTRAINT servers_pull_count_nonneg CHECK (pull_count >= 0),
    CONSTRAINT servers_stars_nonneg CHECK (stars >= 0),
    CONSTRAINT servers_runnable CHECK (image IS NOT NULL OR url IS NOT NULL),
    CONSTRAINT servers_network_permissions_object CHECK (jsonb_typeof(network_permissions) = 'object'),
    CONSTRAINT servers_requirements_object CHECK (jsonb_typeof(deployment_requirements) = 'object')
);
CREATE UNIQUE INDEX servers_registry_original_name_key ON servers (registry_id, original_name);
CREATE UNIQUE INDEX servers_registry_name_key ON servers (registry_id, name);
CREATE INDEX servers_category_gin ON servers USING gin (category);
CREATE INDEX servers_capabilities_gin ON servers USING gin (capabilities);

CREATE TABLE clusters (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name             text NOT NULL,
    endpoint         text NOT NULL,
    context          text,
    in_cluster       boolean NOT NULL DEFAULT false,
    -- True when the cluster is the bundled Kubernetes API emulator, not a real cluster.
    simulated        boolean NOT NULL DEFAULT false,
    status           text NOT NULL DEFAULT 'disconnected',
    version          text,
    capabilities     text[] NOT NULL DEFAULT '{}',
    resource_quota   jsonb NOT NULL DEFAULT '{}'::jsonb,
    access_level     text NOT NULL DEFAULT 'read_only',
    last_checked_at  timestamptz,
    last_error       text,
    -- Sealed credentials, when the cluster is not reached through the gateway's own kubeconfig.
    credentials      jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT clusters_name_format CHECK (name ~ '^[A-Za-z0-9-]{1,64}$'),
    CONSTRAINT clusters_endpoint_url CHECK (endpoint ~* '^https?://.+'),
    CONSTRAINT clusters_status_enum CHECK (status IN ('connected', 'disconnected', 'unauthorized')),
    CONSTRAINT clusters_access_level_enum CHECK (access_level IN ('read_only', 'deploy', 'admin')),
    CONSTRAINT clusters_resource_quota_object CHECK (jsonb_typeof(resource_quota) = 'object')
);
CREATE UNIQUE INDEX clusters_name_key ON clusters (lower(name));

CREATE TABLE instances (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    server_id         uuid NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    cluster_id        uuid NOT NULL REFERENCES clusters (id) ON DELETE RESTRICT,
    name              text NOT NULL,
    namespace         text NOT NULL,
    status            text NOT NULL DEFAULT 'pending',
    phase             text NOT NULL DEFAULT 'deploying',
    replicas_desired  integer NOT NULL DEFAULT 1,
    replicas_current  integer NOT NULL DEFAULT 0,
    replicas_ready    integer NOT NULL DEFAULT 0,
    deployed_at       timestamptz,
    configuration     jsonb NOT NULL DEFAULT '{}'::jsonb,
    resource_usage    jsonb NOT NULL DEFAULT '{}'::jsonb,
    health_status     text NOT NULL DEFAULT 'unknown',
    health_reason     text,
    logs              jsonb NOT NULL DEFAULT '{}'::jsonb,
    events            jsonb NOT NULL DEFAULT '[]'::jsonb,
    last_warning      jsonb,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT instances_name_k8s CHECK (name ~ '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'),
    CONSTRAINT instances_namespace_k8s CHECK (namespace ~ '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'),
    CONSTRAINT instances_status_enum CHECK (status IN ('pending', 'running', 'failed', 'terminated')),
    CONSTRAINT instances_phase_enum CHECK (phase IN ('deploying', 'ready', 'scaling', 'terminating')),
    CONSTRAINT instances_health_enum CHECK (health_status IN ('healthy', 'unhealthy', 'unknown')),
    CONSTRAINT instances_replicas_nonneg CHECK (replicas_desired >= 0 AND replicas_current >= 0 AND replicas_ready >= 0),
    CONSTRAINT instances_events_array CHECK (jsonb_typeof(events) = 'array'),
    CONSTRAINT instances_configuration_object CHECK (jsonb_typeof(configuration) = 'object')
);
-- One live instance per Kubernetes object; terminated records stay as history.
CREATE UNIQUE INDEX instances_live_object_key ON instances (cluster_id, namespace, name) WHERE status <> 'terminated';
CREATE INDEX instances_namespace_status_idx ON instances (namespace, status);
CREATE INDEX instances_server_idx ON instances (server_id);
CREATE INDEX instances_cluster_idx ON instances (cluster_id);

CREATE TABLE deployments (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    instance_id    uuid NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    server_id      uuid NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    operation      text NOT NULL DEFAULT 'deploy',
    initiated_by   text NOT NULL,
    status         text NOT NULL DEFAULT 'initiated',
    started_at     timestamptz NOT NULL DEFAULT now(),
    completed_at   timestamptz,
    parameters     jsonb NOT NULL DEFAULT '{}'::jsonb,
    steps          jsonb NOT NULL DEFAULT '[]'::jsonb,
    errors         jsonb NOT NULL DEFAULT '[]'::jsonb,
    rollback_info  jsonb,
    -- Which gateway process drives the operation, and until when its lease holds.
    lease_owner    text,
    lease_until    timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT deployments_operation_enum CHECK (operation IN ('deploy', 'scale', 'restart', 'rollback', 'delete')),
    CONSTRAINT deployments_status_enum CHECK (status IN ('initiated', 'in_progress', 'completed', 'failed', 'cancelled')),
    CONSTRAINT deployments_initiated_by_nonempty CHECK (length(initiated_by) > 0),
    CONSTRAINT deployments_completed_at_when_done CHECK (
        (status IN ('initiated', 'in_progress')) = (completed_at IS NULL)),
    CONSTRAINT deployments_completed_after_start CHECK (completed_at IS NULL OR completed_at >= started_at),
    CONSTRAINT deployments_failed_has_errors CHECK (status <> 'failed' OR jsonb_array_length(errors) > 0),
    CONSTRAINT deployments_steps_array CHECK (jsonb_typeof(steps) = 'array'),
    CONSTRAINT deployments_errors_array CHECK (jsonb_typeof(errors) = 'array'),
    CONSTRAINT deployments_parameters_object CHECK (jsonb_typeof(parameters) = 'object')
);
CREATE INDEX deployments_instance_idx ON deployments (instance_id, started_at DESC);
CREATE INDEX deployments_server_idx ON deployments (server_id);
CREATE INDEX deployments_open_idx ON deployments (status) WHERE status IN ('initiated', 'in_progress');
-- At most one open operation per instance.
CREATE UNIQUE INDEX deployments_one_open_per_instance ON deployments (instance_id) WHERE status IN ('initiated', 'in_progress');

-- Step logs of deployment operations (retained 30 days).
CREATE TABLE deployment_logs (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    deployment_id  uuid NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    logged_at      timestamptz NOT NULL DEFAULT now(),
    level          text NOT NULL DEFAULT 'info',
    message        text NOT NULL,
    CONSTRAINT deployment_logs_level_enum CHECK (level IN ('debug', 'info', 'warn', 'error'))
);
CREATE INDEX deployment_logs_deployment_idx ON deployment_logs (deployment_id, logged_at);
CREATE INDEX deployment_logs_logged_at_idx ON deployment_logs (logged_at);

CREATE TABLE monitoring_metrics (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id    uuid NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    "timestamp"    timestamptz NOT NULL,
    cpu_usage      double precision,
    memory_usage   bigint,
    network_io     jsonb NOT NULL DEFAULT '{}'::jsonb,
    request_count  bigint,
    response_time  double precision,
    error_rate     double precision,
    health_checks  jsonb NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT metrics_cpu_percent CHECK (cpu_usage IS NULL OR (cpu_usage >= 0 AND cpu_usage <= 100)),
    CONSTRAINT metrics_error_rate_percent CHECK (error_rate IS NULL OR (error_rate >= 0 AND error_rate <= 100)),
    CONSTRAINT metrics_memory_nonneg CHECK (memory_usage IS NULL OR memory_usage >= 0),
    CONSTRAINT metrics_requests_nonneg CHECK (request_count IS NULL OR request_count >= 0),
    CONSTRAINT metrics_response_time_nonneg CHECK (response_time IS NULL OR response_time >= 0)
);
CREATE UNIQUE INDEX metrics_instance_timestamp_idx ON monitoring_metrics (instance_id, "timestamp" DESC);
CREATE INDEX metrics_timestamp_idx ON monitoring_metrics ("timestamp");

-- Hourly aggregates of monitoring_metrics (retained 90 days).
CREATE TABLE monitoring_metrics_hourly (
    instance_id         uuid NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    bucket              timestamptz NOT NULL,
    samples             integer NOT NULL,
    cpu_usage_avg       double precision,
    cpu_usage_max       double precision,
    memory_usage_avg    double precision,
    memory_usage_max    bigint,
    request_count_sum   bigint,
    response_time_avg   double precision,
    error_rate_avg      double precision,
    PRIMARY KEY (instance_id, bucket),
    CONSTRAINT metrics_hourly_samples_pos CHECK (samples > 0),
    CONSTRAINT metrics_hourly_cpu_percent CHECK (cpu_usage_avg IS NULL OR (cpu_usage_avg BETWEEN 0 AND 100)),
    CONSTRAINT metrics_hourly_cpu_max_percent CHECK (cpu_usage_max IS NULL OR (cpu_usage_max BETWEEN 0 AND 100)),
    CONSTRAINT metrics_hourly_error_percent CHECK (error_rate_avg IS NULL OR (error_rate_avg BETWEEN 0 AND 100))
);
CREATE INDEX metrics_hourly_bucket_idx ON monitoring_metrics_hourly (bucket);

-- Append-only audit trail of mutations and denied attempts (retained 1 year).
CREATE TABLE audit_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    actor        text NOT NULL,
    action       text NOT NULL,
    target_type  text,
    target_id    text,
    outcome      text NOT NULL,
    request_id   text,
    details      jsonb NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT audit_outcome_enum CHECK (outcome IN ('success', 'denied', 'error'))
);
CREATE INDEX audit_log_at_idx ON audit_log (at);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, at DESC);
