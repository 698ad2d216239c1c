//! A pod's network, as the CNI ADD builds it and DEL removes it (DESIGN.md, "The datapath"):
//!
//! ```text
//! pod netns:  <if_name> ──veth── <id>_h      (node netns; the datapath's hand-off point;
//!                                             <if_name> is created inside the pod)
//! OVS:        <id>_o ──veth── <id>_p         (<id>_o is the br-int port bound to the LSP;
//!                                             <id>_p is where OVS's deliveries arrive)
//! ```
//!
//! `<id>` is the first 12 characters of the container ID, as Kube-OVN names its veths, so
//! interface names fit in 15 bytes and DEL finds them from the container ID alone.
//!
//! A [`SpareLinks`] is an OVS-side pair built ahead of an ADD under `kovn~<n>` names: an ADD
//! that takes one renames it instead of creating it (see `cni_server::spares` for why). The
//! pod's veth is always created at the ADD, its pod end inside the pod's namespace: moving an
//! interface between namespaces waits for an `rcu_barrier`, 20–30 ms on a busy node.

pub mod links;

use std::net::IpAddr;

use ipnet::IpNet;

use crate::local_pod::LocalPod;
use crate::ovs::pod_port;

/// The node-side interface names of one pod sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLinks {
    /// Host end of the pod's veth.
    pub host_veth: String,
    /// The OVS port (a br-int port).
    pub ovs_port: String,
    /// The OVS port's peer, where OVS's deliveries to the pod arrive.
    pub ovs_peer: String,
}

impl PodLinks {
    /// The names of one attachment: a pod's own interface (`eth0`) is named from its
    /// container ID alone, as Kube-OVN names it; a secondary one (Multus's `net1`, …) from
    /// the first 7 characters of the container ID, `~` and 4 hex digits of the interface's
    /// name. `~` is in no container ID, so a secondary stem never meets a pod's own.
    pub fn for_attachment(attachment: &crate::local_pod::AttachmentId) -> PodLinks {
        if attachment.if_name == crate::local_pod::DEFAULT_INTERFACE {
            return PodLinks::for_container(&attachment.container_id);
        }
        let hash = attachment.if_name.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        let id: String = attachment.container_id.chars().take(7).collect();
        PodLinks::for_container(&format!("{id}~{:04x}", hash & 0xffff))
    }

    pub fn for_container(container_id: &str) -> PodLinks {
        let id: String = container_id.chars().take(12).collect();
        PodLinks {
            host_veth: format!("{id}_h"),
            ovs_port: format!("{id}_o"),
            ovs_peer: format!("{id}_p"),
        }
    }
}

/// What every spare's names start with. `~` is in no container ID (the CNI spec allows
/// alphanumerics, `-`, `_` and `.`), so a spare's names never meet a pod's.
pub const SPARE_PREFIX: &str = "kovn~";

/// One spare: an OVS port pair in the node's namespace, the datapath's delivery program on
/// its peer, waiting for an ADD to rename it to a pod's `<id>_o` and `<id>_p`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpareLinks {
    /// `kovn~<n>`: the spare's key, and the stem of its interfaces' names.
    pub id: String,
    pub ovs_port: String,
    pub ovs_peer: String,
}

impl SpareLinks {
    /// The spare numbered `n` (five hex digits, so its names fit in 15 bytes).
    pub fn numbered(n: u32) -> SpareLinks {
        let id = format!("{SPARE_PREFIX}{:05x}", n & 0xf_ffff);
        SpareLinks {
            ovs_port: format!("{id}_o"),
            ovs_peer: format!("{id}_p"),
            id,
        }
    }
}

/// A route inside the pod: `destination` (None: default) via `gateway`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodRoute {
    pub destination: Option<IpNet>,
    pub gateway: IpAddr,
}

/// What goes on the pod's interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAddressing {
    pub if_name: String,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// Each address with the prefix of its subnet.
    pub addresses: Vec<IpNet>,
    pub routes: Vec<PodRoute>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("netlink: {what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the pod's network namespace {0} is gone")]
    NetnsGone(String),
    #[error("{0}")]
    Check(String),
    #[error(transparent)]
    Ovs(#[from] crate::ovs::OvsError),
}

/// Builds the pod's interfaces and binds its OVS port; on failure nothing of it is left.
///
/// `alongside` (the datapath's attach) starts once the interfaces exist and runs concurrently
/// with configuring the pod's end and binding the port: the attach waits in the kernel (an
/// RCU grace period per TCX link), the bind for ovsdb-server, and those waits overlap.
/// Nothing reaches the pod before all are done: it has no address yet, and OVS no port to
/// deliver through. What `alongside` did, its caller undoes if this fails.
///
/// With a `spare`, its OVS port pair becomes the pod's instead of a new one being created.
///
/// A port of an earlier attempt is removed first: ovs-vswitchd must see a new port to open
/// the new interface (an unchanged Port row over a re-created interface leaves it reading the
/// old one).
pub async fn attach<E: From<NetworkError>>(
    ovs: &ovsdb::Client,
    bridge: &str,
    pod: &LocalPod,
    netns: &std::path::Path,
    addressing: &PodAddressing,
    spare: Option<&SpareLinks>,
    alongside: impl std::future::Future<Output = Result<(), E>>,
) -> Result<(), E> {
    let links = pod.links();
    pod_port::unbind(ovs, &links.ovs_port)
        .await
        .map_err(NetworkError::from)?;
    links::create(&links, netns, addressing, spare).await?;
    let plugged = async {
        tokio::try_join!(links::configure_in_pod(netns, addressing), async {
            pod_port::bind(ovs, bridge, pod)
                .await
                .map_err(NetworkError::from)
        })
    };
    let (plugged, beside) = tokio::join!(plugged, alongside);
    let result = match (plugged, beside) {
        (Ok(_), Ok(())) => return Ok(()),
        (Err(e), _) => Err(E::from(e)),
        (Ok(_), Err(e)) => Err(e),
    };
    let _ = detach(ovs, &links).await;
    result
}

/// Unbinds the OVS port and removes the interfaces. Idempotent. A pod Kube-OVN's daemon
/// plugged has its host veth as the OVS port (`pod_port::kube_ovn_ports`): that port goes too
/// (kovn never makes the host veth an OVS port, so removing one by that name is Kube-OVN's).
pub async fn detach(ovs: &ovsdb::Client, links: &PodLinks) -> Result<(), NetworkError> {
    pod_port::unbind(ovs, &links.ovs_port).await?;
    pod_port::unbind(ovs, &links.host_veth).await?;
    links::delete(links).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_fit_an_interface_name_and_follow_the_container() {
        let links = PodLinks::for_container("3f1c2a9b8d7e6f5a4b3c2d1e0f");
        let own = PodLinks::for_attachment(&crate::local_pod::AttachmentId::new(
            "3f1c2a9b8d7e6f5a4b3c2d1e0f",
            "eth0",
        ));
        assert_eq!(own, links);
        let net1 = PodLinks::for_attachment(&crate::local_pod::AttachmentId::new(
            "3f1c2a9b8d7e6f5a4b3c2d1e0f",
            "net1",
        ));
        let net2 = PodLinks::for_attachment(&crate::local_pod::AttachmentId::new(
            "3f1c2a9b8d7e6f5a4b3c2d1e0f",
            "net2",
        ));
        assert!(net1.host_veth.starts_with("3f1c2a9~") && net1.host_veth.len() <= 15);
        assert_ne!(net1, net2);
        assert_ne!(net1, links);
        assert_eq!(links.host_veth, "3f1c2a9b8d7e_h");
        assert_eq!(links.ovs_port, "3f1c2a9b8d7e_o");
        assert_eq!(links.ovs_peer, "3f1c2a9b8d7e_p");
        for name in [links.host_veth, links.ovs_port, links.ovs_peer] {
            assert!(name.len() <= 15, "{name}");
        }
    }

    #[test]
    fn spare_names_fit_an_interface_name_and_never_meet_a_pods() {
        for n in [0, 1, 0xf_ffff, u32::MAX] {
            let spare = SpareLinks::numbered(n);
            for name in [&spare.ovs_port, &spare.ovs_peer] {
                assert!(name.len() <= 15, "{name}");
                assert!(name.starts_with(SPARE_PREFIX), "{name}");
                assert!(name.starts_with(&spare.id), "{name}");
            }
        }
        assert_eq!(SpareLinks::numbered(0x1f).ovs_peer, "kovn~0001f_p");
    }
}
