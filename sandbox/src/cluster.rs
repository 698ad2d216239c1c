//! The sandbox: OVN central and N nodes in network namespaces on a shared fabric, the default
//! logical topology, fixture pods, and teardown that leaves nothing behind.
//!
//! ```text
//!  ks<id>-central  (NB, SB, northd)        ks<id>-n0 … ks<id>-n<N-1>  (OVS, ovn-controller)
//!        eth0 172.18.0.2                        eth0 ∈ br-phy, br-phy 172.18.0.1x
//!          │                                      │
//!  ks<id>-fabric:  f-central ─┬─ br0 ─┬─ f-n0 … f-n<N-1>   (a Linux bridge: the "switch")
//! ```

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::central::Central;
use crate::cmd::Cmd;
use crate::error::{Result, SandboxError, io_error};
use crate::netns;
use crate::node::{Node, NodeDaemons, UNDERLAY_IF};
use crate::pod::{Pod, PodSpec};
use crate::registry::{self, Registration};
use crate::supervisor::Supervisor;

/// The fabric's subnet (inside the sandbox's own namespaces only).
const FABRIC_PREFIX: &str = "172.18.0";
const FABRIC_PREFIX_LEN: u8 = 24;
const FABRIC_BRIDGE: &str = "br0";

/// The gateway nodes' NIC on the external network ([`Sandbox::add_external_network`]).
pub const EXTERNAL_NIC: &str = "eth1";
/// The outside world's router on the external network 192.168.200.0/24.
pub const EXTERNAL_GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 200, 254);

/// What [`Sandbox::add_external_network`] made.
#[derive(Debug, Clone)]
pub struct ExternalNetwork {
    /// The namespace of its switch (bridge `br0`: capture there to see what gateways send).
    pub switch: String,
    /// The router's namespace (its NIC is `eth0`).
    pub router: String,
    /// The router's address on the external network.
    pub address: Ipv4Addr,
    /// An address beyond it (on the router's `lo`): the internet.
    pub internet: Ipv4Addr,
}

/// A host outside the cluster gets `address` on its NIC and `internet` on its `lo`.
fn address_outside_host(ns: &str, address: &str, internet: Ipv4Addr) -> Result<()> {
    for args in [
        ["addr", "add", address, "dev", UNDERLAY_IF],
        ["addr", "add", &format!("{internet}/32"), "dev", "lo"],
    ] {
        Cmd::new("ip").args(["-n", ns]).args(args).run()?;
    }
    Cmd::new("ip")
        .args(["-n", ns, "link", "set", "lo", "up"])
        .run()?;
    // A physical network delivers frames with complete checksums; a veth passes the sender's
    // partial ones on, which OVS 3.1's userspace datapath drops when it encapsulates them
    // (`netdev_push_header_drops`: traffic a gateway node tunnels on after NAT). The outside
    // host computes its checksums itself, as a NIC would.
    Cmd::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "ethtool",
            "-K",
            UNDERLAY_IF,
            "tx",
            "off",
        ])
        .run()?;
    Ok(())
}

/// Kube-OVN's default names and ranges.
pub const DEFAULT_SUBNET: &str = api::names::DEFAULT_SUBNET;
pub const DEFAULT_SUBNET_CIDR: &str = "10.16.0.0/16";
pub const DEFAULT_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 16, 0, 1);
pub const CLUSTER_ROUTER: &str = api::names::DEFAULT_CLUSTER_ROUTER;

/// How long a node gets to come up (ovn-controller connects through the userspace datapath).
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Who moves packets between a fixture pod's veth and its OVS port pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Handoff {
    /// Kernel `tc mirred` redirects: pods work without kovn's datapath.
    #[default]
    KernelRedirect,
    /// Nothing: the caller attaches kovn's datapath to the pod's interfaces.
    Datapath,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub nodes: usize,
    pub handoff: Handoff,
    /// Who runs each node's OVS and ovn-controller.
    pub node_daemons: NodeDaemons,
    /// The name of node i's uplink bridge (its tunnel interface), where given; the others
    /// are `br-phy`. Nodes of one cluster may name it differently, as real NICs are.
    pub uplinks: Vec<String>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            nodes: 2,
            handoff: Handoff::KernelRedirect,
            node_daemons: NodeDaemons::Host,
            uplinks: Vec::new(),
        }
    }
}

/// A running sandbox. Dropping it tears it down; if the thread is panicking (a failed test),
/// it prints every daemon's last log lines first and keeps the directory.
#[derive(Debug)]
pub struct Sandbox {
    registration: Registration,
    supervisor: Supervisor,
    namespaces: Vec<String>,
    central: Option<Central>,
    nodes: Vec<Node>,
    pods: Vec<Pod>,
    subnets: Vec<Subnet>,
    handoff: Handoff,
    torn_down: bool,
}

/// A subnet of the sandbox: a logical switch behind the cluster router.
#[derive(Debug, Clone)]
struct Subnet {
    name: String,
    network: Ipv4Addr,
    prefix_len: u8,
    gateway: Ipv4Addr,
    next_host: u32,
}

/// What teardown removed, so a test can check nothing is left.
#[derive(Debug, Clone, Default)]
pub struct TeardownReport {
    pub namespaces: Vec<String>,
    pub pids: Vec<u32>,
    pub bpffs_dir: PathBuf,
    pub dir: PathBuf,
}

impl Sandbox {
    /// Cleans up stale sandboxes of dead runs, then starts a new one and waits until every
    /// node's chassis is registered.
    pub fn start(config: SandboxConfig) -> Result<Sandbox> {
        Sandbox::start_with(config, true)
    }

    /// Like [`Sandbox::start`], but leaves the Northbound database empty: no cluster router,
    /// no default subnet. For tests where kovn-controller builds the topology.
    pub fn start_empty(config: SandboxConfig) -> Result<Sandbox> {
        Sandbox::start_with(config, false)
    }

    fn start_with(config: SandboxConfig, default_topology: bool) -> Result<Sandbox> {
        if config.nodes == 0 || config.nodes > 200 {
            return Err(SandboxError::Invalid(format!(
                "a sandbox has 1 to 200 nodes, not {}",
                config.nodes
            )));
        }
        let stale = registry::cleanup_stale()?;
        if !stale.is_empty() {
            eprintln!("sandbox: cleaned up stale sandboxes {stale:?}");
        }
        let mut sandbox = Sandbox {
            registration: registry::register()?,
            supervisor: Supervisor::default(),
            namespaces: Vec::new(),
            central: None,
            nodes: Vec::new(),
            pods: Vec::new(),
            subnets: Vec::new(),
            handoff: config.handoff,
            torn_down: false,
        };
        if let Err(e) = sandbox.bring_up(&config, default_topology) {
            eprintln!(
                "\n==== sandbox {} failed to start: {e}; daemon logs (kept in {}) ====\n{}",
                sandbox.id(),
                sandbox.dir().display(),
                sandbox.log_tails(30)
            );
            if let Err(teardown) = sandbox.teardown_inner(true) {
                eprintln!("sandbox {}: teardown incomplete: {teardown}", sandbox.id());
            }
            return Err(e);
        }
        Ok(sandbox)
    }

    fn bring_up(&mut self, config: &SandboxConfig, default_topology: bool) -> Result<()> {
        let fabric = self.add_namespace("fabric")?;
        Cmd::new("ip")
            .args([
                "-n",
                &fabric,
                "link",
                "add",
                FABRIC_BRIDGE,
                "type",
                "bridge",
            ])
            .run()?;
        Cmd::new("ip")
            .args(["-n", &fabric, "link", "set", FABRIC_BRIDGE, "up"])
            .run()?;

        let central_ns = self.add_namespace("central")?;
        self.plug_into_fabric(&fabric, &central_ns, "central")?;
        let central_address = format!("{FABRIC_PREFIX}.2");
        Cmd::new("ip")
            .args([
                "-n",
                &central_ns,
                "addr",
                "add",
                &format!("{central_address}/{FABRIC_PREFIX_LEN}"),
                "dev",
                UNDERLAY_IF,
            ])
            .run()?;
        let dir = self.dir().join("central");
        let central = Central::start(&mut self.supervisor, &central_ns, &dir, &central_address)?;
        self.central = Some(central.clone());

        for i in 0..config.nodes {
            let name = format!("n{i}");
            let ns = self.add_namespace(&name)?;
            self.plug_into_fabric(&fabric, &ns, &name)?;
            let address = format!("{FABRIC_PREFIX}.{}", 10 + i);
            let dir = self.dir().join(&name);
            let node = Node::start(
                &mut self.supervisor,
                &config.node_daemons,
                &name,
                &ns,
                &dir,
                &address,
                FABRIC_PREFIX_LEN,
                &central.sb_remote(),
                config
                    .uplinks
                    .get(i)
                    .map_or(crate::node::PHYSICAL_BRIDGE, String::as_str),
            )?;
            self.nodes.push(node);
        }
        for node in &self.nodes {
            node.wait_ready(&central.sbctl(), NODE_READY_TIMEOUT)?;
        }
        self.resolve_underlay_neighbours()?;
        if default_topology {
            self.create_default_topology()?;
        }
        self.supervisor.check()
    }

    /// The userspace datapath drops the packet that makes it ARP for a tunnel endpoint it has
    /// not resolved yet, so the first packet between two pods on different nodes would be lost.
    /// OVS fills its tunnel neighbour cache by snooping ARP on `br-phy`; one ping between every
    /// pair of nodes through `br-phy` resolves them all before any test traffic.
    fn resolve_underlay_neighbours(&self) -> Result<()> {
        for from in &self.nodes {
            for to in self.nodes.iter().filter(|n| n.name != from.name) {
                from.cmd("ping")
                    .args(["-n", "-c", "1", "-W", "2", &to.address])
                    .run()?;
            }
        }
        Ok(())
    }

    /// The cluster router and the default subnet, named as Kube-OVN names them.
    fn create_default_topology(&mut self) -> Result<()> {
        self.central().nbctl().run(["lr-add", CLUSTER_ROUTER])?;
        self.add_subnet(DEFAULT_SUBNET, Ipv4Addr::new(10, 16, 0, 0), 16)
    }

    /// Adds a subnet: a logical switch attached to the cluster router, whose router port
    /// (the pods' gateway) is the first address.
    pub fn add_subnet(&mut self, name: &str, network: Ipv4Addr, prefix_len: u8) -> Result<()> {
        if self.subnets.iter().any(|s| s.name == name) {
            return Err(SandboxError::Invalid(format!(
                "subnet {name} exists already"
            )));
        }
        let gateway = Ipv4Addr::from(u32::from(network) + 1);
        let router_port = format!("{CLUSTER_ROUTER}-{name}");
        let switch_port = format!("{name}-{CLUSTER_ROUTER}");
        self.central().nbctl().run([
            "ls-add",
            name,
            "--",
            "set",
            "Logical_Switch",
            name,
            &format!("other_config:subnet={network}/{prefix_len}"),
            "--",
            "lrp-add",
            CLUSTER_ROUTER,
            &router_port,
            &crate::pod::mac_for(gateway),
            &format!("{gateway}/{prefix_len}"),
            "--",
            "lsp-add",
            name,
            &switch_port,
            "--",
            "lsp-set-type",
            &switch_port,
            "router",
            "--",
            "lsp-set-addresses",
            &switch_port,
            "router",
            "--",
            "lsp-set-options",
            &switch_port,
            &format!("router-port={router_port}"),
        ])?;
        self.subnets.push(Subnet {
            name: name.to_owned(),
            network,
            prefix_len,
            gateway,
            next_host: 2,
        });
        Ok(())
    }

    /// A host outside the cluster (the internet, or an appliance such as an egress gateway)
    /// in its own namespace, on the fabric at `172.18.0.<host>` beside the nodes (one layer-2
    /// domain), with `internet` as a further address of its own (on `lo`). It routes nothing
    /// and knows no route to the pods: a test adds what its case needs. Returns the
    /// namespace and the fabric address.
    pub fn add_external_host(
        &mut self,
        label: &str,
        host: u8,
        internet: Ipv4Addr,
    ) -> Result<(String, Ipv4Addr)> {
        if (2..20).contains(&host) {
            return Err(SandboxError::Invalid(format!(
                "172.18.0.{host} is the central's or a node's; external hosts take 20 and above"
            )));
        }
        let ns = self.add_namespace(label)?;
        self.plug_into_fabric(&self.fabric_netns(), &ns, label)?;
        let address: Ipv4Addr = format!("{FABRIC_PREFIX}.{host}")
            .parse()
            .map_err(|e| SandboxError::Invalid(format!("external host address: {e}")))?;
        address_outside_host(&ns, &format!("{address}/{FABRIC_PREFIX_LEN}"), internet)?;
        Ok((ns, address))
    }

    /// An external network beside the fabric, as a data centre's provider network: its own
    /// layer-2 switch (a Linux bridge in namespace `<prefix>ext`), a second NIC
    /// ([`EXTERNAL_NIC`], no address) on each of `gateway_nodes` plugged into it, and a router
    /// of the outside world on it at [`EXTERNAL_GATEWAY`]/24 (its `address`) with `internet`
    /// as a further address of its own. Nothing else reaches it: a node gets there only
    /// through a provider bridge on that NIC. The router knows no route to the cluster; a
    /// test adds what its case needs.
    pub fn add_external_network(
        &mut self,
        gateway_nodes: &[usize],
        internet: Ipv4Addr,
    ) -> Result<ExternalNetwork> {
        let switch = self.add_namespace("ext")?;
        Cmd::new("ip")
            .args([
                "-n",
                &switch,
                "link",
                "add",
                FABRIC_BRIDGE,
                "type",
                "bridge",
            ])
            .run()?;
        Cmd::new("ip")
            .args(["-n", &switch, "link", "set", FABRIC_BRIDGE, "up"])
            .run()?;
        let plug = |ns: &str, label: &str, inside: &str| -> Result<()> {
            let end = format!("x-{label}");
            Cmd::new("ip")
                .args([
                    "-n", &switch, "link", "add", &end, "type", "veth", "peer", "name", inside,
                    "netns", ns,
                ])
                .run()?;
            Cmd::new("ip")
                .args([
                    "-n",
                    &switch,
                    "link",
                    "set",
                    &end,
                    "master",
                    FABRIC_BRIDGE,
                    "up",
                ])
                .run()?;
            Cmd::new("ip")
                .args(["-n", ns, "link", "set", inside, "up"])
                .run()?;
            Ok(())
        };
        for &i in gateway_nodes {
            let node = self.nodes[i].clone();
            plug(&node.netns, &node.name, EXTERNAL_NIC)?;
        }
        let router = self.add_namespace("extgw")?;
        plug(&router, "router", UNDERLAY_IF)?;
        address_outside_host(&router, &format!("{EXTERNAL_GATEWAY}/24"), internet)?;
        Ok(ExternalNetwork {
            switch,
            router,
            address: EXTERNAL_GATEWAY,
            internet,
        })
    }

    fn add_namespace(&mut self, suffix: &str) -> Result<String> {
        let name = format!("{}{suffix}", registry::netns_prefix(self.id()));
        netns::add(&name)?;
        self.namespaces.push(name.clone());
        Ok(name)
    }

    /// A veth from `ns` (`eth0`) to the fabric bridge (`f-<label>`).
    fn plug_into_fabric(&self, fabric: &str, ns: &str, label: &str) -> Result<()> {
        let fabric_end = format!("f-{label}");
        Cmd::new("ip")
            .args([
                "-n",
                fabric,
                "link",
                "add",
                &fabric_end,
                "type",
                "veth",
                "peer",
                "name",
                UNDERLAY_IF,
                "netns",
                ns,
            ])
            .run()?;
        Cmd::new("ip")
            .args([
                "-n",
                fabric,
                "link",
                "set",
                &fabric_end,
                "master",
                FABRIC_BRIDGE,
                "up",
            ])
            .run()?;
        Cmd::new("ip")
            .args(["-n", ns, "link", "set", UNDERLAY_IF, "up"])
            .run()?;
        Ok(())
    }

    /// Adds a fixture pod on node `node` with the next free address of the default subnet.
    pub fn add_pod(&mut self, node: usize, name: &str) -> Result<Pod> {
        self.add_pod_in(node, name, DEFAULT_SUBNET)
    }

    /// Adds a fixture pod on node `node` in subnet `subnet`.
    pub fn add_pod_in(&mut self, node: usize, name: &str, subnet: &str) -> Result<Pod> {
        let node = self
            .nodes
            .get(node)
            .ok_or_else(|| SandboxError::Invalid(format!("no node {node} in this sandbox")))?
            .clone();
        if self.pods.iter().any(|p| p.name == name) {
            return Err(SandboxError::Invalid(format!("pod {name} exists already")));
        }
        let subnet_index = self
            .subnets
            .iter()
            .position(|s| s.name == subnet)
            .ok_or_else(|| SandboxError::Invalid(format!("no subnet {subnet}")))?;
        let sub = self.subnets[subnet_index].clone();
        let ip = Ipv4Addr::from(u32::from(sub.network) + sub.next_host);
        let netns = format!("{}pod-{name}", registry::netns_prefix(self.id()));
        // Record the namespace before creating it, so a half-made pod is still torn down.
        self.namespaces.push(netns.clone());
        let pod = Pod::create(
            PodSpec {
                name: name.to_owned(),
                netns,
                ip,
                prefix_len: sub.prefix_len,
                gateway: sub.gateway,
                logical_switch: sub.name.clone(),
                kernel_handoff: self.handoff == Handoff::KernelRedirect,
            },
            &node,
            &self.central().nbctl(),
        )?;
        self.subnets[subnet_index].next_host += 1;
        self.pods.push(pod.clone());
        Ok(pod)
    }

    pub fn id(&self) -> &str {
        &self.registration.id
    }

    /// The sandbox directory (per-component run, db and log files).
    pub fn dir(&self) -> &Path {
        &self.registration.dir
    }

    /// Where this sandbox's agents pin BPF objects (removed at teardown).
    pub fn bpffs_dir(&self) -> PathBuf {
        Path::new(registry::BPFFS_ROOT).join(self.id())
    }

    pub fn central(&self) -> &Central {
        // Set in bring_up before anything can observe the sandbox.
        self.central
            .as_ref()
            .unwrap_or_else(|| unreachable!("central is started before the sandbox is returned"))
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn node(&self, index: usize) -> &Node {
        &self.nodes[index]
    }

    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// The fabric namespace (where tests can watch underlay traffic).
    pub fn fabric_netns(&self) -> String {
        format!("{}fabric", registry::netns_prefix(self.id()))
    }

    /// Cuts node `index` off the fabric (its switch port down), as a node that died looks to
    /// the rest of the cluster: no tunnel, no underlay. [`Self::reconnect_node`] undoes it.
    pub fn disconnect_node(&self, index: usize) -> Result<()> {
        self.set_node_port(index, "down")
    }

    pub fn reconnect_node(&self, index: usize) -> Result<()> {
        self.set_node_port(index, "up")
    }

    fn set_node_port(&self, index: usize, state: &str) -> Result<()> {
        let port = format!("f-{}", self.nodes[index].name);
        Cmd::new("ip")
            .args(["-n", &self.fabric_netns(), "link", "set", &port, state])
            .run()?;
        Ok(())
    }

    /// The fabric bridge's interface name inside [`Self::fabric_netns`].
    pub fn fabric_bridge(&self) -> &'static str {
        FABRIC_BRIDGE
    }

    /// Every namespace this sandbox created.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// Pids of the supervised daemons.
    pub fn daemon_pids(&self) -> Vec<u32> {
        self.supervisor.daemons().iter().map(|d| d.pid()).collect()
    }

    /// Restarts node `node`'s ovs-vswitchd (SIGKILL when `crash`) and waits until it serves
    /// its control socket again.
    pub fn restart_vswitchd(&mut self, node: usize, crash: bool) -> Result<()> {
        let node = self.nodes[node].clone();
        if !self
            .supervisor
            .daemons()
            .iter()
            .any(|d| d.name == format!("{}-ovs-vswitchd", node.name))
        {
            return Err(SandboxError::Invalid(format!(
                "{}'s ovs-vswitchd runs in a launched ovs-ovn: restart that instead",
                node.name
            )));
        }
        let ctl = node.dir.join("ovs-vswitchd.ctl");
        let _ = std::fs::remove_file(&ctl);
        self.supervisor
            .restart(&format!("{}-ovs-vswitchd", node.name), crash)?;
        crate::ovs::wait_for_path(&ctl, Duration::from_secs(10))
    }

    /// An error if any daemon has died.
    pub fn check_daemons(&mut self) -> Result<()> {
        self.supervisor.check()
    }

    /// Last log lines of every daemon.
    pub fn log_tails(&self, lines: usize) -> String {
        self.supervisor.log_tails(lines)
    }

    /// Stops everything and removes namespaces, pins and (unless `keep_dir`) the directory.
    fn teardown_inner(&mut self, keep_dir: bool) -> Result<TeardownReport> {
        self.torn_down = true;
        let report = TeardownReport {
            namespaces: self.namespaces.clone(),
            pids: self.daemon_pids(),
            bpffs_dir: self.bpffs_dir(),
            dir: self.dir().to_owned(),
        };
        self.supervisor.stop_all(Duration::from_secs(3));
        let mut first_error = None;
        // Pods first, then nodes, central and the fabric last.
        for ns in self.namespaces.iter().rev() {
            if !Path::new(netns::NETNS_DIR).join(ns).exists() {
                continue;
            }
            if let Err(e) = netns::delete(ns) {
                first_error.get_or_insert(e);
            }
        }
        let pins = self.bpffs_dir();
        if pins.exists()
            && let Err(e) = std::fs::remove_dir_all(&pins).map_err(io_error(&pins))
        {
            first_error.get_or_insert(e);
        }
        registry::release(&self.registration, keep_dir);
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Tears the sandbox down now and reports what it removed.
    pub fn teardown(mut self) -> Result<TeardownReport> {
        self.teardown_inner(false)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        let failing = std::thread::panicking();
        if failing {
            eprintln!(
                "\n==== sandbox {} failed; daemon logs (kept in {}) ====\n{}",
                self.id(),
                self.dir().display(),
                self.log_tails(30)
            );
        }
        if let Err(e) = self.teardown_inner(failing) {
            eprintln!("sandbox {}: teardown incomplete: {e}", self.id());
        }
    }
}
