//! Monitoring samples and hourly aggregates of an instance.

use super::*;

/// Which samples a metrics query reads.
#[derive(async_graphql::Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsResolution {
    /// The detailed samples, one per collection interval (kept 7 days).
    Raw,
    /// Hourly aggregates (kept 90 days): averages, maxima and sums over the hour's samples.
    Hourly,
}

/// One monitoring sample of an instance, or the aggregate of one hour of samples.
pub struct MonitoringMetrics {
    row: MetricsRow,
    hourly: Option<HourlyMetricsRow>,
}

impl MonitoringMetrics {
    /// A detailed sample.
    pub fn raw(row: MetricsRow) -> Self {
        MonitoringMetrics { row, hourly: None }
    }

    /// An hourly aggregate, read through the sample fields (averages; the request count is the
    /// hour's sum).
    pub fn hourly(h: HourlyMetricsRow) -> Self {
        let row = MetricsRow {
            id: 0,
            instance_id: h.instance_id,
            timestamp: h.bucket,
            cpu_usage: h.cpu_usage_avg,
            memory_usage: h.memory_usage_avg.map(|m| m.round() as i64),
            network_io: serde_json::json!({}),
            request_count: h.request_count_sum,
            response_time: h.response_time_avg,
            error_rate: h.error_rate_avg,
            health_checks: serde_json::json!({ "healthyRatio": h.healthy_ratio }),
        };
        MonitoringMetrics {
            row,
            hourly: Some(h),
        }
    }
}

impl MonitoringMetrics {
    /// The fields answered from the row alone (the compiled read path, `crate::graphql::compiled`).
    pub(crate) const LEAVES: &'static [Leaf<MonitoringMetrics>] = &[
        ("instanceId", Narrow, |m| {
            leaf(ids::encode(Kind::Instance, m.row.instance_id))
        }),
        ("timestamp", Narrow, |m| leaf(m.row.timestamp)),
        ("cpuUsage", Narrow, |m| leaf(m.row.cpu_usage)),
        ("memoryUsage", Narrow, |m| {
            leaf(m.row.memory_usage.map(|b| b as f64))
        }),
        ("networkIO", Whole, |m| leaf(&m.row.network_io)),
        ("requestCount", Narrow, |m| leaf(m.row.request_count)),
        ("responseTime", Narrow, |m| leaf(m.row.response_time)),
        ("errorRate", Narrow, |m| leaf(m.row.error_rate)),
        ("healthChecks", Whole, |m| leaf(&m.row.health_checks)),
    ];
}

/// One monitoring sample of an instance, or the aggregate of one hour of samples.
#[Object]
impl MonitoringMetrics {
    /// The instance measured.
    async fn instance_id(&self) -> ID {
        ids::encode(Kind::Instance, self.row.instance_id)
    }
    /// The instance measured.
    async fn instance(&self, ctx: &Context<'_>) -> AppResult<Instance> {
        Instance::load(ctx, self.row.instance_id)
            .await?
            .ok_or(AppError::NotFound("instance"))
    }
    /// When the sample was taken.
    async fn timestamp(&self) -> DateTime<Utc> {
        self.row.timestamp
    }
    /// CPU use as a percentage (0 to 100) of the pods' requests or limits.
    async fn cpu_usage(&self) -> Option<f64> {
        self.row.cpu_usage
    }
    /// Memory use in bytes.
    async fn memory_usage(&self) -> Option<f64> {
        self.row.memory_usage.map(|b| b as f64)
    }
    /// Network traffic: ingress and egress bytes.
    #[graphql(name = "networkIO")]
    async fn network_io(&self) -> Json<Value> {
        Json(self.row.network_io.clone())
    }
    /// Requests served since the previous sample.
    async fn request_count(&self) -> Option<i64> {
        self.row.request_count
    }
    /// Average response time in milliseconds.
    async fn response_time(&self) -> Option<f64> {
        self.row.response_time
    }
    /// Percentage (0 to 100) of requests that failed.
    async fn error_rate(&self) -> Option<f64> {
        self.row.error_rate
    }
    /// Results of the health checks.
    async fn health_checks(&self) -> Json<Value> {
        Json(self.row.health_checks.clone())
    }
    /// `RAW` for a detailed sample, `HOURLY` for an hourly aggregate.
    async fn resolution(&self) -> MetricsResolution {
        if self.hourly.is_some() {
            MetricsResolution::Hourly
        } else {
            MetricsResolution::Raw
        }
    }
    /// Samples aggregated (1 for a detailed sample).
    async fn samples(&self) -> i32 {
        self.hourly.as_ref().map_or(1, |h| h.samples)
    }
    /// Highest CPU use of the hour, as a percentage (hourly aggregates; the sample's value
    /// otherwise).
    async fn cpu_usage_max(&self) -> Option<f64> {
        match &self.hourly {
            Some(h) => h.cpu_usage_max,
            None => self.row.cpu_usage,
        }
    }
    /// Highest memory use of the hour, in bytes (hourly aggregates; the sample's value
    /// otherwise).
    async fn memory_usage_max(&self) -> Option<f64> {
        match &self.hourly {
            Some(h) => h.memory_usage_max.map(|b| b as f64),
            None => self.row.memory_usage.map(|b| b as f64),
        }
    }
    /// Share (0 to 1) of the samples whose MCP health check passed; null when none was checked.
    async fn healthy_ratio(&self) -> Option<f64> {
        match &self.hourly {
            Some(h) => h.healthy_ratio,
            None => self
                .row
                .health_checks
                .get("mcp")
                .and_then(|m| m.get("ok"))
                .and_then(Value::as_bool)
                .map(|ok| if ok { 1.0 } else { 0.0 }),
        }
    }
}

/// `Instance.resourceUsage` from a monitoring sample.
pub(super) fn resource_usage(m: &MetricsRow) -> Value {
    let basis = m.health_checks.pointer("/podMetrics/cpuBasis").cloned();
    serde_json::json!({
        "cpuPercent": m.cpu_usage,
        "cpuBasis": basis,
        "memoryBytes": m.memory_usage,
        "storageBytes": m.health_checks.pointer("/podMetrics/storageBytes").cloned(),
        "measuredAt": m.timestamp,
    })
}
