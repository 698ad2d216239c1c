//! The client against a 3-member Raft OVN_Northbound cluster: it connects to the leader; when
//! the leader is killed, the transaction in flight is reported as failed, the client finds the
//! new leader and resumes its monitor from the last transaction id, later transactions succeed,
//! and nothing is applied twice.

use std::time::Duration;

use ovsdb::{
    Client, ClientConfig, Condition, Datum, Error, MonitorRequest, Transaction, WaitUntil,
};
use sandbox::RaftCluster;

mod common;
use common::{cache_contents, dump_contents};

const NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";
const NB: &str = "OVN_Northbound";

fn add_switch(t: &mut Transaction, name: &str) {
    t.insert("Logical_Switch", [("name", Datum::atom(name))]);
}

fn switch_names(client: &Client) -> Vec<String> {
    let mut names: Vec<String> = client.read(|c| {
        c.table("Logical_Switch")
            .unwrap()
            .rows()
            .map(|r| r.string("name").unwrap().to_owned())
            .collect()
    });
    names.sort();
    names
}

#[tokio::test]
async fn leader_killed_client_follows_the_new_leader_and_applies_nothing_twice() {
    let mut cluster = RaftCluster::start(NB_SCHEMA, NB, 3).expect("3-member Raft cluster");
    let remotes = cluster.remotes();
    let remote_refs: Vec<&str> = remotes.iter().map(String::as_str).collect();
    let mut config =
        ClientConfig::new(&remote_refs, NB).monitor(MonitorRequest::table("Logical_Switch"));
    config.backoff_min = Duration::from_millis(50);
    config.backoff_max = Duration::from_millis(500);
    let client = Client::connect(config).await.expect("client");

    let leader = cluster.leader().expect("a leader");
    assert_eq!(
        client.current_remote().as_deref(),
        Some(remotes[leader].as_str()),
        "connected to the leader"
    );

    for i in 0..10 {
        let mut t = Transaction::new(NB);
        add_switch(&mut t, &format!("before{i}"));
        client
            .transact(&t)
            .await
            .expect("insert before the failover");
    }
    assert!(
        client.last_txn_id().is_some(),
        "a clustered database reports transaction ids"
    );

    // A transaction the leader holds (waiting for a row that never appears) when it dies.
    let mut held = Transaction::new(NB);
    held.wait(
        "Logical_Switch",
        &[Condition::eq("name", "never")],
        &["name"],
        WaitUntil::NotEqual,
        &[],
        10_000,
    );
    add_switch(&mut held, "in-flight");
    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.transact(&held).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.kill_member(leader);
    let result = pending.await.unwrap();
    assert!(
        matches!(result, Err(Error::Disconnected { .. })),
        "in-flight transaction: {result:?}"
    );

    // Later transactions succeed, through whichever member became leader.
    for i in 0..10 {
        let mut t = Transaction::new(NB);
        add_switch(&mut t, &format!("after{i}"));
        client
            .transact(&t)
            .await
            .expect("insert after the failover");
    }
    let new_leader = cluster.leader().expect("a new leader");
    assert_ne!(new_leader, leader);
    assert_eq!(
        client.current_remote().as_deref(),
        Some(remotes[new_leader].as_str())
    );
    let stats = client.stats();
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert!(
        stats.resumed_resyncs >= 1,
        "the monitor resumed from the last transaction id: {stats:?}"
    );

    // Nothing twice, nothing lost, the in-flight one not applied behind the caller's back.
    let mut expected: Vec<String> = (0..10)
        .flat_map(|i| [format!("after{i}"), format!("before{i}")])
        .collect();
    expected.sort();
    client
        .wait_until(Duration::from_secs(10), |c| {
            c.table("Logical_Switch").unwrap().len() == 20
        })
        .await
        .expect("20 switches in the cache");
    assert_eq!(switch_names(&client), expected);
    let dump = dump_contents(
        &cluster.dump(new_leader, "json").expect("dump"),
        client.schema(),
    );
    assert_eq!(
        cache_contents(&client)["Logical_Switch"],
        dump["Logical_Switch"]
    );

    // The killed member comes back and catches up; the client is unaffected.
    cluster
        .start_member(leader)
        .expect("restart the old leader");
    let mut t = Transaction::new(NB);
    add_switch(&mut t, "last");
    client
        .transact(&t)
        .await
        .expect("insert with the old leader back");
    client
        .wait_until(Duration::from_secs(10), |c| {
            c.table("Logical_Switch").unwrap().len() == 21
        })
        .await
        .expect("21 switches");
}
