//! Pod annotations, written and read as Kube-OVN writes them (`ovn.kubernetes.io/*`).

pub const PREFIX: &str = "ovn.kubernetes.io";
/// Kube-OVN's provider of a pod's own network; its keys are the `ovn.kubernetes.io/*` below.
pub const DEFAULT_PROVIDER: &str = "ovn";
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

/// The keys of one of a pod's networks: Kube-OVN writes `<provider>.kubernetes.io/<key>` for
/// each of them, which for [`DEFAULT_PROVIDER`] are the constants above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkKeys {
    pub allocated: String,
    pub routed: String,
    pub ip_address: String,
    pub mac_address: String,
    pub cidr: String,
    pub gateway: String,
    pub logical_switch: String,
}

impl NetworkKeys {
    /// The keys of `provider` (`ovn` when empty).
    pub fn of(provider: &str) -> NetworkKeys {
        let provider = if provider.is_empty() {
            DEFAULT_PROVIDER
        } else {
            provider
        };
        let key = |k: &str| format!("{provider}.kubernetes.io/{k}");
        NetworkKeys {
            allocated: key("allocated"),
            routed: key("routed"),
            ip_address: key("ip_address"),
            mac_address: key("mac_address"),
            cidr: key("cidr"),
            gateway: key("gateway"),
            logical_switch: key("logical_switch"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_providers_keys_are_the_constants() {
        let keys = NetworkKeys::of("");
        assert_eq!(keys, NetworkKeys::of(DEFAULT_PROVIDER));
        assert_eq!(keys.ip_address, IP_ADDRESS);
        assert_eq!(keys.allocated, ALLOCATED);
        assert_eq!(keys.routed, ROUTED);
        assert_eq!(keys.logical_switch, LOGICAL_SWITCH);
        assert_eq!(
            NetworkKeys::of("net1.default.ovn").ip_address,
            "net1.default.ovn.kubernetes.io/ip_address"
        );
    }
}
