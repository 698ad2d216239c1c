//! A pinned fast-path link whose interface was deleted and re-created under the same name
//! (an agent killed in the middle of an ADD, then the ADD retried by a new agent) is replaced,
//! not fatal: re-attaching succeeds and the new link is pinned.

use std::net::{IpAddr, Ipv4Addr};

use agent::datapath::{Datapath, LoadOptions, PodInterfaces, locate_object};
use sandbox::Cmd;
use sandbox::netns::{self, ScratchNamespaces};

fn veths(ns: &str) {
    veth_pairs(ns, &[("ph", "pc"), ("po", "pp")]);
}

fn veth_pairs(ns: &str, pairs: &[(&str, &str)]) {
    for &(a, b) in pairs {
        Cmd::new("ip")
            .args(["link", "add", a, "type", "veth", "peer", "name", b])
            .netns(ns)
            .run()
            .unwrap();
        for link in [a, b] {
            Cmd::new("ip")
                .args(["link", "set", link, "up"])
                .netns(ns)
                .run()
                .unwrap();
        }
    }
}

#[test]
fn a_stale_pinned_link_is_replaced_when_the_pod_is_attached_again() {
    if !sandbox::privileged("a_stale_pinned_link_is_replaced_when_the_pod_is_attached_again") {
        return;
    }
    let object = locate_object().expect("eBPF object (cargo xtask build-ebpf)");
    let namespaces = ScratchNamespaces::new(&["pins"]).unwrap();
    let ns = namespaces.name(0).to_owned();
    let pin_dir =
        std::path::PathBuf::from(format!("/sys/fs/bpf/kovn-test-pins-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&pin_dir);
    let pod = PodInterfaces {
        name: "x.default".into(),
        owner: "x.default".into(),
        host_veth: "ph".into(),
        ovs_peer: "pp".into(),
        ip: IpAddr::V4(Ipv4Addr::new(10, 16, 0, 9)),
        mac: [0x0a, 0x58, 0x0a, 0x10, 0x00, 0x09],
        other_ips: Vec::new(),
        vpc: Some(api::names::DEFAULT_CLUSTER_ROUTER.into()),
    };
    let options = LoadOptions {
        pin_dir: Some(pin_dir.clone()),
        ..LoadOptions::default()
    };
    let result = netns::run_in(&ns, || {
        veths(&ns);
        {
            let mut first = Datapath::load(&object, &options).expect("load");
            first.attach_pod(&pod).expect("first attach");
        } // The agent dies: its pinned links stay.
        // The sandbox is re-created under the same names.
        for link in ["ph", "po"] {
            Cmd::new("ip")
                .args(["link", "del", link])
                .netns(&ns)
                .run()
                .unwrap();
        }
        veths(&ns);
        let mut second = Datapath::load(&object, &options).expect("load again");
        second.attach_pod(&pod)
    })
    .unwrap();
    let pinned = pin_dir
        .join("links")
        .read_dir()
        .map(|d| d.count())
        .unwrap_or(0);
    let _ = std::fs::remove_dir_all(&pin_dir);
    result.expect("attaching over stale pinned links");
    assert_eq!(pinned, 2, "both programs' links pinned afresh");
}

/// One address, one port: a second owner's attachment claiming an address another owner's
/// attached port holds is refused, and the holder keeps its endpoint entry; a newer
/// attachment of the same owner (a re-created sandbox) takes it over.
#[test]
fn an_address_held_by_another_owners_port_is_never_taken_over() {
    if !sandbox::privileged("an_address_held_by_another_owners_port_is_never_taken_over") {
        return;
    }
    let object = locate_object().expect("eBPF object (cargo xtask build-ebpf)");
    let namespaces = ScratchNamespaces::new(&["owners"]).unwrap();
    let ns = namespaces.name(0).to_owned();
    let ip = IpAddr::V4(Ipv4Addr::new(10, 16, 0, 9));
    let attachment = |name: &str, owner: &str, host: &str, peer: &str| PodInterfaces {
        name: name.into(),
        owner: owner.into(),
        host_veth: host.into(),
        ovs_peer: peer.into(),
        ip,
        mac: [0x0a, 0x58, 0x0a, 0x10, 0x00, 0x09],
        other_ips: Vec::new(),
        vpc: Some(api::names::DEFAULT_CLUSTER_ROUTER.into()),
    };
    let (refused, holder_after, taken_over) = netns::run_in(&ns, || {
        veth_pairs(
            &ns,
            &[
                ("ah", "ac"),
                ("ao", "ap"),
                ("eh", "ec"),
                ("eo", "ep"),
                ("bh", "bc"),
                ("bo", "bp"),
            ],
        );
        let mut dp = Datapath::load(&object, &LoadOptions::default()).expect("load");
        dp.attach_pod(&attachment("a1/eth0", "a.default", "ah", "ap"))
            .expect("a attached");
        let refused = dp.attach_pod(&attachment("e1/eth0", "evil.default", "eh", "ep"));
        let holder = |dp: &Datapath| {
            use agent::datapath::ReadMaps;
            dp.endpoints()
                .unwrap()
                .into_iter()
                .find(|(k, _)| k.ip == agent::datapath::ip_bytes(ip))
                .map(|(_, port)| port.host_ifindex)
        };
        let holder_after = holder(&dp);
        // a's sandbox re-created: its new attachment takes the address over.
        let taken_over = dp.attach_pod(&attachment("a2/eth0", "a.default", "bh", "bp"));
        (
            refused.map_err(|e| e.to_string()),
            holder_after,
            taken_over.map(|()| holder(&dp)),
        )
    })
    .unwrap();
    let err = refused.expect_err("another owner's attachment took a's address");
    assert!(err.contains("belongs to a.default"), "{err}");
    let a_ifindex = netns::ifindex(&ns, "ah").unwrap();
    assert_eq!(holder_after, Some(a_ifindex), "a keeps its endpoint entry");
    let new_ifindex = netns::ifindex(&ns, "bh").unwrap();
    assert_eq!(
        taken_over.expect("a's new sandbox attaches"),
        Some(new_ifindex),
        "the same owner's newer attachment holds the address"
    );
}
