//! Rebuilding IPAM state on start, before anything is allocated: from the IP objects (the
//! controller's own record) and the NB ports (what OVN enforces). Conflicts (two owners
//! claiming one address, an address outside its subnet now) are resolved deterministically —
//! IP objects before NB ports, then by owner name — and reported, never silently merged.

use std::net::IpAddr;

use super::{Ipam, IpamError, Owner};

/// Where a record comes from; earlier variants win conflicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RecordSource {
    /// A `kubeovn.io/v1` IP object.
    IpObject,
    /// A Logical_Switch_Port in the Northbound database.
    NbPort,
}

/// An allocation the cluster already records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub source: RecordSource,
    pub owner: Owner,
    pub subnet: String,
    pub ips: Vec<IpAddr>,
    pub mac: Option<String>,
}

/// A record that could not be honoured, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub record: Record,
    pub reason: String,
}

impl Ipam {
    /// Claims every record's addresses; returns the records that lost, in a deterministic
    /// order. The same input always gives the same state, whatever order it came in.
    pub fn restore(&mut self, mut records: Vec<Record>) -> Vec<Conflict> {
        records.sort_by(|a, b| {
            (a.source, &a.owner, &a.subnet, &a.ips).cmp(&(b.source, &b.owner, &b.subnet, &b.ips))
        });
        let mut conflicts = Vec::new();
        for record in records {
            if let Some(existing) = self.lookup(&record.owner) {
                // The same owner recorded twice: fine if both agree, else the first wins.
                let agrees = existing.subnet == record.subnet
                    && record.ips.iter().all(|ip| existing.ips.contains(ip))
                    && record.mac.as_ref().is_none_or(|m| *m == existing.mac);
                if !agrees {
                    conflicts.push(Conflict {
                        reason: format!(
                            "{} already holds {:?} in {} from an earlier record",
                            record.owner, existing.ips, existing.subnet
                        ),
                        record,
                    });
                }
                continue;
            }
            let result: Result<_, IpamError> = self.allocate(
                &record.subnet,
                &record.owner,
                &record.ips,
                record.mac.as_deref(),
            );
            if let Err(e) = result {
                conflicts.push(Conflict {
                    reason: e.to_string(),
                    record,
                });
            }
        }
        conflicts
    }
}
