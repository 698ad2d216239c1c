//! Kube-OVN's OVN-native NAT: `OvnEip` (an address of an external subnet), and the rules that
//! use one on a VPC's router — `OvnFip` (one-to-one NAT to a pod), `OvnSnatRule` (a subnet's or
//! a pod's egress from the EIP) and `OvnDnatRule` (a port of the EIP forwarded to a pod).
//! Field names and JSON shapes are Kube-OVN's. All four are cluster-scoped.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Condition, unknown_fields};

/// `kubeovn.io/v1` OvnEip.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "OvnEip",
    plural = "ovn-eips",
    shortname = "oeip",
    status = "OvnEipStatus",
    printcolumn = r#"{"name":"V4IP","type":"string","jsonPath":".status.v4Ip"}"#,
    printcolumn = r#"{"name":"V6IP","type":"string","jsonPath":".status.v6Ip"}"#,
    printcolumn = r#"{"name":"Mac","type":"string","jsonPath":".status.macAddress"}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".status.type"}"#,
    printcolumn = r#"{"name":"Nat","type":"string","jsonPath":".status.nat"}"#,
    printcolumn = r#"{"name":"Ready","type":"boolean","jsonPath":".status.ready"}"#,
    printcolumn = r#"{"name":"ExternalSubnet","type":"string","jsonPath":".spec.externalSubnet"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct OvnEipSpec {
    /// The external subnet (empty: the ConfigMap's `external-gw-switch`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub external_subnet: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub v4_ip: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub v6_ip: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
    /// `nat` (the default: used by FIP, SNAT and DNAT rules), `lrp` (a VPC router's port on
    /// the external network, made by the controller for `enableExternal`) or `lsp`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub r#type: String,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

/// The EIP types.
pub const EIP_TYPE_NAT: &str = "nat";
pub const EIP_TYPE_LRP: &str = "lrp";

impl OvnEipSpec {
    /// `nat` when not given.
    pub fn usage(&self) -> &str {
        if self.r#type.is_empty() {
            EIP_TYPE_NAT
        } else {
            &self.r#type
        }
    }

    pub fn unsupported_fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.v6_ip.is_empty() {
            out.push("v6Ip".to_owned());
        }
        if self.usage() != EIP_TYPE_NAT && self.usage() != EIP_TYPE_LRP {
            out.push(format!("type {} (kovn serves nat and lrp)", self.usage()));
        }
        out.extend(unknown_fields(&self.unknown));
        out
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OvnEipStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub r#type: String,
    /// The rules using it: `fip`, `snat`, `dnat`, comma-separated.
    #[serde(default)]
    pub nat: String,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub v4_ip: String,
    #[serde(default)]
    pub v6_ip: String,
    #[serde(default)]
    pub mac_address: String,
}

/// `kubeovn.io/v1` OvnFip: the EIP translated one-to-one to a pod's address.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "OvnFip",
    plural = "ovn-fips",
    shortname = "ofip",
    status = "OvnFipStatus",
    printcolumn = r#"{"name":"Vpc","type":"string","jsonPath":".status.vpc"}"#,
    printcolumn = r#"{"name":"V4Eip","type":"string","jsonPath":".status.v4Eip"}"#,
    printcolumn = r#"{"name":"V4Ip","type":"string","jsonPath":".status.v4Ip"}"#,
    printcolumn = r#"{"name":"Ready","type":"boolean","jsonPath":".status.ready"}"#,
    printcolumn = r#"{"name":"IpType","type":"string","jsonPath":".spec.ipType"}"#,
    printcolumn = r#"{"name":"IpName","type":"string","jsonPath":".spec.ipName"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct OvnFipSpec {
    #[serde(default)]
    pub ovn_eip: String,
    /// `ip` (the default: an IP object) or `vip`.
    #[serde(rename = "ipType", default, skip_serializing_if = "String::is_empty")]
    pub ip_type: String,
    /// The IP object (`<pod>.<namespace>`) of the internal address.
    #[serde(rename = "ipName", default, skip_serializing_if = "String::is_empty")]
    pub ip_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vpc: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub v4_ip: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub v6_ip: String,
    /// `centralized` or `distributed`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub r#type: String,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl OvnFipSpec {
    pub fn unsupported_fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.ip_type.is_empty() && self.ip_type != "ip" {
            out.push(format!("ipType {}", self.ip_type));
        }
        if !self.v6_ip.is_empty() {
            out.push("v6Ip".to_owned());
        }
        if self.r#type == "distributed" {
            out.push("type distributed (translated on the gateway chassis instead)".to_owned());
        }
        out.extend(unknown_fields(&self.unknown));
        out
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OvnFipStatus {
    #[serde(default)]
    pub vpc: String,
    #[serde(default)]
    pub v4_eip: String,
    #[serde(default)]
    pub v6_eip: String,
    #[serde(default)]
    pub v4_ip: String,
    #[serde(default)]
    pub v6_ip: String,
    #[serde(default)]
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// `kubeovn.io/v1` OvnSnatRule: a VPC subnet's (or one pod's) egress leaves from the EIP.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "OvnSnatRule",
    plural = "ovn-snat-rules",
    shortname = "osnat",
    status = "OvnSnatRuleStatus",
    printcolumn = r#"{"name":"Vpc","type":"string","jsonPath":".status.vpc"}"#,
    printcolumn = r#"{"name":"V4Eip","type":"string","jsonPath":".status.v4Eip"}"#,
    printcolumn = r#"{"name":"V4IpCidr","type":"string","jsonPath":".status.v4IpCidr"}"#,
    printcolumn = r#"{"name":"Ready","type":"boolean","jsonPath":".status.ready"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct OvnSnatRuleSpec {
    #[serde(default)]
    pub ovn_eip: String,
    /// A subnet of the VPC: its CIDR is translated.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vpc_subnet: String,
    /// Or one pod's IP object.
    #[serde(rename = "ipName", default, skip_serializing_if = "String::is_empty")]
    pub ip_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vpc: String,
    /// Or a CIDR (or address) given directly.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub v4_ip_cidr: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub v6_ip_cidr: String,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl OvnSnatRuleSpec {
    pub fn unsupported_fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.v6_ip_cidr.is_empty() {
            out.push("v6IpCidr".to_owned());
        }
        out.extend(unknown_fields(&self.unknown));
        out
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OvnSnatRuleStatus {
    #[serde(default)]
    pub vpc: String,
    #[serde(default)]
    pub v4_eip: String,
    #[serde(default)]
    pub v6_eip: String,
    #[serde(default)]
    pub v4_ip_cidr: String,
    #[serde(default)]
    pub v6_ip_cidr: String,
    #[serde(default)]
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// `kubeovn.io/v1` OvnDnatRule: a port of the EIP forwarded to a pod's port.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "OvnDnatRule",
    plural = "ovn-dnat-rules",
    shortname = "odnat",
    status = "OvnDnatRuleStatus",
    printcolumn = r#"{"name":"Vpc","type":"string","jsonPath":".status.vpc"}"#,
    printcolumn = r#"{"name":"Eip","type":"string","jsonPath":".spec.ovnEip"}"#,
    printcolumn = r#"{"name":"Protocol","type":"string","jsonPath":".status.protocol"}"#,
    printcolumn = r#"{"name":"V4Eip","type":"string","jsonPath":".status.v4Eip"}"#,
    printcolumn = r#"{"name":"V4Ip","type":"string","jsonPath":".status.v4Ip"}"#,
    printcolumn = r#"{"name":"InternalPort","type":"string","jsonPath":".status.internalPort"}"#,
    printcolumn = r#"{"name":"ExternalPort","type":"string","jsonPath":".status.externalPort"}"#,
    printcolumn = r#"{"name":"IpName","type":"string","jsonPath":".spec.ipName"}"#,
    printcolumn = r#"{"name":"Ready","type":"boolean","jsonPath":".status.ready"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct OvnDnatRuleSpec {
    #[serde(default)]
    pub ovn_eip: String,
    /// `ip` (the default), `vip` or `service`.
    #[serde(rename = "ipType", default, skip_serializing_if = "String::is_empty")]
    pub ip_type: String,
    #[serde(rename = "ipName", default, skip_serializing_if = "String::is_empty")]
    pub ip_name: String,
    #[serde(default)]
    pub internal_port: String,
    #[serde(default)]
    pub external_port: String,
    /// `tcp` (the default) or `udp`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vpc: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub v4_ip: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub v6_ip: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_namespace: String,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl OvnDnatRuleSpec {
    /// `tcp` when not given.
    pub fn protocol(&self) -> &str {
        if self.protocol.is_empty() {
            "tcp"
        } else {
            &self.protocol
        }
    }

    pub fn unsupported_fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.ip_type.is_empty() && self.ip_type != "ip" {
            out.push(format!("ipType {}", self.ip_type));
        }
        if !self.v6_ip.is_empty() {
            out.push("v6Ip".to_owned());
        }
        if !self.service_name.is_empty() || !self.service_namespace.is_empty() {
            out.push("serviceName".to_owned());
        }
        out.extend(unknown_fields(&self.unknown));
        out
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OvnDnatRuleStatus {
    #[serde(default)]
    pub vpc: String,
    #[serde(default)]
    pub v4_eip: String,
    #[serde(default)]
    pub v6_eip: String,
    #[serde(default)]
    pub external_port: String,
    #[serde(default)]
    pub v4_ip: String,
    #[serde(default)]
    pub v6_ip: String,
    #[serde(default)]
    pub internal_port: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    #[serde(rename = "ipName", default)]
    pub ip_name: String,
    #[serde(default)]
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
