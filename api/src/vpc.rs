use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Condition;

/// A static route of a VPC's router.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StaticRoute {
    /// `policyDst` or `policySrc`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub policy: String,
    pub cidr: String,
    #[serde(rename = "nextHopIP")]
    pub next_hop_ip: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub route_table: String,
}

/// A policy route of a VPC's router.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRoute {
    pub priority: i32,
    #[serde(rename = "match")]
    pub match_: String,
    /// `allow`, `drop` or `reroute`.
    pub action: String,
    #[serde(
        rename = "nextHopIP",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub next_hop_ip: String,
}

/// `kubeovn.io/v1` Vpc: a logical router and its subnets.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "Vpc",
    plural = "vpcs",
    status = "VpcStatus",
    printcolumn = r#"{"name":"Standby","type":"boolean","jsonPath":".status.standby"}"#,
    printcolumn = r#"{"name":"Subnets","type":"string","jsonPath":".status.subnets"}"#,
    printcolumn = r#"{"name":"Namespaces","type":"string","jsonPath":".spec.namespaces"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct VpcSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_subnet: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_routes: Vec<StaticRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_routes: Vec<PolicyRoute>,
}

/// What the controller reports about a VPC: its router and load balancers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VpcStatus {
    #[serde(default)]
    pub standby: bool,
    #[serde(default)]
    pub default: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub router: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_logical_switch: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tcp_load_balancer: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub udp_load_balancer: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sctp_load_balancer: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tcp_session_load_balancer: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub udp_session_load_balancer: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sctp_session_load_balancer: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
