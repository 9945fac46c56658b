//! How values are stored, the same on every backend: timestamps as Unix milliseconds, JSON
//! values as text, enums as their names.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::StoreError;

/// A timestamp as stored: Unix milliseconds.
pub(crate) fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A stored timestamp back to a time.
pub(crate) fn from_ms(column: &'static str, ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| StoreError::BadValue {
        column,
        value: ms.to_string(),
    })
}

/// An optional stored timestamp back to a time.
pub(crate) fn from_ms_opt(
    column: &'static str,
    ms: Option<i64>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    ms.map(|ms| from_ms(column, ms)).transpose()
}

/// The current time, truncated to what the store keeps (milliseconds).
pub(crate) fn now_ms() -> i64 {
    to_ms(Utc::now())
}

/// A JSON value as stored.
pub(crate) fn to_json(column: &'static str, value: &Value) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(StoreError::json(column))
}

/// An optional JSON value as stored.
pub(crate) fn to_json_opt(
    column: &'static str,
    value: Option<&Value>,
) -> Result<Option<String>, StoreError> {
    value.map(|v| to_json(column, v)).transpose()
}

/// A stored JSON text back to a value.
pub(crate) fn from_json(column: &'static str, text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(StoreError::json(column))
}

/// An optional stored JSON text back to a value.
pub(crate) fn from_json_opt(
    column: &'static str,
    text: Option<String>,
) -> Result<Option<Value>, StoreError> {
    text.map(|t| from_json(column, &t)).transpose()
}

/// A stored enum text back to its value.
pub(crate) fn parse_enum<T: std::str::FromStr<Err = String>>(
    column: &'static str,
    text: &str,
) -> Result<T, StoreError> {
    text.parse()
        .map_err(|value| StoreError::BadValue { column, value })
}
