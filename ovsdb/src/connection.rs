//! One JSON-RPC 1.0 connection to an OVSDB server: requests matched to replies by id, the
//! server's `echo` answered, notifications handed to the caller in order, an inactivity probe,
//! and every request in flight failed (never retried) when the connection drops.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::codec::{DEFAULT_MAX_MESSAGE, JsonSplitter};
use crate::error::{Error, Result};

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Unix(PathBuf),
    Tcp(String),
    /// TLS over TCP (`ConnectionOptions::tls` holds the certificates).
    Ssl(String),
}

impl Remote {
    /// Parses OVS's remote syntax: `unix:PATH`, `tcp:HOST:PORT` or `ssl:HOST:PORT`.
    pub fn parse(remote: &str) -> Result<Remote> {
        if let Some(path) = remote.strip_prefix("unix:") {
            return Ok(Remote::Unix(PathBuf::from(path)));
        }
        let host_port = |addr: &str| {
            addr.rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        };
        if let Some(addr) = remote.strip_prefix("tcp:")
            && host_port(addr)
        {
            return Ok(Remote::Tcp(addr.to_owned()));
        }
        if let Some(addr) = remote.strip_prefix("ssl:")
            && host_port(addr)
        {
            return Ok(Remote::Ssl(addr.to_owned()));
        }
        Err(Error::InvalidRemote(remote.to_owned()))
    }
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Remote::Unix(p) => write!(f, "unix:{}", p.display()),
            Remote::Tcp(a) => write!(f, "tcp:{a}"),
            Remote::Ssl(a) => write!(f, "ssl:{a}"),
        }
    }
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// Send an `echo` after this long without hearing from the server; give up after twice
    /// this long. `None` disables the probe.
    pub inactivity_probe: Option<Duration>,
    /// Largest message accepted from the server.
    pub max_message: usize,
    /// How long a request waits for its reply. `None`: as long as the connection lives.
    pub request_timeout: Option<Duration>,
    pub connect_timeout: Duration,
    /// The certificates for `ssl:` remotes (see [`crate::tls`]).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            inactivity_probe: Some(Duration::from_secs(5)),
            max_message: DEFAULT_MAX_MESSAGE,
            request_timeout: None,
            connect_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// A message the server sent without being asked (`update`, `update2`, `update3`, `locked`,
/// `stolen`), in the order it arrived.
#[derive(Debug, Clone)]
pub struct Notification {
    pub method: String,
    pub params: Value,
    /// Which connection it came on ([`Connection::id`]) and its place in that connection's
    /// stream (1, 2, ...): lets a client wait until it has applied every notification that
    /// arrived before a reply.
    pub connection: u64,
    pub seq: u64,
}

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

struct Pending {
    method: String,
    reply: oneshot::Sender<Result<Value>>,
}

struct Shared {
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    closed: AtomicBool,
    /// Notifications handed on so far.
    notifications: AtomicU64,
    id: u64,
    /// Why the connection closed, once it did.
    close_reason: Mutex<Option<String>>,
}

impl Shared {
    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A handle to the connection; cheap to clone. The connection closes when every handle is
/// dropped or the server goes away.
#[derive(Clone)]
pub struct Connection {
    outgoing: mpsc::UnboundedSender<Value>,
    shared: Arc<Shared>,
    options: ConnectionOptions,
    remote: Arc<Remote>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("remote", &self.remote)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Connection {
    /// Connects and starts the connection task. Notifications arrive on the returned receiver.
    pub async fn connect(
        remote: &Remote,
        options: ConnectionOptions,
    ) -> Result<(Connection, mpsc::UnboundedReceiver<Notification>)> {
        let connect_error = |source| Error::Connect {
            remote: remote.to_string(),
            source,
        };
        let timeout = options.connect_timeout;
        let timed_out = || {
            connect_error(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {timeout:?}"),
            ))
        };
        match remote {
            Remote::Unix(path) => {
                let stream = tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(connect_error)?;
                Ok(Connection::over(stream, remote.clone(), options))
            }
            Remote::Tcp(addr) => {
                let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(connect_error)?;
                let _ = stream.set_nodelay(true);
                Ok(Connection::over(stream, remote.clone(), options))
            }
            Remote::Ssl(addr) => {
                let config = options.tls.clone().ok_or_else(|| {
                    Error::Tls(format!(
                        "ssl:{addr} needs a private key, a certificate and a CA certificate"
                    ))
                })?;
                let name = crate::tls::server_name(addr)?;
                let handshake = async {
                    let tcp = tokio::net::TcpStream::connect(addr)
                        .await
                        .map_err(connect_error)?;
                    let _ = tcp.set_nodelay(true);
                    tokio_rustls::TlsConnector::from(config)
                        .connect(name, tcp)
                        .await
                        .map_err(|e| Error::Tls(format!("handshake with ssl:{addr}: {e}")))
                };
                let stream = tokio::time::timeout(timeout, handshake)
                    .await
                    .map_err(|_| timed_out())??;
                Ok(Connection::over(stream, remote.clone(), options))
            }
        }
    }

    /// Runs the protocol over any byte stream (tests use this with a fake peer).
    pub fn over<S>(
        stream: S,
        remote: Remote,
        options: ConnectionOptions,
    ) -> (Connection, mpsc::UnboundedReceiver<Notification>)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let (notify, notifications) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            notifications: AtomicU64::new(0),
            id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
            close_reason: Mutex::new(None),
        });
        let task = IoTask {
            shared: shared.clone(),
            notify,
            outgoing: outgoing_rx,
            splitter: JsonSplitter::new(options.max_message),
            probe: options.inactivity_probe,
        };
        tokio::spawn(task.run(stream));
        (
            Connection {
                outgoing,
                shared,
                options,
                remote: Arc::new(remote),
            },
            notifications,
        )
    }

    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// Unique within the process.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// How many notifications this connection has handed on. The server sends a transaction's
    /// monitor updates before its reply, so once a reply is in, every update it caused is
    /// counted here.
    pub fn notifications_sent(&self) -> u64 {
        self.shared.notifications.load(Ordering::SeqCst)
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// Why the connection closed, if it has.
    pub fn close_reason(&self) -> Option<String> {
        self.shared
            .close_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends a request and waits for its reply.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, reply_rx) = oneshot::channel();
        self.shared.lock_pending().insert(
            id,
            Pending {
                method: method.to_owned(),
                reply,
            },
        );
        let disconnected = || Error::Disconnected {
            method: method.to_owned(),
        };
        // The task marks the connection closed before it fails the pending requests, so
        // either it sees this request or this check sees the close.
        if self.is_closed()
            || self
                .outgoing
                .send(json!({"method": method, "params": params, "id": id}))
                .is_err()
        {
            self.shared.lock_pending().remove(&id);
            return Err(disconnected());
        }
        let reply = match self.options.request_timeout {
            Some(timeout) => match tokio::time::timeout(timeout, reply_rx).await {
                Ok(r) => r,
                Err(_) => {
                    self.shared.lock_pending().remove(&id);
                    return Err(Error::Timeout {
                        method: method.to_owned(),
                        timeout,
                    });
                }
            },
            None => reply_rx.await,
        };
        reply.map_err(|_| disconnected())?
    }

    pub async fn list_dbs(&self) -> Result<Vec<String>> {
        let result = self.call("list_dbs", json!([])).await?;
        serde_json::from_value(result).map_err(|e| Error::Protocol(format!("list_dbs: {e}")))
    }

    pub async fn get_schema(&self, db: &str) -> Result<crate::DatabaseSchema> {
        let result = self.call("get_schema", json!([db])).await?;
        crate::DatabaseSchema::from_json(&result)
    }

    pub async fn echo(&self) -> Result<()> {
        self.call("echo", json!(["kovn"])).await.map(drop)
    }

    /// Cancels the monitor `monitor_id` started on this connection; no update for it follows.
    pub async fn monitor_cancel(&self, monitor_id: &Value) -> Result<()> {
        self.call("monitor_cancel", json!([monitor_id]))
            .await
            .map(drop)
    }

    /// Acquires the named lock; `true` if granted now (otherwise a `locked` notification
    /// follows when it is).
    pub async fn lock(&self, lock: &str) -> Result<bool> {
        let result = self.call("lock", json!([lock])).await?;
        Ok(result["locked"].as_bool().unwrap_or(false))
    }

    pub async fn steal(&self, lock: &str) -> Result<()> {
        self.call("steal", json!([lock])).await.map(drop)
    }

    pub async fn unlock(&self, lock: &str) -> Result<()> {
        self.call("unlock", json!([lock])).await.map(drop)
    }
}

struct IoTask {
    shared: Arc<Shared>,
    notify: mpsc::UnboundedSender<Notification>,
    outgoing: mpsc::UnboundedReceiver<Value>,
    splitter: JsonSplitter,
    probe: Option<Duration>,
}

impl IoTask {
    async fn run<S: AsyncRead + AsyncWrite>(mut self, stream: S) {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let reason = self.serve(&mut reader, &mut writer).await;
        let _ = writer.shutdown().await;
        self.close(reason);
    }

    async fn serve<R, W>(&mut self, reader: &mut R, writer: &mut W) -> String
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut buf = vec![0u8; 64 * 1024];
        let mut last_heard = Instant::now();
        let mut probe_sent = false;
        let tick = self.probe.map_or(Duration::from_secs(3600), |p| p / 2);
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                read = reader.read(&mut buf) => {
                    let n = match read {
                        Ok(0) => return "the server closed the connection".to_owned(),
                        Ok(n) => n,
                        Err(e) => return format!("read error: {e}"),
                    };
                    last_heard = Instant::now();
                    probe_sent = false;
                    self.splitter.feed(&buf[..n]);
                    loop {
                        match self.splitter.next_message() {
                            Ok(Some(message)) => {
                                if let Err(reason) = self.dispatch(message, writer).await {
                                    return reason;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => return e.to_string(),
                        }
                    }
                }
                message = self.outgoing.recv() => {
                    let Some(message) = message else {
                        return "every handle was dropped".to_owned();
                    };
                    if let Err(e) = write_message(writer, &message).await {
                        return format!("write error: {e}");
                    }
                }
                _ = ticker.tick() => {
                    let Some(probe) = self.probe else { continue };
                    let idle = last_heard.elapsed();
                    if idle >= probe * 2 && probe_sent {
                        return format!("inactivity probe: nothing heard for {idle:?}");
                    }
                    if idle >= probe && !probe_sent {
                        probe_sent = true;
                        // An id no caller waits for: the reply only proves the peer is alive.
                        let probe = json!({"method": "echo", "params": [], "id": "probe"});
                        if let Err(e) = write_message(writer, &probe).await {
                            return format!("write error: {e}");
                        }
                    }
                }
            }
        }
    }

    /// Handles one message from the server; an error closes the connection.
    async fn dispatch<W: AsyncWrite + Unpin>(
        &mut self,
        message: Value,
        writer: &mut W,
    ) -> Result<(), String> {
        let Value::Object(mut obj) = message else {
            return Err(format!("message is not an object: {message:.200}"));
        };
        if let Some(method) = obj.get("method").and_then(Value::as_str).map(str::to_owned) {
            let params = obj.remove("params").unwrap_or(Value::Null);
            let id = obj.remove("id").unwrap_or(Value::Null);
            if method == "echo" && !id.is_null() {
                let reply = json!({"result": params, "error": null, "id": id});
                return write_message(writer, &reply)
                    .await
                    .map_err(|e| format!("write error: {e}"));
            }
            if !id.is_null() {
                // A request we do not serve: answer with an error rather than leave the
                // server waiting.
                let reply = json!({"result": null, "error": "unknown method", "id": id});
                return write_message(writer, &reply)
                    .await
                    .map_err(|e| format!("write error: {e}"));
            }
            // The receiver may be gone (nobody monitors); that is fine.
            let seq = self.shared.notifications.fetch_add(1, Ordering::SeqCst) + 1;
            let _ = self.notify.send(Notification {
                method,
                params,
                connection: self.shared.id,
                seq,
            });
            return Ok(());
        }
        let Some(id) = obj.get("id").and_then(Value::as_u64) else {
            // Replies to our probe (id "probe") and stray replies carry nothing to deliver.
            return Ok(());
        };
        let Some(pending) = self.shared.lock_pending().remove(&id) else {
            tracing::debug!(id, "reply to a request nobody waits for");
            return Ok(());
        };
        let error = obj.get("error").filter(|e| !e.is_null());
        let result = match error {
            Some(error) => Err(rpc_error(&pending.method, error)),
            None => Ok(obj.remove("result").unwrap_or(Value::Null)),
        };
        let _ = pending.reply.send(result);
        Ok(())
    }

    fn close(&self, reason: String) {
        tracing::debug!(%reason, "OVSDB connection closed");
        *self
            .shared
            .close_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(reason);
        self.shared.closed.store(true, Ordering::SeqCst);
        let pending: Vec<Pending> = self.shared.lock_pending().drain().map(|(_, p)| p).collect();
        for p in pending {
            let _ = p.reply.send(Err(Error::Disconnected { method: p.method }));
        }
    }
}

fn rpc_error(method: &str, error: &Value) -> Error {
    let (error, details) = match error {
        Value::String(s) => (s.clone(), None),
        Value::Object(o) => (
            o.get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown error")
                .to_owned(),
            o.get("details").and_then(Value::as_str).map(str::to_owned),
        ),
        other => (other.to_string(), None),
    };
    Error::Rpc {
        method: method.to_owned(),
        error,
        details,
    }
}

async fn write_message<W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &Value,
) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    writer.write_all(&bytes).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_parse() {
        assert_eq!(
            Remote::parse("unix:/run/ovn/ovnnb_db.sock").unwrap(),
            Remote::Unix("/run/ovn/ovnnb_db.sock".into())
        );
        assert_eq!(
            Remote::parse("tcp:172.18.0.2:6641").unwrap(),
            Remote::Tcp("172.18.0.2:6641".into())
        );
        assert!(Remote::parse("tcp:nohost").is_err());
        assert_eq!(
            Remote::parse("ssl:172.18.0.2:6641").unwrap(),
            Remote::Ssl("172.18.0.2:6641".into())
        );
        assert!(Remote::parse("ssl::6641").is_err());
        assert!(Remote::parse("http://x").is_err());
    }
}
