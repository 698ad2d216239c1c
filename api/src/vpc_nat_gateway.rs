//! Kube-OVN's VPC NAT gateway: `VpcNatGateway` (in Kube-OVN a pod with iptables, attached to
//! a VPC subnet and the external network), `IptablesEIP` (an external address of one gateway)
//! and the rules on it, `IptablesFIPRule`, `IptablesSnatRule` and `IptablesDnatRule`. kovn
//! serves the same objects with OVN's own NAT on the VPC's router (see the README), so the
//! fields that describe the pod (`lanIp`, `selector`, `tolerations`, `affinity`, `bgpSpeaker`,
//! QoS) are kept and named in an `Unsupported` condition. All are cluster-scoped.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, Toleration};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Condition, unknown_fields};

/// A static route of the gateway pod (Kube-OVN's `routes`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct NatGatewayRoute {
    #[serde(default)]
    pub cidr: String,
    #[serde(rename = "nextHopIP", default)]
    pub next_hop_ip: String,
}

/// `kubeovn.io/v1` VpcNatGateway.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "VpcNatGateway",
    plural = "vpc-nat-gateways",
    shortname = "vpc-nat-gw",
    status = "VpcNatGatewayStatus",
    printcolumn = r#"{"name":"Vpc","type":"string","jsonPath":".spec.vpc"}"#,
    printcolumn = r#"{"name":"Subnet","type":"string","jsonPath":".spec.subnet"}"#,
    printcolumn = r#"{"name":"LanIP","type":"string","jsonPath":".spec.lanIp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct VpcNatGatewaySpec {
    #[serde(default)]
    pub vpc: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subnet: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub lan_ip: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selector: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub qos_policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp_speaker: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<NatGatewayRoute>,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl VpcNatGatewaySpec {
    /// The fields that describe Kube-OVN's gateway pod, which kovn does not run.
    pub fn unsupported_fields(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut flag = |set: bool, name: &str| {
            if set {
                out.push(name.to_owned());
            }
        };
        flag(!self.lan_ip.is_empty(), "lanIp");
        flag(!self.selector.is_empty(), "selector");
        flag(!self.tolerations.is_empty(), "tolerations");
        flag(self.affinity.is_some(), "affinity");
        flag(!self.qos_policy.is_empty(), "qosPolicy");
        flag(
            self.bgp_speaker
                .as_ref()
                .is_some_and(|b| b.get("enabled") == Some(&serde_json::Value::Bool(true))),
            "bgpSpeaker",
        );
        flag(!self.routes.is_empty(), "routes");
        flag(
            self.external_subnets.len() > 1,
            "externalSubnets (more than one)",
        );
        out.extend(unknown_fields(&self.unknown));
        out
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VpcNatGatewayStatus {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub qos_policy: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// `kubeovn.io/v1` IptablesEIP: an external address of a VPC NAT gateway (`natGwDp`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "IptablesEIP",
    plural = "iptables-eips",
    shortname = "eip",
    status = "IptablesEIPStatus",
    printcolumn = r#"{"name":"IP","type":"string","jsonPath":".status.ip"}"#,
    printcolumn = r#"{"name":"Mac","type":"string","jsonPath":".spec.macAddress"}"#,
    printcolumn = r#"{"name":"Nat","type":"string","jsonPath":".status.nat"}"#,
    printcolumn = r#"{"name":"NatGwDp","type":"string","jsonPath":".spec.natGwDp"}"#,
    printcolumn = r#"{"name":"Ready","type":"boolean","jsonPath":".status.ready"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct IptablesEIPSpec {
    #[serde(rename = "v4ip", default, skip_serializing_if = "String::is_empty")]
    pub v4ip: String,
    #[serde(rename = "v6ip", default, skip_serializing_if = "String::is_empty")]
    pub v6ip: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
    #[serde(default)]
    pub nat_gw_dp: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub qos_policy: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub external_subnet: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl IptablesEIPSpec {
    pub fn unsupported_fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.v6ip.is_empty() {
            out.push("v6ip".to_owned());
        }
        if !self.qos_policy.is_empty() {
            out.push("qosPolicy".to_owned());
        }
        out.extend(unknown_fields(&self.unknown));
        out
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IptablesEIPStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub ip: String,
    #[serde(default)]
    pub nat: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub redo: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub qos_policy: String,
}

/// The status every Iptables rule kind has.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IptablesRuleStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub ready: bool,
    #[serde(rename = "v4ip", default)]
    pub v4ip: String,
    #[serde(rename = "v6ip", default)]
    pub v6ip: String,
    #[serde(default)]
    pub nat_gw_dp: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub redo: String,
    #[serde(
        rename = "internalIp",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub internal_ip: String,
    #[serde(
        rename = "internalCIDR",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub internal_cidr: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub internal_port: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub external_port: String,
}

/// `kubeovn.io/v1` IptablesFIPRule: the EIP translated one-to-one to `internalIp`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "IptablesFIPRule",
    plural = "iptables-fip-rules",
    shortname = "fip",
    status = "IptablesRuleStatus",
    printcolumn = r#"{"name":"Eip","type":"string","jsonPath":".spec.eip"}"#,
    printcolumn = r#"{"name":"V4ip","type":"string","jsonPath":".status.v4ip"}"#,
    printcolumn = r#"{"name":"InternalIp","type":"string","jsonPath":".spec.internalIp"}"#,
    printcolumn = r#"{"name":"NatGwDp","type":"string","jsonPath":".status.natGwDp"}"#,
    printcolumn = r#"{"name":"Ready","type":"boolean","jsonPath":".status.ready"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct IptablesFIPRuleSpec {
    #[serde(default)]
    pub eip: String,
    #[serde(rename = "internalIp", default)]
    pub internal_ip: String,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

/// `kubeovn.io/v1` IptablesSnatRule: `internalCIDR` leaves from the EIP.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "IptablesSnatRule",
    plural = "iptables-snat-rules",
    shortname = "snat",
    status = "IptablesRuleStatus",
    printcolumn = r#"{"name":"EIP","type":"string","jsonPath":".spec.eip"}"#,
    printcolumn = r#"{"name":"V4ip","type":"string","jsonPath":".status.v4ip"}"#,
    printcolumn = r#"{"name":"InternalCIDR","type":"string","jsonPath":".spec.internalCIDR"}"#,
    printcolumn = r#"{"name":"NatGwDp","type":"string","jsonPath":".status.natGwDp"}"#,
    printcolumn = r#"{"name":"Ready","type":"boolean","jsonPath":".status.ready"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct IptablesSnatRuleSpec {
    #[serde(default)]
    pub eip: String,
    #[serde(rename = "internalCIDR", default)]
    pub internal_cidr: String,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

/// `kubeovn.io/v1` IptablesDnatRule: `eip:externalPort` forwarded to `internalIp:internalPort`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "IptablesDnatRule",
    plural = "iptables-dnat-rules",
    shortname = "dnat",
    status = "IptablesRuleStatus",
    printcolumn = r#"{"name":"Eip","type":"string","jsonPath":".spec.eip"}"#,
    printcolumn = r#"{"name":"Protocol","type":"string","jsonPath":".spec.protocol"}"#,
    printcolumn = r#"{"name":"V4ip","type":"string","jsonPath":".status.v4ip"}"#,
    printcolumn = r#"{"name":"InternalIp","type":"string","jsonPath":".spec.internalIp"}"#,
    printcolumn = r#"{"name":"ExternalPort","type":"string","jsonPath":".spec.externalPort"}"#,
    printcolumn = r#"{"name":"InternalPort","type":"string","jsonPath":".spec.internalPort"}"#,
    printcolumn = r#"{"name":"NatGwDp","type":"string","jsonPath":".status.natGwDp"}"#,
    printcolumn = r#"{"name":"Ready","type":"boolean","jsonPath":".status.ready"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct IptablesDnatRuleSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub eip: String,
    #[serde(
        rename = "clusterIP",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub cluster_ip: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vpc_nat_gw_dp: String,
    #[serde(default)]
    pub external_port: String,
    /// `tcp` (the default) or `udp`, either case.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    #[serde(rename = "internalIp", default)]
    pub internal_ip: String,
    #[serde(default)]
    pub internal_port: String,
    /// `exclusive` (the default) or `share`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub r#type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session_affinity: String,
    #[serde(default, skip_serializing_if = "crate::is_zero_i32")]
    pub session_affinity_timeout_seconds: i32,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl IptablesDnatRuleSpec {
    /// `tcp` or `udp`, lower case (`tcp` when not given).
    pub fn protocol(&self) -> String {
        if self.protocol.is_empty() {
            "tcp".to_owned()
        } else {
            self.protocol.to_lowercase()
        }
    }

    pub fn unsupported_fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.cluster_ip.is_empty() {
            out.push("clusterIP".to_owned());
        }
        if self.r#type == "share" {
            out.push("type share".to_owned());
        }
        if !self.session_affinity.is_empty() {
            out.push("sessionAffinity".to_owned());
        }
        out.extend(unknown_fields(&self.unknown));
        out
    }
}

impl IptablesFIPRuleSpec {
    pub fn unsupported_fields(&self) -> Vec<String> {
        unknown_fields(&self.unknown)
    }
}

impl IptablesSnatRuleSpec {
    pub fn unsupported_fields(&self) -> Vec<String> {
        unknown_fields(&self.unknown)
    }
}
