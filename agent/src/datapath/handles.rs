//! The datapath's maps split by concern. The kernel's maps are safe to use concurrently; what
//! serialised the agent was one `Mutex<Datapath>` taken by everything. Each handle here holds
//! its own file descriptors of one concern's maps and is owned by the one component that uses
//! it, so none waits for another:
//!
//! | handle | maps | owner |
//! |---|---|---|
//! | [`super::Datapath`] | programs, pod ports and endpoints | the CNI server (attach, detach) |
//! | [`FlowTable`] | flows (local, to and from other nodes), generation, config | the nb-cfg follower; the flow GC (one each) |
//! | [`ServiceMaps`] | services, backends, Maglev, LB conntrack, affinity, counters | the Service sync |
//! | [`LbConntrack`] | LB conntrack, reverse NAT, config | the flow GC (expiry) |
//! | [`MapReader`] | the counters, generation, LB conntrack, read only | metrics; the GC's counts |
//!
//! Counts that need a walk over a big map are published by the GC ([`DatapathStats`]), never
//! computed by a scrape.

use std::collections::HashMap;
use std::os::fd::AsFd as _;
use std::sync::atomic::{AtomicI64, Ordering};

use aya::maps::{Map, MapData};
use datapath_common::{
    BACKENDS_MAP, CONFIG_MAP, FAULTS_MAP, FLOWS_MAP, GENERATION_MAP, IF_COUNTERS_MAP,
    LB_AFFINITY_MAP, LB_CONNTRACK_MAP, LB_REVERSE_NAT_MAP, MAGLEV_MAP, REASONS_MAP,
    SERVICE_COUNTERS_MAP, SERVICES_MAP, TUNNEL_FLOWS_MAP, TUNNEL_RX_MAP,
};

use super::{
    Datapath, DatapathError, FlowTableOps, MapSource, MapSourceMut, ServiceMapOps, map_error,
};

/// Some of the datapath's maps, by name, on descriptors of their own.
pub struct MapSet {
    pub(super) maps: HashMap<&'static str, Map>,
}

impl std::fmt::Debug for MapSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&&str> = self.maps.keys().collect();
        names.sort();
        f.debug_struct("MapSet").field("maps", &names).finish()
    }
}

impl MapSource for MapSet {
    fn map(&self, name: &'static str) -> Result<&Map, DatapathError> {
        self.maps
            .get(name)
            .ok_or(DatapathError::MissingMap { name })
    }
}

impl MapSourceMut for MapSet {
    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, DatapathError> {
        self.maps
            .get_mut(name)
            .ok_or(DatapathError::MissingMap { name })
    }
}

/// The map's kernel object, for the map kinds the datapath has.
fn map_data(map: &Map) -> Option<&MapData> {
    match map {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::HashOfMaps(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d) => Some(d),
        _ => None,
    }
}

impl MapSet {
    /// `names` of `source`, each on a new descriptor of the same kernel map.
    fn duplicate(source: &impl MapSource, names: &[&'static str]) -> Result<MapSet, DatapathError> {
        let mut maps = HashMap::new();
        for &name in names {
            let data = map_data(source.map(name)?).ok_or(DatapathError::MissingMap { name })?;
            let fd = data.fd().as_fd().try_clone_to_owned().map_err(|io_error| {
                map_error(
                    name,
                    aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                        call: "dup",
                        io_error,
                    }),
                )
            })?;
            let data = MapData::from_fd(fd).map_err(|e| map_error(name, e))?;
            maps.insert(
                name,
                Map::from_map_data(data).map_err(|e| map_error(name, e))?,
            );
        }
        Ok(MapSet { maps })
    }
}

macro_rules! handle {
    ($(#[$doc:meta])* $name:ident, [$($map:expr),* $(,)?]) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name(MapSet);

        impl $name {
            const MAPS: &'static [&'static str] = &[$($map),*];
        }

        impl MapSource for $name {
            fn map(&self, name: &'static str) -> Result<&Map, DatapathError> {
                self.0.map(name)
            }
        }
    };
}

handle!(
    /// The learned flows (local and to other nodes) and the policy generation: GC and
    /// invalidation.
    FlowTable,
    [
        FLOWS_MAP,
        TUNNEL_FLOWS_MAP,
        TUNNEL_RX_MAP,
        GENERATION_MAP,
        CONFIG_MAP
    ]
);

handle!(
    /// The Service balancer's maps: the Service sync writes them.
    ServiceMaps,
    [
        SERVICES_MAP,
        BACKENDS_MAP,
        MAGLEV_MAP,
        LB_CONNTRACK_MAP,
        LB_REVERSE_NAT_MAP,
        LB_AFFINITY_MAP,
        SERVICE_COUNTERS_MAP,
    ]
);

/// The balancer's connection state, for its expiry: idle connections go, and with them
/// (and with any connection the LRU evicted) their reverse-NAT entries.
#[derive(Debug)]
pub struct LbConntrack {
    maps: MapSet,
    /// Reverse-NAT entries without a connection at the last pass. One is removed only when
    /// it is still without one a pass later: the programs write a new connection and then
    /// its reverse NAT, so an entry seen between the two (or written while a pass walks the
    /// maps) belongs to a connection being made, not to one gone.
    suspects: std::collections::HashSet<datapath_common::FlowKey>,
}

/// What one pass of [`LbConntrack::collect_garbage`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LbGcReport {
    /// Connections idle past their protocol's timeout, removed.
    pub expired: usize,
    /// Reverse-NAT entries whose connection is gone, removed.
    pub orphaned: usize,
    /// Connections kept.
    pub kept: usize,
}

impl LbConntrack {
    const MAPS: &'static [&'static str] = &[LB_CONNTRACK_MAP, LB_REVERSE_NAT_MAP, CONFIG_MAP];

    /// Removes connections idle past their timeout (`now` on the programs' clock), then every
    /// reverse-NAT entry whose connection has been gone for two passes: a stale entry would
    /// rewrite a later direct reply of the same tuple as if it came from the VIP.
    pub fn collect_garbage(&mut self, now: u64) -> Result<LbGcReport, DatapathError> {
        use aya::maps::{Array, HashMap as BpfHashMap};
        use datapath_common::{DatapathConfig, FlowKey, L4Proto, LbConnection, LbReverseNat};
        let config: Array<_, DatapathConfig> =
            Array::try_from(self.maps.map(CONFIG_MAP)?).map_err(|e| map_error(CONFIG_MAP, e))?;
        let config = config.get(&0, 0).map_err(|e| map_error(CONFIG_MAP, e))?;
        let mut report = LbGcReport::default();
        let mut live = std::collections::HashSet::new();
        {
            let mut connections: BpfHashMap<_, FlowKey, LbConnection> =
                BpfHashMap::try_from(self.maps.map_mut(LB_CONNTRACK_MAP)?)
                    .map_err(|e| map_error(LB_CONNTRACK_MAP, e))?;
            let mut idle = Vec::new();
            for (key, connection) in connections.iter().filter_map(Result::ok) {
                let timeout = if key.proto == L4Proto::Tcp.number() {
                    config.tcp_timeout_ns
                } else {
                    config.udp_timeout_ns
                };
                if now.saturating_sub(connection.last_seen_ns) > timeout {
                    idle.push(key);
                } else {
                    live.insert(key);
                }
            }
            for key in &idle {
                let _ = connections.remove(key);
            }
            report.expired = idle.len();
            report.kept = live.len();
        }
        let without_connection: Vec<(FlowKey, FlowKey)> = {
            let reverse: BpfHashMap<_, FlowKey, LbReverseNat> =
                BpfHashMap::try_from(self.maps.map(LB_REVERSE_NAT_MAP)?)
                    .map_err(|e| map_error(LB_REVERSE_NAT_MAP, e))?;
            reverse
                .iter()
                .filter_map(Result::ok)
                .map(|(reply, nat)| (reply, connection_of(&reply, &nat)))
                .filter(|(_, connection)| !live.contains(connection))
                .collect()
        };
        // Looked up again now: a connection made while the pass walked the maps is there.
        let still_without: Vec<FlowKey> = {
            let connections: BpfHashMap<_, FlowKey, LbConnection> =
                BpfHashMap::try_from(self.maps.map(LB_CONNTRACK_MAP)?)
                    .map_err(|e| map_error(LB_CONNTRACK_MAP, e))?;
            without_connection
                .into_iter()
                .filter(|(_, connection)| connections.get(connection, 0).is_err())
                .map(|(reply, _)| reply)
                .collect()
        };
        let mut reverse: BpfHashMap<_, FlowKey, LbReverseNat> =
            BpfHashMap::try_from(self.maps.map_mut(LB_REVERSE_NAT_MAP)?)
                .map_err(|e| map_error(LB_REVERSE_NAT_MAP, e))?;
        let mut suspects = std::collections::HashSet::new();
        for reply in still_without {
            if self.suspects.contains(&reply) {
                let _ = reverse.remove(&reply);
                report.orphaned += 1;
            } else {
                suspects.insert(reply);
            }
        }
        self.suspects = suspects;
        Ok(report)
    }
}

/// The client's connection (client → VIP) a reverse-NAT entry translates replies for: the
/// reply goes backend → client (for a hairpin, backend = client and the reply goes to the VIP).
pub fn connection_of(
    reply: &datapath_common::FlowKey,
    nat: &datapath_common::LbReverseNat,
) -> datapath_common::FlowKey {
    let hairpin = nat.flags & datapath_common::reverse_nat_flags::HAIRPIN != 0;
    datapath_common::FlowKey {
        scope: reply.scope,
        src: if hairpin { reply.src } else { reply.dst },
        dst: nat.vip,
        sport: nat.client_port,
        dport: nat.port,
        proto: reply.proto,
        _pad: [0; 3],
    }
}

handle!(
    /// What metrics read (never written through this handle).
    MapReader,
    [
        REASONS_MAP,
        IF_COUNTERS_MAP,
        FAULTS_MAP,
        GENERATION_MAP,
        CONFIG_MAP,
        SERVICE_COUNTERS_MAP,
        LB_CONNTRACK_MAP,
    ]
);

impl MapSourceMut for FlowTable {
    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, DatapathError> {
        self.0.map_mut(name)
    }
}

impl FlowTableOps for FlowTable {}

impl MapSourceMut for ServiceMaps {
    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, DatapathError> {
        self.0.map_mut(name)
    }
}

impl ServiceMapOps for ServiceMaps {}

impl Datapath {
    /// A handle on the flow table, for one owner (the nb-cfg follower, or the GC).
    pub fn flow_table(&self) -> Result<FlowTable, DatapathError> {
        MapSet::duplicate(self, FlowTable::MAPS).map(FlowTable)
    }

    /// The handle the Service sync owns.
    pub fn service_maps(&self) -> Result<ServiceMaps, DatapathError> {
        MapSet::duplicate(self, ServiceMaps::MAPS).map(ServiceMaps)
    }

    /// The handle the flow GC expires the balancer's connections with.
    pub fn lb_conntrack(&self) -> Result<LbConntrack, DatapathError> {
        Ok(LbConntrack {
            maps: MapSet::duplicate(self, LbConntrack::MAPS)?,
            suspects: Default::default(),
        })
    }

    /// A read-only handle for metrics.
    pub fn reader(&self) -> Result<MapReader, DatapathError> {
        MapSet::duplicate(self, MapReader::MAPS).map(MapReader)
    }
}

/// Counts the flow GC publishes after each pass (−1: not counted yet), for metrics.
#[derive(Debug)]
pub struct DatapathStats {
    flows: AtomicI64,
    lb_connections: AtomicI64,
    /// Generation bumps that failed (each is retried until one succeeds).
    bump_failures: std::sync::atomic::AtomicU64,
    /// Policy changes (new `ovn-nb-cfg` values, forward or back) that invalidated the flows.
    invalidations: std::sync::atomic::AtomicU64,
}

impl Default for DatapathStats {
    fn default() -> Self {
        DatapathStats {
            flows: AtomicI64::new(-1),
            lb_connections: AtomicI64::new(-1),
            bump_failures: Default::default(),
            invalidations: Default::default(),
        }
    }
}

impl DatapathStats {
    pub fn publish(&self, flows: usize, lb_connections: Option<usize>) {
        self.flows.store(flows as i64, Ordering::Relaxed);
        self.lb_connections
            .store(lb_connections.map_or(-1, |n| n as i64), Ordering::Relaxed);
    }

    /// Learned flows at the last GC pass.
    pub fn flows(&self) -> i64 {
        self.flows.load(Ordering::Relaxed)
    }

    /// LB conntrack entries at the last GC pass.
    pub fn lb_connections(&self) -> i64 {
        self.lb_connections.load(Ordering::Relaxed)
    }

    pub fn count_bump_failure(&self) {
        self.bump_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn bump_failures(&self) -> u64 {
        self.bump_failures.load(Ordering::Relaxed)
    }

    pub fn count_invalidation(&self) {
        self.invalidations.fetch_add(1, Ordering::Relaxed);
    }

    pub fn invalidations(&self) -> u64 {
        self.invalidations.load(Ordering::Relaxed)
    }
}
