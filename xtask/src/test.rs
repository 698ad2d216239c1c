//! `cargo xtask test`: set up what is missing, build everything (the eBPF object included),
//! check formatting and lints, run every test. Privileged tests need root; with CI=true a
//! non-root run fails instead of skipping them.

use std::process::Command;

use anyhow::{Result, bail};

use crate::progress::{Step, stream};
use crate::{ebpf, is_root, setup, workspace_root};

pub fn run(with_setup: bool, cargo_test_args: &[String]) -> Result<()> {
    const STEPS: usize = 5;
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !is_root() {
        if ci {
            bail!(
                "CI=true and not root: the privileged tests (netns, BPF, OVS) must run in CI; \
                 run as root"
            );
        }
        println!(
            "!!!!!!!! not root: privileged tests (netns, BPF, OVS) will be SKIPPED; \
             run `sudo -E cargo xtask test` to run them !!!!!!!!"
        );
    }

    let step = Step::start(1, STEPS, "setup");
    if !with_setup {
        step.done("skipped (--no-setup)");
    } else {
        step.done(setup::run_if_needed()?);
    }

    let step = Step::start(2, STEPS, "build the eBPF datapath");
    let object = ebpf::build(true)?;
    step.done("built");

    let root = workspace_root();
    let step = Step::start(3, STEPS, "cargo fmt --check");
    stream(
        Command::new("cargo")
            .current_dir(&root)
            .args(["fmt", "--all", "--", "--check"]),
        "run `cargo fmt --all`",
    )?;
    stream(
        Command::new("cargo")
            .current_dir(root.join("datapath-ebpf"))
            .args(["+nightly", "fmt", "--", "--check"])
            .env_remove("RUSTUP_TOOLCHAIN"),
        "run `cargo +nightly fmt` in datapath-ebpf",
    )?;
    step.done("formatted");

    let step = Step::start(
        4,
        STEPS,
        "cargo clippy --workspace --all-targets -D warnings",
    );
    stream(
        Command::new("cargo").current_dir(&root).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
        "fix the warnings above",
    )?;
    step.done("no warnings");

    let step = Step::start(5, STEPS, "cargo test --workspace");
    stream(
        Command::new("cargo")
            .current_dir(&root)
            // Every failing binary in one run, not just the first: a CI run is expensive.
            .args(["test", "--workspace", "--no-fail-fast"])
            .args(cargo_test_args)
            .env(agent::datapath::BPF_OBJECT_ENV, &object),
        "see the failing tests above (a failed sandbox prints its daemon logs)",
    )?;
    step.done("all passed");
    Ok(())
}
