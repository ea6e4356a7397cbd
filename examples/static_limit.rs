//! The physical limit for the nested-query benchmark (`scripts/bench`): axum on tokio answering
//! every `POST /graphql` with the same precomputed bytes (a real answer of the gateway, read from
//! a file), with no parsing, no planning and no database. The gateway's cached throughput is
//! reported as a fraction of this.
//!
//! Usage: `static_limit LISTEN_ADDR RESPONSE_FILE`

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::routing::{get, post};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: static_limit LISTEN_ADDR RESPONSE_FILE";
    let addr: SocketAddr = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let body = Bytes::from(std::fs::read(
        args.next().ok_or_else(|| anyhow::anyhow!(usage))?,
    )?);
    let app = Router::new()
        .route(
            "/graphql",
            post(move |_request: Bytes| {
                let body = body.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
            }),
        )
        .route("/readyz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
