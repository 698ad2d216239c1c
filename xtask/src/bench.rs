//! `cargo xtask bench [--only SECTION]`: set up, build kovn-bench in release, run the sections.

use std::process::Command;

use anyhow::{Result, bail};

use crate::progress::{Step, stream};
use crate::{setup, workspace_root};

/// Benchmark sections, in the order they run.
const SECTIONS: &[&str] = &[
    "fastpath",
    "ovsdb",
    "controller",
    "cni",
    "service",
    "policy",
];

pub fn run(only: Option<&str>, quick: bool, json: Option<&std::path::Path>) -> Result<()> {
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
    let step = Step::start(
        2,
        total,
        "build the eBPF datapath, kovn and kovn-bench (release)",
    );
    let object = crate::ebpf::build(true)?;
    build_release(&["bench", "agent", "controller", "cni"])?;
    step.done("built");
    for (i, section) in sections.iter().enumerate() {
        let step = Step::start(3 + i, total, &format!("benchmark: {section}"));
        let mut cmd = Command::new(root.join("target/release/kovn-bench"));
        cmd.current_dir(&root)
            .args(["--out", "target/bench", section])
            .env(agent::datapath::BPF_OBJECT_ENV, &object);
        if *section == "fastpath" {
            if !crate::is_root() {
                bail!("the fastpath benchmark creates namespaces and loads eBPF: run as root");
            }
            if quick {
                cmd.arg("--quick");
            }
            if let Some(json) = json {
                cmd.arg("--json").arg(json);
            }
        } else if *section == "service" {
            if !crate::is_root() {
                bail!("the service benchmark creates namespaces and loads eBPF: run as root");
            }
            if quick {
                cmd.arg("--quick");
            }
            if let Some(json) = json {
                cmd.arg("--json").arg(json);
            }
        } else if *section == "policy" {
            if !crate::is_root() {
                bail!("the policy benchmark creates namespaces and loads eBPF: run as root");
            }
            if quick {
                cmd.args(["--trials", "5", "--policies", "100", "--pods", "1000"]);
            }
            if let Some(json) = json {
                cmd.arg("--json").arg(json);
            }
        } else if *section == "cni" {
            if !crate::is_root() {
                bail!("the cni benchmark creates namespaces and loads eBPF: run as root");
            }
            if quick {
                cmd.args(["--pods", "50"]);
            }
            if let Some(json) = json {
                cmd.arg("--json").arg(json);
            }
        } else if *section == "controller" {
            if quick {
                cmd.args(["--nodes", "100", "--pods", "5000", "--subnets", "20"]);
            }
            if let Some(json) = json {
                cmd.arg("--json").arg(json);
            }
        } else if quick {
            cmd.args([
                "--ports",
                "2000",
                "--loop-sample",
                "100",
                "--cache-rows",
                "20000",
            ]);
        }
        stream(&mut cmd, "see the output above")?;
        step.done("done");
    }
    Ok(())
}

/// `cargo build --release` of `packages`, streamed (the benchmarks and the demo run kovn's
/// release binaries from target/release).
pub fn build_release(packages: &[&str]) -> Result<()> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root())
        .args(["build", "--release"]);
    for package in packages {
        cmd.args(["-p", package]);
    }
    stream(&mut cmd, "fix the build errors above")
}
