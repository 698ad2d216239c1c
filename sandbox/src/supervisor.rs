//! Long-running processes of a sandbox: started in the foreground (never `--detach`), so the
//! sandbox owns their pids, sees them die, and keeps what they printed.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cmd::Cmd;
use crate::error::{Result, SandboxError, io_error};

/// One supervised process.
#[derive(Debug)]
pub struct Daemon {
    pub name: String,
    pub command: String,
    /// Where its stdout and stderr go.
    pub output_log: PathBuf,
    /// Its own log file, if it writes one (`--log-file`).
    pub log_file: Option<PathBuf>,
    child: Child,
    spec: Cmd,
    log_dir: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last `lines` lines of its own log and of its output.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = format!(
            "---- {} (pid {}): {}\n",
            self.name,
            self.pid(),
            self.command
        );
        for path in self
            .log_file
            .iter()
            .chain(std::iter::once(&self.output_log))
        {
            out.push_str(&format!("---- {} ({})\n", self.name, path.display()));
            out.push_str(&tail(path, lines));
        }
        out
    }
}

/// The processes of one sandbox, in start order.
#[derive(Debug, Default)]
pub struct Supervisor {
    daemons: Vec<Daemon>,
}

impl Supervisor {
    /// Starts `cmd` with stdout and stderr appended to `<log_dir>/<name>.out`.
    pub fn spawn(
        &mut self,
        name: &str,
        cmd: &Cmd,
        log_dir: &Path,
        log_file: Option<PathBuf>,
    ) -> Result<u32> {
        let output_log = log_dir.join(format!("{name}.out"));
        let out = open_append(&output_log)?;
        let err = out.try_clone().map_err(io_error(&output_log))?;
        let child = cmd
            .to_command()
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| SandboxError::Spawn {
                command: cmd.display(),
                source,
            })?;
        let pid = child.id();
        self.daemons.push(Daemon {
            name: name.to_owned(),
            command: cmd.display(),
            output_log,
            log_file,
            child,
            spec: cmd.clone(),
            log_dir: log_dir.to_owned(),
        });
        Ok(pid)
    }

    pub fn daemons(&self) -> &[Daemon] {
        &self.daemons
    }

    /// An error naming the first daemon that has exited, with its last log lines.
    pub fn check(&mut self) -> Result<()> {
        for daemon in &mut self.daemons {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Err(SandboxError::DaemonDied {
                    name: daemon.name.clone(),
                    status: status.to_string(),
                    log_tail: daemon.log_tail(20),
                });
            }
        }
        Ok(())
    }

    /// Stops the daemon called `name` (SIGTERM, then SIGKILL after `grace`) and forgets it;
    /// `kill` sends SIGKILL at once, as a crash would.
    pub fn stop(&mut self, name: &str, grace: Duration, kill_now: bool) {
        let Some(index) = self.daemons.iter().position(|d| d.name == name) else {
            return;
        };
        let mut daemon = self.daemons.remove(index);
        if let Ok(pid) = i32::try_from(daemon.child.id()) {
            let signal = if kill_now {
                Signal::SIGKILL
            } else {
                Signal::SIGTERM
            };
            let _ = kill(Pid::from_raw(pid), signal);
        }
        let deadline = Instant::now() + grace;
        while matches!(daemon.child.try_wait(), Ok(None)) {
            if Instant::now() >= deadline {
                let _ = daemon.child.kill();
                let _ = daemon.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the daemon called `name` (SIGKILL when `crash`) and starts it again with the
    /// same command line.
    pub fn restart(&mut self, name: &str, crash: bool) -> Result<u32> {
        let Some(daemon) = self.daemons.iter().find(|d| d.name == name) else {
            return Err(crate::error::SandboxError::Invalid(format!(
                "no daemon {name}"
            )));
        };
        let (spec, log_dir, log_file) = (
            daemon.spec.clone(),
            daemon.log_dir.clone(),
            daemon.log_file.clone(),
        );
        self.stop(name, Duration::from_secs(3), crash);
        self.spawn(name, &spec, &log_dir, log_file)
    }

    /// Stops every daemon, newest first: SIGTERM, then SIGKILL after `grace`.
    pub fn stop_all(&mut self, grace: Duration) {
        for daemon in self.daemons.iter_mut().rev() {
            if let Ok(None) = daemon.child.try_wait()
                && let Ok(pid) = i32::try_from(daemon.child.id())
            {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        for daemon in self.daemons.iter_mut().rev() {
            loop {
                match daemon.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = daemon.child.kill();
                        let _ = daemon.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }

    /// The log tails of every daemon, for a failure report.
    pub fn log_tails(&self, lines: usize) -> String {
        self.daemons.iter().map(|d| d.log_tail(lines)).collect()
    }
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_error(path))
}

/// The last `lines` lines of a file ("(missing)" if it does not exist).
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            let mut out = all[start..].join("\n");
            out.push('\n');
            out
        }
        Err(_) => "(missing)\n".to_owned(),
    }
}
