//! Kubernetes API clients whose failed calls are counted on `/metrics`, by API server (the
//! cluster's endpoint: several registered clusters may share one) and HTTP status code
//! (`hivegraph_cluster_api_errors_total`; code 0: no answer). kube-rs gives every
//! call a `HTTP` span of its own, exported as a child span when tracing is on.

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{Request, Response};
use futures_util::future::BoxFuture;
use kube::client::Body;

/// A client of `config` whose failures count against `endpoint`.
pub(super) fn client(config: kube::Config, endpoint: &str) -> Result<kube::Client, kube::Error> {
    let layer = CountErrorsLayer(endpoint.into());
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&layer)
        .build())
}

struct CountErrorsLayer(Arc<str>);

impl<S> tower::Layer<S> for CountErrorsLayer {
    type Service = CountErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountErrors {
            inner,
            endpoint: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct CountErrors<S> {
    inner: S,
    endpoint: Arc<str>,
}

impl<S, B> tower::Service<Request<Body>> for CountErrors<S>
where
    S: tower::Service<Request<Body>, Response = Response<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let answer = self.inner.call(req);
        let endpoint = self.endpoint.clone();
        Box::pin(async move {
            let r = answer.await;
            match &r {
                Ok(resp) if resp.status().as_u16() >= 400 => {
                    crate::metrics::k8s_api_error(&endpoint, resp.status().as_u16())
                }
                Err(_) => crate::metrics::k8s_api_error(&endpoint, 0),
                Ok(_) => {}
            }
            r
        })
    }
}
