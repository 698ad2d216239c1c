//! Validating a Subnet before anything is built from it. Bad input gets a status condition
//! that says what is wrong and disturbs nothing else; a field kovn does not support yet is
//! named in an `Unsupported` condition, never silently ignored.

use api::{Condition, Protocol, Subnet, TopologyNames};
use ipnet::IpNet;

use crate::ipam::SubnetAllocator;
use crate::topology::SubnetPlan;

/// What a valid Subnet becomes.
#[derive(Debug, Clone)]
pub struct ValidSubnet {
    pub allocator: SubnetAllocator,
    pub plan: SubnetPlan,
    /// `Validated=True`, plus `Unsupported` if some fields are not implemented yet.
    pub conditions: Vec<Condition>,
}

fn condition(type_: &str, status: &str, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        ..Condition::default()
    }
}

fn invalid(reason: &str, message: String) -> Vec<Condition> {
    vec![condition("Validated", "False", reason, message)]
}

fn cidrs_of(subnet: &Subnet) -> Result<Vec<IpNet>, String> {
    subnet
        .spec
        .cidr_block
        .split(',')
        .map(|c| {
            c.trim()
                .parse::<IpNet>()
                .map_err(|e| format!("cidrBlock {c:?}: {e}"))
        })
        .collect()
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// `externalEgressGateway` as Kube-OVN takes it: an address per family of the subnet (one,
/// or "v4,v6"), with `natOutgoing` off (the gateway sees the pods' own addresses),
/// `policyRoutingPriority` in 1..=32765 (below the kernel's `main` rule) and
/// `policyRoutingTableID` a table of its own (not 0 and not the kernel's 252..=255).
fn check_external_egress(spec: &api::SubnetSpec, cidrs: &[IpNet]) -> Result<(), String> {
    if spec.external_egress_gateway.is_empty() {
        return Ok(());
    }
    let gateways = spec
        .external_egress_gateway
        .split(',')
        .map(|g| {
            g.trim()
                .parse::<std::net::IpAddr>()
                .map_err(|e| format!("externalEgressGateway {g:?}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for cidr in cidrs {
        if !gateways
            .iter()
            .any(|g| g.is_ipv4() == cidr.addr().is_ipv4())
        {
            return Err(format!(
                "externalEgressGateway {:?} has no address of {cidr}'s family",
                spec.external_egress_gateway
            ));
        }
    }
    if spec.nat_outgoing {
        return Err("externalEgressGateway needs natOutgoing: false".into());
    }
    if !(1..=32765).contains(&spec.policy_routing_priority) {
        return Err(format!(
            "policyRoutingPriority {} is not in 1..=32765",
            spec.policy_routing_priority
        ));
    }
    let table = spec.policy_routing_table_id;
    if table == 0 || (252..=255).contains(&table) || table > i32::MAX as u32 {
        return Err(format!(
            "policyRoutingTableID {table} is not a table of its own (1..=2147483647, not 252..=255)"
        ));
    }
    Ok(())
}

/// Checks `subnet` against the schema's rules and the `others` already accepted. On error,
/// the conditions to write to its status.
pub fn validate(
    subnet: &Subnet,
    others: &[Subnet],
    names: &TopologyNames,
) -> Result<ValidSubnet, Vec<Condition>> {
    let name = subnet.metadata.name.clone().unwrap_or_default();
    let spec = &subnet.spec;
    let cidrs = cidrs_of(subnet).map_err(|m| invalid("InvalidCIDR", m))?;
    let families = (
        cidrs.iter().filter(|c| c.addr().is_ipv4()).count(),
        cidrs.iter().filter(|c| c.addr().is_ipv6()).count(),
    );
    // Kube-OVN derives an absent protocol from the CIDRs.
    let derived = match families {
        (1, 0) => Some(Protocol::IPv4),
        (0, 1) => Some(Protocol::IPv6),
        (1, 1) => Some(Protocol::Dual),
        _ => None,
    };
    if spec.protocol.or(derived) != derived || derived.is_none() {
        return Err(invalid(
            "ProtocolMismatch",
            match spec.protocol {
                Some(protocol) => format!(
                    "protocol {protocol:?} does not match cidrBlock {:?}",
                    spec.cidr_block
                ),
                None => format!(
                    "cidrBlock {:?} is neither one IPv4 CIDR, one IPv6 CIDR nor one of each",
                    spec.cidr_block
                ),
            },
        ));
    }
    // Each VPC is an address space of its own: CIDRs may repeat across VPCs (the datapath
    // keys addresses by VPC), never within one.
    let vpc = names.router_of(subnet);
    for other in others {
        let other_name = other.metadata.name.clone().unwrap_or_default();
        if other_name == name || names.router_of(other) != vpc {
            continue;
        }
        let Ok(theirs) = cidrs_of(other) else {
            continue;
        };
        if let Some((a, b)) = cidrs
            .iter()
            .flat_map(|a| theirs.iter().map(move |b| (a, b)))
            .find(|(a, b)| overlaps(a, b))
        {
            return Err(invalid(
                "CIDROverlap",
                format!("{a} overlaps {b} of subnet {other_name} in VPC {vpc}"),
            ));
        }
    }
    check_external_egress(spec, &cidrs).map_err(|m| invalid("InvalidExternalEgressGateway", m))?;
    spec.gateway_nodes()
        .map_err(|m| invalid("InvalidGatewayNode", m))?;
    for acl in &spec.acls {
        crate::topology::acl::check_spec_acl(acl).map_err(|m| invalid("InvalidACL", m))?;
    }
    // The allocator checks gateways (inside their CIDR) and excludeIps.
    let allocator = SubnetAllocator::new(&name, &spec.cidr_block, &spec.gateway, &spec.exclude_ips)
        .map_err(|e| invalid("InvalidSpec", e.to_string()))?;
    let plan = SubnetPlan {
        name: name.clone(),
        router: names.router_of(subnet),
        cidrs: allocator.pools().iter().map(|p| p.cidr()).collect(),
        gateways: allocator.pools().iter().map(|p| p.gateway()).collect(),
        // Resolved by the reconcile, which sees the Vlans.
        localnet: None,
    };
    let mut conditions = vec![condition(
        "Validated",
        "True",
        "ValidationPassed",
        String::new(),
    )];
    let unsupported = spec.unsupported_fields();
    if !unsupported.is_empty() {
        conditions.push(condition(
            "Unsupported",
            "True",
            "NotImplemented",
            format!("kovn does not implement yet: {}", unsupported.join(", ")),
        ));
    }
    Ok(ValidSubnet {
        allocator,
        plan,
        conditions,
    })
}
