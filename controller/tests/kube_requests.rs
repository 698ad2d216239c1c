//! The exact Kubernetes requests the controller makes, asserted with a tower-test mock API:
//! the leader Lease, a pod's IP object and annotations, an invalid Subnet's event and status.
//! Reconcilers run against a real OVN_Northbound and reflector stores fed with watcher events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use api::{IP, Subnet, SubnetSpec, Vpc};
use controller::context::{Context, Settings, Stores};
use controller::ipam::SubnetAllocator;
use controller::leader::{LEASE_NAME, LeaderElector};
use controller::metrics::Metrics;
use controller::nb::{NbObserver, NbWriter};
use controller::reconcile::{self, FINALIZER};
use controller::topology;
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, PodSpec};
use kube::api::ObjectMeta;
use kube::client::Body;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use sandbox::StandaloneDb;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A request as the mock saw it.
struct Seen {
    query: String,
    content_type: String,
    body: Value,
}

async fn expect_request(
    handle: &mut Handle,
    method: Method,
    path: &str,
) -> (Seen, tower_test::mock::SendResponse<Response<Body>>) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("no request; expected {method} {path}"))
        .expect("a request");
    assert_eq!(request.method(), method, "method of {}", request.uri());
    assert_eq!(request.uri().path(), path);
    let query = request.uri().query().unwrap_or_default().to_owned();
    let content_type = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (
        Seen {
            query,
            content_type,
            body,
        },
        send,
    )
}

/// A query string's parameters, sorted.
fn query(q: &str) -> Vec<&str> {
    let mut parts: Vec<&str> = q.split('&').filter(|p| !p.is_empty()).collect();
    parts.sort();
    parts
}

async fn expect(
    handle: &mut Handle,
    method: Method,
    path: &str,
) -> (Value, tower_test::mock::SendResponse<Response<Body>>) {
    let (seen, send) = expect_request(handle, method, path).await;
    (seen.body, send)
}

/// The next request is kovn-controller's Warning event `reason` on the `kind` named `name`.
async fn expect_warning(
    handle: &mut Handle,
    reason: &str,
    kind: &str,
    name: &str,
) -> (Value, tower_test::mock::SendResponse<Response<Body>>) {
    let (event, send) = expect(
        handle,
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/default/events",
    )
    .await;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], reason);
    assert_eq!(event["regarding"]["kind"], kind);
    assert_eq!(event["regarding"]["name"], name);
    assert_eq!(event["reportingController"], "kovn-controller");
    (event, send)
}

async fn expect_silence(handle: &mut Handle, why: &str) {
    if let Ok(Some((request, _))) =
        tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await
    {
        panic!("{why}: unexpected {} {}", request.method(), request.uri());
    }
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

/// A store holding `objects`, ready (Init, InitApply…, InitDone), and its writer.
fn store<K>(objects: Vec<K>) -> (reflector::Store<K>, Writer<K>)
where
    K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let (reader, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for o in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(o));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    (reader, writer)
}

struct Quiet;
impl NbObserver for Quiet {}

struct Fixture {
    ctx: Arc<Context>,
    handle: Handle,
    nb: ovsdb::Client,
    ips: Writer<IP>,
    _db: StandaloneDb,
}

fn subnet(name: &str, cidr: &str, created: i64) -> Subnet {
    let mut s = Subnet::new(
        name,
        SubnetSpec {
            cidr_block: cidr.into(),
            ..SubnetSpec::default()
        },
    );
    s.metadata.finalizers = Some(vec![FINALIZER.into()]);
    s.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_767_225_600 + created).unwrap(),
    ));
    s
}

/// A context whose Kubernetes client is the mock, with `ovn-default` in the stores, in IPAM
/// and (as a switch) in a real NB.
async fn fixture(subnets: Vec<Subnet>, pods: Vec<Pod>) -> Fixture {
    let db = StandaloneDb::start("/usr/share/ovn/ovn-nb.ovsschema").expect("NB");
    let status = std::process::Command::new("ovn-nbctl")
        .args([
            &format!("--db={}", db.remote()),
            "--no-wait",
            "init",
            "--",
            "ls-add",
            "ovn-default",
        ])
        .status()
        .expect("ovn-nbctl");
    assert!(status.success());
    let nb = ovsdb::Client::connect(topology::nb_client_config(&[&db.remote()]))
        .await
        .expect("NB client");
    nb.wait_until(Duration::from_secs(5), |c| {
        c.table(<ovsdb::models::ovn_northbound::LogicalSwitch as ovsdb::Model>::TABLE)
            .is_some_and(|t| t.rows().any(|r| r.string("name") == Some("ovn-default")))
    })
    .await
    .unwrap();
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let kube = kube::Client::new(service, "default");
    let (ips, ips_writer) = store::<IP>(vec![]);
    let stores = Stores {
        pods: store(pods).0,
        namespaces: store::<Namespace>(vec![]).0,
        nodes: store::<Node>(vec![]).0,
        subnets: store(subnets).0,
        vpcs: store::<Vpc>(vec![]).0,
        ips,
        network_policies: store::<k8s_openapi::api::networking::v1::NetworkPolicy>(vec![]).0,
        vlans: store::<api::Vlan>(vec![]).0,
        provider_networks: store::<api::ProviderNetwork>(vec![]).0,
        external_gateway: store::<k8s_openapi::api::core::v1::ConfigMap>(vec![]).0,
        ovn_eips: store::<api::OvnEip>(vec![]).0,
        ovn_fips: store::<api::OvnFip>(vec![]).0,
        ovn_snat_rules: store::<api::OvnSnatRule>(vec![]).0,
        ovn_dnat_rules: store::<api::OvnDnatRule>(vec![]).0,
        vpc_nat_gateways: store::<api::VpcNatGateway>(vec![]).0,
        iptables_eips: store::<api::IptablesEIP>(vec![]).0,
        iptables_fip_rules: store::<api::IptablesFIPRule>(vec![]).0,
        iptables_snat_rules: store::<api::IptablesSnatRule>(vec![]).0,
        iptables_dnat_rules: store::<api::IptablesDnatRule>(vec![]).0,
    };
    let ctx = Arc::new(Context::new(
        kube,
        NbWriter::start(nb.clone(), Arc::new(Quiet)),
        Settings::default(),
        stores,
        Arc::new(Metrics::new()),
    ));
    ctx.ipam()
        .add_subnet(SubnetAllocator::new("ovn-default", "10.16.0.0/16", "10.16.0.1", &[]).unwrap());
    Fixture {
        ctx,
        handle,
        nb,
        ips: ips_writer,
        _db: db,
    }
}

fn web_pod(annotations: BTreeMap<String, String>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some("n1".into()),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_reconcile_applies_the_ip_object_then_patches_annotations_and_is_idempotent() {
    let default = subnet("ovn-default", "10.16.0.0/16", 0);
    let mut f = fixture(vec![default], vec![]).await;
    let pod = web_pod(BTreeMap::new());
    let run = tokio::spawn(reconcile::pod::reconcile(
        Arc::new(pod.clone()),
        f.ctx.clone(),
    ));

    // 1. The IP object, by server-side apply with kovn's field manager, forced.
    let (ip, send) = expect_request(
        &mut f.handle,
        Method::PATCH,
        "/apis/kubeovn.io/v1/ips/web.default",
    )
    .await;
    assert_eq!(ip.content_type, "application/apply-patch+yaml");
    assert_eq!(
        query(&ip.query),
        ["fieldManager=kovn-controller", "force=true"]
    );
    assert_eq!(ip.body["apiVersion"], "kubeovn.io/v1");
    assert_eq!(ip.body["kind"], "IP");
    assert_eq!(ip.body["metadata"]["name"], "web.default");
    let spec = &ip.body["spec"];
    assert_eq!(spec["podName"], "web");
    assert_eq!(spec["namespace"], "default");
    assert_eq!(spec["subnet"], "ovn-default");
    assert_eq!(spec["nodeName"], "n1");
    assert_eq!(spec["ipAddress"], "10.16.0.2");
    assert_eq!(spec["v4IpAddress"], "10.16.0.2");
    let mac = spec["macAddress"].as_str().unwrap().to_owned();
    let mut stored_ip = ip.body.clone();
    stored_ip["metadata"]["resourceVersion"] = json!("11");
    respond(send, StatusCode::OK, stored_ip.clone());

    // 2. The annotations Kube-OVN's CNI waits for, in one merge patch, routed included: the
    //    port is already in NB.
    let (patch, send) = expect_request(
        &mut f.handle,
        Method::PATCH,
        "/api/v1/namespaces/default/pods/web",
    )
    .await;
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert!(query(&patch.query).is_empty(), "{}", patch.query);
    let annotations: BTreeMap<String, String> =
        serde_json::from_value(patch.body["metadata"]["annotations"].clone()).unwrap();
    let expected: BTreeMap<String, String> = [
        ("ovn.kubernetes.io/allocated", "true"),
        ("ovn.kubernetes.io/cidr", "10.16.0.0/16"),
        ("ovn.kubernetes.io/gateway", "10.16.0.1"),
        ("ovn.kubernetes.io/ip_address", "10.16.0.2"),
        ("ovn.kubernetes.io/logical_switch", "ovn-default"),
        ("ovn.kubernetes.io/mac_address", mac.as_str()),
        ("ovn.kubernetes.io/routed", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(annotations, expected);
    assert_eq!(
        patch.body.as_object().unwrap().len(),
        1,
        "only metadata is patched"
    );
    let mut patched = serde_json::to_value(&pod).unwrap();
    patched["metadata"]["annotations"] = json!(annotations);
    respond(send, StatusCode::OK, patched);
    run.await.unwrap().expect("reconcile");
    expect_silence(&mut f.handle, "after the annotations").await;

    let port =
        f.nb.read(topology::owned_ports)
            .remove("web.default")
            .expect("NB port");
    assert_eq!(port.addresses, vec![format!("{mac} 10.16.0.2")]);
    assert_eq!(port.port_security, vec![format!("{mac} 10.16.0.2")]);

    // Again, with what it wrote observed: no request at all, the same address.
    f.ips.apply_watcher_event(&watcher::Event::Apply(
        serde_json::from_value::<IP>(stored_ip).unwrap(),
    ));
    reconcile::pod::reconcile(Arc::new(web_pod(annotations)), f.ctx.clone())
        .await
        .expect("second reconcile");
    expect_silence(&mut f.handle, "reconciling an up-to-date pod").await;
    assert_eq!(
        f.ctx
            .ipam()
            .lookup(&api::Owner::pod("default", "web"))
            .unwrap()
            .ips,
        vec!["10.16.0.2".parse::<std::net::IpAddr>().unwrap()]
    );
}

/// A NetworkPolicy kovn cannot program (a logging verdict it does not know) gets Kube-OVN's
/// `CreateACLFailed` warning event naming the problem, and nothing in NB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_policy_that_cannot_be_programmed_gets_a_warning_event_and_no_rows() {
    let mut f = fixture(vec![subnet("ovn-default", "10.16.0.0/16", 0)], vec![]).await;
    let policy: k8s_openapi::api::networking::v1::NetworkPolicy =
        serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "logged", "namespace": "default", "annotations": {
                "ovn.kubernetes.io/enable_log": "true",
                "ovn.kubernetes.io/log_acl_actions": "drop,dorp"}},
            "spec": {"podSelector": {}}
        }))
        .unwrap();
    let run = tokio::spawn(reconcile::network_policy::reconcile(
        Arc::new(policy),
        f.ctx.clone(),
    ));
    let (event, send) =
        expect_warning(&mut f.handle, "CreateACLFailed", "NetworkPolicy", "logged").await;
    let note = event["note"].as_str().unwrap();
    assert!(note.contains("dorp"), "the event names the problem: {note}");
    respond(send, StatusCode::CREATED, event.clone());
    let result = run.await.unwrap();
    assert!(result.is_err(), "retried with backoff: {result:?}");
    expect_silence(&mut f.handle, "nothing else is written to the API").await;
    let groups = f.nb.read(|c| {
        c.table(<ovsdb::models::ovn_northbound::PortGroup as ovsdb::Model>::TABLE)
            .map_or(0, |t| t.rows().count())
    });
    assert_eq!(groups, 0, "no port group for a policy that failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlapping_subnet_gets_a_warning_event_and_a_status_patch_and_nothing_else() {
    let default = subnet("ovn-default", "10.16.0.0/16", 0);
    let bad = subnet("bad", "10.16.5.0/24", 1);
    let mut f = fixture(vec![default, bad.clone()], vec![]).await;
    let switches = |nb: &ovsdb::Client| {
        nb.read(|c| {
            c.table(<ovsdb::models::ovn_northbound::LogicalSwitch as ovsdb::Model>::TABLE)
                .unwrap()
                .rows()
                .count()
        })
    };
    let before = switches(&f.nb);
    let run = tokio::spawn(reconcile::subnet::reconcile(
        Arc::new(bad.clone()),
        f.ctx.clone(),
    ));

    // 1. A Warning event on the Subnet, naming the overlap.
    let (event, send) = expect_warning(&mut f.handle, "ValidationFailed", "Subnet", "bad").await;
    let note = event["note"].as_str().unwrap();
    assert!(
        note.contains("10.16.0.0/16") && note.contains("ovn-default"),
        "the event says what it overlaps: {note}"
    );
    respond(send, StatusCode::CREATED, event.clone());

    // 2. A merge patch of the status subresource: Validated=False, reason CIDROverlap.
    let (status, send) = expect_request(
        &mut f.handle,
        Method::PATCH,
        "/apis/kubeovn.io/v1/subnets/bad/status",
    )
    .await;
    assert_eq!(status.content_type, "application/merge-patch+json");
    let conditions = status.body["status"]["conditions"].as_array().unwrap();
    let validated = conditions
        .iter()
        .find(|c| c["type"] == "Validated")
        .expect("a Validated condition");
    assert_eq!(validated["status"], "False");
    assert_eq!(validated["reason"], "CIDROverlap");
    assert_eq!(
        status.body.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["status"],
        "only the status is patched"
    );
    let mut stored = serde_json::to_value(&bad).unwrap();
    stored["status"] = status.body["status"].clone();
    respond(send, StatusCode::OK, stored);
    run.await
        .unwrap()
        .expect("an invalid subnet is not a reconcile error");
    expect_silence(&mut f.handle, "after the status").await;

    // Nothing else moved: no switch, no IPAM pool.
    assert_eq!(switches(&f.nb), before);
    assert!(f.ctx.ipam().subnet("bad").is_none());
}
