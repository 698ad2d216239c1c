//! The monitored cache against a real ovsdb-server: updates arrive in order, conditional
//! monitors hold exactly the matching rows, indexes find rows, and after a server restart (clean
//! or crash) the client reconnects and its cache equals `ovsdb-client dump` with no update lost.

use std::time::Duration;

use ovsdb::{
    ChangeKind, Client, ClientConfig, Condition, Datum, Error, Function, IndexSpec, MonitorRequest,
    Mutation, Transaction, WaitUntil,
};
use sandbox::StandaloneDb;

mod common;
use common::{cache_contents, dump_contents, kinds_schema};

const WAIT: Duration = Duration::from_secs(10);

fn config(db: &StandaloneDb) -> ClientConfig {
    let mut config = ClientConfig::new(&[&db.remote()], "Kinds")
        .monitor(MonitorRequest::table("Thing"))
        .monitor(MonitorRequest::table("Part"))
        .index(IndexSpec::new("Thing", &["labels:pod"]));
    config.backoff_min = Duration::from_millis(50);
    config.backoff_max = Duration::from_millis(200);
    config
}

fn insert_thing(t: &mut Transaction, name: &str, count: i64) -> usize {
    t.insert(
        "Thing",
        [("name", Datum::atom(name)), ("count", Datum::atom(count))],
    )
}

async fn assert_cache_equals_server(db: &StandaloneDb, client: &Client) {
    // The cache may lag the server by one notification; give it a moment to settle.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let server = dump_contents(&db.dump("json").expect("dump"), client.schema());
        let cache = cache_contents(client);
        if server == cache {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            assert_eq!(cache, server, "cache differs from the server");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn updates_arrive_in_order_and_the_cache_matches_the_server() {
    let db = StandaloneDb::start(&kinds_schema()).expect("ovsdb-server");
    let client = Client::connect(config(&db)).await.expect("client");
    let mut changes = client.subscribe();

    let mut t = Transaction::new("Kinds");
    let i = insert_thing(&mut t, "a", 1);
    let uuid = client.transact_synced(&t).await.unwrap().uuid(i).unwrap();
    for n in 2..=20 {
        let mut t = Transaction::new("Kinds");
        t.update(
            "Thing",
            &[Condition::uuid(uuid)],
            [("count", Datum::atom(n))],
        );
        client.transact(&t).await.unwrap();
    }
    let mut t = Transaction::new("Kinds");
    t.mutate(
        "Thing",
        &[Condition::uuid(uuid)],
        &[
            Mutation::insert("tags", Datum::set(["x", "y"])),
            Mutation::insert("labels", Datum::map([("pod", "default/p1")])),
        ],
    );
    client.transact(&t).await.unwrap();
    let mut t = Transaction::new("Kinds");
    t.delete("Thing", &[Condition::uuid(uuid)]);
    client.transact(&t).await.unwrap();

    // Insert, 19 modifications in order, the mutation, the delete.
    let first = changes.recv().await.unwrap();
    assert_eq!(
        (first.kind, first.new.as_ref().unwrap().integer("count")),
        (ChangeKind::Insert, Some(1))
    );
    for n in 2..=20 {
        let c = changes.recv().await.unwrap();
        assert_eq!(c.kind, ChangeKind::Modify);
        assert_eq!(
            c.new.unwrap().integer("count"),
            Some(n),
            "modification out of order"
        );
    }
    let mutated = changes.recv().await.unwrap().new.unwrap();
    assert_eq!(mutated.get("tags"), Some(&Datum::set(["x", "y"])));
    assert_eq!(mutated.map_value("labels", "pod"), Some("default/p1"));
    let deleted = changes.recv().await.unwrap();
    assert_eq!(deleted.kind, ChangeKind::Delete);
    assert_eq!(deleted.uuid, uuid);
    assert_cache_equals_server(&db, &client).await;
}

#[tokio::test]
async fn conditional_monitor_holds_exactly_the_matching_rows() {
    let db = StandaloneDb::start(&kinds_schema()).expect("ovsdb-server");
    let mut cfg = config(&db);
    cfg.monitor = vec![
        MonitorRequest::table("Thing")
            .columns(&["name", "count"])
            .conditions(vec![Condition::new(
                "count",
                Function::Ge,
                Datum::atom(10i64),
            )]),
    ];
    let client = Client::connect(cfg).await.expect("client");
    let mut t = Transaction::new("Kinds");
    for (name, count) in [("low", 1), ("high", 10), ("higher", 50)] {
        insert_thing(&mut t, name, count);
    }
    client.transact(&t).await.unwrap();
    client
        .wait_until(WAIT, |c| c.table("Thing").unwrap().len() == 2)
        .await
        .expect("the two matching rows");
    let names = |client: &Client| -> Vec<String> {
        let mut v: Vec<String> = client.read(|c| {
            c.table("Thing")
                .unwrap()
                .rows()
                .map(|r| r.string("name").unwrap().to_owned())
                .collect()
        });
        v.sort();
        v
    };
    assert_eq!(names(&client), ["high", "higher"]);
    // Only the monitored columns are cached.
    client.read(|c| {
        for row in c.table("Thing").unwrap().rows() {
            assert_eq!(
                row.columns().map(|(k, _)| k).collect::<Vec<_>>(),
                ["count", "name"]
            );
        }
    });
    // A row that starts matching appears; one that stops matching disappears.
    let mut t = Transaction::new("Kinds");
    t.update(
        "Thing",
        &[Condition::eq("name", "low")],
        [("count", Datum::atom(11i64))],
    );
    t.update(
        "Thing",
        &[Condition::eq("name", "higher")],
        [("count", Datum::atom(0i64))],
    );
    client.transact(&t).await.unwrap();
    client
        .wait_until(WAIT, |c| {
            c.table("Thing").unwrap().find_one("name", "low").is_some()
        })
        .await
        .expect("low enters");
    assert_eq!(names(&client), ["high", "low"]);
}

#[tokio::test]
async fn indexes_find_rows_by_schema_index_and_by_map_key() {
    let db = StandaloneDb::start(&kinds_schema()).expect("ovsdb-server");
    let client = Client::connect(config(&db)).await.expect("client");
    let mut t = Transaction::new("Kinds");
    for i in 0..100 {
        t.insert(
            "Thing",
            [
                ("name", Datum::atom(format!("lsp{i}"))),
                ("labels", Datum::map([("pod", format!("default/pod{i}"))])),
            ],
        );
    }
    client.transact(&t).await.unwrap();
    client
        .wait_until(WAIT, |c| c.table("Thing").unwrap().len() == 100)
        .await
        .unwrap();
    client.read(|c| {
        let things = c.table("Thing").unwrap();
        assert!(things.has_index(&["name"]));
        let row = things.find_one("name", "lsp42").expect("by name");
        assert_eq!(row.map_value("labels", "pod"), Some("default/pod42"));
        let by_pod = things.find(&["labels:pod"], &[Datum::atom("default/pod7")]);
        assert_eq!(by_pod.len(), 1);
        assert_eq!(by_pod[0].string("name"), Some("lsp7"));
        assert!(things.find_one("name", "nope").is_none());
    });
    // The index follows modifications.
    let mut t = Transaction::new("Kinds");
    t.update(
        "Thing",
        &[Condition::eq("name", "lsp7")],
        [("labels", Datum::map([("pod", "default/moved")]))],
    );
    client.transact(&t).await.unwrap();
    client
        .wait_until(WAIT, |c| {
            !c.table("Thing")
                .unwrap()
                .find(&["labels:pod"], &[Datum::atom("default/moved")])
                .is_empty()
        })
        .await
        .unwrap();
    client.read(|c| {
        assert!(
            c.table("Thing")
                .unwrap()
                .find(&["labels:pod"], &[Datum::atom("default/pod7")])
                .is_empty()
        );
    });
}

#[tokio::test]
async fn after_a_server_restart_the_cache_resyncs_without_losing_updates() {
    for crash in [false, true] {
        let mut db = StandaloneDb::start(&kinds_schema()).expect("ovsdb-server");
        let client = Client::connect(config(&db)).await.expect("client");
        let mut t = Transaction::new("Kinds");
        for i in 0..50 {
            insert_thing(&mut t, &format!("before{i}"), i);
        }
        client.transact(&t).await.unwrap();
        client
            .wait_until(WAIT, |c| c.table("Thing").unwrap().len() == 50)
            .await
            .unwrap();

        db.restart(crash).expect("restart");
        // While the client reconnects, another client changes the database: inserts,
        // modifications and deletions the first client never saw as notifications.
        let writer = Client::connect(ClientConfig::new(&[&db.remote()], "Kinds"))
            .await
            .expect("writer");
        let mut t = Transaction::new("Kinds");
        for i in 0..20 {
            insert_thing(&mut t, &format!("during{i}"), 100 + i);
        }
        t.delete(
            "Thing",
            &[Condition::new("count", Function::Lt, Datum::atom(10i64))],
        );
        t.update(
            "Thing",
            &[Condition::eq("name", "before20")],
            [("flag", Datum::atom(true))],
        );
        writer
            .transact(&t)
            .await
            .expect("writes during the reconnect");

        client
            .wait_until(WAIT, |c| {
                c.table("Thing")
                    .unwrap()
                    .find_one("name", "during19")
                    .is_some()
            })
            .await
            .expect("the client sees what happened while it was away");
        assert!(client.stats().reconnects >= 1, "{:?}", client.stats());
        assert_cache_equals_server(&db, &client).await;
        // And it keeps following new changes.
        let mut t = Transaction::new("Kinds");
        insert_thing(&mut t, "after", 1);
        client
            .transact(&t)
            .await
            .expect("transact after the reconnect");
        assert_cache_equals_server(&db, &client).await;
    }
}

#[tokio::test]
async fn a_transaction_in_flight_when_the_server_dies_is_reported_not_retried() {
    let mut db = StandaloneDb::start(&kinds_schema()).expect("ovsdb-server");
    let client = Client::connect(config(&db)).await.expect("client");
    // A transaction the server holds: it waits (up to 10 s) for a row that never appears,
    // then would insert a row.
    let mut t = Transaction::new("Kinds");
    t.wait(
        "Thing",
        &[Condition::eq("name", "never")],
        &["name"],
        WaitUntil::NotEqual,
        &[],
        10_000,
    );
    insert_thing(&mut t, "in-flight", 1);
    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.transact(&t).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.restart(true).expect("crash and restart");
    let result = pending.await.unwrap();
    assert!(
        matches!(result, Err(Error::Disconnected { .. })),
        "{result:?}"
    );
    // Not retried behind the caller's back: the row is not there after the reconnect.
    let mut t = Transaction::new("Kinds");
    insert_thing(&mut t, "later", 2);
    client
        .transact(&t)
        .await
        .expect("a later transaction succeeds");
    assert_cache_equals_server(&db, &client).await;
    assert!(client.read(|c| {
        c.table("Thing")
            .unwrap()
            .find_one("name", "in-flight")
            .is_none()
    }));
}

#[derive(Debug, Default)]
struct Recorder {
    transactions: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
    connected: std::sync::atomic::AtomicU64,
    disconnected: std::sync::atomic::AtomicU64,
}

impl ovsdb::ClientMetrics for Recorder {
    fn transaction(&self, latency: Duration, ok: bool) {
        assert!(latency < Duration::from_secs(30));
        self.transactions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !ok {
            self.failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    fn connected(&self, _remote: &str) {
        self.connected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    fn disconnected(&self, _reason: &str) {
        self.disconnected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[tokio::test]
async fn metrics_hooks_see_transactions_and_reconnects() {
    use std::sync::atomic::Ordering::Relaxed;
    let mut db = StandaloneDb::start(&kinds_schema()).expect("ovsdb-server");
    let recorder = std::sync::Arc::new(Recorder::default());
    let mut cfg = config(&db);
    cfg.metrics = Some(recorder.clone());
    let client = Client::connect(cfg).await.expect("client");
    let mut t = Transaction::new("Kinds");
    insert_thing(&mut t, "one", 1);
    client.transact(&t).await.unwrap();
    // A duplicate name fails: counted as a failed transaction.
    assert!(client.transact(&t).await.is_err());
    db.restart(false).expect("restart");
    // A transaction sent before the client notices the restart fails as Disconnected (it is
    // never retried); wait for the reconnect instead.
    tokio::time::timeout(WAIT, async {
        while client.stats().reconnects < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the client reconnects");
    let mut t = Transaction::new("Kinds");
    insert_thing(&mut t, "two", 2);
    client.transact(&t).await.expect("after the restart");
    assert_eq!(recorder.transactions.load(Relaxed), 3);
    assert_eq!(recorder.failed.load(Relaxed), 1);
    assert_eq!(recorder.connected.load(Relaxed), 2);
    assert_eq!(recorder.disconnected.load(Relaxed), 1);
    let stats = client.stats();
    assert_eq!(
        (
            stats.transactions,
            stats.transaction_errors,
            stats.reconnects
        ),
        (3, 1, 1)
    );
}

/// A reconciler reads the cache right after its own transaction: with `transact_synced`, the
/// cache always shows the transaction's inserts, updates and deletes already. (Without it,
/// an insert is missing from the cache now and then, and a second reconcile would insert the
/// row again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transact_synced_returns_with_the_cache_caught_up() {
    let db = StandaloneDb::start(&kinds_schema()).expect("ovsdb-server");
    let client = Client::connect(config(&db)).await.expect("client");
    for n in 0..300i64 {
        let mut t = Transaction::new("Kinds");
        let i = insert_thing(&mut t, &format!("t{n}"), n);
        let uuid = client.transact_synced(&t).await.unwrap().uuid(i).unwrap();
        let seen = client.read(|c| c.table("Thing").unwrap().get(&uuid).is_some());
        assert!(
            seen,
            "insert {n} not in the cache when transact_synced returned"
        );

        let mut t = Transaction::new("Kinds");
        t.update(
            "Thing",
            &[Condition::uuid(uuid)],
            [("count", Datum::atom(n + 1000))],
        );
        client.transact_synced(&t).await.unwrap();
        let count = client.read(|c| {
            c.table("Thing")
                .unwrap()
                .get(&uuid)
                .unwrap()
                .integer("count")
        });
        assert_eq!(count, Some(n + 1000), "update {n} not in the cache");

        if n % 2 == 0 {
            let mut t = Transaction::new("Kinds");
            t.delete("Thing", &[Condition::uuid(uuid)]);
            client.transact_synced(&t).await.unwrap();
            let gone = client.read(|c| c.table("Thing").unwrap().get(&uuid).is_none());
            assert!(gone, "delete {n} not in the cache");
        }
    }
}
