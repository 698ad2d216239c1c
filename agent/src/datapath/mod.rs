//! The eBPF datapath as the agent sees it: find the object, load it through the verifier,
//! attach programs to interfaces, read the maps.
//!
//! A failure here never takes the node down: the caller keeps the node on OVS (the slow path is
//! always complete) and reports the error.

mod counters;
mod fallback;
mod handles;
pub mod invalidation;
mod object;
pub mod pin_layout;
mod pods;
mod policy;
mod scope;
mod services;
mod uplink;

use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    programs::{SchedClassifier, TcAttachType, tc},
};
use datapath_common::{Direction, programs};

pub use counters::{FaultCount, InterfaceCounters, ReadMaps, ReasonCount};
pub use fallback::install_kernel_handoff;
pub use handles::{
    DatapathStats, FlowTable, LbConntrack, LbGcReport, MapReader, MapSet, ServiceMaps,
    connection_of,
};
pub use object::{BPF_OBJECT_ENV, locate_object};
pub use pods::{PodInterfaces, ip_bytes, ip_from_bytes, parse_mac};
pub use policy::{FlowTableOps, GcReport, monotonic_ns};
pub use scope::Scopes;
pub use services::{ReadServiceMaps, ServiceCount, ServiceMapOps};

/// Errors of the datapath loader; each says which step failed.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "no eBPF object found (looked in: {}); build it with `cargo xtask build-ebpf` or set {BPF_OBJECT_ENV}",
        .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    ObjectNotFound { searched: Vec<PathBuf> },
    #[error("loading eBPF object {path}: {source}")]
    Load {
        path: PathBuf,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("address {address} belongs to {holder}, whose port is attached on this node")]
    AddressTaken {
        address: std::net::IpAddr,
        holder: String,
    },
    #[error("program {name} is not in the eBPF object")]
    MissingProgram { name: &'static str },
    #[error("map {name} is not in the eBPF object")]
    MissingMap { name: &'static str },
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("attaching {name} to {interface} ({direction}): {source}")]
    Attach {
        name: &'static str,
        interface: String,
        direction: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("interface {interface}: {source}")]
    Interface {
        interface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pinning under {path}: {detail}")]
    Pin { path: PathBuf, detail: String },
    #[error("the services map is full: {vips} VIPs left to OVN's load balancer")]
    ServicesFull { vips: usize },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
}

/// Options of [`Datapath::load`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Pin maps and links here (production: `/sys/fs/bpf/kovn`), so a restarted agent keeps
    /// learned flows and attached programs; `None` keeps everything in this process.
    pub pin_dir: Option<PathBuf>,
    /// aya-log level inside the programs; `None` compiles the log statements out at load time
    /// (they cost a ring-buffer reservation each, so they are off unless someone is debugging).
    pub log_level: Option<aya_log::Level>,
    /// Entries of the services map (VIP, port, protocol) when it is created; `None` keeps
    /// the object's size ([`datapath_common::SERVICES_MAX_ENTRIES`]). A pinned map of another
    /// size is created anew (see `pin_layout`); the service sync fills it again.
    pub services_max_entries: Option<u32>,
}

/// The loaded datapath object. Dropping it detaches the programs it attached without a pin
/// directory; pinned links outlive it.
pub struct Datapath {
    ebpf: Ebpf,
    object: PathBuf,
    pods: pods::AttachedPods,
    spares: pods::SpareAttachments,
    /// The address scope of each VPC with pods here.
    scopes: Scopes,
    pin_dir: Option<PathBuf>,
    logger: Option<BpfLogger>,
    takeover: pin_layout::Takeover,
}

/// Loads the datapath, or says loudly that the node stays on OVS: the one place the agent
/// decides, at start-up, whether pods get the fast path. A failure never takes the node down
/// (OVS carries everything; `kovn_datapath_loaded` is 0).
pub fn load_or_stay_on_ovs(object: Option<PathBuf>, options: &LoadOptions) -> Option<Datapath> {
    let loaded = object
        .map_or_else(locate_object, Ok)
        .and_then(|object| Datapath::load(&object, options));
    match loaded {
        Ok(datapath) => Some(datapath),
        Err(e) => {
            tracing::error!(
                error = %e,
                source = ?std::error::Error::source(&e),
                "eBPF datapath not loaded; this node stays on OVS (kovn_datapath_loaded 0)"
            );
            None
        }
    }
}

/// Forwards the programs' aya-log events to the `log` facade (and so to tracing).
pub type BpfLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("object", &self.object)
            .finish_non_exhaustive()
    }
}

impl Datapath {
    /// Loads the object at `path` and runs every program through the verifier, so a rejection
    /// is found at start, not at the first pod.
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Datapath, DatapathError> {
        let level: u8 = options.log_level.map_or(0, |l| l as u8);
        let mut loader = EbpfLoader::new();
        loader.override_global("AYA_LOG_LEVEL", &level, false);
        if let Some(entries) = options.services_max_entries {
            loader.map_max_entries(datapath_common::SERVICES_MAP, entries);
        }
        let bytes = std::fs::read(path).map_err(|e| DatapathError::Pin {
            path: path.to_owned(),
            detail: format!("reading the object: {e}"),
        })?;
        let mut takeover = pin_layout::Takeover::default();
        let pinned_maps: Vec<(&'static str, PathBuf)> = match &options.pin_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir.join("links")).map_err(|e| DatapathError::Pin {
                    path: dir.clone(),
                    detail: e.to_string(),
                })?;
                // What an earlier agent pinned is adopted only where it fits this object.
                let overrides: std::collections::BTreeMap<&str, u32> = options
                    .services_max_entries
                    .map(|n| (datapath_common::SERVICES_MAP, n))
                    .into_iter()
                    .collect();
                let expected = pin_layout::object_shapes(&bytes, PINNED_MAPS, &overrides).map_err(
                    |detail| DatapathError::Pin {
                        path: path.to_owned(),
                        detail,
                    },
                )?;
                takeover =
                    pin_layout::take_over(dir, &expected).map_err(|e| DatapathError::Pin {
                        path: dir.clone(),
                        detail: format!("taking over the pinned maps: {e}"),
                    })?;
                for (map, why) in &takeover.rebuilt {
                    tracing::warn!(%map, %why, "a pinned map does not fit this datapath: created anew (its flows are learned again through OVS)");
                }
                if let Some(version) = takeover.found_version {
                    tracing::info!(
                        found = version,
                        layout = pin_layout::LAYOUT_VERSION,
                        adopted = takeover.adopted.len(),
                        rebuilt = takeover.rebuilt.len(),
                        "pinned datapath state taken over"
                    );
                }
                PINNED_MAPS.iter().map(|m| (*m, dir.join(m))).collect()
            }
            None => Vec::new(),
        };
        for (name, pin) in &pinned_maps {
            // Reuses the pinned map if there is one (a restart), pins a new one otherwise.
            loader.map_pin_path(name, pin.as_path());
        }
        let mut ebpf = loader.load(&bytes).map_err(|source| DatapathError::Load {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        for name in [
            programs::COUNT_INGRESS,
            programs::COUNT_EGRESS,
            programs::FROM_POD,
            programs::TO_POD,
            programs::TUNNEL_EGRESS,
            programs::UPLINK_INGRESS,
            programs::UPLINK_RETURN,
        ] {
            classifier(&mut ebpf, name)?
                .load()
                .map_err(|source| DatapathError::Program {
                    name,
                    source: Box::new(source),
                })?;
        }
        // After the programs are loaded (they hold their own reference to the log map), so
        // the logger may live elsewhere; only when someone asked for logs.
        let logger = match options.log_level {
            Some(_) => {
                Some(
                    aya_log::EbpfLogger::init(&mut ebpf).map_err(|e| DatapathError::Pin {
                        path: path.to_owned(),
                        detail: format!("starting the eBPF logger: {e}"),
                    })?,
                )
            }
            None => None,
        };
        let mut datapath = Datapath {
            ebpf,
            object: path.to_owned(),
            pods: Default::default(),
            spares: Default::default(),
            scopes: Scopes::default(),
            pin_dir: options.pin_dir.clone(),
            logger,
            takeover,
        };
        // Every start is a new generation. A fresh map starts at 0, and nothing learned
        // before the agent ran may match; a pinned map's flows were judged by a policy that
        // may have changed while no agent followed ovn-controller. They stay running through
        // OVS, and OVS's next delivery learns them again. Twice, for packets OVS forwarded
        // under the old flows but delivers after the first bump.
        datapath.bump_generation()?;
        std::thread::sleep(invalidation::SECOND_BUMP_DELAY);
        datapath.bump_generation()?;
        datapath.set_config(&datapath_common::DatapathConfig::default())?;
        datapath.write_default_scope()?;
        Ok(datapath)
    }

    /// Names the default VPC (its scope serves the eBPF Service balancer, and is the one whose
    /// cross-node flows are learned): before any pod is attached, or the pods attached so far
    /// keep the scopes they have.
    pub fn set_default_vpc(&mut self, vpc: &str) -> Result<(), DatapathError> {
        if self.pods.is_empty() {
            self.scopes = Scopes::new(vpc);
        }
        self.write_default_scope()
    }

    /// Switches the replay of learned encapsulations (the cross-node fast path) on or off.
    pub fn set_cross_node(&mut self, on: bool) -> Result<(), DatapathError> {
        let name = datapath_common::CROSS_NODE_MAP;
        let mut array: aya::maps::Array<_, u32> = self.map_mut_typed(name)?;
        array
            .set(0, u32::from(on), 0)
            .map_err(|e| map_error(name, e))
    }

    fn write_default_scope(&mut self) -> Result<(), DatapathError> {
        let name = datapath_common::DEFAULT_SCOPE_MAP;
        let scope = self.default_scope();
        let mut array: aya::maps::Array<_, datapath_common::Scope> = self.map_mut_typed(name)?;
        array.set(0, scope, 0).map_err(|e| map_error(name, e))
    }

    /// Attaches the tunnel observer to the egress of `interface` (a NIC the node's tunnels
    /// leave through), looked up in the calling thread's network namespace: it learns how OVS
    /// encapsulated local pods' flows to other nodes and changes nothing.
    pub fn attach_tunnel_observer(&mut self, interface: &str) -> Result<(), DatapathError> {
        if !has_tcx() {
            let _ = tc::qdisc_add_clsact(interface);
        }
        let name = programs::TUNNEL_EGRESS;
        classifier(&mut self.ebpf, name)?
            .attach(interface, TcAttachType::Egress)
            .map_err(|source| DatapathError::Attach {
                name,
                interface: interface.to_owned(),
                direction: Direction::Egress.as_str(),
                source: Box::new(source),
            })?;
        Ok(())
    }

    /// The default VPC's address scope: the Services the agent programs are reached there.
    pub fn default_scope(&self) -> datapath_common::Scope {
        self.scopes.default_scope()
    }

    /// The eBPF log reader, if logs were asked for; the caller drains it when its fd is
    /// readable (`EbpfLogger::flush`).
    pub fn take_logger(&mut self) -> Option<BpfLogger> {
        self.logger.take()
    }

    /// What this load took over of an earlier agent's pins.
    pub fn takeover(&self) -> &pin_layout::Takeover {
        &self.takeover
    }

    /// Names of the programs in the object.
    pub fn program_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.ebpf.programs().map(|(n, _)| n.to_owned()).collect();
        names.sort();
        names
    }

    /// Where the object was loaded from.
    pub fn object(&self) -> &Path {
        &self.object
    }

    /// Attaches the packet/byte counter to one hook of `interface`, which is looked up in the
    /// calling thread's network namespace. Uses TCX on kernels that have it (the program hands
    /// packets on with "next"), a clsact filter otherwise.
    pub fn attach_counters(
        &mut self,
        interface: &str,
        direction: Direction,
    ) -> Result<(), DatapathError> {
        let (name, attach_type) = match direction {
            Direction::Ingress => (programs::COUNT_INGRESS, TcAttachType::Ingress),
            Direction::Egress => (programs::COUNT_EGRESS, TcAttachType::Egress),
        };
        // On kernels without TCX, aya attaches through netlink and needs the clsact qdisc; it
        // may already be there (EEXIST), which is fine.
        if !has_tcx() {
            let _ = tc::qdisc_add_clsact(interface);
        }
        classifier(&mut self.ebpf, name)?
            .attach(interface, attach_type)
            .map_err(|source| DatapathError::Attach {
                name,
                interface: interface.to_owned(),
                direction: direction.as_str(),
                source: Box::new(source),
            })?;
        Ok(())
    }
}

/// The maps that hold state across agent restarts.
const PINNED_MAPS: &[&str] = &[
    datapath_common::FLOWS_MAP,
    datapath_common::TUNNEL_FLOWS_MAP,
    datapath_common::TUNNEL_RX_MAP,
    datapath_common::UPLINKS_MAP,
    datapath_common::DEFAULT_SCOPE_MAP,
    datapath_common::CROSS_NODE_MAP,
    datapath_common::PORTS_MAP,
    datapath_common::ENDPOINTS_MAP,
    datapath_common::GENERATION_MAP,
    datapath_common::CONFIG_MAP,
    datapath_common::REASONS_MAP,
    datapath_common::IF_COUNTERS_MAP,
    datapath_common::FAULTS_MAP,
    datapath_common::SERVICES_MAP,
    datapath_common::BACKENDS_MAP,
    datapath_common::MAGLEV_MAP,
    datapath_common::LB_CONNTRACK_MAP,
    datapath_common::LB_REVERSE_NAT_MAP,
    datapath_common::LB_AFFINITY_MAP,
    datapath_common::SERVICE_COUNTERS_MAP,
];

/// Whether the kernel attaches TC programs through TCX links (6.6 and later), as aya then
/// does; before, through clsact filters.
pub(super) fn has_tcx() -> bool {
    use aya::util::KernelVersion;
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, DatapathError> {
    let program = ebpf
        .program_mut(name)
        .ok_or(DatapathError::MissingProgram { name })?;
    program.try_into().map_err(|source| DatapathError::Program {
        name,
        source: Box::new(source),
    })
}

impl DatapathError {
    /// A write into a hash map that is full (E2BIG): the caller leaves what did not fit to
    /// OVS rather than failing everything else.
    pub fn is_map_full(&self) -> bool {
        matches!(self, DatapathError::Map { source, .. }
            if matches!(&**source, aya::maps::MapError::SyscallError(e)
                if e.io_error.raw_os_error() == Some(libc::E2BIG)))
    }
}

pub(crate) fn map_error(name: &'static str, source: aya::maps::MapError) -> DatapathError {
    DatapathError::Map {
        name,
        source: Box::new(source),
    }
}

/// Hands out the datapath's maps by name.
pub trait MapSource {
    fn map(&self, name: &'static str) -> Result<&aya::maps::Map, DatapathError>;
}

/// Hands out the datapath's maps by name, for writing.
pub trait MapSourceMut: MapSource {
    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, DatapathError>;

    /// A typed view of a map for writing.
    fn map_mut_typed<'a, T>(&'a mut self, name: &'static str) -> Result<T, DatapathError>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
    {
        T::try_from(self.map_mut(name)?).map_err(|e| map_error(name, e))
    }
}

impl MapSource for Datapath {
    fn map(&self, name: &'static str) -> Result<&aya::maps::Map, DatapathError> {
        self.ebpf
            .map(name)
            .ok_or(DatapathError::MissingMap { name })
    }
}

impl MapSourceMut for Datapath {
    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, DatapathError> {
        self.ebpf
            .map_mut(name)
            .ok_or(DatapathError::MissingMap { name })
    }
}

/// The maps a running agent pinned, opened by another process (the inspection commands).
pub type PinnedMaps = MapSet;

impl MapSet {
    /// Opens every pinned map under `dir` (a running agent's `--pin-dir`).
    pub fn open(dir: &Path) -> Result<PinnedMaps, DatapathError> {
        let mut maps = std::collections::HashMap::new();
        for name in PINNED_MAPS {
            let data =
                aya::maps::MapData::from_pin(dir.join(name)).map_err(|e| map_error(name, e))?;
            let map = aya::maps::Map::from_map_data(data).map_err(|e| map_error(name, e))?;
            maps.insert(*name, map);
        }
        Ok(MapSet { maps })
    }

    /// The settings a running agent's programs use now.
    pub fn config(&self) -> Result<datapath_common::DatapathConfig, DatapathError> {
        let name = datapath_common::CONFIG_MAP;
        let array: aya::maps::Array<_, datapath_common::DatapathConfig> =
            aya::maps::Array::try_from(self.map(name)?).map_err(|e| map_error(name, e))?;
        array.get(&0, 0).map_err(|e| map_error(name, e))
    }

    /// Changes a running agent's settings (e.g. switching the fast path off to compare).
    pub fn set_config(
        &mut self,
        config: &datapath_common::DatapathConfig,
    ) -> Result<(), DatapathError> {
        let name = datapath_common::CONFIG_MAP;
        let mut array: aya::maps::Array<_, datapath_common::DatapathConfig> =
            self.map_mut_typed(name)?;
        array.set(0, *config, 0).map_err(|e| map_error(name, e))
    }
}
