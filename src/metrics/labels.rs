//! Label sets, and bounding label values that come from clients.

use std::collections::HashSet;
use std::sync::Mutex;

/// A label set: `(name, value)` pairs in a fixed order.
pub type Labels = Vec<(&'static str, String)>;

/// A label set from pairs.
pub fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
}

/// Longest name kept as a label value.
pub const MAX_NAME: usize = 64;
/// The label of names past the caps, or not GraphQL names.
pub const OTHER: &str = "other";

/// Label values taken from requests (operation names, subscription fields): a value is kept
/// while it is a short GraphQL name among the first `cap` seen, else it becomes `other`
/// (unbounded label values would grow memory and `/metrics` forever).
pub struct BoundedLabels {
    cap: usize,
    known: Mutex<HashSet<String>>,
}

impl BoundedLabels {
    /// Admits at most `cap` distinct values.
    pub fn new(cap: usize) -> Self {
        BoundedLabels {
            cap,
            known: Mutex::new(HashSet::new()),
        }
    }

    /// `name` itself, or [`OTHER`].
    pub fn admit(&self, name: &str) -> String {
        let valid = !name.is_empty()
            && name.len() <= MAX_NAME
            && name
                .chars()
                .enumerate()
                .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if !valid {
            return OTHER.into();
        }
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.contains(name) {
            return name.to_string();
        }
        if known.len() >= self.cap {
            return OTHER.into();
        }
        known.insert(name.to_string());
        name.to_string()
    }
}
