//! The real `kovn-controller` binary as a process, against the API stand-in over HTTP (a
//! kubeconfig, as in a cluster) and a real OVN_Northbound: it takes the Lease, reports ready,
//! routes pods; killed with SIGKILL and started again (a container restart: same pod name),
//! it keeps every address and hands out new ones without a duplicate.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use api::annotations;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, PodSpec};
use kube::ResourceExt;
use kube::api::ObjectMeta;
use sandbox::StandaloneDb;
use sandbox::kube_api::{FakeApi, ServedApi};

struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(served: &ServedApi, nb: &StandaloneDb, metrics_port: u16) -> Controller {
    let dir = std::env::temp_dir().join(format!("kovn-ctl-process-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    served.write_kubeconfig(&kubeconfig).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_kovn-controller"))
        .arg(format!("--ovn-nb-addr={}", nb.remote()))
        .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
        .env("KUBECONFIG", &kubeconfig)
        .env("KUBE_NAMESPACE", "kube-system")
        .env("POD_NAME", "kovn-controller-abc")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("kovn-controller");
    Controller(child)
}

fn pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some("n1".into()),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

/// Pod name → its `ip_address` annotation, for routed pods.
fn routed(api: &FakeApi) -> std::collections::BTreeMap<String, String> {
    api.all::<Pod>()
        .into_iter()
        .filter(|p| p.annotations().get(annotations::ROUTED).map(String::as_str) == Some("true"))
        .map(|p| {
            (
                p.name_any(),
                p.annotations()[annotations::IP_ADDRESS].clone(),
            )
        })
        .collect()
}

async fn eventually(
    what: &str,
    limit: Duration,
    controller: &mut Controller,
    mut check: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + limit;
    while !check() {
        if let Ok(Some(status)) = controller.0.try_wait() {
            panic!("kovn-controller exited ({status}) while waiting for {what}");
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.write_all(b"GET /readyz HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_takes_the_lease_routes_pods_and_survives_sigkill() {
    let nb = StandaloneDb::start("/usr/share/ovn/ovn-nb.ovsschema").expect("NB");
    assert!(
        Command::new("ovn-nbctl")
            .args([&format!("--db={}", nb.remote()), "--no-wait", "init"])
            .status()
            .unwrap()
            .success()
    );
    let api = FakeApi::new();
    api.put(&Namespace {
        metadata: ObjectMeta {
            name: Some("default".into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    });
    api.put(&Node {
        metadata: ObjectMeta {
            name: Some("n1".into()),
            ..ObjectMeta::default()
        },
        ..Node::default()
    });
    for i in 0..20 {
        api.put(&pod(&format!("p{i}")));
    }
    let served = api.serve().await.unwrap();
    let port = free_port();
    let mut first = start(&served, &nb, port);
    eventually(
        "20 pods routed",
        Duration::from_secs(30),
        &mut first,
        || routed(&api).len() == 20,
    )
    .await;
    assert!(ready(port), "/readyz not 200 while reconciling");
    let lease = api.list("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases");
    assert_eq!(lease.len(), 1);
    assert_eq!(lease[0]["metadata"]["name"], "kube-ovn-controller");
    assert_eq!(lease[0]["spec"]["holderIdentity"], "kovn-controller-abc");
    // The default subnets were created as objects, as Kube-OVN does.
    let subnets: BTreeSet<String> = api
        .all::<api::Subnet>()
        .iter()
        .map(|s| s.name_any())
        .collect();
    assert!(subnets.contains("ovn-default") && subnets.contains("join"));

    // SIGKILL mid-flight: 20 more pods arrive as it dies.
    let before = routed(&api);
    for i in 20..40 {
        api.put(&pod(&format!("p{i}")));
    }
    drop(first);
    let mut second = start(&served, &nb, port);
    eventually(
        "40 pods routed after restart",
        Duration::from_secs(30),
        &mut second,
        || routed(&api).len() == 40,
    )
    .await;
    let after = routed(&api);
    for (pod, ip) in &before {
        assert_eq!(&after[pod], ip, "{pod} changed address across the restart");
    }
    let distinct: BTreeSet<&String> = after.values().collect();
    assert_eq!(
        distinct.len(),
        40,
        "an address was handed out twice: {after:?}"
    );
}
