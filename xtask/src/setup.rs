//! `cargo xtask setup`: make this machine able to build and run kovn. Idempotent: when
//! everything is present it only checks (well under 2 seconds). A failing step names itself
//! and what to do; nothing is left half-done silently.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::progress::{Step, stream};

/// Debian packages the sandbox, tests and demo use.
pub const PACKAGES: &[&str] = &[
    "openvswitch-switch",
    "ovn-central",
    "ovn-host",
    "iproute2",
    "procps",
    "ethtool",
    "iperf3",
    "sockperf",
    "iputils-ping",
    "tcpdump",
    "bpftool",
    "containernetworking-plugins",
    // portmap (chained after kube-ovn) programs hostPorts with iptables.
    "iptables",
    // The agent masquerades natOutgoing subnets with nftables.
    "nftables",
    // `cargo xtask images`: a Debian rootfs per image, made into an OCI image.
    "mmdebstrap",
    "umoci",
    // The images test runs them (runc: crun cannot set rlimits here).
    "podman",
    "runc",
    // kubernetes-validate (PyPI) lives in a venv of its own.
    "python3-venv",
];

/// The manifest validator from PyPI (offline schemas for every Kubernetes version), in a venv
/// at [`validator_venv`]; xtask/tests/manifests.rs runs it.
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

const BPF_LINKER_VERSION: &str = "0.13.0";
/// bpf-linker must use the LLVM of the nightly rustc that emits the bitcode.
const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";
const BPFFS: &str = "/sys/fs/bpf";

pub fn run() -> Result<()> {
    const STEPS: usize = 5;
    let step = Step::start(1, STEPS, "Debian packages");
    let missing = missing_packages()?;
    if missing.is_empty() {
        step.done("all present");
    } else {
        require_root(&format!("installing {}", missing.join(" ")))?;
        install_packages(&missing)?;
        let still = missing_packages()?;
        if !still.is_empty() {
            bail!(
                "apt-get finished but {} still missing; install them by hand",
                still.join(" ")
            );
        }
        step.done(&format!("installed {}", missing.join(" ")));
    }

    let step = Step::start(2, STEPS, "bpffs on /sys/fs/bpf");
    if bpffs_mounted()? {
        step.done("mounted");
    } else {
        require_root("mounting bpffs")?;
        stream(
            Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]),
            "mount bpffs by hand: mount -t bpf bpf /sys/fs/bpf",
        )?;
        step.done("mounted now");
    }

    let step = Step::start(3, STEPS, "nightly toolchain with rust-src");
    let sysroot = nightly_sysroot()?;
    if sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        step.done("present");
    } else {
        stream(
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
            "run `rustup component add rust-src --toolchain nightly` by hand",
        )?;
        step.done("rust-src installed");
    }

    let step = Step::start(4, STEPS, "bpf-linker (against rustc's own libLLVM)");
    if bpf_linker_works() {
        step.done("present");
    } else {
        install_bpf_linker(&sysroot)?;
        if !bpf_linker_works() {
            bail!("bpf-linker was built but does not run; see the cargo install output above");
        }
        step.done("built and installed");
    }

    let step = Step::start(5, STEPS, "kubernetes-validate (PyPI, in a venv)");
    if kubernetes_validate_works() {
        step.done("present");
    } else {
        install_kubernetes_validate()?;
        if !kubernetes_validate_works() {
            bail!("kubernetes-validate was installed but does not run; see the pip output above");
        }
        step.done(&format!("installed {KUBERNETES_VALIDATE_VERSION}"));
    }
    Ok(())
}

/// Where kubernetes-validate's venv lives (the manifests test finds it there too).
pub fn validator_venv() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".local/share/kovn/venv")
}

fn kubernetes_validate_works() -> bool {
    Command::new(validator_venv().join("bin/kubernetes-validate"))
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains(KUBERNETES_VALIDATE_VERSION)
        })
}

fn install_kubernetes_validate() -> Result<()> {
    let venv = validator_venv();
    let what_to_do = "check the output above (python3-venv installed? PyPI reachable?)";
    println!("    python3 -m venv {}", venv.display());
    // Debian's python3, whatever else is first on PATH: python3-venv is what setup installs.
    stream(
        Command::new("/usr/bin/python3")
            .args(["-m", "venv"])
            .arg(&venv),
        what_to_do,
    )?;
    println!("    pip install kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}");
    stream(
        Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            &format!("kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"),
        ]),
        what_to_do,
    )
}

/// For `test` and `demo`: runs the full setup only when a quiet check finds something
/// missing; returns what happened.
pub fn run_if_needed() -> Result<&'static str> {
    if needed() {
        run()?;
        Ok("machine ready")
    } else {
        Ok("nothing missing")
    }
}

fn needed() -> bool {
    !matches!(missing_packages(), Ok(m) if m.is_empty())
        || !matches!(bpffs_mounted(), Ok(true))
        || !nightly_sysroot().is_ok_and(|s| s.join("lib/rustlib/src/rust/library/core").is_dir())
        || !bpf_linker_works()
        || !kubernetes_validate_works()
}

fn require_root(what: &str) -> Result<()> {
    if !crate::is_root() {
        bail!("{what} needs root: run this command as root (sudo -E cargo xtask setup)");
    }
    Ok(())
}

fn missing_packages() -> Result<Vec<String>> {
    // dpkg-query exits 1 when some package is unknown; the status lines still tell.
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${db:Status-Abbrev}\\n"])
        .args(PACKAGES)
        .output()
        .context("dpkg-query not found: the setup assumes a Debian-like system")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let installed: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next()?;
            (parts.next()? == "ii").then_some(name)
        })
        .collect();
    Ok(PACKAGES
        .iter()
        .filter(|p| !installed.contains(p))
        .map(|p| (*p).to_owned())
        .collect())
}

fn install_packages(missing: &[String]) -> Result<()> {
    let what_to_do = "check the network access to the Debian mirrors and `apt-get` output above";
    println!("    apt-get update");
    stream(
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        what_to_do,
    )?;
    println!("    apt-get install {}", missing.join(" "));
    stream(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        what_to_do,
    )
}

fn bpffs_mounted() -> Result<bool> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    Ok(mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let _source = f.next();
        f.next() == Some(BPFFS) && f.next() == Some("bpf")
    }))
}

fn nightly_sysroot() -> Result<PathBuf> {
    let out = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output()
        .context("running `rustc +nightly`: is rustup installed?")?;
    if !out.status.success() {
        bail!(
            "no nightly toolchain ({}); install one: rustup toolchain install nightly \
             --component rust-src",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Where `cargo install` puts binaries (bpf-linker among them).
pub fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// `PATH` with cargo's bin directory first, so rustc finds the bpf-linker setup installed even
/// where that directory is not on the caller's `PATH`.
pub fn path_with_cargo_bin() -> std::ffi::OsString {
    let mut dirs = vec![cargo_bin_dir()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

fn bpf_linker_works() -> bool {
    Command::new(cargo_bin_dir().join("bpf-linker"))
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The recipe of ENVIRONMENT.md: no LLVM 22 is packaged, but rustc ships its own libLLVM. A
/// directory with `lib/libLLVM.so` pointing at it serves as LLVM_PREFIX; the linker keeps an
/// rpath to it, so it lives in a stable place (one per nightly LLVM build), not in target/.
fn install_bpf_linker(sysroot: &Path) -> Result<()> {
    let lib_dir = sysroot.join("lib");
    let libllvm = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| {
            format!(
                "no libLLVM.so.* in {}: this nightly does not ship LLVM as a shared library",
                lib_dir.display()
            )
        })?;
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    let prefix = home
        .join(".local/share/kovn")
        .join(libllvm.trim_start_matches("libLLVM.so."));
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    for name in ["libLLVM.so", libllvm.as_str()] {
        let link = prefix_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib_dir.join(&libllvm), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    println!(
        "    cargo install bpf-linker {BPF_LINKER_VERSION} (LLVM_PREFIX={}; about a minute)",
        prefix.display()
    );
    stream(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
            ])
            .args([
                "--no-default-features",
                "--features",
                BPF_LINKER_LLVM_FEATURE,
            ])
            .env("LLVM_PREFIX", &prefix),
        "check the cargo output above (crates.io reachable? a C compiler installed?)",
    )
}
