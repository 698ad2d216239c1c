//! Kube-OVN compatibility: objects as Kube-OVN users write them parse into kovn's types, and
//! the checked-in CRD manifests are what the types generate.

use api::{GatewayType, IP, Protocol, Subnet};

#[test]
fn a_kube_ovn_subnet_parses_with_every_field() {
    let subnet: Subnet = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubeovn.io/v1",
        "kind": "Subnet",
        "metadata": {"name": "tenant-a"},
        "spec": {
            "protocol": "Dual",
            "cidrBlock": "10.66.0.0/16,fd00:66::/64",
            "gateway": "10.66.0.1,fd00:66::1",
            "excludeIps": ["10.66.0.1..10.66.0.10"],
            "namespaces": ["tenant-a"],
            "natOutgoing": true,
            "gatewayType": "centralized",
            "gatewayNode": "node1,node2",
            "enableEcmp": true,
            "private": true,
            "allowSubnets": ["10.16.0.0/16"],
            "mtu": 1400
        },
        "status": {"v4availableIPs": 65524, "v4usingIPs": 2, "conditions": [
            {"type": "Ready", "status": "True", "reason": "ResourceReady"}]}
    }))
    .expect("a Kube-OVN Subnet");
    let spec = &subnet.spec;
    assert_eq!(spec.protocol, Protocol::Dual);
    assert_eq!(spec.cidr_block, "10.66.0.0/16,fd00:66::/64");
    assert_eq!(spec.gateway_type, GatewayType::Centralized);
    assert!(spec.nat_outgoing && spec.enable_ecmp && spec.private);
    assert_eq!(spec.allow_subnets, vec!["10.16.0.0/16"]);
    assert_eq!(spec.mtu, Some(1400));
    let status = subnet.status.as_ref().unwrap();
    assert_eq!(status.v4_available_ips, 65524.0);
    assert_eq!(status.conditions[0].type_, "Ready");
    // And back out with Kube-OVN's field names.
    let json = serde_json::to_value(&subnet).unwrap();
    assert_eq!(json["spec"]["cidrBlock"], "10.66.0.0/16,fd00:66::/64");
    assert_eq!(json["spec"]["gatewayType"], "centralized");
    assert_eq!(json["status"]["v4usingIPs"], 2.0);
}

#[test]
fn a_kube_ovn_ip_parses() {
    let ip: IP = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubeovn.io/v1", "kind": "IP", "metadata": {"name": "p1.default"},
        "spec": {"podName": "p1", "namespace": "default", "subnet": "ovn-default",
                 "nodeName": "n0", "ipAddress": "10.16.0.2", "v4IpAddress": "10.16.0.2",
                 "macAddress": "00:00:00:11:22:33", "containerID": "abc"}
    }))
    .unwrap();
    assert_eq!(ip.spec.v4_ip_address, "10.16.0.2");
    assert_eq!(ip.spec.container_id, "abc");
}

#[test]
fn crds_are_cluster_scoped_in_kubeovn_io_with_printer_columns() {
    for crd in api::crds() {
        assert_eq!(crd.spec.group, "kubeovn.io");
        assert_eq!(crd.spec.scope, "Cluster");
        assert!(
            crd.spec.versions[0]
                .additional_printer_columns
                .as_ref()
                .is_some_and(|c| !c.is_empty()),
            "{} has no printer columns",
            crd.spec.names.kind
        );
    }
}

#[test]
fn checked_in_crd_manifests_are_fresh() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
    for (name, yaml) in api::crd_manifests() {
        let checked_in = std::fs::read_to_string(dir.join(&name))
            .unwrap_or_else(|_| panic!("deploy/crds/{name} missing: run `cargo xtask gen-crds`"));
        assert!(
            checked_in == yaml,
            "deploy/crds/{name} is stale: run `cargo xtask gen-crds`"
        );
    }
}
