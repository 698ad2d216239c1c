//! The one OVS conntrack setting the fast path depends on.
//!
//! The fast path carries an established TCP connection's segments past OVS, so OVS's
//! conntrack sees the handshake and the close but not the sequence numbers in between. With
//! sequence checking on, the first segment that comes back to OVS — the FIN, or any segment
//! after a policy change sent the flow back to OVS — lies outside the window conntrack last
//! saw; conntrack calls it invalid, and OVN drops `ct.inv` on every switch with a load balancer
//! or a stateful ACL. The connection then stalls, or never closes. So the agent makes OVS's
//! conntrack liberal about TCP windows (it still tracks every connection's state), as
//! eBPF datapaths that bypass the kernel's conntrack do with `nf_conntrack_tcp_be_liberal`:
//! `dpctl/ct-disable-tcp-seq-chk` for the userspace datapath, the sysctl for the kernel one.
//! ovs-vswitchd forgets the setting when it restarts, so the agent keeps re-applying it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ovsdb::{Connection, ConnectionOptions, Remote};
use serde_json::json;

use super::OvsError;

/// The kernel's switch for liberal TCP window tracking (per network namespace).
const KERNEL_BE_LIBERAL: &str = "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal";

/// Where a node's OVS conntrack lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OvsDatapath {
    /// `datapath_type=netdev`: ovs-vswitchd's own conntrack.
    Userspace,
    /// The openvswitch kernel module: the kernel's nf_conntrack.
    Kernel,
}

impl OvsDatapath {
    /// From a Bridge row's `datapath_type` ("" and "system" are the kernel's).
    pub fn of_bridge(datapath_type: &str) -> OvsDatapath {
        if datapath_type == "netdev" {
            OvsDatapath::Userspace
        } else {
            OvsDatapath::Kernel
        }
    }
}

/// ovs-vswitchd's control socket in OVS's run directory: `ovs-vswitchd.ctl` when it was
/// started with that name, otherwise `ovs-vswitchd.<pid>.ctl` as ovs-ctl starts it.
pub fn vswitchd_control_socket(ovs_rundir: &Path) -> Result<PathBuf, OvsError> {
    let fixed = ovs_rundir.join("ovs-vswitchd.ctl");
    if fixed.exists() {
        return Ok(fixed);
    }
    let pidfile = ovs_rundir.join("ovs-vswitchd.pid");
    let pid = std::fs::read_to_string(&pidfile).map_err(|e| {
        OvsError::Vswitchd(format!(
            "ovs-vswitchd's control socket: no {} and no readable {} ({e}); is ovs-vswitchd running?",
            fixed.display(),
            pidfile.display()
        ))
    })?;
    Ok(ovs_rundir.join(format!("ovs-vswitchd.{}.ctl", pid.trim())))
}

/// OVS's run directory from the node's OVSDB remote (`unix:/var/run/openvswitch/db.sock`).
pub fn rundir_of(ovs_db: &str) -> Option<PathBuf> {
    Path::new(ovs_db.strip_prefix("unix:")?)
        .parent()
        .map(Path::to_path_buf)
}

/// Makes OVS's conntrack liberal about TCP windows. Idempotent.
pub async fn relax_tcp_window(ovs_rundir: &Path, datapath: OvsDatapath) -> Result<(), OvsError> {
    match datapath {
        OvsDatapath::Kernel => {
            std::fs::write(KERNEL_BE_LIBERAL, "1").map_err(|source| OvsError::Sysctl {
                what: format!("{KERNEL_BE_LIBERAL} (is nf_conntrack loaded?)"),
                source,
            })
        }
        OvsDatapath::Userspace => {
            let socket = vswitchd_control_socket(ovs_rundir)?;
            let failed = |e: ovsdb::Error| {
                OvsError::Vswitchd(format!(
                    "ovs-vswitchd at {}: dpctl/ct-disable-tcp-seq-chk: {e}",
                    socket.display()
                ))
            };
            let options = ConnectionOptions {
                inactivity_probe: None,
                request_timeout: Some(Duration::from_secs(5)),
                connect_timeout: Duration::from_secs(5),
                ..ConnectionOptions::default()
            };
            let (vswitchd, _) = Connection::connect(&Remote::Unix(socket.clone()), options)
                .await
                .map_err(failed)?;
            vswitchd
                .call("dpctl/ct-disable-tcp-seq-chk", json!([]))
                .await
                .map_err(failed)?;
            Ok(())
        }
    }
}

/// Keeps the setting applied for the life of the agent: at once, then every `every` (an
/// ovs-vswitchd restart resets it). `datapath` says which conntrack to relax; `None` while
/// the bridge it is read from does not exist yet.
pub async fn keep_relaxed(
    ovs_rundir: PathBuf,
    mut datapath: impl FnMut() -> Option<OvsDatapath>,
    every: Duration,
) {
    let mut last_error = None;
    let mut applied = false;
    loop {
        if let Some(kind) = datapath() {
            match relax_tcp_window(&ovs_rundir, kind).await {
                Ok(()) => {
                    if !applied {
                        tracing::info!(datapath = ?kind, "OVS conntrack: TCP window checks off for fast-pathed connections");
                    }
                    applied = true;
                    last_error = None;
                }
                Err(e) => {
                    let message = e.to_string();
                    if last_error.as_ref() != Some(&message) {
                        tracing::warn!(error = %message, "OVS conntrack still checks TCP windows: fast-pathed connections may stall when they fall back to OVS; retrying");
                    }
                    applied = false;
                    last_error = Some(message);
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Keeps OVS's conntrack relaxed while the agent runs, for the datapath `bridge` uses (read
/// from the node's client). Does nothing, loudly, when the database is not a local socket (no
/// way to find ovs-vswitchd).
pub fn spawn(client: ovsdb::Client, ovs_db: &str, bridge: String) {
    let Some(rundir) = rundir_of(ovs_db) else {
        tracing::warn!(
            %ovs_db,
            "not a unix socket: cannot find ovs-vswitchd to relax its conntrack's TCP window checks"
        );
        return;
    };
    tokio::spawn(keep_relaxed(
        rundir,
        move || {
            client.read(|cache| {
                let row = super::by_name::<ovsdb::models::open_vswitch::Bridge>(cache, &bridge)?;
                Some(OvsDatapath::of_bridge(&row.datapath_type))
            })
        },
        Duration::from_secs(10),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_directory_comes_from_a_unix_remote_only() {
        assert_eq!(
            rundir_of("unix:/var/run/openvswitch/db.sock"),
            Some(PathBuf::from("/var/run/openvswitch"))
        );
        assert_eq!(rundir_of("tcp:127.0.0.1:6640"), None);
    }

    #[test]
    fn the_control_socket_is_found_by_name_or_by_pid() {
        let dir = std::env::temp_dir().join(format!("kovn-ctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(vswitchd_control_socket(&dir).is_err(), "nothing there");
        std::fs::write(dir.join("ovs-vswitchd.pid"), "4242\n").unwrap();
        assert_eq!(
            vswitchd_control_socket(&dir).unwrap(),
            dir.join("ovs-vswitchd.4242.ctl")
        );
        std::fs::write(dir.join("ovs-vswitchd.ctl"), "").unwrap();
        assert_eq!(
            vswitchd_control_socket(&dir).unwrap(),
            dir.join("ovs-vswitchd.ctl")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
