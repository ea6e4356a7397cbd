//! Diesel table definitions, written to match `migrations/` exactly.
//!
//! Enumerations are stored as lower-case text (see `crate::enums`), so they appear as `Text` here.

diesel::table! {
    registries (id) {
        id -> Uuid,
        name -> Text,
        url -> Text,
        description -> Nullable<Text>,
        status -> Text,
        format -> Text,
        server_count -> Int4,
        last_sync_at -> Nullable<Timestamptz>,
        last_sync_attempt_at -> Nullable<Timestamptz>,
        last_error -> Nullable<Text>,
        sync_interval_seconds -> Int4,
        next_sync_at -> Nullable<Timestamptz>,
        consecutive_failures -> Int4,
        metadata -> Jsonb,
        auth_config -> Nullable<Jsonb>,
        auth_kind -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        last_sync_report -> Nullable<Jsonb>,
        sync_state -> Jsonb,
        archived_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    servers (id) {
        id -> Uuid,
        registry_id -> Uuid,
        name -> Text,
        original_name -> Text,
        description -> Text,
        version -> Nullable<Text>,
        image -> Nullable<Text>,
        url -> Nullable<Text>,
        transport -> Text,
        tier -> Text,
        status -> Text,
        category -> Array<Text>,
        capabilities -> Array<Text>,
        repository_url -> Nullable<Text>,
        network_permissions -> Jsonb,
        pull_count -> Int8,
        stars -> Int8,
        last_updated -> Nullable<Timestamptz>,
        deployment_requirements -> Jsonb,
        removed_upstream_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        sync_hash -> Nullable<Text>,
        archived_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    clusters (id) {
        id -> Uuid,
        name -> Text,
        endpoint -> Text,
        context -> Nullable<Text>,
        in_cluster -> Bool,
        simulated -> Bool,
        status -> Text,
        version -> Nullable<Text>,
        capabilities -> Array<Text>,
        resource_quota -> Jsonb,
        access_level -> Text,
        last_checked_at -> Nullable<Timestamptz>,
        last_error -> Nullable<Text>,
        credentials -> Nullable<Jsonb>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        removed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    instances (id) {
        id -> Uuid,
        server_id -> Uuid,
        cluster_id -> Uuid,
        name -> Text,
        namespace -> Text,
        status -> Text,
        phase -> Text,
        replicas_desired -> Int4,
        replicas_current -> Int4,
        replicas_ready -> Int4,
        deployed_at -> Nullable<Timestamptz>,
        configuration -> Jsonb,
        health_status -> Text,
        health_reason -> Nullable<Text>,
        logs -> Jsonb,
        events -> Jsonb,
        last_warning -> Nullable<Jsonb>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        endpoint -> Nullable<Text>,
    }
}

diesel::table! {
    deployments (id) {
        id -> Uuid,
        instance_id -> Uuid,
        server_id -> Uuid,
        operation -> Text,
        initiated_by -> Text,
        status -> Text,
        started_at -> Timestamptz,
        completed_at -> Nullable<Timestamptz>,
        parameters -> Jsonb,
        steps -> Jsonb,
        errors -> Jsonb,
        rollback_info -> Nullable<Jsonb>,
        lease_owner -> Nullable<Text>,
        lease_until -> Nullable<Timestamptz>,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    deployment_logs (id) {
        id -> Int8,
        deployment_id -> Uuid,
        logged_at -> Timestamptz,
        level -> Text,
        message -> Text,
    }
}

diesel::table! {
    monitoring_metrics (id) {
        id -> Int8,
        instance_id -> Uuid,
        timestamp -> Timestamptz,
        cpu_usage -> Nullable<Float8>,
        memory_usage -> Nullable<Int8>,
        network_io -> Jsonb,
        request_count -> Nullable<Int8>,
        response_time -> Nullable<Float8>,
        error_rate -> Nullable<Float8>,
        health_checks -> Jsonb,
    }
}

diesel::table! {
    monitoring_metrics_hourly (instance_id, bucket) {
        instance_id -> Uuid,
        bucket -> Timestamptz,
        samples -> Int4,
        cpu_usage_avg -> Nullable<Float8>,
        cpu_usage_max -> Nullable<Float8>,
        memory_usage_avg -> Nullable<Float8>,
        memory_usage_max -> Nullable<Int8>,
        request_count_sum -> Nullable<Int8>,
        response_time_avg -> Nullable<Float8>,
        error_rate_avg -> Nullable<Float8>,
        healthy_ratio -> Nullable<Float8>,
    }
}

diesel::table! {
    metrics_claims (job, scope, slot) {
        job -> Text,
        scope -> Text,
        slot -> Int8,
        holder -> Text,
        claimed_at -> Timestamptz,
    }
}

diesel::table! {
    metrics_rollup_state (id) {
        id -> Int2,
        rolled_until -> Nullable<Timestamptz>,
        ran_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    audit_log (id) {
        id -> Int8,
        at -> Timestamptz,
        actor -> Text,
        action -> Text,
        target_type -> Nullable<Text>,
        target_id -> Nullable<Text>,
        outcome -> Text,
        request_id -> Nullable<Text>,
        details -> Jsonb,
    }
}

diesel::table! {
    namespace_grants (id) {
        id -> Uuid,
        subject -> Text,
        namespace -> Text,
        granted_by -> Text,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(servers -> registries (registry_id));
diesel::joinable!(instances -> servers (server_id));
diesel::joinable!(instances -> clusters (cluster_id));
diesel::joinable!(deployments -> instances (instance_id));
diesel::joinable!(deployment_logs -> deployments (deployment_id));
diesel::joinable!(monitoring_metrics -> instances (instance_id));

diesel::allow_tables_to_appear_in_same_query!(
    registries,
    servers,
    clusters,
    instances,
    deployments,
    deployment_logs,
    monitoring_metrics,
    monitoring_metrics_hourly,
    metrics_claims,
    metrics_rollup_state,
    audit_log,
    namespace_grants,
);
