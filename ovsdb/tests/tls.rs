//! `ssl:` remotes against a real ovsdb-server listening with `pssl:` and checking client
//! certificates, with certificates made by ovs-pki as OVN's operators (and Kube-OVN's
//! installer) make them: a CA, a server certificate that names a role and no address, a
//! client certificate. The client connects, monitors and writes; a server of another CA, a client
//! of another CA, no certificates at all, and a plain TCP client are all refused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ovsdb::models::open_vswitch::OpenVswitch;
use ovsdb::{Client, ClientConfig, Error, Model, MonitorRequest, TlsFiles};
use sandbox::StandaloneDb;
use sandbox::pki::{CertFiles, Pki};

const VSWITCH_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
const DB: &str = "Open_vSwitch";

/// Two certificate authorities: `ca` (the cluster's) and `rogue-ca`.
fn pki(dir: &Path) -> Pki {
    Pki::new(
        dir,
        &["ca", "rogue-ca"],
        &[
            ("ca", "ovn-central"),
            ("ca", "kovn-controller"),
            ("rogue-ca", "intruder"),
            ("rogue-ca", "impostor-server"),
        ],
    )
    .expect("ovs-pki")
}

fn tls(files: &CertFiles) -> TlsFiles {
    TlsFiles {
        private_key: files.private_key.clone(),
        certificate: files.certificate.clone(),
        ca_cert: files.ca_cert.clone(),
    }
}

async fn connect(remote: &str, tls: Option<&TlsFiles>) -> Result<Client, Error> {
    let mut config = ClientConfig::new(&[remote], DB)
        .monitor(MonitorRequest::table(OpenVswitch::TABLE).columns(&["external_ids"]));
    config.connection.connect_timeout = Duration::from_secs(3);
    // A refused handshake is retried like a server not up yet: for this long.
    config.wait_for_connection = Duration::from_secs(2);
    if let Some(tls) = tls {
        config = config.tls(tls)?;
    }
    tokio::time::timeout(Duration::from_secs(10), Client::connect(config))
        .await
        .expect("connect gives up within 10 s")
}

fn vsctl(db: &StandaloneDb, args: &[&str]) {
    let out = Command::new("ovs-vsctl")
        .arg(format!("--db={}", db.remote()))
        .arg("--no-wait")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssl_remote_works_with_the_cas_certificates_and_refuses_everything_else() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let db =
        StandaloneDb::start_with_ssl(VSWITCH_SCHEMA, pki.files("ovn-central", "ca").as_server())
            .expect("ovsdb-server with pssl");
    vsctl(&db, &["init"]);
    let remote = db.ssl_remote().unwrap();
    // The listener comes up just after the unix socket.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The CA's client: connects (the server's certificate names no address), monitors and
    // sees a write made through the unix socket, and writes itself.
    let ours = tls(&pki.files("kovn-controller", "ca"));
    let client = connect(&remote, Some(&ours)).await.expect("an ssl: client");
    vsctl(
        &db,
        &["set", "Open_vSwitch", ".", "external_ids:seen=over-tls"],
    );
    client
        .wait_until(Duration::from_secs(5), |c| {
            c.table(OpenVswitch::TABLE)
                .and_then(|t| t.typed::<OpenVswitch>().into_iter().next())
                .is_some_and(|r| r.external_ids.get("seen").map(String::as_str) == Some("over-tls"))
        })
        .await
        .expect("a monitored update over TLS");
    let dbs = client
        .connection()
        .await
        .expect("a connection")
        .list_dbs()
        .await
        .expect("list_dbs over TLS");
    assert!(dbs.iter().any(|d| d == DB), "{dbs:?}");

    // A client whose certificate another CA signed: the server refuses it.
    let intruder = tls(&pki.files("intruder", "ca"));
    assert!(
        connect(&remote, Some(&intruder)).await.is_err(),
        "a client certificate of another CA was accepted"
    );
    // No TLS settings for an ssl: remote: a clear error, no connection.
    let err = connect(&remote, None).await.unwrap_err().to_string();
    assert!(err.contains("private key"), "{err}");
    // Plain TCP to the SSL port gets nowhere.
    let plain = remote.replacen("ssl:", "tcp:", 1);
    assert!(connect(&plain, None).await.is_err(), "plain TCP was served");
    // A missing key file is named before any connection.
    let mut missing = ours.clone();
    missing.private_key = PathBuf::from("/nonexistent/key");
    let err = connect(&remote, Some(&missing))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/key"), "{err}");
    drop(client);
    drop(db);

    // A server whose certificate another CA signed: the client refuses it.
    let impostor = StandaloneDb::start_with_ssl(
        VSWITCH_SCHEMA,
        pki.files("impostor-server", "rogue-ca").as_server(),
    )
    .expect("an impostor server");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = connect(&impostor.ssl_remote().unwrap(), Some(&ours))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("TLS"),
        "an impostor server was accepted, or the error says nothing: {err}"
    );
}
