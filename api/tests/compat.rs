//! Kube-OVN compatibility: objects as Kube-OVN users write them parse into kovn's types, and
//! the checked-in CRD manifests are what the types generate.
#![recursion_limit = "256"] // the json! literals of every Kube-OVN field

use api::{GatewayType, IP, Protocol, Subnet, SubnetSpec};

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
    assert_eq!(spec.protocol, Some(Protocol::Dual));
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

/// A Kube-OVN Subnet with every field of Kube-OVN's SubnetSpec and SubnetStatus set.
fn every_subnet_field() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "kubeovn.io/v1", "kind": "Subnet", "metadata": {"name": "full"},
        "spec": {
            "default": false, "vpc": "tenant", "protocol": "IPv4", "namespaces": ["a"],
            "cidrBlock": "10.70.0.0/16", "gateway": "10.70.0.1", "excludeIps": ["10.70.0.1"],
            "provider": "net1.a.ovn", "gatewayType": "centralized", "gatewayNode": "n1:10.0.0.9",
            "gatewayNodeSelectors": [{"matchLabels": {"gw": "true"}}],
            "natOutgoing": true, "externalEgressGateway": "192.0.2.1",
            "policyRoutingPriority": 1000, "policyRoutingTableID": 1000, "mtu": 1300,
            "private": true, "allowSubnets": ["10.16.0.0/16"], "vlan": "vlan10",
            "vips": ["10.70.0.100"], "logicalGateway": true, "disableGatewayCheck": true,
            "disableInterConnection": true, "enableDHCP": true, "dhcpV4Options": "uuid4",
            "dhcpV6Options": "uuid6", "enableIPv6RA": true, "ipv6RAConfigs": "address_mode=dhcpv6_stateful",
            "acls": [{"direction": "to-lport", "priority": 1000, "match": "ip4", "action": "allow"}],
            "allowEWTraffic": true,
            "natOutgoingPolicyRules": [{"match": {"srcIPs": "10.70.0.0/24", "dstIPs": "0.0.0.0/0"}, "action": "forward"}],
            "u2oInterconnectionIP": "10.70.0.254", "u2oInterconnection": true,
            "u2oFeatures": {"overlayOnlyRouting": true}, "enableLb": false, "enableEcmp": true,
            "enableMulticastSnoop": true, "enableExternalLBAddress": true, "routeTable": "rt1",
            "namespaceSelectors": [{"matchExpressions": [{"key": "team", "operator": "In", "values": ["x"]}]}],
            "nodeNetwork": "storage"
        },
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "ResourceReady",
                            "lastUpdateTime": "2026-12-01T00:00:00Z",
                            "lastTransitionTime": "2026-12-01T00:00:00Z"}],
            "v4availableIPs": 65530.0, "v4availableIPrange": "10.70.0.2-10.70.255.254",
            "v4usingIPs": 3.0, "v4usingIPrange": "10.70.0.2-10.70.0.4",
            "v6availableIPs": 0.0, "v6availableIPrange": "x", "v6usingIPs": 0.0, "v6usingIPrange": "y",
            "activateGateway": "n1", "dhcpV4OptionsUUID": "u4", "dhcpV6OptionsUUID": "u6",
            "u2oInterconnectionIP": "10.70.0.254", "u2oInterconnectionMAC": "00:00:00:00:00:01",
            "u2oInterconnectionVPC": "tenant",
            "natOutgoingPolicyRules": [{"ruleID": "r1", "match": {"srcIPs": "10.70.0.0/24"}, "action": "nat"}],
            "mcastQuerierIP": "10.70.0.253", "mcastQuerierMAC": "00:00:00:00:00:02"
        }
    })
}

fn every_vpc_field() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "kubeovn.io/v1", "kind": "Vpc", "metadata": {"name": "tenant"},
        "spec": {
            "defaultSubnet": "full", "namespaces": ["a"],
            "staticRoutes": [{"policy": "policyDst", "cidr": "0.0.0.0/0", "nextHopIP": "10.70.0.254",
                              "ecmpMode": "ecmp", "bfdId": "b1", "routeTable": "rt1"}],
            "policyRoutes": [{"priority": 10, "match": "ip4.src==10.70.0.0/24", "action": "reroute",
                              "nextHopIP": "10.70.0.253"}],
            "vpcPeerings": [{"remoteVpc": "other", "localConnectIP": "169.254.0.1/30"}],
            "enableExternal": true, "extraExternalSubnets": ["ext1"], "enableBfd": true,
            "bfdPort": {"enabled": true, "ip": "10.255.255.255", "nodeSelector": {"matchLabels": {"gw": "true"}}},
            "dynamicRouting": {"enabled": true, "redistribute": ["connected"], "localOnly": true,
                               "maintainVrf": true, "vrfName": "ovnvrf1", "vrfId": 10}
        },
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}], "standby": true, "default": false,
            "defaultLogicalSwitch": "full", "router": "tenant", "tcpLoadBalancer": "t",
            "udpLoadBalancer": "u", "sctpLoadBalancer": "s", "tcpSessionLoadBalancer": "ts",
            "udpSessionLoadBalancer": "us", "sctpSessionLoadBalancer": "ss", "subnets": ["full"],
            "vpcPeerings": ["other"], "enableExternal": true, "extraExternalSubnets": ["ext1"],
            "enableBfd": true, "bfdPort": {"name": "bfd-tenant", "ip": "10.255.255.255", "nodes": ["n1"]}
        }
    })
}

fn every_ip_field() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "kubeovn.io/v1", "kind": "IP", "metadata": {"name": "p1.a"},
        "spec": {"podName": "p1", "namespace": "a", "subnet": "full", "attachSubnets": ["s2"],
                 "nodeName": "n1", "ipAddress": "10.70.0.5", "v4IpAddress": "10.70.0.5",
                 "v6IpAddress": "fd00::5", "attachIps": ["10.80.0.5"], "macAddress": "00:00:00:00:00:05",
                 "attachMacs": ["00:00:00:00:00:06"], "containerID": "abc", "podType": "StatefulSet"}
    })
}

/// Every path of `object` that the API server would prune under `schema` (a structural
/// OpenAPI v3 schema: fields not in `properties` are dropped unless the object is marked
/// x-kubernetes-preserve-unknown-fields).
fn pruned(object: &serde_json::Value, schema: &serde_json::Value, at: &str, out: &mut Vec<String>) {
    match object {
        serde_json::Value::Object(map) => {
            if schema["x-kubernetes-preserve-unknown-fields"] == true
                && schema["properties"].is_null()
            {
                return;
            }
            for (key, value) in map {
                let path = format!("{at}.{key}");
                match schema["properties"].get(key) {
                    Some(sub) => pruned(value, sub, &path, out),
                    None if schema["x-kubernetes-preserve-unknown-fields"] == true => {}
                    None if schema["additionalProperties"].is_object() => {
                        pruned(value, &schema["additionalProperties"], &path, out)
                    }
                    None => out.push(path),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pruned(item, &schema["items"], &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn kovn_crds_over_kube_ovn_objects_lose_no_field() {
    let crds = api::crds();
    for object in [every_subnet_field(), every_vpc_field(), every_ip_field()] {
        let kind = object["kind"].as_str().unwrap();
        let crd = crds.iter().find(|c| c.spec.names.kind == kind).unwrap();
        let schema = serde_json::to_value(
            crd.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap();
        let mut lost = Vec::new();
        for part in ["spec", "status"] {
            if !object[part].is_null() {
                pruned(&object[part], &schema["properties"][part], part, &mut lost);
            }
        }
        assert!(
            lost.is_empty(),
            "{kind}: the API server would prune {lost:?}"
        );
        // The status subresource, as Kube-OVN has it for Subnet and Vpc.
        if kind != "IP" {
            assert!(
                crd.spec.versions[0]
                    .subresources
                    .as_ref()
                    .is_some_and(|s| s.status.is_some()),
                "{kind} has no status subresource"
            );
        }
    }
}

#[test]
fn kube_ovn_objects_round_trip_through_kovns_types_unchanged() {
    let normalize = |mut v: serde_json::Value| {
        // kovn always writes these two (Kube-OVN too: they have no omitempty).
        v["spec"].as_object_mut().map(|s| s.remove("default"));
        v
    };
    let subnet: Subnet = serde_json::from_value(every_subnet_field()).unwrap();
    assert_eq!(
        normalize(serde_json::to_value(&subnet).unwrap())["spec"],
        normalize(every_subnet_field())["spec"]
    );
    assert_eq!(
        serde_json::to_value(&subnet).unwrap()["status"],
        every_subnet_field()["status"]
    );
    let vpc: api::Vpc = serde_json::from_value(every_vpc_field()).unwrap();
    assert_eq!(serde_json::to_value(&vpc).unwrap(), every_vpc_field());
    let ip: IP = serde_json::from_value(every_ip_field()).unwrap();
    assert_eq!(serde_json::to_value(&ip).unwrap(), every_ip_field());
}

#[test]
fn every_field_kovn_does_not_act_on_is_named_unsupported() {
    let subnet: Subnet = serde_json::from_value(every_subnet_field()).unwrap();
    let named = subnet.spec.unsupported_fields();
    for field in [
        "mtu",
        "gatewayNodeSelectors",
        "externalEgressGateway",
        "policyRoutingPriority",
        "policyRoutingTableID",
        "vips",
        "enableDHCP",
        "dhcpV4Options",
        "dhcpV6Options",
        "enableIPv6RA",
        "ipv6RAConfigs",
        "allowEWTraffic",
        "natOutgoingPolicyRules",
        "u2oInterconnection",
        "u2oInterconnectionIP",
        "u2oFeatures",
        "enableLb: false",
        "enableMulticastSnoop",
        "enableExternalLBAddress",
        "routeTable",
        "namespaceSelectors",
        "nodeNetwork",
    ] {
        assert!(
            named.iter().any(|n| n == field),
            "{field} is not named: {named:?}"
        );
    }
    // In the default VPC the nodes' policy routes serve externalEgressGateway.
    let mut default_vpc = subnet.clone();
    default_vpc.spec.vpc = String::new();
    let named_there = default_vpc.spec.unsupported_fields();
    for acted in [
        "externalEgressGateway",
        "policyRoutingPriority",
        "policyRoutingTableID",
    ] {
        assert!(
            !named_there.iter().any(|n| n == acted),
            "{acted} is named in the default VPC"
        );
    }
    // What kovn does act on is not named.
    for acted in [
        "cidrBlock",
        "natOutgoing",
        "private",
        "acls",
        "enableEcmp",
        "excludeIps",
        "gatewayNode",
        "vlan",
        "logicalGateway",
    ] {
        assert!(
            !named.iter().any(|n| n == acted),
            "{acted} named unsupported"
        );
    }
    // A field of a Kube-OVN newer than kovn: kept and named.
    let mut newer = every_subnet_field();
    newer["spec"]["someFutureField"] = serde_json::json!({"x": 1});
    let subnet: Subnet = serde_json::from_value(newer).unwrap();
    assert!(
        subnet
            .spec
            .unsupported_fields()
            .iter()
            .any(|n| n.starts_with("someFutureField")),
        "an unknown field is not named"
    );
    assert_eq!(
        serde_json::to_value(&subnet).unwrap()["spec"]["someFutureField"]["x"],
        1
    );
    // A plain overlay subnet has nothing unsupported.
    let plain: Subnet = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubeovn.io/v1", "kind": "Subnet", "metadata": {"name": "p"},
        "spec": {"cidrBlock": "10.71.0.0/16", "provider": "ovn", "gatewayNode": "n1,n2",
                 "disableGatewayCheck": true, "enableLb": true}
    }))
    .unwrap();
    assert_eq!(plain.spec.unsupported_fields(), Vec::<String>::new());

    let vpc: api::Vpc = serde_json::from_value(every_vpc_field()).unwrap();
    let named = vpc.spec.unsupported_fields();
    assert!(
        !named.iter().any(|n| n == "enableExternal"),
        "enableExternal is served"
    );
    for field in [
        "vpcPeerings",
        "extraExternalSubnets",
        "enableBfd",
        "bfdPort",
        "dynamicRouting",
        "staticRoutes[].routeTable",
        "staticRoutes[].ecmpMode",
        "staticRoutes[].bfdId",
    ] {
        assert!(
            named.iter().any(|n| n == field),
            "{field} is not named: {named:?}"
        );
    }
}

#[test]
fn gateway_nodes_read_both_of_kube_ovns_forms() {
    let spec = |gateway_node: &str| SubnetSpec {
        gateway_node: gateway_node.into(),
        ..SubnetSpec::default()
    };
    let nodes = spec(" n1:172.18.0.2, n2 ,,n3:fd00::3")
        .gateway_nodes()
        .unwrap();
    let got: Vec<(&str, Option<String>)> = nodes
        .iter()
        .map(|g| (g.node.as_str(), g.egress_ip.map(|ip| ip.to_string())))
        .collect();
    assert_eq!(
        got,
        [
            ("n1", Some("172.18.0.2".to_owned())),
            ("n2", None),
            ("n3", Some("fd00::3".to_owned()))
        ]
    );
    assert!(spec("").gateway_nodes().unwrap().is_empty());
    for bad in ["n1:10.0.0.300", ":10.0.0.1", "n1,n1:10.0.0.1"] {
        assert!(spec(bad).gateway_nodes().is_err(), "{bad} accepted");
    }
}

#[test]
fn ovn_nat_objects_read_as_kube_ovn_writes_them() {
    // The examples of Kube-OVN's OVN EIP/FIP/SNAT/DNAT guide.
    let eip: api::OvnEip = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubeovn.io/v1", "kind": "OvnEip", "metadata": {"name": "eip-static"},
        "spec": {"externalSubnet": "external204", "type": "nat", "v4Ip": "10.5.204.101"}
    }))
    .unwrap();
    assert_eq!(eip.spec.external_subnet, "external204");
    assert_eq!(eip.spec.v4_ip, "10.5.204.101");
    assert!(eip.spec.unsupported_fields().is_empty());
    let fip: api::OvnFip = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubeovn.io/v1", "kind": "OvnFip", "metadata": {"name": "eip-static"},
        "spec": {"ovnEip": "eip-static", "ipName": "vpc-1-busybox01.vpc1", "type": "distributed"}
    }))
    .unwrap();
    assert_eq!(fip.spec.ip_name, "vpc-1-busybox01.vpc1");
    assert!(fip.spec.unsupported_fields()[0].starts_with("type distributed"));
    let snat: api::OvnSnatRule = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubeovn.io/v1", "kind": "OvnSnatRule", "metadata": {"name": "snat01"},
        "spec": {"ovnEip": "snat-for-subnet-in-vpc", "vpcSubnet": "vpc1-subnet1", "future": 1}
    }))
    .unwrap();
    assert_eq!(snat.spec.vpc_subnet, "vpc1-subnet1");
    assert!(snat.spec.unsupported_fields()[0].starts_with("future"));
    let dnat: api::OvnDnatRule = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubeovn.io/v1", "kind": "OvnDnatRule", "metadata": {"name": "eip-dnat"},
        "spec": {"ovnEip": "eip-dnat", "ipName": "vpc-1-busybox01.vpc1", "protocol": "tcp",
                 "internalPort": "22", "externalPort": "22"}
    }))
    .unwrap();
    assert_eq!(
        (dnat.spec.internal_port.as_str(), dnat.spec.protocol()),
        ("22", "tcp")
    );
    let back = serde_json::to_value(&dnat).unwrap();
    assert_eq!(back["spec"]["ipName"], "vpc-1-busybox01.vpc1");
    assert_eq!(back["spec"]["externalPort"], "22");
}

#[test]
fn vpc_nat_gateway_objects_read_as_kube_ovn_writes_them() {
    // The examples of Kube-OVN's VPC NAT gateway guide.
    let gw: api::VpcNatGateway = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubeovn.io/v1", "kind": "VpcNatGateway", "metadata": {"name": "gw1"},
        "spec": {"vpc": "test-vpc-1", "subnet": "net1", "lanIp": "10.0.1.254",
                 "selector": ["kubernetes.io/hostname: kube-ovn-worker", "kubernetes.io/os: linux"],
                 "externalSubnets": ["ovn-vpc-external-network"]}
    }))
    .unwrap();
    assert_eq!(gw.spec.vpc, "test-vpc-1");
    let named = gw.spec.unsupported_fields();
    assert!(named.contains(&"lanIp".to_owned()) && named.contains(&"selector".to_owned()));
    let eip: api::IptablesEIP = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubeovn.io/v1", "kind": "IptablesEIP", "metadata": {"name": "eip-static"},
        "spec": {"natGwDp": "gw1", "v4ip": "10.0.1.111"}
    }))
    .unwrap();
    assert_eq!(
        (eip.spec.nat_gw_dp.as_str(), eip.spec.v4ip.as_str()),
        ("gw1", "10.0.1.111")
    );
    let dnat: api::IptablesDnatRule = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubeovn.io/v1", "kind": "IptablesDnatRule", "metadata": {"name": "dnat01"},
        "spec": {"eip": "eipd01", "externalPort": "8888", "internalIp": "10.0.1.10",
                 "internalPort": "80", "protocol": "TCP"}
    }))
    .unwrap();
    assert_eq!(dnat.spec.protocol(), "tcp");
    let back = serde_json::to_value(&dnat).unwrap();
    assert_eq!(back["spec"]["internalIp"], "10.0.1.10");
    let snat: api::IptablesSnatRule = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubeovn.io/v1", "kind": "IptablesSnatRule", "metadata": {"name": "snat01"},
        "spec": {"eip": "eip-static", "internalCIDR": "10.0.1.0/24"}
    }))
    .unwrap();
    assert_eq!(
        serde_json::to_value(&snat).unwrap()["spec"]["internalCIDR"],
        "10.0.1.0/24"
    );
    let fip: api::IptablesFIPRule = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubeovn.io/v1", "kind": "IptablesFIPRule", "metadata": {"name": "fip01"},
        "spec": {"eip": "eipf01", "internalIp": "10.0.1.5"}
    }))
    .unwrap();
    assert_eq!(fip.spec.internal_ip, "10.0.1.5");
}
