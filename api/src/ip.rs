use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `kubeovn.io/v1` IP (named `<pod>.<namespace>`): the controller's record of one pod's
/// addresses, the source of truth IPAM restores from.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "IP",
    plural = "ips",
    printcolumn = r#"{"name":"V4IP","type":"string","jsonPath":".spec.v4IpAddress"}"#,
    printcolumn = r#"{"name":"V6IP","type":"string","jsonPath":".spec.v6IpAddress"}"#,
    printcolumn = r#"{"name":"Mac","type":"string","jsonPath":".spec.macAddress"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.nodeName"}"#,
    printcolumn = r#"{"name":"Subnet","type":"string","jsonPath":".spec.subnet"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IPSpec {
    pub pod_name: String,
    pub namespace: String,
    pub subnet: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    /// Both addresses, comma-separated (Kube-OVN's `ipAddress`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip_address: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub v4_ip_address: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub v6_ip_address: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
    #[serde(
        rename = "containerID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub container_id: String,
    /// Kube-OVN's secondary attachments of the pod (Multus): their subnets, addresses and
    /// MACs, in the same order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attach_subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attach_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attach_macs: Vec<String>,
    /// `StatefulSet`, `VirtualMachine`, … (Kube-OVN keeps such pods' addresses).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod_type: String,
}
