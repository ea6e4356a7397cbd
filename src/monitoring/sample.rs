//! A monitoring sample, its validation against the data model, and Kubernetes quantities.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

/// One measurement of an instance, before it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub instance_id: Uuid,
    pub timestamp: DateTime<Utc>,
    /// Percentage (0 to 100) of the pods' CPU limits (or requests).
    pub cpu_usage: Option<f64>,
    /// Bytes, summed over the instance's pods.
    pub memory_usage: Option<i64>,
    /// `{ "receiveBytes", "transmitBytes" }` since the previous sample.
    pub network_io: Value,
    /// Requests since the previous sample (since the server started, for the first one).
    pub request_count: Option<i64>,
    /// Average response time in milliseconds over those requests.
    pub response_time: Option<f64>,
    /// Percentage (0 to 100) of those requests that failed.
    pub error_rate: Option<f64>,
    /// Results of the MCP health check and of the scrape.
    pub health_checks: Value,
}

/// Why a sample was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    /// The sample is older than the collection window or in the future.
    #[error(
        "timestamp {timestamp} is not within the collection window ({window_secs} s before {now})"
    )]
    NotRecent {
        timestamp: DateTime<Utc>,
        now: DateTime<Utc>,
        window_secs: i64,
    },
    /// Nothing was measured.
    #[error("the sample holds no measurement")]
    Empty,
}

/// Longest plausible average response time: one hour, in milliseconds.
pub const MAX_RESPONSE_TIME_MS: f64 = 3_600_000.0;
/// Largest plausible memory use of one instance: 16 TiB.
pub const MAX_MEMORY_BYTES: i64 = 16 << 40;
/// How far in the future a sample's timestamp may be (clock skew between hosts).
pub const FUTURE_SKEW_SECS: i64 = 5;

/// A field of a sample that was out of the data model's range: what was measured, and what the
/// sample keeps instead (a clamped percentage, or nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct Adjustment {
    pub field: &'static str,
    pub raw: f64,
    pub kept: Option<f64>,
    pub range: &'static str,
}

/// A percentage: values above 100 (a pod above its CPU limit) are clamped to 100; negative,
/// NaN or infinite values cannot be a measurement and are dropped.
fn percent(field: &'static str, v: &mut Option<f64>, out: &mut Vec<Adjustment>) {
    let Some(x) = *v else { return };
    let kept = if !x.is_finite() || x < 0.0 {
        None
    } else if x > 100.0 {
        Some(100.0)
    } else {
        return;
    };
    *v = kept;
    out.push(Adjustment {
        field,
        raw: x,
        kept,
        range: "0..=100",
    });
}

/// An amount that must lie in `range`; outside it the field is dropped (`null`).
fn amount<T: Copy + PartialOrd + Into<f64>>(
    field: &'static str,
    v: &mut Option<T>,
    valid: impl Fn(T) -> bool,
    range: &'static str,
    out: &mut Vec<Adjustment>,
) {
    if let Some(x) = *v
        && !valid(x)
    {
        *v = None;
        out.push(Adjustment {
            field,
            raw: x.into(),
            kept: None,
            range,
        });
    }
}

impl Sample {
    /// Checks the data model's rules. A sample is refused whole only when it is not recent
    /// (older than `window` before `now`, or in the future) or holds no measurement. A field
    /// outside its range does not take the rest of the sample with it: percentages above 100
    /// are clamped, impossible values become `null`, and each change is returned (and recorded
    /// in `healthChecks.adjusted` with the raw value by [`Sample::record_adjustments`]).
    pub fn validate(
        &mut self,
        now: DateTime<Utc>,
        window: chrono::Duration,
    ) -> Result<Vec<Adjustment>, Rejection> {
        if self.timestamp < now - window
            || self.timestamp > now + chrono::Duration::seconds(FUTURE_SKEW_SECS)
        {
            return Err(Rejection::NotRecent {
                timestamp: self.timestamp,
                now,
                window_secs: window.num_seconds(),
            });
        }
        let mut out = Vec::new();
        percent("cpuUsage", &mut self.cpu_usage, &mut out);
        percent("errorRate", &mut self.error_rate, &mut out);
        let mut memory = self.memory_usage.map(|m| m as f64);
        amount(
            "memoryUsage",
            &mut memory,
            |m| (0.0..=MAX_MEMORY_BYTES as f64).contains(&m),
            "0..=16 TiB",
            &mut out,
        );
        self.memory_usage = memory.map(|m| m as i64);
        let mut requests = self.request_count.map(|n| n as f64);
        amount(
            "requestCount",
            &mut requests,
            |n| n >= 0.0,
            ">= 0",
            &mut out,
        );
        self.request_count = requests.map(|n| n as i64);
        amount(
            "responseTime",
            &mut self.response_time,
            |t| t.is_finite() && (0.0..=MAX_RESPONSE_TIME_MS).contains(&t),
            "0..=3600000 ms",
            &mut out,
        );
        if self.cpu_usage.is_none()
            && self.memory_usage.is_none()
            && self.request_count.is_none()
            && self.health_checks.get("mcp").is_none()
        {
            return Err(Rejection::Empty);
        }
        self.record_adjustments(&out);
        Ok(out)
    }

    /// Keeps the raw values of adjusted fields in `healthChecks.adjusted`, so that a clamped
    /// or dropped measurement is still visible.
    fn record_adjustments(&mut self, adjusted: &[Adjustment]) {
        if adjusted.is_empty() {
            return;
        }
        if !self.health_checks.is_object() {
            self.health_checks = Value::Object(Default::default());
        }
        let entries: serde_json::Map<String, Value> = adjusted
            .iter()
            .map(|a| {
                let raw = serde_json::Number::from_f64(a.raw)
                    .map(Value::Number)
                    .unwrap_or_else(|| Value::String(a.raw.to_string()));
                (
                    a.field.to_string(),
                    serde_json::json!({ "raw": raw, "kept": a.kept, "range": a.range }),
                )
            })
            .collect();
        self.health_checks["adjusted"] = Value::Object(entries);
    }
}

/// CPU cores of a Kubernetes quantity (`250m`, `1`, `0.5`, `12345n`, `3u`).
pub fn cpu_cores(q: &str) -> Option<f64> {
    let q = q.trim();
    let (num, scale) = match q.char_indices().last()? {
        (i, 'n') => (&q[..i], 1e-9),
        (i, 'u') => (&q[..i], 1e-6),
        (i, 'm') => (&q[..i], 1e-3),
        (i, 'k') => (&q[..i], 1e3),
        _ => (q, 1.0),
    };
    let v: f64 = num.parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v * scale)
}

/// Bytes of a Kubernetes memory quantity (`128Mi`, `1Gi`, `1000`, `1k`, `1M`, `1e3`).
pub fn memory_bytes(q: &str) -> Option<f64> {
    let q = q.trim();
    const SUFFIXES: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
        ("m", 1e-3),
    ];
    let (num, scale) = SUFFIXES
        .iter()
        .find_map(|(s, f)| q.strip_suffix(s).map(|n| (n, *f)))
        .unwrap_or((q, 1.0));
    let v: f64 = num.parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v * scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(now: DateTime<Utc>) -> Sample {
        Sample {
            instance_id: Uuid::nil(),
            timestamp: now,
            cpu_usage: Some(12.5),
            memory_usage: Some(1 << 20),
            network_io: json!({}),
            request_count: Some(3),
            response_time: Some(4.0),
            error_rate: Some(0.0),
            health_checks: json!({}),
        }
    }

    #[test]
    fn out_of_range_fields_are_clamped_or_dropped_and_the_rest_is_kept() {
        let now = Utc::now();
        let w = chrono::Duration::seconds(60);
        assert_eq!(sample(now).validate(now, w), Ok(vec![]));
        // A pod above its CPU limit: clamped to 100, raw value kept, memory kept.
        let mut busy = Sample {
            cpu_usage: Some(140.0),
            ..sample(now)
        };
        let adjusted = busy.validate(now, w).unwrap();
        assert_eq!(adjusted.len(), 1);
        assert_eq!(busy.cpu_usage, Some(100.0));
        assert_eq!(busy.memory_usage, Some(1 << 20));
        assert_eq!(busy.health_checks["adjusted"]["cpuUsage"]["raw"], 140.0);
        // Impossible values become null; the rest of the sample stays.
        let mut bad = Sample {
            error_rate: Some(-1.0),
            response_time: Some(f64::NAN),
            memory_usage: Some(-5),
            ..sample(now)
        };
        let adjusted = bad.validate(now, w).unwrap();
        let fields: Vec<_> = adjusted.iter().map(|a| a.field).collect();
        assert_eq!(fields, ["errorRate", "memoryUsage", "responseTime"]);
        assert_eq!(
            (bad.error_rate, bad.response_time, bad.memory_usage),
            (None, None, None)
        );
        assert_eq!(bad.cpu_usage, Some(12.5));
        assert_eq!(bad.request_count, Some(3));
        // Only a sample with nothing measurable left is refused.
        let mut empty = Sample {
            cpu_usage: Some(f64::NAN),
            memory_usage: None,
            request_count: Some(-1),
            ..sample(now)
        };
        assert_eq!(empty.validate(now, w), Err(Rejection::Empty));
        let mut old = Sample {
            timestamp: now - chrono::Duration::seconds(61),
            ..sample(now)
        };
        assert!(matches!(
            old.validate(now, w),
            Err(Rejection::NotRecent { .. })
        ));
        let mut future = Sample {
            timestamp: now + chrono::Duration::seconds(60),
            ..sample(now)
        };
        assert!(future.validate(now, w).is_err());
    }

    #[test]
    fn quantities_parse() {
        assert_eq!(cpu_cores("250m"), Some(0.25));
        assert_eq!(cpu_cores("2"), Some(2.0));
        assert!((cpu_cores("12345678n").unwrap() - 0.012345678).abs() < 1e-12);
        assert_eq!(cpu_cores("abc"), None);
        assert_eq!(memory_bytes("128Mi"), Some(134217728.0));
        assert_eq!(memory_bytes("1k"), Some(1000.0));
        assert_eq!(memory_bytes("2048"), Some(2048.0));
        assert_eq!(memory_bytes("-1"), None);
    }
}
