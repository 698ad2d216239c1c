//! The JSON the plugin and kovn-agent exchange over the agent's unix socket, as Kube-OVN's
//! `pkg/request` defines it: `POST /api/v1/add` → 200 with a [`CniResponse`], `POST
//! /api/v1/del` → 204, errors as `{"error": …}`. kovn adds `POST /api/v1/check`, `POST
//! /api/v1/gc` and `GET /api/v1/status` for the CNI 1.1 verbs.

use serde::{Deserialize, Serialize};

/// Where the agent listens, unless the netconf says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/openvswitch/kube-ovn-daemon.sock";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    #[serde(rename = "dst", default, skip_serializing_if = "String::is_empty")]
    pub destination: String,
    #[serde(rename = "gw", default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self == &Dns::default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniRequest {
    pub cni_type: String,
    pub pod_name: String,
    pub pod_namespace: String,
    pub container_id: String,
    pub net_ns: String,
    pub if_name: String,
    pub provider: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

/// One address of the pod's interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// `IPv4` or `IPv6`.
    pub protocol: String,
    pub ip: String,
    pub cidr: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResponse {
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub mac_address: String,
    #[serde(default)]
    pub mtu: u32,
    /// The interface's name inside the pod.
    #[serde(rename = "nicname", default)]
    pub nic_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// `POST /api/v1/gc`: every attachment the runtime still holds; the agent removes the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRequest {
    pub valid_attachments: Vec<Attachment>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub container_id: String,
    pub if_name: String,
}

/// An error body: `{"error": "…"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
