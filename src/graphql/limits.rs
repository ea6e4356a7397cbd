//! Request policies as async-graphql extensions: operation limits (aliases, root fields) and the
//! error policy (every error carries `extensions.code`; internal detail is masked).

use crate::error::{Code, graphql_error, has_code, set_code};
use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextPrepareRequest,
    NextValidation,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{
    Request, Response, ServerError, ServerResult, ValidationResult, Value, Variables,
};

use super::shape::{Measure, Shape};

/// Bounds of introspection, which the data limits (depth, aliases) do not count.
pub mod introspection {
    /// `__schema` selections allowed per operation.
    pub const MAX_SCHEMA_FIELDS: u64 = 1;
    /// Longest `ofType` chain: what graphql-js 16's `getIntrospectionQuery` asks (9), no more.
    pub const MAX_OF_TYPE_DEPTH: usize = 9;
    /// Aliases of introspection fields allowed per operation.
    pub const MAX_ALIASES: u64 = 5;
}

/// Refuses, before anything else walks the document, operations whose fragment-expanded shape
/// is too big (selections, data depth, aliases, root fields) or asks too much of introspection,
/// and introspection itself when it is off. The document is parsed here once and handed on.
#[derive(Debug, Clone, Copy)]
pub struct OperationLimits {
    /// Most aliases of data fields.
    pub max_aliases: usize,
    /// Most root fields.
    pub max_root_fields: usize,
    /// Deepest nesting of data fields.
    pub max_depth: usize,
    /// Most fields selected with every fragment expanded.
    pub max_selections: usize,
    /// Whether introspection (`__schema`, `__type`) is allowed.
    pub introspection: bool,
}

impl ExtensionFactory for OperationLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OperationLimitsExt(*self))
    }
}

struct OperationLimitsExt(OperationLimits);

fn too_complex(message: String) -> ServerError {
    graphql_error(Code::QueryTooComplex, message, None)
}

fn over(what: &str, n: u64, max: u64) -> Result<(), ServerError> {
    if n > max {
        return Err(too_complex(format!(
            "the operation {what} {n}; at most {max} allowed"
        )));
    }
    Ok(())
}

impl OperationLimits {
    /// Checks one operation's shape against the limits.
    pub fn check(&self, shape: &Shape) -> Result<(), ServerError> {
        if shape.introspection && !self.introspection {
            return Err(graphql_error(
                Code::IntrospectionDisabled,
                "introspection is disabled on this gateway (HIVEGRAPH_INTROSPECTION)",
                None,
            ));
        }
        over(
            "selects, with fragments expanded, fields:",
            shape.selections,
            self.max_selections as u64,
        )?;
        if shape.depth > self.max_depth {
            return Err(too_complex(format!(
                "Query is nested too deep: depth {} exceeds {}",
                shape.depth, self.max_depth
            )));
        }
        over("uses aliases:", shape.aliases, self.max_aliases as u64)?;
        over(
            "selects root fields:",
            shape.root_fields,
            self.max_root_fields as u64,
        )?;
        over(
            "selects __schema times:",
            shape.schema_fields,
            introspection::MAX_SCHEMA_FIELDS,
        )?;
        over(
            "nests ofType levels:",
            shape.of_type_depth as u64,
            introspection::MAX_OF_TYPE_DEPTH as u64,
        )?;
        over(
            "aliases introspection fields:",
            shape.introspection_aliases,
            introspection::MAX_ALIASES,
        )
    }

    /// Parses `request` (kept in it for the executor) and checks every operation.
    fn admit(&self, request: &mut Request) -> Result<(), ServerError> {
        let doc = request.parsed_query().map_err(|mut e| {
            e.extensions
                .get_or_insert_with(Default::default)
                .set("code", Code::GraphqlParseFailed.as_str());
            e
        })?;
        let mut measure = Measure::new(doc);
        for (_, op) in doc.operations.iter() {
            let shape = measure
                .operation(&op.node.selection_set.node)
                .map_err(|_| too_complex("Query is nested too deep.".into()))?;
            self.check(&shape)?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Extension for OperationLimitsExt {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        self.0.admit(&mut request)?;
        next.run(ctx, request).await
    }
}

/// Gives every error an `extensions.code`, and masks resolver errors that carry none (they come
/// from `?` on a library error, whose text may hold internal detail).
pub struct ErrorPolicy;

impl ExtensionFactory for ErrorPolicy {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorPolicy)
    }
}

#[async_trait::async_trait]
impl Extension for ErrorPolicy {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables).await.map_err(|mut e| {
            if !has_code(&e) {
                set_code(&mut e, Code::GraphqlParseFailed);
            }
            e
        })
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|mut e| {
                    if !has_code(&e) {
                        let code = if e.message.contains("too complex")
                            || e.message.contains("nested too deep")
                            || e.message.contains("recursion")
                            || e.message.contains("directives")
                        {
                            Code::QueryTooComplex
                        } else {
                            Code::GraphqlValidationFailed
                        };
                        set_code(&mut e, code);
                    }
                    e
                })
                .collect()
        })
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let mut resp = next.run(ctx, operation_name).await;
        for e in &mut resp.errors {
            if !has_code(e) {
                // Input coercion errors from async-graphql name the argument; they are the
                // client's fault and safe to show.
                if e.message.starts_with("Subscriptions are not supported") {
                    // A subscription sent over HTTP: the client's mistake, with the way out.
                    e.message = "subscriptions run over a websocket (graphql-transport-ws or graphql-ws on GET /graphql), not over HTTP".into();
                    set_code(e, Code::BadRequest);
                } else if e.message.starts_with("Invalid value for argument")
                    || e.message.starts_with("Failed to parse")
                    || e.message.starts_with("Expected input type")
                {
                    set_code(e, Code::BadUserInput);
                } else {
                    tracing::error!(message = %e.message, path = ?e.path, "unmapped resolver error (masked)");
                    e.message = "internal error".into();
                    set_code(e, Code::InternalServerError);
                }
            }
        }
        if resp.data == Value::Null && resp.errors.is_empty() {
            return resp;
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};

    use super::*;
    use crate::error::AppError;

    struct Toy;

    #[Object]
    impl Toy {
        /// Fails like a library error bubbled up with `?`: its text holds internal detail.
        async fn leaky(&self) -> async_graphql::Result<i32> {
            Err(
                std::io::Error::other("connection to 10.0.0.5:5432 refused; password=hunter2")
                    .into(),
            )
        }
        /// Fails with a typed, client-facing error.
        async fn typed(&self) -> async_graphql::Result<i32> {
            Err(AppError::Conflict("busy".into()).into())
        }
        /// Succeeds.
        async fn fine(&self) -> i32 {
            1
        }
    }

    fn toy() -> Schema<Toy, EmptyMutation, EmptySubscription> {
        Schema::build(Toy, EmptyMutation, EmptySubscription)
            .extension(ErrorPolicy)
            .extension(OperationLimits {
                max_aliases: 2,
                max_root_fields: 3,
                max_depth: 3,
                max_selections: 100,
                introspection: true,
            })
            .finish()
    }

    #[tokio::test]
    async fn library_errors_are_masked_and_typed_errors_keep_their_code() {
        let resp = toy().execute("{ leaky typed fine }").await;
        let json = serde_json::to_value(&resp).unwrap();
        let text = json.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("10.0.0.5"),
            "{text}"
        );
        let codes: Vec<&str> = json["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["extensions"]["code"].as_str().unwrap())
            .collect();
        assert!(codes.contains(&"INTERNAL_SERVER_ERROR"));
        assert!(codes.contains(&"CONFLICT"));
        assert_eq!(json["data"]["fine"], 1);
    }

    #[tokio::test]
    async fn limits_apply_per_operation() {
        let resp = toy().execute("{ a: fine b: fine c: fine }").await;
        assert_eq!(
            resp.errors[0]
                .extensions
                .as_ref()
                .unwrap()
                .get("code")
                .unwrap()
                .to_string(),
            "\"QUERY_TOO_COMPLEX\""
        );
        let resp = toy().execute("{ a: fine b: fine }").await;
        assert!(resp.errors.is_empty());
    }
}
