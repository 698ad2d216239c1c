//! A pinned fast-path link whose interface was deleted and re-created under the same name
//! (an agent killed in the middle of an ADD, then the ADD retried by a new agent) is replaced,
//! not fatal: re-attaching succeeds and the new link is pinned.

use std::net::{IpAddr, Ipv4Addr};

use agent::datapath::{Datapath, LoadOptions, PodInterfaces, locate_object};
use sandbox::Cmd;
use sandbox::netns::{self, ScratchNamespaces};

fn veths(ns: &str) {
    for (a, b) in [("ph", "pc"), ("po", "pp")] {
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
        host_veth: "ph".into(),
        ovs_peer: "pp".into(),
        ip: IpAddr::V4(Ipv4Addr::new(10, 16, 0, 9)),
        mac: [0x0a, 0x58, 0x0a, 0x10, 0x00, 0x09],
        other_ips: Vec::new(),
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
