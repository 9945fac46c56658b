//! What the store-fixture tests share: where the fixture database of a schema version lives
//! and how to read a closed database file's schema version.

use std::path::{Path, PathBuf};

/// The committed fixture database written by the code of schema `version`.
pub fn fixture(version: i64) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("store_v{version}.sqlite3"))
}

/// `PRAGMA user_version` straight from a closed file's header (bytes 60..64, big-endian).
pub fn header_version(path: &Path) -> i64 {
    let bytes = std::fs::read(path).expect("read fixture");
    i64::from(i32::from_be_bytes(
        bytes[60..64].try_into().expect("4 bytes"),
    ))
}
