//! Restart: the agent process is killed with SIGKILL during a fast-pathed flow and started
//! again. Maps and TCX links are pinned, so the programs keep running while no agent exists,
//! and the new agent adopts them (replacing the programs atomically): the TCP connection
//! survives and a concurrent ping loses less than 0.1 %.

use std::process::Stdio;
use std::time::Duration;

use sandbox::traffic;
use sandbox::{Cmd, Pod, Sandbox};

mod common;

fn start_agent(sb: &Sandbox, pods: &[&Pod]) -> std::process::Child {
    let ovs_db = format!("unix:{}", sb.node(0).db.socket.display());
    common::start_agent(sb, pods, &["--ovs-db".to_owned(), ovs_db])
}

#[test]
fn agent_killed_and_restarted_during_a_fast_pathed_flow() {
    if !sandbox::privileged("agent_killed_and_restarted_during_a_fast_pathed_flow") {
        return;
    }
    let (sb, a, b) = common::one_node_with_two_pods();
    let mut agent = start_agent(&sb, &[&a, &b]);
    assert_eq!(traffic::ping(&a, b.ip, 3).unwrap().received, 3, "pods talk");

    const PINGS: u32 = 2500;
    let flood = a
        .cmd("ping")
        .args([
            "-n",
            "-q",
            "-i",
            "0.002",
            "-c",
            &PINGS.to_string(),
            "-W",
            "1",
        ])
        .arg(b.ip.to_string())
        .to_command()
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (stream, restarted) = std::thread::scope(|scope| {
        let stream = scope.spawn(|| traffic::iperf3(&a, &b, 6));
        std::thread::sleep(Duration::from_millis(1500));
        agent.kill().expect("SIGKILL the agent");
        agent.wait().unwrap();
        // A second without any agent: the pinned programs keep forwarding.
        std::thread::sleep(Duration::from_millis(1000));
        let restarted = start_agent(&sb, &[&a, &b]);
        (stream.join().unwrap(), restarted)
    });
    let mut agent = restarted;
    let report = stream.expect("the TCP connection survives the restart");
    assert!(report.intervals.len() >= 6, "{report:?}");
    for (second, bps) in report.intervals.iter().enumerate() {
        assert!(
            *bps > 1e7,
            "second {second} carried only {bps} bit/s: {report:?}"
        );
    }
    let out = flood.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary: {text}"));
    let received: u32 = summary
        .split(", ")
        .nth(1)
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    let lost = PINGS - received;
    assert!(
        f64::from(lost) / f64::from(PINGS) < 0.001,
        "{lost} of {PINGS} pings lost across the restart: {summary}"
    );

    // The restarted agent exports what the programs decided (read from the pinned maps, so
    // the counts include what happened under the first agent) on :10665 …
    let metrics = sandbox::netns::run_in(&sb.node(0).netns, || {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect("127.0.0.1:10665")?;
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut body = String::new();
        conn.read_to_string(&mut body)?;
        Ok::<_, std::io::Error>(body)
    })
    .unwrap()
    .expect("scrape :10665/metrics");
    let fast_hits: u64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("kovn_datapath_packets_total")
                && l.contains(&format!("interface=\"{}\"", a.host_veth))
                && l.contains("reason=\"fast_hit\"")
        })
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no fast_hit series for {}: {metrics}", a.host_veth));
    assert!(fast_hits > 1000, "{fast_hits} fast hits exported");
    assert!(metrics.contains("kovn_datapath_loaded 1"), "{metrics}");

    // … and the inspection commands read the same pins.
    let pin_dir = sb.bpffs_dir().join(&sb.node(0).name);
    let flows = Cmd::new(env!("CARGO_BIN_EXE_kovn-agent"))
        .args(["datapath", "flows", "--pin-dir"])
        .arg(pin_dir.display().to_string())
        .run()
        .expect("kovn-agent datapath flows");
    assert!(
        flows.contains(&format!("{}", a.ip)) && flows.contains(&format!("{}", b.ip)),
        "{flows}"
    );
    let stats = Cmd::new(env!("CARGO_BIN_EXE_kovn-agent"))
        .args(["datapath", "stats", "--pin-dir"])
        .arg(pin_dir.display().to_string())
        .run()
        .expect("kovn-agent datapath stats");
    assert!(stats.contains("fast_hit"), "{stats}");

    let _ = agent.kill();
    let _ = agent.wait();
    sb.teardown().expect("teardown removes the pins");
}

/// Policy changed while no agent runs: the pinned programs keep re-judging every fast-pathed
/// flow through OVS, so a plain ACL written while the agent is stopped still ends a
/// fast-pathed one-way stream within 200 ms at the receiver; the agent started afterwards
/// moves to a new generation and serves nothing of the old verdict; the ACL removed, the
/// stream flows and is fast-pathed again.
#[test]
fn an_acl_written_while_the_agent_is_stopped_ends_the_fast_path_within_200ms() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    if !sandbox::privileged("an_acl_written_while_the_agent_is_stopped_ends_the_fast_path") {
        return;
    }
    let (sb, a, b) = common::one_node_with_two_pods();
    let mut agent = start_agent(&sb, &[&a, &b]);
    let pins = sb.bpffs_dir().join(&sb.node(0).name);
    let fast_hits = || fast_hits(&pins);
    let stop = Arc::new(AtomicBool::new(false));
    let (_sink, sending) = common::udp_stream(&a, &b, 5002, stop.clone());
    std::thread::sleep(Duration::from_millis(800));
    assert!(fast_hits() > 50, "the stream is fast-pathed");
    agent.kill().expect("SIGKILL the agent");
    agent.wait().unwrap();
    let capture = traffic::Capture::start(
        &b.netns,
        "eth0",
        &format!("udp and src host {} and dst port 5002", a.ip),
        sb.dir().join("stopped-acl.pcap"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let acl = format!("ip4.dst == {} && udp.dst == 5002", b.ip);
    let nbctl = sb.central().nbctl();
    nbctl
        .run(["acl-add", "ovn-default", "to-lport", "2000", &acl, "drop"])
        .expect("add a drop ACL");
    let written = common::epoch_seconds();
    std::thread::sleep(Duration::from_millis(1000));
    let mut agent = start_agent(&sb, &[&a, &b]);
    std::thread::sleep(Duration::from_millis(1000));
    let times = capture.stop_with_times().unwrap();
    let before = common::assert_none_200ms_after(
        &times,
        written,
        "an ACL written while the agent was stopped (also after it started again)",
    );
    assert!(
        before > 50,
        "b received the stream before the ACL ({before} datagrams)"
    );

    // The ACL goes: the stream is delivered and fast-pathed again.
    nbctl
        .run([
            "--wait=hv",
            "acl-del",
            "ovn-default",
            "to-lport",
            "2000",
            &acl,
        ])
        .expect("remove the ACL");
    let hits = fast_hits();
    std::thread::sleep(Duration::from_millis(800));
    assert!(fast_hits() > hits + 50, "the stream is fast-pathed again");
    stop.store(true, Ordering::SeqCst);
    sending.join().unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    sb.teardown().expect("teardown removes the pins");
}

/// Fast hits counted so far, over every interface (from the pinned reasons map).
fn fast_hits(pins: &std::path::Path) -> u64 {
    use agent::datapath::{PinnedMaps, ReadMaps};
    PinnedMaps::open(pins)
        .expect("pinned maps")
        .packets_for(datapath_common::Reason::FastHit)
        .unwrap()
}

/// The kernel's view of a pinned map (bpftool): (key size, value size, entries).
fn pinned_map_shape(pin: &std::path::Path) -> (u64, u64, u64) {
    let out = Cmd::new("bpftool")
        .args(["-j", "map", "show", "pinned"])
        .arg(pin.display().to_string())
        .run()
        .expect("bpftool map show");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    (
        v["bytes_key"].as_u64().unwrap(),
        v["bytes_value"].as_u64().unwrap(),
        v["max_entries"].as_u64().unwrap(),
    )
}

/// A rolling update of the agent: the old agent's pins are in the layout of kovn 0.1.0 (no
/// version marker: this release's layout without it), one pinned map has a shape this datapath
/// does not use (as if a release had changed its value); the new agent adopts the rest,
/// creates that map anew instead of reusing it, marks the layout, and a TCP stream and the
/// fast path run on throughout.
#[test]
fn an_agent_upgrade_from_the_unversioned_pin_layout_keeps_a_fast_pathed_stream() {
    if !sandbox::privileged(
        "an_agent_upgrade_from_the_unversioned_pin_layout_keeps_a_fast_pathed_stream",
    ) {
        return;
    }
    let (sb, a, b) = common::one_node_with_two_pods();
    let pins = sb.bpffs_dir().join(&sb.node(0).name);
    let mut agent = start_agent(&sb, &[&a, &b]);
    assert!(
        agent::datapath::pin_layout::marker(&pins).is_dir(),
        "no layout marker"
    );
    assert_eq!(traffic::ping(&a, b.ip, 3).unwrap().received, 3, "pods talk");
    let wanted = pinned_map_shape(&pins.join(datapath_common::LB_AFFINITY_MAP));

    let (stream, upgraded, hits_before) = std::thread::scope(|scope| {
        let stream = scope.spawn(|| traffic::iperf3(&a, &b, 6));
        std::thread::sleep(Duration::from_millis(1500));
        agent.kill().expect("SIGKILL the old agent");
        agent.wait().unwrap();
        // The old release's layout: no marker; and a map of another shape in one pin.
        std::fs::remove_dir(agent::datapath::pin_layout::marker(&pins)).unwrap();
        let odd = pins.join(datapath_common::LB_AFFINITY_MAP);
        std::fs::remove_file(&odd).unwrap();
        Cmd::new("bpftool")
            .args(["map", "create"])
            .arg(odd.display().to_string())
            .args(["type", "hash", "key", "4", "value", "4", "entries", "8"])
            .args(["name", "kovn_old_shape"])
            .run()
            .expect("bpftool map create");
        let hits_before = fast_hits(&pins);
        let upgraded = start_agent(&sb, &[&a, &b]);
        (stream.join().unwrap(), upgraded, hits_before)
    });
    let mut agent = upgraded;
    let report = stream.expect("the TCP connection survives the upgrade");
    for (second, bps) in report.intervals.iter().enumerate() {
        assert!(
            *bps > 1e7,
            "second {second} carried only {bps} bit/s: {report:?}"
        );
    }
    // The odd map was not reused: the pin holds a map of this datapath's shape.
    assert_eq!(
        pinned_map_shape(&pins.join(datapath_common::LB_AFFINITY_MAP)),
        wanted,
        "the map of the other shape was adopted"
    );
    assert!(agent::datapath::pin_layout::marker(&pins).is_dir());
    // The flows map was adopted (its counters continued) and the fast path carries the
    // stream after the upgrade.
    let hits_after = fast_hits(&pins);
    assert!(
        hits_after > hits_before + 1000,
        "the fast path did not carry the stream after the upgrade: {hits_before} → {hits_after}"
    );
    assert!(
        common::flows_involving(&pins, a.ip) > 0,
        "no learned flows after the upgrade"
    );
    let _ = agent.kill();
    let _ = agent.wait();
    sb.teardown().expect("teardown removes the pins");
}
