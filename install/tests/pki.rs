//! The certificates `kovn-install install --enable-ssl` makes when the operator brings none,
//! used by both sides OVN has: ovsdb-server (OpenSSL) serving `pssl:` with them and checking
//! client certificates; `ovs-vsctl` (OpenSSL, as ovn-controller and northd connect) and kovn's
//! own client (rustls, as kovn-controller and kovn-agent connect) presenting them. Another
//! run's CA is refused both ways.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ovsdb::models::open_vswitch::OpenVswitch;
use ovsdb::{Client, ClientConfig, Model, MonitorRequest, TlsFiles};
use sandbox::{ServerSsl, StandaloneDb};

const VSWITCH_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// `kovn-install install --dry-run --tls-dir DIR` as an operator runs it (the binary), so the
/// files are made by the same path a real install takes; returns what it printed.
fn install_dry_run(dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kovn-install"))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args(["install", "--dry-run", "--ignore-preflight", "--masters"])
        .arg("192.0.2.11")
        .arg("--tls-dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kovn-install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn vsctl(remote: &str, tls: &Path) -> std::process::Output {
    Command::new("ovs-vsctl")
        .arg(format!("--db={remote}"))
        .arg(format!("--private-key={}", tls.join("key").display()))
        .arg(format!("--certificate={}", tls.join("cert").display()))
        .arg(format!("--ca-cert={}", tls.join("cacert").display()))
        .args([
            "--timeout=5",
            "--no-wait",
            "get",
            "Open_vSwitch",
            ".",
            "_uuid",
        ])
        .output()
        .unwrap()
}

async fn connect(remote: &str, tls: &Path) -> ovsdb::Result<Client> {
    let mut config = ClientConfig::new(&[remote], "Open_vSwitch")
        .monitor(MonitorRequest::table(OpenVswitch::TABLE).columns(&["external_ids"]));
    config.connection.connect_timeout = Duration::from_secs(3);
    config.wait_for_connection = Duration::from_secs(2);
    let config = config.tls(&TlsFiles::in_dir(tls))?;
    tokio::time::timeout(Duration::from_secs(10), Client::connect(config))
        .await
        .expect("connect gives up within 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_certificates_serve_ovsdb_ssl_to_openssl_and_kovn_clients() {
    if !sandbox::privileged("generated_certificates_serve_ovsdb_ssl_to_openssl_and_kovn_clients") {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let (ours, theirs) = (scratch.path().join("ours"), scratch.path().join("theirs"));
    let rendered = install_dry_run(&ours);
    // A dry run changes nothing: it renders with throwaway certificates.
    assert!(!ours.exists(), "a dry run wrote {}", ours.display());
    assert!(rendered.contains("name: kovn-ovn-tls"), "{rendered:.2000}");
    assert!(rendered.contains("ssl:192.0.2.11:6641"), "{rendered:.2000}");
    install::pki::generate(&ours).unwrap();
    install::pki::generate(&theirs).unwrap();
    // A run with the directory filled uses its files, not new ones.
    let cacert = std::fs::read_to_string(ours.join("cacert")).unwrap();
    let rendered = install_dry_run(&ours);
    let first_line = cacert.lines().nth(1).unwrap();
    assert!(
        rendered.contains(first_line),
        "the Secret does not carry {}'s CA",
        ours.display()
    );
    let cakey = std::fs::read_to_string(ours.join("cakey")).unwrap();
    assert!(
        !rendered.contains(cakey.lines().nth(1).unwrap()),
        "the CA's key went into the manifests"
    );

    let db = StandaloneDb::start_with_ssl(
        VSWITCH_SCHEMA,
        ServerSsl {
            private_key: ours.join("key"),
            certificate: ours.join("cert"),
            ca_cert: ours.join("cacert"),
        },
    )
    .expect("ovsdb-server serving pssl: with the generated certificate");
    let init = Command::new("ovs-vsctl")
        .arg(format!("--db={}", db.remote()))
        .args(["--no-wait", "init"])
        .output()
        .unwrap();
    assert!(init.status.success());
    let remote = db.ssl_remote().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // OpenSSL's client with the same certificate: in.
    let out = vsctl(&remote, &ours);
    assert!(
        out.status.success(),
        "ovs-vsctl over SSL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // kovn's client: in, and it monitors.
    let client = connect(&remote, &ours).await.expect("kovn's ssl: client");
    client
        .wait_until(Duration::from_secs(5), |c| {
            c.table(OpenVswitch::TABLE)
                .is_some_and(|t| !t.typed::<OpenVswitch>().is_empty())
        })
        .await
        .expect("the Open_vSwitch row over TLS");
    drop(client);

    // Another run's CA: refused by the server, whichever client.
    let out = vsctl(&remote, &theirs);
    assert!(!out.status.success(), "ovs-vsctl of another CA got in");
    assert!(
        connect(&remote, &theirs).await.is_err(),
        "kovn's client of another CA got in"
    );
}
