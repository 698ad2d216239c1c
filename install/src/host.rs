//! The host the pre-flight looks at, as files: the kernel's /proc and /sys, the kubelet's CNI
//! directory, the module tree. Every path hangs off a root, so the checks run the same on a
//! node (roots `/`) and on a fabricated host in the tests.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// Where a host's files are.
#[derive(Debug, Clone)]
pub struct Host {
    pub proc: PathBuf,
    pub sys: PathBuf,
    pub cni_conf_dir: PathBuf,
    /// `/lib/modules`.
    pub modules_dir: PathBuf,
}

impl Default for Host {
    fn default() -> Host {
        Host {
            proc: "/proc".into(),
            sys: "/sys".into(),
            cni_conf_dir: "/etc/cni/net.d".into(),
            modules_dir: "/lib/modules".into(),
        }
    }
}

/// How a kernel feature is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFeature {
    /// Compiled in (`=y`).
    Builtin,
    /// A module that is loaded.
    Loaded,
    /// A module that exists and can be loaded (`modprobe`).
    Loadable,
    Missing,
}

/// A listening (TCP) or bound (UDP) socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    pub port: u16,
    pub udp: bool,
    /// The process holding it, when /proc shows it (`comm`, pid).
    pub owner: Option<(String, u32)>,
}

impl Host {
    fn read(&self, path: &Path) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }

    /// The running kernel's release (`6.18.44-…`).
    pub fn kernel_release(&self) -> Option<String> {
        self.read(&self.proc.join("sys/kernel/osrelease"))
            .map(|s| s.trim().to_owned())
    }

    pub fn has_btf(&self) -> bool {
        self.sys.join("kernel/btf/vmlinux").exists()
    }

    pub fn cmdline(&self) -> String {
        self.read(&self.proc.join("cmdline")).unwrap_or_default()
    }

    pub fn ipv6_in_kernel(&self) -> bool {
        self.proc.join("sys/net/ipv6").is_dir()
    }

    /// `/proc/mounts` as (mount point, filesystem type).
    pub fn mounts(&self) -> Vec<(String, String)> {
        self.read(&self.proc.join("mounts"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let _device = f.next()?;
                Some((f.next()?.to_owned(), f.next()?.to_owned()))
            })
            .collect()
    }

    /// The kernel's build configuration (`/proc/config.gz`), if the kernel exposes it.
    pub fn kernel_config(&self) -> Option<BTreeMap<String, String>> {
        let file = std::fs::File::open(self.proc.join("config.gz")).ok()?;
        let mut text = String::new();
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .ok()?;
        Some(
            text.lines()
                .filter_map(|l| {
                    let (k, v) = l.split_once('=')?;
                    Some((k.to_owned(), v.to_owned()))
                })
                .collect(),
        )
    }

    /// How `module` (e.g. `openvswitch`, built from `config` e.g. `CONFIG_OPENVSWITCH`) is
    /// available: the build configuration says whether it is built in or a module; a module
    /// is loaded when /sys/module has it, loadable when the module tree lists it. Without a
    /// configuration, /sys/module and the module tree decide.
    pub fn kernel_feature(
        &self,
        config: Option<&BTreeMap<String, String>>,
        option: &str,
        module: &str,
    ) -> KernelFeature {
        let loaded = self.sys.join("module").join(module).exists();
        let release = self.kernel_release().unwrap_or_default();
        let tree = self.modules_dir.join(&release);
        let listed = |file: &str| {
            self.read(&tree.join(file)).is_some_and(|t| {
                t.lines().any(|l| {
                    let path = l.split(':').next().unwrap_or(l);
                    let stem = path.rsplit('/').next().unwrap_or(path);
                    let stem = stem.split('.').next().unwrap_or(stem);
                    stem.replace('-', "_") == module
                })
            })
        };
        match config.and_then(|c| c.get(option)).map(String::as_str) {
            Some("y") => KernelFeature::Builtin,
            Some("m") if loaded => KernelFeature::Loaded,
            Some("m") if listed("modules.dep") => KernelFeature::Loadable,
            Some(_) => KernelFeature::Missing,
            None if config.is_some() => KernelFeature::Missing,
            None if listed("modules.builtin") => KernelFeature::Builtin,
            None if loaded => KernelFeature::Loaded,
            None if listed("modules.dep") => KernelFeature::Loadable,
            None => KernelFeature::Missing,
        }
    }

    /// The CNI configuration files the kubelet would consider (it takes the first by name).
    pub fn cni_configs(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(&self.cni_conf_dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".conf") || n.ends_with(".conflist") || n.ends_with(".json"))
            .collect();
        out.sort();
        out
    }

    /// The names of running processes (`comm`), with their pids.
    pub fn processes(&self) -> Vec<(String, u32)> {
        std::fs::read_dir(&self.proc)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let comm = self.read(&e.path().join("comm"))?;
                Some((comm.trim().to_owned(), pid))
            })
            .collect()
    }

    /// TCP sockets listening and UDP sockets bound on any of `ports`, with their owners.
    pub fn sockets_on(&self, ports: &[u16]) -> Vec<Socket> {
        let mut found: Vec<(u16, bool, u64)> = Vec::new();
        for (file, udp) in [
            ("tcp", false),
            ("tcp6", false),
            ("udp", true),
            ("udp6", true),
        ] {
            let Some(text) = self.read(&self.proc.join("net").join(file)) else {
                continue;
            };
            for line in text.lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() < 10 {
                    continue;
                }
                let Some(port) = f[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                else {
                    continue;
                };
                // TCP: LISTEN (0A); UDP: every bound socket (07, unconnected).
                let state_ok = if udp { f[3] == "07" } else { f[3] == "0A" };
                if state_ok && ports.contains(&port) {
                    let inode = f[9].parse().unwrap_or(0);
                    if !found.iter().any(|&(p, u, _)| p == port && u == udp) {
                        found.push((port, udp, inode));
                    }
                }
            }
        }
        if found.is_empty() {
            return Vec::new();
        }
        let owners = self.socket_owners();
        found
            .into_iter()
            .map(|(port, udp, inode)| Socket {
                port,
                udp,
                owner: owners.get(&inode).cloned(),
            })
            .collect()
    }

    /// Socket inode → the process that holds it (from /proc/<pid>/fd).
    fn socket_owners(&self) -> BTreeMap<u64, (String, u32)> {
        let mut owners = BTreeMap::new();
        for (comm, pid) in self.processes() {
            let fds = self.proc.join(pid.to_string()).join("fd");
            for fd in std::fs::read_dir(&fds).into_iter().flatten().flatten() {
                let Ok(target) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                let target = target.to_string_lossy();
                if let Some(inode) = target
                    .strip_prefix("socket:[")
                    .and_then(|s| s.strip_suffix(']'))
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    owners.entry(inode).or_insert((comm.clone(), pid));
                }
            }
        }
        owners
    }
}
