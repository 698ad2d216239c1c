//! The rtnetlink helpers the pod's interfaces (`pod_network`) and the node's own attachment
//! (`node_setup`) share: a handle in the calling thread's namespace, link lookup, and errors
//! that say what was being done.

use futures::TryStreamExt;
use rtnetlink::Handle;

use crate::pod_network::NetworkError;

pub(crate) fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let what = what.into();
    move |source| NetworkError::Netlink { what, source }
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetworkError {
    let what = what.into();
    move |source| NetworkError::Io { what, source }
}

/// A netlink handle in the calling thread's namespace (its connection runs on the current
/// runtime until the handle's last clone is dropped).
pub(crate) fn connect() -> Result<Handle, NetworkError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(io("netlink socket"))?;
    tokio::spawn(connection);
    Ok(handle)
}

/// The index of `name`, or None when there is no such link.
pub(crate) async fn index_of(handle: &Handle, name: &str) -> Result<Option<u32>, NetworkError> {
    match handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
    {
        Ok(Some(link)) => Ok(Some(link.header.index)),
        Ok(None) => Ok(None),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(netlink(format!("looking up {name}"))(e)),
    }
}
