//! Field values that need nothing but their row, converted to values the way async-graphql's
//! `OutputType::resolve` converts the resolvers' results.

use async_graphql::{ID, ScalarType, Value};
use chrono::{DateTime, Utc};
use dataloaders::Width;
use dataloaders::enums::*;

use super::MetricsResolution;

/// A field of `T` answered from the object alone: its name in the schema, the width of row it
/// needs (`Narrow` when it reads none of the row's wide columns, see `dataloaders::width`), and
/// how to read it.
pub type Leaf<T> = (&'static str, Width, fn(&T) -> Value);

/// A field's value as the executor answers it: `read` is what its resolver returns.
pub fn leaf<T: ToValue>(read: T) -> Value {
    read.to_value()
}

/// A resolver's output as the value async-graphql's `OutputType::resolve` makes of it.
pub trait ToValue {
    /// The value.
    fn to_value(&self) -> Value;
}

impl ToValue for &str {
    fn to_value(&self) -> Value {
        Value::String((*self).to_string())
    }
}

impl ToValue for &[String] {
    fn to_value(&self) -> Value {
        Value::List(self.iter().map(|s| Value::String(s.clone())).collect())
    }
}

/// A `JSON` field (as `Json<Value>` resolves).
impl ToValue for &serde_json::Value {
    fn to_value(&self) -> Value {
        async_graphql::to_value(self).ok().unwrap_or_default()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

macro_rules! scalar_values {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                ScalarType::to_value(self)
            }
        }
    )*};
}
scalar_values!(ID, i32, i64, f64, bool, DateTime<Utc>);

macro_rules! enum_values {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                async_graphql::resolver_utils::enum_value(*self)
            }
        }
    )*};
}
enum_values!(
    RegistryStatus,
    RegistryFormat,
    Transport,
    ServerTier,
    ServerStatus,
    InstanceStatus,
    InstancePhase,
    HealthStatus,
    MetricsResolution
);
