//! The OVS and OVN command-line clients bound to one sandbox database. (Test fixture only:
//! product code speaks OVSDB through the `ovsdb` crate.)

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cmd::Cmd;
use crate::error::{Result, SandboxError};

/// Per-call timeout handed to the ctl tools (they otherwise wait forever for a dead server).
const CTL_TIMEOUT_S: u32 = 30;

/// `ovs-vsctl` / `ovn-nbctl` / `ovn-sbctl` against one database socket.
#[derive(Debug, Clone)]
pub struct Ctl {
    tool: &'static str,
    db: String,
}

impl Ctl {
    pub fn vsctl(socket: &Path) -> Ctl {
        Ctl {
            tool: "ovs-vsctl",
            db: format!("unix:{}", socket.display()),
        }
    }

    pub fn nbctl(socket: &Path) -> Ctl {
        Ctl {
            tool: "ovn-nbctl",
            db: format!("unix:{}", socket.display()),
        }
    }

    pub fn sbctl(socket: &Path) -> Ctl {
        Ctl {
            tool: "ovn-sbctl",
            db: format!("unix:{}", socket.display()),
        }
    }

    /// The command with `--db` and a timeout; add arguments and run it.
    pub fn cmd(&self) -> Cmd {
        Cmd::new(self.tool)
            .arg(format!("--db={}", self.db))
            .arg(format!("--timeout={CTL_TIMEOUT_S}"))
            .timeout(Duration::from_secs(u64::from(CTL_TIMEOUT_S) + 5))
    }

    pub fn run<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cmd().args(args).run()
    }
}

/// Creates an empty database file from a schema.
pub fn create_db(db: &Path, schema: &str) -> Result<()> {
    Cmd::new("ovsdb-tool")
        .arg("create")
        .arg(db.display().to_string())
        .arg(schema)
        .run()?;
    Ok(())
}

/// Waits until `path` exists (a daemon's socket).
pub fn wait_for_path(path: &Path, timeout: Duration) -> Result<()> {
    wait_until(&format!("{} to appear", path.display()), timeout, || {
        Ok(path.exists())
    })
}

/// Polls `check` every 50 ms until it returns true, fails, or `timeout` passes.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(SandboxError::Timeout {
                what: what.to_owned(),
                timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Paths of one ovsdb-server instance.
#[derive(Debug, Clone)]
pub struct DbServer {
    pub db: PathBuf,
    pub socket: PathBuf,
    pub ctl: PathBuf,
    pub pidfile: PathBuf,
    pub log: PathBuf,
}

impl DbServer {
    pub fn new(dir: &Path, name: &str) -> DbServer {
        DbServer {
            db: dir.join(format!("{name}.db")),
            socket: dir.join(format!("{name}.sock")),
            ctl: dir.join(format!("{name}.ctl")),
            pidfile: dir.join(format!("{name}.pid")),
            log: dir.join(format!("{name}.log")),
        }
    }

    /// The `ovsdb-server` command line serving this database on its socket and `extra_remotes`.
    pub fn command(&self, extra_remotes: &[String]) -> Cmd {
        let mut cmd = Cmd::new("ovsdb-server")
            .arg(self.db.display().to_string())
            .arg(format!("--remote=punix:{}", self.socket.display()))
            .arg(format!("--unixctl={}", self.ctl.display()))
            .arg(format!("--pidfile={}", self.pidfile.display()))
            .arg(format!("--log-file={}", self.log.display()))
            .arg("--no-chdir");
        for remote in extra_remotes {
            cmd = cmd.arg(format!("--remote={remote}"));
        }
        cmd
    }
}
