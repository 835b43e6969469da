//! Config content as a tree of string values, read into the app's type much the way Spring binds
//! its environment: every value a string that becomes the number, bool or enum the field
//! wants, a comma-separated value a list where a list is wanted, and (for Java
//! `.properties`) a dotted key a path (`server.port=8080` fills `server: { port }`) and
//! `name[0]` an element of a list. JSON, YAML and TOML become the same tree, so that
//! several configs of different formats merge into one value (later ones win key by key;
//! a list is replaced whole, as Spring does). The `.properties` file format itself (escapes,
//! continuation lines, `=`/`:`/space separators, `#`/`!` comments) is the `java-properties`
//! crate's.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};

/// The most parts (`a.b[0]` has three) a key may have, and the deepest nesting of a JSON,
/// YAML or TOML document: the tree is built and read by recursion.
const MAX_DEPTH: usize = 64;

/// A key's place in the tree.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    Leaf(String),
    Map(BTreeMap<String, Node>),
    List(BTreeMap<usize, Node>),
}

/// Why content did not read, or a tree did not bind.
#[derive(Debug)]
pub(super) struct TreeError(String);

impl fmt::Display for TreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TreeError {}

impl de::Error for TreeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        TreeError(msg.to_string())
    }
}

impl Node {
    /// An empty map: what a config without keys (text, or no content) adds.
    pub(super) fn empty() -> Node {
        Node::Map(BTreeMap::new())
    }

    /// Puts `over` on top of `self`: maps merge key by key, anything else (a value, a list)
    /// replaces what was there.
    pub(super) fn merge(&mut self, over: Node) {
        match (self, over) {
            (Node::Map(base), Node::Map(over)) => {
                for (key, value) in over {
                    match base.get_mut(&key) {
                        Some(existing) => existing.merge(value),
                        None => {
                            base.insert(key, value);
                        }
                    }
                }
            }
            (this, over) => *this = over,
        }
    }

    /// [`merge`](Self::merge) for a later config on top of the earlier ones: a key of
    /// `over` also replaces the key of `self` that is the same name as Spring relaxes names
    /// (`max-items`, `maxItems`, `max_items`, `MAX_ITEMS`), taking its place with the
    /// spelling of `over`, so that the later config wins whatever its spelling. Keys of
    /// one config are left as they are.
    pub(super) fn merge_config(&mut self, over: Node) {
        match (self, over) {
            (Node::Map(base), Node::Map(over)) => {
                // The relaxed form of each key `self` had, made only when a key of `over`
                // is not found as it is spelled.
                let mut relaxed: Option<std::collections::HashMap<String, String>> = None;
                for (key, value) in over {
                    if let Some(existing) = base.get_mut(&key) {
                        existing.merge_config(value);
                        continue;
                    }
                    let index = relaxed.get_or_insert_with(|| {
                        base.keys().map(|k| (relaxed_name(k), k.clone())).collect()
                    });
                    let value = match index
                        .remove(&relaxed_name(&key))
                        .and_then(|old| base.remove(&old))
                    {
                        Some(mut existing) => {
                            existing.merge_config(value);
                            existing
                        }
                        None => value,
                    };
                    base.insert(key, value);
                }
            }
            (this, over) => *this = over,
        }
    }

    /// Reads the tree as `T`; an error names the key that did not read (`server.port`),
    /// never its value.
    pub(super) fn bind<T: DeserializeOwned>(self) -> Result<T, TreeError> {
        serde_path_to_error::deserialize(self).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." || path.is_empty() {
                inner
            } else {
                TreeError(format!("{path}: {inner}"))
            }
        })
    }

    /// A JSON value as a tree: objects are maps, arrays lists, scalars strings, null an
    /// empty string (which reads as `None`).
    pub(super) fn from_json(value: serde_json::Value) -> Result<Node, TreeError> {
        fn node(value: serde_json::Value, depth: usize) -> Result<Node, TreeError> {
            if depth > MAX_DEPTH {
                return Err(too_deep());
            }
            Ok(match value {
                serde_json::Value::Null => Node::Leaf(String::new()),
                serde_json::Value::Bool(b) => Node::Leaf(b.to_string()),
                serde_json::Value::Number(n) => Node::Leaf(n.to_string()),
                serde_json::Value::String(s) => Node::Leaf(s),
                serde_json::Value::Array(items) => Node::List(
                    items
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| Ok((i, node(v, depth + 1)?)))
                        .collect::<Result<_, TreeError>>()?,
                ),
                serde_json::Value::Object(map) => Node::Map(
                    map.into_iter()
                        .map(|(k, v)| Ok((k, node(v, depth + 1)?)))
                        .collect::<Result<_, TreeError>>()?,
                ),
            })
        }
        node(value, 0)
    }

    /// The tree with dotted keys (`db.pool: 8`, `hosts[0]: a`) made paths, as Spring
    /// flattens YAML and JSON before binding: `db.pool` and `db: {pool}` are one key.
    fn expand_dotted(self) -> Result<Node, TreeError> {
        match self {
            Node::Map(map) => {
                let mut out = Node::empty();
                for (key, value) in map {
                    let value = value.expand_dotted()?;
                    if key.contains('.') || key.contains('[') {
                        let steps = path(&key);
                        if steps.len() > MAX_DEPTH {
                            return Err(too_deep());
                        }
                        insert(&mut out, &steps, value)
                            .map_err(|why| TreeError(format!("key {key}: {why}")))?;
                    } else if let Node::Map(out) = &mut out {
                        match out.get_mut(&key) {
                            Some(existing) => existing.merge(value),
                            None => {
                                out.insert(key, value);
                            }
                        }
                    }
                }
                Ok(out)
            }
            Node::List(list) => Ok(Node::List(
                list.into_iter()
                    .map(|(i, v)| Ok((i, v.expand_dotted()?)))
                    .collect::<Result<_, TreeError>>()?,
            )),
            leaf => Ok(leaf),
        }
    }

    /// JSON content as a tree.
    pub(super) fn from_json_str(content: &str) -> Result<Node, TreeError> {
        let value: serde_json::Value =
            serde_json::from_str(content).map_err(|e| TreeError(e.to_string()))?;
        Node::from_json(value)?.expand_dotted()
    }

    /// YAML content as a tree (keys that are numbers or bools become their text).
    #[cfg(feature = "yaml")]
    pub(super) fn from_yaml_str(content: &str) -> Result<Node, TreeError> {
        use serde_yaml_ng::Value;
        fn key(value: Value) -> Result<String, TreeError> {
            match value {
                Value::String(s) => Ok(s),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                Value::Null => Ok(String::new()),
                _ => Err(TreeError(
                    "a key that is not a string, number or bool".into(),
                )),
            }
        }
        fn node(value: Value, depth: usize) -> Result<Node, TreeError> {
            if depth > MAX_DEPTH {
                return Err(too_deep());
            }
            Ok(match value {
                Value::Null => Node::Leaf(String::new()),
                Value::Bool(b) => Node::Leaf(b.to_string()),
                Value::Number(n) => Node::Leaf(n.to_string()),
                Value::String(s) => Node::Leaf(s),
                Value::Sequence(items) => Node::List(
                    items
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| Ok((i, node(v, depth + 1)?)))
                        .collect::<Result<_, TreeError>>()?,
                ),
                Value::Mapping(map) => {
                    // Merge keys (`<<: *defaults`, `<<: [*a, *b]`), which SnakeYAML
                    // applies for Spring: the mapping's own keys first, then those of the
                    // merged mappings it lacks, the first of a list before the next. A
                    // merged mapping's own `<<` is applied as it is read.
                    let mut out = BTreeMap::new();
                    let mut merged = Vec::new();
                    for (k, v) in map {
                        if matches!(&k, Value::String(s) if s == "<<") {
                            match v {
                                Value::Sequence(items) => merged.extend(items),
                                other => merged.push(other),
                            }
                        } else {
                            out.insert(key(k)?, node(v, depth + 1)?);
                        }
                    }
                    for from in merged {
                        let Node::Map(from) = node(from, depth + 1)? else {
                            return Err(TreeError(
                                "a merge key `<<` whose value is not a mapping".into(),
                            ));
                        };
                        for (k, v) in from {
                            out.entry(k).or_insert(v);
                        }
                    }
                    Node::Map(out)
                }
                Value::Tagged(tagged) => node(tagged.value, depth + 1)?,
            })
        }
        let value: Value =
            serde_yaml_ng::from_str(content).map_err(|e| TreeError(e.to_string()))?;
        node(value, 0)?.expand_dotted()
    }

    /// TOML content as a tree (dates and times become their text).
    #[cfg(feature = "toml")]
    pub(super) fn from_toml_str(content: &str) -> Result<Node, TreeError> {
        use toml::Value;
        fn node(value: Value, depth: usize) -> Result<Node, TreeError> {
            if depth > MAX_DEPTH {
                return Err(too_deep());
            }
            Ok(match value {
                Value::String(s) => Node::Leaf(s),
                Value::Integer(i) => Node::Leaf(i.to_string()),
                Value::Float(f) => Node::Leaf(f.to_string()),
                Value::Boolean(b) => Node::Leaf(b.to_string()),
                Value::Datetime(d) => Node::Leaf(d.to_string()),
                Value::Array(items) => Node::List(
                    items
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| Ok((i, node(v, depth + 1)?)))
                        .collect::<Result<_, TreeError>>()?,
                ),
                Value::Table(map) => Node::Map(
                    map.into_iter()
                        .map(|(k, v)| Ok((k, node(v, depth + 1)?)))
                        .collect::<Result<_, TreeError>>()?,
                ),
            })
        }
        // Its message only: its `Display` quotes the offending line of the config.
        let table: toml::Table =
            toml::from_str(content).map_err(|e| TreeError(e.message().to_owned()))?;
        node(Value::Table(table), 0)?.expand_dotted()
    }

    /// Java `.properties` content as a tree.
    #[cfg(feature = "properties")]
    pub(super) fn from_properties_str(content: &str) -> Result<Node, TreeError> {
        let pairs =
            java_properties::read(content.as_bytes()).map_err(|e| TreeError(e.to_string()))?;
        let mut root = Node::empty();
        // Sorted, so that `a=1` comes before `a.b=2` and the error is the same every time.
        let sorted: BTreeMap<String, String> = pairs.into_iter().collect();
        for (key, value) in sorted {
            let steps = path(&key);
            if steps.len() > MAX_DEPTH {
                return Err(too_deep());
            }
            insert(&mut root, &steps, Node::Leaf(value))
                .map_err(|why| TreeError(format!("key {key}: {why}")))?;
        }
        Ok(root)
    }
}

/// A name as Spring compares names when it binds: case and `-`/`_` ignored, so that
/// `max-items`, `maxItems`, `max_items` and `MAX_ITEMS` are one.
fn relaxed_name(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '-' && *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The one of `names` that `key` means: itself, else the one its relaxed form matches.
fn relaxed_match(key: &str, names: &'static [&'static str]) -> Option<&'static str> {
    if let Some(name) = names.iter().find(|name| **name == key) {
        return Some(name);
    }
    let key = relaxed_name(key);
    names.iter().copied().find(|name| relaxed_name(name) == key)
}

fn too_deep() -> TreeError {
    TreeError(format!("nested more than {MAX_DEPTH} levels deep"))
}

/// Reads Java `.properties` content as `T`.
#[cfg(feature = "properties")]
pub(super) fn from_properties<T: DeserializeOwned>(content: &str) -> Result<T, TreeError> {
    Node::from_properties_str(content)?.bind()
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

fn insert(node: &mut Node, steps: &[Step], value: Node) -> Result<(), &'static str> {
    let Some((first, rest)) = steps.split_first() else {
        let below = match node {
            Node::Map(map) => !map.is_empty(),
            Node::List(list) => !list.is_empty(),
            Node::Leaf(_) => false,
        };
        if below && matches!(value, Node::Leaf(_)) {
            return Err("a value and keys below it");
        }
        node.merge(value);
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

impl<'de> IntoDeserializer<'de, TreeError> for Node {
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

    fn parse<T: std::str::FromStr>(&self, what: &str) -> Result<T, TreeError> {
        let text = self
            .leaf()
            .ok_or_else(|| TreeError(format!("expected {what}, found keys below it")))?;
        // The value itself is left out: it may be a secret.
        text.parse()
            .map_err(|_| TreeError(format!("expected {what}")))
    }
}

macro_rules! parsed {
    ($($method:ident => $visit:ident: $ty:ty, $what:literal;)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TreeError> {
                visitor.$visit(self.parse::<$ty>($what)?)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Node {
    type Error = TreeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TreeError> {
        match self {
            Node::Leaf(s) => visitor.visit_string(s),
            Node::Map(map) => visitor.visit_map(MapDeserializer::new(map.into_iter())),
            Node::List(list) => visitor.visit_seq(SeqDeserializer::new(list.into_values())),
        }
    }

    parsed! {
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

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TreeError> {
        // Any case, as Spring reads `TRUE`.
        match self.leaf().map(str::to_ascii_lowercase).as_deref() {
            Some("true") => visitor.visit_bool(true),
            Some("false") => visitor.visit_bool(false),
            _ => Err(TreeError("expected true or false".into())),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TreeError> {
        match self.leaf() {
            Some("") => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TreeError> {
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
    ) -> Result<V::Value, TreeError> {
        match self {
            Node::Leaf(s) => {
                // `FAST`, `fast` and `Fast` are one variant, as Spring binds enums.
                let s = s.trim();
                let variant =
                    relaxed_match(s, variants).map_or_else(|| s.to_owned(), str::to_owned);
                variant
                    .into_deserializer()
                    .deserialize_enum(name, variants, visitor)
            }
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TreeError> {
        let Node::Map(map) = self else {
            return self.deserialize_any(visitor);
        };
        // Each key under the field it means; several spellings of one field merge, the
        // field's own spelling on top.
        let mut named: BTreeMap<String, Node> = BTreeMap::new();
        let mut exact: Vec<(String, Node)> = Vec::new();
        for (key, value) in map {
            match relaxed_match(&key, fields) {
                Some(field) if field == key => exact.push((key, value)),
                Some(field) => match named.get_mut(field) {
                    Some(existing) => existing.merge(value),
                    None => {
                        named.insert(field.to_owned(), value);
                    }
                },
                None => {
                    named.insert(key, value);
                }
            }
        }
        for (key, value) in exact {
            match named.get_mut(&key) {
                Some(existing) => existing.merge(value),
                None => {
                    named.insert(key, value);
                }
            }
        }
        visitor.visit_map(MapDeserializer::new(named.into_iter()))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TreeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TreeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i128 u128 str string bytes byte_buf unit_struct tuple
        tuple_struct map identifier ignored_any
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

    #[cfg(feature = "properties")]
    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Fast,
        Safe,
    }

    #[cfg(feature = "properties")]
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

    #[cfg(feature = "properties")]
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
        let app: App = from_properties(content).unwrap();
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

    #[cfg(feature = "properties")]
    #[test]
    fn a_bad_value_is_named_by_its_key_not_its_value() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Port {
            port: u16,
        }
        let e = from_properties::<Port>("port=s3cret")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(e.contains("integer"), "{e}");
        let e = from_properties::<Port>("port=1\nport.x=2")
            .unwrap_err()
            .to_string();
        assert!(e.contains("port"), "{e}");
    }

    #[test]
    fn json_merges_key_by_key_and_lists_are_replaced_whole() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Merged {
            server: Server,
            tags: Vec<String>,
            limit: Option<u32>,
            extra: Option<String>,
        }
        let mut tree = Node::from_json_str(
            r#"{"server":{"port":1,"host":"a"},"tags":["x","y","z"],"limit":5}"#,
        )
        .unwrap();
        tree.merge(
            Node::from_json_str(r#"{"server":{"port":2},"tags":["q"],"limit":null}"#).unwrap(),
        );
        let merged: Merged = tree.bind().unwrap();
        assert_eq!(
            merged,
            Merged {
                server: Server {
                    port: 2,
                    host: "a".into()
                },
                tags: vec!["q".into()],
                limit: None,
                extra: None,
            }
        );
    }

    #[test]
    fn a_bind_error_names_the_key_path() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Outer {
            server: Server,
        }
        let e = Node::from_json_str(r#"{"server":{"port":"s3cret","host":"h"}}"#)
            .unwrap()
            .bind::<Outer>()
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("server.port: "), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        let e = Node::from_json_str(r#"{"server":{"port":1}}"#)
            .unwrap()
            .bind::<Outer>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("host"), "{e}");
    }

    #[test]
    fn dotted_keys_of_json_are_paths_as_in_properties() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Outer {
            server: Server,
            on: bool,
        }
        let mut tree =
            Node::from_json_str(r#"{"server":{"port":1,"host":"a"},"on":"TRUE"}"#).unwrap();
        tree.merge(Node::from_json_str(r#"{"server.port":2}"#).unwrap());
        let outer: Outer = tree.bind().unwrap();
        assert_eq!(outer.server.port, 2);
        assert!(outer.on);
    }

    #[test]
    fn names_are_relaxed_as_spring_relaxes_them() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        #[serde(rename_all = "lowercase")]
        enum Level {
            Low,
            HighWater,
        }
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Limits {
            max_items: u32,
            retry_after_ms: u64,
            level: Level,
            other: Level,
            map: BTreeMap<String, String>,
        }
        let tree = Node::from_json_str(
            r#"{"max-items":1,"RETRY_AFTER_MS":2,"level":"LOW","other":"high-water",
                "map":{"Kept-As":"is"}}"#,
        )
        .unwrap();
        let limits: Limits = tree.bind().unwrap();
        assert_eq!(limits.max_items, 1);
        assert_eq!(limits.retry_after_ms, 2);
        assert_eq!(limits.level, Level::Low);
        assert_eq!(limits.other, Level::HighWater);
        assert_eq!(limits.map.get("Kept-As").map(String::as_str), Some("is"));

        // Across configs the later one wins whatever its spelling; within one, the field's
        // own spelling is on top.
        let mut tree = Node::from_json_str(
            r#"{"maxItems":1,"retry-after-ms":2,"level":"low","other":"low","map":{}}"#,
        )
        .unwrap();
        tree.merge_config(Node::from_json_str(r#"{"max-items":7}"#).unwrap());
        let limits: Limits = tree.bind().unwrap();
        assert_eq!(limits.max_items, 7);
        let tree = Node::from_json_str(
            r#"{"max_items":3,"maxItems":4,"retryAfterMs":2,"level":"low","other":"low","map":{}}"#,
        )
        .unwrap();
        let limits: Limits = tree.bind().unwrap();
        assert_eq!(limits.max_items, 3);

        // Names that are fields of their own, and the keys of a map, are left as written.
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Both {
            a_b: u32,
            ab: u32,
            map: BTreeMap<String, String>,
        }
        let both: Both = Node::from_json_str(r#"{"a_b":1,"ab":2,"map":{"en-US":"a","en_US":"b"}}"#)
            .unwrap()
            .bind()
            .unwrap();
        assert_eq!((both.a_b, both.ab), (1, 2));
        assert_eq!(both.map.len(), 2, "{:?}", both.map);
    }

    #[cfg(feature = "yaml")]
    #[test]
    fn yaml_merge_keys_and_dotted_keys_apply() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Pools {
            primary: Pool,
            replica: Pool,
        }
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Pool {
            size: u32,
            url: String,
        }
        let content = "\
defaults: &defaults
  size: 4
  url: db://a
primary:
  <<: *defaults
replica:
  <<: *defaults
  url: db://b
primary.size: 8
";
        let pools: Pools = Node::from_yaml_str(content).unwrap().bind().unwrap();
        assert_eq!(
            pools,
            Pools {
                primary: Pool {
                    size: 8,
                    url: "db://a".into()
                },
                replica: Pool {
                    size: 4,
                    url: "db://b".into()
                },
            }
        );
    }

    #[cfg(feature = "yaml")]
    #[test]
    fn yaml_merge_keys_chain_and_list() {
        let content = "\
base: &base
  a: 1
  b: 1
defaults: &defaults
  <<: *base
  b: 2
more: &more
  c: 3
primary:
  <<: [*defaults, *more]
  c: 4
";
        let tree = Node::from_yaml_str(content).unwrap();
        let Node::Map(root) = tree else {
            panic!("a map")
        };
        let leaf = |key: &str| match &root["primary"] {
            Node::Map(m) => m.get(key).cloned(),
            other => panic!("{other:?}"),
        };
        assert_eq!(leaf("a"), Some(Node::Leaf("1".into())));
        assert_eq!(leaf("b"), Some(Node::Leaf("2".into())));
        assert_eq!(leaf("c"), Some(Node::Leaf("4".into())));
        assert_eq!(leaf("<<"), None);
        assert!(Node::from_yaml_str("a:\n  <<: 5\n").is_err());
    }

    #[test]
    fn deep_documents_are_refused_not_overflowed() {
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        assert!(Node::from_json_str(&deep).is_err());
    }
}
