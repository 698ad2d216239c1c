//! Bad Subnets get a condition that says what is wrong; unsupported fields are named.

use api::{Protocol, Subnet, SubnetSpec, TopologyNames};
use controller::subnet::validate;

fn subnet(name: &str, protocol: Protocol, cidr: &str, gateway: &str) -> Subnet {
    Subnet::new(
        name,
        SubnetSpec {
            protocol: Some(protocol),
            cidr_block: cidr.into(),
            gateway: gateway.into(),
            ..SubnetSpec::default()
        },
    )
}

fn reason(result: Result<controller::subnet::ValidSubnet, Vec<api::Condition>>) -> String {
    let conditions = result.expect_err("should be invalid");
    assert_eq!(conditions[0].type_, "Validated");
    assert_eq!(conditions[0].status, "False");
    assert!(!conditions[0].message.is_empty());
    conditions[0].reason.clone()
}

#[test]
fn invalid_subnets_get_a_condition_with_the_reason() {
    let existing = vec![subnet("ovn-default", Protocol::IPv4, "10.16.0.0/16", "")];
    assert_eq!(
        reason(validate(
            &subnet("a", Protocol::IPv4, "10.300.0.0/16", ""),
            &existing,
            &TopologyNames::default()
        )),
        "InvalidCIDR"
    );
    assert_eq!(
        reason(validate(
            &subnet("b", Protocol::IPv4, "10.20.0.0/16", "10.21.0.1"),
            &existing,
            &TopologyNames::default()
        )),
        "InvalidSpec",
        "gateway outside the CIDR"
    );
    assert_eq!(
        reason(validate(
            &subnet("c", Protocol::IPv4, "10.16.128.0/17", ""),
            &existing,
            &TopologyNames::default()
        )),
        "CIDROverlap"
    );
    assert_eq!(
        reason(validate(
            &subnet("d", Protocol::Dual, "10.22.0.0/16", ""),
            &existing,
            &TopologyNames::default()
        )),
        "ProtocolMismatch"
    );
}

#[test]
fn a_valid_subnet_yields_its_pool_and_topology_and_names_unsupported_fields() {
    let existing = vec![subnet("ovn-default", Protocol::IPv4, "10.16.0.0/16", "")];
    let mut s = subnet("tenant", Protocol::Dual, "10.30.0.0/16,fd00:30::/112", "");
    s.spec.nat_outgoing = true;
    s.spec.private = true;
    s.spec.mtu = Some(1300);
    let valid = validate(&s, &existing, &TopologyNames::default()).expect("valid");
    assert_eq!(valid.plan.gateways[0].to_string(), "10.30.0.1");
    assert_eq!(valid.plan.router, "ovn-cluster");
    assert_eq!(valid.allocator.pools().len(), 2);
    assert_eq!(valid.conditions[0].status, "True");
    let unsupported = &valid.conditions[1];
    assert_eq!(unsupported.type_, "Unsupported");
    assert!(
        unsupported.message.contains("mtu"),
        "{}",
        unsupported.message
    );
    // Implemented now: not named.
    assert!(!unsupported.message.contains("natOutgoing"));
    assert!(!unsupported.message.contains("private"));
    // Re-validating a subnet against a list that contains itself is not an overlap.
    let all = vec![existing[0].clone(), s.clone()];
    assert!(validate(&s, &all, &TopologyNames::default()).is_ok());
}

#[test]
fn spec_acls_with_a_bad_direction_action_or_priority_are_refused() {
    let with_acl = |direction: &str, priority: i32, action: &str| {
        let mut s = subnet("acl", Protocol::IPv4, "10.30.0.0/16", "");
        s.spec.acls = vec![api::SubnetAcl {
            direction: direction.into(),
            priority,
            r#match: "ip4.dst == 10.30.0.5".into(),
            action: action.into(),
        }];
        validate(&s, &[], &TopologyNames::default())
    };
    assert!(with_acl("to-lport", 2500, "drop").is_ok());
    assert!(with_acl("from-lport", 0, "allow-related").is_ok());
    assert_eq!(reason(with_acl("inbound", 2500, "drop")), "InvalidACL");
    assert_eq!(reason(with_acl("to-lport", 40000, "drop")), "InvalidACL");
    assert_eq!(reason(with_acl("to-lport", 2500, "deny")), "InvalidACL");
}

fn in_vpc(mut subnet: Subnet, vpc: &str) -> Subnet {
    subnet.spec.vpc = vpc.into();
    subnet
}

/// Each VPC is an address space of its own, as in Kube-OVN: the same CIDR in two VPCs is
/// fine; within one VPC (the default one included, whether named or left empty) it is not.
#[test]
fn cidrs_may_repeat_across_vpcs_but_not_within_one() {
    let names = TopologyNames::default();
    let existing = vec![
        subnet("ovn-default", Protocol::IPv4, "10.16.0.0/16", ""),
        in_vpc(
            subnet("tenant-a", Protocol::IPv4, "192.168.0.0/24", ""),
            "vpc-a",
        ),
    ];
    let same_cidr_other_vpc = in_vpc(
        subnet("tenant-b", Protocol::IPv4, "192.168.0.0/24", ""),
        "vpc-b",
    );
    assert!(validate(&same_cidr_other_vpc, &existing, &names).is_ok());
    let default_cidr_in_a_vpc = in_vpc(
        subnet("tenant-c", Protocol::IPv4, "10.16.0.0/16", ""),
        "vpc-b",
    );
    assert!(validate(&default_cidr_in_a_vpc, &existing, &names).is_ok());
    let same_vpc = in_vpc(
        subnet("tenant-a2", Protocol::IPv4, "192.168.0.128/25", ""),
        "vpc-a",
    );
    assert_eq!(
        reason(validate(&same_vpc, &existing, &names)),
        "CIDROverlap"
    );
    // The default VPC by name is the default VPC.
    let named_default = in_vpc(
        subnet("d", Protocol::IPv4, "10.16.4.0/24", ""),
        api::names::DEFAULT_CLUSTER_ROUTER,
    );
    assert_eq!(
        reason(validate(&named_default, &existing, &names)),
        "CIDROverlap"
    );
}

/// A Subnet without `protocol` (Kube-OVN's own examples leave it out) gets it from its CIDRs.
#[test]
fn an_absent_protocol_is_derived_from_the_cidrs() {
    let names = TopologyNames::default();
    let without = |cidr: &str| {
        let mut s = subnet("s", Protocol::IPv4, cidr, "");
        s.spec.protocol = None;
        s
    };
    for cidr in [
        "10.30.0.0/16",
        "fd00:30::/112",
        "10.31.0.0/16,fd00:31::/112",
    ] {
        assert!(
            validate(&without(cidr), &[], &names).is_ok(),
            "{cidr} without protocol was refused"
        );
    }
    assert_eq!(
        reason(validate(&without("10.32.0.0/16,10.33.0.0/16"), &[], &names)),
        "ProtocolMismatch"
    );
}

/// `externalEgressGateway` takes an address per family, natOutgoing off, a priority and a
/// table of its own; anything else is a condition, as Kube-OVN refuses it.
#[test]
fn an_external_egress_gateway_needs_its_routing_settings() {
    let names = TopologyNames::default();
    let with = |gateway: &str, nat: bool, priority: u32, table: u32| {
        let mut s = subnet("egress", Protocol::IPv4, "10.60.0.0/24", "");
        s.spec.external_egress_gateway = gateway.into();
        s.spec.nat_outgoing = nat;
        s.spec.policy_routing_priority = priority;
        s.spec.policy_routing_table_id = table;
        s
    };
    assert!(validate(&with("172.18.0.200", false, 1500, 1000), &[], &names).is_ok());
    for (bad, why) in [
        (with("not-an-ip", false, 1500, 1000), "an address"),
        (with("fd00::1", false, 1500, 1000), "the subnet's family"),
        (with("172.18.0.200", true, 1500, 1000), "natOutgoing off"),
        (with("172.18.0.200", false, 0, 1000), "a priority"),
        (
            with("172.18.0.200", false, 40000, 1000),
            "a priority below main's",
        ),
        (with("172.18.0.200", false, 1500, 254), "not the main table"),
        (with("172.18.0.200", false, 1500, 0), "a table"),
    ] {
        assert_eq!(
            reason(validate(&bad, &[], &names)),
            "InvalidExternalEgressGateway",
            "needs {why}"
        );
    }
}
