//! `cargo xtask images`: kovn's container images, built here from Debian's packages and this
//! workspace, with no registry involved.
//!
//! Each image is one layer: a Debian rootfs made by `mmdebstrap` (minbase plus the image's
//! packages, documentation but copyright files left out) with kovn's files installed into it
//! by a hook, added to an OCI layout by `umoci raw add-layer`. The layout is written as an
//! archive under `target/images/` (`podman load -i` reads it), next to the list of the Debian
//! packages in it and its digest.
//!
//! Reproducible: `SOURCE_DATE_EPOCH` (the last commit's time when unset) clamps every mtime in
//! the rootfs, is the image's creation time, and dates the archive's entries; the same
//! workspace and the same Debian packages give the same image digest.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::progress::{Step, stream};
use crate::workspace_root;

/// The Debian release the images are built from (the one these machines run).
const SUITE: &str = "bookworm";
/// Where the images end up.
pub const OUT_DIR: &str = "target/images";
/// The target the CNI plugin is built for, statically linked: the plugin is copied onto the
/// node (/opt/cni/bin), so it must run whatever the host's libc is.
const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

/// One file of the workspace installed into an image.
struct Install {
    /// Relative to the workspace root.
    from: PathBuf,
    /// Absolute path in the image.
    to: &'static str,
    mode: &'static str,
}

/// What an image holds.
struct ImageSpec {
    name: &'static str,
    description: &'static str,
    /// Debian packages on top of minbase.
    packages: &'static [&'static str],
    files: Vec<Install>,
}

fn specs(binaries: &Binaries) -> Vec<ImageSpec> {
    // From the copy the binaries were built from, the sources the bundle records.
    let script = |name: &str| {
        Path::new(BUILD_DIR)
            .join("src/deploy/images/ovn")
            .join(name)
    };
    vec![
        ImageSpec {
            name: "kovn",
            description: "kovn-controller, kovn-agent, the eBPF datapath and the kube-ovn CNI plugin",
            // nft: the agent's masquerade table; iproute2 for operators (ip, tc, ss); the
            // reference plugins the conflist chains (portmap) and kubelet's loopback;
            // ca-certificates: kube's TLS client refuses to start without a system root
            // store, even when the kubeconfig brings the cluster's CA.
            packages: &[
                "iproute2",
                "nftables",
                "containernetworking-plugins",
                "ca-certificates",
            ],
            files: vec![
                Install {
                    from: binaries.controller.clone(),
                    to: "/usr/bin/kovn-controller",
                    mode: "0755",
                },
                Install {
                    from: binaries.agent.clone(),
                    to: "/usr/bin/kovn-agent",
                    mode: "0755",
                },
                Install {
                    from: binaries.cni_plugin.clone(),
                    to: "/usr/bin/kube-ovn",
                    mode: "0755",
                },
                // The node cleanup's and operators' tool (kovn-install preflight on a node).
                Install {
                    from: binaries.installer.clone(),
                    to: "/usr/bin/kovn-install",
                    mode: "0755",
                },
                // Where the agent looks for it (agent::datapath::locate_object).
                Install {
                    from: binaries.datapath.clone(),
                    to: "/usr/lib/kovn/kovn-datapath.o",
                    mode: "0644",
                },
            ],
        },
        ImageSpec {
            name: "ovn",
            description: "Open vSwitch and OVN from Debian: ovn-central (NB/SB Raft, northd) and ovs-ovn (ovs-vswitchd, ovn-controller)",
            packages: &["openvswitch-switch", "ovn-central", "ovn-host", "iproute2"],
            files: vec![
                Install {
                    from: script("start-ovn-central.sh"),
                    to: "/usr/share/kovn/start-ovn-central.sh",
                    mode: "0755",
                },
                Install {
                    from: script("start-ovs-ovn.sh"),
                    to: "/usr/share/kovn/start-ovs-ovn.sh",
                    mode: "0755",
                },
                Install {
                    from: script("ovn-healthcheck.sh"),
                    to: "/usr/share/kovn/ovn-healthcheck.sh",
                    mode: "0755",
                },
            ],
        },
    ]
}

/// The workspace's build outputs that go into the `kovn` image.
struct Binaries {
    controller: PathBuf,
    agent: PathBuf,
    cni_plugin: PathBuf,
    /// kovn-install, static like the plugin: it runs on the operator's machine too.
    installer: PathBuf,
    datapath: PathBuf,
}

/// What `cargo xtask images` built.
pub struct BuiltImage {
    pub name: &'static str,
    pub archive: PathBuf,
    pub digest: String,
}

pub fn run(only: Option<&str>) -> Result<Vec<BuiltImage>> {
    let root = workspace_root();
    const STEPS: usize = 3;
    let step = Step::start(1, STEPS, "tools (mmdebstrap, umoci)");
    for tool in ["mmdebstrap", "umoci"] {
        if !on_path(tool) {
            bail!("{tool} is missing: run `cargo xtask setup` (it installs it from Debian)");
        }
    }
    if !crate::is_root() {
        bail!(
            "building images needs root (mmdebstrap's root mode): run `sudo -E cargo xtask images`"
        );
    }
    let epoch = source_date_epoch(&root)?;
    step.done(&format!("present; SOURCE_DATE_EPOCH={epoch}"));

    let step = Step::start(
        2,
        STEPS,
        "release builds (kovn-controller, kovn-agent, kube-ovn and kovn-install static, the datapath)",
    );
    // One build at a time uses the fixed build directory (another clone's, or a second run).
    let _lock = lock_build_dir()?;
    let files = source_files(&root)?;
    let digest = source_digest(&root, &files)?;
    let binaries = build_binaries(&root, &files)?;
    step.done("built");

    let out = root.join(OUT_DIR);
    let work = out.join("work");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let specs: Vec<ImageSpec> = specs(&binaries)
        .into_iter()
        .filter(|s| only.is_none_or(|o| o == s.name))
        .collect();
    if specs.is_empty() {
        bail!(
            "no image named {}: the images are kovn and ovn",
            only.unwrap_or_default()
        );
    }
    // kovn-install beside the images: the bundle's bin/, for the operator's machine.
    let installer = out.join("kovn-install");
    std::fs::copy(&binaries.installer, &installer)
        .with_context(|| format!("copying {}", binaries.installer.display()))?;
    let step = Step::start(3, STEPS, "images");
    let mut built = Vec::new();
    for spec in &specs {
        built.push(build_image(&root, &out, &work, spec, epoch)?);
    }
    // Only a complete build records its sources (a partial one leaves an older image).
    if only.is_none() {
        std::fs::write(out.join(SOURCE_DIGEST_FILE), format!("{digest}\n"))?;
    }
    step.done(&format!("{} image(s) in {OUT_DIR}/", built.len()));
    for image in &built {
        println!(
            "    {}: {} ({})",
            reference(image.name),
            image
                .archive
                .strip_prefix(&root)
                .unwrap_or(&image.archive)
                .display(),
            image.digest
        );
    }
    Ok(built)
}

/// The image tag: the workspace's version.
pub fn tag() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `SOURCE_DATE_EPOCH` if set, else the time of the last commit: the same sources always give
/// the same date, and so the same image.
pub fn source_date_epoch(root: &Path) -> Result<u64> {
    if let Ok(value) = std::env::var("SOURCE_DATE_EPOCH") {
        return value
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={value:?} is not a number of seconds"));
    }
    let out = Command::new("git")
        .current_dir(root)
        .args(["log", "-1", "--format=%ct"])
        .output()
        .context("running git (to date the images by the last commit)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse().with_context(|| {
        format!(
            "no commit date from git ({}); set SOURCE_DATE_EPOCH",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// Where the images' binaries are built: a copy of the workspace's sources at a fixed path,
/// with a target directory beside it. Cargo hashes a path dependency's absolute location into
/// its symbols (datapath-common, outside datapath-ebpf's workspace), and `env!` paths end up
/// in the binaries; built here, a clone anywhere gives the same bytes.
const BUILD_DIR: &str = "/var/tmp/kovn-images";

/// The workspace's files the images are built from: tracked ones, and new ones git does not
/// ignore, that exist in the work tree; sorted.
pub fn source_files(root: &Path) -> Result<Vec<String>> {
    let listed = Command::new("git")
        .current_dir(root)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output()
        .context("running git ls-files (the images are built from the workspace's files)")?;
    if !listed.status.success() {
        bail!(
            "git ls-files failed: {}",
            String::from_utf8_lossy(&listed.stderr).trim()
        );
    }
    let mut files: Vec<String> = listed
        .stdout
        .split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| String::from_utf8_lossy(f).into_owned())
        // Deleted in the work tree but still in the index.
        .filter(|f| root.join(f).is_file())
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

/// One SHA-256 over the names and contents of `files` (`sha256sum` of each, then of that
/// list): the same sources give the same value, whatever git says about them.
pub fn source_digest(root: &Path, files: &[String]) -> Result<String> {
    let mut child = Command::new("sh")
        .current_dir(root)
        .args(["-c", "xargs -0 -r sha256sum -- | sha256sum"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running sha256sum over the sources")?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("sha256sum's stdin")?;
        for file in files {
            stdin.write_all(file.as_bytes())?;
            stdin.write_all(&[0])?;
        }
    }
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.split_whitespace().next() {
        Some(sum) if out.status.success() && sum.len() == 64 => Ok(sum.to_owned()),
        _ => bail!("sha256sum over the sources failed"),
    }
}

/// The file in [`OUT_DIR`] that records [`source_digest`] of the sources the images were
/// built from; the bundle checks it against the tree it packs.
pub const SOURCE_DIGEST_FILE: &str = "source.sha256";

/// An exclusive lock on [`BUILD_DIR`], held until the value is dropped; waits (saying so)
/// while another build holds it.
fn lock_build_dir() -> Result<nix::fcntl::Flock<std::fs::File>> {
    use nix::fcntl::{Flock, FlockArg};
    std::fs::create_dir_all(BUILD_DIR).with_context(|| format!("creating {BUILD_DIR}"))?;
    let path = Path::new(BUILD_DIR).join("lock");
    let open = || {
        std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))
    };
    match Flock::lock(open()?, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            println!(
                "    waiting for another image build to finish (it holds {})",
                path.display()
            );
            Flock::lock(open()?, FlockArg::LockExclusive)
                .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", path.display()))
        }
        Err((_, e)) => bail!("locking {}: {e}", path.display()),
    }
}

/// Copies `files` of the workspace to `to`, with their times, so that cargo rebuilds only
/// what changed; files gone from the workspace go from the copy too.
fn copy_sources(root: &Path, files: &[String], to: &Path) -> Result<()> {
    // What the copy holds that the workspace no longer does.
    let wanted: std::collections::BTreeSet<PathBuf> = files.iter().map(|f| to.join(f)).collect();
    if to.exists() {
        for stale in walk(to)?.into_iter().filter(|p| !wanted.contains(p)) {
            std::fs::remove_file(&stale)
                .with_context(|| format!("removing {}", stale.display()))?;
        }
    }
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for relative in files {
        let (from, dest) = (root.join(relative), to.join(relative));
        let meta = std::fs::metadata(&from)?;
        let unchanged = std::fs::metadata(&dest)
            .is_ok_and(|d| d.len() == meta.len() && d.modified().ok() == meta.modified().ok());
        if unchanged {
            continue;
        }
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::copy(&from, &dest)
            .with_context(|| format!("copying {} to {}", from.display(), dest.display()))?;
        let copied = std::fs::File::options().write(true).open(&dest)?;
        copied.set_modified(meta.modified()?)?;
    }
    Ok(())
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    Ok(files)
}

/// Release builds for the images, from the copy at [`BUILD_DIR`]: debug info stripped, the
/// cargo home's paths remapped.
fn build_binaries(root: &Path, files: &[String]) -> Result<Binaries> {
    let src = Path::new(BUILD_DIR).join("src");
    let target_dir = Path::new(BUILD_DIR).join("target");
    println!("    sources copied to {}", src.display());
    copy_sources(root, files, &src)?;
    let cargo_home = crate::setup::cargo_bin_dir()
        .parent()
        .map_or_else(|| PathBuf::from("/root/.cargo"), Path::to_path_buf);
    let remap = format!("--remap-path-prefix={}=/cargo", cargo_home.display());
    let cargo = |packages: &[&str], extra_flags: &str, target: Option<&str>| -> Result<()> {
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&src)
            .args(["build", "--release", "--locked"]);
        for package in packages {
            cmd.args(["-p", package]);
        }
        if let Some(target) = target {
            cmd.args(["--target", target]);
        }
        cmd.arg("--target-dir")
            .arg(&target_dir)
            .env("RUSTFLAGS", format!("{remap} {extra_flags}"))
            .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
            .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
        println!("    cargo build --release {}", packages.join(" "));
        stream(&mut cmd, "fix the build errors above")
    };
    cargo(&["agent", "controller"], "", None)?;
    // Statically linked (glibc's static libraries; neither resolves names): they run on any
    // host they are copied to.
    cargo(
        &["cni", "install"],
        "-C target-feature=+crt-static",
        Some(STATIC_TARGET),
    )?;
    let datapath = crate::ebpf::build_in(&src, &target_dir.join("ebpf"), true)?;
    Ok(Binaries {
        controller: target_dir.join("release/kovn-controller"),
        agent: target_dir.join("release/kovn-agent"),
        cni_plugin: target_dir.join(format!("{STATIC_TARGET}/release/kube-ovn")),
        installer: target_dir.join(format!("{STATIC_TARGET}/release/kovn-install")),
        datapath,
    })
}

fn build_image(
    root: &Path,
    out: &Path,
    work: &Path,
    spec: &ImageSpec,
    epoch: u64,
) -> Result<BuiltImage> {
    let rootfs = work.join(format!("{}.rootfs.tar", spec.name));
    let packages = out.join(format!("{}.packages", spec.name));
    println!(
        "    {}: mmdebstrap {SUITE} + {}",
        spec.name,
        spec.packages.join(" ")
    );
    let mut mmdebstrap = Command::new("mmdebstrap");
    mmdebstrap
        .args([
            "--variant=minbase",
            "--mode=root",
            "--format=tar",
            "--quiet",
        ])
        .arg(format!("--include={}", spec.packages.join(",")))
        // Documentation stays out; the copyright files stay in.
        .args([
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
        ]);
    for file in &spec.files {
        let from = root.join(&file.from);
        if !from.is_file() {
            bail!(
                "{} is missing (the build step should have made it)",
                from.display()
            );
        }
        mmdebstrap.arg(format!(
            "--customize-hook=install -D -m {} {} \"$1{}\"",
            file.mode,
            shell_quote(&from.to_string_lossy()),
            file.to
        ));
    }
    // The package list, as the image holds it.
    mmdebstrap.arg(format!(
        "--customize-hook=chroot \"$1\" dpkg-query -W -f='${{Package}}\\t${{Version}}\\t${{Architecture}}\\n' > {}",
        shell_quote(&packages.to_string_lossy())
    ));
    // Files whose content is the build's moment or machine, not its inputs.
    mmdebstrap.arg(
        "--customize-hook=rm -f \"$1\"/var/log/dpkg.log \"$1\"/var/log/alternatives.log \"$1\"/var/log/apt/*.log \"$1\"/var/cache/ldconfig/aux-cache \"$1\"/etc/machine-id",
    );
    mmdebstrap
        .arg(SUITE)
        .arg(&rootfs)
        .env("SOURCE_DATE_EPOCH", epoch.to_string());
    stream(
        &mut mmdebstrap,
        "check the mmdebstrap output above (Debian mirror reachable?)",
    )?;

    let layout = work.join(format!("{}.oci", spec.name));
    if layout.exists() {
        std::fs::remove_dir_all(&layout)
            .with_context(|| format!("removing the old layout {}", layout.display()))?;
    }
    let image = format!("{}:{}", layout.display(), tag());
    let created = rfc3339(epoch);
    let umoci = |args: &[&str]| -> Result<()> {
        stream(
            Command::new("umoci")
                .args(args)
                .env("SOURCE_DATE_EPOCH", epoch.to_string()),
            "check the umoci output above",
        )
    };
    umoci(&["init", "--layout", &layout.to_string_lossy()])?;
    umoci(&["new", "--image", &image])?;
    umoci(&[
        "raw",
        "add-layer",
        "--image",
        &image,
        "--history.created",
        &created,
        "--history.created_by",
        &format!(
            "mmdebstrap {SUITE} minbase + {}; kovn files",
            spec.packages.join(" ")
        ),
        &rootfs.to_string_lossy(),
    ])?;
    let revision = git_revision(root);
    let labels = [
        format!("org.opencontainers.image.title={}", spec.name),
        format!("org.opencontainers.image.description={}", spec.description),
        format!("org.opencontainers.image.version={}", tag()),
        format!("org.opencontainers.image.revision={revision}"),
        format!("org.opencontainers.image.created={created}"),
        "org.opencontainers.image.licenses=Apache-2.0".to_owned(),
    ];
    let mut config: Vec<String> = vec![
        "config".into(),
        "--image".into(),
        image.clone(),
        "--created".into(),
        created.clone(),
        "--no-history".into(),
        "--os".into(),
        "linux".into(),
        "--architecture".into(),
        "amd64".into(),
        "--config.env".into(),
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    ];
    for label in &labels {
        config.push("--config.label".into());
        config.push(label.clone());
    }
    umoci(&config.iter().map(String::as_str).collect::<Vec<_>>())?;
    umoci(&["gc", "--layout", &layout.to_string_lossy()])?;
    name_image(&layout, &reference(spec.name))?;

    let archive = out.join(format!("{}-{}.oci.tar", spec.name, tag()));
    stream(
        Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner"])
            .arg(format!("--mtime=@{epoch}"))
            .arg("-cf")
            .arg(&archive)
            .arg("."),
        "check the tar output above",
    )?;
    let digest = manifest_digest(&layout)?;
    std::fs::write(
        out.join(format!("{}.digest", spec.name)),
        format!("{digest}\n"),
    )?;
    std::fs::remove_file(&rootfs).ok();
    Ok(BuiltImage {
        name: spec.name,
        archive,
        digest,
    })
}

/// The name an image is loaded under (`podman load`, `ctr images import`) and that the
/// manifests in deploy/ reference: a registry name that resolves nowhere, so that a node
/// never pulls kovn from the internet; `deploy/install.sh --registry` retags.
pub fn reference(image: &str) -> String {
    format!("{REGISTRY}/{image}:{}", tag())
}

/// The registry part of [`reference`].
pub const REGISTRY: &str = "kovn.local";

/// Names the layout's image with its full reference, where podman (ref.name) and containerd
/// (io.containerd.image.name) look for it; umoci's tag alone would load as `localhost/<tag>`.
/// The index is not part of the image digest.
fn name_image(layout: &Path, reference: &str) -> Result<()> {
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&index_path).with_context(|| format!("reading {}", index_path.display()))?,
    )
    .with_context(|| format!("parsing {}", index_path.display()))?;
    let manifests = index["manifests"]
        .as_array_mut()
        .filter(|m| m.len() == 1)
        .with_context(|| format!("{} should name one manifest", index_path.display()))?;
    manifests[0]["annotations"] = serde_json::json!({
        "org.opencontainers.image.ref.name": reference,
        "io.containerd.image.name": reference,
    });
    std::fs::write(&index_path, serde_json::to_vec(&index)?)
        .with_context(|| format!("writing {}", index_path.display()))
}

/// The digest of the image's manifest, as index.json of the layout names it.
fn manifest_digest(layout: &Path) -> Result<String> {
    let index_path = layout.join("index.json");
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&index_path).with_context(|| format!("reading {}", index_path.display()))?,
    )
    .with_context(|| format!("parsing {}", index_path.display()))?;
    index["manifests"][0]["digest"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no manifest digest in {}", index_path.display()))
}

fn git_revision(root: &Path) -> String {
    Command::new("git")
        .current_dir(root)
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        )
}

/// Seconds since the epoch as RFC 3339 (UTC), without a date library.
fn rfc3339(epoch: u64) -> String {
    let days = epoch / 86_400;
    let rem = epoch % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!("{year:04}-{month:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every image a manifest names is one `cargo xtask images` builds, at this version.
    #[test]
    fn manifests_reference_the_images_built_here() {
        let built = [reference("kovn"), reference("ovn")];
        let deploy = workspace_root().join("deploy");
        let mut seen = 0;
        for entry in std::fs::read_dir(&deploy).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                if let Some(image) = line.trim().strip_prefix("image:") {
                    let image = image.trim();
                    assert!(
                        built.iter().any(|b| b == image),
                        "{} names {image}, which cargo xtask images does not build ({built:?})",
                        path.display()
                    );
                    seen += 1;
                }
            }
        }
        assert!(seen > 0, "no image in {}", deploy.display());
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_169_599), "2026-12-01T23:59:59Z");
    }
}
