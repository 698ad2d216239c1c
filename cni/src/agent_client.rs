//! HTTP/1.1 to kovn-agent over its unix socket, blocking and with bounded time-outs: the
//! plugin is a short-lived process the runtime waits on, and a hung agent must turn into a
//! CNI error the kubelet retries, not a hung pod sandbox.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{CniError, Code};
use crate::wire::ErrorBody;

pub struct AgentClient {
    socket: PathBuf,
    timeout: Duration,
}

/// A reply: status code and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    /// The agent's `{"error": …}` message, or the raw body.
    pub fn error_message(&self) -> String {
        serde_json::from_slice::<ErrorBody>(&self.body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&self.body).into_owned())
    }
}

impl AgentClient {
    pub fn new(socket: &Path, timeout: Duration) -> AgentClient {
        AgentClient {
            socket: socket.to_owned(),
            timeout,
        }
    }

    fn unavailable(&self, what: String) -> CniError {
        CniError::new(
            Code::TryAgainLater,
            format!("kovn-agent is not reachable at {}", self.socket.display()),
            format!(
                "{what}; is the kovn-agent pod on this node running? (kubectl -n kube-system get pods -l app=kovn-agent -o wide)"
            ),
        )
    }

    /// One request; `body` is JSON.
    pub fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Reply, CniError> {
        let mut stream = UnixStream::connect(&self.socket)
            .map_err(|e| self.unavailable(format!("connect: {e}")))?;
        stream
            .set_read_timeout(Some(self.timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
            .map_err(|e| CniError::new(Code::Io, "cannot set socket time-outs", e.to_string()))?;
        let body = body.unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: kovn-agent\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body))
            .map_err(|e| self.unavailable(format!("sending {method} {path}: {e}")))?;
        let mut raw = Vec::new();
        if let Err(e) = stream.read_to_end(&mut raw) {
            let timed_out = matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            );
            return Err(if timed_out {
                CniError::new(
                    Code::TryAgainLater,
                    format!(
                        "kovn-agent did not answer {method} {path} within {} s",
                        self.timeout.as_secs()
                    ),
                    "the kubelet retries; if it persists, see the kovn-agent log on this node",
                )
            } else {
                self.unavailable(format!("reading the reply: {e}"))
            });
        }
        if raw.is_empty() {
            // The agent went away mid-request (a restart): the kubelet should retry.
            return Err(self.unavailable(format!(
                "it closed the connection without answering {method} {path}"
            )));
        }
        parse_reply(&raw).ok_or_else(|| {
            CniError::new(
                Code::Io,
                "kovn-agent sent a malformed HTTP reply",
                String::from_utf8_lossy(&raw[..raw.len().min(200)]).into_owned(),
            )
        })
    }
}

/// Status line, headers and body (plain or chunked).
fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = lines.any(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("transfer-encoding:")
            .is_some_and(|v| v.trim() == "chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Some(Reply { status, body })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_plain_and_chunked() {
        let plain = parse_reply(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n").unwrap();
        assert_eq!((plain.status, plain.body.len()), (204, 0));
        let chunked = parse_reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(chunked.body, b"{\"a\":1}");
        assert!(parse_reply(b"garbage").is_none());
    }
}
