//! A datapath that cannot load (here a corrupt object; the same path as a verifier
//! rejection) leaves the node on OVS: the agent keeps running and says so in a log line and
//! in `kovn_datapath_loaded 0` on its metrics endpoint.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

mod common;

#[test]
fn an_unloadable_datapath_leaves_the_agent_serving_on_ovs() {
    let dir = std::env::temp_dir().join(format!("kovn-degraded-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let object = dir.join("corrupt.o");
    std::fs::write(&object, b"\x7fELF this is not a BPF object").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_kovn-agent"))
        .args(["datapath", "run", "--object"])
        .arg(&object)
        .arg("--pin-dir")
        .arg(dir.join("pins"))
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(agent.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        "ready",
        "the agent keeps running without its datapath"
    );
    let mut metrics = String::new();
    for _ in 0..50 {
        if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
            conn.read_to_string(&mut metrics).unwrap();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = agent.kill();
    let output = agent.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(metrics.contains("kovn_datapath_loaded 0"), "{metrics}");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("this node stays on OVS"), "{log}");
}

#[test]
fn without_a_datapath_pods_still_talk_through_ovs() {
    if !sandbox::privileged("without_a_datapath_pods_still_talk_through_ovs") {
        return;
    }
    use sandbox::traffic;
    let (sb, a, b) = common::one_node_with_two_pods();
    let object = sb.dir().join("corrupt.o");
    std::fs::write(&object, b"\x7fELF not a BPF object").unwrap();
    let mut agent = common::start_agent(
        &sb,
        &[&a, &b],
        &["--object".to_owned(), object.display().to_string()],
    );
    let ping = traffic::ping(&a, b.ip, 10).expect("ping");
    assert_eq!((ping.received, ping.duplicates), (10, 0), "{ping:?}");
    let tcp = traffic::iperf3(&a, &b, 1).expect("TCP through OVS");
    assert!(tcp.bits_per_second > 1e6, "{tcp:?}");
    let _ = agent.kill();
    let _ = agent.wait();
}
