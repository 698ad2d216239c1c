//! A standalone ovsdb-server for database-client tests: one database from a schema, served on
//! a unix socket in the host namespace (no root needed), restartable with its data.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cmd::Cmd;
use crate::error::Result;
use crate::ovs::{DbServer, create_db, wait_for_path};
use crate::registry::{self, Registration};
use crate::supervisor::Supervisor;

const SERVER: &str = "ovsdb-server";

/// A running standalone database server; stopped and removed on drop.
#[derive(Debug)]
pub struct StandaloneDb {
    registration: Registration,
    supervisor: Supervisor,
    server: DbServer,
    /// Loopback TCP port, if the server also listens on TCP.
    tcp_port: Option<u16>,
    /// The server's key, certificate and CA: the TCP port speaks SSL (`pssl:`).
    ssl: Option<ServerSsl>,
}

/// ovsdb-server's `--private-key`, `--certificate` and `--ca-cert` (the CA it checks clients'
/// certificates against).
#[derive(Debug, Clone)]
pub struct ServerSsl {
    pub private_key: PathBuf,
    pub certificate: PathBuf,
    pub ca_cert: PathBuf,
}

impl StandaloneDb {
    /// Creates a database from `schema` (a path to an .ovsschema file) and serves it.
    pub fn start(schema: &str) -> Result<StandaloneDb> {
        StandaloneDb::start_inner(schema, false, None)
    }

    /// Like [`Self::start`], and also listening on a free TCP port on 127.0.0.1.
    pub fn start_with_tcp(schema: &str) -> Result<StandaloneDb> {
        StandaloneDb::start_inner(schema, true, None)
    }

    /// Like [`Self::start`], and also listening with SSL on a free port on 127.0.0.1
    /// ([`Self::ssl_remote`]).
    pub fn start_with_ssl(schema: &str, ssl: ServerSsl) -> Result<StandaloneDb> {
        StandaloneDb::start_inner(schema, true, Some(ssl))
    }

    fn start_inner(schema: &str, tcp: bool, ssl: Option<ServerSsl>) -> Result<StandaloneDb> {
        registry::cleanup_stale()?;
        let registration = registry::register()?;
        let server = DbServer::new(&registration.dir, "db");
        create_db(&server.db, schema)?;
        let tcp_port = if tcp {
            // Ask the kernel for a free port, then hand it to the server (a small window in
            // which another process could take it; acceptable for a test fixture).
            let listener = std::net::TcpListener::bind("127.0.0.1:0")
                .map_err(crate::error::io_error("127.0.0.1:0"))?;
            let port = listener
                .local_addr()
                .map_err(crate::error::io_error("127.0.0.1:0"))?
                .port();
            Some(port)
        } else {
            None
        };
        let mut db = StandaloneDb {
            registration,
            supervisor: Supervisor::default(),
            server,
            tcp_port,
            ssl,
        };
        db.spawn()?;
        Ok(db)
    }

    fn spawn(&mut self) -> Result<()> {
        let _ = std::fs::remove_file(&self.server.socket);
        let scheme = if self.ssl.is_some() { "pssl" } else { "ptcp" };
        let remotes: Vec<String> = self
            .tcp_port
            .map(|p| format!("{scheme}:{p}:127.0.0.1"))
            .into_iter()
            .collect();
        let mut command = self.server.command(&remotes);
        if let Some(ssl) = &self.ssl {
            command = command
                .arg(format!("--private-key={}", ssl.private_key.display()))
                .arg(format!("--certificate={}", ssl.certificate.display()))
                .arg(format!("--ca-cert={}", ssl.ca_cert.display()));
        }
        self.supervisor.spawn(
            SERVER,
            &command,
            &self.registration.dir,
            Some(self.server.log.clone()),
        )?;
        wait_for_path(&self.server.socket, Duration::from_secs(10))
    }

    /// The unix socket the server listens on.
    pub fn socket(&self) -> &Path {
        &self.server.socket
    }

    /// `unix:<socket>`.
    pub fn remote(&self) -> String {
        format!("unix:{}", self.server.socket.display())
    }

    /// `tcp:127.0.0.1:<port>`, if the server listens on plain TCP.
    pub fn tcp_remote(&self) -> Option<String> {
        self.tcp_port
            .filter(|_| self.ssl.is_none())
            .map(|p| format!("tcp:127.0.0.1:{p}"))
    }

    /// `ssl:127.0.0.1:<port>`, if the server listens with SSL.
    pub fn ssl_remote(&self) -> Option<String> {
        self.tcp_port
            .filter(|_| self.ssl.is_some())
            .map(|p| format!("ssl:127.0.0.1:{p}"))
    }

    /// The database file.
    pub fn file(&self) -> &Path {
        &self.server.db
    }

    /// Stops the server (SIGKILL when `crash`, else a clean stop) and starts it again on the
    /// same file and socket.
    pub fn restart(&mut self, crash: bool) -> Result<()> {
        self.stop(crash);
        self.spawn()
    }

    /// Stops the server; [`Self::start_again`] brings it back.
    pub fn stop(&mut self, crash: bool) {
        self.supervisor.stop(SERVER, Duration::from_secs(3), crash);
    }

    pub fn start_again(&mut self) -> Result<()> {
        self.spawn()
    }

    /// `ovsdb-client dump` of the database, for comparisons.
    pub fn dump(&self, format: &str) -> Result<String> {
        Cmd::new("ovsdb-client")
            .args(["dump", &format!("--format={format}"), &self.remote()])
            .run()
    }

    pub fn dir(&self) -> PathBuf {
        self.registration.dir.clone()
    }
}

/// Stops the servers and removes their directory; a failing test gets their logs printed and
/// the directory kept.
fn finish(what: &str, registration: &Registration, supervisor: &mut Supervisor) {
    let failing = std::thread::panicking();
    if failing {
        eprintln!(
            "\n==== {what} (kept in {}) ====\n{}",
            registration.dir.display(),
            supervisor.log_tails(30)
        );
    }
    supervisor.stop_all(Duration::from_secs(3));
    registry::release(registration, failing);
}

impl Drop for StandaloneDb {
    fn drop(&mut self) {
        finish(
            "ovsdb-server test database",
            &self.registration,
            &mut self.supervisor,
        );
    }
}

/// A Raft cluster of ovsdb-servers for one database, talking Raft over unix sockets (so
/// parallel tests need no port allocation). Stopped and removed on drop.
#[derive(Debug)]
pub struct RaftCluster {
    registration: Registration,
    supervisor: Supervisor,
    database: String,
    members: Vec<DbServer>,
}

impl RaftCluster {
    /// Creates a cluster of `size` members for the database of `schema` (named `database`)
    /// and waits until every member has joined and a leader is elected.
    pub fn start(schema: &str, database: &str, size: usize) -> Result<RaftCluster> {
        registry::cleanup_stale()?;
        let registration = registry::register()?;
        let dir = registration.dir.clone();
        let members: Vec<DbServer> = (1..=size)
            .map(|i| DbServer::new(&dir, &format!("m{i}")))
            .collect();
        let raft = |i: usize| format!("unix:{}", dir.join(format!("m{}.raft", i + 1)).display());
        Cmd::new("ovsdb-tool")
            .arg("create-cluster")
            .arg(members[0].db.display().to_string())
            .arg(schema)
            .arg(raft(0))
            .run()?;
        for (i, member) in members.iter().enumerate().skip(1) {
            Cmd::new("ovsdb-tool")
                .arg("join-cluster")
                .arg(member.db.display().to_string())
                .arg(database)
                .arg(raft(i))
                .arg(raft(0))
                .run()?;
        }
        let mut cluster = RaftCluster {
            registration,
            supervisor: Supervisor::default(),
            database: database.to_owned(),
            members,
        };
        for i in 0..size {
            cluster.start_member(i)?;
        }
        crate::ovs::wait_until(
            "every member to join the cluster",
            Duration::from_secs(30),
            || {
                Ok((0..size).all(|i| {
                    cluster
                        .status(i)
                        .is_ok_and(|s| s.contains("Status: cluster member"))
                }) && cluster.leader().is_some())
            },
        )?;
        Ok(cluster)
    }

    fn name(i: usize) -> String {
        format!("ovsdb-server-m{}", i + 1)
    }

    /// Starts (or restarts) member `i` on its existing database file.
    pub fn start_member(&mut self, i: usize) -> Result<()> {
        let member = self.members[i].clone();
        let _ = std::fs::remove_file(&member.socket);
        self.supervisor.spawn(
            &Self::name(i),
            &member.command(&[]),
            &self.registration.dir,
            Some(member.log.clone()),
        )?;
        wait_for_path(&member.socket, Duration::from_secs(10))
    }

    /// Kills member `i` (SIGKILL, as a crash).
    pub fn kill_member(&mut self, i: usize) {
        self.supervisor
            .stop(&Self::name(i), Duration::from_secs(3), true);
    }

    /// `cluster/status` of member `i`.
    pub fn status(&self, i: usize) -> Result<String> {
        Cmd::new("ovs-appctl")
            .arg(format!("--target={}", self.members[i].ctl.display()))
            .args(["cluster/status", &self.database])
            .timeout(Duration::from_secs(5))
            .run()
    }

    /// The member that is leader now, if any (members that are down are skipped).
    pub fn leader(&self) -> Option<usize> {
        (0..self.members.len()).find(|&i| {
            self.status(i)
                .is_ok_and(|s| s.lines().any(|l| l.trim() == "Role: leader"))
        })
    }

    /// `unix:<socket>` of every member, in member order.
    pub fn remotes(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("unix:{}", m.socket.display()))
            .collect()
    }

    /// `ovsdb-client dump` of the database through member `i`.
    pub fn dump(&self, i: usize, format: &str) -> Result<String> {
        Cmd::new("ovsdb-client")
            .args(["dump", &format!("--format={format}")])
            .arg(format!("unix:{}", self.members[i].socket.display()))
            .arg(&self.database)
            .run()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

impl Drop for RaftCluster {
    fn drop(&mut self) {
        finish(
            "ovsdb Raft cluster",
            &self.registration,
            &mut self.supervisor,
        );
    }
}
