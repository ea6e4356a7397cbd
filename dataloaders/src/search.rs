//! Server discovery: free-text search, combined filters, sort orders with keyset cursors, and
//! facet counts over the `servers` table.
//!
//! Search matches a server when any of these holds:
//! - the search document (name, tool names, categories, description; see the `_search`
//!   migration) matches the text in web-search syntax (`"a phrase"`, `-not`, `or`);
//! - for a single-word search only: the name is similar to the word (pg_trgm `%`, for typos
//!   such as `githb`), or contains it (`ILIKE`, for partial names such as `hub`). Searches of
//!   several words, phrases or exclusions use the text-search syntax alone, so `-word` excludes.
//!
//! Matches are ranked by `ts_rank_cd` (weights: name > tool names > categories > description) plus
//! the trigram similarity of the name, so that a server named like the text comes first.
//!
//! Every statement is built from the same filter SQL, so a page, its `totalCount` and the facets
//! always agree. Each sort has an index (see the migration), and [`explain_servers_page`] shows
//! the plan of exactly the statement [`Reader::servers_page`] runs.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::serialize::ToSql;
use diesel::sql_types::{
    Array, BigInt, Double, HasSqlType, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::loaders::SortKey;
use crate::models::ServerRow;
use crate::reads::ServerFilter;
use crate::{ReadError, Reader};

/// The longest accepted search text, in characters.
pub const MAX_SEARCH_CHARS: usize = 200;

/// The most values a facet lists.
pub const MAX_FACET_VALUES: i64 = 500;

/// The search document expression; it must match the expression index exactly.
const DOCUMENT: &str = "servers_search_document(s.name, s.description, s.capabilities, s.category)";

/// How a list of servers is sorted. Every order breaks ties by id, so cursors stay stable.
#[derive(async_graphql::Enum, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerOrder {
    /// Best match for `search` first. Needs `search`, and is the default when it is given.
    Relevance,
    /// By name, A to Z. The default without `search`.
    Name,
    /// Most stars first.
    Stars,
    /// Most pulls first.
    Pulls,
    /// Most recently updated first; servers without a date come last.
    LastUpdated,
}

impl ServerOrder {
    /// The order used when the client names none.
    pub fn default_for(search: Option<&str>) -> Self {
        if search.is_some() {
            ServerOrder::Relevance
        } else {
            ServerOrder::Name
        }
    }

    fn tag(self) -> &'static str {
        match self {
            ServerOrder::Relevance => "r",
            ServerOrder::Name => "n",
            ServerOrder::Stars => "s",
            ServerOrder::Pulls => "p",
            ServerOrder::LastUpdated => "u",
        }
    }

    /// The cursor of `row` in this order. `rank` is the row's relevance (see
    /// [`RankedServerRow`]); `search` the normalised search text of the list.
    pub fn cursor(self, row: &ServerRow, rank: f64, search: Option<&str>) -> SortKey {
        let payload = match self {
            ServerOrder::Relevance => format!(
                "{:016x}:{:016x}",
                fingerprint(search.unwrap_or_default()),
                rank.to_bits()
            ),
            ServerOrder::Name => row.name.clone(),
            ServerOrder::Stars => row.stars.to_string(),
            ServerOrder::Pulls => row.pull_count.to_string(),
            ServerOrder::LastUpdated => row
                .last_updated
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
                .unwrap_or_default(),
        };
        SortKey {
            value: format!("{}:{payload}", self.tag()),
            id: row.id,
        }
    }

    /// Reads a cursor made by [`ServerOrder::cursor`] for this order and search. The error is a
    /// message for the client.
    pub fn position(self, key: &SortKey, search: Option<&str>) -> Result<ServerPosition, String> {
        let (tag, payload) = key
            .value
            .split_once(':')
            .ok_or_else(|| "malformed cursor".to_string())?;
        if tag != self.tag() {
            return Err(
                "the cursor belongs to a different orderBy; start again without `after`"
                    .to_string(),
            );
        }
        let bad = || "malformed cursor".to_string();
        let id = key.id;
        Ok(match self {
            ServerOrder::Relevance => {
                let (fp, bits) = payload.split_once(':').ok_or_else(bad)?;
                let fp = u64::from_str_radix(fp, 16).map_err(|_| bad())?;
                if fp != fingerprint(search.unwrap_or_default()) {
                    return Err(
                        "the cursor belongs to a different search; start again without `after`"
                            .to_string(),
                    );
                }
                let rank = f64::from_bits(u64::from_str_radix(bits, 16).map_err(|_| bad())?);
                if !rank.is_finite() {
                    return Err(bad());
                }
                ServerPosition::Relevance(rank, id)
            }
            ServerOrder::Name => ServerPosition::Name(payload.to_string(), id),
            ServerOrder::Stars => ServerPosition::Stars(payload.parse().map_err(|_| bad())?, id),
            ServerOrder::Pulls => ServerPosition::Pulls(payload.parse().map_err(|_| bad())?, id),
            ServerOrder::LastUpdated => {
                let at = if payload.is_empty() {
                    None
                } else {
                    Some(
                        DateTime::parse_from_rfc3339(payload)
                            .map_err(|_| bad())?
                            .with_timezone(&Utc),
                    )
                };
                ServerPosition::LastUpdated(at, id)
            }
        })
    }
}

/// Where the previous page of a server list ended: the sort value and id of its last row.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerPosition {
    /// After this relevance (descending).
    Relevance(f64, Uuid),
    /// After this name (ascending).
    Name(String, Uuid),
    /// After this number of stars (descending).
    Stars(i64, Uuid),
    /// After this number of pulls (descending).
    Pulls(i64, Uuid),
    /// After this update time (descending; no date sorts last).
    LastUpdated(Option<DateTime<Utc>>, Uuid),
}

/// Trims a client's search text. `Ok(None)` when nothing is left (an empty search box means "no
/// search"); the error is a message for the client.
pub fn normalize_search(raw: Option<&str>) -> Result<Option<String>, String> {
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.trim();
    if text.chars().count() > MAX_SEARCH_CHARS {
        return Err(format!(
            "search must be at most {MAX_SEARCH_CHARS} characters"
        ));
    }
    if text.chars().any(char::is_control) {
        return Err("search must not contain control characters".into());
    }
    Ok((!text.is_empty()).then(|| text.to_string()))
}

/// A stable 64-bit FNV-1a hash of a search text, to tie relevance cursors to their search.
fn fingerprint(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.to_lowercase().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Escapes `%`, `_` and `\` for a `LIKE` pattern.
fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A raw SQL statement with numbered placeholders, built piece by piece.
struct Sql {
    text: String,
    query: Option<BoxedSqlQuery<'static, Pg, SqlQuery>>,
    binds: usize,
}

impl Sql {
    fn new() -> Self {
        Sql {
            text: String::new(),
            query: Some(diesel::sql_query("").into_boxed()),
            binds: 0,
        }
    }

    /// Binds a value and returns its placeholder (`$n`).
    fn bind<ST, V>(&mut self, value: V) -> String
    where
        Pg: HasSqlType<ST>,
        V: ToSql<ST, Pg> + Send + 'static,
        ST: Send + 'static,
    {
        self.binds += 1;
        let q = self.query.take().expect("query present until built");
        self.query = Some(q.bind::<ST, _>(value));
        format!("${}", self.binds)
    }

    fn push(&mut self, sql: &str) {
        self.text.push_str(sql);
    }

    fn build(mut self) -> BoxedSqlQuery<'static, Pg, SqlQuery> {
        let q = self.query.take().expect("query present until built");
        q.sql(self.text)
    }
}

/// Placeholders of the search text.
struct SearchRefs {
    text: String,
}

/// Whether a search is a single word, to be matched against names fuzzily as well. Several words
/// and phrases are left to the text-search syntax alone.
fn is_single_word(q: &str) -> bool {
    !q.contains(char::is_whitespace) && !q.starts_with('-') && !q.contains('"')
}

/// A search split into what must match and the words it excludes (`-word`). Exclusions are
/// conditions of their own: each excluded word must match neither the text-search document
/// (whichever configuration stems it) nor be part of the name or of a category (tag).
fn split_exclusions(q: &str) -> (String, Vec<String>) {
    let mut wanted = Vec::new();
    let mut excluded = Vec::new();
    for word in q.split_whitespace() {
        match word.strip_prefix('-') {
            Some(w) if !w.is_empty() && !w.contains('"') => excluded.push(w.to_string()),
            _ => wanted.push(word),
        }
    }
    (wanted.join(" "), excluded)
}

/// The filter's conditions (ANDed), binding their values; plus the search placeholders.
fn conditions(sql: &mut Sql, f: &ServerFilter) -> (Vec<String>, Option<SearchRefs>) {
    // Servers of deleted (archived) registries are kept for history, never listed.
    let mut conds = vec!["s.archived_at IS NULL".to_string()];
    let (wanted, excluded) = f
        .search
        .as_deref()
        .map(split_exclusions)
        .unwrap_or_default();
    for word in excluded {
        let text = sql.bind::<Text, _>(word.clone());
        let pattern = sql.bind::<Text, _>(format!("%{}%", escape_like(&word)));
        conds.push(format!(
            "NOT ({DOCUMENT} @@ servers_search_query({text}) OR s.name ILIKE {pattern} \
             OR array_to_string(s.category, ' ') ILIKE {pattern})"
        ));
    }
    let search = (!wanted.trim().is_empty()).then(|| {
        let q = &wanted;
        let text = sql.bind::<Text, _>(q.clone());
        let cond = if is_single_word(q) {
            let pattern = sql.bind::<Text, _>(format!("%{}%", escape_like(q)));
            format!(
                "({DOCUMENT} @@ servers_search_query({text}) OR s.name % {text} OR s.name ILIKE {pattern})"
            )
        } else {
            format!("{DOCUMENT} @@ servers_search_query({text})")
        };
        conds.push(cond);
        SearchRefs { text }
    });
    if let Some(ids) = &f.registry_ids {
        let p = sql.bind::<Array<SqlUuid>, _>(ids.clone());
        conds.push(format!("s.registry_id = ANY({p})"));
    }
    if let Some(v) = &f.transport {
        let v: Vec<String> = v.iter().map(|x| x.as_db_str().to_string()).collect();
        let p = sql.bind::<Array<Text>, _>(v);
        conds.push(format!("s.transport = ANY({p})"));
    }
    if let Some(v) = &f.tier {
        let v: Vec<String> = v.iter().map(|x| x.as_db_str().to_string()).collect();
        let p = sql.bind::<Array<Text>, _>(v);
        conds.push(format!("s.tier = ANY({p})"));
    }
    if let Some(v) = &f.status {
        let v: Vec<String> = v.iter().map(|x| x.as_db_str().to_string()).collect();
        let p = sql.bind::<Array<Text>, _>(v);
        conds.push(format!("s.status = ANY({p})"));
    }
    if let Some(v) = &f.category {
        // Categories match whatever their case.
        let lower: Vec<String> = v.iter().map(|c| c.to_lowercase()).collect();
        let p = sql.bind::<Array<Text>, _>(lower);
        conds.push(format!(
            "ARRAY(SELECT lower(c) FROM unnest(s.category) AS c) @> {p}"
        ));
    }
    if let Some(v) = &f.capabilities {
        let p = sql.bind::<Array<Text>, _>(v.clone());
        conds.push(format!("s.capabilities @> {p}"));
    }
    (conds, search)
}

fn where_sql(conds: &[String]) -> String {
    if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    }
}

fn rank_sql(search: Option<&SearchRefs>) -> String {
    match search {
        Some(r) => format!(
            "(ts_rank_cd({DOCUMENT}, servers_search_query({q}))::float8 + similarity(s.name, {q})::float8)",
            q = r.text
        ),
        None => "0::float8".to_string(),
    }
}

/// The page statement, optionally prefixed (with `EXPLAIN `).
fn page_statement(
    prefix: &str,
    f: &ServerFilter,
    order: ServerOrder,
    after: Option<&ServerPosition>,
    limit: i64,
) -> Result<BoxedSqlQuery<'static, Pg, SqlQuery>, ReadError> {
    let mut sql = Sql::new();
    let (mut conds, search) = conditions(&mut sql, f);
    let rank = rank_sql(search.as_ref());
    if order == ServerOrder::Relevance {
        if f.search.is_none() {
            return Err(ReadError::Query("relevance order without a search".into()));
        }
        // A search of exclusions alone ranks every server it keeps equally (rank 0).
        let keyset = match after {
            None => String::new(),
            Some(ServerPosition::Relevance(r, id)) => {
                let r = sql.bind::<Double, _>(*r);
                let id = sql.bind::<SqlUuid, _>(*id);
                format!(" WHERE (t.rank, t.id) < ({r}, {id})")
            }
            Some(_) => return Err(ReadError::Query("cursor of another order".into())),
        };
        let lim = sql.bind::<BigInt, _>(limit);
        sql.push(&format!(
            "{prefix}SELECT * FROM (SELECT s.*, {rank} AS rank FROM servers s{w}) t{keyset} \
             ORDER BY t.rank DESC, t.id DESC LIMIT {lim}",
            w = where_sql(&conds)
        ));
        return Ok(sql.build());
    }
    const LAST_UPDATED: &str = "coalesce(s.last_updated, '-infinity'::timestamptz)";
    let (key, order_by) = match order {
        ServerOrder::Name => ("s.name", "s.name, s.id"),
        ServerOrder::Stars => ("s.stars", "s.stars DESC, s.id DESC"),
        ServerOrder::Pulls => ("s.pull_count", "s.pull_count DESC, s.id DESC"),
        ServerOrder::LastUpdated => (
            LAST_UPDATED,
            "coalesce(s.last_updated, '-infinity'::timestamptz) DESC, s.id DESC",
        ),
        ServerOrder::Relevance => unreachable!("handled above"),
    };
    if let Some(pos) = after {
        let (value, cmp, id) = match (order, pos) {
            (ServerOrder::Name, ServerPosition::Name(v, id)) => {
                (sql.bind::<Text, _>(v.clone()), ">", id)
            }
            (ServerOrder::Stars, ServerPosition::Stars(v, id)) => {
                (sql.bind::<BigInt, _>(*v), "<", id)
            }
            (ServerOrder::Pulls, ServerPosition::Pulls(v, id)) => {
                (sql.bind::<BigInt, _>(*v), "<", id)
            }
            (ServerOrder::LastUpdated, ServerPosition::LastUpdated(v, id)) => {
                let p = sql.bind::<Nullable<Timestamptz>, _>(*v);
                (format!("coalesce({p}, '-infinity'::timestamptz)"), "<", id)
            }
            _ => return Err(ReadError::Query("cursor of another order".into())),
        };
        let id = sql.bind::<SqlUuid, _>(*id);
        conds.push(format!("({key}, s.id) {cmp} ({value}, {id})"));
    }
    let lim = sql.bind::<BigInt, _>(limit);
    sql.push(&format!(
        "{prefix}SELECT s.*, {rank} AS rank FROM servers s{w} ORDER BY {order_by} LIMIT {lim}",
        w = where_sql(&conds)
    ));
    Ok(sql.build())
}

/// A server with its relevance to the search (0 without a search).
#[derive(Debug, Clone, QueryableByName)]
pub struct RankedServerRow {
    // Not named `row`: the derive's generated code has a local of that name.
    #[diesel(embed)]
    pub server: ServerRow,
    #[diesel(sql_type = Double)]
    pub rank: f64,
}

/// How many servers carry one facet value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FacetCount {
    pub value: String,
    pub count: i64,
}

/// Facet counts of the servers that match a filter and search.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerFacetCounts {
    /// How many servers match.
    pub total: i64,
    /// Categories, most frequent first (ties by value).
    pub category: Vec<FacetCount>,
    /// Tool names, most frequent first (ties by value).
    pub capabilities: Vec<FacetCount>,
}

#[derive(QueryableByName)]
struct FacetRow {
    #[diesel(sql_type = Text)]
    facet: String,
    #[diesel(sql_type = Nullable<Text>)]
    value: Option<String>,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct CountRow {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

impl Reader {
    /// A page of servers matching `filter` (and its search), in `order`, after `after`.
    pub async fn servers_page(
        &self,
        filter: &ServerFilter,
        order: ServerOrder,
        after: Option<&ServerPosition>,
        limit: i64,
    ) -> Result<Vec<RankedServerRow>, ReadError> {
        let q = page_statement("", filter, order, after, limit)?;
        let mut conn = self.conn().await?;
        Ok(q.load(&mut conn).await?)
    }

    /// How many servers match `filter` (and its search).
    pub async fn servers_count(&self, filter: &ServerFilter) -> Result<i64, ReadError> {
        let mut sql = Sql::new();
        let (conds, _) = conditions(&mut sql, filter);
        sql.push(&format!(
            "SELECT count(*) AS n FROM servers s{}",
            where_sql(&conds)
        ));
        let mut conn = self.conn().await?;
        let row: CountRow = sql.build().get_result(&mut conn).await?;
        Ok(row.n)
    }

    /// The `category` and `capabilities` facets of the servers matching `filter` (and its
    /// search), at most `limit` values each, plus the number of matching servers: one statement.
    pub async fn server_facets(
        &self,
        filter: &ServerFilter,
        limit: i64,
    ) -> Result<ServerFacetCounts, ReadError> {
        let mut sql = Sql::new();
        let (conds, _) = conditions(&mut sql, filter);
        let lim = sql.bind::<BigInt, _>(limit.clamp(0, MAX_FACET_VALUES));
        sql.push(&format!(
            "WITH m AS MATERIALIZED (SELECT s.category, s.capabilities FROM servers s{w}), \
             c AS (SELECT v, count(*) AS n FROM m CROSS JOIN LATERAL unnest(m.category) AS v \
                   GROUP BY v ORDER BY count(*) DESC, v LIMIT {lim}), \
             t AS (SELECT v, count(*) AS n FROM m CROSS JOIN LATERAL unnest(m.capabilities) AS v \
                   GROUP BY v ORDER BY count(*) DESC, v LIMIT {lim}) \
             SELECT 'category'::text AS facet, v::text AS value, n FROM c \
             UNION ALL SELECT 'capabilities'::text, v::text, n FROM t \
             UNION ALL SELECT 'total'::text, NULL::text, count(*) FROM m",
            w = where_sql(&conds)
        ));
        let mut conn = self.conn().await?;
        let rows: Vec<FacetRow> = sql.build().load(&mut conn).await?;
        let mut out = ServerFacetCounts::default();
        for r in rows {
            match (r.facet.as_str(), r.value) {
                ("total", _) => out.total = r.n,
                ("category", Some(value)) => out.category.push(FacetCount { value, count: r.n }),
                ("capabilities", Some(value)) => {
                    out.capabilities.push(FacetCount { value, count: r.n })
                }
                _ => {}
            }
        }
        for list in [&mut out.category, &mut out.capabilities] {
            list.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
        }
        Ok(out)
    }
}

/// The plan PostgreSQL chooses for exactly the statement [`Reader::servers_page`] runs, one line
/// per row of `EXPLAIN`. Run it on a connection with the settings under test (for example
/// `SET enable_seqscan = off`).
pub async fn explain_servers_page(
    conn: &mut AsyncPgConnection,
    filter: &ServerFilter,
    order: ServerOrder,
    after: Option<&ServerPosition>,
    limit: i64,
) -> Result<String, ReadError> {
    let q = page_statement("EXPLAIN ", filter, order, after, limit)?;
    let lines: Vec<PlanLine> = q.load(conn).await?;
    Ok(lines
        .into_iter()
        .map(|l| l.line)
        .collect::<Vec<_>>()
        .join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enums::*;

    fn row(name: &str) -> ServerRow {
        ServerRow {
            id: Uuid::new_v4(),
            registry_id: Uuid::nil(),
            name: name.into(),
            original_name: name.into(),
            description: String::new(),
            version: None,
            image: Some("a/b:1".into()),
            url: None,
            transport: Transport::Stdio,
            tier: ServerTier::Community,
            status: ServerStatus::Available,
            category: vec![],
            capabilities: vec![],
            repository_url: None,
            network_permissions: serde_json::json!({}),
            pull_count: 12,
            stars: 34,
            last_updated: None,
            deployment_requirements: serde_json::json!({}),
            removed_upstream_at: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            sync_hash: None,
            archived_at: None,
        }
    }

    #[test]
    fn cursors_round_trip_in_every_order() {
        let mut r = row("git:hub");
        r.last_updated = Some(Utc::now());
        for order in [
            ServerOrder::Name,
            ServerOrder::Stars,
            ServerOrder::Pulls,
            ServerOrder::LastUpdated,
            ServerOrder::Relevance,
        ] {
            let key = order.cursor(&r, 0.1 + 0.2, Some("github"));
            let pos = order.position(&key, Some("github")).unwrap();
            let expected = match order {
                ServerOrder::Name => ServerPosition::Name("git:hub".into(), r.id),
                ServerOrder::Stars => ServerPosition::Stars(34, r.id),
                ServerOrder::Pulls => ServerPosition::Pulls(12, r.id),
                ServerOrder::LastUpdated => ServerPosition::LastUpdated(
                    Some(
                        DateTime::parse_from_rfc3339(
                            &r.last_updated
                                .unwrap()
                                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                        )
                        .unwrap()
                        .with_timezone(&Utc),
                    ),
                    r.id,
                ),
                ServerOrder::Relevance => ServerPosition::Relevance(0.1 + 0.2, r.id),
            };
            assert_eq!(pos, expected, "{order:?}");
        }
        let no_date = ServerOrder::LastUpdated.cursor(&row("x"), 0.0, None);
        assert!(matches!(
            ServerOrder::LastUpdated.position(&no_date, None),
            Ok(ServerPosition::LastUpdated(None, _))
        ));
    }

    #[test]
    fn cursors_of_another_order_or_search_are_refused() {
        let r = row("a");
        let by_name = ServerOrder::Name.cursor(&r, 0.0, None);
        let err = ServerOrder::Stars.position(&by_name, None).unwrap_err();
        assert!(err.contains("different orderBy"), "{err}");
        let relevant = ServerOrder::Relevance.cursor(&r, 1.5, Some("github"));
        let err = ServerOrder::Relevance
            .position(&relevant, Some("gitlab"))
            .unwrap_err();
        assert!(err.contains("different search"), "{err}");
        // Case does not change the search.
        assert!(
            ServerOrder::Relevance
                .position(&relevant, Some("GitHub"))
                .is_ok()
        );
        for value in ["", "s", "s:many", "r:zz:00", "u:yesterday", "q:1"] {
            let key = SortKey {
                value: value.into(),
                id: r.id,
            };
            assert!(
                ServerOrder::Stars.position(&key, None).is_err()
                    || ServerOrder::Relevance.position(&key, None).is_err()
            );
        }
        let nan = SortKey {
            value: format!("r:{:016x}:{:016x}", fingerprint(""), f64::NAN.to_bits()),
            id: r.id,
        };
        assert!(ServerOrder::Relevance.position(&nan, None).is_err());
    }

    #[test]
    fn search_text_is_trimmed_and_bounded() {
        assert_eq!(normalize_search(None), Ok(None));
        assert_eq!(normalize_search(Some("   ")), Ok(None));
        assert_eq!(
            normalize_search(Some("  git hub ")),
            Ok(Some("git hub".into()))
        );
        assert!(normalize_search(Some(&"x".repeat(MAX_SEARCH_CHARS + 1))).is_err());
        assert!(normalize_search(Some("a\u{0}b")).is_err());
    }

    #[test]
    fn only_single_words_are_matched_fuzzily() {
        assert!(is_single_word("githb"));
        assert!(is_single_word("create_issue"));
        assert!(!is_single_word("web scraping"));
        assert!(!is_single_word("-github"));
        assert!(!is_single_word("\"github\""));
    }

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(escape_like(r"50%_a\b"), r"50\%\_a\\b");
    }

    #[test]
    fn the_relevance_order_needs_a_search() {
        let f = ServerFilter::default();
        assert!(page_statement("", &f, ServerOrder::Relevance, None, 10).is_err());
        let pos = ServerPosition::Stars(1, Uuid::nil());
        assert!(page_statement("", &f, ServerOrder::Name, Some(&pos), 10).is_err());
    }
}
