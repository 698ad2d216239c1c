//! Shared by the integration tests.

use std::path::PathBuf;

/// A schema with a column of every kind (see kinds.ovsschema).
pub fn kinds_schema() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/kinds.ovsschema")
        .display()
        .to_string()
}
