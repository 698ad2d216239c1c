//! The `kube-ovn` binary as the runtime runs it (environment, netconf on stdin), against a
//! stand-in agent on a unix socket: the exact request it forwards, the result in each CNI
//! version, and the error JSON (code and message) for every kind of bad input.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// What the stand-in agent received: (method, path, body).
type Received = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A one-thread HTTP server on a unix socket answering every request with `reply`
/// (status, body); `None` never answers (a hung agent).
fn agent(dir: &Path, reply: Option<(u16, Value)>) -> (PathBuf, Received) {
    let socket = dir.join("agent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let received: Received = Arc::default();
    let seen = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut parts = line.split_whitespace();
            let (method, path) = (
                parts.next().unwrap().to_owned(),
                parts.next().unwrap().to_owned(),
            );
            let mut length = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            seen.lock().unwrap().push((
                method,
                path,
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            ));
            match &reply {
                Some((status, body)) => {
                    let text = if body.is_null() {
                        String::new()
                    } else {
                        body.to_string()
                    };
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{text}",
                        text.len()
                    );
                }
                None => std::thread::sleep(Duration::from_secs(30)),
            }
        }
    });
    (socket, received)
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kovn-cni-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the plugin: (exit success, stdout as JSON or Null).
fn plugin(command: &str, env: &[(&str, &str)], stdin: &str) -> (bool, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-ovn"))
        .env_clear()
        .env("CNI_COMMAND", command)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let json = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text}"))
    };
    (out.status.success(), json)
}

const POD_ENV: &[(&str, &str)] = &[
    ("CNI_CONTAINERID", "c0ffee"),
    ("CNI_NETNS", "/var/run/netns/pod1"),
    ("CNI_IFNAME", "eth0"),
    (
        "CNI_ARGS",
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=c0ffee",
    ),
    ("CNI_PATH", "/opt/cni/bin"),
];

fn conf(version: &str, socket: &Path) -> String {
    json!({"cniVersion": version, "name": "kube-ovn", "type": "kube-ovn",
           "server_socket": socket, "timeout_seconds": 2})
    .to_string()
}

fn add_reply() -> Value {
    json!({"ips": [{"protocol": "IPv4", "ip": "10.16.0.5", "cidr": "10.16.0.0/16", "gateway": "10.16.0.1"},
                   {"protocol": "IPv6", "ip": "fd00:10:16::5", "cidr": "fd00:10:16::/112", "gateway": "fd00:10:16::1"}],
           "mac_address": "00:00:00:12:34:56", "mtu": 1400, "nicname": "eth0"})
}

fn error_code(out: &(bool, Value)) -> u64 {
    assert!(!out.0, "expected a failure, got {}", out.1);
    assert!(
        out.1["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "no msg: {}",
        out.1
    );
    out.1["code"]
        .as_u64()
        .unwrap_or_else(|| panic!("no code: {}", out.1))
}

#[test]
fn add_forwards_kube_ovns_request_and_prints_the_result_in_every_version() {
    let dir = tempdir("add");
    let (socket, received) = agent(&dir, Some((200, add_reply())));
    let (ok, result) = plugin("ADD", POD_ENV, &conf("1.1.0", &socket));
    assert!(ok, "{result}");
    let (method, path, request) = received.lock().unwrap()[0].clone();
    assert_eq!((method.as_str(), path.as_str()), ("POST", "/api/v1/add"));
    assert_eq!(
        request,
        json!({"cni_type": "kube-ovn", "pod_name": "web", "pod_namespace": "default",
               "container_id": "c0ffee", "net_ns": "/var/run/netns/pod1", "if_name": "eth0",
               "provider": "ovn"})
    );
    assert_eq!(
        result,
        json!({"cniVersion": "1.1.0",
               "interfaces": [{"name": "eth0", "mac": "00:00:00:12:34:56", "mtu": 1400, "sandbox": "/var/run/netns/pod1"}],
               "ips": [{"address": "10.16.0.5/16", "gateway": "10.16.0.1", "interface": 0},
                       {"address": "fd00:10:16::5/112", "gateway": "fd00:10:16::1", "interface": 0}],
               "routes": [{"dst": "0.0.0.0/0", "gw": "10.16.0.1"}, {"dst": "::/0", "gw": "fd00:10:16::1"}],
               "dns": {}})
    );
    // 1.0.0: no interface MTU (added in 1.1.0).
    let (_, r100) = plugin("ADD", POD_ENV, &conf("1.0.0", &socket));
    assert_eq!(r100["cniVersion"], "1.0.0");
    assert!(r100["interfaces"][0].get("mtu").is_none());
    // 0.3.1 and 0.4.0: each IP says its version.
    for v in ["0.3.1", "0.4.0"] {
        let (ok, r) = plugin("ADD", POD_ENV, &conf(v, &socket));
        assert!(ok);
        assert_eq!(r["cniVersion"], v);
        assert_eq!(r["ips"][0]["version"], "4");
        assert_eq!(r["ips"][1]["version"], "6");
    }
}

#[test]
fn ipam_only_under_another_plugin_returns_addresses_without_an_interface() {
    let dir = tempdir("ipam");
    let (socket, received) = agent(&dir, Some((200, add_reply())));
    let netconf = json!({"cniVersion": "1.0.0", "name": "macvlan-net", "type": "macvlan",
        "master": "eth1",
        "ipam": {"type": "kube-ovn", "server_socket": socket, "provider": "macvlan-net.default"}});
    let (ok, result) = plugin("ADD", POD_ENV, &netconf.to_string());
    assert!(ok, "{result}");
    assert!(result.get("interfaces").is_none(), "{result}");
    assert_eq!(
        result["ips"][0],
        json!({"address": "10.16.0.5/16", "gateway": "10.16.0.1"})
    );
    assert_eq!(
        received.lock().unwrap()[0].2["provider"],
        "macvlan-net.default"
    );
}

#[test]
fn del_and_gc_reach_the_agent() {
    let dir = tempdir("del");
    let (socket, received) = agent(&dir, Some((204, Value::Null)));
    assert_eq!(
        plugin("DEL", POD_ENV, &conf("1.1.0", &socket)),
        (true, Value::Null)
    );
    let gc = json!({"cniVersion": "1.1.0", "name": "kube-ovn", "type": "kube-ovn", "server_socket": socket,
        "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]});
    assert_eq!(plugin("GC", &[], &gc.to_string()), (true, Value::Null));
    let seen = received.lock().unwrap().clone();
    assert_eq!(seen[0].1, "/api/v1/del");
    assert_eq!(seen[0].2["container_id"], "c0ffee");
    assert_eq!(seen[1].1, "/api/v1/gc");
    assert_eq!(
        seen[1].2,
        json!({"valid_attachments": [{"container_id": "c1", "if_name": "eth0"}]})
    );
}

#[test]
fn version_lists_the_supported_versions() {
    let (ok, out) = plugin("VERSION", &[], r#"{"cniVersion": "1.0.0"}"#);
    assert!(ok);
    assert_eq!(out["cniVersion"], "1.0.0");
    assert_eq!(
        out["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
}

#[test]
fn bad_input_gets_the_right_cni_error_code_and_a_message() {
    let dir = tempdir("bad");
    let (socket, received) = agent(&dir, Some((200, add_reply())));
    let good = conf("1.1.0", &socket);
    // Malformed stdin: 6, failed to decode.
    assert_eq!(error_code(&plugin("ADD", POD_ENV, "{not json")), 6);
    // An unknown version: 1, and the error JSON still names a version.
    let out = plugin("ADD", POD_ENV, &conf("9.9.9", &socket));
    assert_eq!(error_code(&out), 1);
    assert_eq!(out.1["cniVersion"], "1.1.0");
    // Missing required environment: 4.
    let no_netns: Vec<_> = POD_ENV
        .iter()
        .filter(|(k, _)| *k != "CNI_NETNS")
        .copied()
        .collect();
    let out = plugin("ADD", &no_netns, &good);
    assert_eq!(error_code(&out), 4);
    assert!(out.1["msg"].as_str().unwrap().contains("CNI_NETNS"));
    assert_eq!(error_code(&plugin("BOGUS", POD_ENV, &good)), 4);
    // No pod in CNI_ARGS: 7.
    let no_pod: Vec<_> = POD_ENV
        .iter()
        .filter(|(k, _)| *k != "CNI_ARGS")
        .copied()
        .collect();
    let out = plugin("ADD", &no_pod, &good);
    assert_eq!(error_code(&out), 7);
    assert!(out.1["msg"].as_str().unwrap().contains("K8S_POD_NAME"));
    assert!(
        received.lock().unwrap().is_empty(),
        "bad input reached the agent"
    );
}

#[test]
fn agent_down_hung_or_refusing_is_a_retryable_error_that_says_why() {
    let dir = tempdir("down");
    // Down: no socket at all.
    let out = plugin("ADD", POD_ENV, &conf("1.1.0", &dir.join("absent.sock")));
    assert_eq!(error_code(&out), 11);
    assert!(
        out.1["msg"].as_str().unwrap().contains("absent.sock"),
        "{}",
        out.1
    );
    assert!(
        out.1["details"].as_str().unwrap().contains("kovn-agent"),
        "{}",
        out.1
    );
    // Hung: bounded by timeout_seconds (2 s here).
    let (hung, _) = agent(&tempdir("hung"), None);
    let started = Instant::now();
    let out = plugin("ADD", POD_ENV, &conf("1.1.0", &hung));
    assert_eq!(error_code(&out), 11);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not bounded: {:?}",
        started.elapsed()
    );
    assert!(
        out.1["msg"].as_str().unwrap().contains("did not answer"),
        "{}",
        out.1
    );
    // Refusing: the agent's own reason is passed on.
    let (refusing, _) = agent(
        &tempdir("refuse"),
        Some((
            500,
            json!({"error": "pod default/web has no ovn.kubernetes.io/allocated annotation after 30 s: is kovn-controller running?"}),
        )),
    );
    let out = plugin("ADD", POD_ENV, &conf("1.1.0", &refusing));
    assert_eq!(error_code(&out), 11);
    assert!(
        out.1["details"]
            .as_str()
            .unwrap()
            .contains("kovn-controller"),
        "{}",
        out.1
    );
    let (missing, _) = agent(
        &tempdir("missing"),
        Some((404, json!({"error": "pod default/web not found"}))),
    );
    assert_eq!(
        error_code(&plugin("ADD", POD_ENV, &conf("1.1.0", &missing))),
        3
    );
}

#[test]
fn status_is_ok_when_the_agent_is_ready_and_50_when_it_is_not() {
    let (ready, received) = agent(&tempdir("status-ok"), Some((200, Value::Null)));
    let ready_conf = conf("1.1.0", &ready);
    assert_eq!(plugin("STATUS", &[], &ready_conf), (true, Value::Null));
    assert_eq!(received.lock().unwrap()[0].1, "/api/v1/status");
    let (unready, _) = agent(
        &tempdir("status-bad"),
        Some((
            503,
            json!({"error": "not connected to the node's Open_vSwitch database"}),
        )),
    );
    let out = plugin("STATUS", &[], &conf("1.1.0", &unready));
    assert_eq!(error_code(&out), 50);
    assert!(
        out.1["details"].as_str().unwrap().contains("Open_vSwitch"),
        "{}",
        out.1
    );
    // No agent at all: not available either.
    let out = plugin(
        "STATUS",
        &[],
        &conf("1.1.0", &tempdir("status-none").join("absent.sock")),
    );
    assert_eq!(error_code(&out), 50);
}
