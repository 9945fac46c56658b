//! Small helpers for HTML forms: `application/x-www-form-urlencoded` bodies, URL encoding,
//! the `next` target of the login form, and the typed values of the trigger form.

use serde_json::{Map, Value};

/// The fields of a urlencoded body, in order (invalid UTF-8 replaced).
pub(super) fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    body.split(|b| *b == b'&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let mut it = kv.splitn(2, |b| *b == b'=');
            let k = decode(it.next().unwrap_or_default());
            let v = decode(it.next().unwrap_or_default());
            (k, v)
        })
        .collect()
}

/// Percent-decoding, with `+` as a space.
pub(super) fn decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encoding of everything but unreserved characters (and `/`).
pub(super) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where to go after logging in: a local path only (never another site), else `/`.
pub(super) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && !n.chars().any(|c| c.is_control()) =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

/// The parameters of a trigger form, typed by their declarations: `(parameters, errors by
/// field)`. A value that does not fit its type is passed on as text, so the daemon's own
/// validation reports it (as for the API); only JSON that does not parse is refused here.
pub(super) fn typed_parameters(
    declared: &[Value],
    fields: &[(String, String)],
) -> (Map<String, Value>, Vec<(String, String)>) {
    let mut params = Map::new();
    let mut errors = Vec::new();
    let field = |name: &str| {
        let key = format!("p.{name}");
        fields
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    };
    for decl in declared {
        let Some(name) = decl.get("name").and_then(Value::as_str) else {
            continue;
        };
        let ty = decl.get("type").and_then(Value::as_str).unwrap_or("string");
        let raw = field(name);
        if ty == "boolean" && decl.get("enum").is_none_or(Value::is_null) {
            params.insert(name.to_string(), Value::Bool(raw.is_some()));
            continue;
        }
        let Some(raw) = raw else { continue };
        if raw.trim().is_empty() {
            // Empty: left to the default (or reported as missing when required).
            continue;
        }
        if let Some(allowed) = decl.get("enum").and_then(Value::as_array) {
            let chosen = allowed
                .iter()
                .find(|v| display(v) == raw)
                .cloned()
                .unwrap_or_else(|| Value::String(raw.to_string()));
            params.insert(name.to_string(), chosen);
            continue;
        }
        let value = match ty {
            "integer" => raw
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::String(raw.to_string())),
            "number" => raw
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
                .unwrap_or_else(|| Value::String(raw.to_string())),
            "array" | "object" => match serde_json::from_str::<Value>(raw) {
                Ok(v) => v,
                Err(e) => {
                    errors.push((name.to_string(), format!("not valid JSON: {e}")));
                    continue;
                }
            },
            _ => Value::String(raw.to_string()),
        };
        params.insert(name.to_string(), value);
    }
    (params, errors)
}

/// How a JSON value shows in a form field.
pub(super) fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn forms_decode() {
        let f = parse_form(b"token=a%2Bb+c&next=%2Fruns%2F1&x&bad=%zz%4");
        assert_eq!(f[0], ("token".into(), "a+b c".into()));
        assert_eq!(f[1], ("next".into(), "/runs/1".into()));
        assert_eq!(f[2], ("x".into(), String::new()));
        assert_eq!(f[3], ("bad".into(), "%zz%4".into()));
        assert_eq!(encode("/a b?c"), "/a%20b%3Fc");
    }

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/runs/3?step=a")), "/runs/3?step=a");
        for bad in ["//evil.example", "https://evil.example", "/\\evil", "", "x"] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn trigger_fields_are_typed_by_declaration() {
        let declared = vec![
            json!({"name": "n", "type": "integer"}),
            json!({"name": "x", "type": "number"}),
            json!({"name": "b", "type": "boolean"}),
            json!({"name": "e", "type": "integer", "enum": [1, 2]}),
            json!({"name": "o", "type": "object"}),
            json!({"name": "s", "type": "string"}),
            json!({"name": "bad", "type": "integer"}),
            json!({"name": "j", "type": "array"}),
        ];
        let fields: Vec<(String, String)> = [
            ("p.n", "12"),
            ("p.x", "1.5"),
            ("p.e", "2"),
            ("p.o", "{\"a\":1}"),
            ("p.s", "hi"),
            ("p.bad", "12x"),
            ("p.j", "[1,"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (p, errors) = typed_parameters(&declared, &fields);
        assert_eq!(p["n"], 12);
        assert_eq!(p["x"], 1.5);
        assert_eq!(p["b"], false);
        assert_eq!(p["e"], 2);
        assert_eq!(p["o"], json!({"a": 1}));
        assert_eq!(p["s"], "hi");
        assert_eq!(p["bad"], "12x");
        assert!(p.get("j").is_none());
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "j");
    }
}
