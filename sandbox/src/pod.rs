//! Fixture pods: a network namespace wired the way kovn wires a pod (DESIGN.md, "The
//! datapath"), with its Logical_Switch_Port in the Northbound DB. The agent + CNI issue replaces
//! this with the product path; until then the split-port hand-off is a kernel `mirred`
//! redirect instead of kovn's eBPF programs.
//!
//! ```text
//! pod netns:  eth0 ──veth── <pod>_h          (node netns; ingress: redirect to <pod>_p)
//! OVS:        <pod>_o ──veth── <pod>_p       (<pod>_o is the br-int port; <pod>_p ingress:
//!                                             redirect to <pod>_h, i.e. into the pod)
//! ```

use std::net::Ipv4Addr;

use crate::cmd::Cmd;
use crate::error::{Result, SandboxError};
use crate::node::{INTEGRATION_BRIDGE, Node};

/// The Kubernetes namespace fixture pods pretend to live in.
pub const POD_NAMESPACE: &str = "default";
/// Pod MTU: room for the Geneve header on a 1500-byte underlay (Kube-OVN uses MTU − 100).
pub const POD_MTU: u32 = 1400;
/// Longest pod name: interface names `<pod>_h` must fit in 15 bytes.
pub const MAX_POD_NAME: usize = 12;

/// A fixture pod.
#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    /// Name of the node it runs on.
    pub node: String,
    /// The node's namespace, where the host-side interfaces live.
    pub node_netns: String,
    /// The pod's own namespace.
    pub netns: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    /// Logical_Switch_Port name, `<pod>.<namespace>` as Kube-OVN names it.
    pub lsp: String,
    /// Host end of the pod's veth (node netns).
    pub host_veth: String,
    /// The OVS port (a br-int port, node netns).
    pub ovs_port: String,
    /// The peer of the OVS port, where OVS's deliveries to the pod arrive.
    pub ovs_peer: String,
}

/// What the fixture needs to know to wire a pod.
#[derive(Debug, Clone)]
pub(crate) struct PodSpec {
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub logical_switch: String,
    /// Install `tc mirred` redirects for the split-port hand-off (else the caller attaches
    /// the datapath).
    pub kernel_handoff: bool,
}

/// A MAC derived from the IPv4 address (locally administered, as ovn-kubernetes does), so a
/// pod's MAC is stable and unique within the sandbox.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("0a:58:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

impl Pod {
    /// Creates the namespace, the interfaces and the NB port, then waits until OVN reports the
    /// port up and every chassis has installed the change.
    pub(crate) fn create(spec: PodSpec, node: &Node, nbctl: &crate::ovs::Ctl) -> Result<Pod> {
        validate_name(&spec.name)?;
        let pod = Pod {
            lsp: format!("{}.{POD_NAMESPACE}", spec.name),
            host_veth: format!("{}_h", spec.name),
            ovs_port: format!("{}_o", spec.name),
            ovs_peer: format!("{}_p", spec.name),
            mac: mac_for(spec.ip),
            node: node.name.clone(),
            node_netns: node.netns.clone(),
            netns: spec.netns,
            ip: spec.ip,
            prefix_len: spec.prefix_len,
            gateway: spec.gateway,
            name: spec.name,
        };
        let addresses = format!("{} {}", pod.mac, pod.ip);
        nbctl.run([
            "lsp-add",
            &spec.logical_switch,
            &pod.lsp,
            "--",
            "lsp-set-addresses",
            &pod.lsp,
            &addresses,
            "--",
            "lsp-set-port-security",
            &pod.lsp,
            &addresses,
            "--",
            "set",
            "Logical_Switch_Port",
            &pod.lsp,
            &format!("external_ids:pod={}/{}", POD_NAMESPACE, pod.name),
        ])?;
        crate::netns::add(&pod.netns)?;
        pod.wire(node, spec.kernel_handoff)?;
        nbctl.run(["wait-until", "Logical_Switch_Port", &pod.lsp, "up=true"])?;
        nbctl.run(["--wait=hv", "sync"])?;
        Ok(pod)
    }

    fn wire(&self, node: &Node, kernel_handoff: bool) -> Result<()> {
        let mtu = POD_MTU.to_string();
        // The pod's veth: eth0 inside the pod, <pod>_h on the node.
        node.ip_line(&format!(
            "link add {} mtu {mtu} type veth peer name eth0 mtu {mtu} netns {}",
            self.host_veth, self.netns
        ))?;
        // The OVS port pair.
        node.ip_line(&format!(
            "link add {} mtu {mtu} type veth peer name {} mtu {mtu}",
            self.ovs_port, self.ovs_peer
        ))?;
        let pod_ip = |line: String| {
            Cmd::new("ip")
                .arg("-n")
                .arg(&self.netns)
                .args(line.split_whitespace())
                .run()
        };
        pod_ip(format!("link set eth0 address {}", self.mac))?;
        pod_ip(format!("addr add {}/{} dev eth0", self.ip, self.prefix_len))?;
        pod_ip("link set eth0 up".to_owned())?;
        pod_ip(format!("route add default via {} dev eth0", self.gateway))?;
        for link in [&self.host_veth, &self.ovs_port, &self.ovs_peer] {
            node.ip_line(&format!("link set {link} up"))?;
        }
        // The kernel must finish checksums and segment what is handed to OVS: OVS 3.1's
        // userspace datapath cannot encapsulate partial checksums (ENVIRONMENT.md). The pod
        // keeps its offloads for the fast path.
        node.cmd("ethtool")
            .args(format!("-K {} tx off tso off gso off", self.ovs_peer).split_whitespace())
            .run()?;
        // Split-port hand-off in both directions, unless kovn's datapath does it.
        let pairs = if kernel_handoff {
            vec![
                (&self.host_veth, &self.ovs_peer),
                (&self.ovs_peer, &self.host_veth),
            ]
        } else {
            Vec::new()
        };
        for (from, to) in pairs {
            let tc = |line: String| node.cmd("tc").args(line.split_whitespace()).run();
            tc(format!("qdisc add dev {from} clsact"))?;
            tc(format!(
                "filter add dev {from} ingress protocol all u32 match u32 0 0 \
                 action mirred egress redirect dev {to}"
            ))?;
        }
        node.vsctl().run([
            "add-port",
            INTEGRATION_BRIDGE,
            &self.ovs_port,
            "--",
            "set",
            "Interface",
            &self.ovs_port,
            &format!("external_ids:iface-id={}", self.lsp),
        ])?;
        Ok(())
    }

    /// A command to run inside the pod.
    pub fn cmd(&self, program: &str) -> Cmd {
        Cmd::new(program).netns(&self.netns)
    }
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_POD_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(SandboxError::Invalid(format!(
            "fixture pod name {name:?}: use 1 to {MAX_POD_NAME} characters of [a-z0-9-]"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_derived_from_ip() {
        assert_eq!(mac_for(Ipv4Addr::new(10, 16, 0, 2)), "0a:58:0a:10:00:02");
    }

    #[test]
    fn names_that_do_not_fit_an_interface_are_rejected() {
        assert!(validate_name("p0").is_ok());
        assert!(validate_name("abcdefghijkl").is_ok());
        assert!(validate_name("abcdefghijklm").is_err());
        assert!(validate_name("Pod").is_err());
        assert!(validate_name("").is_err());
    }
}
