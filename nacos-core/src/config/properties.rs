//! Java `.properties` configs read into the app's type, the way Spring binds them: a dotted
//! key is a path (`server.port=8080` fills `server: { port }`), `name[0]` an element of a
//! list, a comma-separated value a list where a list is wanted, and every value a string
//! that becomes the number, bool or enum the field wants. The file format itself (escapes,
//! continuation lines, `=`/`:`/space separators, `#`/`!` comments) is the `java-properties`
//! crate's.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};

/// The most parts (`a.b[0]` has three) a key may have: the tree is built and read by
/// recursion.
const MAX_DEPTH: usize = 64;

/// A key's place in the tree.
#[derive(Debug)]
enum Node {
    Leaf(String),
    Map(BTreeMap<String, Node>),
    List(BTreeMap<usize, Node>),
}

/// Why properties did not read.
#[derive(Debug)]
pub(super) struct PropertiesError(String);

impl fmt::Display for PropertiesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PropertiesError {}

impl de::Error for PropertiesError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        PropertiesError(msg.to_string())
    }
}

/// Reads `content` as `T`.
pub(super) fn from_str<T: DeserializeOwned>(content: &str) -> Result<T, PropertiesError> {
    let pairs =
        java_properties::read(content.as_bytes()).map_err(|e| PropertiesError(e.to_string()))?;
    let mut root = Node::Map(BTreeMap::new());
    // Sorted, so that `a=1` comes before `a.b=2` and the error is the same every time.
    let sorted: BTreeMap<String, String> = pairs.into_iter().collect();
    for (key, value) in sorted {
        let steps = path(&key);
        if steps.len() > MAX_DEPTH {
            return Err(PropertiesError(format!(
                "a key of more than {MAX_DEPTH} parts"
            )));
        }
        insert(&mut root, &steps, value)
            .map_err(|why| PropertiesError(format!("key {key}: {why}")))?;
    }
    T::deserialize(root)
}

/// One step of a key's path.
enum Step {
    Name(String),
    Index(usize),
}

/// `a.b[2].c` -> `a`, `b`, `[2]`, `c`.
fn path(key: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    for part in key.split('.') {
        let mut rest = part;
        while let Some(open) = rest.find('[') {
            let (name, tail) = rest.split_at(open);
            if !name.is_empty() {
                steps.push(Step::Name(name.to_owned()));
            }
            match tail[1..].split_once(']') {
                Some((index, after)) if index.parse::<usize>().is_ok() => {
                    steps.push(Step::Index(index.parse().unwrap_or(0)));
                    rest = after;
                }
                _ => {
                    steps.push(Step::Name(tail.to_owned()));
                    rest = "";
                }
            }
        }
        if !rest.is_empty() {
            steps.push(Step::Name(rest.to_owned()));
        }
    }
    steps
}

fn insert(node: &mut Node, steps: &[Step], value: String) -> Result<(), &'static str> {
    let Some((first, rest)) = steps.split_first() else {
        let below = match node {
            Node::Map(map) => !map.is_empty(),
            Node::List(list) => !list.is_empty(),
            Node::Leaf(_) => false,
        };
        if below {
            return Err("a value and keys below it");
        }
        *node = Node::Leaf(value);
        return Ok(());
    };
    // A map nothing was put in yet becomes a list at its first index.
    if let (Step::Index(_), Node::Map(map)) = (first, &*node) {
        if map.is_empty() {
            *node = Node::List(BTreeMap::new());
        }
    }
    let child = match (first, node) {
        (Step::Name(name), Node::Map(map)) => map
            .entry(name.clone())
            .or_insert_with(|| Node::Map(BTreeMap::new())),
        (Step::Index(i), Node::List(list)) => {
            list.entry(*i).or_insert_with(|| Node::Map(BTreeMap::new()))
        }
        (_, Node::Leaf(_)) => return Err("a value and keys below it"),
        (Step::Name(_), Node::List(_)) | (Step::Index(_), Node::Map(_)) => {
            return Err("a list and named keys below one name");
        }
    };
    insert(child, rest, value)
}

impl<'de> IntoDeserializer<'de, PropertiesError> for Node {
    type Deserializer = Node;
    fn into_deserializer(self) -> Node {
        self
    }
}

impl Node {
    fn leaf(&self) -> Option<&str> {
        match self {
            Node::Leaf(s) => Some(s.trim()),
            _ => None,
        }
    }

    fn parse<T: std::str::FromStr>(&self, what: &str) -> Result<T, PropertiesError> {
        let text = self
            .leaf()
            .ok_or_else(|| PropertiesError(format!("expected {what}, found keys below it")))?;
        // The value itself is left out: it may be a secret.
        text.parse()
            .map_err(|_| PropertiesError(format!("expected {what}")))
    }
}

macro_rules! parsed {
    ($($method:ident => $visit:ident: $ty:ty, $what:literal;)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PropertiesError> {
                visitor.$visit(self.parse::<$ty>($what)?)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Node {
    type Error = PropertiesError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PropertiesError> {
        match self {
            Node::Leaf(s) => visitor.visit_string(s),
            Node::Map(map) => visitor.visit_map(MapDeserializer::new(map.into_iter())),
            Node::List(list) => visitor.visit_seq(SeqDeserializer::new(list.into_values())),
        }
    }

    parsed! {
        deserialize_bool => visit_bool: bool, "true or false";
        deserialize_i8 => visit_i8: i8, "an integer";
        deserialize_i16 => visit_i16: i16, "an integer";
        deserialize_i32 => visit_i32: i32, "an integer";
        deserialize_i64 => visit_i64: i64, "an integer";
        deserialize_u8 => visit_u8: u8, "a non-negative integer";
        deserialize_u16 => visit_u16: u16, "a non-negative integer";
        deserialize_u32 => visit_u32: u32, "a non-negative integer";
        deserialize_u64 => visit_u64: u64, "a non-negative integer";
        deserialize_f32 => visit_f32: f32, "a number";
        deserialize_f64 => visit_f64: f64, "a number";
        deserialize_char => visit_char: char, "one character";
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PropertiesError> {
        match self.leaf() {
            Some("") => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PropertiesError> {
        match self {
            Node::Leaf(s) => {
                let items: Vec<Node> = s
                    .split(',')
                    .map(|item| Node::Leaf(item.trim().to_owned()))
                    .filter(|item| item.leaf() != Some(""))
                    .collect();
                visitor.visit_seq(SeqDeserializer::new(items.into_iter()))
            }
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PropertiesError> {
        match self {
            Node::Leaf(s) => s
                .trim()
                .to_owned()
                .into_deserializer()
                .deserialize_enum(name, variants, visitor),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, PropertiesError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PropertiesError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i128 u128 str string bytes byte_buf unit_struct tuple
        tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Server {
        port: u16,
        host: String,
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Fast,
        Safe,
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct App {
        server: Server,
        debug: bool,
        ratio: f64,
        tags: Vec<String>,
        mode: Mode,
        backends: Vec<Server>,
        missing: Option<String>,
        #[serde(rename = "app-name")]
        app_name: String,
    }

    #[test]
    fn reads_as_spring_binds() {
        let content = "\
# a comment
server.port=8080
server.host = example.org
debug: true
ratio 0.5
tags=a, b ,c
mode=safe
backends[0].port=1
backends[0].host=one
backends[1].port=2
backends[1].host=two
app-name=orders \\
  service
";
        let app: App = from_str(content).unwrap();
        assert_eq!(
            app,
            App {
                server: Server {
                    port: 8080,
                    host: "example.org".into()
                },
                debug: true,
                ratio: 0.5,
                tags: vec!["a".into(), "b".into(), "c".into()],
                mode: Mode::Safe,
                backends: vec![
                    Server {
                        port: 1,
                        host: "one".into()
                    },
                    Server {
                        port: 2,
                        host: "two".into()
                    }
                ],
                missing: None,
                app_name: "orders service".into(),
            }
        );
        let _ = Mode::Fast;
    }

    #[test]
    fn a_bad_value_is_named_by_its_key_not_its_value() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Port {
            port: u16,
        }
        let e = from_str::<Port>("port=s3cret").unwrap_err().to_string();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(e.contains("integer"), "{e}");
        let e = from_str::<Port>("port=1\nport.x=2")
            .unwrap_err()
            .to_string();
        assert!(e.contains("port"), "{e}");
    }
}
