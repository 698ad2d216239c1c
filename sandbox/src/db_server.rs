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
}

impl StandaloneDb {
    /// Creates a database from `schema` (a path to an .ovsschema file) and serves it.
    pub fn start(schema: &str) -> Result<StandaloneDb> {
        registry::cleanup_stale()?;
        let registration = registry::register()?;
        let server = DbServer::new(&registration.dir, "db");
        create_db(&server.db, schema)?;
        let mut db = StandaloneDb {
            registration,
            supervisor: Supervisor::default(),
            server,
        };
        db.spawn()?;
        Ok(db)
    }

    fn spawn(&mut self) -> Result<()> {
        let _ = std::fs::remove_file(&self.server.socket);
        self.supervisor.spawn(
            SERVER,
            &self.server.command(&[]),
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

impl Drop for StandaloneDb {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        if failing {
            eprintln!(
                "\n==== ovsdb-server test database (kept in {}) ====\n{}",
                self.registration.dir.display(),
                self.supervisor.log_tails(30)
            );
        }
        self.supervisor.stop_all(Duration::from_secs(3));
        registry::release(&self.registration, failing);
    }
}
