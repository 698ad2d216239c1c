//! What the runtime (the kubelet, through the container runtime) passes: the CNI_* environment
//! and `CNI_ARGS` (`K8S_POD_NAME`, `K8S_POD_NAMESPACE`, …).

use std::collections::BTreeMap;

use crate::error::{CniError, Code};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

/// One invocation, validated for its command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub if_name: String,
    pub args: BTreeMap<String, String>,
}

impl Invocation {
    /// Reads and checks the environment (`env` is `std::env::var` in the binary).
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Invocation, CniError> {
        let get = |k: &str| env(k).unwrap_or_default();
        let command = match get("CNI_COMMAND").as_str() {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "" => {
                return Err(CniError::new(
                    Code::InvalidEnvironment,
                    "CNI_COMMAND is not set",
                    "this is a CNI plugin: the container runtime runs it with CNI_COMMAND=ADD|DEL|CHECK|VERSION|STATUS|GC",
                ));
            }
            other => {
                return Err(CniError::new(
                    Code::InvalidEnvironment,
                    format!("unknown CNI_COMMAND {other:?}"),
                    "expected ADD, DEL, CHECK, VERSION, STATUS or GC",
                ));
            }
        };
        let invocation = Invocation {
            command,
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            if_name: get("CNI_IFNAME"),
            args: parse_args(&get("CNI_ARGS")),
        };
        let required: &[(&str, &str)] = match command {
            Command::Add | Command::Check => &[
                ("CNI_CONTAINERID", &invocation.container_id),
                ("CNI_NETNS", &invocation.netns),
                ("CNI_IFNAME", &invocation.if_name),
            ],
            Command::Del => &[
                ("CNI_CONTAINERID", &invocation.container_id),
                ("CNI_IFNAME", &invocation.if_name),
            ],
            Command::Version | Command::Status | Command::Gc => &[],
        };
        if let Some((name, _)) = required.iter().find(|(_, v)| v.is_empty()) {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!("{name} is required for {command:?}"),
                "the container runtime must set it (CNI spec, section Parameters)",
            ));
        }
        Ok(invocation)
    }

    /// The pod a Kubernetes runtime names in `CNI_ARGS`.
    pub fn pod(&self) -> Result<(String, String), CniError> {
        let get = |key: &str| {
            self.args
                .get(key)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or_else(|| {
                    CniError::new(
                        Code::InvalidNetworkConfig,
                        format!("{key} is required in CNI_ARGS"),
                        "kube-ovn serves Kubernetes pods: the kubelet passes K8S_POD_NAME and K8S_POD_NAMESPACE",
                    )
                })
        };
        Ok((get("K8S_POD_NAME")?, get("K8S_POD_NAMESPACE")?))
    }
}

/// `K1=V1;K2=V2` (empty and malformed parts are ignored, as libcni does for unknown args).
pub fn parse_args(args: &str) -> BTreeMap<String, String> {
    args.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}
