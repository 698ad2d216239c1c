//! Bad Subnets get a condition that says what is wrong; unsupported fields are named.

use api::{Protocol, Subnet, SubnetSpec, TopologyNames};
use controller::subnet::validate;

fn subnet(name: &str, protocol: Protocol, cidr: &str, gateway: &str) -> Subnet {
    Subnet::new(
        name,
        SubnetSpec {
            protocol,
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
