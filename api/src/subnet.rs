use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Condition;

/// Address families of a subnet.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Protocol {
    #[default]
    IPv4,
    IPv6,
    Dual,
}

/// How a subnet's traffic leaves the cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GatewayType {
    /// Each node's own `ovn0`.
    #[default]
    Distributed,
    /// Through the gateway node(s) in `gatewayNode`.
    Centralized,
}

/// `kubeovn.io/v1` Subnet: a logical switch and its address pool.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "Subnet",
    plural = "subnets",
    status = "SubnetStatus",
    printcolumn = r#"{"name":"VPC","type":"string","jsonPath":".spec.vpc"}"#,
    printcolumn = r#"{"name":"Protocol","type":"string","jsonPath":".spec.protocol"}"#,
    printcolumn = r#"{"name":"CIDR","type":"string","jsonPath":".spec.cidrBlock"}"#,
    printcolumn = r#"{"name":"Private","type":"boolean","jsonPath":".spec.private"}"#,
    printcolumn = r#"{"name":"NAT","type":"boolean","jsonPath":".spec.natOutgoing"}"#,
    printcolumn = r#"{"name":"Default","type":"boolean","jsonPath":".spec.default"}"#,
    printcolumn = r#"{"name":"GatewayType","type":"string","jsonPath":".spec.gatewayType"}"#,
    printcolumn = r#"{"name":"V4Used","type":"number","jsonPath":".status.v4usingIPs"}"#,
    printcolumn = r#"{"name":"V4Available","type":"number","jsonPath":".status.v4availableIPs"}"#,
    printcolumn = r#"{"name":"V6Used","type":"number","jsonPath":".status.v6usingIPs"}"#,
    printcolumn = r#"{"name":"V6Available","type":"number","jsonPath":".status.v6availableIPs"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SubnetSpec {
    /// The cluster's default subnet (`ovn-default`).
    #[serde(default)]
    pub default: bool,
    /// The VPC (logical router) the subnet belongs to; empty means `ovn-cluster`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vpc: String,
    #[serde(default)]
    pub protocol: Protocol,
    /// One CIDR, or an IPv4 and an IPv6 CIDR separated by a comma.
    pub cidr_block: String,
    /// Gateway address(es), comma-separated like `cidrBlock`; default the first address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    /// Addresses and `first..last` ranges never handed out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_ips: Vec<String>,
    /// Namespaces whose pods use this subnet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub nat_outgoing: bool,
    #[serde(default)]
    pub gateway_type: GatewayType,
    /// Gateway node(s) of a centralized subnet, comma-separated.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway_node: String,
    /// Spread a centralized subnet's traffic over all its gateway nodes.
    #[serde(default)]
    pub enable_ecmp: bool,
    /// Only `allowSubnets` may reach a private subnet.
    #[serde(default)]
    pub private: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// ACLs written on the subnet's switch as they are (Kube-OVN's `spec.acls`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acls: Vec<SubnetAcl>,
}

/// One ACL of a Subnet's `spec.acls`: OVN's ACL columns, on the subnet's logical switch.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SubnetAcl {
    /// `from-lport` (traffic from the subnet's pods) or `to-lport` (towards them).
    pub direction: String,
    /// 0 to 32767; higher wins.
    pub priority: i32,
    /// An OVN match expression (`ip4.src == 10.16.0.0/16 && tcp.dst == 80`).
    #[serde(rename = "match")]
    pub r#match: String,
    /// `allow-related`, `allow`, `allow-stateless`, `drop` or `reject`.
    pub action: String,
}

/// What the controller reports about a subnet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SubnetStatus {
    #[serde(rename = "v4availableIPs", default)]
    pub v4_available_ips: f64,
    #[serde(rename = "v4usingIPs", default)]
    pub v4_using_ips: f64,
    #[serde(rename = "v6availableIPs", default)]
    pub v6_available_ips: f64,
    #[serde(rename = "v6usingIPs", default)]
    pub v6_using_ips: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
