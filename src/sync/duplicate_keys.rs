//! Parsing a registry document without losing repeated names.
//!
//! A legacy `registry.json` maps names to servers in JSON objects (`servers`, `remote_servers`,
//! and the same two in each of `groups[]`). `serde_json` keeps only the last of repeated keys, so
//! a document repeating a name would lose definitions without a word. This parser builds the
//! same [`Value`] in one pass, but in those name maps it keeps the first definition of a name
//! (as the array formats do) and records every later one, so that the sync reports them as
//! skipped duplicates. Everywhere else it behaves exactly like `serde_json::from_slice`.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// A name defined again in a name→server map; the later definition was dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct RepeatedName {
    /// The map it appeared in: `servers`, `remote_servers`, `groups[].servers`, ...
    pub map: &'static str,
    /// The repeated name.
    pub name: String,
}

/// Parses `body` as JSON; also returns every repeated name of the legacy name maps.
pub fn parse(body: &[u8]) -> Result<(Value, Vec<RepeatedName>), serde_json::Error> {
    let repeated = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(body);
    // Registry documents can nest deeply inside server definitions; those parts are parsed by
    // serde_json itself, with its own recursion limit.
    let value = Shape {
        at: Place::Top,
        repeated: &repeated,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok((value, repeated.into_inner()))
}

/// Where in the document a value sits, as far as name maps are concerned.
#[derive(Clone, Copy)]
enum Place {
    /// The document itself.
    Top,
    /// `groups`.
    Groups,
    /// One of `groups[]`.
    Group,
    /// A name map; the string names it in reports.
    NameMap(&'static str),
}

struct Shape<'a> {
    at: Place,
    repeated: &'a RefCell<Vec<RepeatedName>>,
}

impl<'de> DeserializeSeed<'de> for Shape<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl Shape<'_> {
    fn child(&self, at: Place) -> Self {
        Shape {
            at,
            repeated: self.repeated,
        }
    }

    /// The place of the value under `key` of an object at this place, if it is tracked.
    fn place_of(&self, key: &str) -> Option<Place> {
        match (self.at, key) {
            (Place::Top, "servers") => Some(Place::NameMap("servers")),
            (Place::Top, "remote_servers") => Some(Place::NameMap("remote_servers")),
            (Place::Top, "groups") => Some(Place::Groups),
            (Place::Group, "servers") => Some(Place::NameMap("groups[].servers")),
            (Place::Group, "remote_servers") => Some(Place::NameMap("groups[].remote_servers")),
            _ => None,
        }
    }
}

impl<'de> Visitor<'de> for Shape<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        if matches!(self.at, Place::Groups) {
            while let Some(v) = seq.next_element_seed(self.child(Place::Group))? {
                out.push(v);
            }
        } else {
            while let Some(v) = seq.next_element::<Value>()? {
                out.push(v);
            }
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = match self.place_of(&key) {
                Some(place) => map.next_value_seed(self.child(place))?,
                None => map.next_value::<Value>()?,
            };
            match self.at {
                Place::NameMap(which) if out.contains_key(&key) => {
                    self.repeated.borrow_mut().push(RepeatedName {
                        map: which,
                        name: key,
                    });
                }
                _ => {
                    out.insert(key, value);
                }
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn repeated_names_are_recorded_and_the_first_definition_kept() {
        let body = br#"{"servers": {"a": {"image": "first"}, "b": {}, "a": {"image": "second"},
            "a": {"image": "third"}},
            "remote_servers": {"r": {}, "r": {}},
            "groups": [{"name": "g", "servers": {"g1": {}, "g1": {"x": 1}}}],
            "other": {"k": 1, "k": 2}}"#;
        let (value, repeated) = parse(body).unwrap();
        assert_eq!(value["servers"]["a"], json!({"image": "first"}));
        assert_eq!(
            value["other"]["k"],
            json!(2),
            "elsewhere: serde_json's behaviour"
        );
        let names: Vec<_> = repeated.iter().map(|r| (r.map, r.name.as_str())).collect();
        assert_eq!(
            names,
            vec![
                ("servers", "a"),
                ("servers", "a"),
                ("remote_servers", "r"),
                ("groups[].servers", "g1")
            ]
        );
    }

    #[test]
    fn documents_parse_as_serde_json_parses_them() {
        for body in [
            &br#"{"servers": [{"name": "x"}], "metadata": {"count": 1.5, "n": -3}}"#[..],
            br#"[{"name": "a"}, null, true, "s", 18446744073709551615]"#,
            br#"{"data": {"servers": []}, "groups": null}"#,
        ] {
            let (value, repeated) = parse(body).unwrap();
            assert_eq!(value, serde_json::from_slice::<Value>(body).unwrap());
            assert!(repeated.is_empty());
        }
        assert!(parse(b"{\"servers\": {} } trailing").is_err());
        assert!(parse(b"{\"servers\": [oops").is_err());
    }
}
