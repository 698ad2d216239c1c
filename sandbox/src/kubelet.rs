//! The kubelet's part of CNI, played as the kubelet (through libcni) plays it: a conflist's
//! plugins run in order for ADD, each given the list's name and version, the previous
//! plugin's result as `prevResult` and the runtime config its capabilities ask for
//! (`portMappings`); DEL and CHECK get the cached result; DEL runs the plugins in reverse.
//! Plugins run in the node's network namespace with the CNI_* environment and the pod's
//! `K8S_POD_*` arguments.

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;

use serde_json::{Value, json};

use crate::netns::NETNS_DIR;

/// A hostPort, as the kubelet passes it to plugins with the `portMappings` capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// One pod sandbox, as the runtime names it to CNI.
#[derive(Debug, Clone)]
pub struct PodSandbox {
    pub name: String,
    pub namespace: String,
    pub container_id: String,
    /// The network namespace's name (under /var/run/netns).
    pub netns: String,
    pub if_name: String,
    pub port_mappings: Vec<PortMapping>,
}

/// A plugin's failure: which plugin, and what it printed (the CNI error JSON).
#[derive(Debug, Clone)]
pub struct CniFailure {
    pub plugin: String,
    pub output: Value,
}

impl std::fmt::Display for CniFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CNI plugin {} failed: {}", self.plugin, self.output)
    }
}

/// The kubelet of one node.
#[derive(Debug, Clone)]
pub struct Kubelet {
    pub conflist: Value,
    /// Where plugin binaries are looked up, in order (CNI_PATH).
    pub plugin_dirs: Vec<PathBuf>,
    /// The node's network namespace, where plugins run.
    pub node_netns: String,
}

impl Kubelet {
    fn plugin_conf(&self, index: usize, pod: &PodSandbox, prev: Option<&Value>) -> Value {
        let mut conf = self.conflist["plugins"][index].clone();
        conf["name"] = self.conflist["name"].clone();
        conf["cniVersion"] = self.conflist["cniVersion"].clone();
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        if conf["capabilities"]["portMappings"] == json!(true) && !pod.port_mappings.is_empty() {
            let mappings: Vec<Value> = pod
                .port_mappings
                .iter()
                .map(|m| {
                    json!({"hostPort": m.host_port, "containerPort": m.container_port,
                           "protocol": m.protocol})
                })
                .collect();
            conf["runtimeConfig"] = json!({ "portMappings": mappings });
        }
        conf
    }

    fn plugins(&self) -> usize {
        self.conflist["plugins"].as_array().map_or(0, Vec::len)
    }

    /// Runs one plugin: its stdout as JSON (Null when empty), or the failure.
    fn exec(
        &self,
        command: &str,
        index: usize,
        pod: &PodSandbox,
        conf: &Value,
    ) -> Result<Value, CniFailure> {
        let plugin = conf["type"].as_str().unwrap_or_default().to_owned();
        let fail = |output: Value| CniFailure {
            plugin: plugin.clone(),
            output,
        };
        let Some(binary) = self
            .plugin_dirs
            .iter()
            .map(|d| d.join(&plugin))
            .find(|p| p.exists())
        else {
            return Err(fail(
                json!({"msg": format!("no plugin {plugin} in {:?}", self.plugin_dirs), "index": index}),
            ));
        };
        let cni_path = self
            .plugin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        // Spawned from a thread inside the node's namespace, as a kubelet runs there: the child
        // inherits it, and the spawn stays a vfork-style posix_spawn (a pre_exec setns would
        // force a fork of this whole process, whose size is the API stand-in's).
        let mut spawn = std::process::Command::new(&binary);
        spawn
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &pod.container_id)
            .env("CNI_NETNS", format!("{NETNS_DIR}/{}", pod.netns))
            .env("CNI_IFNAME", &pod.if_name)
            .env(
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
                    pod.namespace, pod.name, pod.container_id
                ),
            )
            .env("CNI_PATH", cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = crate::netns::run_in(&self.node_netns, || spawn.spawn())
            .map_err(|e| fail(json!({"msg": format!("entering the node's namespace: {e}")})))?
            .map_err(|e| fail(json!({"msg": format!("cannot run {}: {e}", binary.display())})))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(conf.to_string().as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| fail(json!({"msg": e.to_string()})))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| json!({"raw": text.trim()}))
        };
        if out.status.success() {
            Ok(value)
        } else {
            let mut value = value;
            if value.is_null() {
                value = json!({"stderr": String::from_utf8_lossy(&out.stderr).trim()});
            }
            Err(fail(value))
        }
    }

    /// ADD through the whole list; the last plugin's result (the kubelet caches it for DEL).
    pub fn add(&self, pod: &PodSandbox) -> Result<Value, CniFailure> {
        let mut result: Option<Value> = None;
        for i in 0..self.plugins() {
            let conf = self.plugin_conf(i, pod, result.as_ref());
            let out = self.exec("ADD", i, pod, &conf)?;
            if !out.is_null() {
                result = Some(out);
            }
        }
        Ok(result.unwrap_or(Value::Null))
    }

    /// CHECK through the list with the cached result. As libcni, refused for a list older
    /// than CNI 0.4.0 (which has no CHECK).
    pub fn check(&self, pod: &PodSandbox, cached: &Value) -> Result<(), CniFailure> {
        let version = self.conflist["cniVersion"].as_str().unwrap_or("0.1.0");
        if version.starts_with("0.1") || version.starts_with("0.2") || version.starts_with("0.3") {
            return Err(CniFailure {
                plugin: String::new(),
                output: json!({"msg": format!("configuration version {version:?} does not support the CHECK command")}),
            });
        }
        for i in 0..self.plugins() {
            let conf = self.plugin_conf(i, pod, Some(cached));
            self.exec("CHECK", i, pod, &conf)?;
        }
        Ok(())
    }

    /// GC with the attachments the runtime still has, `(container ID, interface)`. As libcni,
    /// only for a list of CNI 1.1.0.
    pub fn gc(&self, valid: &[(String, String)]) -> Result<(), CniFailure> {
        let version = self.conflist["cniVersion"].as_str().unwrap_or("0.1.0");
        if version != "1.1.0" {
            return Err(CniFailure {
                plugin: String::new(),
                output: json!({"msg": format!("configuration version {version:?} does not support the GC command")}),
            });
        }
        let attachments: Vec<Value> = valid
            .iter()
            .map(|(id, ifname)| json!({"containerID": id, "ifname": ifname}))
            .collect();
        let nobody = PodSandbox {
            name: String::new(),
            namespace: String::new(),
            container_id: String::new(),
            netns: String::new(),
            if_name: String::new(),
            port_mappings: vec![],
        };
        for i in 0..self.plugins() {
            let mut conf = self.plugin_conf(i, &nobody, None);
            conf["cni.dev/valid-attachments"] = json!(attachments);
            self.exec("GC", i, &nobody, &conf)?;
        }
        Ok(())
    }

    /// DEL through the list in reverse, with the cached result if there is one.
    pub fn del(&self, pod: &PodSandbox, cached: Option<&Value>) -> Result<(), CniFailure> {
        for i in (0..self.plugins()).rev() {
            let conf = self.plugin_conf(i, pod, cached);
            self.exec("DEL", i, pod, &conf)?;
        }
        Ok(())
    }
}
