//! Loader keys and their batched implementations on [`Reader`].
//!
//! Every `Loader` impl issues exactly one SQL statement per batch:
//! - by id: `WHERE id = ANY($1)`;
//! - children pages: `unnest($parents, $cursors, $limits) WITH ORDINALITY` joined `LATERAL` to an
//!   index-ordered, limited subquery, so that many parents' pages come back together;
//! - counts: `GROUP BY parent` over `= ANY($1)`, one key type per kind of count;
//! - latest sample, and deploy operation, per instance: `unnest($1)` joined `LATERAL` to a
//!   `LIMIT 1` index scan, so that the cost does not grow with an instance's history.
//!
//! The request's `DataLoader` must not split batches: see [`crate::batch`] and
//! [`MAX_BATCH_SIZE`].

use std::collections::HashMap;
use std::hash::Hash;

use async_graphql::dataloader::{DataLoader, Loader};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Int8, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::models::*;
use crate::prepared::Prepared;
use crate::schema::*;
use crate::width::{Columns, Width};
use crate::{ReadError, Reader};

/// The largest batch one statement answers. async-graphql's default (1000) would split a level
/// of more than 1000 keys into several statements; the query complexity limit bounds the number of
/// keys of a level well below this.
pub const MAX_BATCH_SIZE: usize = 100_000;

/// A page request inside a nested list: how many rows, after which cursor.
///
/// `limit` is the number of rows to fetch (callers ask for one more than they show, to learn
/// whether a next page exists). `after` is the sort key of the last row already seen.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChildPage {
    pub limit: i64,
    pub after: Option<SortKey>,
}

/// The position of a row in a child list: its sort value and id (ties broken by id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SortKey {
    pub value: String,
    pub id: Uuid,
}

macro_rules! by_id_loader {
    ($key:ident, $row:ty, $table:ident) => {
        #[doc = concat!("Loads `", stringify!($row), "` by primary key.")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $key(pub Uuid);

        impl Loader<$key> for Reader {
            type Value = $row;
            type Error = ReadError;

            async fn load(&self, keys: &[$key]) -> Result<HashMap<$key, $row>, ReadError> {
                let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
                let mut conn = self.conn().await?;
                let rows: Vec<$row> = $table::table
                    .filter($table::id.eq_any(ids))
                    .select(<$row>::as_select())
                    .load(&mut conn)
                    .await?;
                Ok(rows.into_iter().map(|r| ($key(r.id), r)).collect())
            }
        }
    };
}

by_id_loader!(RegistryKey, RegistryRow, registries);
by_id_loader!(ServerKey, ServerRow, servers);
by_id_loader!(ClusterKey, ClusterRow, clusters);

/// Loads `InstanceRow` by primary key; instances outside the reader's namespaces are absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InstanceKey(pub Uuid);

impl Loader<InstanceKey> for Reader {
    type Value = InstanceRow;
    type Error = ReadError;

    async fn load(
        &self,
        keys: &[InstanceKey],
    ) -> Result<HashMap<InstanceKey, InstanceRow>, ReadError> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let mut conn = self.conn().await?;
        let mut q = instances::table
            .filter(instances::id.eq_any(ids))
            .into_boxed();
        if let Some(ns) = self.namespaces() {
            q = q.filter(instances::namespace.eq_any(ns));
        }
        let rows: Vec<InstanceRow> = q.select(InstanceRow::as_select()).load(&mut conn).await?;
        Ok(rows.into_iter().map(|r| (InstanceKey(r.id), r)).collect())
    }
}

/// Loads `DeploymentRow` by primary key; operations on instances outside the reader's
/// namespaces are absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeploymentKey(pub Uuid);

impl Loader<DeploymentKey> for Reader {
    type Value = DeploymentRow;
    type Error = ReadError;

    async fn load(
        &self,
        keys: &[DeploymentKey],
    ) -> Result<HashMap<DeploymentKey, DeploymentRow>, ReadError> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let mut conn = self.conn().await?;
        let mut q = deployments::table
            .filter(deployments::id.eq_any(ids))
            .into_boxed();
        if let Some(ns) = self.namespaces() {
            q = q.filter(
                deployments::instance_id.eq_any(
                    instances::table
                        .filter(instances::namespace.eq_any(ns))
                        .select(instances::id),
                ),
            );
        }
        let rows: Vec<DeploymentRow> = q.select(DeploymentRow::as_select()).load(&mut conn).await?;
        Ok(rows.into_iter().map(|r| (DeploymentKey(r.id), r)).collect())
    }
}

macro_rules! ranked_row {
    ($name:ident, $row:ty) => {
        /// A row of a children page with the position of the key that asked for it.
        #[doc(hidden)]
        #[derive(QueryableByName)]
        pub struct $name {
            #[diesel(sql_type = BigInt)]
            ord: i64,
            #[diesel(embed)]
            row: $row,
        }

        impl From<$name> for (i64, $row) {
            fn from(r: $name) -> Self {
                (r.ord, r.row)
            }
        }
    };
}
ranked_row!(RankedServer, ServerRow);
ranked_row!(RankedInstance, InstanceRow);
ranked_row!(RankedDeployment, DeploymentRow);
ranked_row!(RankedMetrics, MetricsRow);
ranked_row!(RankedHourly, HourlyMetricsRow);
ranked_row!(RankedLogLine, DeploymentLogRow);

/// Parent ids, cursor values, cursor ids and limits, as parallel arrays.
type PageArrays = (Vec<Uuid>, Vec<Option<String>>, Vec<Option<Uuid>>, Vec<i64>);

/// Splits keys into the parallel arrays the lateral statements take.
fn page_arrays<K>(keys: &[K], parts: impl Fn(&K) -> (Uuid, &ChildPage)) -> PageArrays {
    let mut parents = Vec::with_capacity(keys.len());
    let mut after_values = Vec::with_capacity(keys.len());
    let mut after_ids = Vec::with_capacity(keys.len());
    let mut limits = Vec::with_capacity(keys.len());
    for k in keys {
        let (parent, page) = parts(k);
        parents.push(parent);
        after_values.push(page.after.as_ref().map(|a| a.value.clone()));
        after_ids.push(page.after.as_ref().map(|a| a.id));
        limits.push(page.limit.clamp(0, 1001));
    }
    (parents, after_values, after_ids, limits)
}

/// Ranked rows placed by the position of the key that asked for them: `out[i]` holds the rows
/// of the `i`-th key (ordinality is 1-based).
fn in_positions<R>(keys: usize, rows: impl IntoIterator<Item = (i64, R)>) -> Vec<Vec<R>> {
    let mut out: Vec<Vec<R>> = (0..keys).map(|_| Vec::new()).collect();
    for (ord, row) in rows {
        if let Some(page) = usize::try_from(ord - 1).ok().and_then(|i| out.get_mut(i)) {
            page.push(row);
        }
    }
    out
}

/// Each key with its value, as a `Loader` answers.
fn keyed<K: Clone + Eq + Hash, V>(keys: &[K], values: Vec<V>) -> HashMap<K, V> {
    keys.iter().cloned().zip(values).collect()
}

/// A key of a children-page loader: whose page, and which page.
pub trait ChildPageKey: Clone + Eq + Hash + Send + Sync + 'static {
    /// The rows of a page.
    type Row: Columns + Send + 'static;
    /// A row with the position of its key (`ord`).
    #[doc(hidden)]
    type Ranked: QueryableByName<diesel::pg::Pg> + Into<(i64, Self::Row)> + Send + 'static;
    /// The statement, with the parents, cursor values, cursor ids and limits in `$1`–`$4`, the
    /// reader's namespaces in `$5`, and `{columns}` where the columns of the paged table `x`
    /// go (inside the page's subquery, so that its sort carries only those).
    const SQL: &'static str;
    /// The parent, and the page asked of it.
    fn parts(&self) -> (Uuid, &ChildPage);
}

impl Reader {
    /// The pages `keys` ask for, in their order, with one statement; `width` says which columns
    /// (see [`Width`]).
    pub async fn child_pages<K: ChildPageKey>(
        &self,
        keys: &[K],
        width: Width,
    ) -> Result<Vec<Vec<K::Row>>, ReadError> {
        let (parents, after_values, after_ids, limits) = page_arrays(keys, K::parts);
        let sql = K::SQL.replace("{columns}", &K::Row::select_list("x", width));
        let mut conn = self.conn().await?;
        // $5 is the reader's namespaces (NULL: all); only instance lists use it.
        let rows: Vec<K::Ranked> = Prepared(
            diesel::sql_query(sql)
                .bind::<Array<SqlUuid>, _>(parents)
                .bind::<Array<Nullable<Text>>, _>(after_values)
                .bind::<Array<Nullable<SqlUuid>>, _>(after_ids)
                .bind::<Array<Int8>, _>(limits)
                .bind::<Nullable<Array<Text>>, _>(self.namespaces()),
        )
        .load(&mut conn)
        .await?;
        Ok(in_positions(keys.len(), rows.into_iter().map(Into::into)))
    }
}

macro_rules! child_page_loader {
    (
        $(#[$meta:meta])*
        $key:ident { $parent:ident }, $ranked:ident, $row:ty, $sql:expr
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $key {
            pub $parent: Uuid,
            pub page: ChildPage,
        }

        impl ChildPageKey for $key {
            type Row = $row;
            type Ranked = $ranked;
            const SQL: &'static str = $sql;
            fn parts(&self) -> (Uuid, &ChildPage) {
                (self.$parent, &self.page)
            }
        }

        impl Loader<$key> for Reader {
            type Value = Vec<$row>;
            type Error = ReadError;

            async fn load(&self, keys: &[$key]) -> Result<HashMap<$key, Vec<$row>>, ReadError> {
                Ok(keyed(keys, self.child_pages(keys, Width::Whole).await?))
            }
        }
    };
}

child_page_loader!(
    /// A page of a registry's servers, ordered by name.
    ServersOfRegistry { registry_id }, RankedServer, ServerRow,
    // Names are unique within a registry, so the unique (registry_id, name) index gives the order.
    "SELECT k.ord, s.* FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::int8[]) \
       WITH ORDINALITY AS k(parent, after_value, after_id, lim, ord) \
     CROSS JOIN LATERAL ( \
       SELECT {columns} FROM servers x WHERE x.registry_id = k.parent AND $5::text[] IS NOT DISTINCT FROM $5::text[] \
         AND (k.after_value IS NULL OR x.name > k.after_value) \
       ORDER BY x.name LIMIT k.lim) s \
     ORDER BY k.ord, s.name"
);

child_page_loader!(
    /// A page of a server's instances, oldest first.
    InstancesOfServer { server_id }, RankedInstance, InstanceRow,
    "SELECT k.ord, s.* FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::int8[]) \
       WITH ORDINALITY AS k(parent, after_value, after_id, lim, ord) \
     CROSS JOIN LATERAL ( \
       SELECT {columns} FROM instances x WHERE x.server_id = k.parent \
         AND ($5::text[] IS NULL OR x.namespace = ANY($5)) \
         AND (k.after_value IS NULL OR (x.created_at, x.id) > (k.after_value::timestamptz, k.after_id)) \
       ORDER BY x.created_at, x.id LIMIT k.lim) s \
     ORDER BY k.ord, s.created_at, s.id"
);

child_page_loader!(
    /// A page of a cluster's instances, oldest first.
    InstancesOfCluster { cluster_id }, RankedInstance, InstanceRow,
    "SELECT k.ord, s.* FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::int8[]) \
       WITH ORDINALITY AS k(parent, after_value, after_id, lim, ord) \
     CROSS JOIN LATERAL ( \
       SELECT {columns} FROM instances x WHERE x.cluster_id = k.parent \
         AND ($5::text[] IS NULL OR x.namespace = ANY($5)) \
         AND (k.after_value IS NULL OR (x.created_at, x.id) > (k.after_value::timestamptz, k.after_id)) \
       ORDER BY x.created_at, x.id LIMIT k.lim) s \
     ORDER BY k.ord, s.created_at, s.id"
);

child_page_loader!(
    /// A page of an instance's operations, newest first.
    DeploymentsOfInstance { instance_id }, RankedDeployment, DeploymentRow,
    "SELECT k.ord, s.* FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::int8[]) \
       WITH ORDINALITY AS k(parent, after_value, after_id, lim, ord) \
     CROSS JOIN LATERAL ( \
       SELECT {columns} FROM deployments x WHERE x.instance_id = k.parent AND $5::text[] IS NOT DISTINCT FROM $5::text[] \
         AND (k.after_value IS NULL OR (x.started_at, x.id) < (k.after_value::timestamptz, k.after_id)) \
       ORDER BY x.started_at DESC, x.id DESC LIMIT k.lim) s \
     ORDER BY k.ord, s.started_at DESC, s.id DESC"
);

child_page_loader!(
    /// A page of an operation's log lines, oldest first. The cursor value is the line's id (ids
    /// grow in insertion order); the cursor id is unused.
    LogsOfDeployment { deployment_id }, RankedLogLine, DeploymentLogRow,
    "SELECT k.ord, s.* FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::int8[]) \
       WITH ORDINALITY AS k(parent, after_value, after_id, lim, ord) \
     CROSS JOIN LATERAL ( \
       SELECT {columns} FROM deployment_logs x WHERE x.deployment_id = k.parent AND $5::text[] IS NOT DISTINCT FROM $5::text[] \
         AND (k.after_value IS NULL OR x.id > k.after_value::int8) \
       ORDER BY x.id LIMIT k.lim) s \
     ORDER BY k.ord, s.id"
);

/// A page of an instance's monitoring samples, newest first, optionally within a time range.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MetricsOfInstance {
    pub instance_id: Uuid,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub page: ChildPage,
}

impl Loader<MetricsOfInstance> for Reader {
    type Value = Vec<MetricsRow>;
    type Error = ReadError;

    async fn load(
        &self,
        keys: &[MetricsOfInstance],
    ) -> Result<HashMap<MetricsOfInstance, Vec<MetricsRow>>, ReadError> {
        let (parents, after_values, _, limits) = page_arrays(keys, |k| (k.instance_id, &k.page));
        let since: Vec<Option<DateTime<Utc>>> = keys.iter().map(|k| k.since).collect();
        let until: Vec<Option<DateTime<Utc>>> = keys.iter().map(|k| k.until).collect();
        let mut conn = self.conn().await?;
        let rows: Vec<RankedMetrics> = Prepared(diesel::sql_query(
            "SELECT k.ord, s.* FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::timestamptz[], $5::timestamptz[]) \
               WITH ORDINALITY AS k(parent, after_value, lim, since, until, ord) \
             CROSS JOIN LATERAL ( \
               SELECT * FROM monitoring_metrics x WHERE x.instance_id = k.parent \
                 AND (k.after_value IS NULL OR x.\"timestamp\" < k.after_value::timestamptz) \
                 AND (k.since IS NULL OR x.\"timestamp\" >= k.since) \
                 AND (k.until IS NULL OR x.\"timestamp\" < k.until) \
               ORDER BY x.\"timestamp\" DESC LIMIT k.lim) s \
             ORDER BY k.ord, s.\"timestamp\" DESC",
        )
        .bind::<Array<SqlUuid>, _>(parents)
        .bind::<Array<Nullable<Text>>, _>(after_values)
        .bind::<Array<Int8>, _>(limits)
        .bind::<Array<Nullable<Timestamptz>>, _>(since)
        .bind::<Array<Nullable<Timestamptz>>, _>(until)
        ).load(&mut conn)
        .await?;
        let pages = in_positions(keys.len(), rows.into_iter().map(|r| (r.ord, r.row)));
        Ok(keyed(keys, pages))
    }
}

/// A page of an instance's hourly aggregates, newest first, optionally within a time range.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HourlyMetricsOfInstance {
    pub instance_id: Uuid,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub page: ChildPage,
}

impl Loader<HourlyMetricsOfInstance> for Reader {
    type Value = Vec<HourlyMetricsRow>;
    type Error = ReadError;

    async fn load(
        &self,
        keys: &[HourlyMetricsOfInstance],
    ) -> Result<HashMap<HourlyMetricsOfInstance, Vec<HourlyMetricsRow>>, ReadError> {
        let (parents, after_values, _, limits) = page_arrays(keys, |k| (k.instance_id, &k.page));
        let since: Vec<Option<DateTime<Utc>>> = keys.iter().map(|k| k.since).collect();
        let until: Vec<Option<DateTime<Utc>>> = keys.iter().map(|k| k.until).collect();
        let mut conn = self.conn().await?;
        // `since` selects the hours that end after it, so that a range starting mid-hour still
        // gets the hour it starts in.
        let rows: Vec<RankedHourly> = Prepared(diesel::sql_query(
            "SELECT k.ord, s.* FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::timestamptz[], $5::timestamptz[]) \
               WITH ORDINALITY AS k(parent, after_value, lim, since, until, ord) \
             CROSS JOIN LATERAL ( \
               SELECT * FROM monitoring_metrics_hourly x WHERE x.instance_id = k.parent \
                 AND (k.after_value IS NULL OR x.bucket < k.after_value::timestamptz) \
                 AND (k.since IS NULL OR x.bucket > k.since - interval '1 hour') \
                 AND (k.until IS NULL OR x.bucket < k.until) \
               ORDER BY x.bucket DESC LIMIT k.lim) s \
             ORDER BY k.ord, s.bucket DESC",
        )
        .bind::<Array<SqlUuid>, _>(parents)
        .bind::<Array<Nullable<Text>>, _>(after_values)
        .bind::<Array<Int8>, _>(limits)
        .bind::<Array<Nullable<Timestamptz>>, _>(since)
        .bind::<Array<Nullable<Timestamptz>>, _>(until)
        ).load(&mut conn)
        .await?;
        let pages = in_positions(keys.len(), rows.into_iter().map(|r| (r.ord, r.row)));
        Ok(keyed(keys, pages))
    }
}

/// The newest monitoring sample of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LatestMetricsOfInstance(pub Uuid);

impl Loader<LatestMetricsOfInstance> for Reader {
    type Value = MetricsRow;
    type Error = ReadError;

    async fn load(
        &self,
        keys: &[LatestMetricsOfInstance],
    ) -> Result<HashMap<LatestMetricsOfInstance, MetricsRow>, ReadError> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let rows = self.latest_metrics(ids, Width::Whole).await?;
        Ok(keys
            .iter()
            .zip(rows)
            .filter_map(|(k, r)| Some((*k, r?)))
            .collect())
    }
}

impl Reader {
    /// The newest sample of each of the instances `ids`, in their order (`None` for one without
    /// samples), with one statement; `width` says which columns (see [`Width`]).
    pub async fn latest_metrics(
        &self,
        ids: Vec<Uuid>,
        width: Width,
    ) -> Result<Vec<Option<MetricsRow>>, ReadError> {
        let count = ids.len();
        // One index probe per instance on (instance_id, timestamp DESC): the cost does not grow
        // with the number of samples an instance has.
        let sql = format!(
            "SELECT k.ord, m.* FROM unnest($1::uuid[]) WITH ORDINALITY AS k(id, ord) \
             CROSS JOIN LATERAL ( \
               SELECT {} FROM monitoring_metrics x WHERE x.instance_id = k.id \
               ORDER BY x.\"timestamp\" DESC LIMIT 1) m",
            MetricsRow::select_list("x", width)
        );
        let mut conn = self.conn().await?;
        let rows: Vec<RankedMetrics> =
            Prepared(diesel::sql_query(sql).bind::<Array<SqlUuid>, _>(ids))
                .load(&mut conn)
                .await?;
        let found = in_positions(count, rows.into_iter().map(|r| (r.ord, r.row)));
        Ok(found.into_iter().map(|mut rows| rows.pop()).collect())
    }
}

/// The `deploy` operation that created an instance (the data model's one-to-one link).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeployOperationOfInstance(pub Uuid);

impl Loader<DeployOperationOfInstance> for Reader {
    type Value = DeploymentRow;
    type Error = ReadError;

    async fn load(
        &self,
        keys: &[DeployOperationOfInstance],
    ) -> Result<HashMap<DeployOperationOfInstance, DeploymentRow>, ReadError> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let mut conn = self.conn().await?;
        let rows: Vec<DeploymentRow> = Prepared(
            diesel::sql_query(
                "SELECT d.* FROM unnest($1::uuid[]) AS k(id) \
             CROSS JOIN LATERAL ( \
               SELECT * FROM deployments x WHERE x.instance_id = k.id AND x.operation = 'deploy' \
               ORDER BY x.started_at DESC LIMIT 1) d",
            )
            .bind::<Array<SqlUuid>, _>(ids),
        )
        .load(&mut conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (DeployOperationOfInstance(r.instance_id), r))
            .collect())
    }
}

/// Which child list a count is taken over: a descriptor that [`CountOf::load`] turns into the
/// key type of that kind of count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CountOf {
    /// Servers of a registry.
    ServersOfRegistry(Uuid),
    /// Instances of a server.
    InstancesOfServer(Uuid),
    /// Instances in a cluster.
    InstancesOfCluster(Uuid),
    /// Operations of an instance.
    DeploymentsOfInstance(Uuid),
    /// Monitoring samples of an instance.
    MetricsOfInstance(Uuid),
    /// Hourly metric aggregates of an instance.
    HourlyMetricsOfInstance(Uuid),
    /// Log lines of an operation.
    LogsOfDeployment(Uuid),
}

impl CountOf {
    /// Loads the count through `loader`, batched with every other count of the same kind.
    pub async fn load(self, loader: &DataLoader<Reader>) -> Result<i64, ReadError> {
        Ok(match self {
            CountOf::ServersOfRegistry(id) => loader.load_one(ServerCountOfRegistry(id)).await?,
            CountOf::InstancesOfServer(id) => loader.load_one(InstanceCountOfServer(id)).await?,
            CountOf::InstancesOfCluster(id) => loader.load_one(InstanceCountOfCluster(id)).await?,
            CountOf::DeploymentsOfInstance(id) => {
                loader.load_one(OperationCountOfInstance(id)).await?
            }
            CountOf::MetricsOfInstance(id) => loader.load_one(MetricsCountOfInstance(id)).await?,
            CountOf::HourlyMetricsOfInstance(id) => {
                loader.load_one(HourlyCountOfInstance(id)).await?
            }
            CountOf::LogsOfDeployment(id) => loader.load_one(LogCountOfDeployment(id)).await?,
        }
        .unwrap_or(0))
    }
}

#[derive(QueryableByName)]
struct ParentCount {
    #[diesel(sql_type = SqlUuid)]
    parent: Uuid,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

macro_rules! count_loader {
    // Runs a count statement; `scoped` ones bind the reader's namespaces as `$2` (NULL: all).
    (@run scoped, $q:ident, $reader:ident, $conn:ident) => {
        $q.bind::<Nullable<Array<Text>>, _>($reader.namespaces()).load(&mut $conn).await?
    };
    (@run unscoped, $q:ident, $reader:ident, $conn:ident) => {
        $q.load(&mut $conn).await?
    };
    ($(#[$meta:meta])* $key:ident, $sql:literal) => {
        count_loader!($(#[$meta])* $key, $sql, unscoped);
    };
    ($(#[$meta:meta])* $key:ident, $sql:literal, $scoped:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $key(pub Uuid);

        impl Loader<$key> for Reader {
            type Value = i64;
            type Error = ReadError;

            async fn load(&self, keys: &[$key]) -> Result<HashMap<$key, i64>, ReadError> {
                let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
                let mut conn = self.conn().await?;
                let q = diesel::sql_query($sql).bind::<Array<SqlUuid>, _>(ids);
                let rows: Vec<ParentCount> = count_loader!(@run $scoped, q, self, conn);
                let counts: HashMap<Uuid, i64> = rows.into_iter().map(|r| (r.parent, r.n)).collect();
                // Parents without children count zero.
                Ok(keys
                    .iter()
                    .map(|k| (*k, counts.get(&k.0).copied().unwrap_or(0)))
                    .collect())
            }
        }
    };
}

count_loader!(
    /// The number of servers of a registry.
    ServerCountOfRegistry,
    "SELECT registry_id AS parent, count(*) AS n FROM servers WHERE registry_id = ANY($1) GROUP BY 1"
);
count_loader!(
    /// The number of instances of a server (in the reader's namespaces).
    InstanceCountOfServer,
    "SELECT server_id AS parent, count(*) AS n FROM instances WHERE server_id = ANY($1) \
     AND ($2::text[] IS NULL OR namespace = ANY($2)) GROUP BY 1",
    scoped
);
count_loader!(
    /// The number of instances in a cluster (in the reader's namespaces).
    InstanceCountOfCluster,
    "SELECT cluster_id AS parent, count(*) AS n FROM instances WHERE cluster_id = ANY($1) \
     AND ($2::text[] IS NULL OR namespace = ANY($2)) GROUP BY 1",
    scoped
);
count_loader!(
    /// The number of operations of an instance.
    OperationCountOfInstance,
    "SELECT instance_id AS parent, count(*) AS n FROM deployments WHERE instance_id = ANY($1) GROUP BY 1"
);
count_loader!(
    /// The number of monitoring samples of an instance.
    MetricsCountOfInstance,
    "SELECT instance_id AS parent, count(*) AS n FROM monitoring_metrics WHERE instance_id = ANY($1) GROUP BY 1"
);
count_loader!(
    /// The number of hourly aggregates of an instance.
    HourlyCountOfInstance,
    "SELECT instance_id AS parent, count(*) AS n FROM monitoring_metrics_hourly WHERE instance_id = ANY($1) GROUP BY 1"
);
count_loader!(
    /// The number of log lines of an operation.
    LogCountOfDeployment,
    "SELECT deployment_id AS parent, count(*) AS n FROM deployment_logs WHERE deployment_id = ANY($1) GROUP BY 1"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranked_rows_go_to_the_position_of_their_key() {
        // Keys 1 and 3 are the same parent asked twice: each position gets its own rows.
        let rows = [
            (3, "c1"),
            (1, "a1"),
            (1, "a2"),
            (3, "c2"),
            (4, "beyond"),
            (0, "before"),
        ];
        assert_eq!(
            in_positions(3, rows),
            vec![vec!["a1", "a2"], vec![], vec!["c1", "c2"]]
        );
    }
}
