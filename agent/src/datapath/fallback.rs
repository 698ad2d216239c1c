//! The split port without eBPF. When the datapath cannot load (verifier rejection, old
//! kernel) the node must still work, on OVS: the kernel's `mirred` action redirects everything
//! the pod sends into its OVS port pair, and everything OVS delivers into the pod. Slower, never
//! disconnected.

use aya::programs::tc;

use super::{DatapathError, PodInterfaces};

/// `ETH_P_ALL` in the byte order tc expects in `tcm_info`.
const ETH_P_ALL_BE: u16 = 0x0003u16.to_be();

fn ifindex(name: &str) -> Result<u32, DatapathError> {
    nix::net::if_::if_nametoindex(name).map_err(|e| DatapathError::Interface {
        interface: name.to_owned(),
        source: e.into(),
    })
}

/// Installs the kernel hand-off for `pod` (in the calling thread's network namespace).
pub async fn install_kernel_handoff(pod: &PodInterfaces) -> Result<(), DatapathError> {
    let host = ifindex(&pod.host_veth)?;
    let peer = ifindex(&pod.ovs_peer)?;
    let netlink_error = |interface: &str, e: rtnetlink::Error| DatapathError::Interface {
        interface: interface.to_owned(),
        source: std::io::Error::other(format!("installing the kernel hand-off: {e}")),
    };
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|e| DatapathError::Interface {
            interface: pod.host_veth.clone(),
            source: e,
        })?;
    let connection = tokio::spawn(connection);
    for (from, from_index, to_index) in [(&pod.host_veth, host, peer), (&pod.ovs_peer, peer, host)]
    {
        // EEXIST is fine: the qdisc may be there from an earlier attach.
        let _ = tc::qdisc_add_clsact(from);
        handle
            .traffic_filter(from_index as i32)
            .add()
            .ingress()
            .priority(1)
            .protocol(ETH_P_ALL_BE)
            .redirect(to_index)
            .map_err(|e| netlink_error(from, e))?
            .execute()
            .await
            .map_err(|e| netlink_error(from, e))?;
    }
    connection.abort();
    Ok(())
}
