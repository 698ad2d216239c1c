//! deploy/agent.yaml against the agent it deploys: the ClusterRole grants what the agent
//! reads, the binary accepts the DaemonSet's arguments, the probe and metrics port agree, and
//! the conflist it installs is Kube-OVN's and names the socket the agent serves.

use std::collections::BTreeSet;
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

fn manifest() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/agent.yaml");
    let text = std::fs::read_to_string(path).expect("deploy/agent.yaml");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/agent.yaml"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_role_grants_what_the_agent_reads_and_the_binary_accepts_the_daemonset() {
    let docs = manifest();
    let mut granted = BTreeSet::new();
    for rule in of_kind(&docs, "ClusterRole")["rules"].as_array().unwrap() {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    granted.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    // The CNI server's get and watch of a pod, node setup's watch of its Node and of Subnets.
    for (group, resource, verb) in [
        ("", "pods", "get"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "nodes", "list"),
        ("", "nodes", "watch"),
        ("kubeovn.io", "subnets", "list"),
        ("kubeovn.io", "subnets", "watch"),
        ("", "services", "list"),
        ("", "services", "watch"),
        ("discovery.k8s.io", "endpointslices", "list"),
        ("discovery.k8s.io", "endpointslices", "watch"),
    ] {
        assert!(
            granted.contains(&(group.into(), resource.into(), verb.into())),
            "the ClusterRole lacks {verb} {group}/{resource}"
        );
    }

    let pod = &of_kind(&docs, "DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    let container = &pod["containers"][0];
    let args = strings(&container["args"]);
    let out = Command::new(env!("CARGO_BIN_EXE_kovn-agent"))
        .args(&args)
        .arg("--help")
        .env("KUBE_NODE_NAME", "n0")
        .output()
        .expect("kovn-agent");
    assert!(
        out.status.success(),
        "kovn-agent rejects the DaemonSet's arguments {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(args.contains(&"--metrics-addr=0.0.0.0:10665".to_owned()));
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], 10665);
    let socket = args
        .iter()
        .find_map(|a| a.strip_prefix("--cni-socket="))
        .expect("--cni-socket");
    assert_eq!(socket, cni::wire::DEFAULT_SOCKET);

    // The conflist: Kube-OVN's, pointing at that socket, parsed as the plugin parses it.
    let config = &of_kind(&docs, "ConfigMap")["data"]["01-kube-ovn.conflist"];
    let list: Value = serde_json::from_str(config.as_str().unwrap()).expect("conflist JSON");
    let mut first = list["plugins"][0].clone();
    first["cniVersion"] = list["cniVersion"].clone();
    first["name"] = list["name"].clone();
    let conf =
        cni::netconf::NetConf::parse(first.to_string().as_bytes()).expect("kube-ovn accepts it");
    assert_eq!(conf.server_socket, socket);
    assert_eq!(list["plugins"][1]["type"], "portmap");
}

#[test]
fn a_bad_argument_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_kovn-agent"))
        .args(["daemon", "--no-such-flag", "--help"])
        .output()
        .expect("kovn-agent");
    assert!(!out.status.success());
}
