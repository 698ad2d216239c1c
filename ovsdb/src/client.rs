//! The client a component uses: it keeps a monitored cache of the database, reconnects (to the
//! Raft leader when the database is clustered) with backoff, and resumes monitoring from the
//! last transaction it saw (`monitor_cond_since`), falling back to a full resync, so that no
//! update is lost and none is applied twice. Transactions are never retried: one in flight
//! when the connection drops fails with [`Error::Disconnected`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};
use uuid::Uuid;

use crate::cache::{Cache, Change, IndexSpec};
use crate::connection::{Connection, ConnectionOptions, Notification, Remote};
use crate::error::{Error, Result};
use crate::row::{Row, decode_columns};
use crate::schema::{DatabaseSchema, TableSchema};
use crate::transact::{Condition, Transaction, TransactionResult};

/// What to monitor of one table.
#[derive(Debug, Clone)]
pub struct MonitorRequest {
    pub table: String,
    /// `None`: every column.
    pub columns: Option<Vec<String>>,
    /// `None`: every row. Conditions need `monitor_cond` (OVS ≥ 2.6); a server that only
    /// speaks `monitor` is refused when conditions are set.
    pub conditions: Option<Vec<Condition>>,
}

impl MonitorRequest {
    pub fn table(table: &str) -> MonitorRequest {
        MonitorRequest {
            table: table.to_owned(),
            columns: None,
            conditions: None,
        }
    }

    pub fn columns(mut self, columns: &[&str]) -> MonitorRequest {
        self.columns = Some(columns.iter().map(|c| (*c).to_owned()).collect());
        self
    }

    pub fn conditions(mut self, conditions: Vec<Condition>) -> MonitorRequest {
        self.conditions = Some(conditions);
        self
    }
}

/// Hooks through which the agent and controller export the client's metrics.
pub trait ClientMetrics: Send + Sync + std::fmt::Debug {
    /// A transaction finished (successfully or not) after `latency`.
    fn transaction(&self, _latency: Duration, _ok: bool) {}
    /// A connection to `remote` was (re-)established.
    fn connected(&self, _remote: &str) {}
    /// The connection was lost.
    fn disconnected(&self, _reason: &str) {}
}

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Servers to try in order (`unix:PATH`, `tcp:HOST:PORT`); several for a Raft cluster.
    pub remotes: Vec<String>,
    pub database: String,
    pub monitor: Vec<MonitorRequest>,
    pub indexes: Vec<IndexSpec>,
    /// For a clustered database, connect only to the leader (writes then need no forwarding).
    pub leader_only: bool,
    pub connection: ConnectionOptions,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How long [`Client::connect`] and [`Client::transact`] wait for a connection.
    pub wait_for_connection: Duration,
    pub metrics: Option<Arc<dyn ClientMetrics>>,
}

impl ClientConfig {
    pub fn new(remotes: &[&str], database: &str) -> ClientConfig {
        ClientConfig {
            remotes: remotes.iter().map(|r| (*r).to_owned()).collect(),
            database: database.to_owned(),
            monitor: Vec::new(),
            indexes: Vec::new(),
            leader_only: true,
            connection: ConnectionOptions::default(),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            wait_for_connection: Duration::from_secs(30),
            metrics: None,
        }
    }

    /// The certificates for `ssl:` remotes (OVS's `--private-key`, `--certificate`,
    /// `--ca-cert`); read now, so a missing or bad file is an error before connecting.
    pub fn tls(mut self, files: &crate::tls::TlsFiles) -> Result<ClientConfig> {
        self.connection.tls = Some(crate::tls::client_config(files)?);
        Ok(self)
    }

    pub fn monitor(mut self, request: MonitorRequest) -> ClientConfig {
        self.monitor.push(request);
        self
    }

    pub fn index(mut self, index: IndexSpec) -> ClientConfig {
        self.indexes.push(index);
        self
    }
}

/// Counters of the client's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Connections established after the first.
    pub reconnects: u64,
    pub transactions: u64,
    pub transaction_errors: u64,
    /// Updates applied to the cache (row changes).
    pub row_changes: u64,
    /// Resyncs that resumed from the last transaction id (monitor_cond_since found it).
    pub resumed_resyncs: u64,
    /// Resyncs that reloaded the whole monitored contents.
    pub full_resyncs: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connects: AtomicU64,
    transactions: AtomicU64,
    transaction_errors: AtomicU64,
    row_changes: AtomicU64,
    resumed_resyncs: AtomicU64,
    full_resyncs: AtomicU64,
}

/// One row's update, in either protocol version.
enum RowUpdate<'a> {
    /// The whole row (`initial`, `insert`, or version 1's `new`).
    Full(&'a Value),
    /// Changed columns as a diff (`modify`, version 2).
    Modify(&'a Value),
    Delete,
}

/// Which monitor method the server accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MonitorMethod {
    CondSince,
    Cond,
    Plain,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    schema: Arc<DatabaseSchema>,
    /// Monitored columns per table.
    monitored: BTreeMap<String, Vec<String>>,
    cache: RwLock<Cache>,
    last_txn_id: Mutex<Option<String>>,
    connection: watch::Sender<Option<Connection>>,
    changes: broadcast::Sender<Change>,
    generation: watch::Sender<u64>,
    /// The last notification applied to the cache: (connection id, sequence number).
    applied: watch::Sender<(u64, u64)>,
    counters: Counters,
    /// Rotates so a reconnect starts with the next remote, not the one that just failed.
    next_remote: AtomicU64,
}

#[derive(Debug)]
struct ShutdownOnDrop(watch::Sender<bool>);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// A connected, monitoring OVSDB client; cheap to clone. The last clone dropped stops it.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
    _shutdown: Arc<ShutdownOnDrop>,
}

/// The JSON value identifying our monitor on a connection (one monitor per connection).
const MONITOR_ID: &str = "kovn";
/// `monitor_cond_since` with this id asks for everything.
const ZERO_TXN_ID: &str = "00000000-0000-0000-0000-000000000000";

impl Client {
    /// Connects, loads the monitored tables into the cache, and keeps them up to date.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        if config.remotes.is_empty() {
            return Err(Error::InvalidRemote("no remotes given".into()));
        }
        for remote in &config.remotes {
            // A missing certificate is the caller's mistake, not a server not up yet.
            if matches!(Remote::parse(remote)?, Remote::Ssl(_)) && config.connection.tls.is_none() {
                return Err(Error::Tls(format!(
                    "{remote} needs a private key, a certificate and a CA certificate"
                )));
            }
        }
        let deadline = Instant::now() + config.wait_for_connection;
        // The schema comes from the first server that answers.
        let schema = loop {
            match first_schema(&config).await {
                Ok(schema) => break Arc::new(schema),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "OVSDB not reachable yet");
                    tokio::time::sleep(config.backoff_min).await;
                }
                Err(e) => return Err(e),
            }
        };
        let mut monitored = BTreeMap::new();
        for request in &config.monitor {
            let table = schema.table(&request.table)?;
            let columns = match &request.columns {
                Some(columns) => {
                    for c in columns {
                        table.column(c)?;
                    }
                    columns.clone()
                }
                None => table.columns.keys().cloned().collect(),
            };
            monitored.insert(request.table.clone(), columns);
        }
        let tables: Vec<String> = monitored.keys().cloned().collect();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            cache: RwLock::new(Cache::new(schema.clone(), &tables, &config.indexes)),
            schema,
            monitored,
            last_txn_id: Mutex::new(None),
            connection: watch::channel(None).0,
            changes: broadcast::channel(16 * 1024).0,
            generation: watch::channel(0).0,
            applied: watch::channel((0, 0)).0,
            counters: Counters::default(),
            next_remote: AtomicU64::new(0),
            config,
        });
        let notifications = loop {
            match inner.establish().await {
                Ok(n) => break n,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "OVSDB connection attempt failed");
                    tokio::time::sleep(inner.config.backoff_min).await;
                }
                Err(e) => return Err(e),
            }
        };
        tokio::spawn(inner.clone().maintain(notifications, shutdown_rx));
        Ok(Client {
            inner,
            _shutdown: Arc::new(ShutdownOnDrop(shutdown_tx)),
        })
    }

    pub fn schema(&self) -> &DatabaseSchema {
        &self.inner.schema
    }

    pub fn database(&self) -> &str {
        &self.inner.config.database
    }

    /// Reads the cache.
    pub fn read<R>(&self, f: impl FnOnce(&Cache) -> R) -> R {
        f(&self.inner.cache.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// A copy of one cached row.
    pub fn row(&self, table: &str, uuid: &Uuid) -> Option<Row> {
        self.read(|c| c.table(table)?.get(uuid).cloned())
    }

    /// Every change applied to the cache from now on, in order. A receiver that falls more
    /// than 16 Ki changes behind gets `Lagged` and should re-read the cache.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    /// Waits until `predicate` holds on the cache (checked now and after every update).
    pub async fn wait_until(
        &self,
        timeout: Duration,
        predicate: impl Fn(&Cache) -> bool,
    ) -> Result<()> {
        let mut generation = self.inner.generation.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            generation.borrow_and_update();
            if self.read(&predicate) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, generation.changed())
                .await
                .is_err()
            {
                return Err(Error::Timeout {
                    method: "waiting for the cache".into(),
                    timeout,
                });
            }
        }
    }

    /// Whether a connection is up now.
    pub fn is_connected(&self) -> bool {
        self.inner.connection.borrow().is_some()
    }

    /// The remote of the current connection.
    pub fn current_remote(&self) -> Option<String> {
        self.inner
            .connection
            .borrow()
            .as_ref()
            .map(|c| c.remote().to_string())
    }

    pub fn stats(&self) -> ClientStats {
        let c = &self.inner.counters;
        ClientStats {
            reconnects: c.connects.load(Ordering::Relaxed).saturating_sub(1),
            transactions: c.transactions.load(Ordering::Relaxed),
            transaction_errors: c.transaction_errors.load(Ordering::Relaxed),
            row_changes: c.row_changes.load(Ordering::Relaxed),
            resumed_resyncs: c.resumed_resyncs.load(Ordering::Relaxed),
            full_resyncs: c.full_resyncs.load(Ordering::Relaxed),
        }
    }

    /// The last transaction id the cache has seen (clustered databases only).
    pub fn last_txn_id(&self) -> Option<String> {
        self.inner
            .last_txn_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs a transaction on the current connection (waiting for one if the client is
    /// reconnecting). Never retried: if the connection drops before the reply, the result is
    /// [`Error::Disconnected`] and the transaction may or may not have been applied.
    pub async fn transact(&self, transaction: &Transaction) -> Result<TransactionResult> {
        self.transact_on(&self.connection().await?, transaction)
            .await
    }

    /// Like [`Client::transact`], then waits until the cache shows the transaction's effects,
    /// so a reconciler that reads the cache next never acts on a state it has just changed
    /// (and, say, inserts a row twice). Relies on the server sending a transaction's updates
    /// before its reply, which ovsdb-server does.
    pub async fn transact_synced(&self, transaction: &Transaction) -> Result<TransactionResult> {
        let conn = self.connection().await?;
        let result = self.transact_on(&conn, transaction).await?;
        let target = (conn.id(), conn.notifications_sent());
        let mut applied = self.inner.applied.subscribe();
        let caught_up =
            applied.wait_for(|&(id, seq)| id > target.0 || (id == target.0 && seq >= target.1));
        if tokio::time::timeout(self.inner.config.wait_for_connection, caught_up)
            .await
            .is_err()
        {
            tracing::warn!("OVSDB cache did not catch up with a transaction in time");
        }
        Ok(result)
    }

    async fn transact_on(
        &self,
        conn: &Connection,
        transaction: &Transaction,
    ) -> Result<TransactionResult> {
        let started = Instant::now();
        let result = conn.transact(transaction).await;
        let c = &self.inner.counters;
        c.transactions.fetch_add(1, Ordering::Relaxed);
        if result.is_err() {
            c.transaction_errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(metrics) = &self.inner.config.metrics {
            metrics.transaction(started.elapsed(), result.is_ok());
        }
        result
    }

    /// The live connection, waiting for a reconnect if needed.
    pub async fn connection(&self) -> Result<Connection> {
        let mut rx = self.inner.connection.subscribe();
        let wait = self.inner.config.wait_for_connection;
        let found = tokio::time::timeout(
            wait,
            rx.wait_for(|c| c.as_ref().is_some_and(|c| !c.is_closed())),
        )
        .await
        .map_err(|_| Error::Timeout {
            method: "waiting for a connection".into(),
            timeout: wait,
        })?
        .map_err(|_| Error::Disconnected {
            method: "waiting for a connection".into(),
        })?;
        found.clone().ok_or_else(|| Error::Disconnected {
            method: "waiting for a connection".into(),
        })
    }
}

async fn first_schema(config: &ClientConfig) -> Result<DatabaseSchema> {
    let mut last = None;
    for remote in &config.remotes {
        match Connection::connect(&Remote::parse(remote)?, config.connection.clone()).await {
            Ok((conn, _)) => return conn.get_schema(&config.database).await,
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::InvalidRemote("no remotes".into())))
}

impl Inner {
    /// Keeps the cache fed: applies notifications, and reconnects when the connection ends.
    async fn maintain(
        self: Arc<Inner>,
        mut notifications: mpsc::UnboundedReceiver<Notification>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            loop {
                tokio::select! {
                    n = notifications.recv() => match n {
                        Some(n) => {
                            let position = (n.connection, n.seq);
                            self.apply_notification(n);
                            self.applied.send_replace(position);
                        }
                        None => break,
                    },
                    _ = shutdown.changed() => return,
                }
            }
            let reason = self
                .connection
                .borrow()
                .as_ref()
                .and_then(Connection::close_reason)
                .unwrap_or_else(|| "connection closed".into());
            tracing::info!(%reason, database = %self.config.database, "OVSDB connection lost; reconnecting");
            if let Some(m) = &self.config.metrics {
                m.disconnected(&reason);
            }
            self.connection.send_replace(None);
            let mut backoff = self.config.backoff_min;
            notifications = loop {
                if *shutdown.borrow() {
                    return;
                }
                match self.establish().await {
                    Ok(n) => break n,
                    Err(e) => {
                        tracing::debug!(error = %e, ?backoff, "OVSDB reconnect failed");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = shutdown.changed() => return,
                        }
                        backoff = (backoff * 2).min(self.config.backoff_max);
                    }
                }
            };
        }
    }

    /// Connects to a suitable remote, starts the monitor, brings the cache up to date, and
    /// publishes the connection.
    async fn establish(&self) -> Result<mpsc::UnboundedReceiver<Notification>> {
        let remotes = &self.config.remotes;
        let start = self.next_remote.fetch_add(1, Ordering::Relaxed) as usize;
        let mut last_error = None;
        for i in 0..remotes.len() {
            let remote = Remote::parse(&remotes[(start + i) % remotes.len()])?;
            match self.try_remote(&remote).await {
                Ok(notifications) => return Ok(notifications),
                Err(e) => {
                    tracing::debug!(%remote, error = %e, "OVSDB remote not usable");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::InvalidRemote("no remotes".into())))
    }

    async fn try_remote(&self, remote: &Remote) -> Result<mpsc::UnboundedReceiver<Notification>> {
        let (conn, notifications) =
            Connection::connect(remote, self.config.connection.clone()).await?;
        if self.config.leader_only {
            self.check_leader(&conn).await?;
        }
        self.start_monitor(&conn).await?;
        self.counters.connects.fetch_add(1, Ordering::Relaxed);
        // The monitor reply has loaded the cache; this connection's notifications follow.
        self.applied.send_replace((conn.id(), 0));
        if let Some(m) = &self.config.metrics {
            m.connected(&remote.to_string());
        }
        self.connection.send_replace(Some(conn));
        Ok(notifications)
    }

    /// For a clustered database, refuses a server that is not the connected leader (the
    /// `_Server` database says; standalone databases always pass).
    async fn check_leader(&self, conn: &Connection) -> Result<()> {
        let reply = conn
            .call(
                "transact",
                json!(["_Server", {"op": "select", "table": "Database",
                    "where": [["name", "==", self.config.database]],
                    "columns": ["model", "leader", "connected"]}]),
            )
            .await?;
        let row = &reply[0]["rows"][0];
        if row.is_null() {
            return Err(Error::Protocol(format!(
                "server does not serve database {}",
                self.config.database
            )));
        }
        if row["model"] == "clustered" && (row["leader"] != true || row["connected"] != true) {
            return Err(Error::Protocol("not the cluster leader".into()));
        }
        Ok(())
    }

    fn monitor_requests(&self, with_conditions: bool) -> Result<Value> {
        let mut requests = serde_json::Map::new();
        for request in &self.config.monitor {
            let mut r = json!({"columns": self.monitored[&request.table]});
            if let Some(conditions) = &request.conditions {
                if !with_conditions {
                    return Err(Error::Protocol(
                        "the server only supports `monitor`, which cannot filter rows".into(),
                    ));
                }
                r["where"] = Value::Array(conditions.iter().map(Condition::to_json).collect());
            }
            requests.insert(
                request.table.clone(),
                if with_conditions { json!([r]) } else { r },
            );
        }
        Ok(Value::Object(requests))
    }

    /// Starts the monitor, newest method first, and loads its initial contents.
    async fn start_monitor(&self, conn: &Connection) -> Result<()> {
        let db = &self.config.database;
        let since = self
            .last_txn_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let attempts = [
            MonitorMethod::CondSince,
            MonitorMethod::Cond,
            MonitorMethod::Plain,
        ];
        for method in attempts {
            let (name, params) = match method {
                MonitorMethod::CondSince => (
                    "monitor_cond_since",
                    json!([
                        db,
                        MONITOR_ID,
                        self.monitor_requests(true)?,
                        since.as_deref().unwrap_or(ZERO_TXN_ID)
                    ]),
                ),
                MonitorMethod::Cond => (
                    "monitor_cond",
                    json!([db, MONITOR_ID, self.monitor_requests(true)?]),
                ),
                MonitorMethod::Plain => (
                    "monitor",
                    json!([db, MONITOR_ID, self.monitor_requests(false)?]),
                ),
            };
            let reply = match conn.call(name, params).await {
                Ok(reply) => reply,
                Err(Error::Rpc { error, .. }) if error.contains("unknown method") => continue,
                Err(e) => return Err(e),
            };
            let (found, txn_id, updates, version) = match method {
                MonitorMethod::CondSince => (
                    reply[0].as_bool().unwrap_or(false),
                    reply[1].as_str().map(str::to_owned),
                    reply[2].clone(),
                    2,
                ),
                MonitorMethod::Cond => (false, None, reply, 2),
                MonitorMethod::Plain => (false, None, reply, 1),
            };
            if found {
                self.counters
                    .resumed_resyncs
                    .fetch_add(1, Ordering::Relaxed);
                self.apply_updates(&updates, version)?;
            } else {
                self.counters.full_resyncs.fetch_add(1, Ordering::Relaxed);
                self.replace_all(&updates, version)?;
            }
            self.set_txn_id(txn_id);
            return Ok(());
        }
        Err(Error::Protocol(
            "the server supports no monitor method".into(),
        ))
    }

    fn set_txn_id(&self, txn_id: Option<String>) {
        // Standalone servers answer with the zero id: nothing to resume from.
        let txn_id = txn_id.filter(|id| id != ZERO_TXN_ID);
        *self.last_txn_id.lock().unwrap_or_else(|e| e.into_inner()) = txn_id;
    }

    fn apply_notification(&self, n: Notification) {
        let result = match n.method.as_str() {
            "update3" => {
                let r = self.apply_updates(&n.params[2], 2);
                self.set_txn_id(n.params[1].as_str().map(str::to_owned));
                r
            }
            "update2" => self.apply_updates(&n.params[1], 2),
            "update" => self.apply_updates(&n.params[1], 1),
            other => {
                tracing::debug!(method = other, "ignoring OVSDB notification");
                Ok(())
            }
        };
        if let Err(e) = result {
            // A row we cannot decode is a schema mismatch: log it loudly, keep the rest.
            tracing::error!(error = %e, "applying an OVSDB update");
        }
    }

    fn table_schema(&self, table: &str) -> Result<&TableSchema> {
        self.schema.table(table)
    }

    /// Walks `<table-updates>` (version 1) or `<table-updates2>` (version 2), handing each
    /// row's update to `f` in the order the server sent them.
    fn for_each_row_update(
        &self,
        updates: &Value,
        version: u8,
        mut f: impl FnMut(&str, &TableSchema, Uuid, RowUpdate<'_>) -> Result<()>,
    ) -> Result<()> {
        let Some(tables) = updates.as_object() else {
            return Ok(());
        };
        for (table_name, rows) in tables {
            let table = self.table_schema(table_name)?;
            let Some(rows) = rows.as_object() else {
                continue;
            };
            for (uuid, update) in rows {
                let uuid = Uuid::parse_str(uuid)
                    .map_err(|_| Error::Protocol(format!("bad row uuid {uuid}")))?;
                let update = if version == 1 {
                    match update.get("new") {
                        Some(new) => RowUpdate::Full(new),
                        None => RowUpdate::Delete,
                    }
                } else if let Some(row) = update.get("initial").or_else(|| update.get("insert")) {
                    RowUpdate::Full(row)
                } else if let Some(diff) = update.get("modify") {
                    RowUpdate::Modify(diff)
                } else if update.get("delete").is_some() {
                    RowUpdate::Delete
                } else {
                    continue;
                };
                f(table_name, table, uuid, update)?;
            }
        }
        Ok(())
    }

    /// Applies an incremental update to the cache.
    fn apply_updates(&self, updates: &Value, version: u8) -> Result<()> {
        let mut changes = Vec::new();
        let result = {
            let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
            self.for_each_row_update(updates, version, |name, table, uuid, update| {
                // Default values are left out on the wire; the cache does not store them
                // either.
                let change = match update {
                    RowUpdate::Full(row) => cache.insert(name, Row::from_json(uuid, row, table)?),
                    RowUpdate::Modify(diff) => {
                        cache.modify(name, uuid, decode_columns(diff, table)?)
                    }
                    RowUpdate::Delete => cache.delete(name, uuid),
                };
                changes.extend(change);
                Ok(())
            })
        };
        // Publish what was applied even if a later row failed to decode.
        self.publish(changes);
        result
    }

    /// Replaces every monitored table with the contents in `updates` (a full resync).
    fn replace_all(&self, updates: &Value, version: u8) -> Result<()> {
        let mut fresh: BTreeMap<String, Vec<Row>> = self
            .monitored
            .keys()
            .map(|t| (t.clone(), Vec::new()))
            .collect();
        self.for_each_row_update(updates, version, |name, table, uuid, update| {
            if let RowUpdate::Full(row) = update {
                fresh
                    .entry(name.to_owned())
                    .or_default()
                    .push(Row::from_json(uuid, row, table)?);
            }
            Ok(())
        })?;
        let mut changes = Vec::new();
        {
            let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
            for (table, rows) in fresh {
                changes.extend(cache.replace_table(&table, rows));
            }
        }
        self.publish(changes);
        Ok(())
    }

    fn publish(&self, changes: Vec<Change>) {
        self.counters
            .row_changes
            .fetch_add(changes.len() as u64, Ordering::Relaxed);
        for change in changes {
            // No subscriber is fine.
            let _ = self.changes.send(change);
        }
        self.generation.send_modify(|g| *g += 1);
    }
}
