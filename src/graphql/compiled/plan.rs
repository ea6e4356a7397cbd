//! Plans: what the compiled path makes of a document it can answer, and the refusal (`None`)
//! for everything else. A plan knows the fields of the nested read
//! `registries → servers → instances → latestMetrics` (every field a row answers alone, the
//! connections' `nodes`, `edges` and `pageInfo`, and `__typename`), with literal or variable
//! `first`/`after` arguments. Fragments are followed when they apply to their object's type;
//! directives, aliases answering twice under one name, and any other field make the document the
//! executor's.

use async_graphql::Name;
use async_graphql::parser::types::{
    ExecutableDocument, Field, OperationType, Selection, SelectionSet, VariableDefinition,
};
use async_graphql::{Positioned, Value};
use dataloaders::Width;

use crate::graphql::types::{Instance, Leaf, MonitoringMetrics, Registry, Server};

/// How deep fragment spreads may nest while fields are collected (validation forbids cycles;
/// this bounds a document that was not validated yet).
const MAX_FRAGMENT_NESTING: usize = 16;

/// A compiled query: its root fields, and what the variables and cost need.
pub struct Plan {
    /// The parsed document (for the rate-limit cost, see `crate::graphql::abuse::cost`).
    pub doc: ExecutableDocument,
    /// The name of the operation the plan answers.
    pub operation_name: Option<String>,
    /// The operation's variable definitions.
    pub variables: Vec<Positioned<VariableDefinition>>,
    /// The root fields, in answer order.
    pub root: Vec<(Name, RootField)>,
    /// Whether the executor answers this document's fields in document order too (see
    /// [`order_is_stable`]).
    pub stable_order: bool,
}

/// A root field of a plan.
pub enum RootField {
    /// `__typename`.
    Typename,
    /// `registries(first, after)`.
    Registries(Paged<Registry>),
}

/// A field argument: absent, written in the document, or a variable.
#[derive(Clone)]
pub enum Arg {
    /// Not given.
    Absent,
    /// A literal value.
    Literal(Value),
    /// `$name`.
    Variable(Name),
}

/// A paged list field: its `first`/`after` and the connection's selection.
pub struct Paged<T: Entity> {
    /// `first`.
    pub first: Arg,
    /// `after`.
    pub after: Arg,
    /// What is selected of the connection.
    pub conn: Vec<(Name, ConnField<T>)>,
    /// The width of row the selected fields of its nodes need.
    pub width: Width,
}

/// A field of a connection.
pub enum ConnField<T: Entity> {
    /// `__typename`.
    Typename,
    /// `nodes { ... }`.
    Nodes(Fields<T>),
    /// `edges { ... }`.
    Edges(Vec<(Name, EdgeField<T>)>),
    /// `pageInfo { ... }`.
    PageInfo(Vec<(Name, InfoField)>),
}

/// A field of an edge.
pub enum EdgeField<T: Entity> {
    /// `__typename`.
    Typename,
    /// `cursor`.
    Cursor,
    /// `node { ... }`.
    Node(Fields<T>),
}

/// A field of `PageInfo`.
#[derive(Clone, Copy)]
pub enum InfoField {
    /// `__typename`.
    Typename,
    /// `hasNextPage`.
    HasNext,
    /// `hasPreviousPage`.
    HasPrevious,
    /// `startCursor`.
    Start,
    /// `endCursor`.
    End,
}

/// The selected fields of an object, in answer order.
pub type Fields<T> = Vec<(Name, ObjField<T>)>;

/// A field of an entity.
pub enum ObjField<T: Entity> {
    /// `__typename`.
    Typename,
    /// A field the row answers alone, and the width of row it needs.
    Leaf(Width, fn(&T) -> Value),
    /// A relation to other entities.
    Child(T::Child),
}

/// An entity the compiled path answers: its schema name, its row fields and its relations.
pub trait Entity: async_graphql::OutputType + Sized + 'static {
    /// The GraphQL type name.
    const NAME: &'static str;
    /// The fields the row answers alone.
    const LEAVES: &'static [Leaf<Self>];
    /// A planned relation.
    type Child: Send + Sync;
    /// Plans `field` as a relation, or `None` when the entity has no such relation.
    fn plan_child(doc: &ExecutableDocument, field: &Field) -> Option<Self::Child>;
    /// Whether the executor orders the relation's fields as the document does.
    fn child_stable(child: &Self::Child) -> bool;
}

/// Servers of a registry.
pub struct ServersField(pub Paged<Server>);
/// Instances of a server.
pub struct InstancesField(pub Paged<Instance>);
/// The newest sample of an instance, and the width of row its selected fields need.
pub struct LatestField(pub Fields<MonitoringMetrics>, pub Width);
/// Samples have no relations the compiled path follows.
pub enum NoChild {}

impl Entity for Registry {
    const NAME: &'static str = "Registry";
    const LEAVES: &'static [Leaf<Self>] = Registry::LEAVES;
    type Child = ServersField;
    fn plan_child(doc: &ExecutableDocument, field: &Field) -> Option<ServersField> {
        (field.name.node == "servers")
            .then(|| paged(doc, field, "Server"))
            .flatten()
            .map(ServersField)
    }
    fn child_stable(c: &ServersField) -> bool {
        paged_stable(&c.0)
    }
}

impl Entity for Server {
    const NAME: &'static str = "Server";
    const LEAVES: &'static [Leaf<Self>] = Server::LEAVES;
    type Child = InstancesField;
    fn plan_child(doc: &ExecutableDocument, field: &Field) -> Option<InstancesField> {
        (field.name.node == "instances")
            .then(|| paged(doc, field, "Instance"))
            .flatten()
            .map(InstancesField)
    }
    fn child_stable(c: &InstancesField) -> bool {
        paged_stable(&c.0)
    }
}

impl Entity for Instance {
    const NAME: &'static str = "Instance";
    const LEAVES: &'static [Leaf<Self>] = Instance::LEAVES;
    type Child = LatestField;
    fn plan_child(doc: &ExecutableDocument, field: &Field) -> Option<LatestField> {
        if field.name.node != "latestMetrics" || !field.arguments.is_empty() {
            return None;
        }
        let fields = fields(doc, &field.selection_set.node)?;
        let width = width(&fields);
        Some(LatestField(fields, width))
    }
    fn child_stable(c: &LatestField) -> bool {
        fields_stable(&c.0)
    }
}

impl Entity for MonitoringMetrics {
    const NAME: &'static str = "MonitoringMetrics";
    const LEAVES: &'static [Leaf<Self>] = MonitoringMetrics::LEAVES;
    type Child = NoChild;
    fn plan_child(_: &ExecutableDocument, _: &Field) -> Option<NoChild> {
        None
    }
    fn child_stable(c: &NoChild) -> bool {
        match *c {}
    }
}

/// The plan of the operation `operation_name` of `query`, or `None` when the executor must
/// answer it.
pub fn plan(query: &str, operation_name: Option<&str>) -> Option<Plan> {
    let doc = async_graphql::parser::parse_query(query).ok()?;
    let op = match operation_name {
        Some(wanted) => {
            doc.operations
                .iter()
                .find(|(n, _)| n.map(|n| n.as_str()) == Some(wanted))?
                .1
        }
        None => {
            let mut ops = doc.operations.iter();
            let (_, op) = ops.next()?;
            if ops.next().is_some() {
                return None;
            }
            op
        }
    };
    if op.node.ty != OperationType::Query || !op.node.directives.is_empty() {
        return None;
    }
    let variables = op.node.variable_definitions.clone();
    let mut root = Vec::new();
    for f in collect(&doc, &op.node.selection_set.node, "Query")? {
        let field = match f.name.node.as_str() {
            "__typename" if plain(f) => RootField::Typename,
            "registries" => RootField::Registries(paged(&doc, f, "Registry")?),
            _ => return None,
        };
        root.push((response_key(f), field));
    }
    unique_keys(&root)?;
    let stable_order = order_is_stable(&root, |f| matches!(f, RootField::Registries(_)))
        && root.iter().all(|(_, f)| match f {
            RootField::Typename => true,
            RootField::Registries(p) => paged_stable(p),
        });
    Some(Plan {
        operation_name: operation_name.map(str::to_string),
        variables,
        root,
        stable_order,
        doc,
    })
}

/// Whether async-graphql answers `items` in document order. It does not promise to: it puts
/// each field in the answer when its value is ready, so a field that loads rows comes after the
/// fields that follow it and are ready at once (unless its rows come from a cache), and two
/// fields that load come in the order their rows arrive. The order is stable when no field that
/// loads precedes one that does not, and at most one loads. (The compiled path answers in
/// document order, as the GraphQL specification asks.)
fn order_is_stable<F>(items: &[(Name, F)], loads: impl Fn(&F) -> bool) -> bool {
    let mut loading = 0;
    for (_, f) in items {
        if loads(f) {
            loading += 1;
        } else if loading > 0 {
            return false;
        }
    }
    loading <= 1
}

fn fields_load<T: Entity>(fields: &Fields<T>) -> bool {
    fields.iter().any(|(_, f)| matches!(f, ObjField::Child(_)))
}

fn fields_stable<T: Entity>(fields: &Fields<T>) -> bool {
    order_is_stable(fields, |f| matches!(f, ObjField::Child(_)))
        && fields.iter().all(|(_, f)| match f {
            ObjField::Child(c) => T::child_stable(c),
            _ => true,
        })
}

fn paged_stable<T: Entity>(p: &Paged<T>) -> bool {
    let edge_loads = |f: &EdgeField<T>| matches!(f, EdgeField::Node(n) if fields_load(n));
    let conn_loads = |f: &ConnField<T>| match f {
        ConnField::Nodes(n) => fields_load(n),
        ConnField::Edges(e) => e.iter().any(|(_, f)| edge_loads(f)),
        _ => false,
    };
    order_is_stable(&p.conn, conn_loads)
        && p.conn.iter().all(|(_, f)| match f {
            ConnField::Nodes(n) => fields_stable(n),
            ConnField::Edges(e) => {
                order_is_stable(e, edge_loads)
                    && e.iter().all(|(_, f)| match f {
                        EdgeField::Node(n) => fields_stable(n),
                        _ => true,
                    })
            }
            _ => true,
        })
}

/// The fields of `set` on the object type `type_name`, fragments that apply followed, in
/// document order; `None` for directives, fragments on other types or unknown fragments.
fn collect<'a>(
    doc: &'a ExecutableDocument,
    set: &'a SelectionSet,
    type_name: &str,
) -> Option<Vec<&'a Field>> {
    let mut out = Vec::new();
    collect_into(doc, set, type_name, 0, &mut out)?;
    Some(out)
}

fn collect_into<'a>(
    doc: &'a ExecutableDocument,
    set: &'a SelectionSet,
    type_name: &str,
    level: usize,
    out: &mut Vec<&'a Field>,
) -> Option<()> {
    if level > MAX_FRAGMENT_NESTING {
        return None;
    }
    for sel in &set.items {
        match &sel.node {
            Selection::Field(f) if f.node.directives.is_empty() => out.push(&f.node),
            Selection::InlineFragment(fr) if fr.node.directives.is_empty() => {
                let on = fr.node.type_condition.as_ref();
                if on.is_some_and(|c| c.node.on.node != type_name) {
                    return None;
                }
                collect_into(doc, &fr.node.selection_set.node, type_name, level + 1, out)?;
            }
            Selection::FragmentSpread(sp) if sp.node.directives.is_empty() => {
                let fr = doc.fragments.get(&sp.node.fragment_name.node)?;
                if fr.node.type_condition.node.on.node != type_name
                    || !fr.node.directives.is_empty()
                {
                    return None;
                }
                collect_into(doc, &fr.node.selection_set.node, type_name, level + 1, out)?;
            }
            _ => return None,
        }
    }
    Some(())
}

/// The name a field answers under.
fn response_key(f: &Field) -> Name {
    f.alias.as_ref().unwrap_or(&f.name).node.clone()
}

/// `Some` when no two fields answer under one name (the executor merges those).
fn unique_keys<F>(fields: &[(Name, F)]) -> Option<()> {
    let mut seen = std::collections::HashSet::new();
    fields.iter().all(|(k, _)| seen.insert(k)).then_some(())
}

/// A field without arguments or selections.
fn plain(f: &Field) -> bool {
    f.arguments.is_empty() && f.selection_set.node.items.is_empty()
}

/// The selected fields of an entity.
fn fields<T: Entity>(doc: &ExecutableDocument, set: &SelectionSet) -> Option<Fields<T>> {
    let mut out = Vec::new();
    for f in collect(doc, set, T::NAME)? {
        let name = f.name.node.as_str();
        let planned = if name == "__typename" && plain(f) {
            ObjField::Typename
        } else if let Some((_, width, read)) = T::LEAVES.iter().find(|(n, ..)| *n == name) {
            if !plain(f) {
                return None;
            }
            ObjField::Leaf(*width, *read)
        } else {
            ObjField::Child(T::plan_child(doc, f)?)
        };
        out.push((response_key(f), planned));
    }
    unique_keys(&out)?;
    Some(out)
}

/// A paged list field of `node_type`: `first`/`after` only, and its connection's selection.
fn paged<T: Entity>(doc: &ExecutableDocument, field: &Field, node_type: &str) -> Option<Paged<T>> {
    let (mut first, mut after) = (Arg::Absent, Arg::Absent);
    for (name, value) in &field.arguments {
        let arg = match value.node.clone().into_const_with(Err::<Value, Name>) {
            Ok(literal) => Arg::Literal(literal),
            Err(variable) => Arg::Variable(variable),
        };
        match name.node.as_str() {
            "first" => first = arg,
            "after" => after = arg,
            _ => return None,
        }
    }
    let conn_type = format!("{node_type}Connection");
    let edge_type = format!("{node_type}Edge");
    let mut conn = Vec::new();
    for f in collect(doc, &field.selection_set.node, &conn_type)? {
        let set = &f.selection_set.node;
        let planned = match f.name.node.as_str() {
            "__typename" if plain(f) => ConnField::Typename,
            "nodes" if f.arguments.is_empty() => ConnField::Nodes(fields(doc, set)?),
            "edges" if f.arguments.is_empty() => ConnField::Edges(edges(doc, set, &edge_type)?),
            "pageInfo" if f.arguments.is_empty() => ConnField::PageInfo(page_info(doc, set)?),
            _ => return None,
        };
        conn.push((response_key(f), planned));
    }
    unique_keys(&conn)?;
    let width = conn
        .iter()
        .map(|(_, f)| match f {
            ConnField::Nodes(fields) => width(fields),
            ConnField::Edges(edges) => edges
                .iter()
                .map(|(_, f)| match f {
                    EdgeField::Node(fields) => width(fields),
                    _ => Width::Narrow,
                })
                .max()
                .unwrap_or(Width::Narrow),
            _ => Width::Narrow,
        })
        .max()
        .unwrap_or(Width::Narrow);
    Some(Paged {
        first,
        after,
        conn,
        width,
    })
}

/// The width of row the leaves of `fields` need: narrow unless one of them reads a wide column.
fn width<T: Entity>(fields: &Fields<T>) -> Width {
    fields
        .iter()
        .map(|(_, f)| match f {
            ObjField::Leaf(width, _) => *width,
            _ => Width::Narrow,
        })
        .max()
        .unwrap_or(Width::Narrow)
}

fn edges<T: Entity>(
    doc: &ExecutableDocument,
    set: &SelectionSet,
    edge_type: &str,
) -> Option<Vec<(Name, EdgeField<T>)>> {
    let mut out = Vec::new();
    for f in collect(doc, set, edge_type)? {
        let planned = match f.name.node.as_str() {
            "__typename" if plain(f) => EdgeField::Typename,
            "cursor" if plain(f) => EdgeField::Cursor,
            "node" if f.arguments.is_empty() => {
                EdgeField::Node(fields(doc, &f.selection_set.node)?)
            }
            _ => return None,
        };
        out.push((response_key(f), planned));
    }
    unique_keys(&out)?;
    Some(out)
}

fn page_info(doc: &ExecutableDocument, set: &SelectionSet) -> Option<Vec<(Name, InfoField)>> {
    let mut out = Vec::new();
    for f in collect(doc, set, "PageInfo")? {
        if !plain(f) {
            return None;
        }
        let planned = match f.name.node.as_str() {
            "__typename" => InfoField::Typename,
            "hasNextPage" => InfoField::HasNext,
            "hasPreviousPage" => InfoField::HasPrevious,
            "startCursor" => InfoField::Start,
            "endCursor" => InfoField::End,
            _ => return None,
        };
        out.push((response_key(f), planned));
    }
    unique_keys(&out)?;
    Some(out)
}
