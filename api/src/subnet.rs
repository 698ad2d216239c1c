use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Condition, is_false, is_zero};

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
    shortname = "subnet",
    status = "SubnetStatus",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.provider"}"#,
    printcolumn = r#"{"name":"Vpc","type":"string","jsonPath":".spec.vpc"}"#,
    printcolumn = r#"{"name":"Vlan","type":"string","jsonPath":".spec.vlan"}"#,
    printcolumn = r#"{"name":"Protocol","type":"string","jsonPath":".spec.protocol"}"#,
    printcolumn = r#"{"name":"CIDR","type":"string","jsonPath":".spec.cidrBlock"}"#,
    printcolumn = r#"{"name":"Private","type":"boolean","jsonPath":".spec.private"}"#,
    printcolumn = r#"{"name":"NAT","type":"boolean","jsonPath":".spec.natOutgoing"}"#,
    printcolumn = r#"{"name":"Default","type":"boolean","jsonPath":".spec.default"}"#,
    printcolumn = r#"{"name":"GatewayType","type":"string","jsonPath":".spec.gatewayType"}"#,
    printcolumn = r#"{"name":"V4Used","type":"number","jsonPath":".status.v4usingIPs"}"#,
    printcolumn = r#"{"name":"V4Available","type":"number","jsonPath":".status.v4availableIPs"}"#,
    printcolumn = r#"{"name":"V6Used","type":"number","jsonPath":".status.v6usingIPs"}"#,
    printcolumn = r#"{"name":"V6Available","type":"number","jsonPath":".status.v6availableIPs"}"#,
    printcolumn = r#"{"name":"ExcludeIPs","type":"string","jsonPath":".spec.excludeIps"}"#,
    printcolumn = r#"{"name":"U2OInterconnectionIP","type":"string","jsonPath":".status.u2oInterconnectionIP"}"#
)]
#[serde(rename_all = "camelCase")]
// Fields of a newer Kube-OVN than these types are kept by the API server (and named in the
// Unsupported condition), never pruned.
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct SubnetSpec {
    /// The cluster's default subnet (`ovn-default`).
    #[serde(default)]
    pub default: bool,
    /// The VPC (logical router) the subnet belongs to; empty means `ovn-cluster`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vpc: String,
    /// Absent: derived from `cidrBlock`, as Kube-OVN derives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Protocol")]
    pub protocol: Option<Protocol>,
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

    // Kube-OVN's other fields: parsed and kept, and named in the Unsupported condition when
    // set (see `SubnetSpec::unsupported_fields`).
    /// `ovn` (the default) or a Multus provider `<nad>.<namespace>.ovn`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway_node_selectors: Vec<LabelSelector>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub external_egress_gateway: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub policy_routing_priority: u32,
    #[serde(
        rename = "policyRoutingTableID",
        default,
        skip_serializing_if = "is_zero"
    )]
    pub policy_routing_table_id: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vlan: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vips: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub logical_gateway: bool,
    /// kovn never pings the gateway during ADD: as if this were always true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub disable_gateway_check: bool,
    /// kovn has no interconnection: as if this were always true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub disable_inter_connection: bool,
    #[serde(rename = "enableDHCP", default, skip_serializing_if = "is_false")]
    pub enable_dhcp: bool,
    #[serde(
        rename = "dhcpV4Options",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub dhcp_v4_options: String,
    #[serde(
        rename = "dhcpV6Options",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub dhcp_v6_options: String,
    #[serde(rename = "enableIPv6RA", default, skip_serializing_if = "is_false")]
    pub enable_ipv6_ra: bool,
    #[serde(
        rename = "ipv6RAConfigs",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv6_ra_configs: String,
    #[serde(rename = "allowEWTraffic", default, skip_serializing_if = "is_false")]
    pub allow_ew_traffic: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nat_outgoing_policy_rules: Vec<NatOutgoingPolicyRule>,
    #[serde(
        rename = "u2oInterconnectionIP",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub u2o_interconnection_ip: String,
    #[serde(
        rename = "u2oInterconnection",
        default,
        skip_serializing_if = "is_false"
    )]
    pub u2o_interconnection: bool,
    #[serde(
        rename = "u2oFeatures",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub u2o_features: Option<U2OFeatures>,
    /// Kube-OVN binds the VPC's load balancers to the switch unless this is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_lb: Option<bool>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub enable_multicast_snoop: bool,
    #[serde(
        rename = "enableExternalLBAddress",
        default,
        skip_serializing_if = "is_false"
    )]
    pub enable_external_lb_address: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub route_table: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_selectors: Vec<LabelSelector>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_network: String,
    /// Fields no Kube-OVN version known to kovn has: kept as they are, named as unsupported.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

/// Kube-OVN's `u2oFeatures`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct U2OFeatures {
    #[serde(default, skip_serializing_if = "is_false")]
    pub overlay_only_routing: bool,
}

/// One of Kube-OVN's `natOutgoingPolicyRules`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct NatOutgoingPolicyRule {
    #[serde(rename = "match", default)]
    pub r#match: NatOutgoingPolicyMatch,
    /// `nat` or `forward`.
    #[serde(default)]
    pub action: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct NatOutgoingPolicyMatch {
    #[serde(rename = "srcIPs", default, skip_serializing_if = "String::is_empty")]
    pub src_ips: String,
    #[serde(rename = "dstIPs", default, skip_serializing_if = "String::is_empty")]
    pub dst_ips: String,
}

/// A rule of `status.natOutgoingPolicyRules`: the rule with the ID Kube-OVN gave it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct NatOutgoingPolicyRuleStatus {
    #[serde(rename = "ruleID", default)]
    pub rule_id: String,
    #[serde(flatten)]
    pub rule: NatOutgoingPolicyRule,
}

/// One gateway of a centralized subnet, as `gatewayNode` names it: `node` or `node:ip`, the
/// address being the one the subnet's egress leaves that node with (Kube-OVN's form for
/// choosing the node's NIC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayNode {
    pub node: String,
    pub egress_ip: Option<std::net::IpAddr>,
}

impl SubnetSpec {
    /// A subnet of an IPAM-only provider (`<nad>.<namespace>`, another plugin's network using
    /// kovn's IPAM): addresses only, no logical switch.
    pub fn is_ipam_only(&self) -> bool {
        !crate::AttachmentNetwork::is_ovn_provider(&self.provider)
    }

    /// Kube-OVN's provider of the subnet (`ovn` when unset).
    pub fn provider(&self) -> &str {
        if self.provider.is_empty() {
            crate::annotations::DEFAULT_PROVIDER
        } else {
            &self.provider
        }
    }

    /// An underlay subnet: on a Vlan of a provider network.
    pub fn is_underlay(&self) -> bool {
        !self.vlan.is_empty()
    }

    /// An underlay subnet whose gateway is the physical network's: not on the VPC's router,
    /// not routed by the nodes. With `logicalGateway` an underlay subnet's gateway is OVN's
    /// router port, as an overlay subnet's.
    pub fn routed_by_physical_gateway(&self) -> bool {
        self.is_underlay() && !self.logical_gateway
    }

    /// The gateway nodes of `gatewayNode`, in the order given (the first is the preferred
    /// primary); an entry whose address does not parse is an error naming it. Blank entries
    /// are skipped, as Kube-OVN trims the list.
    pub fn gateway_nodes(&self) -> Result<Vec<GatewayNode>, String> {
        let mut out: Vec<GatewayNode> = Vec::new();
        for entry in self.gateway_node.split(',').map(str::trim) {
            if entry.is_empty() {
                continue;
            }
            let (node, egress_ip) = match entry.split_once(':') {
                None => (entry, None),
                Some((node, ip)) => {
                    let ip = ip.trim().parse().map_err(|_| {
                        format!("gatewayNode {entry:?}: {ip:?} is not an IP address")
                    })?;
                    (node.trim(), Some(ip))
                }
            };
            if node.is_empty() {
                return Err(format!("gatewayNode {entry:?}: no node name"));
            }
            if out.iter().any(|g| g.node == node) {
                return Err(format!("gatewayNode names {node} twice"));
            }
            out.push(GatewayNode {
                node: node.to_owned(),
                egress_ip,
            });
        }
        Ok(out)
    }

    /// The fields set to something kovn does not act on (yet), by their Kube-OVN names: what
    /// the `Unsupported` condition lists. Every field of the struct is either acted on by the
    /// controller or the agent, or appears here when set.
    pub fn unsupported_fields(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut flag = |set: bool, name: &str| {
            if set {
                out.push(name.to_owned());
            }
        };
        flag(self.mtu.is_some(), "mtu");
        flag(
            !self.gateway_node_selectors.is_empty(),
            "gatewayNodeSelectors",
        );
        // The nodes' policy routes serve the default VPC's subnets (their egress reaches the
        // node's ovn0); a custom VPC's leave through its own gateways.
        let custom_vpc = !self.vpc.is_empty() && self.vpc != crate::names::DEFAULT_CLUSTER_ROUTER;
        flag(
            custom_vpc && !self.external_egress_gateway.is_empty(),
            "externalEgressGateway",
        );
        flag(
            custom_vpc && self.policy_routing_priority != 0,
            "policyRoutingPriority",
        );
        flag(
            custom_vpc && self.policy_routing_table_id != 0,
            "policyRoutingTableID",
        );
        flag(!self.vips.is_empty(), "vips");
        flag(
            self.logical_gateway && !self.is_underlay(),
            "logicalGateway (without vlan)",
        );
        flag(self.enable_dhcp, "enableDHCP");
        flag(!self.dhcp_v4_options.is_empty(), "dhcpV4Options");
        flag(!self.dhcp_v6_options.is_empty(), "dhcpV6Options");
        flag(self.enable_ipv6_ra, "enableIPv6RA");
        flag(!self.ipv6_ra_configs.is_empty(), "ipv6RAConfigs");
        flag(self.allow_ew_traffic, "allowEWTraffic");
        flag(
            !self.nat_outgoing_policy_rules.is_empty(),
            "natOutgoingPolicyRules",
        );
        flag(self.u2o_interconnection, "u2oInterconnection");
        flag(
            !self.u2o_interconnection_ip.is_empty(),
            "u2oInterconnectionIP",
        );
        flag(
            self.u2o_features
                .as_ref()
                .is_some_and(|f| f.overlay_only_routing),
            "u2oFeatures",
        );
        flag(self.enable_lb == Some(false), "enableLb: false");
        flag(self.enable_multicast_snoop, "enableMulticastSnoop");
        flag(self.enable_external_lb_address, "enableExternalLBAddress");
        flag(!self.route_table.is_empty(), "routeTable");
        flag(!self.namespace_selectors.is_empty(), "namespaceSelectors");
        flag(!self.node_network.is_empty(), "nodeNetwork");
        out.extend(
            self.unknown
                .keys()
                .map(|k| format!("{k} (not a Kube-OVN field kovn knows)")),
        );
        out
    }
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

/// What the controller reports about a subnet (Kube-OVN's status fields; kovn writes the
/// counts, the conditions and, for centralized subnets, the active gateway).
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
    #[serde(
        rename = "v4availableIPrange",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub v4_available_ip_range: String,
    #[serde(
        rename = "v4usingIPrange",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub v4_using_ip_range: String,
    #[serde(
        rename = "v6availableIPrange",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub v6_available_ip_range: String,
    #[serde(
        rename = "v6usingIPrange",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub v6_using_ip_range: String,
    #[serde(
        rename = "activateGateway",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub activate_gateway: String,
    #[serde(
        rename = "dhcpV4OptionsUUID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub dhcp_v4_options_uuid: String,
    #[serde(
        rename = "dhcpV6OptionsUUID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub dhcp_v6_options_uuid: String,
    #[serde(
        rename = "u2oInterconnectionIP",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub u2o_interconnection_ip: String,
    #[serde(
        rename = "u2oInterconnectionMAC",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub u2o_interconnection_mac: String,
    #[serde(
        rename = "u2oInterconnectionVPC",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub u2o_interconnection_vpc: String,
    #[serde(
        rename = "natOutgoingPolicyRules",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub nat_outgoing_policy_rules: Vec<NatOutgoingPolicyRuleStatus>,
    #[serde(
        rename = "mcastQuerierIP",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub mcast_querier_ip: String,
    #[serde(
        rename = "mcastQuerierMAC",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub mcast_querier_mac: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
