//! `cargo xtask bundle`: one offline tarball with everything a cluster without internet
//! access needs, as Kube-OVN's production guide asks operators to keep: the images (and their
//! package lists and digests), the manifests, the source of the commit they were built from,
//! and the documentation, with a SHA256SUMS file over all of it.
//!
//! Reproducible like the images: entries sorted, owned by root, dated `SOURCE_DATE_EPOCH`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::images;
use crate::progress::{Step, stream};
use crate::workspace_root;

/// The bundle `cargo xtask bundle` writes.
pub fn path() -> PathBuf {
    workspace_root().join(format!("target/kovn-{}-bundle.tar", images::tag()))
}

/// Builds the images, then the bundle.
pub fn run() -> Result<()> {
    images::run(None)?;
    write()
}

/// Writes the bundle from the images already in target/images/.
pub fn write() -> Result<()> {
    let root = workspace_root();
    let step = Step::start(1, 1, "offline bundle (images, manifests, source, docs)");
    let epoch = images::source_date_epoch(&root)?;
    let name = format!("kovn-{}", images::tag());
    let staging = root.join("target/bundle").join(&name);
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("removing {}", staging.display()))?;
    }
    for dir in ["images", "deploy", "source", "docs", "bin"] {
        std::fs::create_dir_all(staging.join(dir))?;
    }
    let images_dir = root.join(images::OUT_DIR);
    for image in ["kovn", "ovn"] {
        for file in [
            format!("{image}-{}.oci.tar", images::tag()),
            format!("{image}.packages"),
            format!("{image}.digest"),
        ] {
            let from = images_dir.join(&file);
            if !from.is_file() {
                bail!(
                    "{} is missing: run `cargo xtask images` first",
                    from.display()
                );
            }
            std::fs::copy(&from, staging.join("images").join(&file))
                .with_context(|| format!("copying {}", from.display()))?;
        }
    }
    let installer = images_dir.join("kovn-install");
    if !installer.is_file() {
        bail!(
            "{} is missing: run `cargo xtask images` first",
            installer.display()
        );
    }
    std::fs::copy(&installer, staging.join("bin/kovn-install"))
        .with_context(|| format!("copying {}", installer.display()))?;
    copy_tree(&root.join("deploy"), &staging.join("deploy"))?;
    std::fs::copy(root.join("README.md"), staging.join("docs/README.md"))?;
    // The sources the images were built from, exactly: the workspace's files, committed or
    // not, refused when they changed since the images were built.
    let files = images::source_files(&root)?;
    let digest = images::source_digest(&root, &files)?;
    let recorded_path = images_dir.join(images::SOURCE_DIGEST_FILE);
    let recorded = std::fs::read_to_string(&recorded_path).unwrap_or_default();
    if recorded.trim() != digest {
        bail!(
            "the images in {} were not built from the sources the tree holds now ({}): run \
             `cargo xtask images`, then `cargo xtask bundle`",
            images::OUT_DIR,
            if recorded.is_empty() {
                "no record of their sources"
            } else {
                "a file changed since"
            }
        );
    }
    let list = staging.join("source/FILES");
    std::fs::write(&list, files.join("\0"))?;
    stream(
        Command::new("tar")
            .current_dir(&root)
            .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner"])
            .arg(format!("--mtime=@{epoch}"))
            .arg(format!("--transform=s,^,{name}/,"))
            .arg("-cf")
            .arg(staging.join(format!("source/{name}-src.tar")))
            .args(["--null", "--verbatim-files-from", "-T"])
            .arg(&list),
        "check the tar output above",
    )?;
    std::fs::remove_file(&list)?;
    let revision = Command::new("git")
        .current_dir(&root)
        .args(["rev-parse", "HEAD"])
        .output()
        .context("running git")?;
    let revision = String::from_utf8_lossy(&revision.stdout).trim().to_owned();
    let status = Command::new("git")
        .current_dir(&root)
        .args(["status", "--porcelain"])
        .output()
        .context("running git status")?;
    let dirty = !status.stdout.is_empty();
    std::fs::write(
        staging.join("source/REVISION"),
        format!(
            "{revision}{}\nsources sha256 {digest}\n",
            if dirty {
                " with uncommitted changes"
            } else {
                ""
            }
        ),
    )?;
    // Checksums of everything, then the tarball.
    let sums = Command::new("sh")
        .current_dir(&staging)
        .args([
            "-c",
            "find . -type f ! -name SHA256SUMS | LC_ALL=C sort | xargs sha256sum",
        ])
        .output()
        .context("running sha256sum")?;
    if !sums.status.success() {
        bail!(
            "sha256sum failed: {}",
            String::from_utf8_lossy(&sums.stderr).trim()
        );
    }
    std::fs::write(staging.join("SHA256SUMS"), &sums.stdout)?;
    let bundle = path();
    stream(
        Command::new("tar")
            .arg("-C")
            .arg(staging.parent().unwrap_or(Path::new(".")))
            .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner"])
            .arg(format!("--mtime=@{epoch}"))
            .arg("-cf")
            .arg(&bundle)
            .arg(&name),
        "check the tar output above",
    )?;
    let _ = std::fs::remove_dir_all(root.join("target/bundle"));
    step.done(&format!(
        "{} ({} MiB)",
        bundle.strip_prefix(&root).unwrap_or(&bundle).display(),
        std::fs::metadata(&bundle)?.len() >> 20
    ));
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}
