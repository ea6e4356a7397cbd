//! Server discovery on the real ToolHive registries of shared/data: free-text search (ranked,
//! typo tolerant, over names, descriptions, categories and tool names), filters that combine,
//! every sort order with stable cursors, facet counts, bad input, and the query plans.
//!
//! The two registries are loaded by a small test-only importer (`load_registry`), independent of
//! the registry sync, from `toolhive-registry.json` (79 + 23 servers) and
//! `toolhive-registry-main.json` (the same catalogue at a later commit, with pull counts).

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use dataloaders::ServerOrder;
use dataloaders::reads::ServerFilter;
use dataloaders::search::explain_servers_page;
use diesel::sql_types::{Array, BigInt, Nullable, Text};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use hivegraph::validate::is_dns_label;
use serde::Deserialize;
use serde_json::{Value, json};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/");

#[derive(Deserialize)]
struct LegacyRegistry {
    servers: BTreeMap<String, LegacyEntry>,
    #[serde(default)]
    remote_servers: BTreeMap<String, LegacyEntry>,
}

#[derive(Deserialize, Clone)]
struct LegacyEntry {
    #[serde(default)]
    description: String,
    image: Option<String>,
    url: Option<String>,
    transport: Option<String>,
    tier: Option<String>,
    status: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    tools: Vec<String>,
    repository_url: Option<String>,
    #[serde(default)]
    metadata: Metadata,
}

#[derive(Deserialize, Clone, Default)]
struct Metadata {
    stars: Option<i64>,
    pulls: Option<i64>,
    last_updated: Option<String>,
}

/// A server as the test expects the gateway to hold it.
#[derive(Clone, Debug)]
struct Expected {
    registry: String,
    name: String,
    transport: &'static str,
    tier: &'static str,
    status: &'static str,
    category: Vec<String>,
    capabilities: Vec<String>,
}

fn transport(raw: Option<&str>, remote: bool) -> &'static str {
    match raw {
        Some("stdio") => "stdio",
        Some("sse") => "sse",
        Some("streamable-http") | Some("http") => "http",
        _ if remote => "sse",
        _ => "stdio",
    }
}

/// Registers `registry` and stores the servers of a legacy registry.json file; returns what was
/// stored.
async fn load_registry(app: &TestApp, registry: &str, file: &str) -> Vec<Expected> {
    let text = std::fs::read_to_string(format!("{DATA}{file}")).expect("shared data is present");
    let doc: LegacyRegistry = serde_json::from_str(&text).expect("a legacy registry document");
    let mut conn = app.db.conn().await;
    conn.batch_execute(&format!(
        "INSERT INTO registries (name, url, status, format, last_sync_at) \
         VALUES ('{registry}', 'https://registry.example.com/{registry}.json', 'active', 'toolhive', now())"
    ))
    .await
    .unwrap();
    let mut stored = Vec::new();
    let entries = doc
        .servers
        .into_iter()
        .map(|e| (e, false))
        .chain(doc.remote_servers.into_iter().map(|e| (e, true)));
    for ((name, e), remote) in entries {
        if !is_dns_label(&name) || (e.image.is_none() && e.url.is_none()) {
            continue;
        }
        let exp = Expected {
            registry: registry.to_string(),
            name: name.clone(),
            transport: transport(e.transport.as_deref(), remote),
            tier: match e.tier.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("official") => "official",
                _ => "community",
            },
            status: match e.status.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("active") | Some("available") | None => "available",
                Some("deprecated") => "deprecated",
                _ => "experimental",
            },
            category: e.tags.clone(),
            capabilities: e.tools.clone(),
        };
        diesel::sql_query(
            "INSERT INTO servers (registry_id, name, original_name, description, image, url, \
               transport, tier, status, category, capabilities, repository_url, pull_count, \
               stars, last_updated) \
             SELECT id, $2, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::timestamptz \
             FROM registries WHERE name = $1",
        )
        .bind::<Text, _>(registry)
        .bind::<Text, _>(&name)
        .bind::<Text, _>(&e.description)
        .bind::<Nullable<Text>, _>(e.image.as_deref())
        .bind::<Nullable<Text>, _>(e.url.as_deref())
        .bind::<Text, _>(exp.transport)
        .bind::<Text, _>(exp.tier)
        .bind::<Text, _>(exp.status)
        .bind::<Array<Text>, _>(&e.tags)
        .bind::<Array<Text>, _>(&e.tools)
        .bind::<Nullable<Text>, _>(e.repository_url.as_deref())
        .bind::<BigInt, _>(e.metadata.pulls.unwrap_or(0))
        .bind::<BigInt, _>(e.metadata.stars.unwrap_or(0))
        .bind::<Nullable<Text>, _>(e.metadata.last_updated.as_deref())
        .execute(&mut conn)
        .await
        .unwrap_or_else(|err| panic!("insert {name}: {err}"));
        stored.push(exp);
    }
    stored
}

struct Catalogue {
    app: TestApp,
    servers: Vec<Expected>,
    /// Registry name → global id.
    ids: BTreeMap<String, String>,
}

async fn catalogue() -> Catalogue {
    let app = TestApp::spawn().await;
    let mut servers = load_registry(&app, "toolhive", "toolhive-registry.json").await;
    servers.extend(load_registry(&app, "toolhive-main", "toolhive-registry-main.json").await);
    assert!(servers.len() > 200, "both real registries are loaded");
    let regs = app
        .graphql("{ registries { edges { node { id name } } } }", json!({}))
        .await;
    let ids = regs["data"]["registries"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["node"]["name"].as_str().unwrap().to_string(),
                e["node"]["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    Catalogue { app, servers, ids }
}

const SERVERS: &str = r#"
query($filter: ServerFilterInput, $search: String, $orderBy: ServerOrder, $first: Int, $after: String) {
  servers(filter: $filter, search: $search, orderBy: $orderBy, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { cursor node {
      name stars pullCount lastUpdated transport tier status category capabilities
      registry { name }
    } }
  }
}"#;

async fn servers(app: &TestApp, vars: Value) -> Value {
    let r = app.graphql(SERVERS, vars).await;
    assert_ok(&r);
    r["data"]["servers"].clone()
}

fn nodes(conn: &Value) -> Vec<Value> {
    conn["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect()
}

fn names(conn: &Value) -> Vec<String> {
    nodes(conn)
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect()
}

/// Walks every page of a list; returns its nodes in order.
async fn walk(app: &TestApp, mut vars: Value, page: i64) -> Vec<Value> {
    let mut all = Vec::new();
    vars["first"] = json!(page);
    loop {
        let conn = servers(app, vars.clone()).await;
        let batch = nodes(&conn);
        assert!(batch.len() as i64 <= page);
        all.extend(batch);
        if conn["pageInfo"]["hasNextPage"] != json!(true) {
            assert_eq!(conn["totalCount"].as_u64().unwrap() as usize, all.len());
            return all;
        }
        vars["after"] = conn["pageInfo"]["endCursor"].clone();
    }
}

#[tokio::test]
async fn searching_github_finds_the_github_servers_first() {
    let c = catalogue().await;
    let conn = servers(&c.app, json!({ "search": "github", "first": 10 })).await;
    let found = names(&conn);
    // Both registries list `github` and `github-remote`: those four come first, exact name first.
    assert_eq!(
        &found[..4],
        &["github", "github", "github-remote", "github-remote"],
        "{found:?}"
    );
    assert!(
        found.iter().any(|n| n == "git"),
        "similar names follow: {found:?}"
    );
    assert!(!found.iter().any(|n| n == "sqlite"), "{found:?}");
    // Narrowed to one registry, the order holds.
    let one = servers(
        &c.app,
        json!({ "search": "GitHub", "filter": { "registryIds": [c.ids["toolhive"]] } }),
    )
    .await;
    assert_eq!(&names(&one)[..2], &["github", "github-remote"]);
    assert!(
        nodes(&one)
            .iter()
            .all(|n| n["registry"]["name"] == "toolhive")
    );
}

#[tokio::test]
async fn typos_partial_names_tool_names_and_descriptions_are_found() {
    let c = catalogue().await;
    for (search, first) in [
        ("githb", "github"),
        ("grafna", "grafana"),
        ("playwrite", "playwright"),
        ("postgres", "postgres-mcp-pro"),
        ("database", "database-toolbox"),
    ] {
        let found = names(&servers(&c.app, json!({ "search": search, "first": 5 })).await);
        assert_eq!(
            found.as_slice().first().map(String::as_str),
            Some(first),
            "{search}: {found:?}"
        );
    }
    // A tool name: every server offering `create_issue` is found, and only matching servers.
    let conn = servers(&c.app, json!({ "search": "create_issue", "first": 100 })).await;
    let found: BTreeSet<String> = names(&conn).into_iter().collect();
    let offering: BTreeSet<String> = c
        .servers
        .iter()
        .filter(|s| s.capabilities.iter().any(|t| t == "create_issue"))
        .map(|s| s.name.clone())
        .collect();
    assert!(!offering.is_empty());
    assert!(offering.is_subset(&found), "{offering:?} ⊄ {found:?}");
    // Web-search syntax: both words must match, `-word` excludes.
    let both = names(&servers(&c.app, json!({ "search": "web scraping", "first": 100 })).await);
    assert!(both.contains(&"firecrawl".to_string()), "{both:?}");
    let without = names(
        &servers(
            &c.app,
            json!({ "search": "web scraping -firecrawl", "first": 100 }),
        )
        .await,
    );
    assert!(!without.contains(&"firecrawl".to_string()), "{without:?}");
    assert!(without.len() < both.len());
    // An exclusion alone keeps every server but those whose name or tags hold the word, whatever
    // configuration stems it (`postgres` is `postgr` in English).
    let all = servers(&c.app, json!({ "first": 1 })).await["totalCount"]
        .as_i64()
        .unwrap();
    let mut kept = Vec::new();
    let mut vars = json!({ "search": "-postgres", "first": 100 });
    loop {
        let conn = servers(&c.app, vars.clone()).await;
        kept.extend(
            conn["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"].clone()),
        );
        if conn["pageInfo"]["hasNextPage"] != json!(true) {
            break;
        }
        vars["after"] = conn["pageInfo"]["endCursor"].clone();
    }
    let holds = |v: &Value| {
        v.as_str()
            .is_some_and(|t| t.to_lowercase().contains("postgres"))
    };
    for s in &kept {
        assert!(!holds(&s["name"]), "{s}");
        let tags = s["category"].as_array().unwrap();
        assert!(!tags.iter().any(holds), "{s}");
    }
    let with_word = c
        .servers
        .iter()
        .filter(|s| s.name.to_lowercase().contains("postgres"))
        .count();
    assert!(with_word > 0);
    assert!(
        kept.len() as i64 <= all - with_word as i64,
        "{} of {all} kept, {with_word} named with the word",
        kept.len()
    );
    // Nothing to search for in punctuation: no match, no error.
    let none = servers(&c.app, json!({ "search": "!!!" })).await;
    assert_eq!(none["totalCount"], 0);
}

/// The servers the test data says match a filter.
fn expected_matches(c: &Catalogue, keep: impl Fn(&Expected) -> bool) -> BTreeSet<(String, String)> {
    c.servers
        .iter()
        .filter(|s| keep(s))
        .map(|s| (s.registry.clone(), s.name.clone()))
        .collect()
}

fn got_matches(all: &[Value]) -> BTreeSet<(String, String)> {
    let set: BTreeSet<(String, String)> = all
        .iter()
        .map(|n| {
            (
                n["registry"]["name"].as_str().unwrap().to_string(),
                n["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(set.len(), all.len(), "no server is listed twice");
    set
}

#[tokio::test]
async fn filters_combine_and_agree_with_the_source_data() {
    let c = catalogue().await;
    let main = c.ids["toolhive-main"].clone();
    type Keep = Box<dyn Fn(&Expected) -> bool>;
    let cases: Vec<(Value, Keep)> = vec![
        (
            json!({ "registryIds": [main.clone()] }),
            Box::new(|s: &Expected| s.registry == "toolhive-main"),
        ),
        (
            json!({ "category": ["database"] }),
            Box::new(|s: &Expected| s.category.iter().any(|t| t == "database")),
        ),
        (
            // Categories match whatever their case.
            json!({ "category": ["Database"] }),
            Box::new(|s: &Expected| s.category.iter().any(|t| t == "database")),
        ),
        (
            json!({ "category": ["database", "sql"] }),
            Box::new(|s: &Expected| {
                s.category.iter().any(|t| t == "database") && s.category.iter().any(|t| t == "sql")
            }),
        ),
        (
            json!({ "capabilities": ["list_projects"] }),
            Box::new(|s: &Expected| s.capabilities.iter().any(|t| t == "list_projects")),
        ),
        (
            json!({ "tier": ["COMMUNITY"], "transport": ["STDIO"] }),
            Box::new(|s: &Expected| s.tier == "community" && s.transport == "stdio"),
        ),
        (
            json!({ "status": ["DEPRECATED"] }),
            Box::new(|s: &Expected| s.status == "deprecated"),
        ),
        (
            json!({ "registryIds": [main.clone()], "tier": ["OFFICIAL"], "transport": ["HTTP", "SSE"],
                    "status": ["AVAILABLE"], "category": ["remote"] }),
            Box::new(|s: &Expected| {
                s.registry == "toolhive-main"
                    && s.tier == "official"
                    && (s.transport == "http" || s.transport == "sse")
                    && s.status == "available"
                    && s.category.iter().any(|t| t == "remote")
            }),
        ),
    ];
    for (filter, keep) in cases {
        let expected = expected_matches(&c, keep);
        assert!(!expected.is_empty(), "the case {filter} selects something");
        let all = walk(&c.app, json!({ "filter": filter }), 40).await;
        assert_eq!(got_matches(&all), expected, "filter {filter}");
    }
    // Filters also combine with a search.
    let all = walk(
        &c.app,
        json!({ "filter": { "registryIds": [main], "tier": ["OFFICIAL"] }, "search": "git" }),
        10,
    )
    .await;
    assert!(!all.is_empty());
    assert!(
        all.iter()
            .all(|n| n["tier"] == "OFFICIAL" && n["registry"]["name"] == "toolhive-main")
    );
}

/// The list in the order PostgreSQL gives for `order_by`, as (registry, name) pairs.
async fn db_order(app: &TestApp, order_by: &str) -> Vec<(String, String)> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        registry: String,
        #[diesel(sql_type = Text)]
        name: String,
    }
    let mut conn = app.db.conn().await;
    diesel::sql_query(format!(
        "SELECT r.name AS registry, s.name FROM servers s JOIN registries r ON r.id = s.registry_id ORDER BY {order_by}"
    ))
    .load::<Row>(&mut conn)
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.registry, r.name))
    .collect()
}

#[tokio::test]
async fn every_sort_order_pages_stably_through_the_whole_list() {
    let c = catalogue().await;
    for (order, sql) in [
        ("NAME", "s.name, s.id"),
        ("STARS", "s.stars DESC, s.id DESC"),
        ("PULLS", "s.pull_count DESC, s.id DESC"),
        (
            "LAST_UPDATED",
            "coalesce(s.last_updated, '-infinity') DESC, s.id DESC",
        ),
    ] {
        let all = walk(&c.app, json!({ "orderBy": order }), 17).await;
        assert_eq!(all.len(), c.servers.len(), "{order}");
        let got: Vec<(String, String)> = all
            .iter()
            .map(|n| {
                (
                    n["registry"]["name"].as_str().unwrap().to_string(),
                    n["name"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(got, db_order(&c.app, sql).await, "{order}");
        // The values themselves are monotonic.
        let key = |n: &Value| match order {
            "STARS" => n["stars"].as_i64().unwrap(),
            "PULLS" => n["pullCount"].as_i64().unwrap(),
            _ => 0,
        };
        assert!(all.windows(2).all(|w| key(&w[0]) >= key(&w[1])), "{order}");
    }
    // Servers without an update time come last.
    let by_date = walk(&c.app, json!({ "orderBy": "LAST_UPDATED" }), 50).await;
    let first_null = by_date.iter().position(|n| n["lastUpdated"].is_null());
    if let Some(i) = first_null {
        assert!(by_date[i..].iter().all(|n| n["lastUpdated"].is_null()));
    }
    // Relevance pages through the matches without repeats and agrees with one big page.
    let paged = walk(&c.app, json!({ "search": "database" }), 3).await;
    let big = nodes(&servers(&c.app, json!({ "search": "database", "first": 100 })).await);
    assert_eq!(got_matches(&paged), got_matches(&big));
    assert_eq!(
        paged.iter().map(|n| n["name"].clone()).collect::<Vec<_>>(),
        big.iter().map(|n| n["name"].clone()).collect::<Vec<_>>()
    );
    // A relevance search can be sorted otherwise: the same matches, by stars.
    let by_stars = walk(
        &c.app,
        json!({ "search": "database", "orderBy": "STARS" }),
        4,
    )
    .await;
    assert_eq!(got_matches(&by_stars), got_matches(&big));
    assert!(
        by_stars
            .windows(2)
            .all(|w| w[0]["stars"].as_i64() >= w[1]["stars"].as_i64())
    );
}

#[tokio::test]
async fn bad_input_is_refused_and_blank_search_means_no_search() {
    let c = catalogue().await;
    let refuse = |resp: &Value, field: &str| {
        assert_eq!(
            error_code(resp).as_deref(),
            Some("BAD_USER_INPUT"),
            "{resp}"
        );
        assert_eq!(error_field(resp).as_deref(), Some(field), "{resp}");
    };
    // RELEVANCE needs a search.
    refuse(
        &c.app
            .graphql(SERVERS, json!({ "orderBy": "RELEVANCE" }))
            .await,
        "orderBy",
    );
    refuse(
        &c.app
            .graphql(SERVERS, json!({ "orderBy": "RELEVANCE", "search": "  " }))
            .await,
        "orderBy",
    );
    // A cursor is bound to its order and its search.
    let by_name = servers(&c.app, json!({ "first": 2 })).await;
    let cursor = by_name["pageInfo"]["endCursor"].clone();
    let other_order = c
        .app
        .graphql(SERVERS, json!({ "orderBy": "STARS", "after": cursor }))
        .await;
    refuse(&other_order, "after");
    let searched = servers(&c.app, json!({ "search": "github", "first": 2 })).await;
    let other_search = c
        .app
        .graphql(
            SERVERS,
            json!({ "search": "gitlab", "after": searched["pageInfo"]["endCursor"] }),
        )
        .await;
    refuse(&other_search, "after");
    // Garbage cursors.
    for bad in [
        "nonsense",
        "",
        "eyJ2YWx1ZSI6InM6bWFueSIsImlkIjoiMDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAwIn0",
    ] {
        let r = c
            .app
            .graphql(SERVERS, json!({ "orderBy": "STARS", "after": bad }))
            .await;
        refuse(&r, "after");
    }
    // Search text limits.
    refuse(
        &c.app
            .graphql(SERVERS, json!({ "search": "x".repeat(201) }))
            .await,
        "search",
    );
    refuse(
        &c.app.graphql(SERVERS, json!({ "search": "a\u{1}b" })).await,
        "search",
    );
    // Page size and facet limits.
    refuse(
        &c.app.graphql(SERVERS, json!({ "first": 0 })).await,
        "first",
    );
    refuse(
        &c.app
            .graphql("{ serverFacets(limit: 0) { totalCount } }", json!({}))
            .await,
        "limit",
    );
    // Unknown enum values are refused by validation.
    let r = c
        .app
        .graphql(SERVERS, json!({ "orderBy": "POPULARITY" }))
        .await;
    assert!(r["errors"].is_array(), "{r}");
    // A blank search is no search: everything, by name.
    let blank = servers(&c.app, json!({ "search": "   ", "first": 3 })).await;
    assert_eq!(
        blank["totalCount"].as_u64().unwrap() as usize,
        c.servers.len()
    );
    let by_name_names = names(&by_name);
    assert_eq!(&names(&blank)[..2], &by_name_names[..]);
}

const FACETS: &str = r#"
query($filter: ServerFilterInput, $search: String, $limit: Int) {
  serverFacets(filter: $filter, search: $search, limit: $limit) {
    totalCount
    category { value count }
    capabilities { value count }
  }
}"#;

#[tokio::test]
async fn facets_count_with_the_same_filter_and_search() {
    let c = catalogue().await;
    let main = c.ids["toolhive-main"].clone();
    let r = c
        .app
        .graphql(
            FACETS,
            json!({ "filter": { "registryIds": [main.clone()] }, "limit": 500 }),
        )
        .await;
    assert_ok(&r);
    let f = &r["data"]["serverFacets"];
    let in_main: Vec<&Expected> = c
        .servers
        .iter()
        .filter(|s| s.registry == "toolhive-main")
        .collect();
    assert_eq!(f["totalCount"].as_u64().unwrap() as usize, in_main.len());
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for s in &in_main {
        for t in &s.category {
            *expected.entry(t.clone()).or_default() += 1;
        }
    }
    let got: BTreeMap<String, i64> = f["category"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["value"].as_str().unwrap().to_string(),
                v["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, expected);
    // Most frequent first, ties by value.
    let counts: Vec<(i64, String)> = f["category"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                -v["count"].as_i64().unwrap(),
                v["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut sorted = counts.clone();
    sorted.sort();
    assert_eq!(counts, sorted);
    assert_eq!(f["category"][0]["value"], "remote");

    // With a search, each facet count is the totalCount of `servers` with that value added to
    // the filter.
    let r = c
        .app
        .graphql(FACETS, json!({ "search": "database", "limit": 5 }))
        .await;
    assert_ok(&r);
    let f = &r["data"]["serverFacets"];
    let total =
        servers(&c.app, json!({ "search": "database", "first": 1 })).await["totalCount"].clone();
    assert_eq!(f["totalCount"], total);
    assert_eq!(f["category"].as_array().unwrap().len(), 5);
    for facet in ["category", "capabilities"] {
        for v in f[facet].as_array().unwrap() {
            let conn = servers(
                &c.app,
                json!({ "search": "database", "filter": { facet: [v["value"]] }, "first": 1 }),
            )
            .await;
            assert_eq!(conn["totalCount"], v["count"], "{facet} {}", v["value"]);
        }
    }
    // Facets of nothing are empty.
    let r = c.app.graphql(FACETS, json!({ "search": "!!!" })).await;
    assert_ok(&r);
    assert_eq!(r["data"]["serverFacets"]["totalCount"], 0);
    assert_eq!(r["data"]["serverFacets"]["category"], json!([]));
}

#[tokio::test]
async fn every_filter_and_sort_runs_on_an_index() {
    let c = catalogue().await;
    let mut conn = c.app.db.conn().await;
    // Grow the table so that an index is worth using, then forbid sequential scans: a plan that
    // still scans `servers` sequentially has no index to use.
    conn.batch_execute(
        "INSERT INTO servers (registry_id, name, original_name, description, image, transport, tier, \
           status, category, capabilities, pull_count, stars, last_updated) \
         SELECT r.id, 'synthetic-' || g, 'synthetic-' || g, 'Synthetic server number ' || g, \
           'ghcr.io/x/s:' || g, (ARRAY['stdio','http','sse'])[1 + g % 3], \
           (ARRAY['official','community'])[1 + g % 2], (ARRAY['available','experimental'])[1 + g % 2], \
           ARRAY['cat-' || (g % 50)], ARRAY['tool_' || (g % 200)], g * 13 % 10007, g * 7 % 5003, \
           now() - make_interval(mins => g) \
         FROM registries r, generate_series(1, 5000) g WHERE r.name = 'toolhive'; \
         ANALYZE servers; SET enable_seqscan = off;",
    )
    .await
    .unwrap();
    let reg: uuid::Uuid = hivegraph::ids::decode_any(&c.ids["toolhive"]).unwrap().1;
    use dataloaders::enums::*;
    let filters: Vec<(&str, ServerFilter)> = vec![
        ("none", ServerFilter::default()),
        (
            "registry",
            ServerFilter {
                registry_ids: Some(vec![reg]),
                ..Default::default()
            },
        ),
        (
            "category",
            ServerFilter {
                category: Some(vec!["database".into()]),
                ..Default::default()
            },
        ),
        (
            "capability",
            ServerFilter {
                capabilities: Some(vec!["create_issue".into()]),
                ..Default::default()
            },
        ),
        (
            "tier",
            ServerFilter {
                tier: Some(vec![ServerTier::Official]),
                ..Default::default()
            },
        ),
        (
            "status",
            ServerFilter {
                status: Some(vec![ServerStatus::Deprecated]),
                ..Default::default()
            },
        ),
        (
            "transport",
            ServerFilter {
                transport: Some(vec![Transport::Sse]),
                ..Default::default()
            },
        ),
        (
            "search",
            ServerFilter {
                search: Some("github".into()),
                ..Default::default()
            },
        ),
        (
            "combined",
            ServerFilter {
                registry_ids: Some(vec![reg]),
                category: Some(vec!["remote".into()]),
                tier: Some(vec![ServerTier::Official]),
                search: Some("git".into()),
                ..Default::default()
            },
        ),
    ];
    let orders = [
        ServerOrder::Name,
        ServerOrder::Stars,
        ServerOrder::Pulls,
        ServerOrder::LastUpdated,
    ];
    for (what, filter) in &filters {
        let mut orders: Vec<ServerOrder> = orders.to_vec();
        if filter.search.is_some() {
            orders.push(ServerOrder::Relevance);
        }
        for order in orders {
            let plan = explain_servers_page(&mut conn, filter, order, None, 21)
                .await
                .unwrap();
            assert!(
                !plan.contains("Seq Scan on servers"),
                "{what} / {order:?} scans sequentially:\n{plan}"
            );
            assert!(plan.contains("Index"), "{what} / {order:?}:\n{plan}");
        }
    }
    // Sorting alone is read in index order, with no sort step.
    for (order, index) in [
        (ServerOrder::Name, "servers_name_id_idx"),
        (ServerOrder::Stars, "servers_stars_id_idx"),
        (ServerOrder::Pulls, "servers_pulls_id_idx"),
        (ServerOrder::LastUpdated, "servers_last_updated_id_idx"),
    ] {
        let plan = explain_servers_page(&mut conn, &ServerFilter::default(), order, None, 21)
            .await
            .unwrap();
        assert!(plan.contains(index), "{order:?}:\n{plan}");
        assert!(!plan.contains("Sort"), "{order:?} sorts:\n{plan}");
    }
    // The search uses the full-text and trigram indexes.
    let plan = explain_servers_page(
        &mut conn,
        &ServerFilter {
            search: Some("github".into()),
            ..Default::default()
        },
        ServerOrder::Relevance,
        None,
        21,
    )
    .await
    .unwrap();
    assert!(plan.contains("servers_search_document_gin"), "{plan}");
    assert!(plan.contains("servers_name_trgm"), "{plan}");
}

#[tokio::test]
async fn the_search_migration_reverts_and_reapplies_cleanly() {
    const DIR: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/migrations/2026-11-27-000020_search/"
    );
    let up = std::fs::read_to_string(format!("{DIR}up.sql")).unwrap();
    let down = std::fs::read_to_string(format!("{DIR}down.sql")).unwrap();
    let c = catalogue().await;
    let objects = "SELECT count(*) FROM pg_class WHERE relname IN ('servers_search_document_gin', \
                   'servers_name_trgm', 'servers_name_id_idx', 'servers_stars_id_idx', 'servers_pulls_id_idx', \
                   'servers_last_updated_id_idx', 'servers_transport_idx', 'servers_tier_idx', 'servers_status_idx')";
    assert_eq!(c.app.db.scalar(objects).await.as_deref(), Some("9"));
    let mut conn = c.app.db.conn().await;
    conn.batch_execute(&down).await.expect("down.sql runs");
    assert_eq!(c.app.db.scalar(objects).await.as_deref(), Some("0"));
    assert_eq!(
        c.app
            .db
            .scalar("SELECT count(*) FROM pg_proc WHERE proname LIKE 'servers_search_%'")
            .await
            .as_deref(),
        Some("0")
    );
    // Without it, search fails (as an internal error), other reads still work.
    let r = c.app.graphql(SERVERS, json!({ "search": "github" })).await;
    assert_eq!(
        error_code(&r).as_deref(),
        Some("INTERNAL_SERVER_ERROR"),
        "{r}"
    );
    assert_ok(&c.app.graphql(SERVERS, json!({ "orderBy": "STARS" })).await);
    conn.batch_execute(&up).await.expect("up.sql runs again");
    assert_eq!(c.app.db.scalar(objects).await.as_deref(), Some("9"));
    let found = names(&servers(&c.app, json!({ "search": "github", "first": 1 })).await);
    assert_eq!(found, ["github"]);
}

/// The search document is computed by PL/pgSQL since migration 000120: the vectors must be
/// byte-identical to the SQL expression it replaced (the index built before stays valid), for
/// the real catalogue and for edge cases (NULL and empty arrays, quotes, backslashes, prose).
#[tokio::test]
async fn the_plpgsql_search_document_equals_the_sql_expression() {
    let c = catalogue().await;
    let lang = "SELECT l.lanname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang \
                WHERE p.proname = 'servers_search_document'";
    assert_eq!(c.app.db.scalar(lang).await.as_deref(), Some("plpgsql"));
    let expression = "setweight(to_tsvector('simple'::regconfig, coalesce(n, '')), 'A') \
        || setweight(to_tsvector('simple'::regconfig, coalesce(array_to_string(caps, ' '), '')), 'B') \
        || setweight(to_tsvector('simple'::regconfig, coalesce(array_to_string(cats, ' '), '')), 'C') \
        || setweight(to_tsvector('english'::regconfig, coalesce(d, '')), 'D')";
    let rows = "SELECT name AS n, description AS d, capabilities AS caps, category AS cats FROM servers \
        UNION ALL VALUES (NULL, NULL, NULL::text[], NULL::text[]), ('', '', '{}', '{}'), \
        ('github-remote', 'Creates issues; the runners ran', '{create_issue,\"a \\\"q\\\" b\",\"x\\\\y\"}', \
         '{Data Science,NULL}'), ('a.b/c_d', 'Ünïcode wörds and 42 numbers', '{\"\",\" \"}', '{NULL,\"\"}')";
    let differing = format!(
        "SELECT count(*) FROM ({rows}) r \
         WHERE servers_search_document(n, d, caps, cats)::text IS DISTINCT FROM ({expression})::text"
    );
    let total = format!("SELECT count(*) FROM ({rows}) r");
    assert_eq!(c.app.db.scalar(&differing).await.as_deref(), Some("0"));
    let total: usize = c.app.db.scalar(&total).await.unwrap().parse().unwrap();
    assert!(total > 200, "{total}");
}
