//! Running a plan: arguments bound to the request's variables, its cost, and its answer built
//! level by level through the same reads, authorization and page building as the resolvers.

use async_graphql::connection::CursorType;
use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::VariableDefinition;
use async_graphql::{Name, Positioned, Value, Variables};
use futures_util::future::{BoxFuture, FutureExt};

use super::plan::{
    Arg, ConnField, EdgeField, Entity, Fields, InfoField, InstancesField, LatestField, NoChild,
    ObjField, Paged, Plan, RootField, ServersField,
};
use crate::cache::CachedReads;
use crate::graphql::context::RequestCtx;
use crate::graphql::pagination::{DEFAULT_PAGE, MAX_PAGE, Page};
use crate::graphql::spec::is_refused_control;
use crate::graphql::types::{Instance, MonitoringMetrics, Registry, Server};

/// The compiled path gives the request to the executor: an argument it does not take as is, a
/// resolver error, anything the executor answers with an error.
#[derive(Debug)]
pub struct Declined;

type Out = Result<Value, Declined>;

/// One run of a plan for one request.
pub struct Run<'a> {
    /// The request's reads, through the cross-request caches as the resolvers read.
    pub reads: CachedReads<'a>,
    /// The request's context: caller, rights, loader.
    pub rc: &'a RequestCtx,
    /// The request's variables.
    pub variables: &'a Variables,
    /// The operation's variable definitions.
    pub definitions: &'a [Positioned<VariableDefinition>],
}

impl Run<'_> {
    /// The value of an argument, or `Declined` where the executor would refuse or coerce it.
    fn value(&self, arg: &Arg) -> Result<Value, Declined> {
        let name = match arg {
            Arg::Absent => return Ok(Value::Null),
            Arg::Literal(v) => return Ok(v.clone()),
            Arg::Variable(name) => name,
        };
        let def = self
            .definitions
            .iter()
            .find(|d| d.node.name.node == *name)
            .ok_or(Declined)?;
        let nullable = def.node.var_type.node.nullable;
        let value = match (self.variables.get(name), &def.node.default_value) {
            (Some(v), _) => v.clone(),
            (None, Some(default)) => default.node.clone(),
            (None, None) if nullable => Value::Null,
            (None, None) => return Err(Declined),
        };
        if value == Value::Null && !nullable {
            return Err(Declined);
        }
        Ok(value)
    }

    /// An `Int` argument.
    fn int(&self, arg: &Arg) -> Result<Option<i32>, Declined> {
        match self.value(arg)? {
            Value::Null => Ok(None),
            Value::Number(n) => n
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .map(Some)
                .ok_or(Declined),
            _ => Err(Declined),
        }
    }

    /// A `String` argument (one holding a refused control character is the executor's).
    fn string(&self, arg: &Arg) -> Result<Option<String>, Declined> {
        match self.value(arg)? {
            Value::Null => Ok(None),
            Value::String(s) if !s.chars().any(is_refused_control) => Ok(Some(s)),
            _ => Err(Declined),
        }
    }

    /// The operation's complexity, counted as async-graphql counts it: 1 per field plus its
    /// children, and `first × children + 1` for a page (see the `complexity` of list fields).
    pub fn complexity(&self, plan: &Plan) -> Result<usize, Declined> {
        plan.root.iter().try_fold(0, |sum, (_, f)| {
            Ok(sum
                + match f {
                    RootField::Typename => 1,
                    RootField::Registries(p) => self.paged_complexity(p)?,
                })
        })
    }

    fn paged_complexity<T: Follow>(&self, p: &Paged<T>) -> Result<usize, Declined> {
        let first = self
            .int(&p.first)?
            .unwrap_or(DEFAULT_PAGE)
            .clamp(0, MAX_PAGE) as usize;
        let mut child = 0;
        for (_, f) in &p.conn {
            child += match f {
                ConnField::Typename => 1,
                ConnField::Nodes(fields) => 1 + self.fields_complexity(fields)?,
                ConnField::PageInfo(info) => 1 + info.len(),
                ConnField::Edges(edges) => {
                    let mut e = 1;
                    for (_, f) in edges {
                        e += match f {
                            EdgeField::Typename | EdgeField::Cursor => 1,
                            EdgeField::Node(fields) => 1 + self.fields_complexity(fields)?,
                        };
                    }
                    e
                }
            };
        }
        Ok(first * child + 1)
    }

    fn fields_complexity<T: Follow>(&self, fields: &Fields<T>) -> Result<usize, Declined> {
        fields.iter().try_fold(0, |sum, (_, f)| {
            Ok(sum
                + match f {
                    ObjField::Typename | ObjField::Leaf(..) => 1,
                    ObjField::Child(c) => T::child_complexity(c, self)?,
                })
        })
    }

    /// The answer's `data`.
    pub async fn data(&self, plan: &Plan) -> Out {
        let mut map = IndexMap::with_capacity(plan.root.len());
        for (key, f) in &plan.root {
            let v = match f {
                RootField::Typename => Value::String("QueryRoot".into()),
                RootField::Registries(p) => {
                    let (first, after) = (self.int(&p.first)?, self.string(&p.after)?);
                    let filter = dataloaders::reads::RegistryFilter::default();
                    let page = Registry::list(self.rc, filter, first, after)
                        .await
                        .map_err(|_| Declined)?;
                    let mut one = self.connections(&[page], &p.conn).await?;
                    one.pop().ok_or(Declined)?
                }
            };
            map.insert(key.clone(), v);
        }
        Ok(Value::Object(map))
    }

    /// A paged relation of every object of a level: the pages `load` reads at once, then their
    /// connections.
    async fn paged<T, F, Fut>(&self, p: &Paged<T>, load: F) -> Many
    where
        T: Follow,
        F: FnOnce(Option<i32>, Option<String>) -> Fut,
        Fut: std::future::Future<Output = crate::error::AppResult<Vec<Page<T>>>>,
    {
        let (first, after) = (self.int(&p.first)?, self.string(&p.after)?);
        let pages = load(first, after).await.map_err(|_| Declined)?;
        self.connections(&pages, &p.conn).await
    }

    /// The selected fields of a connection, for each of `pages` (one level of the answer: each
    /// relation below is read once for all of them).
    async fn connections<T: Follow>(
        &self,
        pages: &[Page<T>],
        sel: &[(Name, ConnField<T>)],
    ) -> Many {
        let mut maps = vec![IndexMap::with_capacity(sel.len()); pages.len()];
        for (key, f) in sel {
            let values = match f {
                ConnField::Typename => {
                    let name = Value::String(format!("{}Connection", T::NAME));
                    vec![name; pages.len()]
                }
                ConnField::Nodes(fields) => {
                    let nodes = pages.iter().flat_map(|p| p.edges.iter().map(|e| &e.node));
                    let mut values = self.objects(nodes.collect(), fields).await?.into_iter();
                    let per_page = pages.iter().map(|p| p.edges.len());
                    per_page
                        .map(|n| Value::List(values.by_ref().take(n).collect()))
                        .collect()
                }
                ConnField::Edges(fields) => self.edges(pages, fields).await?,
                ConnField::PageInfo(info) => pages.iter().map(|p| page_info(p, info)).collect(),
            };
            for (m, v) in maps.iter_mut().zip(values) {
                m.insert(key.clone(), v);
            }
        }
        Ok(maps.into_iter().map(Value::Object).collect())
    }

    /// The `edges` of each page.
    async fn edges<T: Follow>(&self, pages: &[Page<T>], sel: &[(Name, EdgeField<T>)]) -> Many {
        let edges: Vec<_> = pages.iter().flat_map(|p| p.edges.iter()).collect();
        let mut maps = vec![IndexMap::with_capacity(sel.len()); edges.len()];
        for (key, f) in sel {
            let values = match f {
                EdgeField::Typename => vec![Value::String(format!("{}Edge", T::NAME)); edges.len()],
                EdgeField::Cursor => edges
                    .iter()
                    .map(|e| Value::String(e.cursor.encode_cursor()))
                    .collect(),
                EdgeField::Node(fields) => {
                    let nodes = edges.iter().map(|e| &e.node).collect();
                    self.objects(nodes, fields).await?
                }
            };
            for (m, v) in maps.iter_mut().zip(values) {
                m.insert(key.clone(), v);
            }
        }
        let mut values = maps.into_iter().map(Value::Object);
        Ok(pages
            .iter()
            .map(|p| Value::List(values.by_ref().take(p.edges.len()).collect()))
            .collect())
    }

    /// The selected fields of each of `objs`.
    fn objects<'a, T: Follow>(
        &'a self,
        objs: Vec<&'a T>,
        fields: &'a Fields<T>,
    ) -> BoxFuture<'a, Many> {
        async move {
            let mut maps = vec![IndexMap::with_capacity(fields.len()); objs.len()];
            for (key, f) in fields {
                let values = match f {
                    ObjField::Typename => vec![Value::String(T::NAME.into()); objs.len()],
                    ObjField::Leaf(_, read) => objs.iter().map(|o| read(o)).collect(),
                    ObjField::Child(c) => T::follow(&objs, c, self).await?,
                };
                for (m, v) in maps.iter_mut().zip(values) {
                    m.insert(key.clone(), v);
                }
            }
            Ok(maps.into_iter().map(Value::Object).collect())
        }
        .boxed()
    }
}

/// Values of one field for each object of a level, in order.
type Many = Result<Vec<Value>, Declined>;

/// `PageInfo` of a page, as async-graphql's connection answers it.
fn page_info<T: async_graphql::OutputType>(page: &Page<T>, info: &[(Name, InfoField)]) -> Value {
    type PageEdge<T> = async_graphql::connection::Edge<
        crate::graphql::pagination::Cursor,
        T,
        async_graphql::connection::EmptyFields,
    >;
    let cursor = |e: Option<&PageEdge<T>>| {
        e.map_or(Value::Null, |e| Value::String(e.cursor.encode_cursor()))
    };
    let map = info
        .iter()
        .map(|(key, f)| {
            let v = match f {
                InfoField::Typename => Value::String("PageInfo".into()),
                InfoField::HasNext => Value::Boolean(page.has_next_page),
                InfoField::HasPrevious => Value::Boolean(page.has_previous_page),
                InfoField::Start => cursor(page.edges.first()),
                InfoField::End => cursor(page.edges.last()),
            };
            (key.clone(), v)
        })
        .collect();
    Value::Object(map)
}

/// An entity whose relations a run follows.
pub trait Follow: Entity {
    /// The relation `child` of each of `objs`, read once for all of them.
    fn follow<'a>(
        objs: &'a [&'a Self],
        child: &'a Self::Child,
        run: &'a Run<'a>,
    ) -> BoxFuture<'a, Many>;
    /// The relation's complexity.
    fn child_complexity(child: &Self::Child, run: &Run<'_>) -> Result<usize, Declined>;
}

impl Follow for Registry {
    fn follow<'a>(
        objs: &'a [&'a Self],
        c: &'a ServersField,
        run: &'a Run<'a>,
    ) -> BoxFuture<'a, Many> {
        run.paged(&c.0, |first, after| {
            Registry::servers_pages(objs, &run.reads, first, after, c.0.width)
        })
        .boxed()
    }
    fn child_complexity(c: &ServersField, run: &Run<'_>) -> Result<usize, Declined> {
        run.paged_complexity(&c.0)
    }
}

impl Follow for Server {
    fn follow<'a>(
        objs: &'a [&'a Self],
        c: &'a InstancesField,
        run: &'a Run<'a>,
    ) -> BoxFuture<'a, Many> {
        run.paged(&c.0, |first, after| {
            Server::instances_pages(objs, &run.reads, first, after, c.0.width)
        })
        .boxed()
    }
    fn child_complexity(c: &InstancesField, run: &Run<'_>) -> Result<usize, Declined> {
        run.paged_complexity(&c.0)
    }
}

impl Follow for Instance {
    fn follow<'a>(
        objs: &'a [&'a Self],
        c: &'a LatestField,
        run: &'a Run<'a>,
    ) -> BoxFuture<'a, Many> {
        async move {
            let latest = Instance::latest_many(objs, &run.reads, c.1)
                .await
                .map_err(|_| Declined)?;
            let present = latest.iter().flatten().collect();
            let mut values = run.objects(present, &c.0).await?.into_iter();
            Ok(latest
                .iter()
                .map(|m| match m {
                    Some(_) => values.next().unwrap_or(Value::Null),
                    None => Value::Null,
                })
                .collect())
        }
        .boxed()
    }
    fn child_complexity(c: &LatestField, run: &Run<'_>) -> Result<usize, Declined> {
        Ok(1 + run.fields_complexity(&c.0)?)
    }
}

impl Follow for MonitoringMetrics {
    fn follow<'a>(_: &'a [&'a Self], c: &'a NoChild, _: &'a Run<'a>) -> BoxFuture<'a, Many> {
        match *c {}
    }
    fn child_complexity(c: &NoChild, _: &Run<'_>) -> Result<usize, Declined> {
        match *c {}
    }
}
