//! Real traffic between pods with the standard tools: ping, iperf3, sockperf, and tcpdump to
//! see what crosses a link. Every run is bounded in count and time.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::cmd::Cmd;
use crate::error::{Result, SandboxError};
use crate::pod::Pod;

/// What `ping` reported.
#[derive(Debug, Clone, PartialEq)]
pub struct PingReport {
    pub transmitted: u32,
    pub received: u32,
    /// Replies received more than once (`DUP!`): a forwarding loop or a doubled path.
    pub duplicates: u32,
    pub rtt_avg_ms: Option<f64>,
}

/// Pings `target` from `from`: `count` echo requests, 20 ms apart (closer than the fast path's
/// 100 ms refresh, so that a flow between local pods is fast-pathed between re-judgements),
/// bounded by a deadline.
pub fn ping(from: &Pod, target: Ipv4Addr, count: u32) -> Result<PingReport> {
    let deadline = (count / 5 + 5).to_string();
    let cmd = from
        .cmd("ping")
        .args([
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            "0.02",
            "-W",
            "2",
            "-w",
            &deadline,
        ])
        .arg(target.to_string())
        .timeout(Duration::from_secs(u64::from(count / 5 + 15)));
    let output = cmd.output()?;
    parse_ping(&output.stdout).ok_or_else(|| SandboxError::Parse {
        command: cmd.display(),
        detail: format!("{}{}", output.stdout, output.stderr),
    })
}

fn parse_ping(out: &str) -> Option<PingReport> {
    let duplicates = out.lines().filter(|l| l.contains("DUP!")).count() as u32;
    let summary = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut numbers = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let transmitted = numbers.next()?.parse().ok()?;
    let received = numbers.next()?.parse().ok()?;
    let rtt_avg_ms = out
        .lines()
        .find(|l| l.starts_with("rtt") || l.starts_with("round-trip"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|v| v.parse().ok());
    Some(PingReport {
        transmitted,
        received,
        duplicates,
        rtt_avg_ms,
    })
}

/// A server process in a pod, killed when dropped. Its output goes to a file so that a server
/// that dies before it listens can say why.
struct Server {
    child: Child,
    stderr: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stderr);
    }
}

fn start_server(cmd: &Cmd) -> Result<Server> {
    static SERVERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let stderr = std::env::temp_dir().join(format!(
        "kovn-server-{}-{}.err",
        std::process::id(),
        SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let file = std::fs::File::create(&stderr).map_err(crate::error::io_error(&stderr))?;
    let child = cmd
        .to_command()
        .stdin(Stdio::null())
        .stdout(file.try_clone().map_err(crate::error::io_error(&stderr))?)
        .stderr(file)
        .spawn()
        .map_err(|source| SandboxError::Spawn {
            command: cmd.display(),
            source,
        })?;
    Ok(Server { child, stderr })
}

/// Waits until something in `pod` listens on TCP `port`; if `server` exits first, the error
/// carries its exit status and what it printed.
fn wait_listening(pod: &Pod, port: u16, server: &mut Server) -> Result<()> {
    let waited = crate::ovs::wait_until(
        &format!("a listener on TCP port {port} in pod {}", pod.name),
        Duration::from_secs(10),
        || {
            let out = pod
                .cmd("ss")
                .args(["-Htln", &format!("sport = :{port}")])
                .run()?;
            Ok(!out.trim().is_empty())
        },
    );
    match (waited, server.child.try_wait()) {
        (Err(_), Ok(Some(status))) => Err(SandboxError::Command {
            command: format!("the server for TCP port {port} in pod {}", pod.name),
            status: format!("{status} before it listened"),
            stderr: format!(
                "{}\nsockets on the port:\n{}",
                std::fs::read_to_string(&server.stderr).unwrap_or_default(),
                pod.cmd("ss")
                    .args(["-Htan", &format!("sport = :{port}")])
                    .run()
                    .unwrap_or_default()
            ),
        }),
        (waited, _) => waited,
    }
}

/// Throughput of one TCP stream.
#[derive(Debug, Clone, PartialEq)]
pub struct ThroughputReport {
    /// What the receiver got, in bits per second.
    pub bits_per_second: f64,
    pub retransmits: u64,
    pub seconds: f64,
    /// Bits per second of each one-second interval, as the sender measured it.
    pub intervals: Vec<f64>,
}

impl ThroughputReport {
    pub fn gbit_per_second(&self) -> f64 {
        self.bits_per_second / 1e9
    }
}

/// The port [`iperf3`] serves on.
pub const IPERF3_PORT: u16 = 5201;
/// The port [`sockperf_ping_pong`] serves on.
pub const SOCKPERF_PORT: u16 = 11111;

/// One iperf3 TCP stream from `client` to `server` for `seconds`.
pub fn iperf3(client: &Pod, server: &Pod, seconds: u32) -> Result<ThroughputReport> {
    iperf3_to(client, server, server.ip, seconds)
}

/// [`iperf3`] with the client connecting to `target` (a Service VIP that leads to `server`)
/// on the same port.
pub fn iperf3_to(
    client: &Pod,
    server: &Pod,
    target: Ipv4Addr,
    seconds: u32,
) -> Result<ThroughputReport> {
    const PORT: u16 = IPERF3_PORT;
    let mut listener = start_server(&server.cmd("iperf3").args([
        "-s",
        "-1",
        "-p",
        &PORT.to_string(),
        "-B",
        &server.ip.to_string(),
    ]))?;
    wait_listening(server, PORT, &mut listener)?;
    let cmd = client
        .cmd("iperf3")
        .args(["-c", &target.to_string(), "-p", &PORT.to_string()])
        .args([
            "-t",
            &seconds.to_string(),
            "-J",
            "--connect-timeout",
            "3000",
        ])
        .timeout(Duration::from_secs(u64::from(seconds) + 30));
    let output = cmd.output()?;
    parse_iperf3(&output.stdout).map_err(|detail| SandboxError::Parse {
        command: cmd.display(),
        detail: format!("{detail}; stderr: {}", output.stderr.trim()),
    })
}

fn parse_iperf3(json: &str) -> Result<ThroughputReport, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not JSON ({e}): {json:.400}"))?;
    if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
        return Err(format!("iperf3 error: {error}"));
    }
    let end = &value["end"];
    let bits_per_second = end["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or("no end.sum_received.bits_per_second")?;
    Ok(ThroughputReport {
        bits_per_second,
        retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        seconds: end["sum_received"]["seconds"].as_f64().unwrap_or(0.0),
        intervals: value["intervals"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|i| i["sum"]["bits_per_second"].as_f64())
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// Round-trip latency of a TCP ping-pong.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyReport {
    pub avg_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub observations: u64,
}

/// sockperf TCP ping-pong from `client` to `server` for `seconds`. sockperf reports half the
/// round trip as "latency"; this reports it as sockperf does.
pub fn sockperf_ping_pong(client: &Pod, server: &Pod, seconds: u32) -> Result<LatencyReport> {
    sockperf(client, server, server.ip, seconds, true)
}

/// [`sockperf_ping_pong`] with the client talking to `target` (a Service VIP that leads to
/// `server`) on the same port.
pub fn sockperf_ping_pong_to(
    client: &Pod,
    server: &Pod,
    target: Ipv4Addr,
    seconds: u32,
) -> Result<LatencyReport> {
    sockperf(client, server, target, seconds, true)
}

/// The same over UDP (request/response datagrams, like DNS).
pub fn sockperf_udp_ping_pong(client: &Pod, server: &Pod, seconds: u32) -> Result<LatencyReport> {
    sockperf(client, server, server.ip, seconds, false)
}

fn sockperf(
    client: &Pod,
    server: &Pod,
    target: Ipv4Addr,
    seconds: u32,
    tcp: bool,
) -> Result<LatencyReport> {
    const PORT: u16 = SOCKPERF_PORT;
    let proto: &[&str] = if tcp { &["--tcp"] } else { &[] };
    let mut listener = start_server(
        &server
            .cmd("sockperf")
            .arg("server")
            .args(proto.iter().copied())
            .args(["-i", &server.ip.to_string(), "-p", &PORT.to_string()]),
    )?;
    if tcp {
        wait_listening(server, PORT, &mut listener)?;
    } else {
        // A UDP server has no listen state to wait for; give it a moment to bind.
        std::thread::sleep(Duration::from_millis(300));
    }
    let cmd = client
        .cmd("sockperf")
        .arg("ping-pong")
        .args(proto.iter().copied())
        .args(["-i", &target.to_string()])
        .args(["-p", &PORT.to_string(), "-t", &seconds.to_string()])
        .timeout(Duration::from_secs(u64::from(seconds) + 30));
    let output = cmd.run()?;
    if tcp {
        // sockperf's server binds without SO_REUSEADDR: killed while its connection is still
        // open, it would close first and leave a TIME_WAIT that makes the next server on this
        // port fail to bind for a minute. Let the client's close reach it first.
        let _ = crate::ovs::wait_until(
            &format!(
                "the connections to TCP port {PORT} in pod {} to close",
                server.name
            ),
            Duration::from_secs(5),
            || {
                let out = server
                    .cmd("ss")
                    .args(["-Htn", "state", "established", &format!("sport = :{PORT}")])
                    .run()?;
                Ok(out.trim().is_empty())
            },
        );
    }
    parse_sockperf(&output).ok_or_else(|| SandboxError::Parse {
        command: cmd.display(),
        detail: output,
    })
}

fn parse_sockperf(out: &str) -> Option<LatencyReport> {
    let value_after = |line: &str, key: &str| -> Option<f64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.trim_start_matches([' ', '='])
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let mut report = LatencyReport {
        avg_us: f64::NAN,
        p50_us: f64::NAN,
        p99_us: f64::NAN,
        observations: 0,
    };
    for line in out.lines() {
        if line.contains("avg-latency=") || line.contains("avg-rtt=") {
            report.avg_us =
                value_after(line, "avg-latency").or_else(|| value_after(line, "avg-rtt"))?;
        } else if line.contains("percentile 50.000") {
            report.p50_us = value_after(line, "percentile 50.000")?;
        } else if line.contains("percentile 99.000") {
            report.p99_us = value_after(line, "percentile 99.000")?;
        } else if let Some(rest) = line.split("Total ").nth(1)
            && rest.contains("observations")
        {
            report.observations = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
    }
    (!report.avg_us.is_nan()).then_some(report)
}

/// A tcpdump capture running in a namespace; [`Capture::stop`] returns the packet count.
#[derive(Debug)]
pub struct Capture {
    child: Option<Child>,
    file: PathBuf,
    netns: String,
}

impl Capture {
    /// Starts capturing on `interface` in `netns` with BPF filter `filter`, into `file`.
    pub fn start(netns: &str, interface: &str, filter: &str, file: PathBuf) -> Result<Capture> {
        // Immediate mode: without it tcpdump reads the kernel's ring a block at a time (up to
        // a second late), and the packets of a block not yet handed over when it is stopped
        // are lost.
        let cmd = Cmd::new("tcpdump")
            .args([
                "-i",
                interface,
                "-nn",
                "-U",
                "--immediate-mode",
                "-s",
                "128",
                "-w",
            ])
            .arg(file.display().to_string())
            .arg(filter)
            .netns(netns);
        let child = cmd
            .to_command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| SandboxError::Spawn {
                command: cmd.display(),
                source,
            })?;
        // tcpdump creates the file once it is capturing.
        crate::ovs::wait_for_path(&file, Duration::from_secs(10))?;
        std::thread::sleep(Duration::from_millis(200));
        Ok(Capture {
            child: Some(child),
            file,
            netns: netns.to_owned(),
        })
    }

    /// Stops the capture and counts the packets it holds.
    pub fn stop(self) -> Result<u64> {
        Ok(self.stop_with_times()?.len() as u64)
    }

    /// Stops the capture and returns tcpdump's decoding of it (`-nn -r FILE <args>`), one
    /// string per packet (continuation lines of `-v` joined).
    pub fn stop_and_decode(mut self, args: &[&str]) -> Result<Vec<String>> {
        self.finish();
        let out = Cmd::new("tcpdump")
            .args(["-nn", "-r"])
            .arg(self.file.display().to_string())
            .args(args.iter().copied())
            .netns(&self.netns)
            .run()?;
        let mut packets: Vec<String> = Vec::new();
        for line in out.lines() {
            match packets.last_mut() {
                Some(last) if line.starts_with(char::is_whitespace) => {
                    last.push(' ');
                    last.push_str(line.trim());
                }
                _ => packets.push(line.to_owned()),
            }
        }
        Ok(packets)
    }

    fn finish(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGINT,
                );
            }
            let _ = child.wait();
        }
    }

    /// Stops the capture and returns when each packet was captured (seconds since the Unix
    /// epoch, the kernel's receive timestamps).
    pub fn stop_with_times(mut self) -> Result<Vec<f64>> {
        self.finish();
        let out = Cmd::new("tcpdump")
            .args(["-nn", "-tt", "-r"])
            .arg(self.file.display().to_string())
            .netns(&self.netns)
            .run()?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_summary_and_duplicates_are_parsed() {
        let out = "PING 10.16.0.3 (10.16.0.3) 56(84) bytes of data.\n\
64 bytes from 10.16.0.3: icmp_seq=1 ttl=64 time=0.5 ms\n\
64 bytes from 10.16.0.3: icmp_seq=1 ttl=64 time=0.6 ms (DUP!)\n\
\n--- 10.16.0.3 ping statistics ---\n\
2 packets transmitted, 2 received, +1 duplicates, 0% packet loss, time 201ms\n\
rtt min/avg/max/mdev = 0.311/0.452/0.601/0.121 ms\n";
        let report = parse_ping(out).unwrap();
        assert_eq!(report.transmitted, 2);
        assert_eq!(report.received, 2);
        assert_eq!(report.duplicates, 1);
        assert_eq!(report.rtt_avg_ms, Some(0.452));
    }

    #[test]
    fn iperf3_errors_are_reported_not_read_as_zero() {
        assert!(parse_iperf3(r#"{"error": "unable to connect"}"#).is_err());
        let ok = r#"{"end":{"sum_received":{"bits_per_second":1.5e9,"seconds":1.0},
                    "sum_sent":{"retransmits":3}}}"#;
        let report = parse_iperf3(ok).unwrap();
        assert_eq!(report.retransmits, 3);
        assert!((report.gbit_per_second() - 1.5).abs() < 1e-9);
    }

    #[test]
    fn sockperf_summary_is_parsed() {
        let out = "sockperf: ====> avg-latency=31.402 (std-dev=5.1, mean-ad=2.0)\n\
sockperf: # dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0\n\
sockperf: Summary: Latency is 31.402 usec\n\
sockperf: Total 31717 observations; each percentile contains 317.17 observations\n\
sockperf: ---> <MAX> observation =  120.113\n\
sockperf: ---> percentile 99.000 =   47.250\n\
sockperf: ---> percentile 50.000 =   30.020\n";
        let report = parse_sockperf(out).unwrap();
        assert_eq!(report.avg_us, 31.402);
        assert_eq!(report.p99_us, 47.25);
        assert_eq!(report.p50_us, 30.02);
        assert_eq!(report.observations, 31717);
    }
}
