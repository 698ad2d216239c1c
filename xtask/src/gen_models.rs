//! `cargo xtask gen-ovsdb-models`: regenerate ovsdb's typed models from the vendored schemas.

use std::process::Command;

use anyhow::{Context, Result};
use ovsdb::codegen::{MODEL_FILES, generate_file};

use crate::progress::stream;
use crate::workspace_root;

pub fn run() -> Result<()> {
    let crate_dir = workspace_root().join("ovsdb");
    for (schema, output) in MODEL_FILES {
        let code = generate_file(&crate_dir.join(schema), &format!("ovsdb/{schema}"))
            .with_context(|| format!("generating from {schema}"))?;
        let path = crate_dir.join(output);
        std::fs::write(&path, code).with_context(|| format!("writing {}", path.display()))?;
        stream(
            Command::new("rustfmt")
                .args(["--edition", "2024"])
                .arg(&path),
            "rustfmt must be installed (rustup component add rustfmt)",
        )?;
        println!("    {schema} -> ovsdb/{output}");
    }
    Ok(())
}
