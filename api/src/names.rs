//! The names of the default topology, as Kube-OVN's flags set them. The controller and the
//! agent take the same flags through this one type, so a cluster started with
//! `--cluster-router foo` has one router `foo` everywhere, never a second `ovn-cluster`.

/// Kube-OVN's defaults.
pub const DEFAULT_CLUSTER_ROUTER: &str = "ovn-cluster";
pub const DEFAULT_SUBNET: &str = "ovn-default";
pub const DEFAULT_JOIN_SUBNET: &str = "join";

/// The default VPC's router, the default subnet and the join subnet.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct TopologyNames {
    /// The default VPC's router (and the default VPC's name).
    #[arg(long = "cluster-router", default_value = DEFAULT_CLUSTER_ROUTER)]
    pub cluster_router: String,
    /// The default subnet, where pods without a subnet of their own go.
    #[arg(long = "default-ls", default_value = DEFAULT_SUBNET)]
    pub default_subnet: String,
    /// The join subnet: one `node-<name>` port per node (the agent binds it to `ovn0`).
    #[arg(long = "node-switch", default_value = DEFAULT_JOIN_SUBNET)]
    pub join_subnet: String,
}

impl Default for TopologyNames {
    fn default() -> Self {
        TopologyNames {
            cluster_router: DEFAULT_CLUSTER_ROUTER.to_owned(),
            default_subnet: DEFAULT_SUBNET.to_owned(),
            join_subnet: DEFAULT_JOIN_SUBNET.to_owned(),
        }
    }
}

impl TopologyNames {
    /// The router a Subnet attaches to: its `vpc`, or the default VPC's router.
    pub fn router_of(&self, subnet: &crate::Subnet) -> String {
        if subnet.spec.vpc.is_empty() {
            self.cluster_router.clone()
        } else {
            subnet.spec.vpc.clone()
        }
    }

    /// Whether a Subnet belongs to the default VPC.
    pub fn in_default_vpc(&self, subnet: &crate::Subnet) -> bool {
        subnet.spec.vpc.is_empty() || subnet.spec.vpc == self.cluster_router
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_defaults_are_the_defaults() {
        use clap::{Args, FromArgMatches};
        let matches = TopologyNames::augment_args(clap::Command::new("t")).get_matches_from(["t"]);
        assert_eq!(
            TopologyNames::from_arg_matches(&matches).unwrap(),
            TopologyNames::default()
        );
    }
}
