//! OVN central: the Northbound and Southbound databases and ovn-northd, in their own namespace.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Result, io_error};
use crate::ovs::{Ctl, DbServer, create_db, wait_for_path};
use crate::supervisor::Supervisor;

pub const NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";
pub const SB_SCHEMA: &str = "/usr/share/ovn/ovn-sb.ovsschema";
/// The production ports (Kube-OVN's ovn-central listens on these).
pub const NB_PORT: u16 = 6641;
pub const SB_PORT: u16 = 6642;

/// A running OVN central.
#[derive(Debug, Clone)]
pub struct Central {
    pub netns: String,
    pub dir: PathBuf,
    /// Its address on the fabric.
    pub address: String,
    pub nb: DbServer,
    pub sb: DbServer,
}

impl Central {
    /// Starts NB and SB (unix socket + TCP on the fabric) and ovn-northd inside `netns`.
    pub(crate) fn start(
        supervisor: &mut Supervisor,
        netns: &str,
        dir: &Path,
        address: &str,
    ) -> Result<Central> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let nb = DbServer::new(dir, "ovnnb_db");
        let sb = DbServer::new(dir, "ovnsb_db");
        create_db(&nb.db, NB_SCHEMA)?;
        create_db(&sb.db, SB_SCHEMA)?;
        for (name, server, port) in [("ovnnb_db", &nb, NB_PORT), ("ovnsb_db", &sb, SB_PORT)] {
            let cmd = server
                .command(&[format!("ptcp:{port}:0.0.0.0")])
                .netns(netns);
            supervisor.spawn(name, &cmd, dir, Some(server.log.clone()))?;
        }
        wait_for_path(&nb.socket, Duration::from_secs(10))?;
        wait_for_path(&sb.socket, Duration::from_secs(10))?;
        Ctl::nbctl(&nb.socket).run(["--no-wait", "init"])?;
        Ctl::sbctl(&sb.socket).run(["init"])?;

        let northd_log = dir.join("ovn-northd.log");
        let northd = crate::cmd::Cmd::new("ovn-northd")
            .arg(format!("--ovnnb-db=unix:{}", nb.socket.display()))
            .arg(format!("--ovnsb-db=unix:{}", sb.socket.display()))
            .arg(format!(
                "--pidfile={}",
                dir.join("ovn-northd.pid").display()
            ))
            .arg(format!("--log-file={}", northd_log.display()))
            .arg(format!(
                "--unixctl={}",
                dir.join("ovn-northd.ctl").display()
            ))
            .arg("--no-chdir")
            .env("OVN_RUNDIR", dir.display().to_string())
            .netns(netns);
        supervisor.spawn("ovn-northd", &northd, dir, Some(northd_log))?;
        Ok(Central {
            netns: netns.to_owned(),
            dir: dir.to_owned(),
            address: address.to_owned(),
            nb,
            sb,
        })
    }

    /// `ovn-nbctl` bound to this Northbound database.
    pub fn nbctl(&self) -> Ctl {
        Ctl::nbctl(&self.nb.socket)
    }

    /// `ovn-sbctl` bound to this Southbound database.
    pub fn sbctl(&self) -> Ctl {
        Ctl::sbctl(&self.sb.socket)
    }

    /// Where nodes reach the Southbound database.
    pub fn sb_remote(&self) -> String {
        format!("tcp:{}:{SB_PORT}", self.address)
    }

    /// Where a controller reaches the Northbound database over the fabric.
    pub fn nb_remote(&self) -> String {
        format!("tcp:{}:{NB_PORT}", self.address)
    }
}
