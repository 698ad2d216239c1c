//! Restart: the agent process is killed with SIGKILL during a fast-pathed flow and started
//! again. Maps and TCX links are pinned, so the programs keep running while no agent exists,
//! and the new agent adopts them (replacing the programs atomically): the TCP connection
//! survives and a concurrent ping loses less than 0.1 %.

use std::process::Stdio;
use std::time::Duration;

use sandbox::traffic;
use sandbox::{Cmd, Handoff, Pod, Sandbox, SandboxConfig};

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
    let mut sb = Sandbox::start(SandboxConfig {
        nodes: 1,
        handoff: Handoff::Datapath,
    })
    .expect("sandbox");
    let a = sb.add_pod(0, "a").unwrap();
    let b = sb.add_pod(0, "b").unwrap();
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
