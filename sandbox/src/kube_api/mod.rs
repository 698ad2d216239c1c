//! An in-memory stand-in for the Kubernetes API server, for tests and the benchmark only (no
//! API server can run on these machines). It is a `tower::Service` behind a real
//! `kube::Client`, so the controller's own requests (create, replace, merge/JSON/apply patches,
//! status, delete with finalizers, get) go through kube-rs's serialization exactly as in a
//! cluster. Watches are served as `watcher::Event` streams fed by the same store, so what the
//! controller writes (IP objects, annotations, finalizers) comes back to it as it would.
//!
//! Not a conformance fake: no field selectors, no admission, server-side apply is a merge.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use kube::client::Body;
use kube::runtime::watcher;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::mpsc;

mod http_server;
pub use http_server::ServedApi;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// Path and query.
    pub uri: String,
    pub content_type: String,
    pub body: Value,
}

/// What happened to an object, as a watch event's `type` says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// A change to a collection, as the watches see it.
#[derive(Clone)]
struct Change {
    resource_version: u64,
    collection: Arc<str>,
    object: Arc<Value>,
    change: ChangeType,
}

/// How many changes are kept for watches that resume from a resourceVersion (an older one
/// gets 410 Gone and relists, as from a real API server).
const HISTORY: usize = 10_000;

#[derive(Default)]
struct State {
    /// Collection path (`/api/v1/namespaces/default/pods`, `/apis/kubeovn.io/v1/subnets`) →
    /// name → object. Shared, so that a list or a watch copies references under the lock
    /// and the objects themselves outside it (a 20,000-object list would otherwise hold every
    /// other request for as long as the deep copy takes).
    objects: BTreeMap<String, BTreeMap<String, Arc<Value>>>,
    resource_version: u64,
    /// None when the request log is off (the scale benchmark: it would hold every body).
    requests: Option<Vec<Recorded>>,
    /// One unbounded channel per watch: a slow watcher holds only what it has not read yet,
    /// and never loses an event (a bounded broadcast would drop them as `Lagged`).
    watchers: Vec<mpsc::UnboundedSender<Change>>,
    /// The last [`HISTORY`] changes, oldest first.
    history: std::collections::VecDeque<Change>,
    /// Changes at or below this resourceVersion are no longer in `history`.
    history_floor: u64,
}

impl State {
    fn notify(&mut self, change: Change) {
        self.watchers.retain(|w| w.send(change.clone()).is_ok());
        if self.history.len() == HISTORY
            && let Some(old) = self.history.pop_front()
        {
            self.history_floor = old.resource_version;
        }
        self.history.push_back(change);
    }
}

/// The fake API server. Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

impl Default for FakeApi {
    fn default() -> Self {
        FakeApi::new()
    }
}

/// `(collection, name, subresource)` of a request path.
fn split_path(path: &str) -> Option<(String, Option<String>, Option<String>)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // api/v1/... or apis/group/version/...
    let prefix_len = match *parts.first()? {
        "api" => 2,
        "apis" => 3,
        _ => return None,
    };
    let mut rest = &parts[prefix_len..];
    let mut collection: Vec<&str> = parts[..prefix_len].to_vec();
    if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        collection.extend(&rest[..3]);
        rest = &rest[3..];
    } else {
        collection.push(rest.first()?);
        rest = &rest[1..];
    }
    Some((
        format!("/{}", collection.join("/")),
        rest.first().map(|s| s.to_string()),
        rest.get(1).map(|s| s.to_string()),
    ))
}

/// The collection path of a kube resource in a namespace (None: cluster-scoped).
pub fn collection<K: kube::Resource<DynamicType = ()>>(namespace: Option<&str>) -> String {
    let group = K::group(&());
    let version = K::version(&());
    let plural = K::plural(&());
    let base = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    match namespace {
        Some(ns) => format!("{base}/namespaces/{ns}/{plural}"),
        None => format!("{base}/{plural}"),
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> (StatusCode, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
               "reason": reason, "code": code.as_u16()}),
    )
}

/// Whether a request for collection `request` covers the stored collection `stored`: the same
/// one, or the same resource in one namespace when `request` is across namespaces
/// (`/api/v1/pods` covers `/api/v1/namespaces/default/pods`).
fn covers(request: &str, stored: &str) -> bool {
    if request == stored {
        return true;
    }
    let Some((base, plural)) = request.rsplit_once('/') else {
        return false;
    };
    stored
        .strip_prefix(base)
        .and_then(|r| r.strip_prefix("/namespaces/"))
        .and_then(|r| r.split_once('/'))
        .is_some_and(|(ns, p)| !ns.is_empty() && p == plural)
}

/// Whether a collection path holds objects of kind `K` (in any namespace).
fn holds_kind<K: kube::Resource<DynamicType = ()>>() -> impl Fn(&str) -> bool + Clone {
    let all = collection::<K>(None);
    move |c: &str| covers(&all, c)
}

/// `fieldSelector` and `labelSelector` of a list or watch, equality-based (`a=b`, `a==b`,
/// `a!=b`; for labels also `key` and `!key`), as kubelet and agents use them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selector {
    fields: Vec<(String, String, bool)>,
    labels: Vec<(String, Option<String>, bool)>,
}

impl Selector {
    pub(crate) fn parse(query: &BTreeMap<String, String>) -> Selector {
        let terms = |key: &str| -> Vec<String> {
            query
                .get(key)
                .map(|s| {
                    s.split(',')
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let split = |t: &str| -> (String, Option<String>, bool) {
            if let Some((k, v)) = t.split_once("!=") {
                (k.to_owned(), Some(v.to_owned()), false)
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                (k.to_owned(), Some(v.to_owned()), true)
            } else if let Some(k) = t.strip_prefix('!') {
                (k.to_owned(), None, false)
            } else {
                (t.to_owned(), None, true)
            }
        };
        Selector {
            fields: terms("fieldSelector")
                .iter()
                .map(|t| {
                    let (k, v, eq) = split(t);
                    (k, v.unwrap_or_default(), eq)
                })
                .collect(),
            labels: terms("labelSelector").iter().map(|t| split(t)).collect(),
        }
    }

    pub(crate) fn matches(&self, object: &Value) -> bool {
        let fields_ok = self.fields.iter().all(|(path, want, eq)| {
            let pointer = format!("/{}", path.replace('.', "/"));
            let have = object
                .pointer(&pointer)
                .and_then(Value::as_str)
                .unwrap_or("");
            (have == want) == *eq
        });
        let labels = &object["metadata"]["labels"];
        let labels_ok = self.labels.iter().all(|(key, want, eq)| {
            let have = labels[key.as_str()].as_str();
            match want {
                Some(want) => (have == Some(want.as_str())) == *eq,
                None => have.is_some() == *eq,
            }
        });
        fields_ok && labels_ok
    }
}

/// The query parameters of a request, decoded.
pub(crate) fn query_params(uri: &http::Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (!k.is_empty()).then(|| (percent_decode(k), percent_decode(v)))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl FakeApi {
    pub fn new() -> FakeApi {
        FakeApi {
            state: Arc::new(Mutex::new(State {
                requests: Some(Vec::new()),
                ..State::default()
            })),
        }
    }

    /// A server that keeps no request log, for workloads too large to record.
    pub fn without_request_log() -> FakeApi {
        FakeApi {
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A `kube::Client` talking to this server.
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), "default")
    }

    /// Every request so far (empty when the log is off).
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone().unwrap_or_default()
    }

    /// How many objects of kind `K` satisfy `predicate` (on their JSON, so counting a large
    /// store does not deserialize it).
    pub fn count<K: kube::Resource<DynamicType = ()>>(
        &self,
        predicate: impl Fn(&Value) -> bool,
    ) -> usize {
        let holds = holds_kind::<K>();
        self.lock()
            .objects
            .iter()
            .filter(|(c, _)| holds(c))
            .flat_map(|(_, m)| m.values())
            .filter(|v| predicate(v))
            .count()
    }

    /// The objects of a collection (see [`collection`]).
    pub fn list(&self, collection: &str) -> Vec<Value> {
        self.lock()
            .objects
            .get(collection)
            .map(|m| m.values().map(|v| Value::clone(v)).collect())
            .unwrap_or_default()
    }

    /// Typed objects of a kind, across namespaces.
    pub fn all<K: kube::Resource<DynamicType = ()> + DeserializeOwned>(&self) -> Vec<K> {
        let holds = holds_kind::<K>();
        let objects: Vec<Arc<Value>> = self
            .lock()
            .objects
            .iter()
            .filter(|(c, _)| holds(c))
            .flat_map(|(_, m)| m.values().cloned())
            .collect();
        objects
            .iter()
            .filter_map(|v| K::deserialize(v.as_ref()).ok())
            .collect()
    }

    /// Creates or replaces an object, as a user (or kubelet, scheduler) would.
    pub fn put<K: kube::Resource<DynamicType = ()> + serde::Serialize>(&self, object: &K) {
        let ns = object.meta().namespace.clone();
        let coll = collection::<K>(ns.as_deref());
        let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
        value["apiVersion"] = json!(K::api_version(&()));
        value["kind"] = json!(K::kind(&()));
        let name = object.meta().name.clone().unwrap_or_default();
        self.store(&coll, &name, value);
    }

    /// Deletes an object as a user would (honouring finalizers).
    pub fn delete<K: kube::Resource<DynamicType = ()>>(&self, namespace: Option<&str>, name: &str) {
        let coll = collection::<K>(namespace);
        let _ = self.remove(&coll, name);
    }

    fn store(&self, coll: &str, name: &str, mut value: Value) -> Value {
        let mut state = self.lock();
        let created = !state
            .objects
            .get(coll)
            .is_some_and(|m| m.contains_key(name));
        state.resource_version += 1;
        let rv = state.resource_version;
        let meta = &mut value["metadata"];
        meta["resourceVersion"] = json!(rv.to_string());
        if meta.get("uid").is_none_or(Value::is_null) {
            meta["uid"] = json!(format!("uid-{rv}"));
        }
        if meta.get("creationTimestamp").is_none_or(Value::is_null) {
            meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        let shared = Arc::new(value.clone());
        state
            .objects
            .entry(coll.to_owned())
            .or_default()
            .insert(name.to_owned(), shared.clone());
        state.notify(Change {
            resource_version: rv,
            collection: coll.into(),
            object: shared,
            change: if created {
                ChangeType::Added
            } else {
                ChangeType::Modified
            },
        });
        value
    }

    /// Deletes, or marks deleting when finalizers remain.
    fn remove(&self, coll: &str, name: &str) -> Option<Value> {
        let existing = Value::clone(self.lock().objects.get(coll)?.get(name)?);
        let has_finalizers = existing["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            let mut marked = existing;
            marked["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:01Z");
            return Some(self.store(coll, name, marked));
        }
        let mut state = self.lock();
        let mut removed = Arc::unwrap_or_clone(state.objects.get_mut(coll)?.remove(name)?);
        state.resource_version += 1;
        let rv = state.resource_version;
        removed["metadata"]["resourceVersion"] = json!(rv.to_string());
        state.notify(Change {
            resource_version: rv,
            collection: coll.into(),
            object: Arc::new(removed.clone()),
            change: ChangeType::Deleted,
        });
        Some(removed)
    }

    /// After an update, an object marked deleting whose finalizers are gone is removed.
    fn finish_deletion(&self, coll: &str, name: &str, value: &Value) {
        let deleting = !value["metadata"]["deletionTimestamp"].is_null();
        let no_finalizers = value["metadata"]["finalizers"]
            .as_array()
            .is_none_or(Vec::is_empty);
        if deleting && no_finalizers {
            let _ = self.remove(coll, name);
        }
    }

    /// A watcher stream of every object of kind `K` (all namespaces): `Init`, one `InitApply`
    /// per object, `InitDone`, then `Apply`/`Delete` as the store changes.
    pub fn watch<K>(&self) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + use<K>
    where
        K: kube::Resource<DynamicType = ()> + DeserializeOwned + Clone + Send + 'static,
    {
        let matches = holds_kind::<K>();
        // Subscribe and snapshot under one lock: nothing falls between the two, nothing twice.
        let (tx, rx) = mpsc::unbounded_channel();
        let snapshot: Vec<Arc<Value>> = {
            let mut state = self.lock();
            state.watchers.push(tx);
            state
                .objects
                .iter()
                .filter(|(c, _)| matches(c))
                .flat_map(|(_, m)| m.values().cloned())
                .collect()
        };
        let initial = std::iter::once(watcher::Event::Init)
            .chain(
                snapshot
                    .into_iter()
                    .filter_map(|v| K::deserialize(v.as_ref()).ok())
                    .map(watcher::Event::InitApply),
            )
            .chain(std::iter::once(watcher::Event::InitDone))
            .map(Ok);
        let live = futures::stream::unfold(rx, move |mut rx| {
            let matches = matches.clone();
            async move {
                while let Some(change) = rx.recv().await {
                    if !matches(&change.collection) {
                        continue;
                    }
                    let Ok(object) = K::deserialize(&*change.object) else {
                        continue;
                    };
                    let event = if change.change == ChangeType::Deleted {
                        watcher::Event::Delete(object)
                    } else {
                        watcher::Event::Apply(object)
                    };
                    return Some((Ok(event), rx));
                }
                None
            }
        });
        futures::stream::iter(initial).chain(live)
    }

    /// Records a request and answers it (everything but watches).
    pub(crate) fn respond(
        &self,
        parts: &http::request::Parts,
        bytes: &[u8],
    ) -> (StatusCode, Value) {
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(bytes).unwrap_or(Value::Null)
        };
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if let Some(log) = self.lock().requests.as_mut() {
            log.push(Recorded {
                method: parts.method.clone(),
                uri: parts.uri.to_string(),
                content_type: content_type.clone(),
                body: body.clone(),
            });
        }
        self.handle(&parts.method, &parts.uri, &content_type, body)
    }

    fn handle(
        &self,
        method: &Method,
        uri: &http::Uri,
        content_type: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let Some((coll, name, sub)) = split_path(uri.path()) else {
            return status(StatusCode::NOT_FOUND, "NotFound", format!("no route {uri}"));
        };
        let existing = name.as_ref().and_then(|n| {
            let shared = self
                .lock()
                .objects
                .get(&coll)
                .and_then(|m| m.get(n))
                .cloned();
            shared.map(Arc::unwrap_or_clone)
        });
        match (method.clone(), name) {
            (Method::GET, None) => {
                let selector = Selector::parse(&query_params(uri));
                let (items, resource_version): (Vec<Arc<Value>>, u64) = {
                    let state = self.lock();
                    let items = state
                        .objects
                        .iter()
                        .filter(|(c, _)| covers(&coll, c))
                        .flat_map(|(_, m)| m.values())
                        .filter(|v| selector.matches(v))
                        .cloned()
                        .collect();
                    (items, state.resource_version)
                };
                let items: Vec<Value> = items.into_iter().map(Arc::unwrap_or_clone).collect();
                (
                    StatusCode::OK,
                    json!({"apiVersion": "v1", "kind": "List",
                           "metadata": {"resourceVersion": resource_version.to_string()},
                           "items": items}),
                )
            }
            (Method::GET, Some(name)) => match existing {
                Some(v) => (StatusCode::OK, v),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{name} not found"),
                ),
            },
            (Method::POST, None) => {
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let taken = self
                    .lock()
                    .objects
                    .get(&coll)
                    .is_some_and(|m| m.contains_key(&name));
                if taken {
                    return status(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        format!("{name} already exists"),
                    );
                }
                (StatusCode::CREATED, self.store(&coll, &name, body))
            }
            (Method::PUT, Some(name)) => {
                let Some(old) = existing else {
                    return status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        format!("{name} not found"),
                    );
                };
                let wanted_rv = &body["metadata"]["resourceVersion"];
                if !wanted_rv.is_null() && *wanted_rv != old["metadata"]["resourceVersion"] {
                    return status(
                        StatusCode::CONFLICT,
                        "Conflict",
                        format!("{name}: resourceVersion changed"),
                    );
                }
                let mut new = body;
                if sub.as_deref() == Some("status") {
                    let mut whole = old;
                    whole["status"] = new["status"].take();
                    new = whole;
                }
                let stored = self.store(&coll, &name, new);
                self.finish_deletion(&coll, &name, &stored);
                (StatusCode::OK, stored)
            }
            (Method::PATCH, Some(name)) => {
                let is_apply = content_type.starts_with("application/apply-patch");
                let mut target = match existing {
                    Some(v) => v,
                    None if is_apply => json!({}),
                    None => {
                        return status(
                            StatusCode::NOT_FOUND,
                            "NotFound",
                            format!("{name} not found"),
                        );
                    }
                };
                if content_type.starts_with("application/json-patch") {
                    let Ok(mut patch) = serde_json::from_value::<json_patch::Patch>(body) else {
                        return status(
                            StatusCode::BAD_REQUEST,
                            "BadRequest",
                            "bad JSON patch".into(),
                        );
                    };
                    // As the API server does: `test` for null passes on a missing field.
                    patch.0.retain(|op| match op {
                        json_patch::PatchOperation::Test(t) if t.value.is_null() => {
                            target.pointer(t.path.as_str()).is_some()
                        }
                        _ => true,
                    });
                    if let Err(e) = json_patch::patch(&mut target, &patch) {
                        return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", e.to_string());
                    }
                } else if sub.as_deref() == Some("status") {
                    let status_patch = json!({"status": body["status"].clone()});
                    json_patch::merge(&mut target, &status_patch);
                } else {
                    json_patch::merge(&mut target, &body);
                }
                let stored = self.store(&coll, &name, target);
                self.finish_deletion(&coll, &name, &stored);
                (StatusCode::OK, stored)
            }
            (Method::DELETE, Some(name)) => match self.remove(&coll, &name) {
                Some(v) => (StatusCode::OK, v),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{name} not found"),
                ),
            },
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{method} {uri}"),
            ),
        }
    }
}

impl tower_service::Service<Request<Body>> for FakeApi {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let api = self.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let (code, value) = api.respond(&parts, &bytes);
            let bytes = serde_json::to_vec(&value).unwrap_or_default();
            Ok(Response::builder()
                .status(code)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(bytes)))
                .unwrap_or_default())
        })
    }
}
