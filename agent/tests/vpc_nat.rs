//! Custom VPCs leave through the external network with OVN-native NAT, as Kube-OVN's
//! `OvnEip`/`OvnFip`/`OvnSnatRule`/`OvnDnatRule` describe it: the VPC (`enableExternal`) gets
//! its router port on the external subnet (an underlay subnet on the ConfigMap's provider
//! network `external`), scheduled on the gateway node n1, and a default route to the external
//! router. Measured at the external router with real packets: the source address a VPC's pod
//! leaves with (its SNAT EIP; a FIP'd pod its FIP), a FIP and a DNAT port reached from
//! outside, and two VPCs with the same CIDR each leaving from their own EIP. The FIP and DNAT
//! targets are in a `private` subnet: the outside reaches what the rules publish, the VPC's
//! other subnet still does not reach them. A restarted controller keeps every EIP's address.
//! Deleting the FIP takes the translation away (the outside no longer reaches the pod).

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use sandbox::kovn::{KovnCluster, RunningPod};
use sandbox::{EXTERNAL_GATEWAY, EXTERNAL_NIC, netns};
use serde_json::json;

const INTERNET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const CIDR: &str = "10.60.0.0/24";
const LISTEN: u16 = 7000;

fn put<T: serde::de::DeserializeOwned + kube::Resource<DynamicType = ()> + serde::Serialize>(
    cluster: &KovnCluster,
    value: serde_json::Value,
) {
    let object: T = serde_json::from_value(value).unwrap();
    cluster.api.put(&object);
}

fn wait(what: &str, check: impl FnMut() -> bool) {
    sandbox::kovn::wait_for(what, Duration::from_secs(30), check).unwrap_or_else(|e| panic!("{e}"));
}

/// The external gateway ConfigMap (`gateways`, e.g. `n1`), the external subnet on its
/// provider network.
fn external_network(cluster: &KovnCluster, gateways: &str) {
    put::<ConfigMap>(
        cluster,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "ovn-external-gw-config", "namespace": "kube-system"},
            "data": {"enable-external-gw": "true", "external-gw-nodes": gateways,
                "type": "centralized", "external-gw-nic": EXTERNAL_NIC,
                "external-gw-switch": "external"}}),
    );
    put::<api::Vlan>(
        cluster,
        json!({"apiVersion": "kubeovn.io/v1", "kind": "Vlan",
            "metadata": {"name": "external"}, "spec": {"id": 0, "provider": "external"}}),
    );
    put::<api::Subnet>(
        cluster,
        json!({"apiVersion": "kubeovn.io/v1", "kind": "Subnet", "metadata": {"name": "external"},
            "spec": {"cidrBlock": "192.168.200.0/24", "gateway": EXTERNAL_GATEWAY.to_string(),
                "excludeIps": [EXTERNAL_GATEWAY.to_string()], "vlan": "external"}}),
    );
    cluster
        .wait_for_switch("external", Duration::from_secs(30))
        .unwrap();
}

/// VPC `vpc` with `enableExternal` and subnet `<vpc>-net` (CIDR) for namespace `vpc`.
fn tenant(cluster: &KovnCluster, vpc: &str, private: bool) {
    put::<api::Vpc>(
        cluster,
        json!({"apiVersion": "kubeovn.io/v1", "kind": "Vpc", "metadata": {"name": vpc},
            "spec": {"enableExternal": true}}),
    );
    vpc_subnet(cluster, vpc, &format!("{vpc}-net"), CIDR, vpc, private);
    wait(&format!("vpc {vpc}'s external port"), || {
        vpc_status(cluster, vpc).is_some_and(|s| s.enable_external)
    });
}

/// Subnet `switch` of `vpc` for namespace `ns`.
fn vpc_subnet(cluster: &KovnCluster, vpc: &str, switch: &str, cidr: &str, ns: &str, private: bool) {
    put::<api::Subnet>(
        cluster,
        json!({"apiVersion": "kubeovn.io/v1", "kind": "Subnet", "metadata": {"name": switch},
            "spec": {"cidrBlock": cidr, "vpc": vpc, "namespaces": [ns], "private": private}}),
    );
    put::<Namespace>(
        cluster,
        json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "annotations": {"ovn.kubernetes.io/logical_switch": switch}}}),
    );
    cluster
        .wait_for_switch(switch, Duration::from_secs(30))
        .unwrap();
}

fn vpc_status(cluster: &KovnCluster, vpc: &str) -> Option<api::VpcStatus> {
    cluster
        .api
        .all::<api::Vpc>()
        .into_iter()
        .find(|v| v.metadata.name.as_deref() == Some(vpc))
        .and_then(|v| v.status)
}

fn eip(cluster: &KovnCluster, name: &str) -> Ipv4Addr {
    put::<api::OvnEip>(
        cluster,
        json!({"apiVersion": "kubeovn.io/v1", "kind": "OvnEip", "metadata": {"name": name},
            "spec": {"externalSubnet": "external", "type": "nat"}}),
    );
    let mut address = None;
    wait(&format!("ovn-eip {name}'s address"), || {
        address = eip_status(cluster, name)
            .filter(|s| s.ready)
            .and_then(|s| s.v4_ip.parse().ok());
        address.is_some()
    });
    address.unwrap()
}

fn eip_status(cluster: &KovnCluster, name: &str) -> Option<api::OvnEipStatus> {
    cluster
        .api
        .all::<api::OvnEip>()
        .into_iter()
        .find(|e| e.metadata.name.as_deref() == Some(name))
        .and_then(|e| e.status)
}

fn pod(cluster: &KovnCluster, ns: &str, name: &str, node: usize) -> RunningPod {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns}, "spec": {"containers": [{"name": "c"}]}
    }))
    .unwrap();
    cluster.start_pod_object(pod, node).expect("a VPC pod")
}

/// The source address the external router sees a datagram from `from` arrive with (None:
/// nothing arrived).
fn source_seen_outside(router: &str, from: &RunningPod) -> Option<Ipv4Addr> {
    let sink = netns::run_in(router, || UdpSocket::bind((INTERNET, LISTEN)))
        .unwrap()
        .unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let ip = from.ip;
    let socket = netns::run_in(&from.netns, move || UdpSocket::bind((ip, 0)))
        .unwrap()
        .unwrap();
    let mut buf = [0u8; 16];
    for _ in 0..25 {
        let _ = socket.send_to(b"who", SocketAddr::from((INTERNET, LISTEN)));
        if let Ok((_, SocketAddr::V4(peer))) = sink.recv_from(&mut buf) {
            return Some(*peer.ip());
        }
    }
    None
}

/// Whether a datagram the external router sends to `address:port` reaches `to`.
fn reaches_from_outside(router: &str, address: Ipv4Addr, to: &RunningPod) -> bool {
    let ip = to.ip;
    let sink = netns::run_in(&to.netns, move || UdpSocket::bind((ip, LISTEN)))
        .unwrap()
        .unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let socket = netns::run_in(router, || UdpSocket::bind((EXTERNAL_GATEWAY, 0)))
        .unwrap()
        .unwrap();
    let mut buf = [0u8; 16];
    for _ in 0..15 {
        let _ = socket.send_to(b"in", SocketAddr::from((address, LISTEN)));
        if sink.recv_from(&mut buf).is_ok() {
            return true;
        }
    }
    false
}

/// Sends `count` numbered datagrams from `from` to `address:LISTEN`, 2 ms apart, and counts
/// what `to` receives: (distinct datagrams, duplicates).
fn datagrams(from: &RunningPod, address: Ipv4Addr, to: &RunningPod, count: u32) -> (u32, u32) {
    let ip = to.ip;
    let sink = netns::run_in(&to.netns, move || UdpSocket::bind((ip, LISTEN)))
        .unwrap()
        .unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let ip = from.ip;
    let socket = netns::run_in(&from.netns, move || UdpSocket::bind((ip, 0)))
        .unwrap()
        .unwrap();
    let receiving = std::thread::spawn(move || {
        let mut seen = std::collections::BTreeSet::new();
        let mut duplicates = 0;
        let mut buf = [0u8; 8];
        while let Ok(n) = sink.recv(&mut buf) {
            if n == 4 && !seen.insert(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]])) {
                duplicates += 1;
            }
        }
        (seen.len() as u32, duplicates)
    });
    for i in 0..count {
        let _ = socket.send_to(&i.to_be_bytes(), SocketAddr::from((address, LISTEN)));
        std::thread::sleep(Duration::from_millis(2));
    }
    receiving.join().unwrap()
}

/// Fast hits counted so far on node `i` (its pinned reasons map).
fn fast_hits(cluster: &KovnCluster, i: usize) -> u64 {
    use agent::datapath::{PinnedMaps, ReadMaps};
    let pins = cluster.sb.bpffs_dir().join(&cluster.sb.node(i).name);
    PinnedMaps::open(&pins)
        .expect("pinned maps")
        .packets_for(datapath_common::Reason::FastHit)
        .unwrap()
}

/// A TCP connection from the external router to `address:port`, accepted by `to` on port 22
/// (which sees the router's own address): what `to` wrote back.
fn tcp_through(router: &str, to: &RunningPod, address: Ipv4Addr, port: u16) -> String {
    let ip = to.ip;
    let listener = netns::run_in(&to.netns, move || TcpListener::bind((ip, 22)))
        .unwrap()
        .unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, peer) = listener.accept().unwrap();
        stream.write_all(b"hello").unwrap();
        peer
    });
    let mut answer = String::new();
    wait(&format!("a TCP connection to {address}:{port}"), || {
        netns::run_in(router, || {
            TcpStream::connect_timeout(
                &SocketAddr::from((address, port)),
                Duration::from_millis(500),
            )
        })
        .unwrap()
        .is_ok_and(|mut s| s.read_to_string(&mut answer).is_ok())
    });
    let peer = server.join().unwrap();
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(EXTERNAL_GATEWAY),
        "the pod sees the external client's own address"
    );
    answer
}

fn pings(from: &RunningPod, to: Ipv4Addr) -> bool {
    sandbox::Cmd::new("ping")
        .args(["-c", "2", "-i", "0.2", "-W", "1", "-q"])
        .arg(to.to_string())
        .netns(&from.netns)
        .run()
        .is_ok_and(|out| out.contains(" 2 received"))
}

#[test]
fn custom_vpcs_leave_and_are_reached_through_eips_fips_and_dnat() {
    if !sandbox::privileged("custom_vpcs_leave_and_are_reached_through_eips_fips_and_dnat") {
        return;
    }
    let mut cluster = KovnCluster::start(2, common::binaries()).expect("kovn on a sandbox");
    let external = cluster
        .sb
        .add_external_network(&[1], INTERNET)
        .expect("the external network");
    external_network(&cluster, "n1");
    // t1's pods are in a private subnet: its other subnet does not reach them, the outside
    // does through what a FIP or DNAT rule publishes.
    tenant(&cluster, "t1", true);
    vpc_subnet(&cluster, "t1", "t1-other", "10.61.0.0/24", "t1o", false);
    tenant(&cluster, "t2", false);

    // The router ports: on the external switch, scheduled on n1 (the gateway node).
    let nbctl = cluster.sb.central().nbctl();
    let chassis = nbctl
        .run(["lrp-get-gateway-chassis", "t1-external"])
        .unwrap();
    assert!(chassis.contains("t1-external-n1"), "{chassis}");

    let snat_t1 = eip(&cluster, "snat-t1");
    let snat_t2 = eip(&cluster, "snat-t2");
    let fip_address = eip(&cluster, "fip-a");
    let dnat_address = eip(&cluster, "dnat-b");
    assert_eq!(
        [snat_t1, snat_t2, fip_address, dnat_address]
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        4,
        "an address handed out twice"
    );
    for (name, vpc, subnet) in [("snat-t1", "t1", "t1-net"), ("snat-t2", "t2", "t2-net")] {
        put::<api::OvnSnatRule>(
            &cluster,
            json!({"apiVersion": "kubeovn.io/v1", "kind": "OvnSnatRule",
                "metadata": {"name": name},
                "spec": {"ovnEip": name, "vpcSubnet": subnet, "vpc": vpc}}),
        );
    }
    // Pods of both VPCs on n0 (not a gateway: their egress crosses to n1), with one CIDR.
    let a = pod(&cluster, "t1", "a", 0);
    let b = pod(&cluster, "t1", "b", 0);
    let c = pod(&cluster, "t2", "c", 0);
    let d = pod(&cluster, "t1o", "d", 1);
    assert_eq!(
        a.ip, c.ip,
        "both VPCs allocate from the same CIDR independently"
    );

    // SNAT: each VPC's pods leave from their own EIP.
    wait("the SNAT rules ready", || {
        cluster
            .api
            .all::<api::OvnSnatRule>()
            .iter()
            .all(|r| r.status.as_ref().is_some_and(|s| s.ready))
    });
    assert_eq!(source_seen_outside(&external.router, &b), Some(snat_t1));
    assert_eq!(source_seen_outside(&external.router, &c), Some(snat_t2));
    // A NATed conversation with the outside (requests and replies) stays OVS's: the fast
    // path learns nothing to or from the outside address or the EIP.
    assert!(
        pings(&b, INTERNET),
        "b does not reach the internet through SNAT"
    );
    let pins = cluster.sb.bpffs_dir().join(&cluster.sb.node(0).name);
    assert_eq!(
        (
            common::flows_involving(&pins, INTERNET),
            common::flows_involving(&pins, snat_t1)
        ),
        (0, 0),
        "the fast path learned a NATed flow"
    );

    // FIP: pod a leaves from it and is reached at it; b is not reached at it.
    put::<api::OvnFip>(
        &cluster,
        json!({"apiVersion": "kubeovn.io/v1", "kind": "OvnFip", "metadata": {"name": "fip-a"},
            "spec": {"ovnEip": "fip-a", "ipName": "a.t1"}}),
    );
    wait("the FIP ready", || {
        cluster
            .api
            .all::<api::OvnFip>()
            .iter()
            .any(|f| f.status.as_ref().is_some_and(|s| s.ready && s.vpc == "t1"))
    });
    wait(
        &format!("the outside reaching pod a at its FIP {fip_address}"),
        || reaches_from_outside(&external.router, fip_address, &a),
    );
    assert!(!reaches_from_outside(&external.router, fip_address, &b));
    assert!(
        !pings(&d, a.ip) && !pings(&d, b.ip),
        "t1's other subnet reaches the private subnet"
    );
    assert_eq!(source_seen_outside(&external.router, &a), Some(fip_address));
    wait("ovn-eip fip-a names its FIP", || {
        eip_status(&cluster, "fip-a").is_some_and(|s| s.nat == "fip")
    });

    // DNAT: dnat-b:2222 is b's TCP port 22.
    put::<api::OvnDnatRule>(
        &cluster,
        json!({"apiVersion": "kubeovn.io/v1", "kind": "OvnDnatRule",
            "metadata": {"name": "dnat-b"},
            "spec": {"ovnEip": "dnat-b", "ipName": "b.t1", "protocol": "tcp",
                "internalPort": "22", "externalPort": "2222"}}),
    );
    assert_eq!(
        tcp_through(&external.router, &b, dnat_address, 2222),
        "hello"
    );

    // The fast path inside the VPC: a to b (one node) is fast-pathed, every datagram once.
    let hits = fast_hits(&cluster, 0);
    let (received, duplicates) = datagrams(&a, b.ip, &b, 400);
    assert_eq!((received, duplicates), (400, 0), "a to b in the VPC");
    assert!(
        fast_hits(&cluster, 0) > hits + 200,
        "a to b is not fast-pathed"
    );
    // b reaching a, on its own node, through a's FIP: translated by the gateway node, every
    // datagram once (the fast path replays no translation it did not see).
    let (received, duplicates) = datagrams(&b, fip_address, &a, 400);
    assert_eq!((received, duplicates), (400, 0), "b to a through a's FIP");

    // Kube-OVN's VPC NAT gateway objects, served as OVN NAT: VPC t3 (the same CIDR again, no
    // enableExternal) gets its way out from a VpcNatGateway, its pods leave from an
    // IptablesEIP by an IptablesSnatRule, one of them is reached at an IptablesFIPRule's EIP.
    put::<api::Vpc>(
        &cluster,
        json!({"apiVersion": "kubeovn.io/v1", "kind": "Vpc", "metadata": {"name": "t3"}, "spec": {}}),
    );
    vpc_subnet(&cluster, "t3", "t3-net", CIDR, "t3", false);
    put::<api::VpcNatGateway>(
        &cluster,
        json!({"apiVersion": "kubeovn.io/v1", "kind": "VpcNatGateway", "metadata": {"name": "gw3"},
            "spec": {"vpc": "t3", "subnet": "t3-net", "lanIp": "10.60.0.254",
                "externalSubnets": ["external"], "selector": ["kubernetes.io/os: linux"]}}),
    );
    wait("vpc t3's external port from its NAT gateway", || {
        vpc_status(&cluster, "t3").is_some_and(|s| s.enable_external)
    });
    let e = pod(&cluster, "t3", "e", 0);
    let f = pod(&cluster, "t3", "f", 0);
    let iptables_eip = |name: &str| {
        put::<api::IptablesEIP>(
            &cluster,
            json!({"apiVersion": "kubeovn.io/v1", "kind": "IptablesEIP", "metadata": {"name": name},
                "spec": {"natGwDp": "gw3"}}),
        );
        let mut address = None;
        wait(&format!("iptables-eip {name}'s address"), || {
            address = cluster
                .api
                .all::<api::IptablesEIP>()
                .into_iter()
                .find(|x| x.metadata.name.as_deref() == Some(name))
                .and_then(|x| x.status)
                .filter(|s| s.ready)
                .and_then(|s| s.ip.parse::<Ipv4Addr>().ok());
            address.is_some()
        });
        address.unwrap()
    };
    let eip3 = iptables_eip("eip3");
    let eip3f = iptables_eip("eip3f");
    put::<api::IptablesSnatRule>(
        &cluster,
        json!({"apiVersion": "kubeovn.io/v1", "kind": "IptablesSnatRule", "metadata": {"name": "snat3"},
            "spec": {"eip": "eip3", "internalCIDR": CIDR}}),
    );
    put::<api::IptablesFIPRule>(
        &cluster,
        json!({"apiVersion": "kubeovn.io/v1", "kind": "IptablesFIPRule", "metadata": {"name": "fip3"},
            "spec": {"eip": "eip3f", "internalIp": e.ip.to_string()}}),
    );
    wait("f leaving from t3's SNAT IptablesEIP", || {
        source_seen_outside(&external.router, &f) == Some(eip3)
    });
    wait(
        "the outside reaching e at its IptablesFIPRule's EIP",
        || reaches_from_outside(&external.router, eip3f, &e),
    );
    assert_eq!(source_seen_outside(&external.router, &e), Some(eip3f));
    put::<api::IptablesDnatRule>(
        &cluster,
        json!({"apiVersion": "kubeovn.io/v1", "kind": "IptablesDnatRule", "metadata": {"name": "dnat3"},
            "spec": {"eip": "eip3", "externalPort": "8022", "protocol": "TCP",
                "internalIp": f.ip.to_string(), "internalPort": "22"}}),
    );
    assert_eq!(tcp_through(&external.router, &f, eip3, 8022), "hello");
    let gateway = cluster
        .api
        .all::<api::VpcNatGateway>()
        .into_iter()
        .find(|g| g.metadata.name.as_deref() == Some("gw3"))
        .and_then(|g| g.status)
        .unwrap();
    let unsupported = gateway
        .conditions
        .iter()
        .find(|c| c.type_ == "Unsupported")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        unsupported.contains("lanIp") && unsupported.contains("selector"),
        "the gateway pod's fields are not named unsupported: {unsupported:?}"
    );

    // A restarted controller keeps every EIP's address and hands none of them out again.
    cluster.restart_controller().expect("controller restart");
    let after = eip(&cluster, "after-restart");
    let eip3_after = cluster
        .api
        .all::<api::IptablesEIP>()
        .into_iter()
        .find(|x| x.metadata.name.as_deref() == Some("eip3"))
        .and_then(|x| x.status)
        .map(|s| s.ip);
    assert_eq!(eip3_after, Some(eip3.to_string()), "eip3 changed address");
    assert!(
        after != eip3 && after != eip3f,
        "an IptablesEIP's address handed out again"
    );
    for (name, held) in [
        ("snat-t1", snat_t1),
        ("snat-t2", snat_t2),
        ("fip-a", fip_address),
        ("dnat-b", dnat_address),
    ] {
        assert_ne!(after, held, "{name}'s address handed out again");
        assert_eq!(
            eip_status(&cluster, name).and_then(|s| s.v4_ip.parse().ok()),
            Some(held),
            "{name} changed address"
        );
    }
    for vpc in ["t1", "t2"] {
        let lrp = eip_status(&cluster, &format!("{vpc}-external")).unwrap();
        assert_ne!(
            lrp.v4_ip,
            after.to_string(),
            "{vpc}'s router port address handed out"
        );
        assert_eq!(lrp.r#type, "lrp");
    }

    // Deleting the FIP takes its translation away: a leaves from the VPC's SNAT EIP again.
    cluster.api.delete::<api::OvnFip>(None, "fip-a");
    wait("fip-a's translation gone", || {
        !reaches_from_outside(&external.router, fip_address, &a)
    });
    assert_eq!(source_seen_outside(&external.router, &a), Some(snat_t1));

    // enableExternal turned off: t2's router port, its default route and its lrp EIP go,
    // and its pods no longer reach the outside (its SNAT rule says why it is not ready).
    put::<api::Vpc>(
        &cluster,
        json!({"apiVersion": "kubeovn.io/v1", "kind": "Vpc", "metadata": {"name": "t2"},
            "spec": {"enableExternal": false}}),
    );
    wait("t2's external port gone", || {
        nbctl
            .run([
                "--if-exists",
                "get",
                "Logical_Router_Port",
                "t2-external",
                "name",
            ])
            .is_ok_and(|out| out.trim().is_empty())
            && eip_status(&cluster, "t2-external").is_none()
            && vpc_status(&cluster, "t2").is_some_and(|s| !s.enable_external)
    });
    let routes = nbctl.run(["lr-route-list", "t2"]).unwrap();
    assert!(
        !routes.contains("0.0.0.0/0"),
        "t2 still routes to the outside:\n{routes}"
    );
    assert_eq!(source_seen_outside(&external.router, &c), None);
    cluster.teardown().expect("teardown");
}

#[test]
fn a_vpcs_external_port_fails_over_to_the_next_gateway_node_within_5_s() {
    if !sandbox::privileged("a_vpcs_external_port_fails_over_to_the_next_gateway_node_within_5_s") {
        return;
    }
    let mut cluster = KovnCluster::start(3, common::binaries()).expect("kovn on a sandbox");
    let external = cluster
        .sb
        .add_external_network(&[1, 2], INTERNET)
        .expect("the external network");
    external_network(&cluster, "n1,n2");
    tenant(&cluster, "t1", false);
    let nbctl = cluster.sb.central().nbctl();
    let chassis = nbctl
        .run(["lrp-get-gateway-chassis", "t1-external"])
        .unwrap();
    let order: Vec<&str> = chassis
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(order, ["t1-external-n1", "t1-external-n2"], "{chassis}");
    let snat = eip(&cluster, "snat-t1");
    put::<api::OvnSnatRule>(
        &cluster,
        json!({"apiVersion": "kubeovn.io/v1", "kind": "OvnSnatRule", "metadata": {"name": "snat-t1"},
            "spec": {"ovnEip": "snat-t1", "vpcSubnet": "t1-net"}}),
    );
    let p = pod(&cluster, "t1", "p", 0);
    wait("egress from the SNAT EIP", || {
        source_seen_outside(&external.router, &p) == Some(snat)
    });

    // A stream to the outside, every 10 ms; n1 dies 3 s in (cut off the fabric and the
    // external network, as a node that is gone).
    let sink = netns::run_in(&external.router, || UdpSocket::bind((INTERNET, LISTEN)))
        .unwrap()
        .unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let ip = p.ip;
    let sender = netns::run_in(&p.netns, move || UdpSocket::bind((ip, 0)))
        .unwrap()
        .unwrap();
    let start = std::time::Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sending = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = sender.send_to(b"x", SocketAddr::from((INTERNET, LISTEN)));
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let receiving = std::thread::spawn(move || {
        let mut arrivals = Vec::new();
        let mut buf = [0u8; 4];
        while start.elapsed() < Duration::from_secs(16) {
            if let Ok((_, SocketAddr::V4(peer))) = sink.recv_from(&mut buf) {
                arrivals.push((start.elapsed().as_secs_f64(), *peer.ip()));
            }
        }
        arrivals
    });
    std::thread::sleep(Duration::from_secs(3));
    let cut = start.elapsed().as_secs_f64();
    cluster.sb.disconnect_node(1).expect("n1 off the fabric");
    sandbox::Cmd::new("ip")
        .args(["-n", &external.switch, "link", "set", "x-n1", "down"])
        .run()
        .expect("n1 off the external network");
    let arrivals = receiving.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    sending.join().unwrap();

    let after: Vec<f64> = arrivals
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| *t > cut)
        .collect();
    assert!(
        after.last().is_some_and(|t| *t > 14.0),
        "egress did not come back after n1 died (last arrival {:?}, cut at {cut:.1} s)",
        after.last()
    );
    let mut gap = after.first().map_or(f64::MAX, |t| t - cut);
    for w in after.windows(2) {
        gap = gap.max(w[1] - w[0]);
    }
    eprintln!("egress gap across the gateway failure: {gap:.2} s");
    assert!(gap < 5.0, "egress stopped for {gap:.2} s when n1 died");
    assert!(
        arrivals.iter().all(|(_, source)| *source == snat),
        "egress left with another source than the SNAT EIP"
    );
    cluster.teardown().expect("teardown");
}
