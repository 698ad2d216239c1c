use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Condition, is_false};

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
    /// `ecmp` or `ecmp_symmetric_reply` (Kube-OVN).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ecmp_mode: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bfd_id: String,
}

/// Kube-OVN's `vpcPeerings`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VpcPeering {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub remote_vpc: String,
    #[serde(
        rename = "localConnectIP",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub local_connect_ip: String,
}

/// Kube-OVN's `bfdPort`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BfdPort {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
}

/// Kube-OVN's `dynamicRouting` (OVN's route advertisement into a VRF).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VpcDynamicRouting {
    #[serde(default)]
    pub enabled: bool,
    /// `connected`, `connected-as-host`, `static`, `nat`, `lb`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redistribute: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub local_only: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub maintain_vrf: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vrf_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf_id: Option<u32>,
}

/// Kube-OVN's `status.bfdPort`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct BfdPortStatus {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
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
    shortname = "vpc",
    status = "VpcStatus",
    printcolumn = r#"{"name":"EnableExternal","type":"boolean","jsonPath":".status.enableExternal"}"#,
    printcolumn = r#"{"name":"EnableBfd","type":"boolean","jsonPath":".status.enableBfd"}"#,
    printcolumn = r#"{"name":"Standby","type":"boolean","jsonPath":".status.standby"}"#,
    printcolumn = r#"{"name":"Subnets","type":"string","jsonPath":".status.subnets"}"#,
    printcolumn = r#"{"name":"ExtraExternalSubnets","type":"string","jsonPath":".status.extraExternalSubnets"}"#,
    printcolumn = r#"{"name":"Namespaces","type":"string","jsonPath":".spec.namespaces"}"#,
    printcolumn = r#"{"name":"DefaultSubnet","type":"string","jsonPath":".status.defaultLogicalSwitch"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct VpcSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_subnet: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_routes: Vec<StaticRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_routes: Vec<PolicyRoute>,
    // Kube-OVN's other fields, kept and named in the Unsupported condition when set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vpc_peerings: Vec<VpcPeering>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub enable_external: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_external_subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub enable_bfd: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_port: Option<BfdPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_routing: Option<VpcDynamicRouting>,
    /// Fields no Kube-OVN version known to kovn has.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl VpcSpec {
    /// The fields set to something kovn does not act on (yet), by their Kube-OVN names.
    pub fn unsupported_fields(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut flag = |set: bool, name: &str| {
            if set {
                out.push(name.to_owned());
            }
        };
        flag(!self.vpc_peerings.is_empty(), "vpcPeerings");
        flag(
            !self.extra_external_subnets.is_empty(),
            "extraExternalSubnets",
        );
        flag(self.enable_bfd, "enableBfd");
        flag(self.bfd_port.as_ref().is_some_and(|p| p.enabled), "bfdPort");
        flag(
            self.dynamic_routing.as_ref().is_some_and(|d| d.enabled),
            "dynamicRouting",
        );
        flag(
            self.static_routes.iter().any(|r| !r.route_table.is_empty()),
            "staticRoutes[].routeTable",
        );
        flag(
            self.static_routes.iter().any(|r| !r.ecmp_mode.is_empty()),
            "staticRoutes[].ecmpMode",
        );
        flag(
            self.static_routes.iter().any(|r| !r.bfd_id.is_empty()),
            "staticRoutes[].bfdId",
        );
        out.extend(
            self.unknown
                .keys()
                .map(|k| format!("{k} (not a Kube-OVN field kovn knows)")),
        );
        out
    }
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
    pub vpc_peerings: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub enable_external: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_external_subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub enable_bfd: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_port: Option<BfdPortStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
