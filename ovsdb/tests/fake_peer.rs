//! The connection against a scripted peer: malformed, truncated and oversized input end the
//! connection with an error (never a panic, never unbounded buffering), requests in flight are
//! reported as failed, `echo` works both ways, the inactivity probe notices a silent peer, and
//! notifications arrive in order.

use std::time::Duration;

use ovsdb::{Connection, ConnectionOptions, Error, Remote};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

fn options(max_message: usize, probe: Option<Duration>) -> ConnectionOptions {
    ConnectionOptions {
        inactivity_probe: probe,
        max_message,
        request_timeout: Some(Duration::from_secs(10)),
        ..ConnectionOptions::default()
    }
}

fn pair(
    opts: ConnectionOptions,
) -> (
    Connection,
    tokio::sync::mpsc::UnboundedReceiver<ovsdb::Notification>,
    DuplexStream,
) {
    let (client, peer) = tokio::io::duplex(1 << 20);
    let (conn, notifications) = Connection::over(client, Remote::Unix("fake".into()), opts);
    (conn, notifications, peer)
}

/// Reads one JSON message the client sent.
async fn read_message(peer: &mut DuplexStream) -> Value {
    let mut splitter = ovsdb::codec::JsonSplitter::new(1 << 20);
    let mut buf = [0u8; 4096];
    loop {
        if let Some(v) = splitter.next_message().unwrap() {
            return v;
        }
        let n = peer.read(&mut buf).await.unwrap();
        assert!(n > 0, "client closed the stream");
        splitter.feed(&buf[..n]);
    }
}

#[tokio::test]
async fn garbage_from_the_server_fails_the_request_in_flight() {
    let (conn, _n, mut peer) = pair(options(1 << 20, None));
    let call = tokio::spawn({
        let conn = conn.clone();
        async move { conn.list_dbs().await }
    });
    let request = read_message(&mut peer).await;
    assert_eq!(request["method"], "list_dbs");
    peer.write_all(b"this is not json").await.unwrap();
    let result = call.await.unwrap();
    assert!(
        matches!(result, Err(Error::Disconnected { .. })),
        "{result:?}"
    );
    assert!(
        conn.close_reason().unwrap().contains("protocol"),
        "{:?}",
        conn.close_reason()
    );
    // Later calls fail at once instead of hanging.
    assert!(matches!(conn.echo().await, Err(Error::Disconnected { .. })));
}

#[tokio::test]
async fn a_truncated_reply_then_eof_is_a_disconnect() {
    let (conn, _n, mut peer) = pair(options(1 << 20, None));
    let call = tokio::spawn({
        let conn = conn.clone();
        async move { conn.list_dbs().await }
    });
    let request = read_message(&mut peer).await;
    let id = request["id"].clone();
    let reply = json!({"result": ["A"], "error": null, "id": id}).to_string();
    peer.write_all(&reply.as_bytes()[..reply.len() / 2])
        .await
        .unwrap();
    drop(peer);
    assert!(matches!(
        call.await.unwrap(),
        Err(Error::Disconnected { .. })
    ));
}

#[tokio::test]
async fn an_oversized_message_is_refused_before_it_is_buffered_whole() {
    let (conn, _n, mut peer) = pair(options(64 * 1024, None));
    let call = tokio::spawn({
        let conn = conn.clone();
        async move { conn.list_dbs().await }
    });
    let request = read_message(&mut peer).await;
    // A reply that never ends: 16 MiB of string, far over the 64 KiB limit.
    peer.write_all(format!("{{\"id\": {}, \"result\": [\"", request["id"]).as_bytes())
        .await
        .unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..256 {
        if peer.write_all(&chunk).await.is_err() {
            break; // the client hung up: what we want
        }
    }
    assert!(matches!(
        call.await.unwrap(),
        Err(Error::Disconnected { .. })
    ));
    let reason = conn.close_reason().unwrap();
    assert!(reason.contains("larger than 65536"), "{reason}");
}

#[tokio::test]
async fn echo_works_both_ways_and_replies_match_ids() {
    let (conn, _n, mut peer) = pair(options(1 << 20, None));
    // Server -> client echo.
    peer.write_all(br#"{"method":"echo","params":["ping",1],"id":"e-7"}"#)
        .await
        .unwrap();
    let reply = read_message(&mut peer).await;
    assert_eq!(
        reply,
        json!({"result": ["ping", 1], "error": null, "id": "e-7"})
    );
    // Client -> server echo, answered out of order with another request in flight.
    let a = tokio::spawn({
        let conn = conn.clone();
        async move { conn.call("first", json!([])).await }
    });
    let first = read_message(&mut peer).await;
    let b = tokio::spawn({
        let conn = conn.clone();
        async move { conn.call("second", json!([])).await }
    });
    let second = read_message(&mut peer).await;
    peer.write_all(
        json!({"result": 2, "error": null, "id": second["id"]})
            .to_string()
            .as_bytes(),
    )
    .await
    .unwrap();
    peer.write_all(
        json!({"result": null, "error": {"error": "bad", "details": "why"}, "id": first["id"]})
            .to_string()
            .as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(b.await.unwrap().unwrap(), json!(2));
    match a.await.unwrap() {
        Err(Error::Rpc {
            method,
            error,
            details,
        }) => {
            assert_eq!((method.as_str(), error.as_str()), ("first", "bad"));
            assert_eq!(details.as_deref(), Some("why"));
        }
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_inactivity_probe_closes_a_silent_connection() {
    let (conn, _n, mut peer) = pair(options(1 << 20, Some(Duration::from_millis(200))));
    // The client probes a silent peer with an echo ...
    let probe = tokio::time::timeout(Duration::from_secs(2), read_message(&mut peer))
        .await
        .expect("a probe within 2 s");
    assert_eq!(probe["method"], "echo");
    // ... and gives up when nothing answers.
    tokio::time::timeout(Duration::from_secs(3), async {
        while !conn.is_closed() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("connection closed by the probe");
    assert!(conn.close_reason().unwrap().contains("inactivity"));
}

#[tokio::test]
async fn notifications_arrive_in_order() {
    let (_conn, mut notifications, mut peer) = pair(options(1 << 20, None));
    let mut burst = String::new();
    for i in 0..100 {
        burst.push_str(
            &json!({"method": "update2", "params": [null, {"seq": i}], "id": null}).to_string(),
        );
    }
    peer.write_all(burst.as_bytes()).await.unwrap();
    for i in 0..100 {
        let n = notifications.recv().await.expect("notification");
        assert_eq!(n.method, "update2");
        assert_eq!(n.params[1]["seq"], i);
    }
}

/// A scripted server that knows only the oldest monitor method (`monitor`, RFC 7047 updates):
/// the client must fall back from `monitor_cond_since` and `monitor_cond`, load the initial
/// rows, and apply version-1 `update` notifications.
#[tokio::test]
async fn the_client_falls_back_to_plain_monitor_and_applies_v1_updates() {
    use std::sync::{Arc, Mutex};

    use ovsdb::{Client, ClientConfig, MonitorRequest};

    let dir = std::env::temp_dir().join(format!("kovn-fake-ovsdb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("db.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/tests/kinds.ovsschema",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    let methods = Arc::new(Mutex::new(Vec::<String>::new()));
    const A: &str = "11111111-1111-1111-1111-111111111111";
    const B: &str = "22222222-2222-2222-2222-222222222222";

    let server = tokio::spawn({
        let methods = methods.clone();
        async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let schema = schema.clone();
                let methods = methods.clone();
                tokio::spawn(async move {
                    let mut splitter = ovsdb::codec::JsonSplitter::new(1 << 20);
                    let mut buf = [0u8; 4096];
                    loop {
                        let Ok(n) = stream.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        splitter.feed(&buf[..n]);
                        while let Some(request) = splitter.next_message().unwrap() {
                            let method = request["method"].as_str().unwrap_or("").to_owned();
                            methods.lock().unwrap().push(method.clone());
                            let id = request["id"].clone();
                            let (result, error) = match method.as_str() {
                                "get_schema" => (schema.clone(), Value::Null),
                                "transact" => (
                                    json!([{"rows": [{"model": "standalone", "leader": true, "connected": true}]}]),
                                    Value::Null,
                                ),
                                "monitor" => (
                                    json!({"Thing": {
                                        A: {"new": {"name": "a", "count": 1}},
                                        B: {"new": {"name": "b", "count": 5}}}}),
                                    Value::Null,
                                ),
                                _ => (Value::Null, json!("unknown method")),
                            };
                            let reply = json!({"result": result, "error": error, "id": id});
                            stream
                                .write_all(reply.to_string().as_bytes())
                                .await
                                .unwrap();
                            if method == "monitor" {
                                // Row a modified, row b deleted, as version-1 updates.
                                let update = json!({"method": "update", "id": null, "params": [
                                    request["params"][1],
                                    {"Thing": {
                                        A: {"old": {"count": 1}, "new": {"name": "a", "count": 2}},
                                        B: {"old": {"name": "b", "count": 5}}}}]});
                                stream
                                    .write_all(update.to_string().as_bytes())
                                    .await
                                    .unwrap();
                            }
                        }
                    }
                });
            }
        }
    });

    let remote = format!("unix:{}", socket.display());
    let client = Client::connect(
        ClientConfig::new(&[&remote], "Kinds").monitor(MonitorRequest::table("Thing")),
    )
    .await
    .expect("client over the old protocol");
    client
        .wait_until(Duration::from_secs(5), |c| {
            let t = c.table("Thing").unwrap();
            t.len() == 1 && t.find_one("name", "a").and_then(|r| r.integer("count")) == Some(2)
        })
        .await
        .expect("initial rows, then the v1 modify and delete");
    let seen = methods.lock().unwrap().clone();
    let monitors: Vec<&String> = seen.iter().filter(|m| m.starts_with("monitor")).collect();
    assert_eq!(monitors, ["monitor_cond_since", "monitor_cond", "monitor"]);
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
