//! Centralized gateways of the default VPC's subnets: which gateway nodes are alive, and which
//! of them carry a subnet's egress.
//!
//! Liveness, as Kube-OVN's controller checks its gateways: every [`PROBE_INTERVAL`] the
//! join address (`ovn0`) of every gateway node of a centralized subnet is pinged from the
//! controller's host, whose own `ovn0` sends the probe through OVN's join switch and the
//! tunnel: the path the subnet's egress takes. A node is down after [`DOWN_AFTER`]
//! unanswered rounds or as soon as its Node is not Ready, up again after [`UP_AFTER`]
//! answered rounds. A probe that cannot be sent (no raw socket, no route from this host)
//! changes nothing: it says nothing about the gateway. When a node flips, the subnets naming
//! it are reconciled again ([`Checker::run`] sends them), and [`choose`] picks their active
//! gateways from the new state: detection within about 2.5 s, the reroute a moment later.
//!
//! Primary-backup keeps the active gateway while it is alive (no flapping back when the old
//! primary returns) and otherwise takes the first alive node in `gatewayNode`'s order; ECMP
//! uses every alive node. With no gateway alive, every named one stays in use: there is no
//! better path, and removing the reroute would send the subnet's egress out of the wrong
//! nodes.

pub mod probe;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::{GatewayNode, GatewayType, Subnet};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc::UnboundedSender;

use crate::context::Context;
use probe::Outcome;

pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
pub const DOWN_AFTER: u32 = 2;
pub const UP_AFTER: u32 = 2;

#[derive(Clone, Copy, Debug)]
struct Liveness {
    up: bool,
    /// Consecutive rounds against the current state (unanswered while up, answered while
    /// down).
    streak: u32,
}

/// The gateway nodes' liveness as the checker last saw it; a node it has not judged yet is
/// up (a new subnet routes at once).
#[derive(Debug, Default)]
pub struct GatewayHealth {
    nodes: Mutex<HashMap<String, Liveness>>,
}

impl GatewayHealth {
    pub fn is_up(&self, node: &str) -> bool {
        self.lock().get(node).is_none_or(|l| l.up)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Liveness>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Folds one round's evidence for `node` in; returns whether its state flipped.
    /// `answered` is None when the probe could not be sent.
    fn record(&self, node: &str, answered: Option<bool>, ready: bool) -> bool {
        let mut nodes = self.lock();
        let l = nodes.entry(node.to_owned()).or_insert(Liveness {
            up: true,
            streak: 0,
        });
        let was = l.up;
        if !ready {
            *l = Liveness {
                up: false,
                streak: 0,
            };
        } else if let Some(answered) = answered {
            if answered == l.up {
                l.streak = 0;
            } else {
                l.streak += 1;
                if l.streak >= if l.up { DOWN_AFTER } else { UP_AFTER } {
                    *l = Liveness {
                        up: !l.up,
                        streak: 0,
                    };
                }
            }
        } else if !l.up {
            // Ready again and not probed: the Node's readiness was the only evidence.
            *l = Liveness {
                up: true,
                streak: 0,
            };
        }
        l.up != was
    }

    /// Forgets nodes no centralized subnet names any more.
    fn retain(&self, nodes: &BTreeSet<String>) {
        self.lock().retain(|n, _| nodes.contains(n));
    }
}

/// A centralized subnet's gateways now: the nodes carrying its egress, and their join
/// addresses (the reroute's next hops).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Active {
    pub nodes: Vec<String>,
    pub next_hops: Vec<IpAddr>,
}

impl Active {
    /// Kube-OVN's `status.activateGateway`: the active node (primary-backup), or the active
    /// nodes comma-separated (ECMP).
    pub fn status(&self) -> String {
        self.nodes.join(",")
    }
}

/// Picks a subnet's active gateways. `gateways` in `gatewayNode`'s order; `join_ips` gives a
/// node's join addresses (none: the node has no `ovn0` yet and cannot be a gateway); `current`
/// is the subnet's `activateGateway`.
pub fn choose(
    gateways: &[GatewayNode],
    ecmp: bool,
    current: &str,
    join_ips: impl Fn(&str) -> Vec<IpAddr>,
    is_up: impl Fn(&str) -> bool,
) -> Active {
    let candidates: Vec<(&str, Vec<IpAddr>)> = gateways
        .iter()
        .map(|g| (g.node.as_str(), join_ips(&g.node)))
        .filter(|(_, ips)| !ips.is_empty())
        .collect();
    let alive: Vec<&(&str, Vec<IpAddr>)> = candidates.iter().filter(|(n, _)| is_up(n)).collect();
    let chosen: Vec<&(&str, Vec<IpAddr>)> = if ecmp {
        if alive.is_empty() {
            candidates.iter().collect()
        } else {
            alive
        }
    } else {
        let current = current.split(',').next().unwrap_or_default();
        let keep = alive.iter().find(|(n, _)| *n == current);
        let pick = keep
            .or(alive.first())
            .copied()
            .or_else(|| candidates.iter().find(|(n, _)| *n == current))
            .or(candidates.first());
        pick.into_iter().collect()
    };
    Active {
        nodes: chosen.iter().map(|(n, _)| (*n).to_owned()).collect(),
        next_hops: chosen.iter().flat_map(|(_, ips)| ips.clone()).collect(),
    }
}

/// The subnet's active gateways from the controller's state, for its reconcile; empty for a
/// subnet that is not centralized (or names no usable node).
pub fn active_of(subnet: &Subnet, ctx: &Context) -> Active {
    if subnet.spec.gateway_type != GatewayType::Centralized {
        return Active::default();
    }
    let Ok(gateways) = subnet.spec.gateway_nodes() else {
        return Active::default();
    };
    let current = subnet
        .status
        .as_ref()
        .map(|s| s.activate_gateway.clone())
        .unwrap_or_default();
    let ipam = ctx.ipam();
    choose(
        &gateways,
        subnet.spec.enable_ecmp,
        &current,
        |node| {
            ipam.lookup(&api::Owner::node(node))
                .map(|a| a.ips)
                .unwrap_or_default()
        },
        |node| ctx.gateway_health.is_up(node),
    )
}

/// Whether the Node's Ready condition says it is not ready. A Node without conditions (no
/// kubelet has reported yet) counts as ready: the probes judge it.
fn not_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status != "True")
}

/// The probing loop; runs as long as the controller leads.
pub struct Checker {
    pub ctx: Arc<Context>,
    /// Subnets to reconcile again after a gateway flipped.
    pub requeue: UnboundedSender<ObjectRef<Subnet>>,
}

impl Checker {
    /// The centralized subnets of the default VPC with their gateway lists.
    fn centralized(&self) -> Vec<(Arc<Subnet>, Vec<GatewayNode>)> {
        let router = &self.ctx.settings.names.cluster_router;
        self.ctx
            .stores
            .subnets
            .state()
            .into_iter()
            .filter(|s| {
                s.spec.gateway_type == GatewayType::Centralized
                    && s.metadata.deletion_timestamp.is_none()
                    && &self.ctx.settings.names.router_of(s) == router
            })
            .filter_map(|s| {
                let gateways = s.spec.gateway_nodes().ok()?;
                Some((s, gateways))
            })
            .collect()
    }

    pub async fn run(self) {
        let mut tick = tokio::time::interval(PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut round: u16 = 0;
        let mut unsendable_reported = false;
        loop {
            tick.tick().await;
            round = round.wrapping_add(1);
            let subnets = self.centralized();
            let names: BTreeSet<String> = subnets
                .iter()
                .flat_map(|(_, g)| g.iter().map(|g| g.node.clone()))
                .collect();
            self.ctx.gateway_health.retain(&names);
            if names.is_empty() {
                continue;
            }
            let targets: Vec<(String, Vec<IpAddr>)> = {
                let ipam = self.ctx.ipam();
                names
                    .iter()
                    .map(|n| {
                        let ips = ipam
                            .lookup(&api::Owner::node(n))
                            .map(|a| a.ips)
                            .unwrap_or_default();
                        (n.clone(), ips)
                    })
                    .collect()
            };
            let addresses: Vec<IpAddr> = targets.iter().flat_map(|(_, ips)| ips.clone()).collect();
            let outcomes = tokio::task::spawn_blocking(move || {
                probe::ping_all(&addresses, round, PROBE_TIMEOUT)
            })
            .await
            .unwrap_or_default();
            let mut flipped: BTreeSet<String> = BTreeSet::new();
            for (node, ips) in &targets {
                let results: Vec<&Outcome> = ips.iter().filter_map(|ip| outcomes.get(ip)).collect();
                let answered = if results.iter().any(|o| **o == Outcome::Answered) {
                    Some(true)
                } else if !results.is_empty() && results.iter().all(|o| **o == Outcome::Unanswered)
                {
                    Some(false)
                } else {
                    if let Some(Outcome::NotSent(why)) = results.first()
                        && !unsendable_reported
                    {
                        tracing::warn!(%node, reason = %why, "gateway probes cannot be sent; failover follows Node readiness only");
                        unsendable_reported = true;
                    }
                    None
                };
                let ready = self
                    .ctx
                    .stores
                    .nodes
                    .get(&ObjectRef::new(node))
                    .is_none_or(|n| !not_ready(&n));
                if self.ctx.gateway_health.record(node, answered, ready) {
                    flipped.insert(node.clone());
                }
                let up = self.ctx.gateway_health.is_up(node);
                self.ctx
                    .metrics
                    .gateway_up
                    .get_or_create(&crate::metrics::NodeLabels { node: node.clone() })
                    .set(i64::from(up));
            }
            for node in &flipped {
                let up = self.ctx.gateway_health.is_up(node);
                tracing::warn!(%node, up, "centralized gateway changed state");
            }
            for (subnet, gateways) in &subnets {
                if gateways.iter().any(|g| flipped.contains(&g.node)) {
                    let _ = self.requeue.send(ObjectRef::from_obj(subnet.as_ref()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateways(list: &str) -> Vec<GatewayNode> {
        api::SubnetSpec {
            gateway_node: list.into(),
            ..api::SubnetSpec::default()
        }
        .gateway_nodes()
        .unwrap()
    }

    fn ips(node: &str) -> Vec<IpAddr> {
        match node {
            "n1" => vec!["100.64.0.2".parse().unwrap()],
            "n2" => vec!["100.64.0.3".parse().unwrap()],
            "n3" => vec!["100.64.0.4".parse().unwrap()],
            _ => Vec::new(),
        }
    }

    #[test]
    fn primary_backup_keeps_a_live_primary_and_fails_over_in_order() {
        let g = gateways("n1,n2,n3");
        let all_up = |_: &str| true;
        assert_eq!(choose(&g, false, "", ips, all_up).nodes, ["n1"]);
        // The backup in charge stays in charge when the old primary returns.
        assert_eq!(choose(&g, false, "n2", ips, all_up).nodes, ["n2"]);
        let n2_down = |n: &str| n != "n2";
        assert_eq!(choose(&g, false, "n2", ips, n2_down).nodes, ["n1"]);
        let only_n3 = |n: &str| n == "n3";
        let a = choose(&g, false, "n1", ips, only_n3);
        assert_eq!(a.nodes, ["n3"]);
        assert_eq!(a.next_hops, ips("n3"));
        // Nothing alive: the current one stays, there is no better path.
        assert_eq!(choose(&g, false, "n2", ips, |_| false).nodes, ["n2"]);
        // A node without a join address cannot be a gateway.
        assert_eq!(
            choose(&gateways("ghost,n2"), false, "", ips, all_up).nodes,
            ["n2"]
        );
    }

    #[test]
    fn ecmp_uses_every_live_gateway_and_all_of_them_when_none_is() {
        let g = gateways("n1,n2,n3");
        let a = choose(&g, true, "", ips, |n| n != "n2");
        assert_eq!(a.nodes, ["n1", "n3"]);
        assert_eq!(a.status(), "n1,n3");
        assert_eq!(a.next_hops.len(), 2);
        assert_eq!(choose(&g, true, "", ips, |_| false).nodes.len(), 3);
    }

    #[test]
    fn a_gateway_goes_down_after_two_silent_rounds_and_up_after_two_answers() {
        let h = GatewayHealth::default();
        assert!(h.is_up("n1"), "unjudged nodes are up");
        assert!(!h.record("n1", Some(false), true));
        assert!(h.is_up("n1"), "one lost probe is not a failure");
        assert!(h.record("n1", Some(false), true));
        assert!(!h.is_up("n1"));
        assert!(!h.record("n1", Some(true), true));
        assert!(
            !h.record("n1", Some(false), true),
            "a miss resets the streak"
        );
        assert!(!h.record("n1", Some(true), true));
        assert!(h.record("n1", Some(true), true));
        assert!(h.is_up("n1"));
        // A probe that could not be sent says nothing.
        assert!(!h.record("n1", None, true));
        assert!(!h.record("n1", None, true));
        assert!(h.is_up("n1"));
        // NotReady is down at once.
        assert!(h.record("n1", Some(true), false));
        assert!(!h.is_up("n1"));
    }
}
