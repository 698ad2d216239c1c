//! Pods in the datapath: register a pod's interfaces and address, attach the programs to its
//! split port, and purge everything of it when it goes.

use std::collections::HashMap as StdHashMap;
use std::net::IpAddr;

use std::path::{Path, PathBuf};

use aya::maps::HashMap;
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{self, SchedClassifierLink, SchedClassifierLinkId};
use aya::programs::{SchedClassifier, TcAttachType};
use datapath_common::{ENDPOINTS_MAP, EndpointKey, IpBytes, PORTS_MAP, PodPort, programs};

use super::{Datapath, DatapathError, FlowTableOps, MapSourceMut, classifier, map_error};

/// A pod's host-side interfaces and address, as the agent (or a test fixture) created them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInterfaces {
    /// The attachment's key, used to remove it later: the agent's is `<container id>/<if>`
    /// ([`crate::local_pod::AttachmentId`]), so a newer sandbox of the same pod, attached
    /// under its own key, survives the removal of an older one.
    pub name: String,
    /// Who holds the addresses (the owner's logical port name, `<pod>.<namespace>`): a newer
    /// attachment of the same owner may take them over; no other attachment may.
    pub owner: String,
    /// Host end of the pod's veth.
    pub host_veth: String,
    /// Outer end of the pod's OVS port pair.
    pub ovs_peer: String,
    pub ip: IpAddr,
    pub mac: [u8; 6],
    /// The pod's other addresses (the IPv6 one of a dual-stack pod): the fast path and the
    /// Service balancer know them as the pod's too.
    pub other_ips: Vec<IpAddr>,
    /// The VPC the addresses belong to (the pod's subnet's, as the controller's records say);
    /// `None` when not known, and then the pod shares its address scope with no other pod.
    pub vpc: Option<String>,
}

/// How a program stays attached to a pod's interface.
#[derive(Debug)]
pub(super) enum Attachment {
    /// A TCX link pinned in bpffs: it outlives this process.
    Pinned(PathBuf),
    /// A link owned by this process's program: no pin directory, or a kernel without TCX
    /// (clsact filters are detached when the agent exits, so restarts interrupt flows there).
    Owned(&'static str, SchedClassifierLinkId),
}

/// What the datapath keeps about an attached pod.
#[derive(Debug)]
pub(super) struct AttachedPod {
    owner: String,
    vpc: Option<String>,
    port: PodPort,
    ip: IpBytes,
    other_ips: Vec<IpBytes>,
    links: Vec<Attachment>,
}

pub(super) type AttachedPods = StdHashMap<String, AttachedPod>;

/// The delivery program's link on each spare's OVS port peer, by spare
/// (`cni_server::spares`).
pub(super) type SpareAttachments = StdHashMap<String, Attachment>;

/// Parses a MAC written as `0a:58:0a:10:00:02`.
pub fn parse_mac(mac: &str) -> Result<[u8; 6], String> {
    let octets: Vec<&str> = mac.split(':').collect();
    if octets.len() != 6 {
        return Err(format!("{mac:?}: expected a MAC like 0a:58:0a:10:00:02"));
    }
    let mut out = [0u8; 6];
    for (slot, octet) in out.iter_mut().zip(octets) {
        *slot = u8::from_str_radix(octet, 16).map_err(|e| format!("{mac:?}: {e}"))?;
    }
    Ok(out)
}

/// The map form of an address.
pub fn ip_bytes(ip: IpAddr) -> IpBytes {
    match ip {
        IpAddr::V4(v4) => datapath_common::ipv4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address an [`IpBytes`] holds (IPv4-mapped addresses as IPv4).
pub fn ip_from_bytes(bytes: &IpBytes) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(*bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

pub(super) fn ifindex(name: &str) -> Result<u32, DatapathError> {
    nix::net::if_::if_nametoindex(name).map_err(|e| DatapathError::Interface {
        interface: name.to_owned(),
        source: e.into(),
    })
}

impl Datapath {
    /// Registers `pod` and attaches the fast path to its split port. Its interfaces are looked
    /// up in the calling thread's network namespace. Idempotent: attaching again replaces.
    pub fn attach_pod(&mut self, pod: &PodInterfaces) -> Result<(), DatapathError> {
        self.attach_pod_with(pod, None)
    }

    /// As [`Datapath::attach_pod`], for interfaces that were the spare `spare`: the programs
    /// attached to them then are the pod's now (their pins renamed after the interfaces), so
    /// this attaches nothing and waits for no RCU grace period.
    pub fn attach_pod_from_spare(
        &mut self,
        pod: &PodInterfaces,
        spare: &str,
    ) -> Result<(), DatapathError> {
        let delivery = self.spares.remove(spare);
        self.attach_pod_with(pod, delivery)
    }

    /// `delivery`: the delivery program's link on the pod's OVS port peer, if one is there.
    fn attach_pod_with(
        &mut self,
        pod: &PodInterfaces,
        mut delivery: Option<Attachment>,
    ) -> Result<(), DatapathError> {
        let attached = self.attach_prepared(pod, &mut delivery);
        // Not taken over (a failure before it was): it goes.
        if let Some(link) = delivery {
            self.release_link(link);
        }
        attached
    }

    fn attach_prepared(
        &mut self,
        pod: &PodInterfaces,
        delivery: &mut Option<Attachment>,
    ) -> Result<(), DatapathError> {
        if self.pods.contains_key(&pod.name) {
            self.remove_pod(&pod.name)?;
        }
        let ip = ip_bytes(pod.ip);
        let (host_ifindex, ovs_peer_ifindex) = (ifindex(&pod.host_veth)?, ifindex(&pod.ovs_peer)?);
        let scope = self.scopes.acquire(pod.vpc.as_deref(), host_ifindex);
        // One address, one port (within a VPC): an address another owner's attached port
        // holds stays its.
        for address in std::iter::once(&pod.ip).chain(&pod.other_ips) {
            if let Some(holder) = self.holder_of(&ip_bytes(*address), scope)?
                && holder != pod.owner
            {
                self.scopes.release(pod.vpc.as_deref());
                return Err(DatapathError::AddressTaken {
                    address: *address,
                    holder,
                });
            }
        }
        let port = PodPort {
            host_ifindex,
            ovs_peer_ifindex,
            scope,
            mac: pod.mac,
            _pad: [0; 2],
            ip,
        };
        // Recorded first, so that a failure part-way is undone by remove_pod.
        self.pods.insert(
            pod.name.clone(),
            AttachedPod {
                owner: pod.owner.clone(),
                vpc: pod.vpc.clone(),
                port,
                ip,
                other_ips: pod.other_ips.iter().map(|ip| ip_bytes(*ip)).collect(),
                links: Vec::new(),
            },
        );
        let attached = self.register_and_attach(pod, port, ip, delivery);
        if attached.is_err() {
            let _ = self.remove_pod(&pod.name);
        }
        attached
    }

    fn register_and_attach(
        &mut self,
        pod: &PodInterfaces,
        port: PodPort,
        ip: IpBytes,
        delivery: &mut Option<Attachment>,
    ) -> Result<(), DatapathError> {
        self.register_port(port, ip)?;
        {
            let mut endpoints: HashMap<_, EndpointKey, PodPort> =
                self.map_mut_typed(ENDPOINTS_MAP)?;
            for other in &pod.other_ips {
                endpoints
                    .insert(
                        EndpointKey {
                            ip: ip_bytes(*other),
                            scope: port.scope,
                        },
                        port,
                        0,
                    )
                    .map_err(|e| map_error(ENDPOINTS_MAP, e))?;
            }
        }
        // One after the other: each TCX attach waits for an RCU grace period while it holds
        // the RTNL lock, so attaching from two threads gains nothing.
        for (program, interface) in [
            (programs::FROM_POD, &pod.host_veth),
            (programs::TO_POD, &pod.ovs_peer),
        ] {
            let prepared = if program == programs::TO_POD {
                delivery.take()
            } else {
                None
            };
            let link = match prepared {
                Some(link) => self.repin(link, program, interface)?,
                None => {
                    let prog = classifier(&mut self.ebpf, program)?;
                    attach_program(prog, self.pin_dir.as_deref(), program, interface)?
                }
            };
            self.pods
                .get_mut(&pod.name)
                .expect("recorded by attach_pod")
                .links
                .push(link);
        }
        Ok(())
    }

    /// Detaches the pod's programs, forgets its interfaces and address, and purges every flow
    /// from or to it at once, so nothing is fast-pathed to its old address.
    pub fn remove_pod(&mut self, name: &str) -> Result<(), DatapathError> {
        let Some(pod) = self.pods.remove(name) else {
            return Ok(());
        };
        self.scopes.release(pod.vpc.as_deref());
        for link in pod.links {
            self.release_link(link);
        }
        {
            let mut ports: HashMap<_, u32, PodPort> = self.map_mut_typed(PORTS_MAP)?;
            let _ = ports.remove(&pod.port.host_ifindex);
            let _ = ports.remove(&pod.port.ovs_peer_ifindex);
        }
        {
            // An address another attachment has taken since (a newer sandbox of the same pod)
            // is that attachment's now.
            let mut endpoints: HashMap<_, EndpointKey, PodPort> =
                self.map_mut_typed(ENDPOINTS_MAP)?;
            for ip in std::iter::once(&pod.ip).chain(&pod.other_ips) {
                let key = EndpointKey {
                    ip: *ip,
                    scope: pod.port.scope,
                };
                if endpoints
                    .get(&key, 0)
                    .is_ok_and(|p| p.host_ifindex == pod.port.host_ifindex)
                {
                    let _ = endpoints.remove(&key);
                }
            }
        }
        for ifindex in [pod.port.host_ifindex, pod.port.ovs_peer_ifindex] {
            self.remove_counters(ifindex)?;
        }
        let owns = |ip: &IpBytes| *ip == pod.ip || pod.other_ips.contains(ip);
        self.purge_flows(|key, entry| {
            key.scope == pod.port.scope && (owns(&key.src) || owns(&key.dst))
                || entry.dst_host_ifindex == pod.port.host_ifindex
        })?;
        // Its flows to other nodes: a later pod given the address must not replay them.
        self.purge_tunnel_flows(|key, _| key.scope == pod.port.scope && owns(&key.src))?;
        // And from other nodes: a later pod given the address (or the veth's index) must not
        // receive them past its own node's OVS.
        self.purge_tunnel_rx(|key, entry| {
            key.scope == pod.port.scope && owns(&key.dst)
                || entry.dst_host_ifindex == pod.port.host_ifindex
        })?;
        Ok(())
    }

    /// Detaches one program: removing the last reference to a pinned link detaches it; an
    /// owned one may be detached already (its interface gone, which detached it).
    fn release_link(&mut self, link: Attachment) {
        match link {
            Attachment::Pinned(path) => {
                let _ = std::fs::remove_file(path);
            }
            Attachment::Owned(program, id) => {
                if let Ok(prog) = classifier(&mut self.ebpf, program) {
                    let _ = prog.detach(id);
                }
            }
        }
    }

    /// A spare's link, now on `interface` (renamed from the spare's name): its pin follows the
    /// name, where [`attach_program`] and a restarted agent look for it.
    fn repin(
        &mut self,
        link: Attachment,
        program: &'static str,
        interface: &str,
    ) -> Result<Attachment, DatapathError> {
        let (Attachment::Pinned(from), Some(dir)) = (&link, self.pin_dir.as_deref()) else {
            return Ok(link);
        };
        let to = link_pin(dir, interface, program);
        match std::fs::rename(from, &to) {
            Ok(()) => Ok(Attachment::Pinned(to)),
            Err(e) => {
                let detail = format!("renaming {} to {}: {e}", from.display(), to.display());
                self.release_link(link);
                Err(DatapathError::Pin { path: to, detail })
            }
        }
    }

    /// Attaches the delivery program to `ovs_peer`, the spare `spare`'s OVS port peer, before
    /// any pod is known: the RCU grace period a TCX attach waits for is spent here instead of
    /// in an ADD.
    pub fn attach_spare(&mut self, spare: &str, ovs_peer: &str) -> Result<(), DatapathError> {
        let program = programs::TO_POD;
        let prog = classifier(&mut self.ebpf, program)?;
        let link = attach_program(prog, self.pin_dir.as_deref(), program, ovs_peer)?;
        if let Some(earlier) = self.spares.insert(spare.to_owned(), link) {
            self.release_link(earlier);
        }
        Ok(())
    }

    /// Detaches what the spare `spare` had attached (it could not be finished, or an ADD
    /// failed before its program was taken over). Idempotent.
    pub fn discard_spare(&mut self, spare: &str) {
        if let Some(link) = self.spares.remove(spare) {
            self.release_link(link);
        }
    }

    /// Removes the pins of spares an earlier agent built and never handed out (their
    /// interfaces are deleted at start-up, which leaves the pinned links defunct). Called
    /// before this agent builds spares of its own. Returns how many went.
    pub fn remove_stale_spare_pins(&self) -> usize {
        let Some(dir) = &self.pin_dir else {
            return 0;
        };
        let Ok(entries) = std::fs::read_dir(dir.join("links")) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(crate::pod_network::SPARE_PREFIX)
            })
            .filter(|e| std::fs::remove_file(e.path()).is_ok())
            .count()
    }

    /// Records a pod port and its address in the maps the programs consult (attach_pod does
    /// this; tests driving the programs with BPF_PROG_TEST_RUN use it directly).
    pub fn register_port(&mut self, port: PodPort, ip: IpBytes) -> Result<(), DatapathError> {
        {
            let mut ports: HashMap<_, u32, PodPort> = self.map_mut_typed(PORTS_MAP)?;
            for index in [port.host_ifindex, port.ovs_peer_ifindex] {
                ports
                    .insert(index, port, 0)
                    .map_err(|e| map_error(PORTS_MAP, e))?;
            }
        }
        let mut endpoints: HashMap<_, EndpointKey, PodPort> = self.map_mut_typed(ENDPOINTS_MAP)?;
        endpoints
            .insert(
                EndpointKey {
                    ip,
                    scope: port.scope,
                },
                port,
                0,
            )
            .map_err(|e| map_error(ENDPOINTS_MAP, e))
    }

    /// Runs `program` once on `packet` with BPF_PROG_TEST_RUN; the kernel presents it as
    /// arriving on loopback (ifindex 1). Returns the program's verdict.
    pub fn test_run(&self, program: &'static str, packet: &[u8]) -> Result<i32, DatapathError> {
        self.time_run(program, packet, 1)
            .map(|(verdict, _)| verdict)
    }

    /// Runs `program` on `packet` `repeat` times in the kernel (BPF_PROG_TEST_RUN); returns
    /// the verdict and the kernel's mean time per run (what the benchmark quotes as the
    /// program's cost).
    pub fn time_run(
        &self,
        program: &'static str,
        packet: &[u8],
        repeat: u32,
    ) -> Result<(i32, std::time::Duration), DatapathError> {
        use aya::programs::{TestRun, TestRunOptions};
        let prog: &aya::programs::SchedClassifier = self
            .ebpf
            .program(program)
            .ok_or(DatapathError::MissingProgram { name: program })?
            .try_into()
            .map_err(|source| DatapathError::Program {
                name: program,
                source: Box::new(source),
            })?;
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(packet),
                repeat,
                ..TestRunOptions::default()
            })
            .map_err(|source| DatapathError::Program {
                name: program,
                source: Box::new(source),
            })?;
        Ok((result.return_value as i32, result.duration))
    }

    /// The owner of the attached port whose endpoint entry holds `ip` in `scope`, if any (an
    /// entry left by no attached port, as after a restart before adoption, holds nothing).
    fn holder_of(&self, ip: &IpBytes, scope: u32) -> Result<Option<String>, DatapathError> {
        let map = super::MapSource::map(self, ENDPOINTS_MAP)?;
        let endpoints: HashMap<_, EndpointKey, PodPort> =
            HashMap::try_from(map).map_err(|e| map_error(ENDPOINTS_MAP, e))?;
        let Ok(entry) = endpoints.get(&EndpointKey { ip: *ip, scope }, 0) else {
            return Ok(None);
        };
        Ok(self
            .pods
            .values()
            .find(|p| p.port.host_ifindex == entry.host_ifindex)
            .map(|p| p.owner.clone()))
    }

    /// Names of the attached pods.
    pub fn pod_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.pods.keys().cloned().collect();
        names.sort();
        names
    }
}

/// Where the link of `program` on `interface` is pinned.
fn link_pin(dir: &Path, interface: &str, program: &str) -> PathBuf {
    // bpffs refuses dots in names (EPERM); interface names may contain them.
    dir.join("links")
        .join(format!("{}-{program}", interface.replace('.', "_")))
}

/// Attaches `program` to the ingress of `interface`. With a pin directory, a link pinned
/// by an earlier agent is adopted and its program replaced atomically (no window without
/// a program); a new link is pinned.
pub(super) fn attach_program(
    prog: &mut SchedClassifier,
    pin_dir: Option<&Path>,
    program: &'static str,
    interface: &str,
) -> Result<Attachment, DatapathError> {
    let attach_error = |source| DatapathError::Attach {
        name: program,
        interface: interface.to_owned(),
        direction: "ingress",
        source: Box::new(source),
    };
    let pin = pin_dir.map(|dir| link_pin(dir, interface, program));
    let adopted = pin
        .as_ref()
        .and_then(|path| PinnedLink::from_pin(path).ok())
        .and_then(|pinned| SchedClassifierLink::try_from(FdLink::from(pinned)).ok());
    let adopted_id = match adopted {
        Some(link) => match prog.attach_to_link(link) {
            Ok(id) => Some(id),
            // The pinned link outlived its interface (a pod sandbox re-created under the
            // same name while no agent ran, or an agent killed mid-ADD): it cannot be
            // updated, so it goes and a fresh link takes its place.
            Err(e) => {
                tracing::debug!(%interface, program, error = %e, "stale pinned link replaced");
                if let Some(path) = &pin {
                    let _ = std::fs::remove_file(path);
                }
                None
            }
        },
        None => None,
    };
    let tcx = super::has_tcx();
    let id = match adopted_id {
        Some(id) => id,
        None => {
            // Only a clsact filter needs the qdisc; adding it costs an RCU grace period
            // under the RTNL lock, which every other ADD on the node waits for.
            if !tcx {
                let _ = tc::qdisc_add_clsact(interface);
            }
            prog.attach(interface, TcAttachType::Ingress)
                .map_err(attach_error)?
        }
    };
    let (Some(path), true) = (pin, tcx) else {
        return Ok(Attachment::Owned(program, id));
    };
    let link = prog.take_link(id).map_err(attach_error)?;
    let pin_error = |detail: String| DatapathError::Pin {
        path: path.clone(),
        detail,
    };
    match FdLink::try_from(link) {
        Ok(fd_link) => {
            if !path.exists() {
                fd_link
                    .pin(&path)
                    .map_err(|e| pin_error(format!("{e:?}")))?;
            }
            // Otherwise the adopted link is pinned already; dropping our fd leaves it be.
            Ok(Attachment::Pinned(path))
        }
        Err(e) => Err(pin_error(format!("not a TCX link: {e}"))),
    }
}
