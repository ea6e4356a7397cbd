//! The shape of an operation, counted with its fragments expanded: how many fields it selects,
//! how deep its data fields nest, its aliases and root fields, and what it asks of introspection.
//!
//! Each fragment is measured once per context (memoised), so a document whose expansion is
//! exponential (a "fragment bomb": `fragment A { ...B ...B }`, `fragment B { ...C ...C }`, …)
//! is measured in time linear in its text, and refused by its expanded size before anything
//! else (async-graphql's recursive-depth check, validation) walks it spread by spread.

use std::collections::{HashMap, HashSet};

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};

/// Deepest nesting of selection sets and fragment spreads the measure follows; deeper
/// documents are refused (protects the stack; far past any limit a real query needs).
pub const MAX_NESTING: usize = 128;

/// What a selection set selects, fragments expanded. Counts saturate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// Fields selected, every fragment spread expanded (Apollo's "recursive selections").
    pub selections: u64,
    /// Deepest nesting of data fields (introspection fields below `__schema`/`__type` are not
    /// counted: they have bounds of their own).
    pub depth: usize,
    /// Aliases of data fields.
    pub aliases: u64,
    /// Fields at the top of the set (inline fragments and spreads expanded).
    pub root_fields: u64,
    /// `__schema` selections.
    pub schema_fields: u64,
    /// Aliases of introspection fields.
    pub introspection_aliases: u64,
    /// Longest chain of nested `ofType` selections.
    pub of_type_depth: usize,
    /// Longest chain of `ofType` starting at the top of this set (continues a parent's chain).
    of_type_head: usize,
    /// Whether it selects `__schema` or `__type`.
    pub introspection: bool,
    /// Whether it selects a data field (anything but introspection and `__typename`).
    pub data: bool,
}

impl Shape {
    /// Adds a sibling's shape.
    fn add(&mut self, o: &Shape) {
        self.selections = self.selections.saturating_add(o.selections);
        self.depth = self.depth.max(o.depth);
        self.aliases = self.aliases.saturating_add(o.aliases);
        self.root_fields = self.root_fields.saturating_add(o.root_fields);
        self.schema_fields = self.schema_fields.saturating_add(o.schema_fields);
        self.introspection_aliases = self
            .introspection_aliases
            .saturating_add(o.introspection_aliases);
        self.of_type_depth = self.of_type_depth.max(o.of_type_depth);
        self.of_type_head = self.of_type_head.max(o.of_type_head);
        self.introspection |= o.introspection;
        self.data |= o.data;
    }

    /// Whether only introspection is asked (`__schema`/`__type`, maybe `__typename`).
    pub fn introspection_only(&self) -> bool {
        self.introspection && !self.data
    }
}

/// The document nests deeper than [`MAX_NESTING`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooDeep;

/// Measures selection sets of one document, each fragment once per context.
pub struct Measure<'a> {
    doc: &'a ExecutableDocument,
    memo: HashMap<(&'a str, bool), Shape>,
    visiting: HashSet<(&'a str, bool)>,
}

impl<'a> Measure<'a> {
    /// A measure of `doc`'s selection sets.
    pub fn new(doc: &'a ExecutableDocument) -> Self {
        Measure {
            doc,
            memo: HashMap::new(),
            visiting: HashSet::new(),
        }
    }

    /// The shape of an operation's selection set.
    pub fn operation(&mut self, set: &'a SelectionSet) -> Result<Shape, TooDeep> {
        self.set(set, false, 0)
    }

    /// The shape of `set`; `intro` is whether it lies below `__schema`/`__type`.
    fn set(&mut self, set: &'a SelectionSet, intro: bool, level: usize) -> Result<Shape, TooDeep> {
        if level > MAX_NESTING {
            return Err(TooDeep);
        }
        let mut shape = Shape::default();
        for sel in &set.items {
            let part = match &sel.node {
                Selection::Field(f) => self.field(&f.node, intro, level)?,
                Selection::InlineFragment(fr) => {
                    self.set(&fr.node.selection_set.node, intro, level + 1)?
                }
                Selection::FragmentSpread(sp) => {
                    self.fragment(sp.node.fragment_name.node.as_str(), intro, level)?
                }
            };
            shape.add(&part);
        }
        Ok(shape)
    }

    fn field(
        &mut self,
        f: &'a async_graphql::parser::types::Field,
        intro: bool,
        level: usize,
    ) -> Result<Shape, TooDeep> {
        let name = f.name.node.as_str();
        let enters = !intro && (name == "__schema" || name == "__type");
        let child = self.set(&f.selection_set.node, intro || enters, level + 1)?;
        let is_of_type = intro && name == "ofType";
        let head = if is_of_type {
            child.of_type_head + 1
        } else {
            0
        };
        let introspective = intro || enters;
        let aliased = u64::from(f.alias.is_some());
        Ok(Shape {
            selections: child.selections.saturating_add(1),
            depth: match (intro, enters) {
                (true, _) => 0,
                (false, true) => 1,
                (false, false) => child.depth + 1,
            },
            aliases: child.aliases + if introspective { 0 } else { aliased },
            root_fields: 1,
            schema_fields: child
                .schema_fields
                .saturating_add(u64::from(enters && name == "__schema")),
            introspection_aliases: child
                .introspection_aliases
                .saturating_add(if introspective { aliased } else { 0 }),
            of_type_depth: child.of_type_depth.max(head),
            of_type_head: head,
            introspection: enters || child.introspection,
            data: (!introspective && name != "__typename") || child.data,
        })
    }

    fn fragment(&mut self, name: &'a str, intro: bool, level: usize) -> Result<Shape, TooDeep> {
        let key = (name, intro);
        if let Some(s) = self.memo.get(&key) {
            return Ok(*s);
        }
        let Some(fragment) = self.doc.fragments.get(name) else {
            return Ok(Shape::default()); // unknown: validation refuses it
        };
        if !self.visiting.insert(key) {
            return Ok(Shape::default()); // a cycle: validation refuses it
        }
        let shape = self.set(&fragment.node.selection_set.node, intro, level + 1);
        self.visiting.remove(&key);
        let shape = shape?;
        self.memo.insert(key, shape);
        Ok(shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(q: &str) -> Shape {
        let doc = async_graphql::parser::parse_query(q).unwrap();
        let mut m = Measure::new(&doc);
        let (_, op) = doc.operations.iter().next().unwrap();
        m.operation(&op.node.selection_set.node).unwrap()
    }

    /// `levels` fragments, each spreading the next `width` times.
    pub(crate) fn bomb(levels: usize, width: usize) -> String {
        let mut q = String::from("query { ...F0 }\n");
        for i in 0..levels {
            let spreads = format!("...F{} ", i + 1).repeat(width);
            q.push_str(&format!("fragment F{i} on QueryRoot {{ {spreads} }}\n"));
        }
        q.push_str(&format!(
            "fragment F{levels} on QueryRoot {{ a: __typename }}\n"
        ));
        q
    }

    #[test]
    fn fragments_are_expanded_and_measured_once() {
        let s = shape(&bomb(12, 10));
        assert_eq!(s.selections, 10u64.pow(12));
        assert_eq!(s.aliases, 10u64.pow(12));
        assert_eq!(s.root_fields, 10u64.pow(12));
    }

    #[test]
    fn data_depth_skips_introspection() {
        let s = shape(
            "{ a { b { c } } __schema { types { fields { type { ofType { ofType { name } } } } } } }",
        );
        assert_eq!(s.depth, 3);
        assert_eq!(s.of_type_depth, 2);
        assert_eq!(s.schema_fields, 1);
        assert!(s.introspection && s.data);
        let s = shape(
            "fragment T on __Type { ofType { ofType { name } } } { __type(name: \"X\") { ofType { ...T } } __typename }",
        );
        assert_eq!(s.of_type_depth, 3);
        assert!(s.introspection_only());
        let s = shape("{ x: __schema { queryType { n: name } } y: __schema { description } z: a }");
        assert_eq!(
            (s.schema_fields, s.introspection_aliases, s.aliases),
            (2, 3, 1)
        );
    }

    #[test]
    fn nesting_past_the_bound_is_refused() {
        // The parser bounds nesting in the text; a chain of fragments nests past it.
        let mut q = String::from("{ ...F0 }");
        for i in 0..MAX_NESTING {
            q.push_str(&format!(" fragment F{i} on Q {{ a {{ ...F{} }} }}", i + 1));
        }
        let doc = async_graphql::parser::parse_query(&q).unwrap();
        let (_, op) = doc.operations.iter().next().unwrap();
        assert_eq!(
            Measure::new(&doc).operation(&op.node.selection_set.node),
            Err(TooDeep)
        );
    }
}
