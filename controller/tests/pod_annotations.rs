//! Pod annotations and IP objects as Kube-OVN writes them.

use api::Owner;
use api::annotations::NetworkKeys;
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
    let a = annotations_for(&allocation, subnet, &NetworkKeys::of("ovn"));
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
fn an_attachment_is_its_own_holder_written_under_its_providers_keys() {
    let mut ipam = Ipam::new();
    ipam.add_subnet(SubnetAllocator::new("ovn-default", "10.16.0.0/16", "", &[]).unwrap());
    ipam.add_subnet(SubnetAllocator::new("attach", "172.17.0.0/24", "", &[]).unwrap());
    let pod = Owner::pod("default", "web");
    let net1 = Owner::pod_network("default", "web", "attachnet.default.ovn");
    let other = Owner::pod_network("default", "webx", "attachnet.default.ovn");
    ipam.allocate("ovn-default", &pod, &[], None).unwrap();
    let allocation = ipam.allocate("attach", &net1, &[], None).unwrap();
    ipam.allocate("attach", &other, &[], None).unwrap();
    assert_eq!(allocation.ips[0].to_string(), "172.17.0.2");
    assert_eq!(ipam.attachments_of(&pod), vec![net1.clone()]);
    let keys = NetworkKeys::of("attachnet.default.ovn");
    let a = annotations_for(&allocation, ipam.subnet("attach").unwrap(), &keys);
    assert_eq!(
        a["attachnet.default.ovn.kubernetes.io/ip_address"],
        "172.17.0.2"
    );
    assert_eq!(
        a["attachnet.default.ovn.kubernetes.io/logical_switch"],
        "attach"
    );
    assert!(!a.contains_key("ovn.kubernetes.io/ip_address"));
    let ip = ip_object(&net1, "n0", &allocation);
    assert_eq!(
        ip.metadata.name.as_deref(),
        Some("web.default.attachnet.default.ovn")
    );
    assert_eq!(Owner::of_ip_object(&ip), Some(net1.clone()));
    // Releasing the pod's attachment leaves the pod's own address.
    ipam.release(&net1);
    assert!(ipam.lookup(&pod).is_some());
    assert!(ipam.attachments_of(&pod).is_empty());
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
