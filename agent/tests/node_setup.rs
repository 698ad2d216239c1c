//! The node's chassis settings written into a real Open_vSwitch database, as Kube-OVN's
//! ovs-ovn writes them: the OVN keys are set, every other key is kept, and a second run
//! changes nothing.

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
        system_id: "n0".into(),
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
    assert_eq!(get("ovn-encap-ip"), "\"172.18.0.10\"");
    assert_eq!(get("system-id"), "n0");
    assert_eq!(get("hostname"), "n0");
    assert_eq!(get("ovn-bridge-datapath-type"), "netdev");
    assert_eq!(get("keep"), "me", "another key was lost");
}
