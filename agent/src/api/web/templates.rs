//! The page templates (embedded), their filters, and the rendering of a page as a response.
//!
//! Templates auto-escape everything; on top of that every text that came from a run is
//! passed through [`defang`] first, which shows bidirectional-override and other invisible
//! formatting characters as `<U+202E>` instead of letting them reorder the page.

use std::sync::OnceLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use minijinja::Environment;
use serde_json::Value;

use super::assets;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../../assets/web/base.html")),
    ("login.html", include_str!("../../../assets/web/login.html")),
    ("runs.html", include_str!("../../../assets/web/runs.html")),
    ("rows.html", include_str!("../../../assets/web/rows.html")),
    ("run.html", include_str!("../../../assets/web/run.html")),
    ("views.html", include_str!("../../../assets/web/views.html")),
    (
        "workflows.html",
        include_str!("../../../assets/web/workflows.html"),
    ),
    ("table.html", include_str!("../../../assets/web/table.html")),
    ("error.html", include_str!("../../../assets/web/error.html")),
];

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, text) in TEMPLATES {
            env.add_template(name, text)
                .unwrap_or_else(|e| panic!("embedded template {name} does not parse: {e}"));
        }
        env.add_filter("dur", |ms: Option<i64>| {
            ms.map(duration).unwrap_or_default()
        });
        env.add_filter("short", |s: Option<String>| {
            s.map(|s| s.chars().take(8).collect::<String>())
                .unwrap_or_default()
        });
        env.add_filter("icon", |s: String| status_icon(&s));
        env.add_filter("compact", |v: minijinja::Value| {
            let json: Value = serde_json::to_value(&v).unwrap_or(Value::Null);
            match json {
                Value::String(s) => s,
                Value::Null => String::new(),
                other => other.to_string(),
            }
        });
        env.add_global("asset_version", assets::version());
        env
    })
}

/// `1m 05s`-style text for a duration in milliseconds.
pub(super) fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m {:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h {:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// The icon shown beside a status word (the word is always shown too).
pub(super) fn status_icon(status: &str) -> &'static str {
    match status {
        "succeeded" => "✓",
        "failed" => "✗",
        "running" => "●",
        "queued" | "pending" => "○",
        "cancelled" => "⊘",
        "skipped" => "↷",
        "interrupted" => "!",
        _ => "·",
    }
}

/// Invisible formatting characters that can disguise text (bidi overrides and isolates,
/// marks, zero-width characters).
fn is_disguising(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// Text with disguising characters shown as `<U+XXXX>`.
pub(super) fn defang_str(s: &str) -> String {
    if !s.chars().any(is_disguising) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if is_disguising(c) {
                format!("<U+{:04X}>", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// [`defang_str`] on every string (and key) of a JSON value.
pub(super) fn defang(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(defang_str(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(defang).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (defang_str(&k), defang(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Renders a template as an HTML answer.
pub(super) fn render_page<S: serde::Serialize>(status: StatusCode, name: &str, ctx: S) -> Response {
    match env().get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!("dashboard: rendering {name} failed: {e:#}");
            let mut r = (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered (see the daemon's log)",
            )
                .into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        let _ = env();
    }

    #[test]
    fn bidi_overrides_show_as_text() {
        assert_eq!(defang_str("a\u{202E}b"), "a<U+202E>b");
        assert_eq!(defang_str("plain"), "plain");
        let v = defang(serde_json::json!({"k\u{2066}": ["x\u{200B}"]}));
        assert_eq!(v, serde_json::json!({"k<U+2066>": ["x<U+200B>"]}));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(5), "5ms");
        assert_eq!(duration(1500), "1.5s");
        assert_eq!(duration(65_000), "1m 05s");
        assert_eq!(duration(3_660_000), "1h 01m");
    }
}
