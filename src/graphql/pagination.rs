//! Relay connections: forward pagination with opaque keyset cursors and a lazy `totalCount`.

use async_graphql::connection::{Connection, CursorType, Edge, OpaqueCursor};
use async_graphql::{Context, Object, OutputType};
use dataloaders::reads::{DeploymentFilter, InstanceFilter, RegistryFilter, ServerFilter};
use dataloaders::{ChildPage, CountOf, SortKey};

use crate::error::{AppError, AppResult};
use crate::graphql::context::RequestCtx;

/// The default page size when `first` is absent.
pub const DEFAULT_PAGE: i32 = 20;
/// The largest page a client may ask for.
pub const MAX_PAGE: i32 = 100;

/// What a cursor holds: the list it belongs to, and the sort value and id of the last row seen.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ListPosition {
    /// The list (connection field) the cursor was issued by.
    #[serde(rename = "l")]
    pub list: String,
    /// The keyset position.
    #[serde(rename = "k")]
    pub key: SortKey,
}

/// A keyset cursor: a [`ListPosition`], serialised and base64-encoded. A cursor is refused by
/// any other list.
pub type Cursor = OpaqueCursor<ListPosition>;

/// A connection with `totalCount`.
pub type Page<T> = Connection<Cursor, T, TotalCount>;

/// Longest `after` cursor accepted (cursors key caches; ours are far shorter).
pub const MAX_CURSOR_CHARS: usize = 1024;

/// A validated forward page request.
#[derive(Debug, Clone)]
pub struct PageArgs {
    /// The list being paged (its connection field's name), which its cursors carry.
    pub list: &'static str,
    pub first: i64,
    pub after: Option<SortKey>,
}

impl PageArgs {
    /// Validates `first` (1..=100) and decodes `after`, which must come from the same `list`.
    pub fn parse(list: &'static str, first: Option<i32>, after: Option<String>) -> AppResult<Self> {
        let first = first.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&first) {
            return Err(AppError::bad_input(
                "first",
                format!("first must be between 1 and {MAX_PAGE}"),
            ));
        }
        if after.as_ref().is_some_and(|a| a.len() > MAX_CURSOR_CHARS) {
            return Err(AppError::bad_input(
                "after",
                format!("a cursor has at most {MAX_CURSOR_CHARS} characters"),
            ));
        }
        let after = match after {
            None => None,
            Some(raw) => {
                let position = Cursor::decode_cursor(&raw)
                    .map_err(|_| AppError::bad_input("after", "malformed cursor"))?
                    .0;
                if position.list != list {
                    return Err(AppError::bad_input(
                        "after",
                        format!(
                            "this cursor belongs to the `{}` list, not to `{list}`",
                            position.list
                        ),
                    ));
                }
                Some(position.key)
            }
        };
        Ok(PageArgs {
            list,
            first: first as i64,
            after,
        })
    }

    /// Refuses a cursor that is not a position in a time-ordered list (for example a cursor of
    /// another list), before it can reach a batched statement shared with other parents.
    pub fn expect_time_cursor(self) -> AppResult<Self> {
        if let Some(a) = &self.after
            && chrono::DateTime::parse_from_rfc3339(&a.value).is_err()
        {
            return Err(AppError::bad_input("after", "malformed cursor"));
        }
        Ok(self)
    }

    /// The number of rows to fetch: one more than shown, to learn whether another page exists.
    pub fn fetch_limit(&self) -> i64 {
        self.first + 1
    }

    /// The page request for a nested (batched) list.
    pub fn child_page(&self) -> ChildPage {
        ChildPage {
            limit: self.fetch_limit(),
            after: self.after.clone(),
        }
    }
}

/// Builds a connection from rows fetched with [`PageArgs::fetch_limit`].
pub fn build_page<R, T: OutputType>(
    args: &PageArgs,
    mut rows: Vec<R>,
    total: TotalCount,
    key: impl Fn(&R) -> SortKey,
    node: impl Fn(R) -> T,
) -> Page<T> {
    let has_next = rows.len() as i64 > args.first;
    rows.truncate(args.first as usize);
    let mut conn = Connection::with_additional_fields(args.after.is_some(), has_next, total);
    conn.edges.extend(rows.into_iter().map(|r| {
        let position = ListPosition {
            list: args.list.to_string(),
            key: key(&r),
        };
        Edge::new(OpaqueCursor(position), node(r))
    }));
    conn
}

/// Where a connection's `totalCount` comes from. It is computed only when asked for.
#[derive(Debug, Clone)]
pub enum TotalCount {
    /// Registries matching a filter.
    Registries(RegistryFilter),
    /// Servers matching a filter.
    Servers(ServerFilter),
    /// Instances matching a filter.
    Instances(InstanceFilter),
    /// Deployment operations matching a filter.
    Deployments(DeploymentFilter),
    /// Every cluster.
    Clusters,
    /// Audit records matching a filter.
    Audit(dataloaders::reads::AuditFilter),
    /// Children of one parent, counted in a batch with their siblings (through the cache of
    /// their kind, see `crate::cache`).
    Children(CountOf),
    /// Servers of a registry, cached under the registry's last sync.
    RegistryServers {
        registry_id: uuid::Uuid,
        synced_at: Option<chrono::DateTime<chrono::Utc>>,
    },
}

/// Connection-level fields.
#[Object]
impl TotalCount {
    /// The number of items in the whole list, across all pages.
    async fn total_count(&self, ctx: &Context<'_>) -> AppResult<i64> {
        let rc = RequestCtx::of(ctx);
        Ok(match self {
            TotalCount::Registries(f) => rc.reader.registries_count(f).await?,
            TotalCount::Servers(f) => rc.reader.servers_count(f).await?,
            TotalCount::Instances(f) => rc.reader.instances_count(f).await?,
            TotalCount::Deployments(f) => rc.reader.deployments_count(f).await?,
            TotalCount::Clusters => rc.reader.clusters_count().await?,
            TotalCount::Audit(f) => rc.reader.audit_count(f).await?,
            TotalCount::Children(key) => RequestCtx::reads(ctx).count(*key).await?,
            TotalCount::RegistryServers {
                registry_id,
                synced_at,
            } => {
                RequestCtx::reads(ctx)
                    .registry_server_count(*registry_id, *synced_at)
                    .await?
            }
        })
    }
}
