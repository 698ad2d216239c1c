//! `kovn-agent uninstall`: removes from this node everything kovn-agent put there, in an order
//! that leaves nothing half-done: the OVS ports it made (pods', spares', `ovn0`), its split
//! uplinks (the NIC back in its bridge), its provider bridges with their mappings, the pods' veths, the routes and rules it added, the
//! pinned maps and links (unpinning a TCX link detaches its program), the `ip kovn` and
//! `ip kovn_probe` nftables tables, the CNI conflist, the `kube-ovn` plugin and the CNI
//! socket.
//!
//! It refuses while an agent still answers on the CNI socket: a running agent would put back
//! what is removed. Every item is reported (removed, absent, or failed and why), so an
//! operator can see the node is clean. Left alone on purpose: the forwarding sysctls (other
//! software on the node may rely on them) and the node's Open vSwitch itself (ovs-ovn's, and
//! its `br-int` with ovn-controller's flows; the installer's node cleanup removes ovs-ovn's
//! host directories).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo};
use rtnetlink::packet_route::route::RouteAttribute;
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::local_pod::{LocalPod, VENDOR};
use crate::netlink::connect;
use crate::node_setup::NODE_PORT;
use crate::pod_network::SPARE_PREFIX;

/// What to clean, and where it lives on this node (the DaemonSet's paths by default).
#[derive(Debug, Clone, clap::Args)]
pub struct UninstallOptions {
    #[arg(long, default_value = "/sys/fs/bpf/kovn")]
    pub pin_dir: PathBuf,
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    #[arg(long, default_value = "/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,
    #[arg(long, default_value = cni::wire::DEFAULT_SOCKET)]
    pub cni_socket: PathBuf,
    /// The node's Open_vSwitch database; unreachable, its ports are skipped (and said so).
    #[arg(long, default_value = "unix:/var/run/openvswitch/db.sock")]
    pub ovs_db: String,
    /// List what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// The conflist the install-cni container writes (Kube-OVN's name).
pub const CONFLIST: &str = "01-kube-ovn.conflist";
/// The plugin binary (Kube-OVN's name).
pub const PLUGIN: &str = "kube-ovn";
/// The nftables table of natOutgoing (see `node_setup::nat_ruleset`).
pub const NFT_TABLE: &str = "kovn";

/// What happened to one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Removed,
    /// `--dry-run`: found, and would be removed.
    WouldRemove,
    Absent,
    Failed(String),
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub item: String,
    pub outcome: Outcome,
}

/// The whole report; `clean()` when nothing failed.
#[derive(Debug, Default)]
pub struct Report {
    pub steps: Vec<Step>,
}

impl Report {
    fn push(&mut self, item: impl Into<String>, outcome: Outcome) {
        self.steps.push(Step {
            item: item.into(),
            outcome,
        });
    }

    pub fn clean(&self) -> bool {
        !self
            .steps
            .iter()
            .any(|s| matches!(s.outcome, Outcome::Failed(_)))
    }

    /// One line per item, as the command prints it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for step in &self.steps {
            let outcome = match &step.outcome {
                Outcome::Removed => "removed".to_owned(),
                Outcome::WouldRemove => "would remove".to_owned(),
                Outcome::Absent => "absent".to_owned(),
                Outcome::Failed(why) => format!("FAILED: {why}"),
            };
            out.push_str(&format!("{:<60} {outcome}\n", step.item));
        }
        out
    }
}

/// Why the node was not touched at all.
#[derive(Debug, thiserror::Error)]
pub enum UninstallError {
    #[error(
        "kovn-agent is still running on this node (it answers on {0}): delete the kovn-agent DaemonSet (or stop the agent) first, or it puts back what is removed"
    )]
    AgentRunning(PathBuf),
    #[error("no netlink socket: {0}")]
    Netlink(String),
}

/// Whether `name` is one of the links kovn names (a pod's `<id>_h|_o|_p`, a spare's, `ovn0`).
pub fn is_kovn_link_name(name: &str) -> bool {
    if name == NODE_PORT {
        return true;
    }
    let Some((stem, suffix)) = name.rsplit_once('_') else {
        return false;
    };
    let stem_ok = stem.starts_with(SPARE_PREFIX)
        || (!stem.is_empty()
            && stem.len() <= 12
            && stem
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'));
    stem_ok && matches!(suffix, "h" | "o" | "p")
}

/// Runs the cleanup (or, with `dry_run`, lists it).
pub async fn run(options: &UninstallOptions) -> Result<Report, UninstallError> {
    if std::os::unix::net::UnixStream::connect(&options.cni_socket).is_ok() {
        return Err(UninstallError::AgentRunning(options.cni_socket.clone()));
    }
    let mut report = Report::default();
    let handle = connect().map_err(|e| UninstallError::Netlink(e.to_string()))?;

    // 1. Routes through ovn0: they go with it (counted before, so the report says so).
    let routes = routes_via(&handle, NODE_PORT).await;
    match routes {
        Ok(n) if n > 0 => report.push(
            format!("{n} route(s) through {NODE_PORT}"),
            if options.dry_run {
                Outcome::WouldRemove
            } else {
                Outcome::Removed
            },
        ),
        Ok(_) => report.push(format!("routes through {NODE_PORT}"), Outcome::Absent),
        Err(e) => report.push(format!("routes through {NODE_PORT}"), Outcome::Failed(e)),
    }

    // 1b. The egress rules of external gateways (on `iif ovn0`) and their tables: rules name
    // the interface, so they would outlive it.
    match crate::egress_gateway::rule_count().await {
        Ok(0) => report.push("egress rules on iif ovn0", Outcome::Absent),
        Ok(n) if options.dry_run => report.push(
            format!("{n} egress rule(s) on iif {NODE_PORT}"),
            Outcome::WouldRemove,
        ),
        Ok(n) => report.push(
            format!("{n} egress rule(s) on iif {NODE_PORT}"),
            match crate::egress_gateway::ensure(&[]).await {
                Ok(()) => Outcome::Removed,
                Err(e) => Outcome::Failed(e.to_string()),
            },
        ),
        Err(e) => report.push("egress rules on iif ovn0", Outcome::Failed(e.to_string())),
    }

    // 2. The OVS ports (so ovn-controller unbinds them before their devices go), and from
    //    their records the pods' links.
    let mut links: BTreeSet<String> = BTreeSet::new();
    match tokio::time::timeout(Duration::from_secs(5), crate::ovs::connect(&options.ovs_db)).await {
        Ok(Ok(ovs)) => {
            for (port, pod) in kovn_ovs_ports(&ovs) {
                if let Some(pod) = pod {
                    links.insert(pod.links().host_veth);
                }
                links.insert(port.clone());
                let outcome = if options.dry_run {
                    Outcome::WouldRemove
                } else {
                    match crate::ovs::remove_port(&ovs, &port).await {
                        Ok(()) => Outcome::Removed,
                        Err(e) => Outcome::Failed(e.to_string()),
                    }
                };
                report.push(format!("OVS port {port}"), outcome);
            }
            // Split uplinks: the NIC goes back into its bridge (one transaction), the pair's
            // links go below.
            for (bridge, uplink) in crate::split_uplink::split_uplinks(&ovs) {
                links.insert(uplink.ovs_port.clone());
                let outcome = if options.dry_run {
                    Outcome::WouldRemove
                } else {
                    match crate::split_uplink::swap_out(&ovs, &bridge, &uplink).await {
                        Ok(()) => Outcome::Removed,
                        Err(e) => Outcome::Failed(e.to_string()),
                    }
                };
                report.push(
                    format!(
                        "split uplink {} on {bridge} ({} back in its place)",
                        uplink.ovs_port, uplink.nic
                    ),
                    outcome,
                );
            }
            // Provider bridges (underlay, the external network) and their mappings.
            for provider in crate::ovs::provider_bridge::kovn_providers(&ovs) {
                let bridge = crate::ovs::provider_bridge::bridge_name(&provider);
                let outcome = if options.dry_run {
                    Outcome::WouldRemove
                } else {
                    match crate::ovs::provider_bridge::remove(&ovs, &provider).await {
                        Ok(()) => Outcome::Removed,
                        Err(e) => Outcome::Failed(e.to_string()),
                    }
                };
                report.push(
                    format!("OVS bridge {bridge} (provider {provider})"),
                    outcome,
                );
            }
        }
        Ok(Err(e)) => report.push(
            format!("OVS ports (database {})", options.ovs_db),
            Outcome::Failed(format!("{e}; the links are still removed by name")),
        ),
        Err(_) => report.push(
            format!("OVS ports (database {})", options.ovs_db),
            Outcome::Failed("no answer in 5 s; the links are still removed by name".into()),
        ),
    }

    // 3. The links: what the OVS records name, and every veth (or ovn0) with kovn's names,
    //    for ports whose records are gone. Deleting one end of a veth removes its peer.
    match kovn_links(&handle).await {
        Ok(found) => links.extend(found),
        Err(e) => report.push("links in this namespace", Outcome::Failed(e)),
    }
    for name in &links {
        let index = crate::netlink::index_of(&handle, name).await.ok().flatten();
        let outcome = match (index, options.dry_run) {
            (None, _) => continue, // a veth's peer, gone with it, or never there
            (Some(_), true) => Outcome::WouldRemove,
            (Some(index), false) => match handle.link().del(index).execute().await {
                Ok(()) => Outcome::Removed,
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
                    Outcome::Removed
                }
                Err(e) => Outcome::Failed(e.to_string()),
            },
        };
        report.push(format!("link {name}"), outcome);
    }

    // 4. Pinned maps and links: unpinning a TCX link detaches its program.
    let outcome = if !options.pin_dir.exists() {
        Outcome::Absent
    } else if options.dry_run {
        Outcome::WouldRemove
    } else {
        match std::fs::remove_dir_all(&options.pin_dir) {
            Ok(()) => Outcome::Removed,
            Err(e) => Outcome::Failed(e.to_string()),
        }
    };
    report.push(
        format!("pinned maps and links {}", options.pin_dir.display()),
        outcome,
    );

    // 5. The natOutgoing table, and the probe proxy's table with its rule and route.
    for table in [NFT_TABLE, crate::probe_proxy::NFT_TABLE] {
        report.push(
            format!("nftables table ip {table}"),
            nft_table(table, options.dry_run),
        );
    }
    let item = format!(
        "probe proxy rule fwmark 0x{:x} lookup {}",
        crate::probe_proxy::MARK,
        crate::probe_proxy::ROUTE_TABLE
    );
    match crate::probe_proxy::routing_present().await {
        Ok(false) => report.push(item, Outcome::Absent),
        Ok(true) if options.dry_run => report.push(item, Outcome::WouldRemove),
        Ok(true) => report.push(
            item,
            match crate::probe_proxy::remove_routing().await {
                Ok(()) => Outcome::Removed,
                Err(e) => Outcome::Failed(e),
            },
        ),
        Err(e) => report.push(item, Outcome::Failed(e)),
    }

    // 6. Files: the conflist (a stale one blocks every new pod on the node), the plugin, the
    //    socket.
    for path in [
        options.cni_conf_dir.join(CONFLIST),
        options.cni_bin_dir.join(PLUGIN),
        options.cni_socket.clone(),
    ] {
        report.push(
            path.display().to_string(),
            remove_file(&path, options.dry_run),
        );
    }
    Ok(report)
}

/// Every OVS interface kovn made (`vendor=kovn`), with its pod record where it has one, and
/// the Kube-OVN pod ports kovn adopted (their veths have kovn's names and are removed too).
fn kovn_ovs_ports(ovs: &ovsdb::Client) -> Vec<(String, Option<LocalPod>)> {
    let mut ports = own_ovs_ports(ovs);
    ports.extend(
        crate::ovs::pod_port::kube_ovn_ports(ovs)
            .into_keys()
            .map(|port| (port, None)),
    );
    ports
}

fn own_ovs_ports(ovs: &ovsdb::Client) -> Vec<(String, Option<LocalPod>)> {
    use ovsdb::Model;
    use ovsdb::models::open_vswitch::Interface;
    ovs.read(|c| {
        c.table(Interface::TABLE)
            .map(|t| {
                t.typed::<Interface>()
                    .into_iter()
                    .filter(|i| i.external_ids.get(VENDOR.0).map(String::as_str) == Some(VENDOR.1))
                    .map(|i| {
                        let pod = LocalPod::from_external_ids(&i.external_ids);
                        (i.name, pod)
                    })
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// Links of this namespace named as kovn names them: veths, and ovn0 of any kind.
async fn kovn_links(handle: &Handle) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut links = handle.link().get().execute();
    while let Some(link) = links.try_next().await.map_err(|e| e.to_string())? {
        let mut name = None;
        let mut veth = false;
        for attribute in &link.attributes {
            match attribute {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::LinkInfo(info) => {
                    veth |= info
                        .iter()
                        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)));
                }
                _ => {}
            }
        }
        if let Some(name) = name
            && is_kovn_link_name(&name)
            && (veth || name == NODE_PORT)
        {
            out.push(name);
        }
    }
    Ok(out)
}

/// How many routes (IPv4 and IPv6) leave through `interface`.
async fn routes_via(handle: &Handle, interface: &str) -> Result<usize, String> {
    let Some(index) = crate::netlink::index_of(handle, interface)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(0);
    };
    let mut count = 0;
    for family in [
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    ] {
        let message = match family {
            IpAddr::V4(_) => RouteMessageBuilder::<Ipv4Addr>::new().build(),
            IpAddr::V6(_) => RouteMessageBuilder::<Ipv6Addr>::new().build(),
        };
        let mut routes = handle.route().get(message).execute();
        while let Some(route) = routes.try_next().await.map_err(|e| e.to_string())? {
            if route
                .attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == index))
                && route.header.table == 254
            {
                count += 1;
            }
        }
    }
    Ok(count)
}

fn nft_table(table: &str, dry_run: bool) -> Outcome {
    let nft = |args: &[&str]| std::process::Command::new("nft").args(args).output();
    match nft(&["list", "table", "ip", table]) {
        Err(e) => Outcome::Failed(format!("running nft: {e}")),
        Ok(out) if !out.status.success() => Outcome::Absent,
        Ok(_) if dry_run => Outcome::WouldRemove,
        Ok(_) => match nft(&["delete", "table", "ip", table]) {
            Ok(out) if out.status.success() => Outcome::Removed,
            Ok(out) => Outcome::Failed(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
            Err(e) => Outcome::Failed(format!("running nft: {e}")),
        },
    }
}

fn remove_file(path: &Path, dry_run: bool) -> Outcome {
    match std::fs::symlink_metadata(path) {
        Err(_) => Outcome::Absent,
        Ok(_) if dry_run => Outcome::WouldRemove,
        Ok(_) => match std::fs::remove_file(path) {
            Ok(()) => Outcome::Removed,
            Err(e) => Outcome::Failed(e.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kovn_link_names_are_recognised_and_others_are_not() {
        for name in [
            "ovn0",
            "0123456789ab_h",
            "0123456789ab_o",
            "0123456789ab_p",
            "kovn~0001f_o",
            "kovn~0001f_p",
            "abc_h",
        ] {
            assert!(is_kovn_link_name(name), "{name}");
        }
        for name in [
            "eth0",
            "veth12ab",
            "0123456789abc_h", // longer than a 12-character container ID
            "0123456789ab_x",
            "_h",
            "br-int",
            "genev_sys_6081",
        ] {
            assert!(!is_kovn_link_name(name), "{name}");
        }
    }
}
