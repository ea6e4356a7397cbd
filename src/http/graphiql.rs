//! Offline GraphiQL: the page and every asset it loads are served by the gateway itself.
//!
//! The GraphiQL, React and ReactDOM UMD bundles come from the npm packages pinned in
//! `web/package-lock.json` and are embedded at build time by `build.rs` under content-hashed
//! names, so they are served with immutable cache headers. Our own page template and init
//! script live in `web/src/`. When the build could not obtain the assets (no npm, no registry),
//! [`page`] answers 503 with a plain-text explanation instead of a blank page.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/graphiql_assets.rs"));
}

/// Path prefix under which [`router`] serves the assets.
const ASSETS_PREFIX: &str = "/graphiql/assets/";

/// Content-Security-Policy of the page: scripts, styles, fonts and fetch/WebSocket connections
/// only from the gateway's own origin (`'self'` also covers `ws:`/`wss:` to the same host).
/// GraphiQL's fonts and icons are `data:` URLs inside its stylesheet; `'unsafe-inline'` for
/// styles is needed by the dialogs' scroll lock, which injects a `<style>` element.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; \
     script-src 'self'; \
     style-src 'self' 'unsafe-inline'; \
     font-src 'self' data:; \
     img-src 'self' data:; \
     connect-src 'self'; \
     manifest-src 'self'; \
     base-uri 'none'; \
     form-action 'none'; \
     frame-ancestors 'self'";

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Routes serving the embedded assets at `/graphiql/assets/{file}`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route(&format!("{ASSETS_PREFIX}{{file}}"), get(asset))
}

async fn asset(Path(file): Path<String>) -> Response {
    match find_asset(&file) {
        Some((content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE)),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            bytes,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            "no such GraphiQL asset\n",
        )
            .into_response(),
    }
}

fn find_asset(file: &str) -> Option<(&'static str, &'static [u8])> {
    embedded::ASSETS
        .iter()
        .find(|(file_name, ..)| *file_name == file)
        .map(|&(_, _, content_type, bytes)| (content_type, bytes))
}

/// The GraphiQL page, posting queries to `endpoint` (`Content-Type: application/json`) and
/// running subscriptions over a WebSocket at `subscription_endpoint`. Both are paths (or
/// absolute URLs); the WebSocket URL is derived in the browser from `location.host`, with
/// `ws:` or `wss:` following the page's scheme.
///
/// Answers 503 (plain text, with instructions) if the assets were not embedded at build time.
pub fn page(endpoint: &str, subscription_endpoint: &str) -> Response {
    if let Some(reason) = embedded::UNAVAILABLE {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            format!("GraphiQL is unavailable.\n\n{reason}\n"),
        )
            .into_response();
    }
    let html = render(embedded::PAGE_TEMPLATE, |key| match key {
        "endpoint" => Some(endpoint),
        "subscription_endpoint" => Some(subscription_endpoint),
        _ => None,
    });
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            ),
        ],
        html,
    )
        .into_response()
}

/// Replaces each `{{key}}` in one pass with the HTML-escaped value given by `value`; unknown
/// placeholders are left as they are.
fn render<'a>(template: &str, value: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after
            .find("}}")
            .and_then(|end| Some((end, value(&after[..end])?)))
        {
            Some((end, v)) => {
                escape_html(v, &mut out);
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn escape_html(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(uri: &str) -> Response {
        router::<()>()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn body_text(response: Response) -> String {
        let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn header(response: &Response, name: header::HeaderName) -> &str {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn asset_url(logical: &str) -> String {
        let (file, ..) = embedded::ASSETS
            .iter()
            .find(|(_, name, ..)| *name == logical)
            .unwrap_or_else(|| panic!("{logical} is not embedded"));
        format!("{ASSETS_PREFIX}{file}")
    }

    #[test]
    fn render_escapes_and_substitutes_once() {
        let values = |k: &str| match k {
            "a" => Some("\"/x?a=1&b=<{{b}}>\""),
            "b" => Some("B"),
            _ => None,
        };
        assert_eq!(
            render("<{{a}}|{{b}}|{{c}}|{{", values),
            "<&quot;/x?a=1&amp;b=&lt;{{b}}&gt;&quot;|B|{{c}}|{{"
        );
    }

    #[tokio::test]
    async fn unknown_assets_are_404() {
        for uri in [
            "/graphiql/assets/nope.js",
            "/graphiql/assets/graphiql.min.js",
            "/graphiql/assets/..%2Fbuild.rs",
            "/graphiql/assets/",
        ] {
            let response = get(uri).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{uri}");
        }
    }

    #[tokio::test]
    async fn page_answers_503_when_assets_are_missing_or_html_otherwise() {
        let response = page("/graphql", "/graphql");
        if embedded::UNAVAILABLE.is_some() {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(header(&response, header::CONTENT_TYPE).starts_with("text/plain"));
            let text = body_text(response).await;
            assert!(text.contains("npm ci --prefix web"), "{text}");
            eprintln!("GraphiQL assets not embedded: asset checks skipped");
            return;
        }
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        let csp = header(&response, header::CONTENT_SECURITY_POLICY).to_owned();
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(csp.contains("connect-src 'self';"), "{csp}");
        let html = body_text(response).await;
        assert!(html.contains(r#"data-endpoint="/graphql""#), "{html}");
        assert!(html.contains(r#"data-subscription-endpoint="/graphql""#));
        assert!(!html.contains("{{"), "unreplaced placeholder in {html}");
        // Every script and stylesheet is same-origin, and no inline script is used.
        for tag in html.split('<').skip(1) {
            if let Some(rest) = tag.strip_prefix("script") {
                assert!(rest.starts_with(r#" src="/graphiql/assets/"#), "<{tag}");
            }
            if tag.starts_with("link") && !tag.contains(r#"href="data:,""#) {
                assert!(tag.contains(r#"href="/graphiql/assets/"#), "<{tag}");
            }
        }
        for logical in [
            "react.production.min.js",
            "react-dom.production.min.js",
            "graphiql.min.js",
            "init.js",
            "graphiql.min.css",
            "page.css",
        ] {
            assert!(html.contains(&asset_url(logical)), "{logical} not in page");
        }
        let escaped = body_text(page("/q\"><script>", "/ws")).await;
        assert!(escaped.contains(r#"data-endpoint="/q&quot;&gt;&lt;script&gt;""#));
    }

    #[tokio::test]
    async fn assets_have_content_types_and_immutable_caching() {
        if embedded::UNAVAILABLE.is_some() {
            eprintln!("GraphiQL assets not embedded: asset checks skipped");
            return;
        }
        const JS: &str = "text/javascript; charset=utf-8";
        const CSS: &str = "text/css; charset=utf-8";
        for (logical, content_type, marker) in [
            ("graphiql.min.js", JS, "GraphiQL"),
            ("react.production.min.js", JS, "react"),
            ("react-dom.production.min.js", JS, "react-dom"),
            ("init.js", JS, "createFetcher"),
            ("graphiql.min.css", CSS, ".graphiql-container"),
            ("page.css", CSS, "#graphiql"),
        ] {
            let response = get(&asset_url(logical)).await;
            assert_eq!(response.status(), StatusCode::OK, "{logical}");
            assert_eq!(header(&response, header::CONTENT_TYPE), content_type);
            assert_eq!(header(&response, header::CACHE_CONTROL), IMMUTABLE);
            assert_eq!(header(&response, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            let body = body_text(response).await;
            assert!(body.contains(marker), "{logical} lacks {marker}");
            assert!(!body.contains("sourceMappingURL="), "{logical}");
        }
    }
}
