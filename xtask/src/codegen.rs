//! `cargo xtask codegen [--check]`: generates `docs/policy.md`, the operator's reference of the
//! policy file, from the serde types in `steering-core/src/policy/raw.rs`.
//!
//! raw.rs mirrors the YAML one to one and documents every field, so the reference is derived from
//! it rather than written twice. The parser is line based on purpose (no `syn`, to keep xtask's
//! dependencies few): it understands the shapes raw.rs uses — structs with one field per line,
//! enums with unit or one-field variants, `#[serde(default)]`, `default = "fn"`, `rename` and
//! `rename_all` — and fails on anything else instead of documenting it wrongly.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// The policy types, relative to the workspace root.
const RAW_RS: &str = "steering-core/src/policy/raw.rs";
/// The generated reference, relative to the workspace root.
const POLICY_MD: &str = "docs/policy.md";
/// How deep "Used at" paths are followed; the policy nests three levels, cycles would not end.
const PATH_DEPTH_MAX: usize = 8;

/// Writes `docs/policy.md`, or with `check` only compares it and fails when it is stale.
pub(crate) fn run(check: bool) -> Result<()> {
    let root = crate::project_root();
    let raw = std::fs::read_to_string(root.join(RAW_RS)).with_context(|| format!("read {RAW_RS}"))?;
    let want = policy_reference(&raw).with_context(|| format!("generate {POLICY_MD} from {RAW_RS}"))?;
    let path = root.join(POLICY_MD);
    if check {
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have != want {
            bail!("{POLICY_MD} is stale: run `cargo xtask codegen`");
        }
        eprintln!("    {POLICY_MD} is up to date");
        return Ok(());
    }
    write_if_changed(&path, &want)?;
    Ok(())
}

fn write_if_changed(path: &Path, text: &str) -> Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        eprintln!("    {POLICY_MD} is up to date");
        return Ok(());
    }
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    eprintln!("    wrote {POLICY_MD}");
    Ok(())
}

// === parse raw.rs ===

/// One policy type: a struct (a YAML map) or an enum (a choice of values).
#[derive(Debug)]
struct Type {
    rust_name: String,
    doc: String,
    kind: Kind,
    /// `#[serde(deny_unknown_fields)]`: a key not listed is an error.
    denies_unknown: bool,
    /// Structs only: whether a `impl Default for` it exists (a `#[serde(default)]` field of this
    /// type then takes each key's default).
    has_default_impl: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Struct,
    Enum,
}

/// A struct field or an enum variant.
#[derive(Debug)]
struct Member {
    rust_name: String,
    /// The YAML key or value, after `rename`/`rename_all`.
    key: String,
    /// The Rust type of a field, or of a variant's one field; empty for a unit variant.
    ty: String,
    default: Default,
    doc: String,
}

#[derive(Debug)]
enum Default {
    /// No `#[serde(default)]`: the key must be given (unless its type is an `Option`).
    Required,
    /// `#[serde(default)]`: the type's `Default`. On an enum variant: it is the `#[default]` one.
    OfType,
    /// `#[serde(default = "fn")]`.
    Function(String),
}

/// Everything the generator needs from raw.rs, in file order.
#[derive(Debug, Default)]
struct Raw {
    types: Vec<(Type, Vec<Member>)>,
    /// `fn name() -> T { expr }` at the top level: the bodies of the default functions.
    functions: BTreeMap<String, String>,
}

/// `#[serde(...)]` arguments as (key, value) pairs; a value is unquoted.
fn serde_args(line: &str, n: usize) -> Result<Vec<(String, Option<String>)>> {
    let Some(inner) = line.strip_prefix("#[serde(").and_then(|r| r.strip_suffix(")]")) else {
        bail!("{RAW_RS}:{n}: expected `#[serde(...)]` on one line: {line}");
    };
    let mut args = Vec::new();
    let (mut cur, mut quoted) = (String::new(), false);
    for c in inner.chars().chain([',']) {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => {
                let a = cur.trim();
                if !a.is_empty() {
                    let (k, v) = match a.split_once('=') {
                        Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"').to_owned())),
                        None => (a, None),
                    };
                    args.push((k.to_owned(), v));
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    Ok(args)
}

/// Applies a serde `rename_all` rule to a Rust field (`snake_case`) or variant (`PascalCase`) name.
fn rename_all(rule: &str, name: &str, n: usize) -> Result<String> {
    // Split into lower-case words from either spelling.
    let mut words: Vec<String> = Vec::new();
    for part in name.split('_').filter(|p| !p.is_empty()) {
        let mut w = String::new();
        for c in part.chars() {
            if c.is_uppercase() && !w.is_empty() {
                words.push(std::mem::take(&mut w));
            }
            w.extend(c.to_lowercase());
        }
        words.push(w);
    }
    let capitalized = |w: &String| {
        let mut c = w.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect::<String>())
            .unwrap_or_default()
    };
    Ok(match rule {
        "lowercase" => words.concat(),
        "UPPERCASE" => words.concat().to_uppercase(),
        "snake_case" => words.join("_"),
        "SCREAMING_SNAKE_CASE" => words.join("_").to_uppercase(),
        "kebab-case" => words.join("-"),
        "SCREAMING-KEBAB-CASE" => words.join("-").to_uppercase(),
        "PascalCase" => words.iter().map(capitalized).collect(),
        "camelCase" => {
            let mut out = words.first().cloned().unwrap_or_default();
            out.extend(words.iter().skip(1).map(capitalized));
            out
        }
        other => bail!("{RAW_RS}:{n}: unknown rename_all rule {other:?}"),
    })
}

/// The name after `struct`/`enum` in an item line, without generics.
fn item_name(rest: &str) -> &str {
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// Strips `pub`, `pub(crate)`, `pub(super)`, ... from the front of an item or field.
fn strip_visibility(s: &str) -> &str {
    let Some(rest) = s.strip_prefix("pub") else {
        return s;
    };
    let rest = if rest.starts_with('(') {
        rest.split_once(')').map_or(rest, |(_, r)| r)
    } else {
        rest
    };
    rest.trim_start()
}

/// Attributes and doc lines collected before the next item, field or variant.
#[derive(Debug, Default)]
struct Pending {
    doc: Vec<String>,
    serde: Vec<(String, Option<String>)>,
    is_default_variant: bool,
}

impl Pending {
    fn doc(&self) -> String {
        self.doc.join(" ")
    }
}

/// What the parser is inside of.
enum State {
    Top,
    /// A struct or enum body; `rename_all` is the container's.
    Body {
        ty: Type,
        members: Vec<Member>,
        rename_all: Option<String>,
    },
    /// A default function's body.
    Function {
        name: String,
        body: String,
    },
    /// Any other top-level block (impl, other fn), skipped to its closing `}` at column 0.
    Skip,
}

fn parse(raw: &str) -> Result<Raw> {
    let mut out = Raw::default();
    let mut state = State::Top;
    let mut pending = Pending::default();
    for (i, line) in raw.lines().enumerate() {
        let n = i + 1;
        let t = line.trim();
        state = match state {
            State::Skip => {
                if line.starts_with('}') {
                    State::Top
                } else {
                    State::Skip
                }
            }
            State::Function { name, mut body } => {
                if line.starts_with('}') {
                    out.functions.insert(name, body.trim().to_owned());
                    State::Top
                } else {
                    body.push_str(t);
                    body.push(' ');
                    State::Function { name, body }
                }
            }
            State::Top => top_line(line, t, n, &mut pending, &mut out)?,
            State::Body {
                ty,
                mut members,
                rename_all,
            } => {
                if line.starts_with('}') {
                    out.types.push((ty, members));
                    State::Top
                } else {
                    body_line(t, n, &ty, rename_all.as_deref(), &mut pending, &mut members)?;
                    State::Body {
                        ty,
                        members,
                        rename_all,
                    }
                }
            }
        };
    }
    if !matches!(state, State::Top) {
        bail!("{RAW_RS}: ends inside an item");
    }
    Ok(out)
}

fn top_line(line: &str, t: &str, n: usize, pending: &mut Pending, out: &mut Raw) -> Result<State> {
    if let Some(d) = t.strip_prefix("///") {
        pending.doc.push(d.trim().to_owned());
        return Ok(State::Top);
    }
    if t.starts_with("#[serde(") {
        pending.serde.extend(serde_args(t, n)?);
        return Ok(State::Top);
    }
    if t.is_empty() || t.starts_with("//") || t.starts_with("#[") || t.starts_with("use ") {
        return Ok(State::Top);
    }
    let p = std::mem::take(pending);
    let item = strip_visibility(t);
    let kind = if let Some(rest) = item.strip_prefix("struct ") {
        Some((Kind::Struct, item_name(rest)))
    } else {
        item.strip_prefix("enum ")
            .map(|rest| (Kind::Enum, item_name(rest)))
    };
    if let Some((kind, name)) = kind {
        if !t.ends_with('{') {
            // A tuple or unit struct (`Named<V>`) has no keys of its own.
            return Ok(State::Top);
        }
        let (mut rename, mut denies_unknown) = (None, false);
        for (k, v) in p.serde {
            match (k.as_str(), v) {
                ("rename_all", Some(v)) => rename = Some(v),
                ("deny_unknown_fields", None) => denies_unknown = true,
                ("expecting", _) => {}
                (k, _) => bail!("{RAW_RS}:{n}: codegen does not understand #[serde({k})] on {name}"),
            }
        }
        return Ok(State::Body {
            ty: Type {
                rust_name: name.to_owned(),
                doc: p.doc.join(" "),
                kind,
                denies_unknown,
                has_default_impl: false,
            },
            members: Vec::new(),
            rename_all: rename,
        });
    }
    if let Some(rest) = item.strip_prefix("fn ")
        && let Some((name, sig)) = rest.split_once('(')
        && sig.starts_with(')')
        && t.ends_with('{')
    {
        return Ok(State::Function {
            name: name.to_owned(),
            body: String::new(),
        });
    }
    if let Some(rest) = t.strip_prefix("impl Default for ") {
        let name = item_name(rest);
        for (ty, _) in &mut out.types {
            if ty.rust_name == name {
                ty.has_default_impl = true;
            }
        }
    }
    if t.ends_with('{') && line.starts_with(|c: char| !c.is_whitespace()) {
        return Ok(State::Skip);
    }
    Ok(State::Top)
}

fn body_line(
    t: &str,
    n: usize,
    ty: &Type,
    rename_all_rule: Option<&str>,
    pending: &mut Pending,
    members: &mut Vec<Member>,
) -> Result<()> {
    if let Some(d) = t.strip_prefix("///") {
        pending.doc.push(d.trim().to_owned());
        return Ok(());
    }
    if t.starts_with("#[serde(") {
        pending.serde.extend(serde_args(t, n)?);
        return Ok(());
    }
    if t == "#[default]" {
        pending.is_default_variant = true;
        return Ok(());
    }
    if t.is_empty() || t.starts_with("//") || t.starts_with("#[") {
        return Ok(());
    }
    let p = std::mem::take(pending);
    let Some(decl) = t.strip_suffix(',') else {
        bail!("{RAW_RS}:{n}: expected one field or variant per line, ending in `,`: {t}");
    };
    let decl = strip_visibility(decl);
    let (name, member_ty) = match ty.kind {
        Kind::Struct => {
            let Some((name, field_ty)) = decl.split_once(':') else {
                bail!("{RAW_RS}:{n}: expected `name: Type,`: {t}");
            };
            (name.trim(), field_ty.trim())
        }
        Kind::Enum => match decl.split_once('(') {
            Some((name, rest)) => (name.trim(), rest.strip_suffix(')').unwrap_or(rest).trim()),
            None => (decl.trim(), ""),
        },
    };
    if p.doc.is_empty() {
        bail!(
            "{RAW_RS}:{n}: {}::{name} has no doc comment; the policy reference needs one",
            ty.rust_name
        );
    }
    let mut key = match rename_all_rule {
        Some(rule) => rename_all(rule, name, n)?,
        None => name.to_owned(),
    };
    let mut default = if p.is_default_variant {
        Default::OfType
    } else {
        Default::Required
    };
    for (k, v) in &p.serde {
        match (k.as_str(), v) {
            ("rename", Some(v)) => key.clone_from(v),
            ("default", None) => default = Default::OfType,
            ("default", Some(f)) => default = Default::Function(f.clone()),
            ("skip_serializing_if", _) => {}
            (k, _) => bail!("{RAW_RS}:{n}: codegen does not understand #[serde({k})] on {name}"),
        }
    }
    members.push(Member {
        rust_name: name.to_owned(),
        key,
        ty: member_ty.to_owned(),
        default,
        doc: p.doc(),
    });
    Ok(())
}

// === render docs/policy.md ===

/// A heading's text and GitHub anchor for a Rust type name (`RawRegion` -> `Region`, `#region`).
fn section_name(rust: &str) -> String {
    rust.strip_prefix("Raw").unwrap_or(rust).to_owned()
}

fn anchor(rust: &str) -> String {
    format!("#{}", section_name(rust).to_lowercase())
}

/// The generic argument of `Outer<...>`, if `ty` is one.
fn generic<'a>(ty: &'a str, outer: &str) -> Option<&'a str> {
    ty.strip_prefix(outer)?
        .strip_prefix('<')?
        .strip_suffix('>')
        .map(str::trim)
}

struct Ctx<'a> {
    raw: &'a Raw,
}

impl Ctx<'_> {
    fn find(&self, rust: &str) -> Option<&(Type, Vec<Member>)> {
        self.raw.types.iter().find(|(t, _)| t.rust_name == rust)
    }

    /// A Rust type as an operator reads it.
    fn operator_type(&self, ty: &str, plural: bool) -> Result<String> {
        if let Some(inner) = generic(ty, "Option") {
            return self.operator_type(inner, plural);
        }
        if let Some(inner) = generic(ty, "Vec") {
            return Ok(format!("list of {}", self.operator_type(inner, true)?));
        }
        if let Some(inner) = generic(ty, "Named") {
            return Ok(format!("map of name → {}", self.operator_type(inner, false)?));
        }
        let s = if plural { "s" } else { "" };
        Ok(match ty {
            "String" => format!("string{s}"),
            "bool" => format!("boolean{s}"),
            "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" => {
                format!("integer{s}")
            }
            "f32" | "f64" => format!("number{s}"),
            _ => match self.find(ty) {
                Some((t, members)) if t.kind == Kind::Enum && members.iter().all(|m| m.ty.is_empty()) => {
                    let values: Vec<String> = members.iter().map(|m| format!("`{}`", m.key)).collect();
                    format!("one of {}", values.join(", "))
                }
                Some((t, _)) => format!("[{}]({})", section_name(&t.rust_name), anchor(&t.rust_name)),
                None => bail!("{RAW_RS}: codegen does not know how to describe the type {ty}"),
            },
        })
    }

    /// The default column of a field.
    fn default(&self, m: &Member) -> Result<String> {
        let ty = m.ty.as_str();
        Ok(match &m.default {
            Default::Required if generic(ty, "Option").is_some() => "unset".to_owned(),
            Default::Required => "required".to_owned(),
            Default::Function(f) => {
                let Some(body) = self.raw.functions.get(f) else {
                    bail!("{RAW_RS}: no `fn {f}()` for a serde default");
                };
                format!("`{}`", self.value(&literal(body)))
            }
            Default::OfType => {
                if generic(ty, "Option").is_some() {
                    "unset".to_owned()
                } else if generic(ty, "Vec").is_some() || generic(ty, "Named").is_some() {
                    "empty".to_owned()
                } else {
                    match ty {
                        "bool" => "`false`".to_owned(),
                        "String" => "`\"\"`".to_owned(),
                        "f32" | "f64" => "`0.0`".to_owned(),
                        t if t.starts_with(['i', 'u']) && t.len() <= 5 => "`0`".to_owned(),
                        _ => match self.find(ty) {
                            Some((t, members)) if t.kind == Kind::Enum => {
                                let d = members
                                    .iter()
                                    .find(|m| matches!(m.default, Default::OfType))
                                    .with_context(|| format!("{ty} has no #[default] variant"))?;
                                format!("`{}`", d.key)
                            }
                            Some((t, _)) if t.has_default_impl => {
                                format!(
                                    "each key's default, see [{}]({})",
                                    section_name(&t.rust_name),
                                    anchor(&t.rust_name)
                                )
                            }
                            _ => bail!("{RAW_RS}: no default known for the type {ty}"),
                        },
                    }
                }
            }
        })
    }

    /// A default value as written in YAML: `RawMode::Geo` is `geo`; anything else as it is.
    fn value(&self, v: &str) -> String {
        v.split_once("::")
            .and_then(|(ty, variant)| {
                let (t, members) = self.find(ty)?;
                (t.kind == Kind::Enum).then_some(())?;
                members.iter().find(|m| m.rust_name == variant)
            })
            .map_or_else(|| v.to_owned(), |m| m.key.clone())
    }

    /// Where each type sits in the file: `regions.<name>.location`, ... (`""` is the top level).
    fn paths(&self) -> BTreeMap<String, Vec<String>> {
        let mut at: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if let Some((root, _)) = self.raw.types.iter().find(|(t, _)| t.kind == Kind::Struct) {
            self.walk(&root.rust_name, "", 0, &mut at);
        }
        at
    }

    fn walk(&self, rust: &str, path: &str, depth: usize, at: &mut BTreeMap<String, Vec<String>>) {
        let Some((t, members)) = self.find(rust) else {
            return;
        };
        let seen = at.entry(rust.to_owned()).or_default();
        if seen.iter().any(|p| p == path) || depth > PATH_DEPTH_MAX {
            return;
        }
        seen.push(path.to_owned());
        if t.kind != Kind::Struct {
            return;
        }
        for m in members {
            let mut p = if path.is_empty() {
                m.key.clone()
            } else {
                format!("{path}.{}", m.key)
            };
            let mut ty = m.ty.as_str();
            loop {
                if let Some(inner) = generic(ty, "Option") {
                    ty = inner;
                } else if let Some(inner) = generic(ty, "Vec") {
                    p.push_str("[]");
                    ty = inner;
                } else if let Some(inner) = generic(ty, "Named") {
                    p.push_str(".<name>");
                    ty = inner;
                } else {
                    break;
                }
            }
            self.walk(ty, &p, depth + 1, at);
        }
    }
}

/// A default function's body as the value it produces (`"0s".to_owned()` -> `0s`).
fn literal(body: &str) -> String {
    let b = body.trim().trim_end_matches(';');
    let b = b
        .strip_suffix(".to_owned()")
        .or_else(|| b.strip_suffix(".to_string()"))
        .or_else(|| b.strip_suffix(".into()"))
        .or_else(|| b.strip_prefix("String::from(").and_then(|r| r.strip_suffix(')')))
        .unwrap_or(b);
    let b = b.strip_prefix('"').and_then(|r| r.strip_suffix('"')).unwrap_or(b);
    b.to_owned()
}

/// Text for a table cell: one line, `|` escaped.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

fn policy_reference(raw_rs: &str) -> Result<String> {
    let raw = parse(raw_rs)?;
    if raw.types.is_empty() {
        bail!("{RAW_RS}: no policy types found");
    }
    let ctx = Ctx { raw: &raw };
    let paths = ctx.paths();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!-- Generated by `cargo xtask codegen` from {RAW_RS}; edit the doc comments there. -->\n"
    );
    let _ = writeln!(out, "# Policy file reference\n");
    let strict = raw
        .types
        .iter()
        .all(|(t, _)| t.kind == Kind::Enum || t.denies_unknown);
    let _ = writeln!(
        out,
        "Every key `steerd` reads from the policy file (YAML), one section per part of the file.{} \
         `steerd check --policy FILE` validates a file without serving it.\n",
        if strict {
            " Keys not listed here are errors."
        } else {
            ""
        }
    );
    for (t, members) in &raw.types {
        let _ = writeln!(out, "## {}\n", section_name(&t.rust_name));
        let at = paths.get(&t.rust_name).map(Vec::as_slice).unwrap_or_default();
        let at: Vec<String> = at
            .iter()
            .map(|p| {
                if p.is_empty() {
                    "the top level of the file".to_owned()
                } else {
                    format!("`{p}`")
                }
            })
            .collect();
        if !at.is_empty() {
            let _ = writeln!(out, "At: {}.\n", at.join(", "));
        }
        if !t.doc.is_empty() {
            let _ = writeln!(out, "{}\n", t.doc);
        }
        match t.kind {
            Kind::Struct => {
                let _ = writeln!(out, "| Key | Type | Default | Meaning |");
                let _ = writeln!(out, "|-----|------|---------|---------|");
                for m in members {
                    let _ = writeln!(
                        out,
                        "| `{}` | {} | {} | {} |",
                        m.key,
                        cell(&ctx.operator_type(&m.ty, false)?),
                        cell(&ctx.default(m)?),
                        cell(&m.doc)
                    );
                }
            }
            Kind::Enum => {
                let _ = writeln!(out, "| Value | Meaning |");
                let _ = writeln!(out, "|-------|---------|");
                for m in members {
                    let value = if m.ty.is_empty() {
                        format!("`{}`", m.key)
                    } else {
                        format!("`{{ {}: … }}` ({})", m.key, ctx.operator_type(&m.ty, false)?)
                    };
                    let _ = writeln!(out, "| {} | {} |", cell(&value), cell(&m.doc));
                }
            }
        }
        out.push('\n');
    }
    // One trailing newline, as an editor would save it.
    while out.ends_with("\n\n") {
        out.pop();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_reference_is_fresh() {
        if let Err(e) = run(true) {
            panic!("{e:#}");
        }
    }

    #[test]
    fn keys_follow_rename_and_defaults_come_from_their_functions() {
        let raw = r#"
/// The root.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoot {
    /// Required text.
    pub(super) name: String,
    /// Renamed.
    #[serde(rename = "type", default = "default_kind")]
    pub(super) kind: RawKind,
    /// Items.
    #[serde(default)]
    pub(super) items: Named<RawItem>,
}

fn default_kind() -> RawKind {
    RawKind::BigOne
}

/// An item.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawItem {
    /// A | pipe.
    #[serde(default = "default_rtt")]
    pub(super) rtt_ms: i64,
    /// Maybe.
    pub(super) note: Option<String>,
}

fn default_rtt() -> i64 {
    10
}

/// Kinds.
#[serde(rename_all = "snake_case")]
enum RawKind {
    /// Big.
    #[default]
    BigOne,
    /// Listed.
    Listed(Vec<String>),
}
"#;
        let md = policy_reference(raw).unwrap_or_else(|e| panic!("{e:#}"));
        for want in [
            "## Root\n\nAt: the top level of the file.\n\nThe root.",
            "| `name` | string | required | Required text. |",
            "| `type` | [Kind](#kind) | `big_one` | Renamed. |",
            "| `items` | map of name → [Item](#item) | empty | Items. |",
            "At: `items.<name>`.",
            "| `rtt-ms` | integer | `10` | A \\| pipe. |",
            "| `note` | string | unset | Maybe. |",
            "| `big_one` | Big. |",
            "| `{ listed: … }` (list of strings) | Listed. |",
        ] {
            assert!(md.contains(want), "missing {want:?} in\n{md}");
        }
    }

    #[test]
    fn undocumented_fields_and_unknown_attributes_fail() {
        let undocumented = "struct RawA {\n    pub(super) a: String,\n}\n";
        let e = policy_reference(undocumented).expect_err("no doc comment");
        assert!(format!("{e:#}").contains("RawA::a has no doc comment"), "{e:#}");
        let flatten = "struct RawA {\n    /// A.\n    #[serde(flatten)]\n    pub(super) a: RawB,\n}\n";
        let e = policy_reference(flatten).expect_err("flatten");
        assert!(format!("{e:#}").contains("#[serde(flatten)]"), "{e:#}");
    }
}
