//! The NB topology against a real OVN_Northbound server: a subnet and its router attachment
//! are created as Kube-OVN names them, reconciling again changes nothing, a changed CIDR is
//! corrected, and pod ports are created, corrected and deleted with the NB config generation
//! bumped whenever traffic may be revoked.

use std::time::Duration;

use controller::topology::{
    self, PodPortPlan, SubnetPlan, delete_pod_port, reconcile_pod_port, reconcile_subnet,
};
use ovsdb::models::ovn_northbound::{
    LogicalRouter, LogicalRouterPort, LogicalSwitch, LogicalSwitchPort, NbGlobal,
};
use ovsdb::{Client, ClientConfig, Model, MonitorRequest, Transaction};
use sandbox::StandaloneDb;

async fn client(db: &StandaloneDb) -> Client {
    let mut config = ClientConfig::new(&[&db.remote()], "OVN_Northbound");
    for table in topology::monitored_tables() {
        config = config.monitor(MonitorRequest::table(table));
    }
    let client = Client::connect(config).await.expect("NB client");
    let mut t = Transaction::new("OVN_Northbound");
    t.insert_model(&NbGlobal::default());
    client.transact(&t).await.unwrap();
    client
}

/// Applies what the reconciler returns and waits until the cache has seen it.
async fn apply(client: &Client, t: Option<Transaction>) -> bool {
    let Some(t) = t else { return false };
    client.transact(&t).await.expect("transaction");
    let stats = client.stats().row_changes;
    let _ = client
        .wait_until(Duration::from_millis(500), |_| {
            client.stats().row_changes > stats
        })
        .await;
    true
}

fn nb_cfg(client: &Client) -> i64 {
    client.read(|c| c.table(NbGlobal::TABLE).unwrap().typed::<NbGlobal>()[0].nb_cfg)
}

#[tokio::test]
async fn subnets_and_pod_ports_converge_and_stay_converged() {
    let db = StandaloneDb::start("/usr/share/ovn/ovn-nb.ovsschema").expect("NB server");
    let client = client(&db).await;
    let plan = SubnetPlan {
        name: "ovn-default".into(),
        router: api::names::DEFAULT_CLUSTER_ROUTER.into(),
        cidrs: vec![
            "10.16.0.0/16".parse().unwrap(),
            "fd00:10:16::/112".parse().unwrap(),
        ],
        gateways: vec![
            "10.16.0.1".parse().unwrap(),
            "fd00:10:16::1".parse().unwrap(),
        ],
        localnet: None,
    };
    assert!(apply(&client, client.read(|c| reconcile_subnet(c, &plan))).await);
    // Converged: reconciling again is a no-op.
    assert!(
        client.read(|c| reconcile_subnet(c, &plan)).is_none(),
        "not idempotent"
    );

    let (switches, routers, lrps, lsps) = client.read(|c| {
        (
            c.table(LogicalSwitch::TABLE)
                .unwrap()
                .typed::<LogicalSwitch>(),
            c.table(LogicalRouter::TABLE)
                .unwrap()
                .typed::<LogicalRouter>(),
            c.table(LogicalRouterPort::TABLE)
                .unwrap()
                .typed::<LogicalRouterPort>(),
            c.table(LogicalSwitchPort::TABLE)
                .unwrap()
                .typed::<LogicalSwitchPort>(),
        )
    });
    assert_eq!(routers.len(), 1);
    assert_eq!(routers[0].name, "ovn-cluster");
    assert_eq!(routers[0].ports, vec![lrps[0].uuid]);
    assert_eq!(lrps[0].name, "ovn-cluster-ovn-default");
    assert_eq!(lrps[0].mac, "0a:58:0a:10:00:01");
    let mut networks = lrps[0].networks.clone();
    networks.sort();
    assert_eq!(networks, vec!["10.16.0.1/16", "fd00:10:16::1/112"]);
    assert_eq!(
        switches[0].other_config["subnet"],
        "10.16.0.0/16,fd00:10:16::/112"
    );
    assert_eq!(lsps[0].name, "ovn-default-ovn-cluster");
    assert_eq!(lsps[0].r#type, "router");
    assert_eq!(lsps[0].options["router-port"], "ovn-cluster-ovn-default");
    assert_eq!(switches[0].ports, vec![lsps[0].uuid]);

    // A second subnet reuses the router.
    let second = SubnetPlan {
        name: "tenant".into(),
        cidrs: vec!["10.17.0.0/16".parse().unwrap()],
        gateways: vec!["10.17.0.1".parse().unwrap()],
        ..plan.clone()
    };
    assert!(apply(&client, client.read(|c| reconcile_subnet(c, &second))).await);
    assert_eq!(
        client.read(|c| c
            .table(LogicalRouter::TABLE)
            .unwrap()
            .typed::<LogicalRouter>()[0]
            .ports
            .len()),
        2
    );
    // A changed CIDR is corrected in place.
    let changed = SubnetPlan {
        cidrs: vec!["10.18.0.0/16".parse().unwrap()],
        gateways: vec!["10.18.0.1".parse().unwrap()],
        ..second.clone()
    };
    assert!(apply(&client, client.read(|c| reconcile_subnet(c, &changed))).await);
    assert!(client.read(|c| reconcile_subnet(c, &changed)).is_none());

    // The same subnet moved under a physical network (an underlay Subnet with a Vlan): a
    // localnet port with the provider network and tag, no port on the router any more.
    let underlay = SubnetPlan {
        localnet: Some(controller::topology::Localnet {
            network: "net1".into(),
            tag: 100,
            logical_gateway: false,
        }),
        ..changed.clone()
    };
    assert!(apply(&client, client.read(|c| reconcile_subnet(c, &underlay))).await);
    assert!(
        client.read(|c| reconcile_subnet(c, &underlay)).is_none(),
        "converged"
    );
    let lsp = |name: &str| {
        client.read(|c| {
            c.table(LogicalSwitchPort::TABLE)
                .map(|t| t.typed::<LogicalSwitchPort>())
                .unwrap_or_default()
                .into_iter()
                .find(|p| p.name == name)
        })
    };
    let router_ports = || {
        client.read(|c| {
            c.table(LogicalRouterPort::TABLE)
                .map(|t| t.typed::<LogicalRouterPort>())
                .unwrap_or_default()
                .into_iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
        })
    };
    let localnet = lsp("localnet.tenant").expect("the localnet port");
    assert_eq!(localnet.r#type, "localnet");
    assert_eq!(
        localnet.options.get("network_name").map(String::as_str),
        Some("net1")
    );
    assert_eq!(localnet.tag, Some(100));
    assert!(
        !router_ports().iter().any(|p| p.ends_with("-tenant")),
        "{:?}",
        router_ports()
    );
    // And back to overlay: the localnet port goes, the router port returns.
    assert!(apply(&client, client.read(|c| reconcile_subnet(c, &changed))).await);
    assert!(client.read(|c| reconcile_subnet(c, &changed)).is_none());
    assert!(lsp("localnet.tenant").is_none());
    assert!(router_ports().iter().any(|p| p.ends_with("-tenant")));

    // Pod ports.
    let pod = PodPortPlan {
        owner: api::Owner::pod("default", "p1"),
        switch: "ovn-default".into(),
        mac: "00:00:00:11:22:33".into(),
        ips: vec!["10.16.0.2".parse().unwrap()],
        node: "n1".into(),
        port_security: true,
    };
    assert!(apply(&client, client.read(|c| reconcile_pod_port(c, &pod))).await);
    assert!(
        client.read(|c| reconcile_pod_port(c, &pod)).is_none(),
        "not idempotent"
    );
    let port = client
        .read(|c| {
            c.table(LogicalSwitchPort::TABLE)
                .unwrap()
                .find_one("name", "p1.default")
                .cloned()
        })
        .map(|r| LogicalSwitchPort::from_row(&r).unwrap())
        .expect("pod port");
    assert_eq!(port.addresses, vec!["00:00:00:11:22:33 10.16.0.2"]);
    assert_eq!(port.port_security, port.addresses);
    assert_eq!(port.external_ids["pod"], "default/p1");

    // Changing port security revokes traffic: nb_cfg moves.
    let before = nb_cfg(&client);
    let moved = PodPortPlan {
        ips: vec!["10.16.0.3".parse().unwrap()],
        ..pod.clone()
    };
    assert!(apply(&client, client.read(|c| reconcile_pod_port(c, &moved))).await);
    assert_eq!(nb_cfg(&client), before + 1);

    // Deleting the port removes the row and bumps nb_cfg again.
    assert!(apply(&client, client.read(|c| delete_pod_port(c, "p1.default"))).await);
    assert!(client.read(|c| {
        c.table(LogicalSwitchPort::TABLE)
            .unwrap()
            .find_one("name", "p1.default")
            .is_none()
    }));
    assert_eq!(nb_cfg(&client), before + 2);
    assert!(client.read(|c| delete_pod_port(c, "p1.default")).is_none());
    // The router's switch ports are untouched.
    assert_eq!(client.read(|c| topology::owned_ports(c).len()), 2);
}
