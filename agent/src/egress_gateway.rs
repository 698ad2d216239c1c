//! A subnet's `externalEgressGateway`, as Kube-OVN's daemon lays it on a node: what a pod of
//! the subnet sends out of the cluster reaches the node on `ovn0` (OVN reroutes it there:
//! the node's own pods with a distributed gateway, the subnet's with a centralized one), and a
//! policy rule (`from <cidr> iif ovn0 lookup <policyRoutingTableID>`, at
//! `policyRoutingPriority`) sends it to a table whose one route is the default via the
//! external gateway, instead of the node's own routes. Destinations of the node itself are
//! found first (the `local` table comes before every rule).
//!
//! Every rule on `iif ovn0` that looks up a table is kovn's: the rules of subnets gone (or
//! changed) since, this agent's or an earlier one's, are removed with their tables' routes.

use std::net::IpAddr;

use api::{Subnet, TopologyNames};
use futures::TryStreamExt;
use ipnet::IpNet;
use kube::ResourceExt;
use rtnetlink::packet_route::route::RouteHeader;
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::{Handle, IpVersion, RouteMessageBuilder};

use crate::netlink::{connect, netlink};
use crate::node_setup::{NODE_PORT, NodeSetupError};

/// One subnet CIDR's egress through its external gateway.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EgressRoute {
    pub cidr: IpNet,
    pub gateway: IpAddr,
    pub priority: u32,
    pub table: u32,
}

/// The egress routes the default VPC's subnets ask for (per CIDR, the gateway of its
/// family). The controller has refused bad values already (a Subnet it did not validate has
/// no effect here either: no gateway, no route).
pub fn egress_routes(subnets: &[Subnet], names: &TopologyNames) -> Vec<EgressRoute> {
    let mut routes: Vec<EgressRoute> = subnets
        .iter()
        .filter(|s| names.in_default_vpc(s) && s.name_any() != names.join_subnet)
        .filter(|s| s.spec.policy_routing_priority > 0 && s.spec.policy_routing_table_id > 0)
        .flat_map(|s| {
            let gateways: Vec<IpAddr> = s
                .spec
                .external_egress_gateway
                .split(',')
                .filter_map(|g| g.trim().parse().ok())
                .collect();
            s.spec
                .cidr_block
                .split(',')
                .filter_map(|c| c.trim().parse::<IpNet>().ok().map(|n| n.trunc()))
                .filter_map(move |cidr| {
                    let gateway = *gateways
                        .iter()
                        .find(|g| g.is_ipv4() == cidr.addr().is_ipv4())?;
                    Some(EgressRoute {
                        cidr,
                        gateway,
                        priority: s.spec.policy_routing_priority,
                        table: s.spec.policy_routing_table_id,
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect();
    routes.sort();
    routes.dedup();
    routes
}

/// The table a rule looks up (the header holds tables below 256, the attribute any).
fn table_of(rule: &RuleMessage) -> u32 {
    rule.attributes
        .iter()
        .find_map(|a| match a {
            RuleAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(rule.header.table))
}

fn is_ours(rule: &RuleMessage) -> bool {
    rule.header.action == RuleAction::ToTable
        && rule
            .attributes
            .iter()
            .any(|a| matches!(a, RuleAttribute::Iifname(n) if n == NODE_PORT))
}

/// What `rule` is, as an [`EgressRoute`] without its gateway (rules do not name one).
fn rule_key(rule: &RuleMessage) -> Option<(IpNet, u32, u32)> {
    let source = rule.attributes.iter().find_map(|a| match a {
        RuleAttribute::Source(ip) => Some(*ip),
        _ => None,
    })?;
    let priority = rule.attributes.iter().find_map(|a| match a {
        RuleAttribute::Priority(p) => Some(*p),
        _ => None,
    })?;
    let cidr = IpNet::new(source, rule.header.src_len).ok()?;
    Some((cidr, priority, table_of(rule)))
}

async fn our_rules(handle: &Handle) -> Result<Vec<RuleMessage>, NodeSetupError> {
    let mut ours = Vec::new();
    for version in [IpVersion::V4, IpVersion::V6] {
        let rules: Vec<RuleMessage> = handle
            .rule()
            .get(version)
            .execute()
            .try_collect()
            .await
            .map_err(|e| NodeSetupError::from(netlink("listing policy rules")(e)))?;
        ours.extend(rules.into_iter().filter(is_ours));
    }
    Ok(ours)
}

/// The default route of `table` via `gateway`.
fn default_route(gateway: IpAddr, table: u32) -> rtnetlink::packet_route::route::RouteMessage {
    let any = if gateway.is_ipv4() {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    };
    RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(any, 0)
        .and_then(|b| b.gateway(gateway))
        .expect("one family")
        .table_id(table)
        .build()
}

/// Makes the node's rules and tables what `wanted` says: missing ones added (the tables'
/// routes replaced, so a changed gateway takes effect), kovn's others removed.
pub async fn ensure(wanted: &[EgressRoute]) -> Result<(), NodeSetupError> {
    let handle = connect()?;
    let existing = our_rules(&handle).await?;
    for rule in &existing {
        let Some(key) = rule_key(rule) else { continue };
        if wanted.iter().any(|w| (w.cidr, w.priority, w.table) == key) {
            continue;
        }
        let table = key.2;
        handle
            .rule()
            .del(rule.clone())
            .execute()
            .await
            .map_err(|e| {
                NodeSetupError::from(netlink(format!("removing the rule of {}", key.0))(e))
            })?;
        // Its table's routes go with it, unless another wanted rule uses the table.
        if !wanted.iter().any(|w| w.table == table) {
            remove_table(&handle, table).await?;
        }
    }
    for route in wanted {
        let present = existing
            .iter()
            .filter_map(rule_key)
            .any(|k| k == (route.cidr, route.priority, route.table));
        if !present {
            let request = handle
                .rule()
                .add()
                .input_interface(NODE_PORT)
                .table_id(route.table)
                .priority(route.priority)
                .action(RuleAction::ToTable);
            let added = match route.cidr {
                IpNet::V4(net) => {
                    request
                        .v4()
                        .source_prefix(net.addr(), net.prefix_len())
                        .execute()
                        .await
                }
                IpNet::V6(net) => {
                    request
                        .v6()
                        .source_prefix(net.addr(), net.prefix_len())
                        .execute()
                        .await
                }
            };
            match added {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
                Err(e) => {
                    return Err(netlink(format!("the egress rule of {}", route.cidr))(e).into());
                }
            }
        }
        handle
            .route()
            .add(default_route(route.gateway, route.table))
            .replace()
            .execute()
            .await
            .map_err(|e| {
                NodeSetupError::from(netlink(format!(
                    "the default route via {} in table {}",
                    route.gateway, route.table
                ))(e))
            })?;
    }
    Ok(())
}

/// How many egress rules (kovn's, on `iif ovn0`) the node has: what uninstall removes with
/// `ensure(&[])`.
pub async fn rule_count() -> Result<usize, NodeSetupError> {
    let handle = connect()?;
    Ok(our_rules(&handle).await?.len())
}

/// Removes every route of `table`.
pub(crate) async fn remove_table(handle: &Handle, table: u32) -> Result<(), NodeSetupError> {
    for version in [IpVersion::V4, IpVersion::V6] {
        let mut filter = RouteMessageBuilder::<IpAddr>::new().table_id(table).build();
        filter.header.address_family = match version {
            IpVersion::V4 => rtnetlink::packet_route::AddressFamily::Inet,
            IpVersion::V6 => rtnetlink::packet_route::AddressFamily::Inet6,
        };
        let routes: Vec<_> = handle
            .route()
            .get(filter)
            .execute()
            .try_collect()
            .await
            .map_err(|e| NodeSetupError::from(netlink(format!("listing table {table}"))(e)))?;
        for route in routes {
            let in_table = route
                .attributes
                .iter()
                .find_map(|a| match a {
                    rtnetlink::packet_route::route::RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(u32::from(route.header.table));
            if in_table == table && route.header.table != RouteHeader::RT_TABLE_MAIN {
                let _ = handle.route().del(route).execute().await;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::SubnetSpec;

    fn subnet(name: &str, cidr: &str, gateway: &str, vpc: &str) -> Subnet {
        Subnet::new(
            name,
            SubnetSpec {
                cidr_block: cidr.into(),
                vpc: vpc.into(),
                external_egress_gateway: gateway.into(),
                policy_routing_priority: 1500,
                policy_routing_table_id: 1000,
                ..SubnetSpec::default()
            },
        )
    }

    #[test]
    fn each_cidr_egresses_through_the_gateway_of_its_family() {
        let names = TopologyNames::default();
        let routes = egress_routes(
            &[
                subnet(
                    "dual",
                    "10.60.0.0/24,fd00:60::/112",
                    "172.18.0.200,fd00:18::200",
                    "",
                ),
                subnet("plain", "10.61.0.0/24", "", ""),
                subnet("tenant", "10.62.0.0/24", "172.18.0.200", "vpc-a"),
            ],
            &names,
        );
        assert_eq!(
            routes,
            vec![
                EgressRoute {
                    cidr: "10.60.0.0/24".parse().unwrap(),
                    gateway: "172.18.0.200".parse().unwrap(),
                    priority: 1500,
                    table: 1000,
                },
                EgressRoute {
                    cidr: "fd00:60::/112".parse().unwrap(),
                    gateway: "fd00:18::200".parse().unwrap(),
                    priority: 1500,
                    table: 1000,
                },
            ]
        );
    }
}
