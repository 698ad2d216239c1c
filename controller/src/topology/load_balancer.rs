//! Services in OVN, as Kube-OVN lays them out: per VPC one load balancer per protocol, and a
//! `-session` one per protocol for sessionAffinity ClientIP, attached to the VPC's switches
//! (not `join`). A VIP `clusterIP:port` maps to its ready endpoints; a VIP without endpoints is
//! removed. These serve the VIPs whenever the node's eBPF balancer does not (agent stopped,
//! datapath not loaded, SCTP).

use std::collections::BTreeMap;

use datapath_common::L4Proto;
use ovsdb::models::ovn_northbound::{LoadBalancer, LoadBalancerProtocol, LogicalSwitch};
use ovsdb::{Atom, Cache, Condition, Transaction};

use super::{VENDOR, find};

/// Kube-OVN's session affinity timeout on the `-session` load balancers (the Service default).
pub const AFFINITY_TIMEOUT_S: u32 = 10_800;

/// Which of a VPC's load balancers a VIP lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LbKind {
    /// `tcp`, `udp` or `sctp`.
    pub protocol: &'static str,
    pub session: bool,
}

impl LbKind {
    pub const ALL: [LbKind; 6] = [
        LbKind::new(L4Proto::Tcp.as_str(), false),
        LbKind::new(L4Proto::Udp.as_str(), false),
        LbKind::new(L4Proto::Sctp.as_str(), false),
        LbKind::new(L4Proto::Tcp.as_str(), true),
        LbKind::new(L4Proto::Udp.as_str(), true),
        LbKind::new(L4Proto::Sctp.as_str(), true),
    ];

    const fn new(protocol: &'static str, session: bool) -> LbKind {
        LbKind { protocol, session }
    }

    pub fn for_proto(proto: u8, session: bool) -> Option<LbKind> {
        let protocol = match L4Proto::from_number(proto)? {
            p @ (L4Proto::Tcp | L4Proto::Udp | L4Proto::Sctp) => p.as_str(),
            L4Proto::Icmp | L4Proto::Icmpv6 => return None,
        };
        Some(LbKind { protocol, session })
    }

    /// Kube-OVN's names: `cluster-tcp-loadbalancer`, `cluster-tcp-session-loadbalancer` for the
    /// default VPC; `vpc-<vpc>-tcp-load`, `vpc-<vpc>-tcp-sess-load` for the others.
    pub fn name(&self, vpc: &str, default_vpc: bool) -> String {
        match (default_vpc, self.session) {
            (true, false) => format!("cluster-{}-loadbalancer", self.protocol),
            (true, true) => format!("cluster-{}-session-loadbalancer", self.protocol),
            (false, false) => format!("vpc-{vpc}-{}-load", self.protocol),
            (false, true) => format!("vpc-{vpc}-{}-sess-load", self.protocol),
        }
    }
}

/// Creates the VPC's load balancers that are missing and attaches every one to each of
/// `switches` that lacks it.
pub fn ensure_ops(
    cache: &Cache,
    t: &mut Transaction,
    vpc: &str,
    default_vpc: bool,
    switches: &[String],
) {
    let mut refs = Vec::new();
    for kind in LbKind::ALL {
        let name = kind.name(vpc, default_vpc);
        let row = match find::<LoadBalancer>(cache, &name) {
            Some(lb) => Atom::Uuid(lb.uuid),
            None => {
                let mut options = BTreeMap::new();
                if kind.session {
                    options.insert(
                        "affinity_timeout".to_owned(),
                        AFFINITY_TIMEOUT_S.to_string(),
                    );
                }
                t.insert_model_with(
                    &super::uuid_name(t, "lb"),
                    &LoadBalancer {
                        name,
                        protocol: LoadBalancerProtocol::from_str_opt(kind.protocol),
                        external_ids: [VENDOR, ("vpc", vpc)]
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .collect(),
                        options,
                        ..LoadBalancer::default()
                    },
                    [],
                )
            }
        };
        refs.push(row);
    }
    for switch in switches {
        let Some(ls) = find::<LogicalSwitch>(cache, switch) else {
            continue;
        };
        let missing: Vec<Atom> = refs
            .iter()
            .filter(|r| !matches!(r, Atom::Uuid(u) if ls.load_balancer.contains(u)))
            .cloned()
            .collect();
        if !missing.is_empty() {
            t.mutate_where(
                &[Condition::uuid(ls.uuid)],
                [LogicalSwitch::LOAD_BALANCER.insert(missing)],
            );
        }
    }
}

/// One VIP as it should be in a load balancer: `None` removes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbVip {
    pub load_balancer: String,
    /// `10.96.0.10:80` or `[fd00::10]:80`.
    pub vip: String,
    /// `10.16.0.5:8080,10.16.0.6:8080`; `None` when the VIP has no ready endpoint.
    pub backends: Option<String>,
}

/// Writes `vips` into their load balancers, touching only VIPs whose backends differ (an
/// EndpointSlice change rewrites its Service's VIPs, nothing else). A load balancer that does
/// not exist yet is an error: [`ensure_ops`] comes first.
pub fn vip_ops(cache: &Cache, t: &mut Transaction, vips: &[LbVip]) -> Result<(), String> {
    let mut by_lb: BTreeMap<&str, Vec<&LbVip>> = BTreeMap::new();
    for v in vips {
        by_lb.entry(v.load_balancer.as_str()).or_default().push(v);
    }
    for (name, vips) in by_lb {
        let lb: LoadBalancer =
            find(cache, name).ok_or_else(|| format!("load balancer {name} does not exist"))?;
        let stale: Vec<&str> = vips
            .iter()
            .filter(|v| lb.vips.get(&v.vip) != v.backends.as_ref() && lb.vips.contains_key(&v.vip))
            .map(|v| v.vip.as_str())
            .collect();
        let fresh: Vec<(&str, &str)> = vips
            .iter()
            .filter_map(|v| Some((v.vip.as_str(), v.backends.as_deref()?)))
            .filter(|(vip, backends)| lb.vips.get(*vip).map(String::as_str) != Some(*backends))
            .collect();
        let mut mutations = Vec::new();
        if !stale.is_empty() {
            mutations.push(LoadBalancer::VIPS.delete_keys(stale));
        }
        if !fresh.is_empty() {
            mutations.push(LoadBalancer::VIPS.insert(fresh));
        }
        if !mutations.is_empty() {
            t.mutate_where(&[Condition::uuid(lb.uuid)], mutations);
        }
    }
    Ok(())
}

/// The VIPs of kovn's load balancers of `vpc`, by load balancer (to find VIPs no Service
/// claims after a restart).
pub fn programmed_vips(cache: &Cache, vpc: &str, default_vpc: bool) -> Vec<(String, String)> {
    LbKind::ALL
        .iter()
        .filter_map(|k| find::<LoadBalancer>(cache, &k.name(vpc, default_vpc)))
        .flat_map(|lb| {
            let name = lb.name.clone();
            lb.vips.into_keys().map(move |vip| (name.clone(), vip))
        })
        .collect()
}
