//! IP address management: per-subnet pools for IPv4, IPv6 or both, exclusions, static
//! addresses, release, and a restore step that rebuilds the state from what the cluster already
//! records (IP objects, NB ports) deterministically, reporting conflicts, before anything new
//! is allocated.

mod pool;
mod restore;

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

pub use pool::{FamilyPool, parse_exclusions};
pub use restore::{Conflict, Record, RecordSource};

/// Who holds addresses: a pod or a node.
pub use api::Owner;

/// Why an allocation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("subnet {0} does not exist")]
    NoSubnet(String),
    #[error("subnet {subnet}: no free {family} address left")]
    Exhausted {
        subnet: String,
        family: &'static str,
    },
    #[error("{ip} is not in subnet {subnet} ({cidrs})")]
    OutOfRange {
        ip: IpAddr,
        subnet: String,
        cidrs: String,
    },
    #[error("{ip} is excluded from subnet {subnet} (gateway, reserved or excludeIps)")]
    Excluded { ip: IpAddr, subnet: String },
    #[error("{ip} is already held by {holder}")]
    Taken { ip: IpAddr, holder: Owner },
    #[error("MAC {mac} is already held by {holder}")]
    MacTaken { mac: String, holder: Owner },
    #[error("invalid subnet: {0}")]
    InvalidSubnet(String),
}

/// A subnet's pools: one per address family it has.
#[derive(Debug, Clone)]
pub struct SubnetAllocator {
    pub name: String,
    pools: Vec<FamilyPool>,
}

impl SubnetAllocator {
    /// `cidrs` as Kube-OVN writes `cidrBlock` (one CIDR or "v4,v6"); `gateways` likewise (empty:
    /// the first address of each CIDR); `exclude` as `excludeIps` (addresses and `a..b` ranges).
    pub fn new(
        name: &str,
        cidrs: &str,
        gateways: &str,
        exclude: &[String],
    ) -> Result<SubnetAllocator, IpamError> {
        let nets: Vec<IpNet> = cidrs
            .split(',')
            .map(|c| {
                c.trim()
                    .parse::<IpNet>()
                    .map_err(|e| IpamError::InvalidSubnet(format!("{name}: CIDR {c:?}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        if nets.is_empty()
            || nets.len() > 2
            || (nets.len() == 2 && nets[0].addr().is_ipv4() == nets[1].addr().is_ipv4())
        {
            return Err(IpamError::InvalidSubnet(format!(
                "{name}: cidrBlock must be one CIDR or one IPv4 and one IPv6 CIDR, not {cidrs:?}"
            )));
        }
        let gateways: Vec<IpAddr> = gateways
            .split(',')
            .filter(|g| !g.trim().is_empty())
            .map(|g| {
                g.trim()
                    .parse()
                    .map_err(|e| IpamError::InvalidSubnet(format!("{name}: gateway {g:?}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let exclusions = parse_exclusions(exclude)
            .map_err(|e| IpamError::InvalidSubnet(format!("{name}: {e}")))?;
        let mut pools = Vec::new();
        for net in nets {
            let gateway = gateways
                .iter()
                .copied()
                .find(|g| g.is_ipv4() == net.addr().is_ipv4());
            pools.push(FamilyPool::new(name, net.trunc(), gateway, &exclusions)?);
        }
        Ok(SubnetAllocator {
            name: name.to_owned(),
            pools,
        })
    }

    pub fn pools(&self) -> &[FamilyPool] {
        &self.pools
    }

    fn cidrs(&self) -> String {
        self.pools
            .iter()
            .map(|p| p.cidr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The addresses of one owner in one subnet (one per family the subnet has).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub subnet: String,
    pub ips: Vec<IpAddr>,
    pub mac: String,
}

/// Every subnet's pools, and the MACs (unique cluster-wide).
#[derive(Debug, Clone, Default)]
pub struct Ipam {
    subnets: BTreeMap<String, SubnetAllocator>,
    macs: BTreeMap<String, Owner>,
    owner_macs: BTreeMap<Owner, String>,
    mac_seed: u64,
}

impl Ipam {
    pub fn new() -> Ipam {
        Ipam {
            mac_seed: 0x5eed,
            ..Ipam::default()
        }
    }

    pub fn add_subnet(&mut self, subnet: SubnetAllocator) {
        self.subnets.insert(subnet.name.clone(), subnet);
    }

    /// Forgets a subnet and everything allocated in it.
    pub fn remove_subnet(&mut self, name: &str) {
        let Some(subnet) = self.subnets.remove(name) else {
            return;
        };
        for owner in subnet.pools.iter().flat_map(|p| p.owners()) {
            if let Some(mac) = self.owner_macs.remove(owner) {
                self.macs.remove(&mac);
            }
        }
    }

    pub fn subnet(&self, name: &str) -> Option<&SubnetAllocator> {
        self.subnets.get(name)
    }

    /// Allocates (or returns the existing) addresses and MAC of `owner` in `subnet`.
    /// `static_ips` and `static_mac` come from the pod's annotations. Idempotent: asking again
    /// for the same owner returns the same allocation.
    pub fn allocate(
        &mut self,
        subnet: &str,
        owner: &Owner,
        static_ips: &[IpAddr],
        static_mac: Option<&str>,
    ) -> Result<Allocation, IpamError> {
        let sub = self
            .subnets
            .get_mut(subnet)
            .ok_or_else(|| IpamError::NoSubnet(subnet.to_owned()))?;
        // Check everything before changing anything: a failed request leaves no trace.
        for ip in static_ips {
            let Some(pool) = sub.pools.iter().find(|p| p.cidr().contains(ip)) else {
                return Err(IpamError::OutOfRange {
                    ip: *ip,
                    subnet: subnet.to_owned(),
                    cidrs: sub.cidrs(),
                });
            };
            pool.check_static(*ip, owner)?;
        }
        if let Some(mac) = static_mac
            && let Some(holder) = self.macs.get(mac)
            && holder != owner
        {
            return Err(IpamError::MacTaken {
                mac: mac.to_owned(),
                holder: holder.clone(),
            });
        }
        let mut ips = Vec::new();
        let mut claimed = Vec::new();
        for pool in &mut sub.pools {
            let wanted = static_ips
                .iter()
                .copied()
                .find(|ip| pool.cidr().contains(ip));
            let result = match wanted {
                Some(ip) => pool.claim(ip, owner).map(|()| ip),
                None => pool.allocate(owner),
            };
            match result {
                Ok(ip) => {
                    claimed.push(pool.cidr());
                    ips.push(ip);
                }
                Err(e) => {
                    // Undo the families already claimed in this call.
                    for p in sub.pools.iter_mut().filter(|p| claimed.contains(&p.cidr())) {
                        p.release(owner);
                    }
                    return Err(e);
                }
            }
        }
        let mac = match self.owner_macs.get(owner) {
            Some(mac) if static_mac.is_none_or(|s| s == mac) => mac.clone(),
            _ => {
                let mac = match static_mac {
                    Some(mac) => mac.to_owned(),
                    None => self.fresh_mac(),
                };
                if let Some(old) = self.owner_macs.insert(owner.clone(), mac.clone()) {
                    self.macs.remove(&old);
                }
                self.macs.insert(mac.clone(), owner.clone());
                mac
            }
        };
        Ok(Allocation {
            subnet: subnet.to_owned(),
            ips,
            mac,
        })
    }

    /// Releases everything `owner` holds (pod deleted).
    pub fn release(&mut self, owner: &Owner) {
        for sub in self.subnets.values_mut() {
            for pool in &mut sub.pools {
                pool.release(owner);
            }
        }
        if let Some(mac) = self.owner_macs.remove(owner) {
            self.macs.remove(&mac);
        }
    }

    /// The secondary attachments of `pod` that hold addresses.
    pub fn attachments_of(&self, pod: &Owner) -> Vec<Owner> {
        let Owner::Pod { namespace, name } = pod else {
            return Vec::new();
        };
        let first = Owner::Attachment {
            namespace: namespace.clone(),
            name: name.clone(),
            provider: String::new(),
        };
        self.owner_macs
            .range(first..)
            .map(|(o, _)| o)
            .take_while(|o| o.pod_of().as_ref() == Some(pod))
            .cloned()
            .collect()
    }

    /// What `owner` holds, if anything.
    pub fn lookup(&self, owner: &Owner) -> Option<Allocation> {
        for sub in self.subnets.values() {
            let ips: Vec<IpAddr> = sub
                .pools
                .iter()
                .filter_map(|p| p.address_of(owner))
                .collect();
            if !ips.is_empty() {
                return Some(Allocation {
                    subnet: sub.name.clone(),
                    ips,
                    mac: self.owner_macs.get(owner).cloned().unwrap_or_default(),
                });
            }
        }
        None
    }

    /// Every owner and what it holds (for garbage collection and snapshots).
    pub fn allocations(&self) -> Vec<(Owner, Allocation)> {
        let mut owners: Vec<Owner> = self
            .subnets
            .values()
            .flat_map(|s| s.pools.iter().flat_map(|p| p.owners()))
            .cloned()
            .collect();
        owners.sort();
        owners.dedup();
        owners
            .into_iter()
            .filter_map(|o| self.lookup(&o).map(|a| (o, a)))
            .collect()
    }

    /// A locally administered unicast MAC (`00:00:00` prefix, as Kube-OVN), not yet used.
    fn fresh_mac(&mut self) -> String {
        loop {
            // splitmix64: spreads consecutive seeds; uniqueness is checked anyway.
            self.mac_seed = self.mac_seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.mac_seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let b = z.to_be_bytes();
            let mac = format!("00:00:00:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2]);
            if !self.macs.contains_key(&mac) {
                return mac;
            }
        }
    }
}
