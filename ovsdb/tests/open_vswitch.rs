//! Against a real Open_vSwitch database: the agent's use of the client, waiting for
//! ovn-controller's `Bridge br-int external_ids:ovn-nb-cfg` to reach a value, with typed rows.

use std::collections::BTreeMap;
use std::time::Duration;

use ovsdb::models::open_vswitch::{Bridge, OpenVswitch};
use ovsdb::{
    Client, ClientConfig, Condition, Datum, IndexSpec, Model, MonitorRequest, Mutation, Transaction,
};
use sandbox::StandaloneDb;

const VSWITCH_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
const DB: &str = "Open_vSwitch";

fn nb_cfg(client: &Client) -> Option<i64> {
    client.read(|c| {
        c.table(Bridge::TABLE)?
            .find_one("name", "br-int")?
            .map_value("external_ids", "ovn-nb-cfg")?
            .parse()
            .ok()
    })
}

#[tokio::test]
async fn the_agent_waits_for_ovn_nb_cfg_to_advance() {
    let db = StandaloneDb::start(VSWITCH_SCHEMA).expect("Open_vSwitch server");
    let agent = Client::connect(
        ClientConfig::new(&[&db.remote()], DB)
            .monitor(MonitorRequest::table(Bridge::TABLE).columns(&["name", "external_ids"]))
            .index(IndexSpec::new(Bridge::TABLE, &["external_ids:ovn-nb-cfg"])),
    )
    .await
    .expect("agent client");

    // What ovs-vsctl and ovn-controller do: the root row, br-int, then nb_cfg progress.
    let writer = Client::connect(ClientConfig::new(&[&db.remote()], DB))
        .await
        .expect("writer");
    let mut t = Transaction::new(DB);
    let (_, bridge) = t.insert_model_named(
        "br",
        &Bridge {
            name: "br-int".into(),
            datapath_type: "netdev".into(),
            external_ids: BTreeMap::from([("ovn-nb-cfg".into(), "0".into())]),
            ..Default::default()
        },
    );
    t.insert_model(&OpenVswitch::default());
    t.mutate(
        OpenVswitch::TABLE,
        &[],
        &[Mutation::insert("bridges", Datum::atom(bridge))],
    );
    writer.transact(&t).await.expect("create br-int");

    let waiter = tokio::spawn({
        let agent = agent.clone();
        async move {
            agent
                .wait_until(Duration::from_secs(10), |c| {
                    c.table(Bridge::TABLE)
                        .and_then(|t| t.find_one("name", "br-int"))
                        .and_then(|b| b.map_value("external_ids", "ovn-nb-cfg"))
                        .and_then(|v| v.parse::<i64>().ok())
                        .is_some_and(|v| v >= 5)
                })
                .await
        }
    });
    for cfg in 1..=5 {
        let mut t = Transaction::new(DB);
        t.mutate(
            Bridge::TABLE,
            &[Condition::eq("name", "br-int")],
            &[Mutation::insert(
                "external_ids",
                Datum::map([("ovn-nb-cfg", cfg.to_string())]),
            )],
        );
        // A map insert does not replace an existing key: delete it first, as ovs-vsctl set
        // does.
        let mut replace = Transaction::new(DB);
        replace.mutate(
            Bridge::TABLE,
            &[Condition::eq("name", "br-int")],
            &[Mutation::delete("external_ids", Datum::set(["ovn-nb-cfg"]))],
        );
        writer.transact(&replace).await.unwrap();
        writer.transact(&t).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    waiter.await.unwrap().expect("ovn-nb-cfg reached 5");
    assert_eq!(nb_cfg(&agent), Some(5));

    // Typed read through the generated model and the client-defined map-key index.
    let bridges: Vec<Bridge> = agent.read(|c| c.table(Bridge::TABLE).unwrap().typed());
    assert_eq!(bridges.len(), 1);
    assert_eq!(bridges[0].name, "br-int");
    assert_eq!(bridges[0].external_ids["ovn-nb-cfg"], "5");
    let by_cfg = agent.read(|c| {
        c.table(Bridge::TABLE)
            .unwrap()
            .find(&["external_ids:ovn-nb-cfg"], &[Datum::atom("5")])
            .len()
    });
    assert_eq!(by_cfg, 1);
}
