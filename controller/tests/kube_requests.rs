//! The exact Kubernetes requests the controller makes, asserted with a tower-test mock API.

use std::time::Duration;

use controller::leader::{LEASE_NAME, LeaderElector};
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

async fn expect(
    handle: &mut Handle,
    method: Method,
    path: &str,
) -> (Value, tower_test::mock::SendResponse<Response<Body>>) {
    let (request, send) = handle.next_request().await.expect("a request");
    assert_eq!(request.method(), method, "method of {}", request.uri());
    assert_eq!(request.uri().path(), path);
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (body, send)
}

fn respond(send: tower_test::mock::SendResponse<Response<Body>>, code: StatusCode, body: Value) {
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    );
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

#[tokio::test]
async fn leader_election_creates_the_lease_then_renews_it_with_compare_and_swap() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let elector = LeaderElector::new(client, "kube-system", "ctl-a", Duration::from_secs(15));
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{LEASE_NAME}");
    let collection = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases";

    let attempt = tokio::spawn({
        let e = elector.clone();
        async move { e.try_acquire_or_renew().await }
    });
    let (_, send) = expect(&mut handle, Method::GET, &path).await;
    respond(send, StatusCode::NOT_FOUND, not_found());
    let (body, send) = expect(&mut handle, Method::POST, collection).await;
    assert_eq!(body["metadata"]["name"], LEASE_NAME);
    assert_eq!(body["spec"]["holderIdentity"], "ctl-a");
    assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
    assert!(body["spec"]["renewTime"].is_string());
    let mut stored = body.clone();
    stored["metadata"]["resourceVersion"] = json!("7");
    respond(send, StatusCode::CREATED, stored.clone());
    assert!(attempt.await.unwrap().unwrap(), "did not become leader");

    // Renewal: a PUT carrying the resourceVersion it read (a conflict means someone else won).
    let attempt = tokio::spawn({
        let e = elector.clone();
        async move { e.try_acquire_or_renew().await }
    });
    let (_, send) = expect(&mut handle, Method::GET, &path).await;
    respond(send, StatusCode::OK, stored.clone());
    let (body, send) = expect(&mut handle, Method::PUT, &path).await;
    assert_eq!(body["metadata"]["resourceVersion"], "7");
    assert_eq!(body["spec"]["holderIdentity"], "ctl-a");
    respond(
        send,
        StatusCode::CONFLICT,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "changed"}),
    );
    assert!(
        !attempt.await.unwrap().unwrap(),
        "a conflict must not count as leadership"
    );

    // Someone else holds a fresh lease: no write at all.
    let attempt = tokio::spawn({
        let e = elector.clone();
        async move { e.try_acquire_or_renew().await }
    });
    let (_, send) = expect(&mut handle, Method::GET, &path).await;
    let mut theirs = stored.clone();
    theirs["spec"]["holderIdentity"] = json!("ctl-b");
    theirs["spec"]["renewTime"] = json!(k8s_openapi::jiff::Timestamp::now().to_string());
    respond(send, StatusCode::OK, theirs);
    assert!(!attempt.await.unwrap().unwrap());
    assert!(
        tokio::time::timeout(Duration::from_millis(100), handle.next_request())
            .await
            .is_err(),
        "wrote to a lease another instance holds"
    );
}
