//! The pre-flight: Kube-OVN's prerequisites adapted to what kovn needs, judged on one host.
//! Each finding says what was found and, when it is not fine, what to do. A `Fail` stops the
//! installer; a `Warn` installs with less (the OVS-only mode, the userspace datapath, no
//! hostPorts), and says so.
//!
//! | check | needed for |
//! |---|---|
//! | kernel ≥ 5.10 with BTF | the eBPF datapath (else the node runs on OVS only) |
//! | bpffs on /sys/fs/bpf | pinned maps and links: a restarted agent keeps flows |
//! | openvswitch module | OVS's kernel datapath (else `OVS_DATAPATH_TYPE=netdev`) |
//! | geneve module | Geneve tunnels of the kernel datapath (the userspace one has its own) |
//! | nf_tables, nft_nat, nft_masq | natOutgoing subnets (kovn's `ip kovn` table) |
//! | ip_tables, iptable_nat | hostPorts (the chained portmap plugin) and kube-proxy |
//! | IPv6 not disabled | OVN and the agent open IPv6 sockets and routes even for IPv4 |
//! | no other CNI config | the kubelet runs the first conflist in /etc/cni/net.d |
//! | kube-proxy | NodePorts and Services from host-network clients |
//! | ports free or kovn's | 6641–6644/tcp (ovn-central), 6081/udp, 4789/udp, 10660, 10661, 10665/tcp |

use serde::Serialize;

use crate::host::{Host, KernelFeature};

/// What the host will run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// An ovn-central member (kube-ovn/role=master), besides a node.
    Master,
    /// Every node: ovs-ovn and kovn-agent.
    Node,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: String,
    pub status: Status,
    pub found: String,
    /// What to do, when the status is not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// The datapath the node's agent will run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatapathMode {
    Ebpf,
    OvsOnly,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub datapath: DatapathMode,
    /// `system` or `netdev`, for ovs-ovn's OVS_DATAPATH_TYPE.
    pub ovs_datapath: &'static str,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.findings.iter().any(|f| f.status == Status::Fail)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let status = match f.status {
                Status::Ok => "ok",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            out.push_str(&format!("{status:<5} {:<22} {}\n", f.check, f.found));
            if let Some(fix) = &f.fix {
                out.push_str(&format!("{:<28} → {fix}\n", ""));
            }
        }
        out.push_str(&format!(
            "datapath: {}; ovs-ovn: OVS_DATAPATH_TYPE={}\n",
            match self.datapath {
                DatapathMode::Ebpf => "eBPF fast path",
                DatapathMode::OvsOnly => "OVS only (no eBPF fast path on this node)",
            },
            self.ovs_datapath
        ));
        out
    }
}

/// The ports kovn's components listen on, with the processes that may hold them (kovn's own,
/// or OVS/OVN of a Kube-OVN being replaced).
struct PortUse {
    port: u16,
    udp: bool,
    what: &'static str,
    masters_only: bool,
    owners: &'static [&'static str],
}

const OVSDB: &[&str] = &["ovsdb-server"];
const TUNNEL: &[&str] = &["ovs-vswitchd"];
const PORTS: &[PortUse] = &[
    PortUse {
        port: 6641,
        udp: false,
        what: "OVN Northbound",
        masters_only: true,
        owners: OVSDB,
    },
    PortUse {
        port: 6642,
        udp: false,
        what: "OVN Southbound",
        masters_only: true,
        owners: OVSDB,
    },
    PortUse {
        port: 6643,
        udp: false,
        what: "Northbound Raft",
        masters_only: true,
        owners: OVSDB,
    },
    PortUse {
        port: 6644,
        udp: false,
        what: "Southbound Raft",
        masters_only: true,
        owners: OVSDB,
    },
    PortUse {
        port: 10660,
        udp: false,
        what: "kovn-controller metrics",
        masters_only: true,
        owners: &["kovn-controller", "kube-ovn-contro"],
    },
    PortUse {
        port: 10661,
        udp: false,
        what: "the OVN monitor",
        masters_only: true,
        owners: &["kovn-monitor", "kube-ovn-monito"],
    },
    PortUse {
        port: 6081,
        udp: true,
        what: "Geneve",
        masters_only: false,
        owners: TUNNEL,
    },
    PortUse {
        port: 4789,
        udp: true,
        what: "VXLAN",
        masters_only: false,
        owners: TUNNEL,
    },
    PortUse {
        port: 10665,
        udp: false,
        what: "kovn-agent metrics",
        masters_only: false,
        owners: &["kovn-agent", "kube-ovn-daemon"],
    },
];

/// The kernel release's (major, minor).
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn finding(check: &str, status: Status, found: impl Into<String>, fix: Option<&str>) -> Finding {
    Finding {
        check: check.to_owned(),
        status,
        found: found.into(),
        fix: fix.map(str::to_owned),
    }
}

/// Judges `host` for `role`. `euid` is the caller's (owners of ports are visible to root only).
pub fn run(host: &Host, role: Role, euid: u32) -> Report {
    let mut findings = Vec::new();
    let config = host.kernel_config();
    let config = config.as_ref();
    let feature = |option: &str, module: &str| host.kernel_feature(config, option, module);
    let available = |f: KernelFeature| f != KernelFeature::Missing;
    let describe = |name: &str, f: KernelFeature| match f {
        KernelFeature::Builtin => format!("{name}: built in"),
        KernelFeature::Loaded => format!("{name}: loaded"),
        KernelFeature::Loadable => format!("{name}: a module (loaded when needed)"),
        KernelFeature::Missing => {
            format!("{name}: not in this kernel (not built in, not loaded, not under /lib/modules)")
        }
    };

    // The eBPF datapath: the kernel and its type information.
    let release = host.kernel_release().unwrap_or_else(|| "unknown".into());
    let version = kernel_version(&release);
    let btf = host.has_btf();
    let ebpf = version.is_some_and(|v| v >= (5, 10)) && btf;
    let hook = if version.is_some_and(|v| v >= (6, 6)) {
        "TCX"
    } else {
        "tc clsact"
    };
    findings.push(if ebpf {
        finding(
            "kernel",
            Status::Ok,
            format!("{release} with BTF: the eBPF datapath ({hook})"),
            None,
        )
    } else {
        finding(
            "kernel",
            Status::Warn,
            format!(
                "{release}{}: this node runs on OVS only (kovn_datapath_loaded 0)",
                if btf { "" } else { " without BTF" }
            ),
            Some(
                "for the eBPF fast path: a kernel ≥ 5.10 built with CONFIG_DEBUG_INFO_BTF=y (/sys/kernel/btf/vmlinux)",
            ),
        )
    });
    if ebpf {
        let bpffs = host
            .mounts()
            .iter()
            .any(|(at, fs)| at == "/sys/fs/bpf" && fs == "bpf");
        findings.push(if bpffs {
            finding("bpffs", Status::Ok, "mounted on /sys/fs/bpf", None)
        } else {
            finding(
                "bpffs",
                Status::Warn,
                "/sys/fs/bpf is not a bpf filesystem: the agent cannot pin, and stays on OVS",
                Some("mount -t bpf bpf /sys/fs/bpf (and add it to /etc/fstab)"),
            )
        });
    }

    // Open vSwitch's datapath and its tunnels.
    let ovs = feature("CONFIG_OPENVSWITCH", "openvswitch");
    let ovs_datapath = if available(ovs) { "system" } else { "netdev" };
    findings.push(if available(ovs) {
        finding("openvswitch", Status::Ok, describe("openvswitch", ovs), None)
    } else {
        finding(
            "openvswitch",
            Status::Warn,
            describe("openvswitch", ovs),
            Some(
                "install with --ovs-datapath=netdev (OVS's userspace datapath, slower), or use a kernel with the openvswitch module",
            ),
        )
    });
    let geneve = feature("CONFIG_GENEVE", "geneve");
    findings.push(match (available(ovs), available(geneve)) {
        (_, true) => finding("geneve", Status::Ok, describe("geneve", geneve), None),
        (false, false) => finding(
            "geneve",
            Status::Ok,
            "geneve: not in this kernel; not needed, the userspace datapath encapsulates itself",
            None,
        ),
        (true, false) => finding(
            "geneve",
            Status::Fail,
            describe("geneve", geneve),
            Some(
                "OVS's kernel datapath needs the geneve module for its tunnels: load it (modprobe geneve), or install with --ovs-datapath=netdev",
            ),
        ),
    });

    // natOutgoing (nftables) and hostPorts (iptables).
    let nft: Vec<(&str, KernelFeature)> = [
        ("nf_tables", "CONFIG_NF_TABLES"),
        ("nft_nat", "CONFIG_NFT_NAT"),
        ("nft_masq", "CONFIG_NFT_MASQ"),
    ]
    .into_iter()
    .map(|(m, o)| (m, feature(o, m)))
    .collect();
    let missing: Vec<&str> = nft
        .iter()
        .filter(|(_, f)| !available(*f))
        .map(|(m, _)| *m)
        .collect();
    findings.push(if missing.is_empty() {
        finding(
            "nftables",
            Status::Ok,
            "nf_tables, nft_nat, nft_masq: present",
            None,
        )
    } else {
        finding(
            "nftables",
            Status::Fail,
            format!("missing: {}", missing.join(", ")),
            Some("natOutgoing subnets are masqueraded with nftables: load the modules (modprobe)"),
        )
    });
    let ipt: Vec<&str> = [
        ("ip_tables", "CONFIG_IP_NF_IPTABLES"),
        ("iptable_nat", "CONFIG_IP_NF_NAT"),
    ]
    .into_iter()
    .filter(|(m, o)| !available(feature(o, m)))
    .map(|(m, _)| m)
    .collect();
    findings.push(if ipt.is_empty() {
        finding("iptables", Status::Ok, "ip_tables, iptable_nat: present", None)
    } else {
        finding(
            "iptables",
            Status::Warn,
            format!("missing: {}", ipt.join(", ")),
            Some(
                "hostPorts (the chained portmap plugin) and kube-proxy's iptables mode need them: modprobe ip_tables iptable_nat",
            ),
        )
    });

    // IPv6.
    let disabled = host
        .cmdline()
        .split_whitespace()
        .any(|a| a == "ipv6.disable=1");
    findings.push(if disabled || !host.ipv6_in_kernel() {
        finding(
            "ipv6",
            Status::Fail,
            if disabled {
                "ipv6.disable=1 on the kernel command line"
            } else {
                "no IPv6 in this kernel (/proc/sys/net/ipv6 is missing)"
            },
            Some(
                "remove ipv6.disable=1 from the kernel command line and reboot (IPv6 may stay unconfigured; it must not be disabled)",
            ),
        )
    } else {
        finding("ipv6", Status::Ok, "enabled in the kernel", None)
    });

    // Other CNIs.
    let others: Vec<String> = host
        .cni_configs()
        .into_iter()
        .filter(|n| n != "01-kube-ovn.conflist")
        .collect();
    findings.push(if others.is_empty() {
        finding(
            "cni-config",
            Status::Ok,
            format!(
                "{}: no other CNI's configuration",
                host.cni_conf_dir.display()
            ),
            None,
        )
    } else {
        finding(
            "cni-config",
            Status::Fail,
            format!(
                "{} holds {}",
                host.cni_conf_dir.display(),
                others.join(", ")
            ),
            Some(
                "the kubelet runs the first configuration by name: uninstall the other CNI and remove its files from the directory",
            ),
        )
    });

    // kube-proxy.
    let processes = host.processes();
    findings.push(
        if processes.iter().any(|(comm, _)| comm == "kube-proxy") {
            finding("kube-proxy", Status::Ok, "running", None)
        } else {
            finding(
                "kube-proxy",
                Status::Warn,
                "not running on this host",
                Some(
                    "kovn balances Services for pods; NodePorts and host-network clients need kube-proxy, as with Kube-OVN",
                ),
            )
        },
    );

    // Ports.
    let wanted: Vec<&PortUse> = PORTS
        .iter()
        .filter(|p| role == Role::Master || !p.masters_only)
        .collect();
    let numbers: Vec<u16> = wanted.iter().map(|p| p.port).collect();
    let sockets = host.sockets_on(&numbers);
    for use_ in wanted {
        let proto = if use_.udp { "udp" } else { "tcp" };
        let check = format!("port {}/{proto}", use_.port);
        let socket = sockets
            .iter()
            .find(|s| s.port == use_.port && s.udp == use_.udp);
        findings.push(match socket.map(|s| s.owner.clone()) {
            None => finding(&check, Status::Ok, format!("free ({})", use_.what), None),
            Some(Some((comm, pid))) if use_.owners.contains(&comm.as_str()) => finding(
                &check,
                Status::Ok,
                format!("held by {comm} (pid {pid}), the {}", use_.what),
                None,
            ),
            Some(Some((comm, pid))) => finding(
                &check,
                Status::Fail,
                format!("held by {comm} (pid {pid}); kovn needs it for {}", use_.what),
                Some("stop that process or move it to another port"),
            ),
            Some(None) if use_.udp => finding(
                &check,
                Status::Warn,
                format!(
                    "held by the kernel (a tunnel device?); kovn needs it for {}",
                    use_.what
                ),
                Some("ip -d link show type geneve; ip -d link show type vxlan: remove a device that is not OVS's"),
            ),
            Some(None) => finding(
                &check,
                if euid == 0 { Status::Fail } else { Status::Warn },
                format!("in use; kovn needs it for {}", use_.what),
                Some(if euid == 0 {
                    "find the holder with ss -lntp and stop it"
                } else {
                    "run the pre-flight as root to see which process holds it"
                }),
            ),
        });
    }

    Report {
        datapath: if ebpf {
            DatapathMode::Ebpf
        } else {
            DatapathMode::OvsOnly
        },
        ovs_datapath,
        findings,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::path::Path;

    use super::*;

    /// A fabricated host: a kernel release, a build configuration, /proc and /sys files.
    struct FakeHost {
        dir: tempfile::TempDir,
    }

    impl FakeHost {
        fn new(release: &str, config: &[&str]) -> FakeHost {
            let h = FakeHost {
                dir: tempfile::tempdir().unwrap(),
            };
            h.write("proc/sys/kernel/osrelease", release);
            h.write("proc/cmdline", "console=ttyS0 quiet");
            std::fs::create_dir_all(h.root().join("proc/sys/net/ipv6")).unwrap();
            h.write("proc/mounts", "bpf /sys/fs/bpf bpf rw 0 0\n");
            h.write("sys/kernel/btf/vmlinux", "");
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(config.join("\n").as_bytes()).unwrap();
            std::fs::write(h.root().join("proc/config.gz"), gz.finish().unwrap()).unwrap();
            std::fs::create_dir_all(h.root().join("cni")).unwrap();
            h
        }

        fn root(&self) -> &Path {
            self.dir.path()
        }

        fn write(&self, path: &str, text: &str) {
            let path = self.root().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }

        fn host(&self) -> Host {
            Host {
                proc: self.root().join("proc"),
                sys: self.root().join("sys"),
                cni_conf_dir: self.root().join("cni"),
                modules_dir: self.root().join("modules"),
            }
        }

        /// A process `comm` (pid) holding a TCP socket listening on `port`.
        fn listener(&self, comm: &str, pid: u32, port: u16, inode: u64) {
            self.write(&format!("proc/{pid}/comm"), &format!("{comm}\n"));
            std::fs::create_dir_all(self.root().join(format!("proc/{pid}/fd"))).unwrap();
            std::os::unix::fs::symlink(
                format!("socket:[{inode}]"),
                self.root().join(format!("proc/{pid}/fd/3")),
            )
            .unwrap();
            self.write(
                "proc/net/tcp",
                &format!(
                    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:{port:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
                ),
            );
        }
    }

    const GOOD: &[&str] = &[
        "CONFIG_OPENVSWITCH=m",
        "CONFIG_GENEVE=m",
        "CONFIG_NF_TABLES=y",
        "CONFIG_NFT_NAT=y",
        "CONFIG_NFT_MASQ=y",
        "CONFIG_IP_NF_IPTABLES=y",
        "CONFIG_IP_NF_NAT=y",
    ];

    fn get<'a>(report: &'a Report, check: &str) -> &'a Finding {
        report
            .findings
            .iter()
            .find(|f| f.check == check)
            .unwrap_or_else(|| panic!("no {check} finding: {report:?}"))
    }

    #[test]
    fn a_good_host_passes_with_the_ebpf_datapath_and_the_kernel_ovs() {
        let h = FakeHost::new("6.8.0-31-generic", GOOD);
        h.write("sys/module/openvswitch/refcnt", "1");
        h.write("sys/module/geneve/refcnt", "1");
        let report = run(&h.host(), Role::Master, 0);
        assert_eq!(report.datapath, DatapathMode::Ebpf);
        assert_eq!(report.ovs_datapath, "system");
        let bad: Vec<&Finding> = report
            .findings
            .iter()
            .filter(|f| f.status == Status::Fail)
            .collect();
        assert!(bad.is_empty(), "{bad:?}");
        assert!(get(&report, "kernel").found.contains("TCX"));
        assert_eq!(get(&report, "geneve").found, "geneve: loaded");
    }

    #[test]
    fn an_old_kernel_or_one_without_btf_means_ovs_only_and_says_so() {
        let h = FakeHost::new("4.19.0-27-amd64", GOOD);
        let report = run(&h.host(), Role::Node, 0);
        assert_eq!(report.datapath, DatapathMode::OvsOnly);
        let kernel = get(&report, "kernel");
        assert_eq!(kernel.status, Status::Warn);
        assert!(kernel.found.contains("OVS only"), "{kernel:?}");
        assert!(kernel.fix.as_deref().unwrap().contains("5.10"));

        let h = FakeHost::new("6.1.0-18-amd64", GOOD);
        std::fs::remove_file(h.root().join("sys/kernel/btf/vmlinux")).unwrap();
        let report = run(&h.host(), Role::Node, 0);
        assert_eq!(report.datapath, DatapathMode::OvsOnly);
        assert!(get(&report, "kernel").found.contains("without BTF"));
    }

    #[test]
    fn modules_are_judged_from_the_configuration_and_the_module_tree() {
        let h = FakeHost::new("6.1.0-18-amd64", GOOD);
        // =m and listed in modules.dep: loadable.
        h.write(
            "modules/6.1.0-18-amd64/modules.dep",
            "kernel/net/openvswitch/openvswitch.ko.xz: kernel/net/nsh/nsh.ko.xz\nkernel/drivers/net/geneve.ko.xz: kernel/net/ipv4/udp_tunnel.ko.xz\n",
        );
        let report = run(&h.host(), Role::Node, 0);
        assert_eq!(get(&report, "openvswitch").status, Status::Ok);
        assert_eq!(get(&report, "geneve").status, Status::Ok);
        assert!(get(&report, "geneve").found.contains("module"));

        // The kernel datapath without geneve cannot tunnel.
        let h = FakeHost::new(
            "6.1.0-18-amd64",
            &[
                "CONFIG_OPENVSWITCH=y",
                "# CONFIG_GENEVE is not set",
                "CONFIG_NF_TABLES=y",
                "CONFIG_NFT_NAT=y",
                "CONFIG_NFT_MASQ=y",
            ],
        );
        let report = run(&h.host(), Role::Node, 0);
        let geneve = get(&report, "geneve");
        assert_eq!(geneve.status, Status::Fail, "{geneve:?}");
        assert!(geneve.fix.as_deref().unwrap().contains("netdev"));
        assert_eq!(get(&report, "iptables").status, Status::Warn);
        assert!(get(&report, "iptables").found.contains("ip_tables"));

        // No openvswitch at all: the userspace datapath, and then geneve is not needed.
        let h = FakeHost::new("6.1.0-18-amd64", &["CONFIG_NF_TABLES=y"]);
        let report = run(&h.host(), Role::Node, 0);
        assert_eq!(report.ovs_datapath, "netdev");
        assert_eq!(get(&report, "openvswitch").status, Status::Warn);
        assert_eq!(get(&report, "geneve").status, Status::Ok);
        let nft = get(&report, "nftables");
        assert_eq!(nft.status, Status::Fail);
        assert!(nft.found.contains("nft_nat") && nft.found.contains("nft_masq"));
    }

    #[test]
    fn disabled_ipv6_fails() {
        let h = FakeHost::new("6.1.0-18-amd64", GOOD);
        h.write("proc/cmdline", "root=/dev/sda1 ipv6.disable=1 quiet");
        let report = run(&h.host(), Role::Node, 0);
        let ipv6 = get(&report, "ipv6");
        assert_eq!(ipv6.status, Status::Fail);
        assert!(ipv6.found.contains("ipv6.disable=1"));
        assert!(report.failed());
    }

    #[test]
    fn another_cnis_configuration_fails_and_kube_ovns_own_does_not() {
        let h = FakeHost::new("6.1.0-18-amd64", GOOD);
        h.write("cni/01-kube-ovn.conflist", "{}");
        h.write("cni/README", "not a configuration");
        assert_eq!(
            get(&run(&h.host(), Role::Node, 0), "cni-config").status,
            Status::Ok
        );
        h.write("cni/10-flannel.conflist", "{}");
        let report = run(&h.host(), Role::Node, 0);
        let cni = get(&report, "cni-config");
        assert_eq!(cni.status, Status::Fail);
        assert!(cni.found.contains("10-flannel.conflist"), "{cni:?}");
        assert!(!cni.found.contains("01-kube-ovn"), "{cni:?}");
    }

    #[test]
    fn a_port_held_by_another_process_fails_and_one_held_by_ovsdb_does_not() {
        let h = FakeHost::new("6.1.0-18-amd64", GOOD);
        h.listener("nginx", 4242, 6641, 91_001);
        let report = run(&h.host(), Role::Master, 0);
        let nb = get(&report, "port 6641/tcp");
        assert_eq!(nb.status, Status::Fail);
        assert!(
            nb.found.contains("nginx") && nb.found.contains("4242"),
            "{nb:?}"
        );
        // A node does not need the ovn-central ports.
        let report = run(&h.host(), Role::Node, 0);
        assert!(report.findings.iter().all(|f| f.check != "port 6641/tcp"));

        let h = FakeHost::new("6.1.0-18-amd64", GOOD);
        h.listener("ovsdb-server", 77, 6641, 91_002);
        let nb = get(&run(&h.host(), Role::Master, 0), "port 6641/tcp").clone();
        assert_eq!(nb.status, Status::Ok, "{nb:?}");
    }

    #[test]
    fn kube_proxy_is_found_by_its_process() {
        let h = FakeHost::new("6.1.0-18-amd64", GOOD);
        assert_eq!(
            get(&run(&h.host(), Role::Node, 0), "kube-proxy").status,
            Status::Warn
        );
        h.write("proc/311/comm", "kube-proxy\n");
        assert_eq!(
            get(&run(&h.host(), Role::Node, 0), "kube-proxy").status,
            Status::Ok
        );
    }

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(kernel_version("6.18.44-fc-v857"), Some((6, 18)));
        assert_eq!(kernel_version("5.10.0-28-amd64"), Some((5, 10)));
        assert_eq!(kernel_version("garbage"), None);
    }
}
