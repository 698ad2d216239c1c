//! kovn itself on the sandbox, multi-process, as a cluster runs it: kovn-controller (a
//! process on node 0's network, as a hostNetwork pod on a master, with the NB's unix socket)
//! and one `kovn-agent daemon` per node (a process in the node's namespace), all talking to the in-memory API stand-in through
//! kubeconfigs, and the kubelet's part played by [`crate::kubelet`] with Kube-OVN's conflist.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node as KubeNode, Pod, PodSpec};
use kube::api::ObjectMeta;
use serde_json::{Value, json};

use crate::cmd::Cmd;
use crate::error::{Result, SandboxError};
use crate::kube_api::{FakeApi, ServedApi};
use crate::kubelet::Kubelet;
use crate::{Handoff, Node, Sandbox, SandboxConfig, netns};

/// Node annotation naming the node's join port (the controller writes it last).
const PORT_NAME: &str = "ovn.kubernetes.io/port_name";

/// A binary of the workspace's build, next to the running test's own target directory; built
/// if it is not there yet (a workspace test run has built them all; a single test binary
/// run on its own builds what is missing).
pub fn workspace_binary(package: &str, name: &str) -> PathBuf {
    let dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent().map(Path::to_path_buf))
        .expect("target directory");
    let path = dir.join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", package, "--bin", name])
            .status()
            .expect("cargo build");
        assert!(status.success(), "building {name}");
    }
    path
}

/// GET `path` from `port` on loopback inside the network namespace `netns` (an agent's
/// /metrics or /readyz): the whole HTTP response.
pub fn http_get_in(netns: &str, port: u16, path: &str) -> Result<String> {
    netns::run_in(netns, || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok::<_, std::io::Error>(out)
    })?
    .map_err(|e| SandboxError::Invalid(format!("GET {path} on :{port} in {netns}: {e}")))
}

/// Where kovn's binaries are.
#[derive(Debug, Clone)]
pub struct KovnBinaries {
    pub controller: PathBuf,
    pub agent: PathBuf,
    /// The directory holding the `kube-ovn` CNI plugin.
    pub cni_dir: PathBuf,
}

/// A child process killed (and reaped) when dropped.
#[derive(Debug)]
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The conflist Kube-OVN installs (01-kube-ovn.conflist), pointed at an agent's socket.
pub fn conflist(socket: &Path) -> Value {
    json!({"name": "kube-ovn", "cniVersion": "0.3.1", "plugins": [
        {"type": "kube-ovn", "server_socket": socket, "ipam": {"server_socket": socket}},
        {"type": "portmap", "capabilities": {"portMappings": true}}]})
}

/// Polls `check` every 100 ms until it holds, or fails after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !check() {
        if Instant::now() > deadline {
            return Err(SandboxError::Invalid(format!(
                "timed out waiting for {what}"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The API stand-in served inside `netns_name` (at its 127.0.0.1), and a kubeconfig for it.
pub fn serve_in(api: &FakeApi, netns_name: &str, dir: &Path) -> Result<(ServedApi, PathBuf)> {
    let io =
        |e: std::io::Error| SandboxError::Invalid(format!("serving the API in {netns_name}: {e}"));
    let listener =
        netns::run_in(netns_name, || std::net::TcpListener::bind("127.0.0.1:0"))?.map_err(io)?;
    let served = api.serve_listener(listener).map_err(io)?;
    let kubeconfig = dir.join(format!("kubeconfig-{netns_name}"));
    served.write_kubeconfig(&kubeconfig).map_err(io)?;
    Ok((served, kubeconfig))
}

/// How one node's `kovn-agent daemon` is to be run: its arguments and environment, the node's
/// namespace, and the host paths it uses (which a container must be given).
#[derive(Debug, Clone)]
pub struct AgentLaunch {
    pub node: String,
    pub netns: String,
    /// The binary the sandbox would run.
    pub binary: PathBuf,
    /// `daemon` and its flags.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Host paths the agent reads or writes (its kubeconfig, the node's OVS run directory,
    /// the CNI socket's directory, the pin directory).
    pub paths: Vec<PathBuf>,
}

/// Turns an [`AgentLaunch`] into the command that runs it (the default runs the binary in the
/// node's network namespace; a test may run the agent from its image instead). The command
/// must print the agent's "ready" line on stdout.
pub type AgentLauncher = std::sync::Arc<dyn Fn(&AgentLaunch) -> Command + Send + Sync>;

/// The default [`AgentLauncher`]: the binary, in the node's namespace with the host's mounts.
pub fn run_agent_binary(launch: &AgentLaunch) -> Command {
    let mut cmd = Cmd::new(launch.binary.display().to_string())
        .args(launch.args.iter().cloned())
        .netns_keep_mounts(&launch.netns);
    for (k, v) in &launch.env {
        cmd = cmd.env(k, v);
    }
    cmd.to_command()
}

/// A pod networked by kovn through the kubelet's CNI ADD.
#[derive(Debug)]
pub struct RunningPod {
    pub name: String,
    pub namespace: String,
    pub node: usize,
    /// Its network namespace (under /var/run/netns).
    pub netns: String,
    pub ip: std::net::Ipv4Addr,
    /// Its IPv6 address, in a dual-stack subnet.
    pub ipv6: Option<std::net::Ipv6Addr>,
    pub container_id: String,
    /// The networks attached beside eth0 from its `k8s.v1.cni.cncf.io/networks`, in order.
    pub attachments: Vec<Attachment>,
}

/// One network Multus attached to a pod: its interface, the NAD it ran and the CNI result.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub interface: String,
    pub nad: api::NetworkAttachmentDefinition,
    pub result: Value,
}

impl Attachment {
    /// The first IPv4 address of the result.
    pub fn ipv4(&self) -> Option<std::net::Ipv4Addr> {
        first_ipv4(&self.result)
    }
}

/// The first IPv4 address of a CNI result.
fn first_ipv4(result: &Value) -> Option<std::net::Ipv4Addr> {
    result["ips"]
        .as_array()?
        .iter()
        .filter_map(|entry| entry["address"].as_str()?.split('/').next()?.parse().ok())
        .next()
}

/// A NAD's config as the node's Multus delegates it: a single plugin wrapped in a conflist
/// named after the NAD, and Kube-OVN's daemon socket (`/run/openvswitch/kube-ovn-daemon.sock`,
/// the same path on every node of a real cluster) read as this node's agent socket, as a
/// node's mount namespace would resolve it.
fn delegate_conflist(nad: &api::NetworkAttachmentDefinition, socket: &Path) -> Result<Value> {
    let mut config: Value = serde_json::from_str(&nad.spec.config).map_err(|e| {
        SandboxError::Invalid(format!(
            "NAD {}: config: {e}",
            nad.metadata.name.as_deref().unwrap_or_default()
        ))
    })?;
    fn on_node(value: &mut Value, socket: &Path) {
        match value {
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    if key == "server_socket" && v.as_str() == Some(cni::wire::DEFAULT_SOCKET) {
                        *v = json!(socket);
                    } else {
                        on_node(v, socket);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| on_node(v, socket)),
            _ => {}
        }
    }
    on_node(&mut config, socket);
    Ok(if config.get("plugins").is_some() {
        config
    } else {
        json!({
            "cniVersion": config["cniVersion"].clone(),
            "name": nad.metadata.name.clone().unwrap_or_default(),
            "plugins": [config],
        })
    })
}

impl RunningPod {
    /// As the traffic helpers take a pod (they use its namespace and address).
    pub fn as_pod(&self, cluster: &KovnCluster) -> crate::Pod {
        let node = cluster.sb.node(self.node);
        crate::Pod {
            name: self.name.clone(),
            node: node.name.clone(),
            node_netns: node.netns.clone(),
            netns: self.netns.clone(),
            ip: self.ip,
            prefix_len: 16,
            gateway: self.ip,
            mac: String::new(),
            lsp: format!("{}.{}", self.name, self.namespace),
            host_veth: String::new(),
            ovs_port: String::new(),
            ovs_peer: String::new(),
        }
    }
}

impl Drop for RunningPod {
    fn drop(&mut self) {
        let _ = netns::delete(&self.netns);
    }
}

/// A pod of the default namespace with nothing but a name.
fn default_pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec::default()),
        ..Pod::default()
    }
}

/// A stable container ID for a pod name.
fn fnv(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What a test sets on one node of a [`KovnCluster`] before its agent starts.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// The name of its uplink bridge (its tunnel interface); `br-phy` when not given.
    pub uplink: Option<String>,
    /// Annotations of its Node object.
    pub annotations: Vec<(String, String)>,
}

pub struct KovnCluster {
    pub sb: Sandbox,
    pub api: FakeApi,
    pub dir: PathBuf,
    pub binaries: KovnBinaries,
    pub kubelets: Vec<Kubelet>,
    /// Seconds an agent's ADD waits for the controller's annotations.
    pub annotation_timeout: u64,
    /// Extra arguments of every `kovn-agent daemon` (also when restarted).
    pub agent_args: Vec<String>,
    /// How agents are run (restarted ones too).
    pub agent_launcher: AgentLauncher,
    controller: Process,
    agents: Vec<Process>,
    kubeconfigs: Vec<PathBuf>,
    _servers: Vec<ServedApi>,
    /// Serves the API stand-in (kept for as long as the cluster).
    _runtime: tokio::runtime::Runtime,
}

impl KovnCluster {
    /// Starts a sandbox with an empty NB and kovn on it; returns once every node has its join
    /// port.
    pub fn start(nodes: usize, binaries: KovnBinaries) -> Result<KovnCluster> {
        KovnCluster::start_with_agent_args(nodes, binaries, &[])
    }

    /// As [`KovnCluster::start`], with extra arguments for every `kovn-agent daemon`.
    pub fn start_with_agent_args(
        nodes: usize,
        binaries: KovnBinaries,
        agent_args: &[&str],
    ) -> Result<KovnCluster> {
        KovnCluster::start_with_launcher(
            nodes,
            binaries,
            agent_args,
            std::sync::Arc::new(run_agent_binary),
            crate::NodeDaemons::Host,
        )
    }

    /// As [`KovnCluster::start_with_agent_args`], with the agents run by `launcher` and each
    /// node's OVS and ovn-controller by `node_daemons`.
    pub fn start_with_launcher(
        nodes: usize,
        binaries: KovnBinaries,
        agent_args: &[&str],
        launcher: AgentLauncher,
        node_daemons: crate::NodeDaemons,
    ) -> Result<KovnCluster> {
        KovnCluster::start_on(
            &vec![NodeOptions::default(); nodes],
            binaries,
            agent_args,
            launcher,
            node_daemons,
        )
    }

    /// As [`KovnCluster::start_with_agent_args`], with one node per entry of `nodes`, each as
    /// it says (its uplink's name, its Node's annotations before its agent starts).
    pub fn start_with_nodes(
        nodes: &[NodeOptions],
        binaries: KovnBinaries,
        agent_args: &[&str],
    ) -> Result<KovnCluster> {
        KovnCluster::start_on(
            nodes,
            binaries,
            agent_args,
            std::sync::Arc::new(run_agent_binary),
            crate::NodeDaemons::Host,
        )
    }

    fn start_on(
        options: &[NodeOptions],
        binaries: KovnBinaries,
        agent_args: &[&str],
        launcher: AgentLauncher,
        node_daemons: crate::NodeDaemons,
    ) -> Result<KovnCluster> {
        let nodes = options.len();
        let sb = Sandbox::start_empty(SandboxConfig {
            nodes,
            handoff: Handoff::Datapath,
            node_daemons,
            uplinks: options
                .iter()
                .map(|o| {
                    o.uplink
                        .clone()
                        .unwrap_or_else(|| crate::PHYSICAL_BRIDGE.to_owned())
                })
                .collect(),
        })?;
        let runtime = tokio::runtime::Runtime::new()
            .map_err(|e| SandboxError::Invalid(format!("a runtime for the API stand-in: {e}")))?;
        let dir = sb.dir().join("kovn");
        std::fs::create_dir_all(&dir).map_err(crate::error::io_error(&dir))?;
        let api = FakeApi::new();
        api.put(&Namespace {
            metadata: ObjectMeta {
                name: Some("default".into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        });
        for (node, option) in sb.nodes().iter().zip(options) {
            api.put(&KubeNode {
                metadata: ObjectMeta {
                    name: Some(node.name.clone()),
                    annotations: (!option.annotations.is_empty())
                        .then(|| option.annotations.iter().cloned().collect()),
                    ..ObjectMeta::default()
                },
                ..KubeNode::default()
            });
        }
        let mut servers = Vec::new();
        let mut kubeconfigs = Vec::new();
        {
            let _guard = runtime.enter();
            for node in sb.nodes() {
                let (served, kubeconfig) = serve_in(&api, &node.netns, &dir)?;
                servers.push(served);
                kubeconfigs.push(kubeconfig);
            }
        }
        let controller = start_controller(&binaries, &sb, &kubeconfigs[0])?;
        let mut cluster = KovnCluster {
            sb,
            api,
            dir,
            binaries,
            kubelets: Vec::new(),
            annotation_timeout: 30,
            agent_args: agent_args.iter().map(|a| a.to_string()).collect(),
            agent_launcher: launcher,
            controller,
            agents: Vec::new(),
            kubeconfigs,
            _servers: servers,
            _runtime: runtime,
        };
        for i in 0..nodes {
            let node = cluster.sb.node(i).clone();
            let agent = cluster.start_agent(i)?;
            cluster.agents.push(agent);
            cluster.kubelets.push(Kubelet {
                conflist: conflist(&cluster.socket(i)),
                plugin_dirs: vec![
                    cluster.binaries.cni_dir.clone(),
                    PathBuf::from("/usr/lib/cni"),
                    PathBuf::from("/opt/cni/bin"),
                ],
                node_netns: node.netns.clone(),
            });
        }
        let api = cluster.api.clone();
        wait_for("every node's join port", Duration::from_secs(30), || {
            api.all::<KubeNode>().iter().all(|n| {
                n.metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(PORT_NAME))
            })
        })?;
        Ok(cluster)
    }

    /// The CNI socket of node `i`'s agent.
    pub fn socket(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.sock", self.sb.node(i).name))
    }

    fn start_agent(&self, i: usize) -> Result<Process> {
        let node: &Node = self.sb.node(i);
        let pin_dir = self.sb.bpffs_dir().join(&node.name);
        let mut args: Vec<String> = vec![
            "daemon".into(),
            "--node-name".into(),
            node.name.clone(),
            "--cni-socket".into(),
            self.socket(i).display().to_string(),
            "--ovs-db".into(),
            format!("unix:{}", node.db.socket.display()),
            "--metrics-addr".into(),
            "127.0.0.1:10665".into(),
            "--annotation-timeout".into(),
            self.annotation_timeout.to_string(),
            "--pin-dir".into(),
            pin_dir.display().to_string(),
            // The chassis settings the sandbox gave the node, written again by the agent as
            // in a cluster: a wrong value would break tunnels in every test on top.
            format!("--ovn-remote={}", self.sb.central().sb_remote()),
            format!("--encap-ip={}", node.address),
            "--datapath-type=netdev".into(),
        ];
        args.extend(self.agent_args.iter().cloned());
        let launch = AgentLaunch {
            node: node.name.clone(),
            netns: node.netns.clone(),
            binary: self.binaries.agent.clone(),
            args,
            env: vec![
                (
                    "KUBECONFIG".into(),
                    self.kubeconfigs[i].display().to_string(),
                ),
                ("RUST_LOG".into(), sandbox_log_level()),
            ],
            paths: vec![
                self.kubeconfigs[i].clone(),
                node.db
                    .socket
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
                self.dir.clone(),
                pin_dir,
            ],
        };
        let mut child = (self.agent_launcher)(&launch)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| SandboxError::Invalid(format!("starting kovn-agent: {e}")))?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        let process = Process(child);
        if line.trim() != "ready" {
            return Err(SandboxError::Invalid(format!(
                "kovn-agent on {} did not come up (see its log above)",
                node.name
            )));
        }
        Ok(process)
    }

    /// SIGKILL node `i`'s agent and start it again (a crashed container restarting).
    pub fn restart_agent(&mut self, i: usize) -> Result<()> {
        let _ = self.agents[i].0.kill();
        let _ = self.agents[i].0.wait();
        self.agents[i] = self.start_agent(i)?;
        Ok(())
    }

    /// SIGTERM node `i`'s agent, as the kubelet stops a container, and wait for it to exit
    /// (at most `limit`). Returns whether it exited with status 0. Pods and the datapath stay.
    pub fn stop_agent(&self, i: usize, limit: Duration) -> Result<bool> {
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        let pid = nix::unistd::Pid::from_raw(self.agents[i].0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
            .map_err(|e| SandboxError::Invalid(format!("SIGTERM to kovn-agent: {e}")))?;
        let deadline = Instant::now() + limit;
        loop {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code == 0),
                Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(_) | Err(_) => return Ok(false),
            }
        }
    }

    /// SIGKILL the controller (what it wrote stays; nothing is reconciled until a restart).
    pub fn stop_controller(&mut self) {
        let _ = self.controller.0.kill();
        let _ = self.controller.0.wait();
    }

    /// SIGKILL the controller and start it again (same pod name: it takes its Lease back).
    pub fn restart_controller(&mut self) -> Result<()> {
        let _ = self.controller.0.kill();
        let _ = self.controller.0.wait();
        self.controller = start_controller(&self.binaries, &self.sb, &self.kubeconfigs[0])?;
        Ok(())
    }

    /// Waits until the controller has built the logical switch `switch` (a Subnet's), at
    /// most `limit`.
    pub fn wait_for_switch(&self, switch: &str, limit: Duration) -> Result<()> {
        let nbctl = self.sb.central().nbctl();
        let filter = format!("name={switch}");
        wait_for(&format!("logical switch {switch}"), limit, || {
            nbctl
                .run([
                    "--bare",
                    "--columns=name",
                    "find",
                    "Logical_Switch",
                    &filter,
                ])
                .is_ok_and(|o| o.contains(switch))
        })
    }

    /// Creates a pod on node `i`, as the scheduler leaves it.
    pub fn add_pod(&self, name: &str, i: usize) {
        self.api.put(&self.scheduled(default_pod(name), i));
    }

    fn scheduled(&self, mut pod: Pod, i: usize) -> Pod {
        pod.spec.get_or_insert_with(PodSpec::default).node_name =
            Some(self.sb.node(i).name.clone());
        pod
    }

    /// Creates the namespace `name` with `labels` (or relabels it).
    pub fn put_namespace(&self, name: &str, labels: &[(&str, &str)]) {
        self.api.put(&Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        });
    }

    /// Creates pod `name` on node `i` and runs the kubelet's CNI ADD for it in a new network
    /// namespace (deleted when the returned pod is dropped); returns once ADD succeeded.
    pub fn start_pod(&self, name: &str, i: usize) -> Result<RunningPod> {
        self.start_pod_object(default_pod(name), i)
    }

    /// As [`KovnCluster::start_pod`], for a pod object of the caller's (its namespace, labels,
    /// container ports); the node is set to node `i`.
    pub fn start_pod_object(&self, pod: Pod, i: usize) -> Result<RunningPod> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let networks = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(api::network_attachment::NETWORKS_ANNOTATION))
            .map(|a| api::network_attachment::parse_networks(a, &namespace))
            .transpose()
            .map_err(SandboxError::Invalid)?
            .unwrap_or_default();
        self.api.put(&self.scheduled(pod, i));
        // Default-namespace pods keep their short names (tests look them up by them).
        let qualified = if namespace == "default" {
            name.clone()
        } else {
            format!("{namespace}-{name}")
        };
        let netns_name = format!(
            "{}k-{qualified}",
            crate::registry::netns_prefix(self.sb.id())
        );
        netns::add(&netns_name)?;
        let mut pod = RunningPod {
            name: name.clone(),
            namespace: namespace.clone(),
            node: i,
            netns: netns_name,
            ip: std::net::Ipv4Addr::UNSPECIFIED,
            ipv6: None,
            // Distinct in the first 12 characters: the agent names interfaces after them.
            container_id: format!("{:016x}{:048x}", fnv(&qualified), 0),
            attachments: Vec::new(),
        };
        let result = self.kubelets[i]
            .add(&crate::kubelet::PodSandbox {
                name: name.clone(),
                namespace,
                container_id: pod.container_id.clone(),
                netns: pod.netns.clone(),
                if_name: "eth0".into(),
                port_mappings: vec![],
            })
            .map_err(|e| SandboxError::Invalid(format!("CNI ADD {qualified}: {e}")))?;
        pod.ip = first_ipv4(&result).ok_or_else(|| {
            SandboxError::Invalid(format!("no IPv4 address for {qualified}: {result}"))
        })?;
        pod.ipv6 = result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| entry["address"].as_str()?.split('/').next()?.parse().ok())
            .next();
        // Then every network of the annotation, in its order, as Multus delegates them after
        // the cluster network; a NAD that is not there fails the pod, as it does Multus's ADD.
        for selection in networks {
            let nad = self
                .api
                .all::<api::NetworkAttachmentDefinition>()
                .into_iter()
                .find(|n| {
                    n.metadata.name.as_deref() == Some(selection.name.as_str())
                        && n.metadata.namespace.as_deref() == Some(selection.namespace.as_str())
                })
                .ok_or_else(|| {
                    SandboxError::Invalid(format!(
                        "pod {qualified}: no NetworkAttachmentDefinition {}/{}",
                        selection.namespace, selection.name
                    ))
                })?;
            let result = self.run_attachment(&pod, &nad, &selection.interface, false)?;
            pod.attachments.push(Attachment {
                interface: selection.interface,
                nad,
                result,
            });
        }
        Ok(pod)
    }

    /// The attachment of `pod` on interface `interface`, removed as a DEL of that attachment
    /// alone (what Multus's dynamic networks do when a network is taken off a running pod).
    pub fn detach(&self, pod: &mut RunningPod, interface: &str) -> Result<()> {
        let at = pod
            .attachments
            .iter()
            .position(|a| a.interface == interface)
            .ok_or_else(|| {
                SandboxError::Invalid(format!("{} has no attachment {interface}", pod.name))
            })?;
        let attachment = pod.attachments[at].clone();
        self.run_attachment(pod, &attachment.nad, interface, true)?;
        pod.attachments.remove(at);
        Ok(())
    }

    /// Runs a NetworkAttachmentDefinition's CNI config for `pod` as Multus delegates it (see
    /// [`delegate_conflist`]) through the kubelet's CNI path on the pod's node, for interface
    /// `if_name`. `del` runs DEL instead of ADD. Returns the result (Null for DEL).
    pub fn run_attachment(
        &self,
        pod: &RunningPod,
        nad: &api::NetworkAttachmentDefinition,
        if_name: &str,
        del: bool,
    ) -> Result<Value> {
        let kubelet = Kubelet {
            conflist: delegate_conflist(nad, &self.socket(pod.node))?,
            ..self.kubelets[pod.node].clone()
        };
        let sandbox = crate::kubelet::PodSandbox {
            name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            container_id: pod.container_id.clone(),
            netns: pod.netns.clone(),
            if_name: if_name.to_owned(),
            port_mappings: vec![],
        };
        let outcome = if del {
            kubelet.del(&sandbox, None).map(|()| Value::Null)
        } else {
            kubelet.add(&sandbox)
        };
        outcome.map_err(|e| SandboxError::Invalid(format!("CNI {if_name} of {}: {e}", pod.name)))
    }

    /// Stops kovn and tears the sandbox down.
    pub fn teardown(self) -> Result<crate::TeardownReport> {
        let KovnCluster {
            sb,
            agents,
            controller,
            ..
        } = self;
        drop(agents);
        drop(controller);
        sb.teardown()
    }
}

/// kovn-controller on node 0's network, as a hostNetwork pod on a master node (its gateway
/// probes leave through that node's `ovn0`), with the NB's unix socket and the API stand-in
/// served in that namespace (`kubeconfig`).
fn start_controller(binaries: &KovnBinaries, sb: &Sandbox, kubeconfig: &Path) -> Result<Process> {
    Cmd::new(binaries.controller.display().to_string())
        .arg(format!(
            "--ovn-nb-addr=unix:{}",
            sb.central().nb.socket.display()
        ))
        .arg("--metrics-addr=127.0.0.1:0")
        .env("KUBECONFIG", kubeconfig.display().to_string())
        .env("KUBE_NAMESPACE", "kube-system")
        .env("POD_NAME", "kovn-controller-sandbox")
        .env("RUST_LOG", sandbox_log_level())
        .netns_keep_mounts(&sb.node(0).netns)
        .to_command()
        .stdout(Stdio::null())
        .spawn()
        .map(Process)
        .map_err(|e| SandboxError::Invalid(format!("starting kovn-controller: {e}")))
}

/// The log level of the kovn daemons the sandbox runs: `KOVN_SANDBOX_LOG` (a `RUST_LOG`
/// filter, e.g. `agent=debug`) when set, else warnings only.
fn sandbox_log_level() -> String {
    std::env::var("KOVN_SANDBOX_LOG").unwrap_or_else(|_| "warn".to_owned())
}
