//! `cargo xtask bench [--only SECTION]`: set up, build kovn-bench in release, run the sections.

use std::process::Command;

use anyhow::{Result, bail};

use crate::progress::{Step, stream};
use crate::{setup, workspace_root};

/// Benchmark sections, in the order they run.
const SECTIONS: &[&str] = &["ovsdb"];

pub fn run(only: Option<&str>) -> Result<()> {
    let sections: Vec<&str> = match only {
        Some(s) if SECTIONS.contains(&s) => vec![s],
        Some(s) => bail!(
            "no benchmark section {s:?}; sections: {}",
            SECTIONS.join(", ")
        ),
        None => SECTIONS.to_vec(),
    };
    let total = 2 + sections.len();
    let step = Step::start(1, total, "setup");
    step.done(setup::run_if_needed()?);
    let root = workspace_root();
    let step = Step::start(2, total, "build kovn-bench (release)");
    stream(
        Command::new("cargo")
            .current_dir(&root)
            .args(["build", "--release", "-p", "bench"]),
        "fix the build errors above",
    )?;
    step.done("built");
    for (i, section) in sections.iter().enumerate() {
        let step = Step::start(3 + i, total, &format!("benchmark: {section}"));
        stream(
            Command::new(root.join("target/release/kovn-bench"))
                .current_dir(&root)
                .args(["--out", "target/bench", section]),
            "see the output above",
        )?;
        step.done("done");
    }
    Ok(())
}
