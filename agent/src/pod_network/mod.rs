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
    pub fn for_container(container_id: &str) -> PodLinks {
        let id: String = container_id.chars().take(12).collect();
        PodLinks {
            host_veth: format!("{id}_h"),
            ovs_port: format!("{id}_o"),
            ovs_peer: format!("{id}_p"),
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
/// A port of an earlier attempt is removed first: ovs-vswitchd must see a new port to open
/// the new interface (an unchanged Port row over a re-created interface leaves it reading the
/// old one).
pub async fn attach<E: From<NetworkError>>(
    ovs: &ovsdb::Client,
    bridge: &str,
    pod: &LocalPod,
    netns: &std::path::Path,
    addressing: &PodAddressing,
    alongside: impl std::future::Future<Output = Result<(), E>>,
) -> Result<(), E> {
    let links = pod.links();
    pod_port::unbind(ovs, &links.ovs_port)
        .await
        .map_err(NetworkError::from)?;
    links::create(&links, netns, addressing).await?;
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

/// Unbinds the OVS port and removes the interfaces. Idempotent.
pub async fn detach(ovs: &ovsdb::Client, links: &PodLinks) -> Result<(), NetworkError> {
    pod_port::unbind(ovs, &links.ovs_port).await?;
    links::delete(links).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_fit_an_interface_name_and_follow_the_container() {
        let links = PodLinks::for_container("3f1c2a9b8d7e6f5a4b3c2d1e0f");
        assert_eq!(links.host_veth, "3f1c2a9b8d7e_h");
        assert_eq!(links.ovs_port, "3f1c2a9b8d7e_o");
        assert_eq!(links.ovs_peer, "3f1c2a9b8d7e_p");
        for name in [links.host_veth, links.ovs_port, links.ovs_peer] {
            assert!(name.len() <= 15, "{name}");
        }
    }
}
