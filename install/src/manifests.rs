//! The manifests of `deploy/` rendered for one cluster: kovn-ovn-config filled from the master
//! nodes' addresses, ovn-central with one member per master, ovs-ovn's datapath type, the
//! images where the operator keeps them. Documents are edited as data (parsed YAML), never as
//! text, and come out in the order a cluster needs them: CRDs, ovn-central, ovs-ovn, the
//! controller, the agent.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

/// The files `install` applies, in order (relative to the manifests directory); any other
/// `*.yaml` of the directory follows them, by name.
pub const ORDER: &[&str] = &[
    "crds/subnets.kubeovn.io.yaml",
    "crds/vpcs.kubeovn.io.yaml",
    "crds/ips.kubeovn.io.yaml",
    "crds/provider-networks.kubeovn.io.yaml",
    "crds/vlans.kubeovn.io.yaml",
    "crds/ovn-eips.kubeovn.io.yaml",
    "crds/ovn-fips.kubeovn.io.yaml",
    "crds/ovn-snat-rules.kubeovn.io.yaml",
    "crds/ovn-dnat-rules.kubeovn.io.yaml",
    "crds/vpc-nat-gateways.kubeovn.io.yaml",
    "crds/iptables-eips.kubeovn.io.yaml",
    "crds/iptables-fip-rules.kubeovn.io.yaml",
    "crds/iptables-snat-rules.kubeovn.io.yaml",
    "crds/iptables-dnat-rules.kubeovn.io.yaml",
    "ovn-central.yaml",
    "ovs-ovn.yaml",
    "controller.yaml",
    "agent.yaml",
];

/// The node cleanup `uninstall` runs (not part of an install).
pub const NODE_CLEANUP: &str = "uninstall/node-cleanup.yaml";

/// The image references the manifests carry.
pub const KOVN_IMAGE: &str = "kovn.local/kovn:0.1.0";
pub const OVN_IMAGE: &str = "kovn.local/ovn:0.1.0";

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "{0}: no such manifests directory (run from the unpacked bundle, or pass --manifests DIR with kovn's deploy/)"
    )]
    NoDirectory(PathBuf),
    #[error("{path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error(
        "{0} master node(s): ovn-central's Raft needs an odd number (1, 3 or 5) of kube-ovn/role=master nodes"
    )]
    Masters(usize),
    #[error("{0} is not in the manifests; are they kovn's deploy/?")]
    Missing(&'static str),
}

/// What one cluster's install is made of.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The ovn-central members' addresses (the master nodes').
    pub masters: Vec<IpAddr>,
    /// `system` (the openvswitch kernel module) or `netdev` (the userspace datapath).
    pub ovs_datapath: String,
    pub kovn_image: String,
    pub ovn_image: String,
    /// The databases speak SSL only, with these certificates (the kovn-ovn-tls Secret).
    pub tls: Option<TlsSecret>,
}

/// The PEM files of the `kovn-ovn-tls` Secret, under Kube-OVN's names.
#[derive(Debug, Clone)]
pub struct TlsSecret {
    pub key: String,
    pub cert: String,
    pub cacert: String,
}

impl TlsSecret {
    /// Reads `key`, `cert` and `cacert` from `dir` (ovs-pki's or any CA's PEM files).
    pub fn from_dir(dir: &Path) -> Result<TlsSecret, ManifestError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| ManifestError::File {
                path: path.clone(),
                detail: format!("{e} (--tls-dir holds key, cert and cacert, PEM)"),
            })
        };
        Ok(TlsSecret {
            key: read("key")?,
            cert: read("cert")?,
            cacert: read("cacert")?,
        })
    }
}

/// One YAML document, with the file it came from.
#[derive(Debug, Clone)]
pub struct Document {
    pub file: String,
    pub value: Value,
}

impl Document {
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }
    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }
}

/// Reads the documents of `files` (relative to `dir`) in that order.
pub fn read(dir: &Path, files: &[&str]) -> Result<Vec<Document>, ManifestError> {
    if !dir.is_dir() {
        return Err(ManifestError::NoDirectory(dir.to_owned()));
    }
    let mut docs = Vec::new();
    for file in files {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).map_err(|e| ManifestError::File {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).map_err(|e| ManifestError::File {
                path: path.clone(),
                detail: format!("not YAML: {e}"),
            })?;
            if !value.is_null() {
                docs.push(Document {
                    file: (*file).to_owned(),
                    value,
                });
            }
        }
    }
    Ok(docs)
}

/// The install's files: [`ORDER`], then any other top-level `*.yaml`.
pub fn install_files(dir: &Path) -> Result<Vec<String>, ManifestError> {
    if !dir.is_dir() {
        return Err(ManifestError::NoDirectory(dir.to_owned()));
    }
    let mut files: Vec<String> = ORDER.iter().map(|f| (*f).to_owned()).collect();
    let mut extra: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| ManifestError::File {
            path: dir.to_owned(),
            detail: e.to_string(),
        })?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && !files.contains(n))
        .collect();
    extra.sort();
    files.extend(extra);
    Ok(files)
}

/// `<scheme>:<ip>:<port>` for every member, comma-separated (IPv6 in brackets).
pub fn remotes(masters: &[IpAddr], scheme: &str, port: u16) -> String {
    masters
        .iter()
        .map(|ip| match ip {
            IpAddr::V4(v4) => format!("{scheme}:{v4}:{port}"),
            IpAddr::V6(v6) => format!("{scheme}:[{v6}]:{port}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A workload's containers and init containers (none for other kinds: looked up without
/// indexing, which would insert the keys it looks for).
fn containers_mut(doc: &mut Value) -> Vec<&mut Value> {
    let mut out = Vec::new();
    if let Some(obj) = doc
        .pointer_mut("/spec/template/spec")
        .and_then(Value::as_object_mut)
    {
        for (key, list) in obj.iter_mut() {
            if (key == "containers" || key == "initContainers")
                && let Some(list) = list.as_array_mut()
            {
                out.extend(list.iter_mut());
            }
        }
    }
    out
}

fn set_env(container: &mut Value, name: &str, value: &str) {
    let Some(obj) = container.as_object_mut() else {
        return;
    };
    let env = obj.entry("env").or_insert_with(|| json!([]));
    if let Some(env) = env.as_array_mut() {
        env.retain(|e| e["name"] != name);
        env.push(json!({"name": name, "value": value}));
    }
}

/// Fills the documents in for `config`.
pub fn render(
    mut docs: Vec<Document>,
    config: &ClusterConfig,
) -> Result<Vec<Document>, ManifestError> {
    if config.masters.is_empty() || config.masters.len().is_multiple_of(2) {
        return Err(ManifestError::Masters(config.masters.len()));
    }
    let mut saw_config = false;
    let mut saw_central = false;
    let scheme = if config.tls.is_some() { "ssl" } else { "tcp" };
    for doc in &mut docs {
        let (kind, name) = (doc.kind().to_owned(), doc.name().to_owned());
        match (kind.as_str(), name.as_str()) {
            ("ConfigMap", "kovn-ovn-config") => {
                saw_config = true;
                let ips: Vec<String> = config.masters.iter().map(ToString::to_string).collect();
                doc.value["data"] = json!({
                    "node-ips": ips.join(","),
                    "nb-remotes": remotes(&config.masters, scheme, 6641),
                    "sb-remotes": remotes(&config.masters, scheme, 6642),
                    "enable-ssl": config.tls.is_some().to_string(),
                });
            }
            ("Deployment", "ovn-central") => {
                saw_central = true;
                doc.value["spec"]["replicas"] = json!(config.masters.len());
            }
            ("DaemonSet", "ovs-ovn") => {
                for c in containers_mut(&mut doc.value) {
                    set_env(c, "OVS_DATAPATH_TYPE", &config.ovs_datapath);
                }
            }
            _ => {}
        }
        for c in containers_mut(&mut doc.value) {
            let image = c["image"].as_str().unwrap_or_default().to_owned();
            if image == KOVN_IMAGE {
                c["image"] = json!(config.kovn_image);
            } else if image == OVN_IMAGE {
                c["image"] = json!(config.ovn_image);
            }
        }
    }
    if !saw_config {
        return Err(ManifestError::Missing("ConfigMap kovn-ovn-config"));
    }
    if let Some(tls) = &config.tls {
        // Beside the ConfigMap that switches SSL on, before anything mounts it.
        let at = docs
            .iter()
            .position(|d| d.kind() == "ConfigMap" && d.name() == "kovn-ovn-config")
            .map_or(0, |i| i + 1);
        let file = docs
            .get(at.saturating_sub(1))
            .map(|d| d.file.clone())
            .unwrap_or_default();
        docs.insert(
            at,
            Document {
                file,
                value: json!({
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {
                        "name": "kovn-ovn-tls",
                        "namespace": "kube-system",
                        "labels": {"app.kubernetes.io/part-of": "kovn"}
                    },
                    "type": "Opaque",
                    "stringData": {"key": tls.key, "cert": tls.cert, "cacert": tls.cacert}
                }),
            },
        );
    }
    if !saw_central {
        return Err(ManifestError::Missing("Deployment ovn-central"));
    }
    Ok(docs)
}

/// The node cleanup DaemonSet for one phase (`agent` or `ovs`), with the cluster's image.
pub fn node_cleanup(
    dir: &Path,
    phase: &str,
    kovn_image: &str,
) -> Result<Vec<Document>, ManifestError> {
    let mut docs = read(dir, &[NODE_CLEANUP])?;
    for doc in &mut docs {
        for c in containers_mut(&mut doc.value) {
            set_env(c, "KOVN_CLEANUP_PHASE", phase);
            if c["image"] == KOVN_IMAGE {
                c["image"] = json!(kovn_image);
            }
        }
    }
    Ok(docs)
}

/// One YAML stream, as `kubectl apply -f -` reads it.
pub fn to_yaml(docs: &[Document]) -> String {
    let mut out = String::new();
    for doc in docs {
        out.push_str(&format!("---\n# from {}\n", doc.file));
        out.push_str(&serde_yaml_ng::to_string(&doc.value).expect("JSON values serialize"));
    }
    out
}
