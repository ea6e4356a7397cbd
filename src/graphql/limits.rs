//! Request policies as async-graphql extensions: operation limits (aliases, root fields) and the
//! error policy (every error carries `extensions.code`; internal detail is masked).

use std::collections::HashSet;
use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextValidation,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Response, ServerError, ServerResult, ValidationResult, Value, Variables};

/// Rejects operations with too many aliases or root fields (alias and batching attacks).
pub struct OperationLimits {
    pub max_aliases: usize,
    pub max_root_fields: usize,
}

impl ExtensionFactory for OperationLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OperationLimitsExt {
            max_aliases: self.max_aliases,
            max_root_fields: self.max_root_fields,
        })
    }
}

struct OperationLimitsExt {
    max_aliases: usize,
    max_root_fields: usize,
}

fn too_complex(message: String) -> ServerError {
    let mut e = ServerError::new(message, None);
    let mut ext = async_graphql::ErrorExtensionValues::default();
    ext.set("code", "QUERY_TOO_COMPLEX");
    e.extensions = Some(ext);
    e
}

/// Counts aliases in a selection set, following fragment spreads once each per path.
fn count_aliases(
    doc: &ExecutableDocument,
    set: &SelectionSet,
    visiting: &mut HashSet<String>,
) -> usize {
    let mut n = 0;
    for sel in &set.items {
        match &sel.node {
            Selection::Field(f) => {
                if f.node.alias.is_some() {
                    n += 1;
                }
                n += count_aliases(doc, &f.node.selection_set.node, visiting);
            }
            Selection::InlineFragment(fr) => {
                n += count_aliases(doc, &fr.node.selection_set.node, visiting)
            }
            Selection::FragmentSpread(sp) => {
                let name = sp.node.fragment_name.node.to_string();
                if visiting.insert(name.clone()) {
                    if let Some(fragment) = doc.fragments.get(&sp.node.fragment_name.node) {
                        n += count_aliases(doc, &fragment.node.selection_set.node, visiting);
                    }
                    visiting.remove(&name);
                }
            }
        }
    }
    n
}

/// Counts the fields selected at the root of an operation.
fn count_root_fields(
    doc: &ExecutableDocument,
    set: &SelectionSet,
    visiting: &mut HashSet<String>,
) -> usize {
    let mut n = 0;
    for sel in &set.items {
        match &sel.node {
            Selection::Field(_) => n += 1,
            Selection::InlineFragment(fr) => {
                n += count_root_fields(doc, &fr.node.selection_set.node, visiting)
            }
            Selection::FragmentSpread(sp) => {
                let name = sp.node.fragment_name.node.to_string();
                if visiting.insert(name.clone()) {
                    if let Some(fragment) = doc.fragments.get(&sp.node.fragment_name.node) {
                        n += count_root_fields(doc, &fragment.node.selection_set.node, visiting);
                    }
                    visiting.remove(&name);
                }
            }
        }
    }
    n
}

#[async_trait::async_trait]
impl Extension for OperationLimitsExt {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        for (_, op) in doc.operations.iter() {
            let set = &op.node.selection_set.node;
            let aliases = count_aliases(&doc, set, &mut HashSet::new());
            if aliases > self.max_aliases {
                return Err(too_complex(format!(
                    "the operation uses {aliases} aliases; at most {} are allowed",
                    self.max_aliases
                )));
            }
            let roots = count_root_fields(&doc, set, &mut HashSet::new());
            if roots > self.max_root_fields {
                return Err(too_complex(format!(
                    "the operation selects {roots} root fields; at most {} are allowed",
                    self.max_root_fields
                )));
            }
        }
        Ok(doc)
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

fn has_code(e: &ServerError) -> bool {
    e.extensions
        .as_ref()
        .is_some_and(|x| x.get("code").is_some())
}

fn set_code(e: &mut ServerError, code: &str) {
    e.extensions
        .get_or_insert_with(Default::default)
        .set("code", code);
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
                set_code(&mut e, "GRAPHQL_PARSE_FAILED");
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
                            "QUERY_TOO_COMPLEX"
                        } else {
                            "GRAPHQL_VALIDATION_FAILED"
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
                if e.message.starts_with("Invalid value for argument")
                    || e.message.starts_with("Failed to parse")
                    || e.message.starts_with("Expected input type")
                {
                    set_code(e, "BAD_USER_INPUT");
                } else {
                    tracing::error!(message = %e.message, path = ?e.path, "unmapped resolver error (masked)");
                    e.message = "internal error".into();
                    set_code(e, "INTERNAL_SERVER_ERROR");
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
