//! The node's chassis settings written into a real Open_vSwitch database, as Kube-OVN's
//! ovs-ovn writes them: the OVN keys are set, every other key is kept, and a second run
//! changes nothing; a node's existing chassis name (system-id) is never replaced.

use std::process::Command;

use agent::ovs::chassis::{OvnChassisSettings, configure};
use sandbox::StandaloneDb;

fn vsctl(db: &StandaloneDb, args: &[&str]) -> String {
    let out = Command::new("ovs-vsctl")
        .arg(format!("--db={}", db.remote()))
        .arg("--no-wait")
        .args(args)
        .output()
        .expect("ovs-vsctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chassis_settings_are_merged_into_the_open_vswitch_row() {
    let db = StandaloneDb::start("/usr/share/openvswitch/vswitch.ovsschema").expect("OVS db");
    vsctl(&db, &["init"]);
    vsctl(
        &db,
        &[
            "set",
            "Open_vSwitch",
            ".",
            "external_ids:keep=me",
            "external_ids:ovn-remote=tcp:1.1.1.1:6642",
        ],
    );
    let settings = OvnChassisSettings {
        ovn_remote: "tcp:172.18.0.2:6642".into(),
        encap_type: "geneve".into(),
        encap_ip: Some("172.18.0.10".into()),
        encap_checksum: false,
        default_system_id: "n0".into(),
        hostname: "n0".into(),
        datapath_type: Some("netdev".into()),
    };
    let client = agent::ovs::connect(&db.remote()).await.expect("connect");
    for _ in 0..2 {
        configure(&client, &settings).await.expect("configure");
    }
    let get = |key: &str| {
        vsctl(
            &db,
            &["get", "Open_vSwitch", ".", &format!("external_ids:{key}")],
        )
    };
    assert_eq!(get("ovn-remote"), "\"tcp:172.18.0.2:6642\"");
    assert_eq!(get("ovn-encap-type"), "geneve");
    assert_eq!(get("ovn-encap-csum"), "\"false\"");
    assert_eq!(get("ovn-encap-ip"), "\"172.18.0.10\"");
    assert_eq!(get("system-id"), "n0");
    assert_eq!(get("hostname"), "n0");
    assert_eq!(get("ovn-bridge-datapath-type"), "netdev");
    assert_eq!(get("keep"), "me", "another key was lost");
}

/// A node moving from Kube-OVN keeps its chassis: the system-id its ovs-ovn wrote (from
/// `/etc/openvswitch/system-id.conf`) stays, or the Southbound would see a new chassis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_system_id_is_kept() {
    let db = StandaloneDb::start("/usr/share/openvswitch/vswitch.ovsschema").expect("OVS db");
    vsctl(&db, &["init"]);
    let kube_ovn_chassis = "8d6c5e0e-3f0f-4a52-9d43-3c1b1e1f0a11";
    vsctl(
        &db,
        &[
            "set",
            "Open_vSwitch",
            ".",
            &format!("external_ids:system-id={kube_ovn_chassis}"),
        ],
    );
    let client = agent::ovs::connect(&db.remote()).await.expect("connect");
    configure(
        &client,
        &OvnChassisSettings {
            ovn_remote: "tcp:172.18.0.2:6642".into(),
            encap_type: "geneve".into(),
            encap_ip: None,
            encap_checksum: true,
            default_system_id: "n0".into(),
            hostname: "n0".into(),
            datapath_type: None,
        },
    )
    .await
    .expect("configure");
    let id = vsctl(&db, &["get", "Open_vSwitch", ".", "external_ids:system-id"]);
    assert_eq!(id.trim_matches('"'), kube_ovn_chassis);
}
