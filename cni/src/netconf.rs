//! The network configuration on stdin, compatible with Kube-OVN's: `server_socket`,
//! `provider`, `routes`, and the `ipam` block when kube-ovn serves only IPAM under another
//! plugin (`"ipam": {"type": "kube-ovn", "server_socket": …}`).

use serde::Deserialize;
use serde_json::Value;

use crate::error::{CniError, Code};
use crate::wire::{DEFAULT_SOCKET, Dns, Route};

/// The CNI versions whose results this plugin prints.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// This plugin's own type name, as in the conflist.
pub const TYPE: &str = "kube-ovn";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ipam {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(rename = "server_socket", default)]
    pub server_socket: String,
    #[serde(default)]
    pub provider: String,
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// A GC's `cni.dev/valid-attachments` entry.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(rename = "ifname")]
    pub if_name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(rename = "server_socket", default)]
    pub server_socket: String,
    #[serde(default)]
    pub provider: String,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Option<Dns>,
    #[serde(default)]
    pub ipam: Option<Ipam>,
    #[serde(default)]
    pub prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
    /// kovn's extension: how long to wait for the agent (ADD waits for the controller's
    /// annotations, so it gets this in full; other verbs a sixth of it).
    #[serde(rename = "timeout_seconds", default)]
    pub timeout_seconds: Option<u64>,
}

impl NetConf {
    /// Parses stdin. `cniVersion` must be one this plugin speaks.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let mut conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                Code::Decoding,
                "cannot decode the network configuration on stdin",
                format!("{e}; expected a CNI netconf JSON object with \"type\": \"kube-ovn\""),
            )
        })?;
        if conf.cni_version.is_empty() {
            // The spec's default for a configuration without one.
            conf.cni_version = "0.1.0".into();
        }
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(
                Code::IncompatibleVersion,
                format!("CNI version {} is not supported", conf.cni_version),
                format!(
                    "set \"cniVersion\" in the conflist to one of {}",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        // IPAM-only: another plugin runs kube-ovn as its IPAM; the settings live in `ipam`.
        if conf.type_ != TYPE
            && let Some(ipam) = conf.ipam.clone()
        {
            conf.server_socket = ipam.server_socket;
            conf.provider = ipam.provider;
            conf.routes = ipam.routes;
        }
        if conf.server_socket.is_empty() {
            conf.server_socket = DEFAULT_SOCKET.into();
        }
        Ok(conf)
    }

    /// Whether kube-ovn serves only addresses here (the result has no interface of its own).
    pub fn ipam_only(&self) -> bool {
        self.type_ != TYPE
    }

    /// Kube-OVN's provider name: `ovn` (the default network) unless the netconf names one.
    pub fn provider(&self) -> String {
        if self.provider.is_empty() {
            "ovn".into()
        } else {
            self.provider.clone()
        }
    }
}
