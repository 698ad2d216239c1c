//! Pod annotations, written and read as Kube-OVN writes them (`ovn.kubernetes.io/*`).

pub const PREFIX: &str = "ovn.kubernetes.io";
pub const ALLOCATED: &str = "ovn.kubernetes.io/allocated";
pub const ROUTED: &str = "ovn.kubernetes.io/routed";
pub const IP_ADDRESS: &str = "ovn.kubernetes.io/ip_address";
pub const MAC_ADDRESS: &str = "ovn.kubernetes.io/mac_address";
pub const CIDR: &str = "ovn.kubernetes.io/cidr";
pub const GATEWAY: &str = "ovn.kubernetes.io/gateway";
pub const LOGICAL_SWITCH: &str = "ovn.kubernetes.io/logical_switch";
pub const LOGICAL_ROUTER: &str = "ovn.kubernetes.io/logical_router";
/// On a Node: its join port (`node-<name>`), which the agent binds to `ovn0`.
pub const PORT_NAME: &str = "ovn.kubernetes.io/port_name";
/// On a Namespace: the subnet(s) its pods use.
pub const NAMESPACE_LOGICAL_SWITCH: &str = "ovn.kubernetes.io/logical_switch";
/// On a NetworkPolicy: `"true"` logs its ACLs' verdicts in ovn-controller's log (Kube-OVN's
/// key).
pub const NETWORK_POLICY_LOG: &str = "ovn.kubernetes.io/enable_log";
/// On a NetworkPolicy with logging: which verdicts are logged, comma-separated (`drop`,
/// `allow`); `drop` without it (Kube-OVN's key and default).
pub const ACL_LOG_ACTIONS: &str = "ovn.kubernetes.io/log_acl_actions";
/// On a Service: the VPC whose load balancers serve it (Kube-OVN's key); the default VPC
/// without it.
pub const VPC: &str = "ovn.kubernetes.io/vpc";
