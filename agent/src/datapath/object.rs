//! Where the compiled eBPF object lives.

use std::path::PathBuf;

use super::DatapathError;

/// Environment variable that names the eBPF object explicitly (tests, development).
pub const BPF_OBJECT_ENV: &str = "KOVN_BPF_OBJECT";

/// Where the container image installs the object.
const INSTALLED_OBJECT: &str = "/usr/lib/kovn/kovn-datapath.o";

/// Where `cargo xtask build-ebpf` puts the object, relative to the workspace root.
const WORKSPACE_OBJECT: &str = "target/bpf/kovn-datapath.o";

/// Finds the object: `$KOVN_BPF_OBJECT`, then the installed path, then the workspace build.
pub fn locate_object() -> Result<PathBuf, DatapathError> {
    let mut searched = Vec::new();
    if let Some(path) = std::env::var_os(BPF_OBJECT_ENV) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        searched.push(path);
    }
    let workspace =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../{WORKSPACE_OBJECT}"));
    for path in [PathBuf::from(INSTALLED_OBJECT), workspace] {
        if path.is_file() {
            return Ok(path.canonicalize().unwrap_or(path));
        }
        searched.push(path);
    }
    Err(DatapathError::ObjectNotFound { searched })
}
