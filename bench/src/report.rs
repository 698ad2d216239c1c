//! The JSON report shared by the sections: each section adds its keys to one file.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

/// Writes the top-level keys of `section` into the JSON object at `path`, keeping the keys
/// other sections wrote there (a missing or unreadable file starts empty).
pub fn merge_json(path: &Path, section: &Value) -> Result<()> {
    let mut whole = std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| Value::Object(Default::default()));
    if let (Some(whole), Some(section)) = (whole.as_object_mut(), section.as_object()) {
        for (k, v) in section {
            whole.insert(k.clone(), v.clone());
        }
    }
    std::fs::write(path, serde_json::to_string_pretty(&whole)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// The `p` quantile (0..=1, nearest rank) of `sorted` (ascending, not empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}
