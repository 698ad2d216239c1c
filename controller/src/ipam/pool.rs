//! One address family of one subnet: which addresses are usable, who holds which.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::{IpamError, Owner};

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(value: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(std::net::Ipv4Addr::from(value as u32))
    } else {
        IpAddr::V6(std::net::Ipv6Addr::from(value))
    }
}

/// Parses `excludeIps`: single addresses and `first..last` ranges.
pub fn parse_exclusions(entries: &[String]) -> Result<Vec<(IpAddr, IpAddr)>, String> {
    entries
        .iter()
        .map(|e| {
            let (a, b) = e.split_once("..").unwrap_or((e, e));
            let a: IpAddr = a
                .trim()
                .parse()
                .map_err(|err| format!("excludeIps {e:?}: {err}"))?;
            let b: IpAddr = b
                .trim()
                .parse()
                .map_err(|err| format!("excludeIps {e:?}: {err}"))?;
            if a.is_ipv4() != b.is_ipv4() || to_u128(a) > to_u128(b) {
                return Err(format!("excludeIps {e:?}: not a range"));
            }
            Ok((a, b))
        })
        .collect()
}

/// Usable addresses and their holders for one CIDR.
#[derive(Debug, Clone)]
pub struct FamilyPool {
    subnet: String,
    cidr: IpNet,
    gateway: IpAddr,
    v4: bool,
    first: u128,
    last: u128,
    /// Sorted, merged, inclusive ranges that are never handed out (gateway included).
    excluded: Vec<(u128, u128)>,
    by_ip: BTreeMap<u128, Owner>,
    by_owner: BTreeMap<Owner, u128>,
    /// Where the next search starts: addresses are handed out round-robin, so a released
    /// address is not reused at once (a stale ARP entry somewhere would point at a new pod).
    cursor: u128,
}

impl FamilyPool {
    pub fn new(
        subnet: &str,
        cidr: IpNet,
        gateway: Option<IpAddr>,
        exclusions: &[(IpAddr, IpAddr)],
    ) -> Result<FamilyPool, IpamError> {
        let v4 = cidr.addr().is_ipv4();
        let network = to_u128(cidr.network());
        let top = to_u128(cidr.broadcast());
        // IPv4: neither the network nor the broadcast address; IPv6: not the subnet-router
        // anycast (network) address.
        let (first, last) = if v4 {
            (network + 1, top.saturating_sub(1))
        } else {
            (network + 1, top)
        };
        if first > last {
            return Err(IpamError::InvalidSubnet(format!(
                "{subnet}: {cidr} has no usable address"
            )));
        }
        let gateway = gateway.unwrap_or_else(|| from_u128(first, v4));
        if !cidr.contains(&gateway) {
            return Err(IpamError::InvalidSubnet(format!(
                "{subnet}: gateway {gateway} is outside {cidr}"
            )));
        }
        let mut excluded: Vec<(u128, u128)> = exclusions
            .iter()
            .filter(|(a, _)| a.is_ipv4() == v4)
            .map(|(a, b)| (to_u128(*a).max(first), to_u128(*b).min(last)))
            .filter(|(a, b)| a <= b)
            .collect();
        let g = to_u128(gateway);
        excluded.push((g, g));
        excluded.sort();
        let mut merged: Vec<(u128, u128)> = Vec::new();
        for (a, b) in excluded {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        Ok(FamilyPool {
            subnet: subnet.to_owned(),
            cidr,
            gateway,
            v4,
            first,
            last,
            excluded: merged,
            by_ip: BTreeMap::new(),
            by_owner: BTreeMap::new(),
            cursor: first,
        })
    }

    pub fn cidr(&self) -> IpNet {
        self.cidr
    }

    pub fn gateway(&self) -> IpAddr {
        self.gateway
    }

    /// The end of the excluded range holding `value`, if any.
    fn excluded_until(&self, value: u128) -> Option<u128> {
        let i = self.excluded.partition_point(|(a, _)| *a <= value);
        let (a, b) = *self.excluded.get(i.checked_sub(1)?)?;
        (a <= value && value <= b).then_some(b)
    }

    /// Whether `owner` may take `ip` (in the CIDR already).
    pub fn check_static(&self, ip: IpAddr, owner: &Owner) -> Result<(), IpamError> {
        let value = to_u128(ip);
        if value < self.first || value > self.last || self.excluded_until(value).is_some() {
            return Err(IpamError::Excluded {
                ip,
                subnet: self.subnet.clone(),
            });
        }
        match self.by_ip.get(&value) {
            Some(holder) if holder != owner => Err(IpamError::Taken {
                ip,
                holder: holder.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Gives `ip` to `owner` (a static address); the owner's previous address is released.
    pub fn claim(&mut self, ip: IpAddr, owner: &Owner) -> Result<(), IpamError> {
        self.check_static(ip, owner)?;
        self.release(owner);
        let value = to_u128(ip);
        self.by_ip.insert(value, owner.clone());
        self.by_owner.insert(owner.clone(), value);
        Ok(())
    }

    /// The owner's address, or the next free one.
    pub fn allocate(&mut self, owner: &Owner) -> Result<IpAddr, IpamError> {
        if let Some(value) = self.by_owner.get(owner) {
            return Ok(from_u128(*value, self.v4));
        }
        let span = self.last - self.first + 1;
        let mut candidate = self.cursor.clamp(self.first, self.last);
        let mut scanned: u128 = 0;
        while scanned < span {
            if let Some(end) = self.excluded_until(candidate) {
                scanned += end - candidate + 1;
                candidate = if end >= self.last {
                    self.first
                } else {
                    end + 1
                };
                continue;
            }
            if let std::collections::btree_map::Entry::Vacant(slot) = self.by_ip.entry(candidate) {
                slot.insert(owner.clone());
                self.by_owner.insert(owner.clone(), candidate);
                self.cursor = if candidate >= self.last {
                    self.first
                } else {
                    candidate + 1
                };
                return Ok(from_u128(candidate, self.v4));
            }
            scanned += 1;
            candidate = if candidate >= self.last {
                self.first
            } else {
                candidate + 1
            };
        }
        Err(IpamError::Exhausted {
            subnet: self.subnet.clone(),
            family: if self.v4 { "IPv4" } else { "IPv6" },
        })
    }

    pub fn release(&mut self, owner: &Owner) {
        if let Some(value) = self.by_owner.remove(owner) {
            self.by_ip.remove(&value);
        }
    }

    pub fn address_of(&self, owner: &Owner) -> Option<IpAddr> {
        self.by_owner.get(owner).map(|v| from_u128(*v, self.v4))
    }

    pub fn owners(&self) -> impl Iterator<Item = &Owner> {
        self.by_owner.keys()
    }

    /// Addresses held.
    pub fn used(&self) -> u128 {
        self.by_ip.len() as u128
    }

    /// Addresses still free (for the Subnet status: v4availableIPs / v6availableIPs).
    pub fn available(&self) -> u128 {
        let span = self.last - self.first + 1;
        let excluded: u128 = self.excluded.iter().map(|(a, b)| b - a + 1).sum();
        span.saturating_sub(excluded).saturating_sub(self.used())
    }
}
