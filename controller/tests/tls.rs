//! kovn-controller against an OVN Northbound served only over SSL (ovsdb-server `pssl:`,
//! client certificates required), with the certificates where Kube-OVN mounts its
//! `kube-ovn-tls` Secret: the controller builds the cluster's topology through it; without
//! the certificates it refuses to start and says why.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sandbox::StandaloneDb;
use sandbox::kube_api::FakeApi;
use sandbox::pki::Pki;

fn nbctl(nb: &StandaloneDb, args: &[&str]) -> String {
    let out = Command::new("ovn-nbctl")
        .arg(format!("--db={}", nb.remote()))
        .args(args)
        .output()
        .expect("ovn-nbctl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_programs_an_ssl_northbound() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(
        &dir.path().join("pki"),
        &["ca"],
        &[("ca", "ovn-central"), ("ca", "kovn-controller")],
    )
    .expect("ovs-pki");
    let nb = StandaloneDb::start_with_ssl(
        "/usr/share/ovn/ovn-nb.ovsschema",
        pki.files("ovn-central", "ca").as_server(),
    )
    .expect("an SSL-only NB");
    nbctl(&nb, &["--no-wait", "init"]);
    let tls_dir = dir.path().join("tls");
    pki.files("kovn-controller", "ca")
        .install_as_secret(&tls_dir)
        .unwrap();

    let api = FakeApi::new();
    let served = api.serve().await.expect("the API stand-in");
    let kubeconfig = dir.path().join("kubeconfig");
    served.write_kubeconfig(&kubeconfig).unwrap();
    let controller = |tls: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_kovn-controller"))
            .arg(format!("--ovn-nb-addr={}", nb.ssl_remote().unwrap()))
            .arg(format!("--ovn-tls-dir={}", tls.display()))
            .args(["--leader-election=false", "--metrics-addr=127.0.0.1:0"])
            .env("KUBECONFIG", &kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kovn-controller")
    };

    // Without certificates: it stops at once and names what is missing.
    let mut without = controller(&dir.path().join("no-such-dir"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = without.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "it kept running without certificates"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut without.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("no-such-dir"), "{err}");

    // With them: the default VPC's router and switches appear in NB.
    let mut with = controller(&tls_dir);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !nbctl(&nb, &["lr-list"]).contains("ovn-cluster")
        || !nbctl(&nb, &["ls-list"]).contains("ovn-default")
    {
        if let Some(status) = with.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut with.stderr.take().unwrap(), &mut err).unwrap();
            panic!("kovn-controller exited ({status}): {err}");
        }
        assert!(
            Instant::now() < deadline,
            "no topology over SSL within 30 s: {}",
            nbctl(&nb, &["show"])
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = with.kill();
    let _ = with.wait();
}
