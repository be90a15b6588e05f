//! Just enough `PromQL` to list the steer metrics an expression uses, with their label matchers.

/// A metric reference in an expression: `name{label="value", other=~"re"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricRef {
    pub name: String,
    /// `(label, op, value)`; op is `=`, `!=`, `=~` or `!~`.
    pub matchers: Vec<(String, String, String)>,
}

/// Prefixes of the metrics that steer's binaries export.
pub const PREFIXES: [&str; 2] = ["steerd_", "steer_probe_"];

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Every reference to a `steerd_*` or `steer_probe_*` metric in `expr`.
#[must_use]
pub fn metric_refs(expr: &str) -> Vec<MetricRef> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        // Skip string literals: label values are not metric names.
        if chars[i] == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            continue;
        }
        if is_ident(chars[i]) && (i == 0 || !is_ident(chars[i - 1])) {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let name: String = chars[start..i].iter().collect();
            if !PREFIXES.iter().any(|p| name.starts_with(p)) {
                continue;
            }
            let mut matchers = Vec::new();
            if chars.get(i) == Some(&'{') {
                let close = chars[i..]
                    .iter()
                    .position(|&c| c == '}')
                    .map(|p| p + i)
                    .expect("a closing brace");
                let body: String = chars[i + 1..close].iter().collect();
                matchers = parse_matchers(&body);
                i = close + 1;
            }
            out.push(MetricRef { name, matchers });
            continue;
        }
        i += 1;
    }
    out
}

fn parse_matchers(body: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut rest = body.trim();
    while !rest.is_empty() {
        let name_end = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        let label = rest[..name_end].to_owned();
        rest = rest[name_end..].trim_start();
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| rest.starts_with(op))
            .expect("a matcher operator");
        rest = rest[op.len()..].trim_start();
        let rest_q = rest.strip_prefix('"').expect("a quoted label value");
        let end = rest_q.find('"').expect("a closing quote");
        out.push((label, op.to_owned(), rest_q[..end].to_owned()));
        rest = rest_q[end + 1..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    out
}

/// One sample line of a Prometheus text exposition: its name and labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

/// The series of a Prometheus text exposition (comments skipped).
#[must_use]
pub fn parse_exposition(text: &str) -> Vec<Series> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(|c: char| !is_ident(c)).unwrap_or(line.len());
        let name = line[..name_end].to_owned();
        let mut labels = Vec::new();
        if line[name_end..].starts_with('{') {
            let close = line.rfind('}').expect("a closing brace");
            for (l, _, v) in parse_matchers(&line[name_end + 1..close]) {
                labels.push((l, v));
            }
        }
        out.push(Series { name, labels });
    }
    out
}

/// The series name that a reference to `name` can match: histograms and summaries are exposed as
/// `_bucket`, `_sum` and `_count` of one family.
#[must_use]
pub fn family_names(name: &str) -> Vec<String> {
    let mut v = vec![name.to_owned()];
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            v.push(base.to_owned());
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_and_matchers() {
        let r = metric_refs(
            r#"max by (region) (steerd_region_health{region=~"$region"}) == 0 and on (region) rate(steer_probe_x_total[5m]) and up{job="steerd_fake"}"#,
        );
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].name, "steerd_region_health");
        assert_eq!(
            r[0].matchers,
            [("region".to_owned(), "=~".to_owned(), "$region".to_owned())]
        );
        assert_eq!(r[1].name, "steer_probe_x_total");
    }

    #[test]
    fn exposition() {
        let s = parse_exposition("# TYPE a counter\na_total{x=\"1\",y=\"b\"} 3\nb 4\n");
        assert_eq!(
            s[0].labels,
            [("x".to_owned(), "1".to_owned()), ("y".to_owned(), "b".to_owned())]
        );
        assert_eq!(s[1].name, "b");
    }
}
