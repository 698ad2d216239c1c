//! 10,000 Services × 10 endpoints programmed into a loaded datapath: the maps hold every VIP,
//! backend and Maglev table, and the kernel memory they take is reported. (How fast this is,
//! is the benchmark's business: `cargo xtask bench --only service`.)

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use agent::datapath::{Datapath, LoadOptions, ReadServiceMaps, locate_object};
use agent::services::{ServiceSync, synthetic_vips};

#[test]
fn ten_thousand_services_of_ten_endpoints_fit_in_the_maps() {
    if !sandbox::privileged("ten_thousand_services_of_ten_endpoints_fit_in_the_maps") {
        return;
    }
    let object = locate_object().expect("eBPF object (cargo xtask build-ebpf)");
    let before = sandbox::bpf_map_memory().expect("bpftool");
    let mut datapath = Datapath::load(&object, &LoadOptions::default()).expect("datapath");
    let loaded = sandbox::bpf_map_memory().expect("bpftool");
    let mut sync = ServiceSync::default();
    let wanted = synthetic_vips(10_000, 10);
    let started = Instant::now();
    // As the agent does with what one round of watch events changed: stage, then one flush.
    for (service, vip) in &wanted {
        sync.stage(service, std::slice::from_ref(vip));
    }
    sync.flush(&mut datapath).expect("programmed");
    let elapsed = started.elapsed();
    let programmed = sandbox::bpf_map_memory().expect("bpftool");

    let services = datapath.services().unwrap();
    let backends = datapath.backends().unwrap();
    assert_eq!(services.len(), 10_000, "every VIP is in the service map");
    assert_eq!(
        backends.len(),
        100_000,
        "every backend is in the backend map"
    );
    assert!(services.iter().all(|(_, e)| e.backend_count == 10));
    // Each table names only its own service's backends, every one of them.
    for (_, entry) in services.iter().step_by(997) {
        let table = datapath.maglev(entry.id).unwrap().expect("a Maglev table");
        let ids: BTreeSet<u32> = table.into_iter().collect();
        let own: BTreeSet<u32> = backends
            .iter()
            .filter(|(_, b)| b.service_id == entry.id)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(ids, own, "service {}", entry.id);
    }
    eprintln!(
        "10,000 services × 10 endpoints programmed in {:.2} s; BPF map memory: {} MiB for the \
         loaded (empty) maps, {} MiB more with the services",
        elapsed.as_secs_f64(),
        (loaded.saturating_sub(before)) >> 20,
        (programmed.saturating_sub(loaded)) >> 20,
    );
    // Dropping them all gives the memory back.
    for (service, _) in &wanted {
        sync.stage(service, &[]);
    }
    sync.flush(&mut datapath).unwrap();
    assert!(datapath.services().unwrap().is_empty());
    assert!(datapath.backends().unwrap().is_empty());
}

/// The service map's entries' keys, as a set.
fn programmed_keys(datapath: &Datapath) -> BTreeSet<(IpAddr, u16)> {
    datapath
        .services()
        .unwrap()
        .iter()
        .map(|(k, _)| (agent::datapath::ip_from_bytes(&k.vip), k.port))
        .collect()
}

#[test]
fn a_full_services_map_leaves_what_does_not_fit_to_ovn_and_leaks_nothing() {
    if !sandbox::privileged("a_full_services_map_leaves_what_does_not_fit_to_ovn_and_leaks_nothing")
    {
        return;
    }
    let object = locate_object().expect("eBPF object (cargo xtask build-ebpf)");
    let options = LoadOptions {
        services_max_entries: Some(4),
        ..LoadOptions::default()
    };
    let mut datapath = Datapath::load(&object, &options).expect("datapath");
    let mut sync = ServiceSync::default();
    let wanted = synthetic_vips(6, 3);
    let key = |i: usize| (wanted[i].1.ip, wanted[i].1.port);
    let stage = |sync: &mut ServiceSync, i: usize| {
        let (service, vip) = &wanted[i];
        sync.stage(service, std::slice::from_ref(vip));
    };
    // Whatever else a tables-and-backends leak would look like: every table and backend in the
    // maps belongs to a programmed VIP, and each such VIP has exactly its own.
    let assert_no_leak = |datapath: &Datapath| {
        let services = datapath.services().unwrap();
        let ids: BTreeSet<u32> = services.iter().map(|(_, e)| e.id).collect();
        let backends = datapath.backends().unwrap();
        assert_eq!(
            backends.len(),
            3 * services.len(),
            "backends of unprogrammed VIPs"
        );
        assert!(backends.iter().all(|(_, b)| ids.contains(&b.service_id)));
        for id in 1..=16 {
            assert_eq!(
                datapath.maglev(id).unwrap().is_some(),
                ids.contains(&id),
                "Maglev table {id}"
            );
        }
    };

    for i in 0..4 {
        stage(&mut sync, i);
    }
    sync.flush(&mut datapath).expect("four VIPs fit");
    for i in 4..6 {
        stage(&mut sync, i);
    }
    let full = sync.flush(&mut datapath).expect_err("two VIPs do not fit");
    assert!(
        matches!(
            full,
            agent::datapath::DatapathError::ServicesFull { vips: 2 }
        ),
        "{full}"
    );
    assert_eq!(sync.unprogrammed(), 2);
    assert_eq!(programmed_keys(&datapath), (0..4).map(key).collect());
    assert_eq!(
        sync.programmed().count(),
        4,
        "the record says what the map holds"
    );
    assert_no_leak(&datapath);

    // Trying again without room changes nothing and leaks nothing.
    stage(&mut sync, 4);
    assert!(sync.flush(&mut datapath).is_err());
    assert_no_leak(&datapath);

    // One VIP goes and another comes in the same round: the room is made first.
    sync.stage(&wanted[0].0, &[]);
    stage(&mut sync, 4);
    sync.flush(&mut datapath).expect("the room made is used");
    assert_eq!(
        programmed_keys(&datapath),
        [1, 2, 3, 4].into_iter().map(key).collect()
    );
    assert_eq!(sync.unprogrammed(), 1, "the sixth still waits");
    assert_no_leak(&datapath);
    // A VIP that moves from one Service to another in one round stays programmed.
    sync.stage(&wanted[1].0, &[]);
    sync.stage("default/svc-1-renamed", std::slice::from_ref(&wanted[1].1));
    sync.flush(&mut datapath).expect("a move needs no room");
    assert_eq!(
        programmed_keys(&datapath),
        [1, 2, 3, 4].into_iter().map(key).collect()
    );
    assert_no_leak(&datapath);
    // Every programmed VIP's backends are the ones it asked for.
    let backends = datapath.backends().unwrap();
    for (k, entry) in datapath.services().unwrap() {
        let ip = agent::datapath::ip_from_bytes(&k.vip);
        let (_, vip) = wanted.iter().find(|(_, v)| v.ip == ip).unwrap();
        let own: BTreeSet<SocketAddr> = backends
            .iter()
            .filter(|(_, b)| b.service_id == entry.id)
            .map(|(_, b)| SocketAddr::new(agent::datapath::ip_from_bytes(&b.ip), b.port))
            .collect();
        assert_eq!(own, vip.backends);
    }
}
