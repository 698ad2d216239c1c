//! IPAM: never hand out an address twice, never lose an allocation, across releases and
//! restarts (restore from records).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use api::Owner;
use controller::ipam::{Allocation, Ipam, IpamError, Record, RecordSource, SubnetAllocator};
use proptest::prelude::*;

/// `"a.ns"` is pod `a` in `ns`; a bare name is a pod in `ns`.
fn o(port: &str) -> Owner {
    match port.split_once('.') {
        Some((name, namespace)) => Owner::pod(namespace, name),
        None => Owner::pod("ns", port),
    }
}

/// Pods and nodes mixed, nodes with dotted names as on EKS (`node-ip-10-0-0-3.ec2.internal`
/// has the shape of a pod port): they stay distinct owners.
fn owner_of(n: u8) -> Owner {
    if n.is_multiple_of(3) {
        Owner::node(format!("ip-10-0-0-{n}.ec2.internal"))
    } else {
        Owner::pod("ns", format!("p{n}"))
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ipam_with(subnets: &[(&str, &str, &str, &[&str])]) -> Ipam {
    let mut ipam = Ipam::new();
    for (name, cidr, gw, exclude) in subnets {
        let exclude: Vec<String> = exclude.iter().map(|s| (*s).to_owned()).collect();
        ipam.add_subnet(SubnetAllocator::new(name, cidr, gw, &exclude).unwrap());
    }
    ipam
}

#[test]
fn dual_stack_allocation_skips_gateway_and_exclusions() {
    let mut ipam = ipam_with(&[(
        "ovn-default",
        "10.16.0.0/16,fd00:10:16::/112",
        "10.16.0.1,fd00:10:16::1",
        &["10.16.0.2..10.16.0.10"],
    )]);
    let a = ipam
        .allocate("ovn-default", &o("a.default"), &[], None)
        .unwrap();
    assert_eq!(a.ips, vec![ip("10.16.0.11"), ip("fd00:10:16::2")]);
    assert!(a.mac.starts_with("00:00:00:"));
    // Idempotent.
    assert_eq!(
        ipam.allocate("ovn-default", &o("a.default"), &[], None)
            .unwrap(),
        a
    );
    let b = ipam
        .allocate("ovn-default", &o("b.default"), &[], None)
        .unwrap();
    assert_eq!(b.ips[0], ip("10.16.0.12"));
    assert_ne!(a.mac, b.mac);
}

#[test]
fn static_addresses_are_honoured_or_refused_with_a_reason() {
    let mut ipam = ipam_with(&[("s", "10.17.0.0/24", "", &["10.17.0.200..10.17.0.210"])]);
    let a = ipam
        .allocate(
            "s",
            &o("a.ns"),
            &[ip("10.17.0.50")],
            Some("00:00:00:aa:bb:cc"),
        )
        .unwrap();
    assert_eq!(a.ips, vec![ip("10.17.0.50")]);
    assert_eq!(a.mac, "00:00:00:aa:bb:cc");
    assert_eq!(
        ipam.allocate("s", &o("b.ns"), &[ip("10.17.0.50")], None),
        Err(IpamError::Taken {
            ip: ip("10.17.0.50"),
            holder: o("a.ns")
        })
    );
    assert!(
        matches!(
            ipam.allocate("s", &o("b.ns"), &[ip("10.17.0.1")], None),
            Err(IpamError::Excluded { .. })
        ),
        "the gateway"
    );
    assert!(matches!(
        ipam.allocate("s", &o("b.ns"), &[ip("10.17.0.205")], None),
        Err(IpamError::Excluded { .. })
    ));
    assert!(matches!(
        ipam.allocate("s", &o("b.ns"), &[ip("10.99.0.5")], None),
        Err(IpamError::OutOfRange { .. })
    ));
    assert!(matches!(
        ipam.allocate("s", &o("b.ns"), &[], Some("00:00:00:aa:bb:cc")),
        Err(IpamError::MacTaken { .. })
    ));
    // A refused request left nothing behind.
    assert_eq!(ipam.lookup(&o("b.ns")), None);
}

#[test]
fn a_full_subnet_says_so_and_released_addresses_come_back_last() {
    // /29: .1 gateway, .2-.6 usable (5), .7 broadcast.
    let mut ipam = ipam_with(&[("tiny", "10.18.0.0/29", "", &[])]);
    let got: Vec<IpAddr> = (0..5)
        .map(|i| {
            ipam.allocate("tiny", &o(&format!("p{i}")), &[], None)
                .unwrap()
                .ips[0]
        })
        .collect();
    assert_eq!(got.iter().collect::<BTreeSet<_>>().len(), 5);
    assert!(matches!(
        ipam.allocate("tiny", &o("p5"), &[], None),
        Err(IpamError::Exhausted { .. })
    ));
    ipam.release(&o("p2"));
    assert_eq!(
        ipam.allocate("tiny", &o("p5"), &[], None).unwrap().ips[0],
        got[2]
    );
    let pool = &ipam.subnet("tiny").unwrap().pools()[0];
    assert_eq!((pool.used(), pool.available()), (5, 0));
}

#[test]
fn invalid_subnets_are_rejected_with_a_reason() {
    for (cidr, gw, exclude) in [
        ("10.16.0.0/33", "", vec![]),
        ("not-a-cidr", "", vec![]),
        ("10.16.0.0/16", "10.17.0.1", vec![]),
        ("10.16.0.0/16,10.17.0.0/16", "", vec![]),
        ("10.16.0.0/16", "", vec!["10.16.0.9..10.16.0.1".to_owned()]),
        ("10.16.0.0/32", "", vec![]),
    ] {
        assert!(
            matches!(
                SubnetAllocator::new("bad", cidr, gw, &exclude),
                Err(IpamError::InvalidSubnet(_))
            ),
            "{cidr} {gw} {exclude:?} accepted"
        );
    }
}

#[test]
fn restore_is_deterministic_and_reports_conflicts() {
    let subnets: &[(&str, &str, &str, &[&str])] = &[("s", "10.19.0.0/24", "", &[])];
    let records = vec![
        Record {
            source: RecordSource::NbPort,
            owner: o("b.ns"),
            subnet: "s".into(),
            ips: vec![ip("10.19.0.5")],
            mac: Some("00:00:00:00:00:05".into()),
        },
        Record {
            source: RecordSource::IpObject,
            owner: o("a.ns"),
            subnet: "s".into(),
            ips: vec![ip("10.19.0.5")],
            mac: Some("00:00:00:00:00:0a".into()),
        },
        Record {
            source: RecordSource::IpObject,
            owner: o("c.ns"),
            subnet: "s".into(),
            ips: vec![ip("10.19.0.7")],
            mac: None,
        },
    ];
    let mut first = ipam_with(subnets);
    let conflicts = first.restore(records.clone());
    // The IP object wins over the NB port for 10.19.0.5, whatever the input order.
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].record.owner, o("b.ns"));
    assert!(
        conflicts[0].reason.contains("a.ns"),
        "{}",
        conflicts[0].reason
    );
    let mut reversed = ipam_with(subnets);
    let mut rev = records.clone();
    rev.reverse();
    assert_eq!(reversed.restore(rev), conflicts);
    assert_eq!(first.allocations(), reversed.allocations());
    // Nothing new lands on a restored address.
    let fresh = first.allocate("s", &o("d.ns"), &[], None).unwrap();
    assert!(!([ip("10.19.0.5"), ip("10.19.0.7")].contains(&fresh.ips[0])));
}

#[derive(Debug, Clone)]
enum Op {
    Allocate {
        owner: u8,
        subnet: u8,
        static_host: Option<u8>,
    },
    Release {
        owner: u8,
    },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..24, 0u8..2, proptest::option::weighted(0.3, 2u8..14))
            .prop_map(|(owner, subnet, static_host)| Op::Allocate { owner, subnet, static_host }),
        3 => (0u8..24).prop_map(|owner| Op::Release { owner }),
        1 => Just(Op::Restart),
    ]
}

const SUBNETS: &[(&str, &str, &str, &[&str])] = &[
    ("a", "10.20.0.0/28,fd00:20::/124", "", &["10.20.0.9"]),
    ("b", "10.21.0.0/28", "", &[]),
];

fn check_no_duplicates(ipam: &Ipam) -> Result<(), TestCaseError> {
    let mut seen_ips = BTreeSet::new();
    let mut seen_macs = BTreeSet::new();
    for (owner, allocation) in ipam.allocations() {
        for ip in &allocation.ips {
            prop_assert!(
                seen_ips.insert(*ip),
                "{ip} handed out twice (again to {owner})"
            );
        }
        prop_assert!(
            seen_macs.insert(allocation.mac.clone()),
            "MAC of {owner} twice"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random allocate/release/restart sequences: no address or MAC is ever held twice, and
    /// every allocation survives until released (restarts included).
    #[test]
    fn never_a_duplicate_never_a_lost_allocation(ops in proptest::collection::vec(op(), 1..120)) {
        let mut ipam = ipam_with(SUBNETS);
        let mut expected: BTreeMap<Owner, Allocation> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Allocate { owner, subnet, static_host } => {
                    let owner = owner_of(owner);
                    let subnet = SUBNETS[subnet as usize].0;
                    let base = if subnet == "a" { "10.20.0." } else { "10.21.0." };
                    let statics: Vec<IpAddr> =
                        static_host.map(|h| ip(&format!("{base}{h}"))).into_iter().collect();
                    // An owner lives in one subnet: moving it means releasing first.
                    if expected.get(&owner).is_some_and(|a| a.subnet != subnet) {
                        ipam.release(&owner);
                        expected.remove(&owner);
                    }
                    match ipam.allocate(subnet, &owner, &statics, None) {
                        Ok(allocation) => {
                            if let Some(previous) = expected.get(&owner) && statics.is_empty() {
                                prop_assert_eq!(&allocation, previous, "allocation changed");
                            }
                            expected.insert(owner, allocation);
                        }
                        Err(IpamError::Exhausted { .. } | IpamError::Taken { .. } | IpamError::Excluded { .. }) => {
                            // Refused: the owner keeps what it had.
                            prop_assert_eq!(ipam.lookup(&owner), expected.get(&owner).cloned());
                        }
                        Err(e) => prop_assert!(false, "unexpected error {e}"),
                    }
                }
                Op::Release { owner } => {
                    let owner = owner_of(owner);
                    ipam.release(&owner);
                    expected.remove(&owner);
                }
                Op::Restart => {
                    let records: Vec<Record> = expected
                        .iter()
                        .map(|(owner, a)| Record {
                            source: RecordSource::IpObject,
                            owner: owner.clone(),
                            subnet: a.subnet.clone(),
                            ips: a.ips.clone(),
                            mac: Some(a.mac.clone()),
                        })
                        .collect();
                    ipam = ipam_with(SUBNETS);
                    let conflicts = ipam.restore(records);
                    prop_assert!(conflicts.is_empty(), "{conflicts:?}");
                }
            }
            check_no_duplicates(&ipam)?;
            for (owner, allocation) in &expected {
                let held = ipam.lookup(owner);
                prop_assert_eq!(held.as_ref(), Some(allocation), "lost {}", owner);
            }
            prop_assert_eq!(ipam.allocations().len(), expected.len());
        }
    }
}
