//! `cargo xtask test`: set up what is missing, build everything (the eBPF object included),
//! check formatting and lints, run every test. Privileged tests need root; with CI=true a
//! non-root run fails instead of skipping them.

use std::process::Command;

use anyhow::{Result, bail};

use crate::progress::{Step, stream};
use crate::{bundle, ebpf, images, is_root, setup, workspace_root};

pub fn run(with_setup: bool, cargo_test_args: &[String]) -> Result<()> {
    const STEPS: usize = 6;
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

    check_free_disk(&workspace_root())?;

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
    if ci {
        // A CI run builds once from a fresh clone: incremental caches would only double the
        // size of target/ (they were 23 GiB of a developer's 62).
        // SAFETY: single-threaded here; set before any child process is spawned.
        unsafe { std::env::set_var("CARGO_INCREMENTAL", "0") };
    }
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

    // The images test (xtask/tests/images.rs) runs what this builds; building them needs
    // root, as the privileged tests do.
    let step = Step::start(5, STEPS, "container images and the offline bundle");
    if is_root() {
        images::run(None)?;
        bundle::write()?;
        step.done("built");
    } else {
        step.done("SKIPPED: not root (the images test skips too)");
    }

    let step = Step::start(6, STEPS, "cargo test --workspace");
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

/// Free disk a fresh build and test run needs (target/ measured at 2.8 GiB, the images' own
/// release build 0.9 GiB in /var/tmp/kovn-images and the images 0.2 GiB, plus the sandboxes' OVS databases and logs
/// and the images test's podman store), and what a rebuild on an existing target/ needs.
const FRESH_BUILD_GIB: u64 = 10;
const REBUILD_GIB: u64 = 2;

/// Fail early, and say so, when the disk cannot hold the build: running out halfway through
/// fails in rustc with "No space left on device" after minutes of work.
fn check_free_disk(root: &std::path::Path) -> Result<()> {
    let target = root.join("target");
    let (probe, needed) = if target.join("debug/deps").exists() {
        (target, REBUILD_GIB)
    } else {
        (root.to_path_buf(), FRESH_BUILD_GIB)
    };
    let stat = nix::sys::statvfs::statvfs(&probe)?;
    let free_gib = (stat.blocks_available() as u64 * stat.fragment_size() as u64) >> 30;
    if free_gib < needed {
        bail!(
            "only {free_gib} GiB free on the disk holding {}: building and testing needs about \
             {needed} GiB; free some space (`cargo clean`, or remove target/debug/incremental) \
             and run again",
            probe.display()
        );
    }
    Ok(())
}
