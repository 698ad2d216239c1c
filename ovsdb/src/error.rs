use std::time::Duration;

/// Errors of the OVSDB client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to {remote}: {source}")]
    Connect {
        remote: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid remote {0:?} (expected unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT)")]
    InvalidRemote(String),
    /// An `ssl:` remote's certificates or handshake.
    #[error("TLS: {0}")]
    Tls(String),
    #[error("I/O on the OVSDB connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("OVSDB protocol error: {0}")]
    Protocol(String),
    #[error("OVSDB message larger than {limit} bytes")]
    MessageTooLarge { limit: usize },
    /// The connection closed while the request was in flight: it may or may not have been
    /// applied; the caller decides whether to retry.
    #[error("the connection closed before the reply to {method} arrived")]
    Disconnected { method: String },
    #[error("no reply to {method} within {timeout:?}")]
    Timeout { method: String, timeout: Duration },
    /// The server answered the RPC with an error.
    #[error("{method} failed: {error}{}", details.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Rpc {
        method: String,
        error: String,
        details: Option<String>,
    },
    /// One operation of a transaction failed; the whole transaction was rolled back.
    #[error("transaction failed at operation {index}: {error}{}", details.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Transaction {
        index: usize,
        error: String,
        details: Option<String>,
    },
    #[error("schema: {0}")]
    Schema(String),
    #[error("value of {table}.{column}: {detail}")]
    Value {
        table: String,
        column: String,
        detail: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
