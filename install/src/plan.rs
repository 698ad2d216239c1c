//! What `install` and `uninstall` do to a cluster, as a list of kubectl steps: printed by
//! `--dry-run`, run one after another otherwise (a failed step stops the rest and says which).

use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::manifests::{self, ClusterConfig, Document};

/// One kubectl invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub what: String,
    pub args: Vec<String>,
    /// Fed to kubectl's stdin (`-f -`).
    pub stdin: Option<String>,
}

fn step(what: impl Into<String>, args: &[&str], stdin: Option<String>) -> Step {
    Step {
        what: what.into(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        stdin,
    }
}

const NS: &str = "kube-system";

/// How long a rollout may take before the step fails.
pub const ROLLOUT_TIMEOUT: &str = "--timeout=300s";

fn apply(what: &str, docs: &[Document]) -> Step {
    step(
        what,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=kovn-install",
            "-f",
            "-",
        ],
        Some(manifests::to_yaml(docs)),
    )
}

fn delete(what: &str, docs: &[Document]) -> Step {
    step(
        what,
        &["delete", "--ignore-not-found", "--wait=true", "-f", "-"],
        Some(manifests::to_yaml(docs)),
    )
}

fn rollout(kind: &str, name: &str) -> Step {
    step(
        format!("wait for {kind} {name}"),
        &[
            "-n",
            NS,
            "rollout",
            "status",
            &format!("{kind}/{name}"),
            ROLLOUT_TIMEOUT,
        ],
        None,
    )
}

/// The install: everything applied in order, then each workload waited for.
pub fn install(docs: &[Document], wait: bool) -> Vec<Step> {
    let mut steps = vec![apply("apply kovn's manifests", docs)];
    if wait {
        steps.push(step(
            "wait for the CRDs",
            &[
                "wait",
                "--for=condition=Established",
                "crd/subnets.kubeovn.io",
                "crd/vpcs.kubeovn.io",
                "crd/ips.kubeovn.io",
                "crd/provider-networks.kubeovn.io",
                "crd/vlans.kubeovn.io",
                "crd/ovn-eips.kubeovn.io",
                "crd/ovn-fips.kubeovn.io",
                "crd/ovn-snat-rules.kubeovn.io",
                "crd/ovn-dnat-rules.kubeovn.io",
                "crd/vpc-nat-gateways.kubeovn.io",
                "crd/iptables-eips.kubeovn.io",
                "crd/iptables-fip-rules.kubeovn.io",
                "crd/iptables-snat-rules.kubeovn.io",
                "crd/iptables-dnat-rules.kubeovn.io",
                ROLLOUT_TIMEOUT,
            ],
            None,
        ));
        for (kind, name) in [
            ("deployment", "ovn-central"),
            ("daemonset", "ovs-ovn"),
            ("deployment", "kovn-controller"),
            ("daemonset", "kovn-agent"),
        ] {
            steps.push(rollout(kind, name));
        }
    }
    steps
}

/// The uninstall: the agent goes first (so nothing puts back what the cleanup removes), the
/// node cleanup's first phase runs while OVS still does (so kovn's ports leave OVS cleanly),
/// then the rest of kovn, then the second phase for OVS's host directories. The CRDs (and so
/// every Subnet, Vpc and IP) only with `delete_crds`.
pub fn uninstall(
    docs: &[Document],
    cleanup_agent: &[Document],
    cleanup_ovs: &[Document],
    delete_crds: bool,
) -> Vec<Step> {
    let (crds, rest): (Vec<Document>, Vec<Document>) = docs
        .iter()
        .cloned()
        .partition(|d| d.kind() == "CustomResourceDefinition");
    let (agent, others): (Vec<Document>, Vec<Document>) =
        rest.into_iter().partition(|d| d.file == "agent.yaml");
    let mut steps = vec![
        delete("delete kovn-agent (the node agents stop)", &agent),
        apply("node cleanup, phase agent", cleanup_agent),
        rollout("daemonset", "kovn-node-cleanup"),
        delete("remove the node cleanup", cleanup_agent),
        delete("delete kovn-controller, ovs-ovn and ovn-central", &others),
        apply("node cleanup, phase ovs", cleanup_ovs),
        rollout("daemonset", "kovn-node-cleanup"),
        delete("remove the node cleanup", cleanup_ovs),
    ];
    if delete_crds {
        steps.push(delete(
            "delete the CRDs (every Subnet, Vpc and IP with them)",
            &crds,
        ));
    }
    steps
}

/// The kubectl command line of a step, for printing.
pub fn command_line(kubectl: &str, s: &Step) -> String {
    let mut line = kubectl.to_owned();
    for a in &s.args {
        line.push(' ');
        line.push_str(a);
    }
    if let Some(stdin) = &s.stdin {
        line.push_str(&format!(
            "  < ({} documents)",
            stdin.matches("\n---\n").count() + usize::from(stdin.starts_with("---\n"))
        ));
    }
    line
}

/// Runs the steps; stops at the first that fails.
pub fn run(kubectl: &str, steps: &[Step]) -> anyhow::Result<()> {
    let total = steps.len();
    for (i, s) in steps.iter().enumerate() {
        eprintln!("[{}/{total}] {}", i + 1, s.what);
        let mut child = Command::new(kubectl)
            .args(&s.args)
            .stdin(if s.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("running {kubectl}: {e} (is kubectl installed and on PATH?)")
            })?;
        if let (Some(text), Some(mut stdin)) = (&s.stdin, child.stdin.take()) {
            stdin.write_all(text.as_bytes())?;
        }
        let status = child.wait()?;
        if !status.success() {
            anyhow::bail!(
                "step {}/{total} ({}) failed: {} exited with {status}; the steps before it are done, fix the cause and run the command again (every step is idempotent)",
                i + 1,
                s.what,
                command_line(kubectl, s)
            );
        }
    }
    Ok(())
}

/// The addresses of the nodes labelled `kube-ovn/role=master` (Kube-OVN's label), from the
/// cluster.
pub fn master_addresses(kubectl: &str) -> anyhow::Result<Vec<std::net::IpAddr>> {
    let out = Command::new(kubectl)
        .args(["get", "nodes", "-l", "kube-ovn/role=master", "-o", "json"])
        .output()
        .map_err(|e| anyhow::anyhow!("running {kubectl}: {e}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "listing the master nodes: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let list: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let ips = masters_of(&list);
    if ips.is_empty() {
        anyhow::bail!(
            "no node is labelled kube-ovn/role=master: label the ovn-central nodes (kubectl label node NAME kube-ovn/role=master) or pass --masters IP,IP,IP"
        );
    }
    Ok(ips)
}

/// The InternalIP of every node of a `NodeList`.
pub fn masters_of(list: &serde_json::Value) -> Vec<std::net::IpAddr> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|node| {
            node["status"]["addresses"]
                .as_array()?
                .iter()
                .find(|a| a["type"] == "InternalIP")?["address"]
                .as_str()?
                .parse()
                .ok()
        })
        .collect()
}

/// What a cluster's install is rendered from, as the command line gives it.
pub fn cluster_config(
    masters: Vec<std::net::IpAddr>,
    ovs_datapath: &str,
    kovn_image: Option<String>,
    ovn_image: Option<String>,
    tls: Option<manifests::TlsSecret>,
) -> ClusterConfig {
    ClusterConfig {
        masters,
        ovs_datapath: ovs_datapath.to_owned(),
        kovn_image: kovn_image.unwrap_or_else(|| manifests::KOVN_IMAGE.to_owned()),
        ovn_image: ovn_image.unwrap_or_else(|| manifests::OVN_IMAGE.to_owned()),
        tls,
    }
}
