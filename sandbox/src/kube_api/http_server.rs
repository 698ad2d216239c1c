//! The API stand-in served over HTTP on loopback, so the real binaries (kovn-controller,
//! kovn-agent) run against it as processes with a kubeconfig, as they would against a
//! cluster. Lists and watches work across namespaces and with equality selectors; a watch
//! resumes from a resourceVersion (410 Expired, as a watch event, once it is too old) and
//! streams newline-delimited watch events until `timeoutSeconds`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use http::{Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Change, ChangeType, FakeApi, Selector, covers, query_params, split_path};

/// A running HTTP server for a [`FakeApi`]; stops when dropped.
pub struct ServedApi {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ServedApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ServedApi {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig pointing at this server (no credentials), for `KUBECONFIG=`.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: {}\n\
             users:\n- name: sandbox\n  user: {{}}\ncontexts:\n- name: sandbox\n  context:\n    \
             cluster: sandbox\n    user: sandbox\n    namespace: default\ncurrent-context: sandbox\n",
            self.url()
        );
        std::fs::write(path, config)
    }
}

impl FakeApi {
    /// Serves this API on a free loopback port.
    pub async fn serve(&self) -> std::io::Result<ServedApi> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        self.serve_tokio_listener(listener)
    }

    /// Serves this API on a listener bound elsewhere, e.g. on loopback inside a node's
    /// network namespace (a socket belongs to the namespace it was made in), so a process in
    /// that namespace reaches it at 127.0.0.1.
    pub fn serve_listener(&self, listener: std::net::TcpListener) -> std::io::Result<ServedApi> {
        listener.set_nonblocking(true)?;
        self.serve_tokio_listener(tokio::net::TcpListener::from_std(listener)?)
    }

    fn serve_tokio_listener(
        &self,
        listener: tokio::net::TcpListener,
    ) -> std::io::Result<ServedApi> {
        let addr = listener.local_addr()?;
        let app = Router::new().fallback(handle).with_state(self.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(ServedApi { addr, task })
    }

    fn watch_response(&self, uri: &http::Uri, query: &BTreeMap<String, String>) -> Response {
        let Some((coll, None, _)) = split_path(uri.path()) else {
            return (StatusCode::NOT_FOUND, "watch a collection").into_response();
        };
        let selector = Selector::parse(query);
        let since = query
            .get("resourceVersion")
            .filter(|v| !v.is_empty() && *v != "0")
            .map(|v| v.parse::<u64>().unwrap_or(0));
        let timeout = query
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .unwrap_or(1800);
        let (tx, rx) = mpsc::unbounded_channel::<Change>();
        let initial: Vec<(ChangeType, Arc<Value>)> = {
            let mut state = self.lock();
            let initial = match since {
                // No resourceVersion: every current object as ADDED, then the changes.
                None => state
                    .objects
                    .iter()
                    .filter(|(c, _)| covers(&coll, c))
                    .flat_map(|(_, m)| m.values())
                    .map(|v| (ChangeType::Added, v.clone()))
                    .collect(),
                Some(rv) if rv < state.history_floor => {
                    let expired = json!({"type": "ERROR", "object": {
                        "kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "Expired", "code": 410,
                        "message": format!("too old resource version: {rv} ({})", state.history_floor)}});
                    return json_lines(vec![expired]);
                }
                Some(rv) => state
                    .history
                    .iter()
                    .filter(|c| c.resource_version > rv && covers(&coll, &c.collection))
                    .map(|c| (c.change, c.object.clone()))
                    .collect(),
            };
            state.watchers.push(tx);
            initial
        };
        let live =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
                .filter({
                    let coll = coll.clone();
                    move |c| futures::future::ready(covers(&coll, &c.collection))
                })
                .map(|c| (c.change, c.object));
        let events = futures::stream::iter(initial)
            .chain(live)
            .filter(move |(_, v)| futures::future::ready(selector.matches(v)))
            .map(|(change, object)| {
                let mut line =
                    serde_json::to_vec(&json!({"type": change.as_str(), "object": *object}))
                        .unwrap_or_default();
                line.push(b'\n');
                Ok::<_, Infallible>(Bytes::from(line))
            })
            .take_until(tokio::time::sleep(Duration::from_secs(timeout)));
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(events))
            .unwrap_or_default()
    }
}

fn json_lines(values: Vec<Value>) -> Response {
    let mut body = Vec::new();
    for v in values {
        body.extend(serde_json::to_vec(&v).unwrap_or_default());
        body.push(b'\n');
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn handle(State(api): State<FakeApi>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let query = query_params(&parts.uri);
    if parts.method == Method::GET
        && matches!(query.get("watch").map(String::as_str), Some("true" | "1"))
    {
        return api.watch_response(&parts.uri, &query);
    }
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    // Off the runtime's workers: a list of 10,000 objects takes a worker for a good part of
    // a second to build and encode, and a small GET (a CNI ADD reading its pod) must not queue
    // behind two of them, as it would not at a real API server.
    let answered = tokio::task::spawn_blocking(move || {
        let (code, value) = api.respond(&parts, &bytes);
        (code, serde_json::to_vec(&value).unwrap_or_default())
    })
    .await;
    let Ok((code, body)) = answered else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
