//! A renderer for the small subset of Helm's template language that deploy/helm/steer uses, so the
//! chart's defaults can be checked without `helm` (which no registry reachable here ships).
//!
//! Supported: text; `{{ PIPELINE }}` with `{{-`/`-}}` trimming; `{{/* comments */}}`; `if`/`else`/
//! `end`; `range` over a list (`.` is the element, `$` the root); terms `.Values.a.b`, `.Release.Name`,
//! `.Release.Namespace`, `.`, `$`, string literals; functions `quote`, `toYaml`, `nindent N`,
//! `indent N`, `replace OLD NEW`, `eq A B`. Anything else, and a `.Values` path that values.yaml does
//! not have, is an error: the chart must stay inside what is checked.

use std::fmt::Write as _;

use serde_json::Value;

/// `.Release` of the render.
#[derive(Debug, Clone)]
pub struct Release {
    pub name: String,
    pub namespace: String,
}

#[derive(Debug)]
enum Node {
    Text(String),
    Output(String),
    If(String, Vec<Node>, Vec<Node>),
    Range(String, Vec<Node>),
}

/// Where the action that `s` starts with ends (the index of its `}}`), skipping string literals.
fn action_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        match quote {
            Some(q) if b[i] == b'\\' && q == b'"' => i += 1,
            Some(q) if b[i] == q => quote = None,
            None if b[i] == b'"' || b[i] == b'`' => quote = Some(b[i]),
            None if b[i..].starts_with(b"}}") => return Some(i),
            Some(_) | None => {}
        }
        i += 1;
    }
    None
}

/// Splits into text and actions, applying the trim markers.
fn lex(src: &str) -> Result<Vec<(bool, String)>, String> {
    let mut out: Vec<(bool, String)> = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(i) = rest.find("{{") {
        let mut text = &rest[..i];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[i + 2..];
        let end = action_end(after).ok_or("an unclosed {{")?;
        let mut body = &after[..end];
        if let Some(b) = body.strip_prefix("- ") {
            text = text.trim_end();
            body = b;
        }
        trim_next = false;
        if let Some(b) = body.strip_suffix(" -") {
            trim_next = true;
            body = b;
        }
        out.push((false, text.to_owned()));
        let body = body.trim();
        if !(body.starts_with("/*") && body.ends_with("*/")) {
            out.push((true, body.to_owned()));
        }
        rest = &after[end + 2..];
    }
    out.push((false, if trim_next { rest.trim_start() } else { rest }.to_owned()));
    Ok(out)
}

fn parse(
    tokens: &mut std::vec::IntoIter<(bool, String)>,
    until_end: bool,
) -> Result<(Vec<Node>, Option<String>), String> {
    let mut nodes = Vec::new();
    while let Some((action, s)) = tokens.next() {
        if !action {
            nodes.push(Node::Text(s));
            continue;
        }
        if s == "end" || s == "else" {
            if !until_end {
                return Err(format!("unexpected {{{{ {s} }}}}"));
            }
            return Ok((nodes, Some(s)));
        }
        if let Some(p) = s.strip_prefix("if ") {
            let (then, stop) = parse(tokens, true)?;
            let els = if stop.as_deref() == Some("else") {
                parse(tokens, true)?.0
            } else {
                Vec::new()
            };
            nodes.push(Node::If(p.trim().to_owned(), then, els));
        } else if let Some(p) = s.strip_prefix("range ") {
            let (body, stop) = parse(tokens, true)?;
            if stop.as_deref() != Some("end") {
                return Err("range with else is not supported".to_owned());
            }
            nodes.push(Node::Range(p.trim().to_owned(), body));
        } else {
            let word = s.split_whitespace().next().unwrap_or("");
            if ["with", "define", "template", "block", "include", "tpl"].contains(&word) || s.contains(":=") {
                return Err(format!("{{{{ {s} }}}} is outside the supported subset"));
            }
            nodes.push(Node::Output(s));
        }
    }
    if until_end {
        return Err("a missing {{ end }}".to_owned());
    }
    Ok((nodes, None))
}

/// Splits a command into words: string literals (`"..."`, `` `...` ``) stay whole.
fn words(cmd: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = cmd.trim().chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' || c == '`' {
            chars.next();
            let mut w = String::from(c);
            let mut closed = false;
            while let Some(d) = chars.next() {
                w.push(d);
                if c == '"' && d == '\\' {
                    w.push(chars.next().ok_or("a dangling escape")?);
                } else if d == c {
                    closed = true;
                    break;
                }
            }
            if !closed {
                return Err(format!("an unclosed string in {cmd:?}"));
            }
            out.push(w);
        } else if c == '(' || c == ')' {
            return Err(format!("parentheses are outside the supported subset: {cmd:?}"));
        } else {
            let mut w = String::new();
            while let Some(&d) = chars.peek() {
                if d.is_whitespace() {
                    break;
                }
                w.push(d);
                chars.next();
            }
            out.push(w);
        }
    }
    Ok(out)
}

/// Splits a pipeline at `|` outside string literals.
fn stages(pipe: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in pipe.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
                out.last_mut().expect("a stage").push(c);
            }
            None if c == '|' => out.push(String::new()),
            None => {
                if c == '"' || c == '`' {
                    quote = Some(c);
                }
                out.last_mut().expect("a stage").push(c);
            }
        }
    }
    out
}

struct Ctx<'a> {
    root: &'a Value,
    dot: &'a Value,
}

fn unquote(w: &str) -> Result<String, String> {
    if let Some(raw) = w.strip_prefix('`').and_then(|w| w.strip_suffix('`')) {
        return Ok(raw.to_owned());
    }
    serde_json::from_str::<String>(w).map_err(|e| format!("string literal {w}: {e}"))
}

fn term(ctx: &Ctx<'_>, w: &str) -> Result<Value, String> {
    if w.starts_with('"') || w.starts_with('`') {
        return Ok(Value::String(unquote(w)?));
    }
    if let Ok(n) = w.parse::<i64>() {
        return Ok(Value::from(n));
    }
    let (base, path) = if let Some(p) = w.strip_prefix('$') {
        (ctx.root, p)
    } else if w.starts_with('.') {
        (ctx.dot, w)
    } else {
        return Err(format!("{w:?} is not a supported term"));
    };
    let mut v = base;
    for key in path.split('.').filter(|k| !k.is_empty()) {
        v = v.get(key).ok_or_else(|| format!("{w}: no key {key:?}"))?;
    }
    Ok(v.clone())
}

fn to_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn indent(n: &Value, s: &str) -> Result<String, String> {
    let n = n
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or("indent takes a number")?;
    let pad = " ".repeat(n);
    Ok(s.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n"))
}

fn call(ctx: &Ctx<'_>, cmd: &str, piped: Option<Value>) -> Result<Value, String> {
    let w = words(cmd)?;
    let (f, rest) = w.split_first().ok_or("an empty command")?;
    if f.starts_with(['.', '$', '"', '`']) || f.parse::<i64>().is_ok() {
        if !rest.is_empty() || piped.is_some() {
            return Err(format!("{cmd:?}: a term takes no arguments"));
        }
        return term(ctx, f);
    }
    let mut args: Vec<Value> = rest.iter().map(|a| term(ctx, a)).collect::<Result<_, _>>()?;
    if let Some(p) = piped {
        args.push(p);
    }
    let arity = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!("{f} takes {n} arguments in {cmd:?}"))
        }
    };
    let v = match f.as_str() {
        "quote" => {
            arity(1)?;
            Value::String(serde_json::to_string(&to_text(&args[0])).expect("a string serializes"))
        }
        "toYaml" => {
            arity(1)?;
            let y = serde_yaml_ng::to_string(&args[0]).map_err(|e| e.to_string())?;
            Value::String(y.trim_end_matches('\n').to_owned())
        }
        "nindent" => {
            arity(2)?;
            Value::String(format!("\n{}", indent(&args[0], &to_text(&args[1]))?))
        }
        "indent" => {
            arity(2)?;
            Value::String(indent(&args[0], &to_text(&args[1]))?)
        }
        "replace" => {
            arity(3)?;
            Value::String(to_text(&args[2]).replace(&to_text(&args[0]), &to_text(&args[1])))
        }
        "eq" => {
            arity(2)?;
            Value::Bool(args[0] == args[1])
        }
        _ => return Err(format!("{f:?} is outside the supported subset")),
    };
    Ok(v)
}

fn pipeline(ctx: &Ctx<'_>, pipe: &str) -> Result<Value, String> {
    let mut v: Option<Value> = None;
    for stage in stages(pipe) {
        v = Some(call(ctx, &stage, v)?);
    }
    v.ok_or_else(|| "an empty pipeline".to_owned())
}

fn exec(ctx: &Ctx<'_>, nodes: &[Node], out: &mut String) -> Result<(), String> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Output(p) => out.push_str(&to_text(&pipeline(ctx, p)?)),
            Node::If(p, then, els) => {
                let branch = if truthy(&pipeline(ctx, p)?) { then } else { els };
                exec(ctx, branch, out)?;
            }
            Node::Range(p, body) => {
                let list = pipeline(ctx, p)?;
                let items = list.as_array().ok_or_else(|| format!("range {p}: not a list"))?;
                for item in items {
                    exec(
                        &Ctx {
                            root: ctx.root,
                            dot: item,
                        },
                        body,
                        out,
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// Renders one template with `values` (values.yaml as JSON) and `release`.
pub fn render(template: &str, values: &Value, release: &Release) -> Result<String, String> {
    let tokens = lex(template)?;
    let (nodes, _) = parse(&mut tokens.into_iter(), false)?;
    let root = serde_json::json!({
        "Values": values,
        "Release": { "Name": release.name, "Namespace": release.namespace },
    });
    let mut out = String::new();
    exec(
        &Ctx {
            root: &root,
            dot: &root,
        },
        &nodes,
        &mut out,
    )?;
    Ok(out)
}

/// Renders every `templates/*.yaml` of the chart at `chart` (relative to the workspace root) with
/// its values.yaml, as `helm template` would: one multi-document text.
#[must_use]
pub fn render_chart(chart: &str, release: &Release) -> String {
    let values_text = crate::read(&format!("{chart}/values.yaml"));
    let values: Value =
        serde_yaml_ng::from_str(&values_text).unwrap_or_else(|e| panic!("{chart}/values.yaml: {e}"));
    let mut out = String::new();
    for path in crate::yaml_files(&format!("{chart}/templates")) {
        let t = std::fs::read_to_string(&path).expect("a template");
        let r = render(&t, &values, release).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let _ = writeln!(out, "---\n# Source: {}", path.display());
        out.push_str(&r);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(t: &str, v: &Value) -> String {
        render(
            t,
            v,
            &Release {
                name: "rel".into(),
                namespace: "ns".into(),
            },
        )
        .expect("renders")
    }

    #[test]
    fn subset() {
        let v = serde_json::json!({"a": {"b": "x", "n": 3, "on": true, "list": ["p", "q"], "m": {"k": "v"}}, "off": false});
        assert_eq!(
            r("n: {{ .Values.a.n }} ns: {{ .Release.Namespace }}", &v),
            "n: 3 ns: rel".replace("rel", "ns")
        );
        assert_eq!(r("x: {{ .Values.a.b | quote }}", &v), "x: \"x\"");
        assert_eq!(
            r("m:\n  {{- toYaml .Values.a.m | nindent 2 }}\n", &v),
            "m:\n  k: v\n"
        );
        assert_eq!(r("{{- if .Values.off }}yes{{- else }}no{{- end }}", &v), "no");
        assert_eq!(
            r(
                "{{- range .Values.a.list }}\n- {{ . }}{{ $.Values.a.n }}\n{{- end }}",
                &v
            ),
            "\n- p3\n- q3"
        );
        assert_eq!(r(r#"{{ "{{" }} $labels.x {{ "}}" }}"#, &v), "{{ $labels.x }}");
        assert_eq!(r(r#"{{ .Values.a.b | replace "x" "\\." }}"#, &v), r"\.");
        assert_eq!(r(r#"{{- if eq .Values.a.b "x" }}eq{{- end }}"#, &v), "eq");
    }

    #[test]
    fn refuses_what_it_does_not_check() {
        let v = serde_json::json!({"a": 1});
        let rel = Release {
            name: "r".into(),
            namespace: "n".into(),
        };
        assert!(render("{{ .Values.missing }}", &v, &rel).is_err());
        assert!(render("{{ include \"x\" . }}", &v, &rel).is_err());
        assert!(render("{{ default 1 .Values.a }}", &v, &rel).is_err());
        assert!(render("{{ if .Values.a }}", &v, &rel).is_err());
    }
}
