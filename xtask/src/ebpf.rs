//! `cargo xtask build-ebpf`: the datapath object for bpfel-unknown-none, with BTF.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::progress::stream;
use crate::workspace_root;

/// Where the agent (and the tests) find the object; see agent::datapath::locate_object.
pub const OBJECT: &str = "target/bpf/kovn-datapath.o";

/// Builds the object and copies it to [`OBJECT`]; returns its path.
pub fn build(release: bool) -> Result<PathBuf> {
    let root = workspace_root();
    let built = build_in(&root, &root.join("target/ebpf"), release)?;
    let object = root.join(OBJECT);
    if let Some(dir) = object.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::copy(&built, &object)
        .with_context(|| format!("copying {} to {}", built.display(), object.display()))?;
    println!("    eBPF object: {}", object.display());
    Ok(object)
}

/// Builds the object of the sources under `root` in `target_dir`; returns where it is.
pub fn build_in(root: &Path, target_dir: &Path, release: bool) -> Result<PathBuf> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root.join("datapath-ebpf"))
        .args(["+nightly", "build", "-Z", "build-std=core"])
        .args(["--target", "bpfel-unknown-none"])
        .arg("--target-dir")
        .arg(target_dir);
    if release {
        cmd.arg("--release");
    }
    // BTF makes the maps and programs self-describing (bpftool, CO-RE later). Source paths
    // are remapped so that the object (its BTF line info) does not depend on where the
    // workspace was cloned: `cargo xtask images` is reproducible.
    cmd.env(
        "RUSTFLAGS",
        format!(
            "-C debuginfo=2 -C link-arg=--btf --remap-path-prefix={}=/kovn",
            root.display()
        ),
    )
    .env("PATH", crate::setup::path_with_cargo_bin());
    // The outer `cargo xtask` runs on stable; do not let its settings leak into the nightly
    // build of another target.
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO",
    ] {
        cmd.env_remove(var);
    }
    println!(
        "    building datapath-ebpf ({})",
        if release { "release" } else { "dev" }
    );
    stream(
        &mut cmd,
        "run `cargo xtask setup` (nightly rust-src and bpf-linker are needed)",
    )?;
    let profile = if release { "release" } else { "debug" };
    Ok(target_dir.join(format!("bpfel-unknown-none/{profile}/kovn-datapath")))
}
