//! deploy/controller.yaml against the controller it deploys: the ClusterRole grants every
//! request the controller makes (a missing verb is a controller that fails only in a real
//! cluster), the binary accepts the Deployment's arguments, and the probes and the metrics
//! port agree with what the binary serves.

use std::collections::BTreeSet;
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

fn manifest() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/controller.yaml");
    let text = std::fs::read_to_string(path).expect("deploy/controller.yaml");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/controller.yaml"))
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
fn the_cluster_role_grants_every_request_the_controller_makes() {
    let docs = manifest();
    let role = of_kind(&docs, "ClusterRole");
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    granted.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    // (group, resource, verb) for every call in controller/src: the reflectors, the pod and
    // node annotation patches, IP objects (server-side apply, delete), finalizers (JSON
    // patch), status merge patches, the Lease and events.
    let mut needed = vec![];
    for (group, resource) in [
        ("", "pods"),
        ("", "namespaces"),
        ("", "nodes"),
        ("kubeovn.io", "subnets"),
        ("kubeovn.io", "vpcs"),
        ("kubeovn.io", "ips"),
        ("", "services"),
        ("discovery.k8s.io", "endpointslices"),
    ] {
        needed.push((group, resource, "list"));
        needed.push((group, resource, "watch"));
    }
    needed.extend([
        ("", "pods", "patch"),
        ("", "nodes", "patch"),
        ("kubeovn.io", "ips", "patch"),
        ("kubeovn.io", "ips", "delete"),
        ("kubeovn.io", "subnets", "patch"),
        ("kubeovn.io", "subnets", "create"),
        ("kubeovn.io", "vpcs", "patch"),
        ("kubeovn.io", "vpcs", "create"),
        ("kubeovn.io", "subnets/status", "patch"),
        ("kubeovn.io", "vpcs/status", "patch"),
        ("coordination.k8s.io", "leases", "get"),
        ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "update"),
        ("events.k8s.io", "events", "create"),
        ("events.k8s.io", "events", "patch"),
    ]);
    let missing: Vec<_> = needed
        .iter()
        .filter(|(g, r, v)| !granted.contains(&(g.to_string(), r.to_string(), v.to_string())))
        .collect();
    assert!(missing.is_empty(), "the ClusterRole lacks {missing:?}");

    let binding = of_kind(&docs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let account = of_kind(&docs, "ServiceAccount");
    assert_eq!(binding["subjects"][0]["name"], account["metadata"]["name"]);
    let pod = &of_kind(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], account["metadata"]["name"]);
}

#[test]
fn the_binary_accepts_the_deployments_arguments_and_serves_its_probes() {
    let docs = manifest();
    let pod = &of_kind(&docs, "Deployment")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(strings(&container["command"]), ["/usr/bin/kovn-controller"]);
    // The kubelet substitutes $(VAR) from the environment; any address will do here.
    let args: Vec<String> = strings(&container["args"])
        .into_iter()
        .map(|a| {
            a.replace(
                "$(OVN_NB_REMOTES)",
                "tcp:192.0.2.11:6641,tcp:192.0.2.12:6641,tcp:192.0.2.13:6641",
            )
        })
        .collect();
    // Arguments are parsed in order, so a bad one fails before `--help` is reached.
    let out = Command::new(env!("CARGO_BIN_EXE_kovn-controller"))
        .args(&args)
        .arg("--help")
        .output()
        .expect("kovn-controller");
    assert!(
        out.status.success(),
        "kovn-controller rejects the Deployment's arguments {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics_port = args
        .iter()
        .find_map(|a| a.strip_prefix("--metrics-addr="))
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse::<u64>().ok())
        .expect("--metrics-addr");
    assert_eq!(metrics_port, 10660, "Kube-OVN's controller metrics port");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(container[probe]["httpGet"]["path"], path);
        assert_eq!(container[probe]["httpGet"]["port"], metrics_port);
    }
    let env: Vec<String> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .collect();
    assert!(env.contains(&"POD_NAME".to_owned()) && env.contains(&"KUBE_NAMESPACE".to_owned()));
}

#[test]
fn a_bad_argument_is_refused() {
    // The check above can fail: an unknown flag before --help is an error.
    let out = Command::new(env!("CARGO_BIN_EXE_kovn-controller"))
        .args(["--no-such-flag=1", "--help"])
        .output()
        .expect("kovn-controller");
    assert!(!out.status.success());
}
