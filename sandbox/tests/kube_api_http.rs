//! The API stand-in over HTTP, through a real kube-rs client built from the kubeconfig it
//! writes: watches across namespaces feed a reflector, selectors filter, and a watch that
//! resumes from a resourceVersion too old gets 410 Expired, as from a real API server.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod, PodSpec};
use kube::api::{
    DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, ResourceExt};
use sandbox::kube_api::FakeApi;

async fn client(served: &sandbox::kube_api::ServedApi) -> kube::Client {
    let dir = std::env::temp_dir().join(format!("kovn-kubeconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kubeconfig");
    served.write_kubeconfig(&path).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn pod(name: &str, node: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn a_reflector_over_http_follows_creates_patches_and_deletes_across_namespaces() {
    let api = FakeApi::new();
    let served = api.serve().await.unwrap();
    let client = client(&served).await;
    let a: Api<Pod> = Api::namespaced(client.clone(), "a");
    let b: Api<Pod> = Api::namespaced(client.clone(), "b");
    a.create(&PostParams::default(), &pod("p1", "n1"))
        .await
        .unwrap();

    let (store, writer) = reflector::store();
    let watch = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .for_each(|_| futures::future::ready(()));
    let task = tokio::spawn(watch);
    store.wait_until_ready().await.unwrap();
    assert_eq!(
        store.state().len(),
        1,
        "the initial list crosses namespaces"
    );

    b.create(&PostParams::default(), &pod("p2", "n2"))
        .await
        .unwrap();
    a.patch(
        "p1",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"k": "v"}}})),
    )
    .await
    .unwrap();
    eventually("p2 and p1's annotation", || {
        let pods: BTreeMap<String, Pod> = store
            .state()
            .iter()
            .map(|p| (p.name_any(), (**p).clone()))
            .collect();
        pods.contains_key("p2")
            && pods["p1"].annotations().get("k").map(String::as_str) == Some("v")
    })
    .await;
    a.delete("p1", &DeleteParams::default()).await.unwrap();
    eventually("p1 deleted", || {
        store
            .state()
            .iter()
            .map(|p| p.name_any())
            .collect::<Vec<_>>()
            == ["p2"]
    })
    .await;
    task.abort();

    // Field selectors, as an agent lists the pods of its node.
    b.create(&PostParams::default(), &pod("p3", "n1"))
        .await
        .unwrap();
    let on_n1 = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().fields("spec.nodeName=n1"))
        .await
        .unwrap();
    assert_eq!(
        on_n1.items.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
        ["p3"]
    );
    let watched: Vec<String> = Api::<Pod>::all(client.clone())
        .watch(
            &WatchParams::default().fields("spec.nodeName=n2").timeout(1),
            "0",
        )
        .await
        .unwrap()
        .try_filter_map(|e| async move {
            Ok(match e {
                WatchEvent::Added(p) => Some(p.name_any()),
                _ => None,
            })
        })
        .try_collect()
        .await
        .unwrap();
    assert_eq!(watched, ["p2"]);
}

#[tokio::test]
async fn a_watch_from_a_forgotten_resource_version_gets_410_expired() {
    let api = FakeApi::without_request_log();
    // More changes than the stand-in remembers.
    for i in 0..10_050 {
        api.put(&Namespace {
            metadata: ObjectMeta {
                name: Some(format!("ns{i}")),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        });
    }
    let served = api.serve().await.unwrap();
    let client = client(&served).await;
    let namespaces: Api<Namespace> = Api::all(client);
    let mut events = namespaces
        .watch(&WatchParams::default().timeout(1), "5")
        .await
        .unwrap()
        .boxed();
    match events.next().await {
        Some(Ok(WatchEvent::Error(e))) => assert_eq!(e.code, 410),
        other => panic!("expected 410 Expired, got {other:?}"),
    }
    // A recent one resumes with exactly the changes after it.
    let mut events = namespaces
        .watch(&WatchParams::default().timeout(1), "10049")
        .await
        .unwrap()
        .boxed();
    match events.next().await {
        Some(Ok(WatchEvent::Added(ns))) => assert_eq!(ns.name_any(), "ns10049"),
        other => panic!("expected ns10049, got {other:?}"),
    }
}
