//! YAML text -> located tree -> [`RawPolicy`] -> validated [`Policy`].
//!
//! The text is parsed once by `saphyr-parser` (YAML 1.2) into a small tree whose every node keeps
//! its line and column. Two things read that tree:
//! - a serde `Deserializer` that fills the raw types; because it walks the located tree, type
//!   errors, unknown and missing fields carry the location and path of the value at fault;
//! - a [`LocationIndex`] from path (`services.api.fences[0].allow[1]`) to line:column, which the
//!   validator uses to place each of its errors.
//!
//! Validation collects every problem, then reports them sorted by position in the file. Parse and
//! type errors stop at the first, as later ones are often consequences of it.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::time::Duration;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Unexpected, Visitor};

use super::raw::{
    RawCapacity, RawFence, RawHealth, RawMode, RawPolicy, RawRegion, RawService, RawWhenAllDown,
};
use super::{
    ANSWERS_MAX, Capacity, ENDPOINTS_PER_REGION_MAX, FENCES_PER_SERVICE_MAX, Fence, HealthPolicy, Location,
    Mode, POLICY_BYTES_MAX, Policy, PolicyError, PolicyErrors, Region, SERVICES_MAX, Service, ServiceId,
    WhenAllDown,
};
use crate::geo::{Continent, Country, GeoPoint};
use crate::region_set::{REGIONS_MAX, RegionId, RegionSet};

/// At most this many YAML nodes, counting every expansion of an alias (so an alias bomb stops here).
const YAML_NODES_MAX: usize = 1 << 18;
/// At most this deep a nesting of sequences and mappings; the policy itself needs six levels.
const YAML_DEPTH_MAX: usize = 32;
/// Longest answer TTL accepted: a day. Longer TTLs would defeat steering.
const TTL_MAX_S: u64 = 86_400;
/// Longest slow start accepted.
const SLOW_START_MAX: Duration = Duration::from_hours(1);
/// Widest absolute stabilize band, milliseconds.
const STABILIZE_MS_MAX: i64 = 10_000;
/// Largest accepted share of exploring answers.
const EXPLORE_MAX: f64 = 0.5;
/// Largest region weight.
const WEIGHT_MAX: i64 = 1_000_000;
/// Largest `fall`/`rise` count.
const HEALTH_COUNT_MAX: i64 = 1000;
/// Longest `stale_after`.
const STALE_AFTER_MAX: Duration = Duration::from_hours(1);
/// A name is suggested for a misspelled one at most this many edits away.
const SUGGEST_DISTANCE_MAX: usize = 2;

/// Parses, validates and compiles `text`; `file` only labels the errors.
pub(super) fn from_yaml(file: &str, text: &str) -> Result<Policy, PolicyErrors> {
    let fail = |mark: Mark, path: &str, message: String| {
        PolicyErrors(vec![PolicyError {
            location: Location {
                file: file.to_owned(),
                line: mark.line,
                column: mark.column,
            },
            path: path.to_owned(),
            message,
        }])
    };
    if text.len() > POLICY_BYTES_MAX {
        let message = format!(
            "the policy is {} bytes: expected at most {POLICY_BYTES_MAX}",
            text.len()
        );
        return Err(fail(Mark::START, "", message));
    }
    let root = parse_yaml(text).map_err(|e| fail(e.mark, &e.path, e.message))?;
    let raw = RawPolicy::deserialize(NodeDe {
        node: &root,
        path: String::new(),
    })
    .map_err(|e| {
        let (mark, path) = e.at.unwrap_or((Mark::START, String::new()));
        fail(mark, &path, e.message)
    })?;
    let index = LocationIndex::new(&root);
    let mut check = Check {
        index: &index,
        errors: Vec::new(),
    };
    let policy = check.policy(&raw);
    if check.errors.is_empty() {
        return Ok(policy);
    }
    // A stable sort keeps the validator's order for errors placed at the same spot.
    check.errors.sort_by_key(|e| (e.mark.line, e.mark.column));
    Err(PolicyErrors(
        check
            .errors
            .into_iter()
            .map(|e| PolicyError {
                location: Location {
                    file: file.to_owned(),
                    line: e.mark.line,
                    column: e.mark.column,
                },
                path: e.path,
                message: e.message,
            })
            .collect(),
    ))
}

// === YAML tree ===

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    line: usize,
    column: usize,
}

impl Mark {
    const START: Mark = Mark { line: 1, column: 1 };

    fn of(span: Span) -> Mark {
        // saphyr's lines are 1-based, its columns 0-based.
        Mark {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

#[derive(Debug, Clone)]
struct Node {
    kind: Kind,
    mark: Mark,
}

#[derive(Debug, Clone)]
enum Kind {
    /// `plain` scalars are resolved by the YAML 1.2 core schema; quoted and block ones are strings.
    Scalar {
        value: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Keys are scalars, unique, in file order.
    Map(Vec<(Node, Node)>),
}

impl Node {
    fn count(&self) -> usize {
        match &self.kind {
            Kind::Scalar { .. } => 1,
            Kind::Seq(items) => 1 + items.iter().map(Node::count).sum::<usize>(),
            Kind::Map(entries) => 1 + entries.iter().map(|(k, v)| k.count() + v.count()).sum::<usize>(),
        }
    }

    fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { value, plain: true } if matches!(resolve(value), Scalar::Null))
    }
}

/// A syntax error: where, the path being parsed, and what the parser says.
#[derive(Debug)]
struct SyntaxError {
    mark: Mark,
    path: String,
    message: String,
}

enum Frame {
    Seq {
        mark: Mark,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        mark: Mark,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        keys: HashMap<String, Mark>,
        key: Option<Node>,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    documents: usize,
    root: Option<Node>,
}

/// Parses one YAML document into a located tree. An empty document is a null scalar.
fn parse_yaml(text: &str) -> Result<Node, SyntaxError> {
    let mut b = Builder::default();
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| SyntaxError {
            mark: Mark {
                line: e.marker().line(),
                column: e.marker().col() + 1,
            },
            path: b.path(),
            message: format!("invalid YAML: {}", e.info()),
        })?;
        let mark = Mark::of(span);
        b.event(event, mark)?;
    }
    Ok(b.root.unwrap_or(Node {
        kind: Kind::Scalar {
            value: String::new(),
            plain: true,
        },
        mark: Mark::START,
    }))
}

impl Builder {
    fn event(&mut self, event: Event<'_>, mark: Mark) -> Result<(), SyntaxError> {
        match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(self.error(mark, "expected a single YAML document".to_owned()));
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                let mut plain = style == ScalarStyle::Plain;
                if let Some(tag) = tag {
                    self.check_tag(mark, &tag)?;
                    // `!!str 10` is the string "10"; other core tags only confirm what plain resolution gives.
                    plain &= tag.suffix != "str";
                }
                self.push(
                    Node {
                        kind: Kind::Scalar {
                            value: value.into_owned(),
                            plain,
                        },
                        mark,
                    },
                    anchor,
                )?;
            }
            Event::SequenceStart(anchor, tag) => {
                if let Some(tag) = tag {
                    self.check_tag(mark, &tag)?;
                }
                self.open(
                    mark,
                    Frame::Seq {
                        mark,
                        anchor,
                        items: Vec::new(),
                    },
                )?;
            }
            Event::MappingStart(anchor, tag) => {
                if let Some(tag) = tag {
                    self.check_tag(mark, &tag)?;
                }
                let frame = Frame::Map {
                    mark,
                    anchor,
                    entries: Vec::new(),
                    keys: HashMap::new(),
                    key: None,
                };
                self.open(mark, frame)?;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq { mark, anchor, items }) => (
                        Node {
                            kind: Kind::Seq(items),
                            mark,
                        },
                        anchor,
                    ),
                    Some(Frame::Map {
                        mark,
                        anchor,
                        entries,
                        ..
                    }) => (
                        Node {
                            kind: Kind::Map(entries),
                            mark,
                        },
                        anchor,
                    ),
                    None => return Err(self.error(mark, "unbalanced collection end".to_owned())),
                };
                self.push(node, anchor)?;
            }
            Event::Alias(anchor) => {
                let Some(target) = self.anchors.get(&anchor) else {
                    return Err(self.error(mark, "alias to an unknown anchor".to_owned()));
                };
                let mut node = target.clone();
                // Errors inside an alias point at the anchored original, the alias itself at its use.
                node.mark = mark;
                self.nodes += node.count() - 1;
                self.push(node, 0)?;
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
        Ok(())
    }

    /// The path of the value being parsed, for syntax errors.
    fn path(&self) -> String {
        let mut path = String::new();
        for frame in &self.stack {
            match frame {
                Frame::Seq { items, .. } => {
                    let _ = write!(path, "[{}]", items.len());
                }
                Frame::Map { key: Some(key), .. } => push_key(&mut path, scalar_text(key)),
                Frame::Map { key: None, .. } => {}
            }
        }
        path
    }

    fn error(&self, mark: Mark, message: String) -> SyntaxError {
        SyntaxError {
            mark,
            path: self.path(),
            message,
        }
    }

    fn check_tag(&self, mark: Mark, tag: &Tag) -> Result<(), SyntaxError> {
        if tag.is_yaml_core_schema() {
            Ok(())
        } else {
            Err(self.error(
                mark,
                format!("unsupported tag {tag}: expected none or a YAML core tag"),
            ))
        }
    }

    fn open(&mut self, mark: Mark, frame: Frame) -> Result<(), SyntaxError> {
        if self.stack.len() >= YAML_DEPTH_MAX {
            return Err(self.error(mark, format!("nested deeper than {YAML_DEPTH_MAX} levels")));
        }
        self.stack.push(frame);
        Ok(())
    }

    /// Adds a finished node to the collection being built, or makes it the document.
    fn push(&mut self, node: Node, anchor: usize) -> Result<(), SyntaxError> {
        self.nodes += 1;
        if self.nodes > YAML_NODES_MAX {
            return Err(self.error(node.mark, format!("more than {YAML_NODES_MAX} YAML nodes")));
        }
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let path = self.path();
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries, keys, key, ..
            }) => {
                if let Some(k) = key.take() {
                    entries.push((k, node));
                } else {
                    let Kind::Scalar { value, .. } = &node.kind else {
                        return Err(SyntaxError {
                            mark: node.mark,
                            path,
                            message: "a mapping key must be a scalar".to_owned(),
                        });
                    };
                    if let Some(first) = keys.get(value) {
                        let message = format!("duplicate key {value:?} (also at line {})", first.line);
                        let mut path = path;
                        push_key(&mut path, value);
                        return Err(SyntaxError {
                            mark: node.mark,
                            path,
                            message,
                        });
                    }
                    keys.insert(value.clone(), node.mark);
                    *key = Some(node);
                }
            }
        }
        Ok(())
    }
}

fn scalar_text(node: &Node) -> &str {
    match &node.kind {
        Kind::Scalar { value, .. } => value,
        Kind::Seq(_) | Kind::Map(_) => "?",
    }
}

/// Appends a map key to a path: `a` + `b` = `a.b`; at the root, just `b`.
fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

fn child_path(path: &str, key: &str) -> String {
    let mut p = path.to_owned();
    push_key(&mut p, key);
    p
}

/// A plain scalar as the YAML 1.2 core schema reads it.
#[derive(Debug, PartialEq)]
enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str,
}

fn resolve(s: &str) -> Scalar {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "true" | "True" | "TRUE" => return Scalar::Bool(true),
        "false" | "False" | "FALSE" => return Scalar::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Scalar::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
        _ => {}
    }
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    let int = if let Some(hex) = s.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()
    } else if let Some(oct) = s.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()
    } else if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    };
    if let Some(i) = int {
        return Scalar::Int(i);
    }
    if is_core_float(unsigned)
        && let Ok(f) = s.parse()
    {
        return Scalar::Float(f);
    }
    Scalar::Str
}

/// `( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`, the core schema's float without sign.
fn is_core_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (mantissa, None),
    };
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = digits(whole)
        && fraction.is_none_or(digits)
        && (!whole.is_empty() || fraction.is_some_and(|f| !f.is_empty()));
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

// === Location index ===

/// Where each value and each map key of the document sits, by path.
#[derive(Debug, Default)]
pub(super) struct LocationIndex {
    values: HashMap<String, Mark>,
    keys: HashMap<String, Mark>,
}

impl LocationIndex {
    fn new(root: &Node) -> LocationIndex {
        let mut index = LocationIndex::default();
        index.walk(root, String::new());
        index
    }

    fn walk(&mut self, node: &Node, path: String) {
        match &node.kind {
            Kind::Scalar { .. } => {}
            Kind::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.walk(item, format!("{path}[{i}]"));
                }
            }
            Kind::Map(entries) => {
                for (k, v) in entries {
                    let p = child_path(&path, scalar_text(k));
                    self.keys.insert(p.clone(), k.mark);
                    self.walk(v, p);
                }
            }
        }
        self.values.insert(path, node.mark);
    }

    /// The value at `path`, or, when the file does not spell it out (a default), its closest
    /// written ancestor.
    fn value(&self, mut path: &str) -> Mark {
        loop {
            if let Some(&mark) = self.values.get(path) {
                return mark;
            }
            match path.rfind(['.', '[']) {
                Some(i) => path = &path[..i],
                None => return self.values.get("").copied().unwrap_or(Mark::START),
            }
        }
    }

    /// The key that names the value at `path` (for errors about a name), else the value.
    fn key(&self, path: &str) -> Mark {
        self.keys.get(path).copied().unwrap_or_else(|| self.value(path))
    }
}

// === serde over the tree ===

/// A deserialization error; `at` is filled by the innermost node that saw it.
#[derive(Debug)]
struct DeError {
    message: String,
    at: Option<(Mark, String)>,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> DeError {
        DeError {
            message: msg.to_string(),
            at: None,
        }
    }
}

struct NodeDe<'a> {
    node: &'a Node,
    path: String,
}

impl NodeDe<'_> {
    fn locate<T>(&self, result: Result<T, DeError>) -> Result<T, DeError> {
        result.map_err(|mut e| {
            if e.at.is_none() {
                e.at = Some((self.node.mark, self.path.clone()));
            }
            e
        })
    }

    /// A null where a collection, number or string was expected says "null", not "unit value".
    fn not_null<'de, V: Visitor<'de>>(&self, visitor: &V) -> Result<(), DeError> {
        if self.node.is_null() {
            return self.locate(Err(de::Error::invalid_type(Unexpected::Other("null"), visitor)));
        }
        Ok(())
    }
}

macro_rules! forward_not_null {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            self.not_null(&visitor)?;
            self.deserialize_any(visitor)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.kind {
            Kind::Scalar { value, plain: false } => visitor.visit_str(value),
            Kind::Scalar { value, plain: true } => match resolve(value) {
                Scalar::Null => visitor.visit_unit(),
                Scalar::Bool(b) => visitor.visit_bool(b),
                Scalar::Int(i) => visitor.visit_i64(i),
                Scalar::Float(f) => visitor.visit_f64(f),
                Scalar::Str => visitor.visit_str(value),
            },
            Kind::Seq(items) => visitor.visit_seq(SeqDe {
                items: items.iter().enumerate(),
                path: &self.path,
            }),
            Kind::Map(entries) => visitor.visit_map(MapDe {
                entries: entries.iter(),
                path: &self.path,
                value: None,
            }),
        };
        self.locate(result)
    }

    /// Any scalar reads as its text: `198.19.1.10`, `20s` and `NO` are strings where strings are wanted.
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.not_null(&visitor)?;
        match &self.node.kind {
            Kind::Scalar { value, .. } => {
                let result = visitor.visit_str(value);
                self.locate(result)
            }
            Kind::Seq(_) | Kind::Map(_) => self.deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            let result = visitor.visit_none();
            return self.locate(result);
        }
        let (mark, path) = (self.node.mark, self.path.clone());
        let result = visitor.visit_some(self);
        NodeDe::locate_at(result, mark, path)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let result = match &self.node.kind {
            Kind::Scalar { .. } => visitor.visit_enum(EnumDe {
                key: self.node,
                value: None,
                path: &self.path,
            }),
            Kind::Map(entries) if entries.len() == 1 => {
                let (k, v) = &entries[0];
                let path = child_path(&self.path, scalar_text(k));
                visitor.visit_enum(EnumDe {
                    key: k,
                    value: Some(v),
                    path: &path,
                })
            }
            Kind::Map(_) => Err(de::Error::invalid_value(
                Unexpected::Map,
                &"a map with a single key",
            )),
            Kind::Seq(_) => Err(de::Error::invalid_type(Unexpected::Seq, &visitor)),
        };
        self.locate(result)
    }

    forward_not_null! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64 deserialize_char deserialize_bytes deserialize_byte_buf
        deserialize_seq deserialize_map
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    serde::forward_to_deserialize_any! { unit unit_struct ignored_any }
}

impl NodeDe<'_> {
    fn locate_at<T>(result: Result<T, DeError>, mark: Mark, path: String) -> Result<T, DeError> {
        result.map_err(|mut e| {
            e.at.get_or_insert((mark, path));
            e
        })
    }
}

struct SeqDe<'a, I> {
    items: I,
    path: &'a str,
}

impl<'de, 'a, I: Iterator<Item = (usize, &'a Node)>> de::SeqAccess<'de> for SeqDe<'_, I> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some((i, node)) => seed
                .deserialize(NodeDe {
                    node,
                    path: format!("{}[{i}]", self.path),
                })
                .map(Some),
            None => Ok(None),
        }
    }
}

struct MapDe<'a, I> {
    entries: I,
    path: &'a str,
    value: Option<(&'a Node, String)>,
}

impl<'de, 'a, I: Iterator<Item = &'a (Node, Node)>> de::MapAccess<'de> for MapDe<'a, I> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        let Some((k, v)) = self.entries.next() else {
            return Ok(None);
        };
        let path = child_path(self.path, scalar_text(k));
        self.value = Some((v, path.clone()));
        seed.deserialize(NodeDe { node: k, path }).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (node, path) = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("value without a key"))?;
        seed.deserialize(NodeDe { node, path })
    }
}

/// `variant` (a scalar) or `{ variant: value }` (a one-key map).
struct EnumDe<'a> {
    key: &'a Node,
    value: Option<&'a Node>,
    path: &'a str,
}

impl<'de, 'a> de::EnumAccess<'de> for EnumDe<'a> {
    type Error = DeError;
    type Variant = VariantDe<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, VariantDe<'a>), DeError> {
        let variant = seed.deserialize(NodeDe {
            node: self.key,
            path: self.path.to_owned(),
        })?;
        Ok((
            variant,
            VariantDe {
                value: self.value,
                path: self.path.to_owned(),
            },
        ))
    }
}

struct VariantDe<'a> {
    value: Option<&'a Node>,
    path: String,
}

impl<'de> de::VariantAccess<'de> for VariantDe<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.value {
            None => Ok(()),
            Some(node) if node.is_null() => Ok(()),
            Some(node) => NodeDe {
                node,
                path: self.path,
            }
            .locate(Err(de::Error::invalid_type(
                Unexpected::Map,
                &"a variant without a value",
            ))),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        match self.value {
            Some(node) => seed.deserialize(NodeDe {
                node,
                path: self.path,
            }),
            None => Err(de::Error::invalid_type(
                Unexpected::UnitVariant,
                &"a map with the variant as its key",
            )),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Some(node) => de::Deserializer::deserialize_seq(
                NodeDe {
                    node,
                    path: self.path,
                },
                visitor,
            ),
            None => Err(de::Error::invalid_type(Unexpected::UnitVariant, &visitor)),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.value {
            Some(node) => de::Deserializer::deserialize_map(
                NodeDe {
                    node,
                    path: self.path,
                },
                visitor,
            ),
            None => Err(de::Error::invalid_type(Unexpected::UnitVariant, &visitor)),
        }
    }
}

// === Validation and compilation ===

struct Problem {
    mark: Mark,
    path: String,
    message: String,
}

/// Collects located problems while compiling; a value with a problem compiles to a placeholder
/// so that checking can go on and report the rest.
struct Check<'a> {
    index: &'a LocationIndex,
    errors: Vec<Problem>,
}

impl Check<'_> {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        let mark = self.index.value(path);
        self.errors.push(Problem {
            mark,
            path: path.to_owned(),
            message: message.into(),
        });
    }

    fn err_key(&mut self, path: &str, message: impl Into<String>) {
        let mark = self.index.key(path);
        self.errors.push(Problem {
            mark,
            path: path.to_owned(),
            message: message.into(),
        });
    }

    fn policy(&mut self, raw: &RawPolicy) -> Policy {
        let zone = match dns_name(&raw.zone) {
            Ok(zone) => zone,
            Err(why) => {
                self.err(
                    "zone",
                    format!("{:?} is not a valid DNS zone name: {why}", raw.zone),
                );
                String::from(".")
            }
        };
        let regions = self.regions(raw);
        let names: Vec<&str> = regions.iter().map(|r| r.name.as_str()).collect();
        let mut services = Vec::new();
        let mut fqdns: HashMap<String, String> = HashMap::new();
        if raw.services.0.len() > SERVICES_MAX {
            let n = raw.services.0.len();
            self.err(
                "services",
                format!("{n} services: expected at most {SERVICES_MAX}"),
            );
        }
        for (i, (name, s)) in raw.services.0.iter().take(SERVICES_MAX).enumerate() {
            let path = format!("services.{name}");
            let service = self.service(&path, ServiceId(i as u16), name, &zone, s, &regions, &names);
            match fqdns.get(&service.fqdn) {
                Some(first) if !service.name.is_empty() => {
                    let message = format!("duplicate service {:?} (also at {first})", service.fqdn);
                    self.err_key(&path, message);
                }
                _ => {
                    fqdns.insert(service.fqdn.clone(), path);
                }
            }
            services.push(service);
        }
        let health = self.health(&raw.health);
        Policy {
            zone,
            regions,
            services,
            health,
        }
    }

    fn regions(&mut self, raw: &RawPolicy) -> Vec<Region> {
        let n = raw.regions.0.len();
        if n == 0 {
            self.err("regions", "no regions: expected at least one");
        } else if n > REGIONS_MAX {
            self.err("regions", format!("{n} regions: expected at most {REGIONS_MAX}"));
        }
        let mut endpoints: HashMap<IpAddr, String> = HashMap::new();
        raw.regions
            .0
            .iter()
            .take(REGIONS_MAX)
            .enumerate()
            .map(|(i, (name, r))| self.region(RegionId(i as u8), name, r, &mut endpoints))
            .collect()
    }

    fn region(
        &mut self,
        id: RegionId,
        name: &str,
        r: &RawRegion,
        seen: &mut HashMap<IpAddr, String>,
    ) -> Region {
        let path = format!("regions.{name}");
        if let Err(why) = region_name(name) {
            self.err_key(&path, format!("{name:?} is not a valid region name: {why}"));
        }
        let mut region = Region {
            id,
            name: name.to_owned(),
            endpoints_v4: Vec::new(),
            endpoints_v6: Vec::new(),
            location: None,
            weight: 1,
        };
        if r.endpoints.is_empty() {
            self.err(
                &format!("{path}.endpoints"),
                "no endpoints: expected at least one IPv4 or IPv6 address",
            );
        }
        for (j, text) in r.endpoints.iter().enumerate() {
            let p = format!("{path}.endpoints[{j}]");
            let Ok(ip) = text.parse::<IpAddr>() else {
                self.err(
                    &p,
                    format!(
                        "{text:?} is not an IP address: expected IPv4 (198.19.1.10) or IPv6 (2001:db8::10)"
                    ),
                );
                continue;
            };
            if let Some(first) = seen.get(&ip) {
                self.err(&p, format!("duplicate endpoint {ip} (also in {first})"));
                continue;
            }
            seen.insert(ip, p);
            match ip {
                IpAddr::V4(a) => region.endpoints_v4.push(a),
                IpAddr::V6(a) => region.endpoints_v6.push(a),
            }
        }
        for (family, n) in [
            ("IPv4", region.endpoints_v4.len()),
            ("IPv6", region.endpoints_v6.len()),
        ] {
            if n > ENDPOINTS_PER_REGION_MAX {
                let message =
                    format!("{n} {family} endpoints: expected at most {ENDPOINTS_PER_REGION_MAX} per family");
                self.err(&format!("{path}.endpoints"), message);
            }
        }
        if let Some(loc) = &r.location {
            if !(-90.0..=90.0).contains(&loc.lat) {
                self.err(
                    &format!("{path}.location.lat"),
                    format!("latitude {} is out of range: expected -90..=90", loc.lat),
                );
            }
            if !(-180.0..=180.0).contains(&loc.lon) {
                let message = format!("longitude {} is out of range: expected -180..=180", loc.lon);
                self.err(&format!("{path}.location.lon"), message);
            }
            region.location = Some(GeoPoint {
                lat: loc.lat,
                lon: loc.lon,
            });
        }
        match u32::try_from(r.weight) {
            Ok(w) if (1..=WEIGHT_MAX).contains(&r.weight) => region.weight = w,
            _ => self.err(
                &format!("{path}.weight"),
                format!("weight {} is out of range: expected 1..={WEIGHT_MAX}", r.weight),
            ),
        }
        region
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the service's context, each needed once"
    )]
    fn service(
        &mut self,
        path: &str,
        id: ServiceId,
        name: &str,
        zone: &str,
        s: &RawService,
        regions: &[Region],
        names: &[&str],
    ) -> Service {
        let name_lc = name.to_ascii_lowercase();
        let fqdn = if name == "@" {
            zone.to_owned()
        } else {
            if let Err(why) = dns_label(name) {
                self.err_key(
                    path,
                    format!("{name:?} is not a valid service name: {why} (use \"@\" for the apex)"),
                );
            }
            format!("{name_lc}.{}", zone.trim_start_matches('.'))
        };
        if fqdn.len() > 254 {
            self.err_key(path, format!("{fqdn:?} is longer than 253 characters"));
        }
        let mode = match s.mode {
            RawMode::Latency => Mode::Latency,
            RawMode::Failover => Mode::Failover,
            RawMode::Weighted => Mode::Weighted,
            RawMode::Geo => Mode::Geo,
        };
        let service_regions = match &s.regions {
            None => regions.iter().map(|r| r.id).collect(),
            Some(list) => self.region_list(&format!("{path}.regions"), list, names, None),
        };
        let region_set = RegionSet::from_ids(&service_regions);
        if mode == Mode::Geo {
            self.geo_locations(path, s, &service_regions, regions);
        }
        let answers = match u8::try_from(s.answers) {
            Ok(a) if (1..=ANSWERS_MAX).contains(&usize::from(a)) => a,
            _ => {
                self.err(
                    &format!("{path}.answers"),
                    format!(
                        "answers {} is out of range: expected 1..={ANSWERS_MAX}",
                        s.answers
                    ),
                );
                1
            }
        };
        let (ttl_normal_s, ttl_min_s) = self.ttl(path, s);
        let (stabilize_us, stabilize_pct) = self.stabilize(path, s);
        let explore_ppm = if (0.0..=EXPLORE_MAX).contains(&s.explore) {
            (s.explore * 1e6).round() as u32
        } else {
            self.err(
                &format!("{path}.explore"),
                format!(
                    "explore {} is out of range: expected 0..={EXPLORE_MAX}",
                    s.explore
                ),
            );
            0
        };
        let when_all_down = match &s.when_all_down {
            RawWhenAllDown::Open => WhenAllDown::Open,
            RawWhenAllDown::Closed => WhenAllDown::Closed,
            RawWhenAllDown::Fallback(list) => {
                let p = format!("{path}.when_all_down.fallback");
                WhenAllDown::Fallback(RegionSet::from_ids(&self.region_list(
                    &p,
                    list,
                    names,
                    Some(region_set),
                )))
            }
        };
        let slow_start = self.duration(&format!("{path}.slow_start"), &s.slow_start, SLOW_START_MAX);
        let fences = self.fences(path, &s.fences, names, region_set);
        let capacity = s
            .capacity
            .as_ref()
            .map(|c| self.capacity(&format!("{path}.capacity"), c));
        Service {
            id,
            name: name_lc,
            fqdn,
            mode,
            regions: service_regions,
            region_set,
            answers,
            ttl_normal_s,
            ttl_min_s,
            stabilize_us,
            stabilize_pct,
            explore_ppm,
            when_all_down,
            slow_start,
            fences,
            capacity,
        }
    }

    /// `geo` mode measures distance from every candidate, so each needs a location.
    fn geo_locations(
        &mut self,
        path: &str,
        s: &RawService,
        service_regions: &[RegionId],
        regions: &[Region],
    ) {
        for (j, id) in service_regions.iter().enumerate() {
            let region = &regions[id.index()];
            if region.location.is_none() {
                let p = if s.regions.is_some() {
                    format!("{path}.regions[{j}]")
                } else {
                    format!("{path}.mode")
                };
                let message = format!(
                    "mode geo needs a location for every region: region {:?} has none",
                    region.name
                );
                self.err(&p, message);
            }
        }
    }

    fn ttl(&mut self, path: &str, s: &RawService) -> (u32, u32) {
        const TTL_MIN_DEFAULT_S: u32 = 5;
        let normal = self.ttl_s(&format!("{path}.ttl.normal"), &s.ttl.normal);
        let Some(min_text) = &s.ttl.min else {
            let normal = normal.unwrap_or(1);
            return (normal, normal.min(TTL_MIN_DEFAULT_S));
        };
        let min = self.ttl_s(&format!("{path}.ttl.min"), min_text);
        if let (Some(n), Some(m)) = (normal, min)
            && m > n
        {
            let message = format!(
                "ttl.min {min_text} is longer than ttl.normal {}: expected min <= normal",
                s.ttl.normal
            );
            self.err(&format!("{path}.ttl.min"), message);
        }
        (normal.unwrap_or(1), min.unwrap_or(1))
    }

    /// A TTL: a duration in whole seconds, 1..=[`TTL_MAX_S`].
    fn ttl_s(&mut self, path: &str, text: &str) -> Option<u32> {
        let d = match parse_duration(text) {
            Ok(d) => d,
            Err(why) => {
                self.err(path, why);
                return None;
            }
        };
        if d.subsec_nanos() != 0 {
            self.err(path, format!("TTL {text} is not a whole number of seconds"));
            return None;
        }
        if !(1..=TTL_MAX_S).contains(&d.as_secs()) {
            self.err(
                path,
                format!("TTL {text} is out of range: expected 1s..={TTL_MAX_S}s"),
            );
            return None;
        }
        Some(d.as_secs() as u32)
    }

    fn stabilize(&mut self, path: &str, s: &RawService) -> (u32, u32) {
        let us = if (0..=STABILIZE_MS_MAX).contains(&s.stabilize.ms) {
            (s.stabilize.ms * 1000) as u32
        } else {
            let message = format!(
                "stabilize.ms {} is out of range: expected 0..={STABILIZE_MS_MAX}",
                s.stabilize.ms
            );
            self.err(&format!("{path}.stabilize.ms"), message);
            0
        };
        let pct = if (0..=100).contains(&s.stabilize.pct) {
            s.stabilize.pct as u32
        } else {
            let message = format!(
                "stabilize.pct {} is out of range: expected 0..=100",
                s.stabilize.pct
            );
            self.err(&format!("{path}.stabilize.pct"), message);
            0
        };
        (us, pct)
    }

    fn duration(&mut self, path: &str, text: &str, max: Duration) -> Duration {
        match parse_duration(text) {
            Ok(d) if d <= max => d,
            Ok(_) => {
                self.err(
                    path,
                    format!("duration {text} is too long: expected at most {}s", max.as_secs()),
                );
                Duration::ZERO
            }
            Err(why) => {
                self.err(path, why);
                Duration::ZERO
            }
        }
    }

    fn fences(&mut self, path: &str, list: &[RawFence], names: &[&str], region_set: RegionSet) -> Vec<Fence> {
        if list.len() > FENCES_PER_SERVICE_MAX {
            let message = format!("{} fences: expected at most {FENCES_PER_SERVICE_MAX}", list.len());
            self.err(&format!("{path}.fences"), message);
        }
        (list.iter().take(FENCES_PER_SERVICE_MAX).enumerate())
            .map(|(k, f)| self.fence(&format!("{path}.fences[{k}]"), f, names, region_set))
            .collect()
    }

    fn fence(&mut self, path: &str, f: &RawFence, names: &[&str], service_regions: RegionSet) -> Fence {
        if f.countries.is_empty() && f.continents.is_empty() {
            self.err(
                path,
                "a fence needs clients to apply to: expected at least one of countries or continents",
            );
        }
        let mut countries = Vec::new();
        for (m, code) in f.countries.iter().enumerate() {
            let p = format!("{path}.countries[{m}]");
            match Country::parse(code) {
                Some(c) if countries.contains(&c) => self.err(&p, format!("duplicate country {c}")),
                Some(c) => countries.push(c),
                None => {
                    let hint = if code.eq_ignore_ascii_case("UK") {
                        " (did you mean \"GB\"?)"
                    } else {
                        ""
                    };
                    self.err(
                        &p,
                        format!("{code:?} is not an ISO 3166-1 alpha-2 country code{hint}"),
                    );
                }
            }
        }
        let mut continents = Vec::new();
        for (m, code) in f.continents.iter().enumerate() {
            let p = format!("{path}.continents[{m}]");
            match Continent::parse(code) {
                Some(c) if continents.contains(&c) => self.err(&p, format!("duplicate continent {c}")),
                Some(c) => continents.push(c),
                None => {
                    let all: Vec<&str> = Continent::ALL.iter().map(|c| c.code()).collect();
                    self.err(
                        &p,
                        format!(
                            "{code:?} is not a continent code: expected one of {}",
                            all.join(", ")
                        ),
                    );
                }
            }
        }
        let allow = self.region_list(&format!("{path}.allow"), &f.allow, names, Some(service_regions));
        Fence {
            countries,
            continents,
            allow: RegionSet::from_ids(&allow),
            strict: f.strict,
        }
    }

    fn capacity(&mut self, path: &str, c: &RawCapacity) -> Capacity {
        if c.queue_depth_high.is_none() && c.kv_cache_high.is_none() {
            self.err(
                path,
                "no watermark: expected at least one of queue_depth_high or kv_cache_high",
            );
        }
        let queue_depth_high = c.queue_depth_high.and_then(|q| match u32::try_from(q) {
            Ok(q) if q >= 1 => Some(q),
            _ => {
                self.err(
                    &format!("{path}.queue_depth_high"),
                    format!("queue_depth_high {q} is out of range: expected >= 1"),
                );
                None
            }
        });
        let kv_cache_high = c.kv_cache_high.and_then(|kv| {
            if (0.0..=1.0).contains(&kv) {
                Some(kv)
            } else {
                self.err(
                    &format!("{path}.kv_cache_high"),
                    format!("kv_cache_high {kv} is out of range: expected 0..=1"),
                );
                None
            }
        });
        Capacity {
            queue_depth_high,
            kv_cache_high,
        }
    }

    /// Resolves a list of region names: known, without duplicates, non-empty and, with `within`,
    /// among the service's regions.
    fn region_list(
        &mut self,
        path: &str,
        list: &[String],
        names: &[&str],
        within: Option<RegionSet>,
    ) -> Vec<RegionId> {
        if list.is_empty() {
            self.err(path, "empty list: expected at least one region");
        }
        let mut ids: Vec<RegionId> = Vec::new();
        let mut first_at: HashMap<&str, usize> = HashMap::new();
        for (j, name) in list.iter().enumerate() {
            let p = format!("{path}[{j}]");
            let Some(i) = names.iter().position(|n| n == name) else {
                let hint = closest(name, names)
                    .map(|n| format!(" (did you mean {n:?}?)"))
                    .unwrap_or_default();
                self.err(&p, format!("unknown region {name:?}{hint}"));
                continue;
            };
            if let Some(k) = first_at.get(name.as_str()) {
                self.err(&p, format!("duplicate region {name:?} (also at {path}[{k}])"));
                continue;
            }
            first_at.insert(name, j);
            let id = RegionId(i as u8);
            if let Some(set) = within
                && !set.contains(id)
            {
                let allowed: Vec<&str> = set.iter().map(|r| names[r.index()]).collect();
                let message = format!(
                    "region {name:?} is not one of the service's regions: expected one of {}",
                    allowed.join(", ")
                );
                self.err(&p, message);
                continue;
            }
            ids.push(id);
        }
        ids
    }

    fn health(&mut self, h: &RawHealth) -> HealthPolicy {
        let d = HealthPolicy::default();
        let count = |c: &mut Check<'_>, field: &str, v: i64, default: u32| {
            if (1..=HEALTH_COUNT_MAX).contains(&v) {
                v as u32
            } else {
                c.err(
                    &format!("health.{field}"),
                    format!("{field} {v} is out of range: expected 1..={HEALTH_COUNT_MAX}"),
                );
                default
            }
        };
        let fall = count(self, "fall", h.fall, d.fall);
        let rise = count(self, "rise", h.rise, d.rise);
        let stale_after = self.duration("health.stale_after", &h.stale_after, STALE_AFTER_MAX);
        if stale_after.is_zero() && parse_duration(&h.stale_after).is_ok() {
            self.err(
                "health.stale_after",
                "stale_after 0s would make every host stale: expected more than 0s",
            );
        }
        let min_healthy_fraction = if (0.0..=1.0).contains(&h.min_healthy_fraction) {
            h.min_healthy_fraction
        } else {
            let message = format!(
                "min_healthy_fraction {} is out of range: expected 0..=1",
                h.min_healthy_fraction
            );
            self.err("health.min_healthy_fraction", message);
            d.min_healthy_fraction
        };
        let min_healthy_hosts = u32::try_from(h.min_healthy_hosts).unwrap_or_else(|_| {
            let message = format!(
                "min_healthy_hosts {} is out of range: expected >= 0",
                h.min_healthy_hosts
            );
            self.err("health.min_healthy_hosts", message);
            d.min_healthy_hosts
        });
        HealthPolicy {
            fall,
            rise,
            stale_after,
            min_healthy_fraction,
            min_healthy_hosts,
        }
    }
}

// === Names, durations, suggestions ===

/// A zone name: LDH labels of 1..=63 characters, at most 253 in all; returns it lower case with
/// the trailing dot.
fn dns_name(text: &str) -> Result<String, String> {
    let name = text.strip_suffix('.').unwrap_or(text);
    if name.is_empty() {
        return Err("expected a name like infer.example.com.".to_owned());
    }
    if name.len() > 253 {
        return Err(format!("{} characters: expected at most 253", name.len()));
    }
    for label in name.split('.') {
        dns_label(label)?;
    }
    Ok(format!("{}.", name.to_ascii_lowercase()))
}

/// A DNS label: 1..=63 letters, digits and hyphens, not starting or ending with a hyphen.
fn dns_label(label: &str) -> Result<(), String> {
    if label.is_empty() || label.len() > 63 {
        return Err(format!(
            "label {label:?} has {} characters: expected 1..=63",
            label.len()
        ));
    }
    if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(format!("label {label:?}: expected only letters, digits and '-'"));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!("label {label:?} starts or ends with '-'"));
    }
    Ok(())
}

/// A region name: 1..=63 of `[a-z0-9-]`.
fn region_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("{} characters: expected 1..=63", name.len()));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("expected only lower-case letters, digits and '-'".to_owned());
    }
    Ok(())
}

/// `500ms`, `20s`, `2m`, `1h`: a whole number and a unit.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("bad duration {text:?}: expected a number with ms, s, m or h");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(bad());
    }
    let n: u64 = number.parse().map_err(|_| bad())?;
    let ms_per_unit = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(bad)
}

/// The known name closest to `name`, if it is at most [`SUGGEST_DISTANCE_MAX`] edits away.
fn closest<'n>(name: &str, known: &[&'n str]) -> Option<&'n str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, _)| *d <= SUGGEST_DISTANCE_MAX)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(text: &str) -> LocationIndex {
        LocationIndex::new(&parse_yaml(text).expect("valid YAML"))
    }

    fn at(index: &LocationIndex, path: &str) -> (usize, usize) {
        let m = index.value(path);
        (m.line, m.column)
    }

    const DOC: &str = "\
zone: infer.example.com.
regions:
  us-east: { endpoints: [198.19.1.10, \"2001:db8:1::10\"] }
  eu-west:
    endpoints:
      - 198.19.2.10
services:
  api:
    fences:
      - { countries: [DE], allow: [eu-west, us-east] }
";

    #[test]
    fn index_block_and_flow() {
        let ix = index(DOC);
        assert_eq!(at(&ix, "zone"), (1, 7));
        assert_eq!(at(&ix, "regions.us-east.endpoints[0]"), (3, 26));
        assert_eq!(at(&ix, "regions.us-east.endpoints[1]"), (3, 39));
        assert_eq!(at(&ix, "regions.eu-west.endpoints[0]"), (6, 9));
        assert_eq!(at(&ix, "services.api.fences[0].countries[0]"), (10, 23));
        assert_eq!(at(&ix, "services.api.fences[0].allow[1]"), (10, 45));
        let key = ix.key("regions.eu-west");
        assert_eq!((key.line, key.column), (4, 3));
    }

    #[test]
    fn index_falls_back_to_the_closest_written_ancestor() {
        let ix = index(DOC);
        assert_eq!(at(&ix, "services.api.ttl.min"), at(&ix, "services.api"));
        assert_eq!(
            at(&ix, "services.api.fences[0].allow[7]"),
            at(&ix, "services.api.fences[0].allow")
        );
        assert_eq!(at(&ix, "health.fall"), at(&ix, ""));
    }

    #[test]
    fn aliases_and_errors() {
        let ix = index("a: &x [1, 2]\nb: *x\n");
        assert_eq!(at(&ix, "b"), (2, 4));
        assert_eq!(at(&ix, "b[1]"), (1, 11));
        let e = parse_yaml("a: 1\na: 2\n").unwrap_err();
        assert_eq!(
            (e.mark.line, e.path.as_str(), e.message.as_str()),
            (2, "a", "duplicate key \"a\" (also at line 1)")
        );
        let e = parse_yaml("a:\n  b: [1, 2\n").unwrap_err();
        assert_eq!(e.path, "a.b[2]", "{e:?}");
        let bomb = "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n\
                    c: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c]\n\
                    e: &e [*d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e]\n";
        assert!(parse_yaml(bomb).unwrap_err().message.contains("YAML nodes"));
        assert!(parse_yaml(&"[".repeat(40)).is_err());
    }

    #[test]
    fn core_schema() {
        assert_eq!(resolve("~"), Scalar::Null);
        assert_eq!(resolve("True"), Scalar::Bool(true));
        assert_eq!(resolve("yes"), Scalar::Str);
        assert_eq!(resolve("NO"), Scalar::Str);
        assert_eq!(resolve("-12"), Scalar::Int(-12));
        assert_eq!(resolve("0x1f"), Scalar::Int(31));
        assert_eq!(resolve("39.0"), Scalar::Float(39.0));
        assert_eq!(resolve(".5e1"), Scalar::Float(5.0));
        assert_eq!(resolve("198.19.1.10"), Scalar::Str);
        assert_eq!(resolve("inf"), Scalar::Str);
        assert_eq!(resolve("20s"), Scalar::Str);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_mins(2)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_hours(1)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["20x", "s", "", "1.5s", "-1s", "20 s", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("eu-wset", "eu-west"), 2);
        assert_eq!(closest("eu-wset", &["us-east", "eu-west"]), Some("eu-west"));
        assert_eq!(closest("ap-south", &["us-east", "eu-west"]), None);
    }

    #[test]
    fn raw_health_defaults_are_health_policy_defaults() {
        let ix = LocationIndex::default();
        let mut check = Check {
            index: &ix,
            errors: Vec::new(),
        };
        assert_eq!(check.health(&RawHealth::default()), HealthPolicy::default());
        assert!(check.errors.is_empty());
    }
}
