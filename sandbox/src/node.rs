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
    pub db: DbServer,
}

impl Node {
    /// Starts the node's daemons. `eth0` must already be in `netns`, linked to the fabric.
    pub(crate) fn start(
        supervisor: &mut Supervisor,
        name: &str,
        netns: &str,
        dir: &Path,
        address: &str,
        prefix_len: u8,
        sb_remote: &str,
    ) -> Result<Node> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
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

        vsctl.run([
            "add-br",
            PHYSICAL_BRIDGE,
            "--",
            "set",
            "Bridge",
            PHYSICAL_BRIDGE,
            "datapath_type=netdev",
            "--",
            "add-port",
            PHYSICAL_BRIDGE,
            UNDERLAY_IF,
        ])?;
        node.ip(&[
            "addr",
            "add",
            &format!("{address}/{prefix_len}"),
            "dev",
            PHYSICAL_BRIDGE,
        ])?;
        node.ip(&["link", "set", PHYSICAL_BRIDGE, "up"])?;

        let controller_log = dir.join("ovn-controller.log");
        let controller = Cmd::new("ovn-controller")
            .arg(format!("unix:{}", node.db.socket.display()))
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
            .netns(netns);
        supervisor.spawn(
            &format!("{name}-ovn-controller"),
            &controller,
            dir,
            Some(controller_log),
        )?;
        Ok(node)
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
