//! Shared by the agent's integration tests.
#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use sandbox::{Cmd, Node, Pod, Sandbox, netns};

/// Starts `kovn-agent datapath run` in node 0 of `sb` (network namespace only, so its pins
/// land on the host's bpffs) for `pods`, with `extra` arguments, and waits for "ready".
pub fn start_agent(sb: &Sandbox, pods: &[&Pod], extra: &[String]) -> Child {
    let node = sb.node(0);
    let mut cmd = Cmd::new(env!("CARGO_BIN_EXE_kovn-agent"))
        .args(["datapath", "run", "--pin-dir"])
        .arg(sb.bpffs_dir().join(&node.name).display().to_string())
        .args(["--metrics-addr", "127.0.0.1:10665"])
        .args(extra.iter().cloned())
        .netns_keep_mounts(&node.netns);
    for pod in pods {
        cmd = cmd.arg("--pod").arg(format!(
            "{},{},{},{},{}",
            pod.lsp, pod.host_veth, pod.ovs_peer, pod.ip, pod.mac
        ));
    }
    let mut child = cmd
        .to_command()
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start kovn-agent");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read kovn-agent's output");
    assert_eq!(line.trim(), "ready", "kovn-agent did not come up");
    child
}

/// Runs `f` on a runtime inside `node`'s namespace (where the agent runs).
pub fn on_node<T: Send>(node: &Node, f: impl AsyncFnOnce() -> T + Send) -> T {
    netns::run_in(&node.netns, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
    .expect("node namespace")
}

/// How many learned flows in the agent's pinned flow map (under `pins`) are from or to `ip`.
pub fn flows_involving(pins: &std::path::Path, ip: std::net::Ipv4Addr) -> usize {
    use agent::datapath::{PinnedMaps, ReadMaps};
    let mapped = ip.to_ipv6_mapped().octets();
    PinnedMaps::open(pins)
        .expect("pinned maps")
        .flows()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.src == mapped || k.dst == mapped)
        .count()
}

/// A one-way UDP stream from `from` to `to:port`, one datagram every 2 ms until `stop` is set
/// (a socket bound on `to` swallows them, so `to` sends nothing back).
pub fn udp_stream(
    from: &Pod,
    to: &Pod,
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (std::net::UdpSocket, std::thread::JoinHandle<u64>) {
    let sink = netns::run_in(&to.netns, || std::net::UdpSocket::bind((to.ip, port)))
        .unwrap()
        .unwrap();
    let sender = netns::run_in(&from.netns, || std::net::UdpSocket::bind((from.ip, 0)))
        .unwrap()
        .unwrap();
    let target = std::net::SocketAddr::from((to.ip, port));
    let sending = std::thread::spawn(move || {
        let mut sent = 0u64;
        // Bounded: at most 30 s, whatever the test does.
        for _ in 0..15_000 {
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
            let _ = sender.send_to(&sent.to_be_bytes(), target);
            sent += 1;
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        sent
    });
    (sink, sending)
}

/// Now, as seconds since the Unix epoch (what tcpdump's `-tt` timestamps count).
pub fn epoch_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Receive times from a capture (see [`epoch_seconds`]): how many came before `since`, with
/// the assertion that none came more than 200 ms after it (`what` names the change).
pub fn assert_none_200ms_after(times: &[f64], since: f64, what: &str) -> usize {
    let late: Vec<f64> = times
        .iter()
        .map(|t| t - since)
        .filter(|&after| after > 0.2)
        .collect();
    assert!(
        late.is_empty(),
        "{} packets reached the receiver more than 200 ms after {what} (seconds after: {late:?})",
        late.len()
    );
    times.iter().filter(|&&t| t < since).count()
}

/// A one-node sandbox whose pods are wired by the datapath, with pods `a` and `b`.
pub fn one_node_with_two_pods() -> (Sandbox, Pod, Pod) {
    let mut sb = Sandbox::start(sandbox::SandboxConfig {
        nodes: 1,
        handoff: sandbox::Handoff::Datapath,
        ..Default::default()
    })
    .expect("sandbox");
    let a = sb.add_pod(0, "a").unwrap();
    let b = sb.add_pod(0, "b").unwrap();
    (sb, a, b)
}

/// Sends `count` UDP datagrams from inside `netns` with the forged source address `source`
/// (a raw socket with its own IPv4 header; the kernel adds the interface's MAC), as a pod
/// that spoofs would. Returns how many the kernel took.
pub fn send_spoofed_udp(
    netns: &str,
    source: std::net::Ipv4Addr,
    target: std::net::SocketAddrV4,
    count: u32,
) -> u32 {
    netns::run_in(netns, move || {
        // SAFETY: a raw socket, closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let payload = b"spoofed";
        let udp_len = 8 + payload.len();
        let total = 20 + udp_len;
        let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
        packet[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        packet.extend_from_slice(&source.octets());
        packet.extend_from_slice(&target.ip().octets());
        packet.extend_from_slice(&40000u16.to_be_bytes());
        packet.extend_from_slice(&target.port().to_be_bytes());
        packet.extend_from_slice(&(udp_len as u16).to_be_bytes());
        packet.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
        packet.extend_from_slice(payload);
        let to = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(target.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let mut sent = 0;
        for _ in 0..count {
            // SAFETY: `packet` and `to` outlive the call; the lengths are theirs.
            let n = unsafe {
                libc::sendto(
                    fd,
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&raw const to).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if n == packet.len() as isize {
                sent += 1;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // SAFETY: `fd` is ours and not used after this.
        unsafe { libc::close(fd) };
        sent
    })
    .expect("the pod's namespace")
}

/// A binary of another package of the workspace (see `sandbox::kovn::workspace_binary`).
pub fn workspace_binary(package: &str, name: &str) -> std::path::PathBuf {
    sandbox::kovn::workspace_binary(package, name)
}

/// kovn from this build: the agent of this package, the controller and the CNI plugin.
pub fn binaries() -> sandbox::kovn::KovnBinaries {
    sandbox::kovn::KovnBinaries {
        controller: workspace_binary("controller", "kovn-controller"),
        agent: std::path::PathBuf::from(env!("CARGO_BIN_EXE_kovn-agent")),
        cni_dir: workspace_binary("cni", "kube-ovn")
            .parent()
            .unwrap()
            .to_path_buf(),
    }
}
