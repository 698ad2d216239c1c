//! A node: its own ovsdb-server, ovs-vswitchd (userspace datapath) and ovn-controller, in its
//! own namespace, with an underlay interface on the shared fabric.
//!
//! How Geneve works here without the openvswitch and geneve kernel modules: the userspace
//! datapath implements tunnels itself, but it sends encapsulated packets only out of an OVS
//! port, after looking up the route to the remote tunnel endpoint in its own routing table,
//! which it learns from the kernel routes of its namespace. So the underlay veth (`eth0`) is a
//! port of a netdev bridge `br-phy`, and the node's underlay address lives on `br-phy`'s
//! internal (tap) port: the kernel route to the fabric then points at `br-phy`, OVS resolves
//! the tunnel's next hop through it (and ARPs for it on `br-phy`), and pushes the Geneve
//! packet out of `eth0`. The node's own TCP connection to the Southbound database takes the
//! same way through `br-phy`. `eth0` itself carries no address: an address there would make
//! the kernel answer ARP and route behind OVS's back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cmd::Cmd;
use crate::error::{Result, io_error};
use crate::ovs::{Ctl, DbServer, create_db, wait_for_path, wait_until};
use crate::supervisor::Supervisor;

pub const VSWITCH_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
/// The node's interface on the fabric, inside the node's namespace.
pub const UNDERLAY_IF: &str = "eth0";
/// The netdev bridge that holds the underlay interface and the node's underlay address.
pub const PHYSICAL_BRIDGE: &str = "br-phy";
/// The integration bridge ovn-controller creates and programs.
pub const INTEGRATION_BRIDGE: &str = "br-int";

/// A running node.
#[derive(Debug, Clone)]
pub struct Node {
    /// Also its OVN chassis name (`external_ids:system-id`).
    pub name: String,
    pub netns: String,
    pub dir: PathBuf,
    /// Its underlay (Geneve endpoint) address.
    pub address: String,
    /// The netdev bridge holding `eth0` and the underlay address: the node's tunnel
    /// interface ([`PHYSICAL_BRIDGE`] unless the sandbox was told another name for it).
    pub uplink: String,
    pub db: DbServer,
}

/// Who runs a node's Open vSwitch (ovsdb-server, ovs-vswitchd) and ovn-controller.
#[derive(Clone, Default)]
pub enum NodeDaemons {
    /// The host's binaries, one supervised process each.
    #[default]
    Host,
    /// One command of the caller's that runs all three, as the ovs-ovn DaemonSet's container
    /// does (a test runs the ovn image's start script under podman); see [`NodeLaunch`].
    Launched(NodeLauncher),
}

impl std::fmt::Debug for NodeDaemons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeDaemons::Host => "Host",
            NodeDaemons::Launched(_) => "Launched",
        })
    }
}

/// Turns a [`NodeLaunch`] into the long-running command that runs the node's daemons in its
/// namespace, in the foreground (the sandbox supervises it and stops it with SIGTERM).
pub type NodeLauncher = std::sync::Arc<dyn Fn(&NodeLaunch) -> Cmd + Send + Sync>;

/// What a launched node's daemons are given: the node's namespace and its host paths, one
/// set per sandbox node, laid out as Kube-OVN's nodes keep them (the ovs-ovn DaemonSet's
/// hostPath volumes).
#[derive(Debug, Clone)]
pub struct NodeLaunch {
    pub node: String,
    pub netns: String,
    /// The node's `/run/openvswitch`: the command serves the database on `db.sock` and
    /// ovs-vswitchd's control socket `ovs-vswitchd.ctl` here. (The node's directory itself,
    /// where the sandbox and the tests look for them.)
    pub ovs_run_dir: PathBuf,
    /// A directory standing for the rest of the node's filesystem: the node's path `/P` is
    /// `host_root/P` — `etc/origin/openvswitch` (`conf.db`, and `system-id.conf`, which the
    /// sandbox writes first: the chassis is named after the node through the same path that
    /// keeps a Kube-OVN node's system-id), `run/ovn`, `var/log/openvswitch`, `var/log/ovn`.
    pub host_root: PathBuf,
}

impl NodeLaunch {
    /// The paths of `node`, which the sandbox launched.
    pub fn of(node: &Node) -> NodeLaunch {
        NodeLaunch::for_node(&node.name, &node.netns, &node.dir)
    }

    fn for_node(name: &str, netns: &str, dir: &Path) -> NodeLaunch {
        NodeLaunch {
            node: name.to_owned(),
            netns: netns.to_owned(),
            ovs_run_dir: dir.to_owned(),
            host_root: dir.join("host"),
        }
    }

    /// The node path `path` (absolute) on this sandbox host.
    pub fn host_path(&self, path: &str) -> PathBuf {
        if path == "/run/openvswitch" || path == "/var/run/openvswitch" {
            return self.ovs_run_dir.clone();
        }
        self.host_root.join(path.trim_start_matches('/'))
    }

    /// The database paths the launched daemons use.
    fn db(&self) -> DbServer {
        DbServer {
            db: self.host_path("/etc/origin/openvswitch/conf.db"),
            socket: self.ovs_run_dir.join("db.sock"),
            ctl: self.ovs_run_dir.join("ovsdb-server.ctl"),
            pidfile: self.ovs_run_dir.join("ovsdb-server.pid"),
            log: self.host_path("/var/log/openvswitch/ovsdb-server.log"),
        }
    }
}

/// How long launched daemons get to serve their sockets (a container starts first).
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);

impl Node {
    /// Starts the node's daemons. `eth0` must already be in `netns`, linked to the fabric.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        supervisor: &mut Supervisor,
        daemons: &NodeDaemons,
        name: &str,
        netns: &str,
        dir: &Path,
        address: &str,
        prefix_len: u8,
        sb_remote: &str,
        uplink: &str,
    ) -> Result<Node> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let mut node = match daemons {
            NodeDaemons::Host => {
                Node::start_host_daemons(supervisor, name, netns, dir, address, sb_remote)?
            }
            NodeDaemons::Launched(launcher) => {
                let node =
                    Node::start_launched_daemons(supervisor, launcher, name, netns, dir, address)?;
                // What the host path writes before ovs-vswitchd starts (the start script
                // set the datapath type and userspace TSO itself); the agent writes these
                // again, as in a cluster.
                node.vsctl().run([
                    "set",
                    "Open_vSwitch",
                    ".",
                    &format!("external_ids:hostname={name}"),
                    &format!("external_ids:ovn-remote={sb_remote}"),
                    "external_ids:ovn-encap-type=geneve",
                    &format!("external_ids:ovn-encap-ip={address}"),
                ])?;
                node
            }
        };
        node.uplink = uplink.to_owned();
        node.vsctl().run([
            "--may-exist",
            "add-br",
            uplink,
            "--",
            "set",
            "Bridge",
            uplink,
            "datapath_type=netdev",
            "--",
            "--may-exist",
            "add-port",
            uplink,
            UNDERLAY_IF,
        ])?;
        node.ip(&[
            "addr",
            "add",
            &format!("{address}/{prefix_len}"),
            "dev",
            uplink,
        ])?;
        node.ip(&["link", "set", uplink, "up"])?;
        if matches!(daemons, NodeDaemons::Host) {
            node.start_host_ovn_controller(supervisor)?;
        }
        Ok(node)
    }

    /// ovsdb-server and ovs-vswitchd from the host's binaries; ovn-controller comes once
    /// `br-phy` carries the underlay address.
    fn start_host_daemons(
        supervisor: &mut Supervisor,
        name: &str,
        netns: &str,
        dir: &Path,
        address: &str,
        sb_remote: &str,
    ) -> Result<Node> {
        let db = DbServer::new(dir, "conf");
        create_db(&db.db, VSWITCH_SCHEMA)?;
        supervisor.spawn(
            &format!("{name}-ovsdb-server"),
            &db.command(&[]).netns(netns),
            dir,
            Some(db.log.clone()),
        )?;
        wait_for_path(&db.socket, Duration::from_secs(10))?;
        let node = Node {
            name: name.to_owned(),
            netns: netns.to_owned(),
            dir: dir.to_owned(),
            address: address.to_owned(),
            uplink: PHYSICAL_BRIDGE.to_owned(),
            db,
        };
        let vsctl = node.vsctl();
        vsctl.run(["--no-wait", "init"])?;
        // Userspace TSO must be on before ovs-vswitchd starts, or TCP through the userspace
        // datapath breaks on partial checksums (ENVIRONMENT.md).
        vsctl.run([
            "--no-wait",
            "set",
            "Open_vSwitch",
            ".",
            "other_config:userspace-tso-enable=true",
            &format!("external_ids:system-id={name}"),
            &format!("external_ids:hostname={name}"),
            &format!("external_ids:ovn-remote={sb_remote}"),
            "external_ids:ovn-encap-type=geneve",
            &format!("external_ids:ovn-encap-ip={address}"),
            "external_ids:ovn-bridge-datapath-type=netdev",
        ])?;

        let vswitchd_log = dir.join("ovs-vswitchd.log");
        let vswitchd_ctl = dir.join("ovs-vswitchd.ctl");
        let vswitchd = Cmd::new("ovs-vswitchd")
            .arg(format!("unix:{}", node.db.socket.display()))
            .arg(format!("--unixctl={}", vswitchd_ctl.display()))
            .arg(format!(
                "--pidfile={}",
                dir.join("ovs-vswitchd.pid").display()
            ))
            .arg(format!("--log-file={}", vswitchd_log.display()))
            .arg("--no-chdir")
            // Bridge management sockets (br-int.mgmt) go to OVS_RUNDIR: one per node.
            .env("OVS_RUNDIR", dir.display().to_string())
            .netns(netns);
        supervisor.spawn(
            &format!("{name}-ovs-vswitchd"),
            &vswitchd,
            dir,
            Some(vswitchd_log),
        )?;
        wait_for_path(&vswitchd_ctl, Duration::from_secs(10))?;
        Ok(node)
    }

    fn start_host_ovn_controller(&self, supervisor: &mut Supervisor) -> Result<()> {
        let dir = &self.dir;
        let controller_log = dir.join("ovn-controller.log");
        let controller = Cmd::new("ovn-controller")
            .arg(format!("unix:{}", self.db.socket.display()))
            .arg(format!(
                "--pidfile={}",
                dir.join("ovn-controller.pid").display()
            ))
            .arg(format!("--log-file={}", controller_log.display()))
            .arg("--no-chdir")
            // Without these it connects to another instance's br-int.mgmt under
            // /var/run/openvswitch and programs the wrong switch (ENVIRONMENT.md).
            .env("OVS_RUNDIR", dir.display().to_string())
            .env("OVN_RUNDIR", dir.display().to_string())
            .netns(&self.netns);
        supervisor.spawn(
            &format!("{}-ovn-controller", self.name),
            &controller,
            dir,
            Some(controller_log),
        )?;
        Ok(())
    }

    /// The caller's command (the ovn image's ovs-ovn) runs all three daemons; the node is up
    /// once it serves the database and ovs-vswitchd's control socket and has created br-int.
    fn start_launched_daemons(
        supervisor: &mut Supervisor,
        launcher: &NodeLauncher,
        name: &str,
        netns: &str,
        dir: &Path,
        address: &str,
    ) -> Result<Node> {
        let launch = NodeLaunch::for_node(name, netns, dir);
        for path in [
            "/etc/origin/openvswitch",
            "/run/ovn",
            "/var/log/openvswitch",
            "/var/log/ovn",
        ] {
            let d = launch.host_path(path);
            std::fs::create_dir_all(&d).map_err(io_error(&d))?;
        }
        let id_file = launch.host_path("/etc/origin/openvswitch/system-id.conf");
        std::fs::write(&id_file, format!("{name}\n")).map_err(io_error(&id_file))?;
        let db = launch.db();
        supervisor.spawn(
            &format!("{name}-ovs-ovn"),
            &launcher(&launch),
            dir,
            Some(launch.host_path("/var/log/openvswitch/ovs-vswitchd.log")),
        )?;
        let vswitchd_ctl = launch.ovs_run_dir.join("ovs-vswitchd.ctl");
        wait_until(
            &format!("{name}'s ovs-ovn to serve {}", vswitchd_ctl.display()),
            LAUNCH_TIMEOUT,
            || {
                supervisor.check()?;
                Ok(db.socket.exists() && vswitchd_ctl.exists())
            },
        )?;
        Ok(Node {
            name: name.to_owned(),
            netns: netns.to_owned(),
            dir: dir.to_owned(),
            address: address.to_owned(),
            uplink: PHYSICAL_BRIDGE.to_owned(),
            db,
        })
    }

    /// `ovs-vsctl` bound to this node's database.
    pub fn vsctl(&self) -> Ctl {
        Ctl::vsctl(&self.db.socket)
    }

    /// `ovs-appctl` for this node's ovs-vswitchd.
    pub fn appctl(&self) -> Cmd {
        Cmd::new("ovs-appctl").arg(format!(
            "--target={}",
            self.dir.join("ovs-vswitchd.ctl").display()
        ))
    }

    /// Runs `ip <args>` in this node's namespace.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        Cmd::new("ip")
            .arg("-n")
            .arg(&self.netns)
            .args(args.iter().copied())
            .run()
    }

    /// Runs `ip <line>` in this node's namespace; `line` is split on whitespace (interface and
    /// namespace names never contain any).
    pub fn ip_line(&self, line: &str) -> Result<String> {
        self.ip(&line.split_whitespace().collect::<Vec<_>>())
    }

    /// A command to run inside this node's namespace.
    pub fn cmd(&self, program: &str) -> Cmd {
        Cmd::new(program).netns(&self.netns)
    }

    /// Waits until ovn-controller created br-int and registered the chassis in `sbctl`'s
    /// database.
    pub(crate) fn wait_ready(&self, sbctl: &Ctl, timeout: Duration) -> Result<()> {
        let vsctl = self.vsctl();
        wait_until(
            &format!("{} to create {INTEGRATION_BRIDGE}", self.name),
            timeout,
            || {
                vsctl
                    .cmd()
                    .args(["br-exists", INTEGRATION_BRIDGE])
                    .succeeds()
            },
        )?;
        wait_until(
            &format!("chassis {} in the Southbound DB", self.name),
            timeout,
            || {
                let out = sbctl.run([
                    "--bare",
                    "--columns=name",
                    "find",
                    "Chassis",
                    &format!("name={}", self.name),
                ])?;
                Ok(out.trim() == self.name)
            },
        )
    }
}
