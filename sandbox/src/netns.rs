//! Network namespaces: create, delete (with everything running inside), run code inside one.

use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};

use crate::cmd::{Cmd, kill_pid};
use crate::error::{Result, SandboxError, io_error};

/// Where iproute2 keeps named namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";

/// Creates a named namespace with loopback up.
pub fn add(name: &str) -> Result<()> {
    Cmd::new("ip").args(["netns", "add", name]).run()?;
    Cmd::new("ip")
        .args(["-n", name, "link", "set", "lo", "up"])
        .run()?;
    Ok(())
}

/// Every named namespace on the machine.
pub fn list() -> Result<Vec<String>> {
    let out = Cmd::new("ip").args(["netns", "list"]).run()?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Pids of the processes whose network namespace is `name`.
pub fn pids(name: &str) -> Result<Vec<u32>> {
    let out = Cmd::new("ip").args(["netns", "pids", name]).run()?;
    Ok(out.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Kills what still runs in the namespace, then deletes it (its interfaces go with it; a veth
/// whose peer is elsewhere is removed too).
pub fn delete(name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = pids(name).unwrap_or_default();
        if pids.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(SandboxError::Timeout {
                what: format!("processes {pids:?} in namespace {name} to exit"),
                timeout: Duration::from_secs(5),
            });
        }
        for pid in pids {
            kill_pid(pid);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match Cmd::new("ip").args(["netns", "del", name]).run() {
        Ok(_) => Ok(()),
        // Another thread or process cleaning up the same stale sandbox got there first; the
        // namespace is gone, which is all the caller asked for.
        Err(_) if !PathBuf::from(NETNS_DIR).join(name).exists() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs `f` on a dedicated OS thread that has entered namespace `name`. (`setns` changes the
/// calling thread only, so it must never run on a thread that other code shares.)
pub fn run_in<T, F>(name: &str, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let path = PathBuf::from(NETNS_DIR).join(name);
    let file = File::open(&path).map_err(io_error(&path))?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| SandboxError::Io {
                    path: path.clone(),
                    source: e.into(),
                })?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The index of interface `ifname` inside namespace `netns`.
pub fn ifindex(netns: &str, ifname: &str) -> Result<u32> {
    let path = format!("/sys/class/net/{ifname}/ifindex");
    let out = Cmd::new("cat").arg(&path).netns(netns).run()?;
    out.trim().parse().map_err(|_| SandboxError::Parse {
        command: format!("cat {path} in {netns}"),
        detail: out,
    })
}

/// Network namespaces for a test that needs a few hosts but no OVN: registered like a sandbox
/// (so a killed run is cleaned up by the next one) and deleted on drop.
#[derive(Debug)]
pub struct ScratchNamespaces {
    registration: crate::registry::Registration,
    names: Vec<String>,
}

impl ScratchNamespaces {
    /// Creates one namespace per label, named `ks<id>-<label>`.
    pub fn new(labels: &[&str]) -> Result<ScratchNamespaces> {
        crate::registry::cleanup_stale()?;
        let mut scratch = ScratchNamespaces {
            registration: crate::registry::register()?,
            names: Vec::new(),
        };
        for label in labels {
            let name = format!(
                "{}{label}",
                crate::registry::netns_prefix(&scratch.registration.id)
            );
            // Recorded first: a half-created namespace is still deleted.
            scratch.names.push(name.clone());
            add(&name)?;
        }
        Ok(scratch)
    }

    /// The namespace created for `labels[index]`.
    pub fn name(&self, index: usize) -> &str {
        &self.names[index]
    }
}

impl Drop for ScratchNamespaces {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            if std::path::Path::new(NETNS_DIR).join(name).exists()
                && let Err(e) = delete(name)
            {
                eprintln!("scratch namespace {name}: {e}");
            }
        }
        crate::registry::release(&self.registration, false);
    }
}
