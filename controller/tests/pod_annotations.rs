//! Pod annotations and IP objects as Kube-OVN writes them.

use api::Owner;
use controller::ipam::{Ipam, SubnetAllocator};
use controller::pod::{annotations_for, ip_object, static_ips};

#[test]
fn annotations_and_ip_object_match_kube_ovn() {
    let mut ipam = Ipam::new();
    ipam.add_subnet(
        SubnetAllocator::new("ovn-default", "10.16.0.0/16,fd00:10:16::/112", "", &[]).unwrap(),
    );
    let allocation = ipam
        .allocate(
            "ovn-default",
            &Owner::pod("default", "web"),
            &[],
            Some("00:00:00:aa:bb:cc"),
        )
        .unwrap();
    let subnet = ipam.subnet("ovn-default").unwrap();
    let a = annotations_for(&allocation, subnet);
    assert_eq!(a["ovn.kubernetes.io/ip_address"], "10.16.0.2,fd00:10:16::2");
    assert_eq!(a["ovn.kubernetes.io/mac_address"], "00:00:00:aa:bb:cc");
    assert_eq!(a["ovn.kubernetes.io/cidr"], "10.16.0.0/16,fd00:10:16::/112");
    assert_eq!(a["ovn.kubernetes.io/gateway"], "10.16.0.1,fd00:10:16::1");
    assert_eq!(a["ovn.kubernetes.io/logical_switch"], "ovn-default");
    assert_eq!(a["ovn.kubernetes.io/allocated"], "true");
    assert!(
        !a.contains_key("ovn.kubernetes.io/routed"),
        "routed only once NB is programmed"
    );

    let ip = ip_object(&Owner::pod("default", "web"), "n0", &allocation);
    assert_eq!(ip.metadata.name.as_deref(), Some("web.default"));
    let json = serde_json::to_value(&ip).unwrap();
    assert_eq!(json["spec"]["v4IpAddress"], "10.16.0.2");
    assert_eq!(json["spec"]["v6IpAddress"], "fd00:10:16::2");
    assert_eq!(json["spec"]["ipAddress"], "10.16.0.2,fd00:10:16::2");
    assert_eq!(json["spec"]["nodeName"], "n0");
}

#[test]
fn static_ip_annotations_parse_or_say_why_not() {
    assert_eq!(
        static_ips("10.16.0.20,fd00::20").unwrap(),
        vec![
            "10.16.0.20".parse::<std::net::IpAddr>().unwrap(),
            "fd00::20".parse().unwrap()
        ]
    );
    assert_eq!(static_ips("10.16.0.21/16").unwrap().len(), 1);
    assert!(static_ips("10.16.0.x").unwrap_err().contains("ip_address"));
}
