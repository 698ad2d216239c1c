//! The pod's interfaces, with rtnetlink: two veth pairs in the node's namespace, one end moved
//! into the pod's namespace and configured there (name, MAC, MTU, addresses, routes).
//!
//! Everything inside the pod runs on a dedicated OS thread that has entered the pod's
//! namespace (`setns` changes only the calling thread; a netlink socket opened there talks to
//! that namespace), never on a runtime worker other tasks share.

use std::future::Future;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::{NetworkError, PodAddressing, PodLinks, SPARE_PREFIX, SpareLinks};
use crate::netlink::{connect, index_of, io, netlink};

async fn delete_if_present(handle: &Handle, name: &str) -> Result<(), NetworkError> {
    if let Some(index) = index_of(handle, name).await? {
        match handle.link().del(index).execute().await {
            Ok(()) => {}
            // Gone in between (deleting one end of a veth removes the other).
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {}
            Err(e) => return Err(netlink(format!("deleting {name}"))(e)),
        }
    }
    Ok(())
}

/// Runs `f` with a netlink handle inside the namespace at `netns`, on its own thread.
pub async fn in_netns<T, F, Fut>(netns: &Path, f: F) -> Result<T, NetworkError>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, NetworkError>>,
{
    let file = std::fs::File::open(netns)
        .map_err(|_| NetworkError::NetnsGone(netns.display().to_string()))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let what = netns.display().to_string();
    std::thread::spawn(move || {
        let result = (|| {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| io(format!("entering {what}"))(e.into()))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(io("a runtime for the pod's namespace"))?;
            runtime.block_on(async {
                let handle = connect()?;
                f(handle).await
            })
        })();
        let _ = tx.send(result);
    });
    rx.await.unwrap_or_else(|_| {
        Err(NetworkError::Check(
            "the thread working in the pod's namespace died".into(),
        ))
    })
}

/// Creates the pod's two veth pairs: both OVS ends and the host end in the calling thread's
/// namespace (the node's), up, with the OVS-side offloads off; the pod's end straight inside
/// `netns` under its final name, MAC and MTU (created there, not moved: a move waits for an
/// RCU grace period under the RTNL lock, which every other ADD on the node then waits for).
/// With a `spare`, its OVS-side pair is renamed to the pod's instead of a new one created.
/// Leftovers of an earlier attempt with the same names are removed first; on failure nothing
/// is left behind (the spare's interfaces included). [`configure_in_pod`] finishes the pod's
/// end.
pub async fn create(
    links: &PodLinks,
    netns: &Path,
    addressing: &PodAddressing,
    spare: Option<&SpareLinks>,
) -> Result<(), NetworkError> {
    let result = async {
        let target = std::fs::File::open(netns)
            .map_err(|_| NetworkError::NetnsGone(netns.display().to_string()))?;
        let handle = connect()?;
        delete(links).await?;
        build(&handle, links, &target, addressing, spare).await
    }
    .await;
    if result.is_err() {
        let _ = delete(links).await;
        if let Some(spare) = spare {
            let _ = delete_spare(spare).await;
        }
    }
    result
}

async fn build(
    handle: &Handle,
    links: &PodLinks,
    pod_netns: &std::fs::File,
    addressing: &PodAddressing,
    spare: Option<&SpareLinks>,
) -> Result<(), NetworkError> {
    let mtu = addressing.mtu;
    let pod_end = LinkMessageBuilder::<LinkUnspec>::new()
        .name(addressing.if_name.clone())
        .address(addressing.mac.to_vec())
        .mtu(mtu)
        .setns_by_fd(pod_netns.as_raw_fd())
        .build();
    handle
        .link()
        .add(with_peer(
            LinkVeth::new(&links.host_veth, &addressing.if_name)
                .mtu(mtu)
                .build(),
            pod_end,
        ))
        .execute()
        .await
        .map_err(netlink(format!(
            "creating {} with {} in the pod",
            links.host_veth, addressing.if_name
        )))?;
    match spare {
        // A rename under the RTNL lock waits for an expedited grace period only.
        Some(spare) => {
            for (from, to) in [
                (&spare.ovs_port, &links.ovs_port),
                (&spare.ovs_peer, &links.ovs_peer),
            ] {
                let index = index_of(handle, from).await?.ok_or_else(|| {
                    NetworkError::Check(format!("the spare interface {from} vanished"))
                })?;
                handle
                    .link()
                    .set(
                        LinkUnspec::new_with_index(index)
                            .name(to.clone())
                            .mtu(mtu)
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(netlink(format!("renaming {from} to {to}")))?;
            }
        }
        None => add_ovs_pair(handle, &links.ovs_port, &links.ovs_peer, mtu).await?,
    }
    for name in [&links.host_veth, &links.ovs_port, &links.ovs_peer] {
        let index = index_of(handle, name)
            .await?
            .ok_or_else(|| NetworkError::Check(format!("{name} vanished")))?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(netlink(format!("setting {name} up")))?;
    }
    // Slow-path packets are redirected into this end: the kernel must finish their checksums
    // and segment them before OVS reads them (OVS 3.1's userspace datapath cannot encapsulate
    // partial checksums). The pod keeps its offloads for the fast path. A spare's are off.
    match spare {
        Some(_) => Ok(()),
        None => offloads_off(&links.ovs_peer),
    }
}

/// The OVS-side veth pair, `ovs_port` and its `peer`, in the handle's namespace.
async fn add_ovs_pair(
    handle: &Handle,
    ovs_port: &str,
    peer: &str,
    mtu: u32,
) -> Result<(), NetworkError> {
    handle
        .link()
        .add(LinkVeth::new(ovs_port, peer).mtu(mtu).build())
        .execute()
        .await
        .map_err(netlink(format!("creating {ovs_port}")))
}

/// Builds a spare: an OVS-side veth pair in the calling thread's namespace (the node's), down,
/// with the offloads off as [`create`] leaves them. Leftovers under its names go first; on
/// failure nothing is left behind.
pub async fn create_spare(spare: &SpareLinks, mtu: u32) -> Result<(), NetworkError> {
    let handle = connect()?;
    delete_spare_with(&handle, spare).await?;
    let result = async {
        add_ovs_pair(&handle, &spare.ovs_port, &spare.ovs_peer, mtu).await?;
        offloads_off(&spare.ovs_peer)
    }
    .await;
    if result.is_err() {
        let _ = delete_spare_with(&handle, spare).await;
    }
    result
}

/// Removes one spare's interfaces. Idempotent.
pub async fn delete_spare(spare: &SpareLinks) -> Result<(), NetworkError> {
    delete_spare_with(&connect()?, spare).await
}

async fn delete_spare_with(handle: &Handle, spare: &SpareLinks) -> Result<(), NetworkError> {
    for name in [&spare.ovs_port, &spare.ovs_peer] {
        delete_if_present(handle, name).await?;
    }
    Ok(())
}

/// Removes every spare interface in the calling thread's namespace (an earlier agent's, at
/// start-up: what it had built, it had not handed out). Returns how many links went.
pub async fn delete_all_spares() -> Result<usize, NetworkError> {
    let handle = connect()?;
    let mut names = Vec::new();
    let mut stream = handle.link().get().execute();
    while let Some(link) = stream
        .try_next()
        .await
        .map_err(netlink("listing the node's links"))?
    {
        for attribute in &link.attributes {
            if let LinkAttribute::IfName(name) = attribute
                && name.starts_with(SPARE_PREFIX)
            {
                names.push(name.clone());
            }
        }
    }
    for name in &names {
        delete_if_present(&handle, name).await?;
    }
    Ok(names.len())
}

/// A veth message whose peer is `peer` (rtnetlink's builder names the peer only).
fn with_peer(mut veth: LinkMessage, peer: LinkMessage) -> LinkMessage {
    for attribute in &mut veth.attributes {
        if let LinkAttribute::LinkInfo(infos) = attribute {
            for info in infos.iter_mut() {
                if let LinkInfo::Data(InfoData::Veth(data)) = info {
                    *data = InfoVeth::Peer(peer.clone());
                }
            }
        }
    }
    veth
}

/// Configures the pod's end inside `netns` (addresses, routes, up). The caller removes the
/// interfaces if this fails.
pub async fn configure_in_pod(
    netns: &Path,
    addressing: &PodAddressing,
) -> Result<(), NetworkError> {
    let addressing = addressing.clone();
    in_netns(netns, move |handle| async move {
        configure_pod_end(&handle, &addressing).await
    })
    .await
}

async fn configure_pod_end(
    handle: &Handle,
    addressing: &PodAddressing,
) -> Result<(), NetworkError> {
    let if_name = &addressing.if_name;
    let index = index_of(handle, if_name)
        .await?
        .ok_or_else(|| NetworkError::Check(format!("{if_name} did not arrive in the pod")))?;
    if addressing.addresses.iter().any(|a| a.addr().is_ipv6()) {
        // The address is OVN's to guard: duplicate address detection would only delay it.
        let path = format!("/proc/sys/net/ipv6/conf/{if_name}/accept_dad");
        std::fs::write(&path, "0").map_err(io(path))?;
    }
    for address in &addressing.addresses {
        handle
            .address()
            .add(index, address.addr(), address.prefix_len())
            .execute()
            .await
            .map_err(netlink(format!("adding {address} to {if_name}")))?;
    }
    for name in ["lo", if_name.as_str()] {
        let i = index_of(handle, name)
            .await?
            .ok_or_else(|| NetworkError::Check(format!("no {name} in the pod")))?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(i).up().build())
            .execute()
            .await
            .map_err(netlink(format!("setting {name} up in the pod")))?;
    }
    for route in &addressing.routes {
        let (destination, prefix) = route
            .destination
            .map(|d| (d.addr(), d.prefix_len()))
            .unwrap_or(match route.gateway {
                IpAddr::V4(_) => (IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0),
                IpAddr::V6(_) => (IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0),
            });
        let message = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(destination, prefix)
            .and_then(|b| b.gateway(route.gateway))
            .map_err(|e| NetworkError::Check(format!("route {destination}/{prefix}: {e}")))?
            .output_interface(index)
            .build();
        handle
            .route()
            .add(message)
            .execute()
            .await
            .map_err(netlink(format!(
                "adding the route {destination}/{prefix} via {} in the pod",
                route.gateway
            )))?;
    }
    Ok(())
}

/// Removes the pod's interfaces from the node (deleting a veth end removes its peer, also the
/// one inside the pod). Idempotent.
pub async fn delete(links: &PodLinks) -> Result<(), NetworkError> {
    let handle = connect()?;
    for name in [&links.host_veth, &links.ovs_port, &links.ovs_peer] {
        delete_if_present(&handle, name).await?;
    }
    Ok(())
}

/// Whether each of the pod's node-side interfaces exists.
pub async fn present(links: &PodLinks) -> Result<Vec<(String, bool)>, NetworkError> {
    let handle = connect()?;
    let mut out = Vec::new();
    for name in [&links.host_veth, &links.ovs_port, &links.ovs_peer] {
        out.push((name.clone(), index_of(&handle, name).await?.is_some()));
    }
    Ok(out)
}

/// What the pod's interface holds now: (MAC, MTU, addresses), read inside the pod.
pub async fn observe_pod_end(
    netns: &Path,
    if_name: &str,
) -> Result<([u8; 6], u32, Vec<(IpAddr, u8)>), NetworkError> {
    use rtnetlink::packet_route::address::AddressAttribute;
    use rtnetlink::packet_route::link::LinkAttribute;
    let if_name = if_name.to_owned();
    in_netns(netns, move |handle| async move {
        let link = handle
            .link()
            .get()
            .match_name(if_name.clone())
            .execute()
            .try_next()
            .await
            .map_err(netlink(format!("looking up {if_name} in the pod")))?
            .ok_or_else(|| NetworkError::Check(format!("no {if_name} in the pod")))?;
        let mut mac = [0u8; 6];
        let mut mtu = 0;
        for attribute in &link.attributes {
            match attribute {
                LinkAttribute::Address(a) if a.len() == 6 => mac.copy_from_slice(a),
                LinkAttribute::Mtu(m) => mtu = *m,
                _ => {}
            }
        }
        let mut addresses = Vec::new();
        let mut stream = handle
            .address()
            .get()
            .set_link_index_filter(link.header.index)
            .execute();
        while let Some(message) = stream
            .try_next()
            .await
            .map_err(netlink("listing the pod's addresses"))?
        {
            for attribute in &message.attributes {
                if let AddressAttribute::Address(ip) = attribute {
                    addresses.push((*ip, message.header.prefix_len));
                }
            }
        }
        Ok((mac, mtu, addresses))
    })
    .await
}

/// `ethtool -K <name> tx off tso off gso off`, through the ethtool ioctl.
pub(crate) fn offloads_off(name: &str) -> Result<(), NetworkError> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_STXCSUM: u32 = 0x17;
    const ETHTOOL_STSO: u32 = 0x1f;
    const ETHTOOL_SGSO: u32 = 0x24;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [libc::c_char; libc::IFNAMSIZ],
        data: *mut libc::c_void,
        _pad: [u8; 16],
    }
    // SAFETY: a plain datagram socket, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io("a socket for ethtool")(std::io::Error::last_os_error()));
    }
    let mut result = Ok(());
    for cmd in [ETHTOOL_STXCSUM, ETHTOOL_STSO, ETHTOOL_SGSO] {
        let mut value = EthtoolValue { cmd, data: 0 };
        let mut request = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: (&raw mut value).cast(),
            _pad: [0; 16],
        };
        for (dst, src) in request
            .name
            .iter_mut()
            .zip(name.bytes().take(libc::IFNAMSIZ - 1))
        {
            *dst = src as libc::c_char;
        }
        // SAFETY: `request` is a valid ifreq whose data points at a live ethtool_value for
        // the duration of the call.
        let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL, &raw mut request) };
        if rc < 0 {
            result = Err(io(format!("turning offloads off on {name}"))(
                std::io::Error::last_os_error(),
            ));
            break;
        }
    }
    // SAFETY: `fd` is ours and not used after this.
    unsafe { libc::close(fd) };
    result
}
