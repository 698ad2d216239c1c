//! The client against a real ovsdb-server: every column kind round-trips, transactions are
//! atomic and their errors carry the server's words, and a broken peer yields errors, not
//! panics.

use ovsdb::{
    Condition, Connection, ConnectionOptions, Datum, Error, Mutation, Remote, Transaction,
    WaitUntil,
};
use sandbox::StandaloneDb;

mod common;
use common::kinds_schema;

async fn connect(db: &StandaloneDb) -> Connection {
    let (conn, _notifications) = Connection::connect(
        &Remote::parse(&db.remote()).expect("remote"),
        ConnectionOptions::default(),
    )
    .await
    .expect("connect");
    conn
}

#[tokio::test]
async fn every_column_kind_round_trips_through_the_server() {
    let db = StandaloneDb::start(&kinds_schema()).expect("ovsdb-server");
    let conn = connect(&db).await;
    let dbs = conn.list_dbs().await.unwrap();
    assert!(dbs.contains(&"Kinds".to_owned()), "{dbs:?}");
    let schema = conn.get_schema("Kinds").await.expect("schema");
    let thing = schema.table("Thing").unwrap();

    let mut t = Transaction::new("Kinds");
    let (_, part) = t.insert_named("Part", "p1", [("serial", Datum::atom(42i64))]);
    let (_, other) = t.insert_named("Thing", "other", [("name", Datum::atom("other"))]);
    let row = [
        ("name", Datum::atom("full")),
        ("count", Datum::atom(-7i64)),
        ("ratio", Datum::atom(0.25)),
        ("flag", Datum::atom(true)),
        ("color", Datum::atom("green")),
        ("maybe_int", Datum::atom(5i64)),
        ("maybe_real", Datum::empty_set()),
        ("tags", Datum::set(["b", "a", "c"])),
        ("numbers", Datum::set([3i64, 1, 2])),
        ("labels", Datum::map([("k1", "v1"), ("k2", "v2")])),
        ("weights", Datum::map([(1i64, 0.5), (2, 1.5)])),
        ("friend", Datum::atom(other.clone())),
        ("parts", Datum::atom(part.clone())),
        (
            "part_by_name",
            Datum::map([(ovsdb::Atom::from("p1"), part.clone())]),
        ),
    ];
    let insert = t.insert("Thing", row.clone());
    let result = conn.transact(&t).await.expect("insert");
    let uuid = result.uuid(insert).expect("uuid of the inserted row");

    let mut t = Transaction::new("Kinds");
    let select = t.select("Thing", &[Condition::uuid(uuid)], None);
    let selected = conn.transact(&t).await.expect("select");
    let rows = selected.rows(select, thing).expect("decode");
    assert_eq!(rows.len(), 1);
    let got = &rows[0];
    assert_eq!(got.uuid, uuid);
    for (column, sent) in &row {
        // A column at its default value is not stored; `value` fills it in.
        let got_value = &got.value(column, thing).expect("column in the schema");
        match column {
            // Named UUIDs come back as the real UUIDs: compare their shape.
            &"friend" | &"parts" => assert_eq!(got_value.as_set().unwrap().len(), 1),
            &"part_by_name" => assert_eq!(got_value.as_map().unwrap().len(), 1),
            _ => assert_eq!(got_value, sent, "column {column}"),
        }
    }
    assert_eq!(got.string("name"), Some("full"));
    assert_eq!(got.map_value("labels", "k2"), Some("v2"));
}

#[tokio::test]
async fn a_failing_operation_rolls_back_the_whole_transaction() {
    let db = StandaloneDb::start(&kinds_schema()).expect("ovsdb-server");
    let conn = connect(&db).await;
    let mut t = Transaction::new("Kinds");
    t.insert("Thing", [("name", Datum::atom("one"))]);
    conn.transact(&t).await.expect("first insert");

    // Second transaction: a fine insert, then a duplicate of the index "name".
    let mut t = Transaction::new("Kinds");
    t.insert("Thing", [("name", Datum::atom("two"))]);
    t.insert("Thing", [("name", Datum::atom("one"))]);
    match conn.transact(&t).await {
        Err(Error::Transaction { error, details, .. }) => {
            assert_eq!(error, "constraint violation");
            assert!(details.unwrap_or_default().contains("one"));
        }
        other => panic!("expected a constraint violation, got {other:?}"),
    }
    let dump = db.dump("csv").expect("dump");
    assert!(
        !dump.contains("two"),
        "the failed transaction left a row behind:\n{dump}"
    );

    // An enum violation is rejected with the server's error.
    let mut t = Transaction::new("Kinds");
    t.insert(
        "Thing",
        [("name", Datum::atom("x")), ("color", Datum::atom("pink"))],
    );
    assert!(matches!(
        conn.transact(&t).await,
        Err(Error::Transaction { index: 0, .. })
    ));

    // Optimistic concurrency: wait on a value that is not there fails the mutation with it.
    let mut t = Transaction::new("Kinds");
    t.wait(
        "Thing",
        &[Condition::eq("name", "one")],
        &["count"],
        WaitUntil::Equal,
        &[vec![("count", Datum::atom(99i64))]],
        0,
    );
    t.mutate(
        "Thing",
        &[Condition::eq("name", "one")],
        &[Mutation::new(
            "count",
            ovsdb::Mutator::Add,
            Datum::atom(1i64),
        )],
    );
    assert!(matches!(
        conn.transact(&t).await,
        Err(Error::Transaction { index: 0, .. })
    ));
    let mut t = Transaction::new("Kinds");
    let m = t.mutate(
        "Thing",
        &[Condition::eq("name", "one")],
        &[Mutation::new(
            "count",
            ovsdb::Mutator::Add,
            Datum::atom(1i64),
        )],
    );
    assert_eq!(conn.transact(&t).await.expect("mutate").count(m), Some(1));
}

#[tokio::test]
async fn a_large_batch_is_one_transaction() {
    let db = StandaloneDb::start(&kinds_schema()).expect("ovsdb-server");
    let conn = connect(&db).await;
    let mut t = Transaction::new("Kinds");
    for i in 0..5000 {
        t.insert(
            "Thing",
            [
                ("name", Datum::atom(format!("t{i}"))),
                ("count", Datum::atom(i64::from(i))),
            ],
        );
    }
    let result = conn.transact(&t).await.expect("5000 inserts");
    assert!(result.uuid(4999).is_some());
    let mut t = Transaction::new("Kinds");
    let d = t.delete(
        "Thing",
        &[Condition::new(
            "count",
            ovsdb::Function::Ge,
            Datum::atom(0i64),
        )],
    );
    assert_eq!(
        conn.transact(&t).await.expect("delete").count(d),
        Some(5000)
    );
}

#[tokio::test]
async fn lock_is_exclusive_between_connections() {
    let db = StandaloneDb::start(&kinds_schema()).expect("ovsdb-server");
    let first = connect(&db).await;
    let second = connect(&db).await;
    assert!(first.lock("leader").await.unwrap());
    assert!(!second.lock("leader").await.unwrap());
    let mut t = Transaction::new("Kinds");
    t.assert_lock("leader");
    t.insert("Thing", [("name", Datum::atom("by-second"))]);
    assert!(matches!(
        second.transact(&t).await,
        Err(Error::Transaction { .. })
    ));
    first.unlock("leader").await.unwrap();
}

#[tokio::test]
async fn a_cancelled_monitor_sends_no_more_updates() {
    let db = StandaloneDb::start(&kinds_schema()).expect("ovsdb-server");
    let (conn, mut notifications) = Connection::connect(
        &Remote::parse(&db.remote()).unwrap(),
        ConnectionOptions::default(),
    )
    .await
    .unwrap();
    let id = serde_json::json!("m1");
    conn.call(
        "monitor_cond",
        serde_json::json!(["Kinds", id, {"Thing": [{"columns": ["name"]}]}]),
    )
    .await
    .expect("monitor_cond");
    let insert = |name: &'static str| {
        let conn = conn.clone();
        async move {
            let mut t = Transaction::new("Kinds");
            t.insert("Thing", [("name", Datum::atom(name))]);
            conn.transact(&t).await.unwrap();
        }
    };
    insert("seen").await;
    let update = notifications.recv().await.expect("an update");
    assert_eq!(update.method, "update2");
    conn.monitor_cancel(&id).await.expect("monitor_cancel");
    insert("unseen").await;
    let next =
        tokio::time::timeout(std::time::Duration::from_millis(300), notifications.recv()).await;
    assert!(next.is_err(), "update after monitor_cancel: {next:?}");
}

#[tokio::test]
async fn tcp_transport_works_like_unix() {
    let db = StandaloneDb::start_with_tcp(&kinds_schema()).expect("ovsdb-server on TCP");
    let remote = Remote::parse(&db.tcp_remote().unwrap()).unwrap();
    // The server needs a moment to bind after its unix socket appears.
    let mut attempt = 0;
    let conn = loop {
        match Connection::connect(&remote, ConnectionOptions::default()).await {
            Ok((conn, _)) => break conn,
            Err(_) if attempt < 50 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("TCP connect: {e}"),
        }
    };
    let mut t = Transaction::new("Kinds");
    t.comment("from the TCP test");
    let i = t.insert("Thing", [("name", Datum::atom("over-tcp"))]);
    t.commit(false);
    let result = conn.transact(&t).await.expect("transact over TCP");
    assert!(result.uuid(i).is_some());
    assert!(db.dump("csv").unwrap().contains("over-tcp"));
}

#[tokio::test]
async fn abort_discards_the_transaction() {
    let db = StandaloneDb::start(&kinds_schema()).expect("ovsdb-server");
    let conn = connect(&db).await;
    let mut t = Transaction::new("Kinds");
    t.insert("Thing", [("name", Datum::atom("aborted"))]);
    let abort = t.abort();
    match conn.transact(&t).await {
        Err(Error::Transaction { index, error, .. }) => {
            assert_eq!(index, abort);
            assert_eq!(error, "aborted");
        }
        other => panic!("expected an aborted transaction, got {other:?}"),
    }
    assert!(!db.dump("csv").unwrap().contains("aborted"));
}

#[tokio::test]
async fn steal_takes_a_lock_and_tells_the_old_owner() {
    let db = StandaloneDb::start(&kinds_schema()).expect("ovsdb-server");
    let remote = Remote::parse(&db.remote()).unwrap();
    let (first, mut first_notes) = Connection::connect(&remote, ConnectionOptions::default())
        .await
        .unwrap();
    let second = connect(&db).await;
    assert!(first.lock("leader").await.unwrap());
    second.steal("leader").await.expect("steal");
    let note = tokio::time::timeout(std::time::Duration::from_secs(5), first_notes.recv())
        .await
        .expect("a notification")
        .unwrap();
    assert_eq!(note.method, "stolen");
    let mut t = Transaction::new("Kinds");
    t.assert_lock("leader");
    t.insert("Thing", [("name", Datum::atom("by-thief"))]);
    second.transact(&t).await.expect("the new owner writes");
    assert!(matches!(
        first.transact(&t).await,
        Err(Error::Transaction { .. })
    ));
}
