//! How much of a row a read fetches.
//!
//! Most list views ask for names, states and times, not for descriptions, tool lists or JSON
//! documents. Those wide columns are what costs most to send (PostgreSQL turns every `jsonb` into
//! text to send it) and to decode (the gateway parses it back), so a read that knows its fields
//! need none of them asks for a [`Width::Narrow`] row: the same row type, with `NULL` selected
//! for each wide column (nothing to send) and read as the field's empty value ([`OrDefault`]).
//! Only a caller that knows which fields it will read may ask for one (the compiled read path,
//! which plans its fields), and narrow rows are never cached.

use diesel::Column;
use diesel::deserialize::{self, FromSql};
use diesel::pg::{Pg, PgValue};

use crate::models::{DeploymentLogRow, DeploymentRow, InstanceRow, MetricsRow, ServerRow};
use crate::schema::{instances, monitoring_metrics, servers};

/// Which of a row's columns a read fetches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Width {
    /// The narrow columns; each wide column holds its stand-in (see [`Columns`]).
    Narrow,
    /// Every column.
    #[default]
    Whole,
}

/// The columns of a row type, for reads of either [`Width`].
pub trait Columns {
    /// The columns a narrow read fetches as they are.
    const NARROW: &'static [&'static str];
    /// The other columns, each with the `NULL` of its type that a narrow read selects instead
    /// (the row's field reads it as `None`, or as its empty value through [`OrDefault`]).
    const WIDE: &'static [(&'static str, &'static str)];

    /// The select list of a read of `width`, for the row aliased `alias` in the statement.
    fn select_list(alias: &str, width: Width) -> String {
        if width == Width::Whole || Self::WIDE.is_empty() {
            return format!("{alias}.*");
        }
        let kept = Self::NARROW.iter().map(|c| format!("{alias}.\"{c}\""));
        let stand_ins = Self::WIDE.iter().map(|(c, v)| format!("{v} AS \"{c}\""));
        kept.chain(stand_ins).collect::<Vec<_>>().join(", ")
    }
}

impl Columns for ServerRow {
    const NARROW: &'static [&'static str] = &[
        servers::id::NAME,
        servers::registry_id::NAME,
        servers::name::NAME,
        servers::transport::NAME,
        servers::tier::NAME,
        servers::status::NAME,
        servers::pull_count::NAME,
        servers::stars::NAME,
        servers::last_updated::NAME,
        servers::removed_upstream_at::NAME,
        servers::created_at::NAME,
        servers::updated_at::NAME,
        servers::archived_at::NAME,
    ];
    const WIDE: &'static [(&'static str, &'static str)] = &[
        (servers::original_name::NAME, "NULL::text"),
        (servers::description::NAME, "NULL::text"),
        (servers::version::NAME, "NULL::text"),
        (servers::image::NAME, "NULL::text"),
        (servers::url::NAME, "NULL::text"),
        (servers::category::NAME, "NULL::text[]"),
        (servers::capabilities::NAME, "NULL::text[]"),
        (servers::repository_url::NAME, "NULL::text"),
        (servers::network_permissions::NAME, "NULL::jsonb"),
        (servers::deployment_requirements::NAME, "NULL::jsonb"),
        (servers::sync_hash::NAME, "NULL::text"),
    ];
}

impl Columns for InstanceRow {
    const NARROW: &'static [&'static str] = &[
        instances::id::NAME,
        instances::server_id::NAME,
        instances::cluster_id::NAME,
        instances::name::NAME,
        instances::namespace::NAME,
        instances::status::NAME,
        instances::phase::NAME,
        instances::replicas_desired::NAME,
        instances::replicas_current::NAME,
        instances::replicas_ready::NAME,
        instances::deployed_at::NAME,
        instances::health_status::NAME,
        instances::created_at::NAME,
        instances::updated_at::NAME,
    ];
    const WIDE: &'static [(&'static str, &'static str)] = &[
        (instances::configuration::NAME, "NULL::jsonb"),
        (instances::health_reason::NAME, "NULL::text"),
        (instances::logs::NAME, "NULL::jsonb"),
        (instances::events::NAME, "NULL::jsonb"),
        (instances::last_warning::NAME, "NULL::jsonb"),
        (instances::endpoint::NAME, "NULL::text"),
    ];
}

impl Columns for MetricsRow {
    const NARROW: &'static [&'static str] = &[
        monitoring_metrics::id::NAME,
        monitoring_metrics::instance_id::NAME,
        monitoring_metrics::timestamp::NAME,
        monitoring_metrics::cpu_usage::NAME,
        monitoring_metrics::memory_usage::NAME,
        monitoring_metrics::request_count::NAME,
        monitoring_metrics::response_time::NAME,
        monitoring_metrics::error_rate::NAME,
    ];
    const WIDE: &'static [(&'static str, &'static str)] = &[
        (monitoring_metrics::network_io::NAME, "NULL::jsonb"),
        (monitoring_metrics::health_checks::NAME, "NULL::jsonb"),
    ];
}

/// A row field of a `NOT NULL` column that a narrow read selects as `NULL`: read as the type's
/// empty value then (the column itself never holds `NULL`).
#[derive(Debug, diesel::deserialize::FromSqlRow)]
pub struct OrDefault<T>(T);

impl<ST, T: FromSql<ST, Pg> + Default> FromSql<ST, Pg> for OrDefault<T> {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        T::from_sql(bytes).map(OrDefault)
    }

    fn from_nullable_sql(bytes: Option<PgValue<'_>>) -> deserialize::Result<Self> {
        bytes.map_or_else(|| Ok(OrDefault(T::default())), Self::from_sql)
    }
}

macro_rules! or_default_into {
    ($($t:ty),*) => {$(
        impl From<OrDefault<$t>> for $t {
            fn from(v: OrDefault<$t>) -> Self {
                v.0
            }
        }
    )*};
}
or_default_into!(String, Vec<String>, serde_json::Value);

/// Operations and their log lines are always read whole.
impl Columns for DeploymentRow {
    const NARROW: &'static [&'static str] = &[];
    const WIDE: &'static [(&'static str, &'static str)] = &[];
}

/// Operations and their log lines are always read whole.
impl Columns for DeploymentLogRow {
    const NARROW: &'static [&'static str] = &[];
    const WIDE: &'static [(&'static str, &'static str)] = &[];
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::prelude::*;

    /// The columns of a `SELECT` diesel wrote, in its order.
    fn selected(sql: String) -> Vec<String> {
        let list = sql.split(" FROM ").next().unwrap_or_default();
        list.trim_start_matches("SELECT ")
            .split(", ")
            .map(|c| {
                c.rsplit('.')
                    .next()
                    .unwrap_or(c)
                    .trim_matches('"')
                    .to_string()
            })
            .collect()
    }

    macro_rules! select_of {
        ($table:ident, $row:ty) => {
            selected(
                diesel::debug_query::<Pg, _>(&$table::table.select(<$row>::as_select()))
                    .to_string(),
            )
        };
    }

    fn covers<R: Columns>(all: Vec<String>) {
        let mut ours: Vec<&str> = R::NARROW.to_vec();
        ours.extend(R::WIDE.iter().map(|(c, _)| *c));
        let mut all: Vec<&str> = all.iter().map(String::as_str).collect();
        ours.sort_unstable();
        all.sort_unstable();
        assert_eq!(ours, all, "every column once, narrow or wide");
    }

    #[test]
    fn narrow_and_wide_columns_are_every_column_once() {
        covers::<ServerRow>(select_of!(servers, ServerRow));
        covers::<InstanceRow>(select_of!(instances, InstanceRow));
        covers::<MetricsRow>(select_of!(monitoring_metrics, MetricsRow));
    }

    #[test]
    fn whole_reads_select_the_row_and_narrow_ones_stand_ins() {
        assert_eq!(ServerRow::select_list("s", Width::Whole), "s.*");
        assert_eq!(DeploymentRow::select_list("s", Width::Narrow), "s.*");
        let narrow = MetricsRow::select_list("m", Width::Narrow);
        assert!(
            narrow.starts_with(r#"m."id", m."instance_id", m."timestamp""#),
            "{narrow}"
        );
        assert!(
            narrow.ends_with(r#"NULL::jsonb AS "health_checks""#),
            "{narrow}"
        );
        assert!(!narrow.contains("m.\"network_io"), "{narrow}");
    }
}
