//! Metrics collection, retention and hourly rollups of deployed instances.
//!
//! Every collection interval (15 s by default, `HIVEGRAPH_METRICS_INTERVAL_MS`), for each
//! cluster with live instances, one gateway process claims the interval (a row in
//! `metrics_claims`; the first insert wins, so several replicas never measure an instance twice
//! in one interval) and measures each instance:
//! - CPU and memory from metrics.k8s.io PodMetrics, summed over the instance's pods; CPU as a
//!   percentage of the containers' limits, or requests, or one core per container with neither;
//! - request count, response time, error rate and network bytes from the server's Prometheus
//!   endpoint, scraped through the API server's service proxy (HTTP and SSE servers);
//! - health, from an MCP `initialize` + `ping` JSON-RPC exchange through the same proxy.
//!
//! Each sample is validated against the data model ([`sample::Sample::validate`]); a refused
//! sample is logged with its reason and counted, never stored. A stored sample fires the
//! `metrics` change notification (migration 000030), which reaches `instanceMetrics`
//! subscribers and invalidates the read caches.
//!
//! The rollup job ([`Monitor::rollup`]) aggregates raw samples into hourly rows, then deletes
//! raw samples older than 7 days and hourly rows older than 90 days. It runs under a
//! transaction-scoped advisory lock (other replicas skip that round) and takes its time from an
//! injectable [`Clock`].

pub mod sample;
pub mod sources;

use crate::db::AdvisoryLock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::dataloader::Loader;
use chrono::{DateTime, Utc};
use dataloaders::models::InstanceRow;
use dataloaders::{DbPool, LatestMetricsOfInstance, Reader};
use diesel::prelude::QueryableByName;
use diesel::sql_types::{BigInt, Double, Int8, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::clock::Clock;
use crate::config::MonitoringConfig;
use crate::k8s::ClusterManager;
use crate::k8s::manifests::InstanceSpec;
use sample::{Rejection, Sample};
use sources::Counters;

/// What one collection round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// Clusters whose interval this process claimed.
    pub claimed: usize,
    /// Clusters another process had claimed already.
    pub skipped: usize,
    /// Samples stored.
    pub stored: usize,
    /// Samples refused by validation.
    pub rejected: usize,
}

/// What one rollup run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollupReport {
    /// Whether this process ran it (false: another replica holds the lock).
    pub ran: bool,
    /// Hourly rows written or refreshed.
    pub hours: usize,
    /// Raw samples deleted (older than the raw retention).
    pub raw_deleted: usize,
    /// Hourly rows deleted (older than the hourly retention).
    pub hourly_deleted: usize,
}

struct Inner {
    pool: DbPool,
    k8s: ClusterManager,
    cfg: MonitoringConfig,
    clock: Arc<dyn Clock>,
    holder: String,
    stored: AtomicU64,
    rejected: AtomicU64,
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Claims of rounds still measuring: (job, scope, slot). Given back on shutdown, so that
    /// another process measures that interval.
    unfinished: Mutex<Vec<(String, String, i64)>>,
}

/// The monitoring service (one per process; cheap to clone).
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

/// Rows deleted per statement by the retention job.
const DELETE_BATCH: i64 = 10_000;

#[derive(QueryableByName)]
struct Instance {
    #[diesel(embed)]
    row: InstanceRow,
}

#[derive(QueryableByName)]
struct Watermark {
    #[diesel(sql_type = Nullable<Timestamptz>)]
    rolled_until: Option<DateTime<Utc>>,
}

impl Monitor {
    /// The service; nothing runs before [`Monitor::start`].
    pub fn new(
        pool: DbPool,
        k8s: ClusterManager,
        cfg: MonitoringConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Monitor {
            inner: Arc::new(Inner {
                pool,
                k8s,
                cfg,
                clock,
                holder: format!("{}-{}", std::process::id(), Uuid::new_v4()),
                stored: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                unfinished: Mutex::new(Vec::new()),
                background: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Samples stored by this process.
    pub fn stored(&self) -> u64 {
        AtomicU64::load(&self.inner.stored, Ordering::Relaxed)
    }

    /// Samples refused by this process.
    pub fn rejected(&self) -> u64 {
        AtomicU64::load(&self.inner.rejected, Ordering::Relaxed)
    }

    /// The collection interval.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.inner.cfg.metrics_interval_ms.max(100))
    }

    /// How old a sample may be when it is stored: two intervals, at least one minute.
    pub fn window(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.interval() * 2)
            .unwrap_or_default()
            .max(chrono::Duration::seconds(60))
    }

    /// Starts the collection loop and the rollup job (when monitoring is enabled).
    pub fn start(&self) {
        if !self.inner.cfg.enabled {
            return;
        }
        let me = self.clone();
        let collect = tokio::spawn(async move {
            let mut tick = tokio::time::interval(me.interval());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = me.collect().await {
                    tracing::warn!(error = %e, "metrics collection round failed");
                }
            }
        });
        let me = self.clone();
        let rollup = tokio::spawn(async move {
            let period = Duration::from_secs(me.inner.cfg.rollup_seconds.max(1));
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match me.rollup().await {
                    Ok(r) if r.ran => tracing::debug!(?r, "metrics rollup"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "metrics rollup failed"),
                }
            }
        });
        self.inner
            .background
            .lock()
            .unwrap()
            .extend([collect, rollup]);
    }

    /// Stops the background tasks; the claims of interrupted rounds stay until
    /// [`Monitor::release_claims`].
    pub fn shutdown(&self) {
        for t in self.inner.background.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// One collection round over every cluster with live instances.
    pub async fn collect(&self) -> anyhow::Result<Round> {
        let mut conn = crate::db::conn(&self.inner.pool).await?;
        let instances: Vec<Instance> = diesel::sql_query(
            "SELECT * FROM instances WHERE status IN ('running', 'pending', 'failed') \
               AND phase <> 'terminating' ORDER BY cluster_id, id",
        )
        .load(&mut conn)
        .await?;
        drop(conn);
        let mut by_cluster: HashMap<Uuid, Vec<InstanceRow>> = HashMap::new();
        for i in instances {
            by_cluster.entry(i.row.cluster_id).or_default().push(i.row);
        }
        let mut round = Round::default();
        for (cluster, rows) in by_cluster {
            let Some(slot) = self.claim("collect", &cluster.to_string()).await? else {
                round.skipped += 1;
                continue;
            };
            round.claimed += 1;
            let claim = ("collect".to_string(), cluster.to_string(), slot);
            self.inner.unfinished.lock().unwrap().push(claim.clone());
            let (stored, rejected) = self.collect_cluster(cluster, rows).await;
            self.inner
                .unfinished
                .lock()
                .unwrap()
                .retain(|c| *c != claim);
            round.stored += stored;
            round.rejected += rejected;
        }
        Ok(round)
    }

    /// Claims the current interval of `scope` for this process: its slot, or `None` when another
    /// process has claimed it.
    async fn claim(&self, job: &str, scope: &str) -> anyhow::Result<Option<i64>> {
        let interval_ms = self.interval().as_millis() as i64;
        let slot = self.inner.clock.now().timestamp_millis() / interval_ms;
        let mut conn = crate::db::conn(&self.inner.pool).await?;
        let n = diesel::sql_query(
            "INSERT INTO metrics_claims (job, scope, slot, holder) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind::<Text, _>(job)
        .bind::<Text, _>(scope)
        .bind::<Int8, _>(slot)
        .bind::<Text, _>(&self.inner.holder)
        .execute(&mut conn)
        .await?;
        Ok((n == 1).then_some(slot))
    }

    /// Gives back the claims of rounds that [`Monitor::shutdown`] interrupted, so another
    /// process measures those intervals at once instead of leaving a gap.
    pub async fn release_claims(&self) {
        let claims: Vec<_> = self.inner.unfinished.lock().unwrap().drain(..).collect();
        if claims.is_empty() {
            return;
        }
        let Ok(mut conn) = crate::db::conn(&self.inner.pool).await else {
            tracing::warn!("metric claims not released: no database connection");
            return;
        };
        for (job, scope, slot) in claims {
            let r = diesel::sql_query(
                "DELETE FROM metrics_claims WHERE job = $1 AND scope = $2 AND slot = $3 AND holder = $4",
            )
            .bind::<Text, _>(&job)
            .bind::<Text, _>(&scope)
            .bind::<Int8, _>(slot)
            .bind::<Text, _>(&self.inner.holder)
            .execute(&mut conn)
            .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, %scope, "metric claim not released");
            }
        }
    }

    async fn collect_cluster(&self, cluster: Uuid, rows: Vec<InstanceRow>) -> (usize, usize) {
        let clients = match self.inner.k8s.clients_of(cluster).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(%cluster, error = ?e, "no clients for metrics collection");
                return (0, 0);
            }
        };
        let keys: Vec<LatestMetricsOfInstance> =
            rows.iter().map(|r| LatestMetricsOfInstance(r.id)).collect();
        let reader = Reader::new(self.inner.pool.clone());
        let previous = <Reader as Loader<LatestMetricsOfInstance>>::load(&reader, &keys)
            .await
            .unwrap_or_default();
        let (mut stored, mut rejected) = (0, 0);
        for row in rows {
            let prev = previous
                .get(&LatestMetricsOfInstance(row.id))
                .and_then(|m| m.health_checks.pointer("/prometheus/counters").cloned())
                .and_then(|v| serde_json::from_value::<Counters>(v).ok());
            let Some(sample) = self.measure(&clients.api, &row, prev).await else {
                continue;
            };
            match self.store(sample).await {
                Ok(true) => stored += 1,
                Ok(false) => rejected += 1,
                Err(e) => tracing::warn!(instance = %row.id, error = %e, "storing a sample failed"),
            }
        }
        (stored, rejected)
    }

    /// Measures one instance; `None` when no source had anything to say.
    async fn measure(
        &self,
        client: &kube::Client,
        row: &InstanceRow,
        previous: Option<Counters>,
    ) -> Option<Sample> {
        let limit = Duration::from_millis(self.inner.k8s.request_timeout_ms());
        let spec: Option<InstanceSpec> = serde_json::from_value(row.configuration.clone()).ok();
        let timestamp = self.inner.clock.now();
        let mut checks = serde_json::Map::new();
        let usage = match sources::within(limit, sources::pod_usage(client, &row.namespace, row.id))
            .await
        {
            Ok(u) => u,
            Err(e) => {
                checks.insert("podMetrics".into(), json!({ "ok": false, "error": e }));
                None
            }
        };
        if let Some(u) = &usage {
            checks.insert(
                "podMetrics".into(),
                json!({ "ok": true, "pods": u.pods, "cpuBasis": u.cpu_basis }),
            );
        }
        let mut sample = Sample {
            instance_id: row.id,
            timestamp,
            cpu_usage: usage.as_ref().map(|u| u.cpu_percent),
            memory_usage: usage.as_ref().map(|u| u.memory_bytes),
            network_io: json!({}),
            request_count: None,
            response_time: None,
            error_rate: None,
            health_checks: Value::Null,
        };
        let network = spec
            .as_ref()
            .and_then(|s| s.port().map(|p| (s, p)))
            .filter(|_| row.replicas_ready > 0);
        if let Some((spec, port)) = network {
            match sources::within(
                limit,
                sources::scrape(client, &row.namespace, &row.name, port),
            )
            .await
            {
                Ok(now) => {
                    apply_counters(&mut sample, &now, previous.as_ref());
                    checks.insert("prometheus".into(), json!({ "ok": true, "counters": now }));
                }
                Err(e) => {
                    checks.insert("prometheus".into(), json!({ "ok": false, "error": e }));
                }
            }
            let check = tokio::time::timeout(
                limit,
                sources::health_check(client, &row.namespace, &row.name, spec),
            )
            .await
            .unwrap_or_else(|_| {
                Some(sources::McpCheck {
                    ok: false,
                    latency_ms: limit.as_secs_f64() * 1000.0,
                    detail: json!({ "ok": false, "error": "no answer in time" }),
                })
            });
            if let Some(c) = check {
                checks.insert("mcp".into(), c.detail);
            }
        }
        if usage.is_none() && sample.request_count.is_none() && !checks.contains_key("mcp") {
            return None;
        }
        sample.health_checks = Value::Object(checks);
        Some(sample)
    }

    /// Validates and stores a sample; `Ok(false)` when validation refused it (logged).
    pub async fn store(&self, mut sample: Sample) -> anyhow::Result<bool> {
        match sample.validate(self.inner.clock.now(), self.window()) {
            Err(reason) => {
                self.reject(&sample, &reason);
                return Ok(false);
            }
            Ok(adjusted) => {
                for a in adjusted {
                    tracing::debug!(instance = %sample.instance_id, field = a.field, raw = a.raw,
                        kept = ?a.kept, range = a.range, "monitoring sample field adjusted");
                }
            }
        }
        let mut conn = crate::db::conn(&self.inner.pool).await?;
        diesel::sql_query(
            "INSERT INTO monitoring_metrics (instance_id, \"timestamp\", cpu_usage, memory_usage, \
               network_io, request_count, response_time, error_rate, health_checks) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (instance_id, \"timestamp\") DO NOTHING",
        )
        .bind::<SqlUuid, _>(sample.instance_id)
        .bind::<Timestamptz, _>(sample.timestamp)
        .bind::<Nullable<Double>, _>(sample.cpu_usage)
        .bind::<Nullable<BigInt>, _>(sample.memory_usage)
        .bind::<diesel::sql_types::Jsonb, _>(&sample.network_io)
        .bind::<Nullable<BigInt>, _>(sample.request_count)
        .bind::<Nullable<Double>, _>(sample.response_time)
        .bind::<Nullable<Double>, _>(sample.error_rate)
        .bind::<diesel::sql_types::Jsonb, _>(&sample.health_checks)
        .execute(&mut conn)
        .await?;
        self.inner.stored.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    fn reject(&self, sample: &Sample, reason: &Rejection) {
        self.inner.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            instance = %sample.instance_id,
            timestamp = %sample.timestamp,
            reason = %reason,
            "monitoring sample rejected"
        );
    }

    /// Rolls raw samples up into hourly aggregates and applies retention (raw: `raw_days`,
    /// hourly: `hourly_days`), as of the clock's now. Safe on several replicas: one runs, the
    /// others skip, and every step is idempotent.
    pub async fn rollup(&self) -> anyhow::Result<RollupReport> {
        let now = self.inner.clock.now();
        let raw_cutoff = now - chrono::Duration::days(self.inner.cfg.raw_days);
        let hourly_cutoff = now - chrono::Duration::days(self.inner.cfg.hourly_days);
        let mut pooled = crate::db::conn(&self.inner.pool).await?;
        let conn: &mut AsyncPgConnection = &mut pooled;
        let report = conn
            .transaction::<RollupReport, anyhow::Error, _>(async move |conn| {
                {
                    if !AdvisoryLock::Rollup.try_transaction(conn).await? {
                        return Ok(RollupReport::default());
                    }
                    let mark: Watermark = diesel::sql_query(
                        "SELECT rolled_until FROM metrics_rollup_state WHERE id = 1 FOR UPDATE",
                    )
                    .get_result(conn)
                    .await?;
                    // Recompute the hours from one hour before the watermark (late samples)
                    // up to the last complete hour; never hours older than the hourly retention.
                    let from = mark
                        .rolled_until
                        .map(|t| t - chrono::Duration::hours(1))
                        .unwrap_or(hourly_cutoff)
                        .max(hourly_cutoff);
                    let hours = diesel::sql_query(
                        "INSERT INTO monitoring_metrics_hourly AS h (instance_id, bucket, samples, \
                           cpu_usage_avg, cpu_usage_max, memory_usage_avg, memory_usage_max, \
                           request_count_sum, response_time_avg, error_rate_avg, healthy_ratio) \
                         SELECT instance_id, date_trunc('hour', \"timestamp\") AS bucket, count(*), \
                           avg(cpu_usage), max(cpu_usage), avg(memory_usage), max(memory_usage), \
                           sum(request_count)::int8, \
                           sum(response_time * request_count) / NULLIF(sum(request_count) FILTER (WHERE response_time IS NOT NULL), 0), \
                           sum(error_rate * request_count) / NULLIF(sum(request_count) FILTER (WHERE error_rate IS NOT NULL), 0), \
                           avg(CASE WHEN health_checks #>> '{mcp,ok}' = 'true' THEN 1.0 \
                                    WHEN health_checks #>> '{mcp,ok}' = 'false' THEN 0.0 END) \
                         FROM monitoring_metrics \
                         WHERE \"timestamp\" >= date_trunc('hour', $1::timestamptz) \
                           AND \"timestamp\" < date_trunc('hour', $2::timestamptz) \
                         GROUP BY 1, 2 \
                         ON CONFLICT (instance_id, bucket) DO UPDATE SET \
                           samples = EXCLUDED.samples, cpu_usage_avg = EXCLUDED.cpu_usage_avg, \
                           cpu_usage_max = EXCLUDED.cpu_usage_max, \
                           memory_usage_avg = EXCLUDED.memory_usage_avg, \
                           memory_usage_max = EXCLUDED.memory_usage_max, \
                           request_count_sum = EXCLUDED.request_count_sum, \
                           response_time_avg = EXCLUDED.response_time_avg, \
                           error_rate_avg = EXCLUDED.error_rate_avg, \
                           healthy_ratio = EXCLUDED.healthy_ratio \
                         WHERE h.samples IS DISTINCT FROM EXCLUDED.samples \
                            OR h.cpu_usage_avg IS DISTINCT FROM EXCLUDED.cpu_usage_avg",
                    )
                    .bind::<Timestamptz, _>(from)
                    .bind::<Timestamptz, _>(now)
                    .execute(conn)
                    .await?;
                    diesel::sql_query(
                        "UPDATE metrics_rollup_state SET rolled_until = date_trunc('hour', $1::timestamptz), \
                           ran_at = $1 WHERE id = 1",
                    )
                    .bind::<Timestamptz, _>(now)
                    .execute(conn)
                    .await?;
                    Ok(RollupReport {
                        ran: true,
                        hours,
                        ..RollupReport::default()
                    })
                }
            })
            .await?;
        if !report.ran {
            return Ok(report);
        }
        // Retention, in batches so that no statement runs long. Raw samples go only once
        // their hour is rolled up (the hour before the cutoff is complete by then).
        let mut report = report;
        report.raw_deleted = delete_batches(
            conn,
            "DELETE FROM monitoring_metrics WHERE id IN (SELECT id FROM monitoring_metrics \
               WHERE \"timestamp\" < $1 LIMIT $2)",
            raw_cutoff,
        )
        .await?;
        report.hourly_deleted = delete_batches(
            conn,
            "DELETE FROM monitoring_metrics_hourly WHERE (instance_id, bucket) IN ( \
               SELECT instance_id, bucket FROM monitoring_metrics_hourly WHERE bucket < $1 LIMIT $2)",
            hourly_cutoff,
        )
        .await?;
        // Claims only matter for the interval they name.
        diesel::sql_query("DELETE FROM metrics_claims WHERE claimed_at < $1")
            .bind::<Timestamptz, _>(Utc::now() - chrono::Duration::hours(1))
            .execute(conn)
            .await?;
        Ok(report)
    }
}

async fn delete_batches(
    conn: &mut AsyncPgConnection,
    sql: &'static str,
    cutoff: DateTime<Utc>,
) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let n = diesel::sql_query(sql)
            .bind::<Timestamptz, _>(cutoff)
            .bind::<BigInt, _>(DELETE_BATCH)
            .execute(conn)
            .await?;
        total += n;
        if (n as i64) < DELETE_BATCH {
            return Ok(total);
        }
    }
}

/// Request count, response time, error rate and network bytes from two readings of the
/// counters (the first reading alone counts since the server started; a counter that went down
/// means the server restarted, and counts from zero).
pub fn apply_counters(sample: &mut Sample, now: &Counters, previous: Option<&Counters>) {
    let delta = |cur: Option<f64>, prev: Option<f64>| -> Option<f64> {
        let cur = cur?;
        Some(match prev {
            Some(p) if p <= cur => cur - p,
            _ => cur,
        })
    };
    let p = previous.cloned().unwrap_or_default();
    let requests = delta(now.requests, p.requests);
    let errors = delta(now.errors, p.errors);
    let dsum = delta(now.duration_sum, p.duration_sum);
    let dcount = delta(now.duration_count, p.duration_count);
    sample.request_count = requests.map(|r| r.round() as i64);
    sample.error_rate = match (errors, requests) {
        (Some(e), Some(r)) if r > 0.0 => Some(e / r * 100.0),
        (_, Some(_)) => Some(0.0),
        _ => None,
    };
    sample.response_time = match (dsum, dcount) {
        (Some(s), Some(c)) if c > 0.0 => Some(s / c * 1000.0),
        _ => None,
    };
    let rx = delta(now.receive_bytes, p.receive_bytes);
    let tx = delta(now.transmit_bytes, p.transmit_bytes);
    if rx.is_some() || tx.is_some() {
        sample.network_io = json!({
            "receiveBytes": rx.map(|v| v.round() as i64),
            "transmitBytes": tx.map(|v| v.round() as i64),
        });
    }
}
