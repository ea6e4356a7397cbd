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
    /// A value is outside the range the data model allows.
    #[error("{field} = {value} is outside {range}")]
    OutOfRange {
        field: &'static str,
        value: String,
        range: &'static str,
    },
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

fn percent(field: &'static str, v: Option<f64>) -> Result<(), Rejection> {
    match v {
        Some(x) if !x.is_finite() || !(0.0..=100.0).contains(&x) => Err(Rejection::OutOfRange {
            field,
            value: x.to_string(),
            range: "0..=100",
        }),
        _ => Ok(()),
    }
}

impl Sample {
    /// Checks the data model's rules: percentages between 0 and 100, non-negative and plausible
    /// amounts, and a timestamp within `window` before `now` (and not in the future).
    pub fn validate(&self, now: DateTime<Utc>, window: chrono::Duration) -> Result<(), Rejection> {
        if self.timestamp < now - window
            || self.timestamp > now + chrono::Duration::seconds(FUTURE_SKEW_SECS)
        {
            return Err(Rejection::NotRecent {
                timestamp: self.timestamp,
                now,
                window_secs: window.num_seconds(),
            });
        }
        if self.cpu_usage.is_none()
            && self.memory_usage.is_none()
            && self.request_count.is_none()
            && self.health_checks.get("mcp").is_none()
        {
            return Err(Rejection::Empty);
        }
        percent("cpuUsage", self.cpu_usage)?;
        percent("errorRate", self.error_rate)?;
        if let Some(m) = self.memory_usage
            && !(0..=MAX_MEMORY_BYTES).contains(&m)
        {
            return Err(Rejection::OutOfRange {
                field: "memoryUsage",
                value: m.to_string(),
                range: "0..=16 TiB",
            });
        }
        if let Some(n) = self.request_count
            && n < 0
        {
            return Err(Rejection::OutOfRange {
                field: "requestCount",
                value: n.to_string(),
                range: ">= 0",
            });
        }
        if let Some(t) = self.response_time
            && (!t.is_finite() || !(0.0..=MAX_RESPONSE_TIME_MS).contains(&t))
        {
            return Err(Rejection::OutOfRange {
                field: "responseTime",
                value: t.to_string(),
                range: "0..=3600000 ms",
            });
        }
        Ok(())
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
    fn samples_outside_the_data_model_are_rejected_with_a_reason() {
        let now = Utc::now();
        let w = chrono::Duration::seconds(60);
        assert_eq!(sample(now).validate(now, w), Ok(()));
        let bad = Sample {
            cpu_usage: Some(140.0),
            ..sample(now)
        };
        let e = bad.validate(now, w).unwrap_err();
        assert!(e.to_string().contains("cpuUsage = 140"), "{e}");
        let bad = Sample {
            error_rate: Some(-1.0),
            ..sample(now)
        };
        assert!(matches!(
            bad.validate(now, w),
            Err(Rejection::OutOfRange {
                field: "errorRate",
                ..
            })
        ));
        let bad = Sample {
            cpu_usage: Some(f64::NAN),
            ..sample(now)
        };
        assert!(bad.validate(now, w).is_err());
        let old = Sample {
            timestamp: now - chrono::Duration::seconds(61),
            ..sample(now)
        };
        assert!(matches!(
            old.validate(now, w),
            Err(Rejection::NotRecent { .. })
        ));
        let future = Sample {
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
