//! What GraphQL clients expect from the spec, as one async-graphql extension ([`SpecConformance`]):
//!
//! - **Field errors** ("Handling Field Errors"): a nullable field whose resolver fails is `null`
//!   in `data` (async-graphql leaves the key out); a failing non-null field nulls its parent, up
//!   to `data` itself for a non-null root field.
//! - **Request checks before anything is charged** (registered after the rate limit, so a refused
//!   request costs nothing): the operation to run must exist (`GRAPHQL_VALIDATION_FAILED`), every
//!   required variable must be given, and no string input (variable or literal) may hold a
//!   control character (`BAD_USER_INPUT` naming the variable or argument in `extensions.field`).

use crate::error::{Code, graphql_error};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextPrepareRequest,
    NextResolve, NextSubscribe, NextValidation, ResolveInfo,
};
use async_graphql::parser::types::{
    ExecutableDocument, OperationDefinition, Selection, SelectionSet,
};
use async_graphql::{
    Name, PathSegment, QueryPathNode, QueryPathSegment, Request, Response, ServerError,
    ServerResult, ValidationResult, Value, Variables,
};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

/// The extension; see the module documentation.
pub struct SpecConformance;

impl ExtensionFactory for SpecConformance {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(SpecExt::default())
    }
}

#[derive(Default)]
struct SpecExt {
    operation_name: Mutex<Option<String>>,
    doc: Mutex<Option<(ExecutableDocument, Variables)>>,
    /// Errors of nullable fields answered as `null`, added to the response.
    nulled: Arc<Mutex<Vec<ServerError>>>,
    /// Paths of non-null fields that failed: their nearest nullable parent becomes `null`.
    strict: Mutex<Vec<Vec<PathSegment>>>,
    /// Whether `strict` holds anything (read for every field, so without the lock).
    any_strict: AtomicBool,
}

/// Whether `c` is a control character no input may hold (tab, line feed and carriage return
/// are text).
pub fn is_refused_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// The first string in `v` that holds a refused control character, as the path to it.
fn control_char_in(v: &Value, path: &str) -> Option<String> {
    match v {
        Value::String(s) if s.chars().any(is_refused_control) => Some(path.to_string()),
        Value::List(items) => items.iter().find_map(|i| control_char_in(i, path)),
        Value::Object(m) => m
            .iter()
            .find_map(|(k, v)| control_char_in(v, &format!("{path}.{k}"))),
        _ => None,
    }
}

fn literal_in_set(set: &SelectionSet) -> Option<String> {
    set.items.iter().find_map(|sel| match &sel.node {
        Selection::Field(f) => f
            .node
            .arguments
            .iter()
            .find_map(|(name, value)| {
                let v = value
                    .node
                    .clone()
                    .into_const_with(|_| Ok::<_, ()>(Value::Null));
                v.ok().and_then(|v| control_char_in(&v, name.node.as_str()))
            })
            .or_else(|| literal_in_set(&f.node.selection_set.node)),
        Selection::InlineFragment(fr) => literal_in_set(&fr.node.selection_set.node),
        Selection::FragmentSpread(_) => None,
    })
}

/// The operation a request runs, or the error that names why there is none.
fn selected<'d>(
    doc: &'d ExecutableDocument,
    name: Option<&str>,
) -> Result<&'d OperationDefinition, ServerError> {
    let mut ops = doc.operations.iter();
    let found = match name {
        Some(wanted) => ops
            .find(|(n, _)| n.map(|n| n.as_str()) == Some(wanted))
            .ok_or_else(|| format!("the document holds no operation named \"{wanted}\"")),
        None if doc.operations.iter().count() == 1 => Ok(ops.next().expect("one operation")),
        None => Err(
            "the document holds several operations: name the one to run in `operationName`".into(),
        ),
    };
    found
        .map(|(_, op)| &op.node)
        .map_err(|m| graphql_error(Code::GraphqlValidationFailed, m, None))
}

/// Checks a request's inputs: required variables given, no control characters anywhere.
fn check_inputs(
    doc: &ExecutableDocument,
    variables: &Variables,
    name: Option<&str>,
) -> Result<(), ServerError> {
    let op = selected(doc, name)?;
    for def in &op.variable_definitions {
        let var = &def.node;
        let given = variables
            .get(&var.name.node)
            .is_some_and(|v| !matches!(v, Value::Null));
        if !var.var_type.node.nullable && var.default_value.is_none() && !given {
            let n = var.name.node.as_str();
            return Err(graphql_error(
                Code::BadUserInput,
                format!(
                    "variable ${n} of type {} is required and was not provided",
                    var.var_type.node
                ),
                Some(n),
            ));
        }
    }
    let refused = |field: String| {
        graphql_error(
            Code::BadUserInput,
            format!("{field} holds a control character; text inputs may not"),
            Some(&field),
        )
    };
    for (k, v) in variables.iter() {
        if let Some(path) = control_char_in(v, k.as_str()) {
            return Err(refused(path));
        }
    }
    let sets = doc
        .operations
        .iter()
        .map(|(_, op)| &op.node.selection_set.node)
        .chain(doc.fragments.values().map(|f| &f.node.selection_set.node));
    for set in sets {
        if let Some(path) = literal_in_set(set) {
            return Err(refused(path));
        }
    }
    Ok(())
}

/// The response path of the field being resolved.
fn path_of(node: &QueryPathNode<'_>) -> Vec<PathSegment> {
    let mut path: Vec<PathSegment> = std::iter::once(node)
        .chain(node.parents())
        .map(|n| match n.segment {
            QueryPathSegment::Name(name) => PathSegment::Field(name.to_string()),
            QueryPathSegment::Index(i) => PathSegment::Index(i),
        })
        .collect();
    path.reverse();
    path
}

/// Whether `failed` is a field of the object at `path` (or of an item of the list at `path`).
fn is_child(failed: &[PathSegment], path: &[PathSegment]) -> bool {
    match failed.len().checked_sub(path.len()) {
        Some(1) => failed.starts_with(path),
        Some(2) => failed.starts_with(path) && matches!(failed[path.len()], PathSegment::Index(_)),
        _ => false,
    }
}

/// The type names in an input coercion error: `Failed to parse "T": … (occurred while parsing
/// "U")`, innermost first.
fn parsed_types(message: &str) -> Vec<&str> {
    message
        .split("parse \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect()
}

/// Gives an input coercion error of async-graphql (a value that does not parse as its type)
/// the code `BAD_USER_INPUT` and, in `extensions.field`, the argument it is in (and the field of
/// that input object, when only one has the failing type).
fn name_input(
    ctx: &ExtensionContext<'_>,
    parent: &str,
    field: &str,
    mut e: ServerError,
) -> ServerError {
    let has = |k: &str| e.extensions.as_ref().is_some_and(|x| x.get(k).is_some());
    let coercion = e.message.starts_with("Failed to parse")
        || e.message.starts_with("Invalid value for argument");
    if has("field")
        || !coercion
        || !e
            .path
            .last()
            .is_some_and(|p| matches!(p, PathSegment::Field(_)))
    {
        return e;
    }
    let registry = &ctx.schema_env.registry;
    let Some(args) = registry
        .concrete_type_by_name(parent)
        .and_then(|t| t.field_by_name(field))
        .map(|f| &f.args)
    else {
        return e;
    };
    let base = |ty: &str| async_graphql::registry::MetaTypeName::concrete_typename(ty).to_string();
    let types = parsed_types(&e.message);
    let named = e
        .message
        .strip_prefix("Invalid value for argument \"")
        .and_then(|r| r.split('"').next())
        .map(str::to_string);
    let path = named.or_else(|| {
        let outer = *types.last()?;
        let (arg, _) = args.iter().find(|(_, a)| base(&a.ty) == outer)?;
        let inner = types.first().filter(|_| types.len() > 1);
        let child = inner.and_then(|inner| {
            let Some(async_graphql::registry::MetaType::InputObject { input_fields, .. }) =
                registry.concrete_type_by_name(outer)
            else {
                return None;
            };
            let mut of_type = input_fields.values().filter(|f| base(&f.ty) == *inner);
            match (of_type.next(), of_type.next()) {
                (Some(only), None) => Some(only.name.clone()),
                _ => None,
            }
        });
        Some(match child {
            Some(c) => format!("{arg}.{c}"),
            None => arg.clone(),
        })
    });
    let ext = e.extensions.get_or_insert_with(Default::default);
    ext.set("code", Code::BadUserInput.as_str());
    if let Some(path) = path {
        ext.set("field", path);
    }
    e
}

fn drain(nulled: &Mutex<Vec<ServerError>>) -> Vec<ServerError> {
    nulled
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default()
}

#[async_trait::async_trait]
impl Extension for SpecExt {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        if let Ok(mut n) = self.operation_name.lock() {
            n.clone_from(&request.operation_name);
        }
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        if let Ok(mut d) = self.doc.lock() {
            *d = Some((doc.clone(), variables.clone()));
        }
        Ok(doc)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        let name = self.operation_name.lock().ok().and_then(|n| n.clone());
        if let Ok(guard) = self.doc.lock()
            && let Some((doc, variables)) = guard.as_ref()
        {
            check_inputs(doc, variables, name.as_deref()).map_err(|e| vec![e])?;
        }
        Ok(result)
    }

    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        let nullable = !info.return_type.ends_with('!');
        let node = info.path_node;
        let (parent, field) = (info.parent_type, info.name);
        let result = next
            .run(ctx, info)
            .await
            .map_err(|e| name_input(ctx, parent, field, e));
        let result = match result {
            Err(e) if nullable => {
                if let Ok(mut v) = self.nulled.lock() {
                    v.push(e);
                }
                return Ok(Some(Value::Null));
            }
            Err(e) => {
                if let Ok(mut s) = self.strict.lock() {
                    s.push(e.path.clone());
                    self.any_strict.store(true, Ordering::Relaxed);
                }
                return Err(e);
            }
            Ok(v) => v,
        };
        // A non-null field below failed (async-graphql left it out): this field answers for it.
        if !self.any_strict.load(Ordering::Relaxed) {
            return Ok(result);
        }
        let Ok(mut strict) = self.strict.lock() else {
            return Ok(result);
        };
        let path = path_of(node);
        if !strict.iter().any(|f| is_child(f, &path)) {
            return Ok(result);
        }
        if nullable {
            return Ok(Some(Value::Null));
        }
        strict.push(path);
        Ok(result)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let mut resp = next.run(ctx, operation_name).await;
        let nulled = drain(&self.nulled);
        if !nulled.is_empty() {
            if resp.data == Value::Null {
                // Every root field was nullable and failed: the data is an object of nulls.
                resp.data = Value::Object(Default::default());
            }
            for e in &nulled {
                if let (Value::Object(data), [PathSegment::Field(key)]) =
                    (&mut resp.data, e.path.as_slice())
                {
                    data.entry(Name::new(key)).or_insert(Value::Null);
                }
            }
            resp.errors.extend(nulled);
        }
        // A non-null root field failed: `data` itself is null.
        if let Ok(strict) = self.strict.lock()
            && strict.iter().any(|p| p.len() == 1)
        {
            resp.data = Value::Null;
        }
        resp
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        let nulled = self.nulled.clone();
        next.run(ctx, stream)
            .map(move |mut resp| {
                resp.errors.extend(drain(&nulled));
                resp
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema, SimpleObject};

    use super::*;
    use crate::error::AppError;

    #[derive(SimpleObject)]
    struct Leaf {
        /// Always there.
        ok: i32,
    }

    struct Inner;

    #[Object]
    impl Inner {
        /// Fails, and may not be null.
        async fn strict(&self) -> async_graphql::Result<i32> {
            Err(AppError::Conflict("strict failed".into()).into())
        }
        /// Succeeds.
        async fn fine(&self) -> i32 {
            1
        }
    }

    struct Toy;

    #[Object]
    impl Toy {
        /// Fails, nullable.
        async fn soft(&self) -> async_graphql::Result<Option<Leaf>> {
            Err(AppError::bad_input("id", "malformed id").into())
        }
        /// A nullable object with a failing non-null field.
        async fn inner(&self) -> Option<Inner> {
            Some(Inner)
        }
        /// Fails, and may not be null.
        async fn hard(&self) -> async_graphql::Result<i32> {
            Err(AppError::Conflict("hard failed".into()).into())
        }
        /// Echoes its argument.
        async fn echo(&self, text: String) -> String {
            text
        }
        /// Takes a time in an input object.
        async fn window(&self, filter: Option<Window>) -> i32 {
            filter.map_or(0, |_| 1)
        }
    }

    #[derive(async_graphql::InputObject)]
    struct Window {
        /// A time.
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// A count.
        limit: Option<i32>,
    }

    fn toy() -> Schema<Toy, EmptyMutation, EmptySubscription> {
        Schema::build(Toy, EmptyMutation, EmptySubscription)
            .extension(SpecConformance)
            .finish()
    }

    async fn run(req: impl Into<Request>) -> serde_json::Value {
        serde_json::to_value(toy().execute(req).await).unwrap()
    }

    #[tokio::test]
    async fn errored_nullable_fields_are_null_and_non_null_ones_null_the_parent() {
        let r = run("{ a: soft { ok } b: soft { ok } c: echo(text: \"x\") inner { fine strict } }")
            .await;
        assert_eq!(
            r["data"],
            serde_json::json!({ "a": null, "b": null, "c": "x", "inner": null }),
            "{r}"
        );
        assert_eq!(r["errors"].as_array().unwrap().len(), 3, "{r}");
        let r = run("{ c: echo(text: \"x\") hard }").await;
        assert_eq!(r["data"], serde_json::Value::Null, "{r}");
        let r = run("{ soft { ok } }").await;
        assert_eq!(r["data"], serde_json::json!({ "soft": null }), "{r}");
    }

    #[tokio::test]
    async fn requests_are_checked_with_codes_and_fields() {
        let code = |r: &serde_json::Value| r["errors"][0]["extensions"]["code"].clone();
        let r = run("query($t: String!) { echo(text: $t) }").await;
        assert_eq!(code(&r), "BAD_USER_INPUT", "{r}");
        assert_eq!(r["errors"][0]["extensions"]["field"], "t");
        let r = run(Request::new("query($t: String!) { echo(text: $t) }")
            .variables(Variables::from_json(serde_json::json!({ "t": "a\u{0}b" }))))
        .await;
        assert_eq!(code(&r), "BAD_USER_INPUT", "{r}");
        let r = run("{ echo(text: \"a\\u0000b\") }").await;
        assert_eq!(r["errors"][0]["extensions"]["field"], "text", "{r}");
        let r = run("{ echo(text: \"two\\nlines\") }").await;
        assert_eq!(r["data"]["echo"], "two\nlines", "{r}");
        let r = run("query A { echo(text: \"a\") } query B { echo(text: \"b\") }").await;
        assert_eq!(code(&r), "GRAPHQL_VALIDATION_FAILED", "{r}");
        let r = run(Request::new("query A { echo(text: \"a\") }").operation_name("Z")).await;
        assert_eq!(code(&r), "GRAPHQL_VALIDATION_FAILED", "{r}");
        assert!(
            r["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("\"Z\"")
        );
    }
}
