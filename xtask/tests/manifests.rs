//! The manifests in deploy/ as a cluster would take them: valid against the Kubernetes OpenAPI
//! schemas of 1.29 and later (kubernetes-validate --strict, which `cargo xtask setup` installs),
//! and whole: every workload runs on Linux nodes only, with requests, limits and a priority
//! class; every `$(VAR)` in a command line is set in that container's environment; every
//! ConfigMap key and ServiceAccount a pod refers to exists in deploy/.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

/// The oldest Kubernetes the manifests support, one in between, and the newest the validator
/// knows.
const KUBERNETES_VERSIONS: [&str; 3] = ["1.29.0", "1.33.0", "1.37.0"];

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every YAML file of deploy/, deploy/crds/ and deploy/uninstall/.
fn manifest_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [deploy(), deploy().join("crds"), deploy().join("uninstall")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 7, "deploy/ holds only {files:?}");
    files
}

fn documents() -> Vec<(PathBuf, Value)> {
    let mut docs = Vec::new();
    for path in manifest_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
            if !value.is_null() {
                docs.push((path.clone(), value));
            }
        }
    }
    docs
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    let validator = home.join(".local/share/kovn/venv/bin/kubernetes-validate");
    if !validator.is_file() {
        let message = format!(
            "{} is missing: run `cargo xtask setup`",
            validator.display()
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{message}");
        }
        eprintln!(
            "\n!!!!!!!! SKIPPED manifests_validate_against_the_kubernetes_schemas: {message} !!!!!!!!\n"
        );
        return;
    }
    for version in KUBERNETES_VERSIONS {
        let out = Command::new(&validator)
            .args(["--strict", "--quiet", "-k", version])
            .args(manifest_files())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "deploy/ does not validate against Kubernetes {version}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A workload's pod template, with the workload's name.
fn workloads(docs: &[(PathBuf, Value)]) -> Vec<(String, &Value)> {
    docs.iter()
        .filter(|(_, d)| {
            matches!(
                d["kind"].as_str(),
                Some("Deployment" | "DaemonSet" | "StatefulSet")
            )
        })
        .map(|(path, d)| {
            (
                format!(
                    "{} {} ({})",
                    d["kind"].as_str().unwrap(),
                    d["metadata"]["name"].as_str().unwrap(),
                    path.file_name().unwrap().to_string_lossy()
                ),
                &d["spec"]["template"]["spec"],
            )
        })
        .collect()
}

#[test]
fn every_workload_is_whole() {
    let docs = documents();
    let of_kind = |kind: &str| -> BTreeSet<String> {
        docs.iter()
            .filter(|(_, d)| d["kind"] == kind)
            .map(|(_, d)| d["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let accounts = of_kind("ServiceAccount");
    let config_keys: BTreeMap<String, BTreeSet<String>> = docs
        .iter()
        .filter(|(_, d)| d["kind"] == "ConfigMap")
        .map(|(_, d)| {
            let keys = d["data"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            (d["metadata"]["name"].as_str().unwrap().to_owned(), keys)
        })
        .collect();
    let found = workloads(&docs);
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    for expected in ["kovn-agent", "kovn-controller", "ovn-central", "ovs-ovn"] {
        assert!(
            names.iter().any(|n| n.contains(&format!(" {expected} "))),
            "no workload {expected} in deploy/: {names:?}"
        );
    }
    for (name, pod) in &found {
        assert_eq!(
            pod["nodeSelector"]["kubernetes.io/os"], "linux",
            "{name}: nodeSelector kubernetes.io/os: linux"
        );
        assert!(
            pod["priorityClassName"].is_string(),
            "{name}: no priorityClassName"
        );
        let account = pod["serviceAccountName"].as_str().unwrap_or_default();
        assert!(
            accounts.contains(account),
            "{name}: ServiceAccount {account:?} is not in deploy/"
        );
        let containers = pod["containers"]
            .as_array()
            .into_iter()
            .chain(pod["initContainers"].as_array())
            .flatten();
        for container in containers {
            let cname = container["name"].as_str().unwrap();
            for bound in ["requests", "limits"] {
                let set = &container["resources"][bound];
                assert!(
                    set["cpu"].is_string() || set["cpu"].is_number(),
                    "{name}/{cname}: no resources.{bound}.cpu"
                );
                assert!(
                    set["memory"].is_string(),
                    "{name}/{cname}: no resources.{bound}.memory"
                );
            }
            let env: Vec<&Value> = container["env"].as_array().into_iter().flatten().collect();
            let env_names: BTreeSet<&str> = env.iter().filter_map(|e| e["name"].as_str()).collect();
            let words = container["command"]
                .as_array()
                .into_iter()
                .chain(container["args"].as_array())
                .flatten()
                .filter_map(Value::as_str);
            for word in words {
                for var in word.split("$(").skip(1).filter_map(|s| s.split(')').next()) {
                    assert!(
                        env_names.contains(var),
                        "{name}/{cname}: $({var}) in {word:?} is not in its env"
                    );
                }
            }
            for e in env {
                let reference = &e["valueFrom"]["configMapKeyRef"];
                if let (Some(map), Some(key)) =
                    (reference["name"].as_str(), reference["key"].as_str())
                {
                    assert!(
                        config_keys.get(map).is_some_and(|keys| keys.contains(key)),
                        "{name}/{cname}: ConfigMap {map} key {key} is not in deploy/"
                    );
                }
            }
        }
    }
}
