//! The generated models: fresh against the generator and the vendored schemas, the vendored
//! schemas equal to what the installed OVS/OVN serve, and typed rows that round-trip through a
//! real OVN_Northbound server.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ovsdb::codegen::{INSTALLED_SCHEMAS, MODEL_FILES, generate_file};
use ovsdb::models::ovn_northbound::{
    Acl, AclAction, AclDirection, LogicalSwitch, LogicalSwitchPort,
};
use ovsdb::{Client, ClientConfig, Condition, Datum, Model, MonitorRequest, Mutation, Transaction};
use sandbox::StandaloneDb;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn checked_in_models_are_fresh() {
    for (schema, output) in MODEL_FILES {
        let code =
            generate_file(&crate_dir().join(schema), &format!("ovsdb/{schema}")).expect("generate");
        let tmp = std::env::temp_dir().join(format!(
            "kovn-models-{}-{}.rs",
            std::process::id(),
            output.replace('/', "_")
        ));
        std::fs::write(&tmp, code).unwrap();
        let status = Command::new("rustfmt")
            .args(["--edition", "2024"])
            .arg(&tmp)
            .status()
            .expect("rustfmt");
        assert!(status.success());
        let fresh = std::fs::read_to_string(&tmp).unwrap();
        let _ = std::fs::remove_file(&tmp);
        let checked_in = std::fs::read_to_string(crate_dir().join(output)).unwrap();
        assert!(
            fresh == checked_in,
            "ovsdb/{output} is stale against ovsdb/{schema}: run `cargo xtask gen-ovsdb-models`"
        );
    }
}

#[test]
fn vendored_schemas_match_the_installed_ones() {
    for (vendored, installed) in INSTALLED_SCHEMAS {
        let Ok(installed_text) = std::fs::read_to_string(installed) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{installed} missing in CI"
            );
            eprintln!("!!!! SKIPPED: {installed} not installed (run `cargo xtask setup`)");
            continue;
        };
        let a: serde_json::Value = serde_json::from_str(&installed_text).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(crate_dir().join(vendored)).unwrap())
                .unwrap();
        assert!(
            a == b,
            "{installed} differs from ovsdb/{vendored}: copy it and regenerate the models"
        );
    }
}

#[tokio::test]
async fn typed_rows_round_trip_through_the_northbound_database() {
    let db = StandaloneDb::start("/usr/share/ovn/ovn-nb.ovsschema").expect("NB server");
    let client = Client::connect(
        ClientConfig::new(&[&db.remote()], "OVN_Northbound")
            .monitor(MonitorRequest::table(LogicalSwitchPort::TABLE))
            .monitor(MonitorRequest::table(Acl::TABLE)),
    )
    .await
    .expect("client");

    let port = LogicalSwitchPort {
        name: "p1.default".into(),
        addresses: vec!["0a:58:0a:10:00:02 10.16.0.2".into()],
        port_security: vec!["0a:58:0a:10:00:02 10.16.0.2".into()],
        external_ids: BTreeMap::from([("pod".into(), "default/p1".into())]),
        tag_request: Some(7),
        up: Some(false),
        r#type: String::new(),
        ..Default::default()
    };
    let acl = Acl {
        action: AclAction::AllowRelated,
        direction: AclDirection::ToLport,
        priority: 1001,
        r#match: "ip4.src == 10.16.0.0/16".into(),
        name: Some("allow-cluster".into()),
        ..Default::default()
    };
    // Ports and ACLs are not root tables: a switch must refer to them, or OVSDB collects them.
    let mut t = Transaction::new("OVN_Northbound");
    let (p, port_ref) = t.insert_model_named("port", &port);
    let (a, acl_ref) = t.insert_model_named("acl", &acl);
    t.insert_model(&LogicalSwitch {
        name: "ovn-default".into(),
        ports: vec![],
        ..Default::default()
    });
    t.mutate(
        LogicalSwitch::TABLE,
        &[Condition::eq("name", "ovn-default")],
        &[
            Mutation::insert("ports", Datum::atom(port_ref)),
            Mutation::insert("acls", Datum::atom(acl_ref)),
        ],
    );
    let result = client.transact(&t).await.expect("insert typed rows");
    let (port_uuid, acl_uuid) = (result.uuid(p).unwrap(), result.uuid(a).unwrap());

    client
        .wait_until(Duration::from_secs(10), |c| {
            c.table(Acl::TABLE).unwrap().len() == 1
        })
        .await
        .unwrap();
    let (ports, acls): (Vec<LogicalSwitchPort>, Vec<Acl>) = client.read(|c| {
        (
            c.table(LogicalSwitchPort::TABLE).unwrap().typed(),
            c.table(Acl::TABLE).unwrap().typed(),
        )
    });
    assert_eq!(
        ports,
        vec![LogicalSwitchPort {
            uuid: port_uuid,
            ..port
        }]
    );
    assert_eq!(
        acls,
        vec![Acl {
            uuid: acl_uuid,
            ..acl
        }]
    );
    assert_eq!(
        AclAction::from_str_opt("allow-related"),
        Some(AclAction::AllowRelated)
    );
    assert_eq!(AclDirection::ToLport.as_str(), "to-lport");
}
