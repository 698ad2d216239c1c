//! Address scopes: which VPC a pod's addresses belong to, as a number the programs compare.
//! Two VPCs may use one CIDR, so the datapath keys every pod address with its scope
//! ([`datapath_common::Scope`]). A VPC's scope is the hash of its name
//! ([`datapath_common::vpc_scope`]); two VPCs with pods on this node never share one: the
//! later is moved to the next free number. The default VPC's scope is reserved from the start
//! (the eBPF Service balancer serves it). Numbers live as long as this agent: every start is a
//! new flow generation, so nothing learned under an earlier numbering is used.

use std::collections::BTreeMap;

use datapath_common::{PER_POD_SCOPE, Scope, vpc_scope};

/// The scopes of the VPCs that have pods on this node.
#[derive(Debug, Clone)]
pub struct Scopes {
    default_vpc: String,
    /// VPC → (scope, attached pods).
    in_use: BTreeMap<String, (Scope, usize)>,
}

impl Default for Scopes {
    fn default() -> Self {
        Scopes::new(api::names::DEFAULT_CLUSTER_ROUTER)
    }
}

impl Scopes {
    pub fn new(default_vpc: &str) -> Scopes {
        let mut in_use = BTreeMap::new();
        in_use.insert(default_vpc.to_owned(), (vpc_scope(default_vpc), 0));
        Scopes {
            default_vpc: default_vpc.to_owned(),
            in_use,
        }
    }

    /// The default VPC's scope (its Services are the eBPF balancer's).
    pub fn default_scope(&self) -> Scope {
        self.in_use[&self.default_vpc].0
    }

    /// The scope of a pod of `vpc` whose host veth is `host_ifindex`, counted until
    /// [`Scopes::release`]. A pod whose VPC is unknown gets a scope of its own.
    pub fn acquire(&mut self, vpc: Option<&str>, host_ifindex: u32) -> Scope {
        let Some(vpc) = vpc else {
            return PER_POD_SCOPE | host_ifindex;
        };
        if let Some((scope, pods)) = self.in_use.get_mut(vpc) {
            *pods += 1;
            return *scope;
        }
        let mut scope = vpc_scope(vpc);
        while self.in_use.values().any(|(s, _)| *s == scope) {
            scope = scope.wrapping_add(1) & !PER_POD_SCOPE;
        }
        self.in_use.insert(vpc.to_owned(), (scope, 1));
        scope
    }

    /// One pod of `vpc` is gone; the last one frees the VPC's scope (not the default's).
    pub fn release(&mut self, vpc: Option<&str>) {
        let Some(vpc) = vpc else { return };
        let Some((_, pods)) = self.in_use.get_mut(vpc) else {
            return;
        };
        *pods = pods.saturating_sub(1);
        if *pods == 0 && vpc != self.default_vpc {
            self.in_use.remove(vpc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_vpc_has_one_scope_and_no_two_share_one() {
        let mut scopes = Scopes::new("ovn-cluster");
        let default = scopes.default_scope();
        assert_eq!(scopes.acquire(Some("ovn-cluster"), 7), default);
        let a = scopes.acquire(Some("vpc-a"), 8);
        let b = scopes.acquire(Some("vpc-b"), 9);
        assert!(a != b && a != default && b != default);
        assert_eq!(scopes.acquire(Some("vpc-a"), 10), a);
        assert_eq!(a & PER_POD_SCOPE, 0);
        // Unknown VPC: the pod's own scope, shared with nobody.
        let own = scopes.acquire(None, 11);
        assert_eq!(own, PER_POD_SCOPE | 11);
        assert_ne!(scopes.acquire(None, 12), own);
    }

    #[test]
    fn a_vpc_whose_name_hashes_like_another_gets_the_next_free_scope() {
        let mut scopes = Scopes::new("ovn-cluster");
        // Pretend "vpc-x" already holds vpc-y's hash.
        let taken = vpc_scope("vpc-y");
        scopes.in_use.insert("vpc-x".into(), (taken, 1));
        let y = scopes.acquire(Some("vpc-y"), 3);
        assert_ne!(y, taken);
        assert_eq!(y, (taken + 1) & !PER_POD_SCOPE);
    }

    #[test]
    fn the_last_pod_frees_a_scope_but_the_default_stays() {
        let mut scopes = Scopes::new("ovn-cluster");
        scopes.acquire(Some("vpc-a"), 1);
        scopes.release(Some("vpc-a"));
        assert!(!scopes.in_use.contains_key("vpc-a"));
        scopes.acquire(Some("ovn-cluster"), 2);
        scopes.release(Some("ovn-cluster"));
        scopes.release(Some("ovn-cluster"));
        assert_eq!(scopes.default_scope(), vpc_scope("ovn-cluster"));
    }
}
