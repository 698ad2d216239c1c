//! Running a tool, optionally inside a network namespace, with a bounded run time and an error
//! that carries its stderr.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::error::{Result, SandboxError};

/// Commands that do not say otherwise get this long before they are killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A command line to run on the host or inside a network namespace.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: String,
    args: Vec<String>,
    netns: Option<String>,
    /// Enter only the network namespace (nsenter), keeping the host's mounts (bpffs).
    net_only: bool,
    env: Vec<(String, String)>,
    timeout: Duration,
}

impl Cmd {
    pub fn new(program: impl Into<String>) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            netns: None,
            net_only: false,
            env: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Cmd {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Runs the command inside the named network namespace (`ip netns exec`, which also gives
    /// it a /sys of that namespace; the daemons read interface attributes from there).
    pub fn netns(mut self, netns: impl Into<String>) -> Cmd {
        self.netns = Some(netns.into());
        self
    }

    /// Runs the command in the named network namespace but the host's mount namespace
    /// (`nsenter --net`): for processes that pin BPF objects, which must land on the host's
    /// bpffs (`ip netns exec` mounts a fresh /sys, hiding it).
    pub fn netns_keep_mounts(mut self, netns: impl Into<String>) -> Cmd {
        self.netns = Some(netns.into());
        self.net_only = true;
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Cmd {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Cmd {
        self.timeout = timeout;
        self
    }

    /// The command line as a person would type it.
    pub fn display(&self) -> String {
        let mut parts = Vec::new();
        match &self.netns {
            Some(ns) if self.net_only => {
                parts.push(format!("nsenter --net={}/{ns} --", crate::netns::NETNS_DIR))
            }
            Some(ns) => parts.push(format!("ip netns exec {ns}")),
            None => {}
        }
        parts.push(self.program.clone());
        parts.extend(self.args.iter().map(|a| {
            if a.contains(' ') || a.is_empty() {
                format!("'{a}'")
            } else {
                a.clone()
            }
        }));
        parts.join(" ")
    }

    /// The `std::process::Command` this describes (stdio left to the caller).
    pub fn to_command(&self) -> Command {
        let mut command = match &self.netns {
            Some(ns) if self.net_only => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}/{ns}", crate::netns::NETNS_DIR))
                    .arg("--")
                    .arg(&self.program);
                c
            }
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns.as_str(), self.program.as_str()]);
                c
            }
            None => Command::new(&self.program),
        };
        command.args(&self.args);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command
    }

    /// Runs to completion and returns stdout; a non-zero exit is an error carrying stderr.
    pub fn run(&self) -> Result<String> {
        let output = self.output()?;
        if output.success {
            Ok(output.stdout)
        } else {
            Err(SandboxError::Command {
                command: self.display(),
                status: output.status,
                stderr: if output.stderr.trim().is_empty() {
                    output.stdout.trim().to_owned()
                } else {
                    output.stderr.trim().to_owned()
                },
            })
        }
    }

    /// Runs to completion; `Ok(true)` when it exited 0.
    pub fn succeeds(&self) -> Result<bool> {
        Ok(self.output()?.success)
    }

    /// Runs to completion within the timeout and returns everything it printed.
    pub fn output(&self) -> Result<Output> {
        let mut child = self
            .to_command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| SandboxError::Spawn {
                command: self.display(),
                source,
            })?;
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        std::thread::spawn(move || {
            // Read stderr on its own thread so neither pipe can fill up and block the child.
            let err_reader = std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(s) = stderr.as_mut() {
                    let _ = s.read_to_end(&mut buf);
                }
                buf
            });
            let mut out = Vec::new();
            if let Some(s) = stdout.as_mut() {
                let _ = s.read_to_end(&mut out);
            }
            let err = err_reader.join().unwrap_or_default();
            let status = child.wait();
            let _ = tx.send((status, out, err));
        });
        let (status, out, err) = match rx.recv_timeout(self.timeout) {
            Ok(result) => result,
            Err(_) => {
                kill_pid(pid);
                return Err(SandboxError::CommandTimeout {
                    command: self.display(),
                    timeout: self.timeout,
                });
            }
        };
        let status = status.map_err(|source| SandboxError::Spawn {
            command: self.display(),
            source,
        })?;
        Ok(Output {
            success: status.success(),
            status: status.to_string(),
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
        })
    }
}

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Output {
    pub success: bool,
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

pub(crate) fn kill_pid(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
