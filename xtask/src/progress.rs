//! Progress lines for long steps: what is happening, then how it ended and how long it took.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// A numbered step of a command; prints `==> [i/n] title` when it starts.
#[derive(Debug)]
pub struct Step {
    title: String,
    started: Instant,
}

impl Step {
    pub fn start(index: usize, total: usize, title: &str) -> Step {
        println!("==> [{index}/{total}] {title}");
        Step {
            title: title.to_owned(),
            started: Instant::now(),
        }
    }

    /// Prints how the step ended.
    pub fn done(self, outcome: &str) {
        println!(
            "    {}: {outcome} ({:.1} s)",
            self.title,
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// Runs `cmd` with its output streamed to the terminal (it shows its own progress); a failure
/// names the command and what to do.
pub fn stream(cmd: &mut Command, what_to_do: &str) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start {shown}; {what_to_do}"))?;
    if !status.success() {
        bail!("{shown} failed ({status}); {what_to_do}");
    }
    Ok(())
}
