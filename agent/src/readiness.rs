//! What the agent's `/readyz` answers, for the DaemonSet's readiness probe: ready once the
//! datapath is settled (the eBPF datapath loaded, or the node announced on OVS only), node
//! setup has put ovn0 and the node's routes in place for the Subnets it listed, and the CNI
//! socket accepts connections. `/healthz` stays "the process serves".

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How the node forwards pods' packets, once decided at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatapathMode {
    /// kovn's eBPF datapath is loaded.
    Ebpf,
    /// The datapath did not load (or is switched off): OVS alone, as announced in the log and
    /// in `kovn_datapath_loaded 0`.
    OvsOnly,
}

impl DatapathMode {
    fn as_str(self) -> &'static str {
        match self {
            DatapathMode::Ebpf => "eBPF datapath loaded",
            DatapathMode::OvsOnly => "OVS only (the eBPF datapath did not load)",
        }
    }
}

/// The three conditions, each set once by the part of the agent that owns it.
#[derive(Debug, Default)]
pub struct Readiness {
    datapath: Mutex<Option<DatapathMode>>,
    node_setup: AtomicBool,
    cni_socket: Mutex<Option<PathBuf>>,
}

impl Readiness {
    pub fn datapath_settled(&self, mode: DatapathMode) {
        *self.datapath.lock().unwrap_or_else(|e| e.into_inner()) = Some(mode);
    }

    /// ovn0 is up and the routes for every listed Subnet are in place.
    pub fn node_setup_done(&self) {
        self.node_setup.store(true, Ordering::Relaxed);
    }

    /// The CNI server listens on `socket`.
    pub fn cni_serving(&self, socket: PathBuf) {
        *self.cni_socket.lock().unwrap_or_else(|e| e.into_inner()) = Some(socket);
    }

    /// Ok with what the node runs, or every condition still missing.
    pub async fn check(&self) -> Result<String, Vec<String>> {
        let mut missing = Vec::new();
        let mode = *self.datapath.lock().unwrap_or_else(|e| e.into_inner());
        if mode.is_none() {
            missing.push("datapath: not settled (loading the eBPF datapath)".to_owned());
        }
        if !self.node_setup.load(Ordering::Relaxed) {
            missing.push(
                "node setup: ovn0 and the node's routes not in place yet (waiting for the node's join port from kovn-controller, or for ovs-vswitchd)"
                    .to_owned(),
            );
        }
        let socket = self
            .cni_socket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match socket {
            None => missing.push("CNI: not serving yet".to_owned()),
            Some(path) => {
                let connect = tokio::net::UnixStream::connect(&path);
                match tokio::time::timeout(Duration::from_secs(1), connect).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        missing.push(format!("CNI: {} refuses connections: {e}", path.display()))
                    }
                    Err(_) => missing.push(format!(
                        "CNI: {} does not answer within 1 s",
                        path.display()
                    )),
                }
            }
        }
        match (missing.is_empty(), mode) {
            (true, Some(mode)) => Ok(mode.as_str().to_owned()),
            _ => Err(missing),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_only_with_all_three_and_a_socket_that_answers() {
        let readiness = Readiness::default();
        let missing = readiness.check().await.unwrap_err();
        assert_eq!(missing.len(), 3, "{missing:?}");
        readiness.datapath_settled(DatapathMode::OvsOnly);
        readiness.node_setup_done();
        let dir = std::env::temp_dir().join(format!("kovn-readiness-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("cni.sock");
        readiness.cni_serving(socket.clone());
        // Nothing listens there: not ready, and it says why.
        let missing = readiness.check().await.unwrap_err();
        assert!(missing[0].contains("refuses connections"), "{missing:?}");
        let _listener = tokio::net::UnixListener::bind(&socket).unwrap();
        assert_eq!(
            readiness.check().await,
            Ok("OVS only (the eBPF datapath did not load)".to_owned())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
